"""CIFAR-10: torchvision's download for users, or a local ImageFolder copy / its archives."""
import dataclasses
import os
from pathlib import Path

import numpy as np
import torch

import kdbench

from kdbench.image_folder import load_image_folder


def default_root() -> str:
    return os.environ.get("KDBENCH_CIFAR10", str(Path.home() / ".cache" / "kdbench" / "data" / "cifar10"))


@dataclasses.dataclass
class Cifar10(kdbench.Dataset):
    """CIFAR-10 (Krizhevsky 2009): 50,000 training and 10,000 test 32×32 colour images.

    ``root`` may hold torchvision's ``cifar-10-batches-py`` (``download: true`` fetches it),
    an ImageFolder copy (``train/<class>/…``, ``test/<class>/…``) or that copy as
    ``train.tar.gz`` / ``test.tar.gz``.  ``max_per_class`` / ``test_per_class`` take a
    balanced subset (0 = all) for small runs.
    """

    name = "cifar10"
    version = "2"
    paper = "Krizhevsky, Learning Multiple Layers of Features from Tiny Images, 2009"

    root: str = ""
    download: bool = False
    max_per_class: int = 0
    test_per_class: int = 0

    def load(self, cache_dir) -> kdbench.ImageData:
        root = Path(self.root or default_root()).expanduser()
        if (root / "train.tar.gz").exists() or (root / "train").is_dir():
            return load_image_folder(self.name, str(root), 32, self.max_per_class, self.test_per_class, cache_dir)
        if not self.download and not (root / "cifar-10-batches-py").is_dir():
            raise kdbench.ConfigError(f"cifar10: no CIFAR-10 at {root} (set root=DIR, or download=true to fetch it)")
        return self._from_torchvision(root)

    def _from_torchvision(self, root: Path) -> kdbench.ImageData:
        from torchvision.datasets import CIFAR10

        splits = []
        for train, per_class in ((True, self.max_per_class), (False, self.test_per_class)):
            dataset = CIFAR10(str(root), train=train, download=self.download)
            images = torch.from_numpy(np.ascontiguousarray(dataset.data)).permute(0, 3, 1, 2).contiguous()
            labels = torch.tensor(dataset.targets)
            if per_class:
                keep = torch.cat([(labels == c).nonzero().flatten()[:per_class] for c in range(10)]).sort().values
                images, labels = images[keep], labels[keep]
            splits += [images, labels]
            classes = dataset.classes
        mean, std = kdbench.channel_statistics(splits[0])
        info = kdbench.DatasetInfo(name=self.name, num_classes=10, channels=3, size=32, mean=mean, std=std,
                                   class_names=tuple(classes), hflip=True)
        return kdbench.ImageData(info, *splits)


@kdbench.hookimpl
def register_datasets(register):
    register(Cifar10)
