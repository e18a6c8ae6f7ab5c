"""GTSRB: the German Traffic Sign Recognition Benchmark, 43 classes, resized to the suite's size."""
import dataclasses
from pathlib import Path

import numpy as np
import torch

import kdbench
from kdbench.image_folder import load_image_folder

CLASSES = 43


@dataclasses.dataclass
class Gtsrb(kdbench.Dataset):
    """GTSRB (Stallkamp, Schlipsing, Salmen & Igel, "Man vs. computer: Benchmarking machine
    learning algorithms for traffic sign recognition", Neural Networks 2012): 39,209 training
    and 12,630 test images of 43 sign classes, 15 to 250 pixels a side, each resized
    (bilinear) to ``size`` × ``size``; the classes' imbalance (210 to 2,250 training images)
    is kept.  From torchvision's copy under ``root`` (``download: true`` fetches it) or an
    ImageFolder copy (``train/``, ``test/``).  Augmentation never flips: a flipped sign is
    another sign.  ``max_per_class`` / ``test_per_class`` cap each class (0 = all)."""

    name = "gtsrb"
    paper = "Stallkamp et al., Man vs. computer: Benchmarking machine learning algorithms for traffic sign recognition, Neural Networks 2012"

    root: str = ""
    download: bool = False
    size: int = 32
    max_per_class: int = 0
    test_per_class: int = 0

    def validate(self):
        kdbench.check_non_negative(self, "max_per_class", "test_per_class")
        if self.size < 8:
            raise kdbench.ConfigError(f"gtsrb: size must be at least 8, got {self.size}")

    def load(self, cache_dir) -> kdbench.ImageData:
        root = Path(self.root).expanduser() if self.root else kdbench.data_root("KDBENCH_GTSRB", "gtsrb")
        if (root / "train").is_dir() or (root / "train.tar.gz").exists():
            return load_image_folder(self.name, str(root), self.size, self.max_per_class, self.test_per_class,
                                     cache_dir, hflip=False)
        if not self.download and not (root / "gtsrb" / "GTSRB" / "Training").is_dir():
            raise kdbench.ConfigError(f"gtsrb: no GTSRB at {root} (set root=DIR, or download=true to fetch it)")
        name = f"{self.name}-{self.size}-{self.max_per_class}-{self.test_per_class}.safetensors"
        tensors = kdbench.cache_tensors(Path(cache_dir) / name, lambda: self._from_torchvision(root))
        mean, std = kdbench.channel_statistics(tensors["train_images"])
        info = kdbench.DatasetInfo(name=self.name, num_classes=CLASSES, channels=3, size=self.size, mean=mean, std=std,
                                   class_names=tuple(f"{c:05d}" for c in range(CLASSES)), hflip=False)
        return kdbench.ImageData(info, tensors["train_images"], tensors["train_labels"].long(),
                                 tensors["test_images"], tensors["test_labels"].long())

    def _from_torchvision(self, root: Path) -> dict:
        from PIL import Image
        from torchvision.datasets import GTSRB

        tensors = {}
        for split, per_class in (("train", self.max_per_class), ("test", self.test_per_class)):
            images, labels, counts = [], [], [0] * CLASSES
            for image, label in GTSRB(str(root), split=split, download=self.download):
                if not per_class or counts[label] < per_class:
                    images.append(np.asarray(image.resize((self.size, self.size), Image.BILINEAR)))
                    labels.append(label)
                    counts[label] += 1
            tensors[f"{split}_images"] = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
            tensors[f"{split}_labels"] = torch.tensor(labels)
        return tensors


@kdbench.hookimpl
def register_datasets(register):
    register(Gtsrb)
