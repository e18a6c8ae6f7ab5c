"""CIFAR-10 and CIFAR-100 (Krizhevsky 2009) as dataset plugins find them: an ImageFolder copy
(``train/``, ``test/`` or their ``.tar.gz``) or torchvision's pickled files, which
``download`` fetches."""
from pathlib import Path

import numpy as np
import torch

from .data import DatasetInfo, ImageData, channel_statistics
from .errors import ConfigError
from .image_folder import load_image_folder


def load_cifar(name: str, title: str, torchvision_name: str, folder: str, root: Path, download: bool,
               max_per_class: int, test_per_class: int, cache_dir) -> ImageData:
    """The dataset ``title`` under ``root``: its ImageFolder copy, else torchvision's
    ``torchvision_name`` (pickles in ``root/folder``); ``max_per_class`` / ``test_per_class``
    keep the first images of each class (0 = all)."""
    if (root / "train.tar.gz").exists() or (root / "train").is_dir():
        return load_image_folder(name, str(root), 32, max_per_class, test_per_class, cache_dir)
    if not download and not (root / folder).is_dir():
        raise ConfigError(f"{name}: no {title} at {root} (set root=DIR, or download=true to fetch it)")
    import torchvision.datasets

    splits = []
    for train, per_class in ((True, max_per_class), (False, test_per_class)):
        dataset = getattr(torchvision.datasets, torchvision_name)(str(root), train=train, download=download)
        images = torch.from_numpy(np.ascontiguousarray(dataset.data)).permute(0, 3, 1, 2).contiguous()
        labels = torch.tensor(dataset.targets)
        if per_class:
            keep = torch.cat([(labels == c).nonzero().flatten()[:per_class] for c in range(len(dataset.classes))])
            keep = keep.sort().values
            images, labels = images[keep], labels[keep]
        splits += [images, labels]
    mean, std = channel_statistics(splits[0])
    info = DatasetInfo(name=name, num_classes=len(dataset.classes), channels=3, size=32, mean=mean, std=std,
                       class_names=tuple(dataset.classes), hflip=True)
    return ImageData(info, *splits)
