"""Datasets as uint8 tensors, the attacker/victim split, and augmentation on the device."""
import dataclasses
import os
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F

from .component import Component


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What models and triggers need to know about a dataset."""

    name: str
    num_classes: int
    channels: int
    size: int
    mean: tuple
    std: tuple
    class_names: tuple
    hflip: bool = True


@dataclasses.dataclass
class ImageData:
    """A whole dataset: uint8 images N×C×H×W and int64 labels for train and test."""

    info: DatasetInfo
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor

    def to(self, device) -> "ImageData":
        move = lambda t: t.to(device, non_blocking=True)  # noqa: E731
        return ImageData(self.info, move(self.train_images), move(self.train_labels),
                         move(self.test_images), move(self.test_labels))


@dataclasses.dataclass
class Dataset(Component):
    """A dataset plugin: ``load`` returns an ``ImageData`` (uint8 images, int64 labels)."""

    kind: ClassVar[str] = "dataset"

    def load(self, cache_dir) -> ImageData:
        raise NotImplementedError


@dataclasses.dataclass
class Split:
    """The threat model's split of the training set (DESIGN.md): index tensors into it."""

    attacker: torch.Tensor
    victim: torch.Tensor
    defender: torch.Tensor  # a clean calibration subset of the victim half


def data_root(variable: str, name: str) -> Path:
    """Where a dataset plugin looks when no ``root`` is given: ``$variable``, else
    ``~/.cache/kdbench/data/<name>``."""
    return Path(os.environ.get(variable, Path.home() / ".cache" / "kdbench" / "data" / name)).expanduser()


def stratified_split(labels: torch.Tensor, attacker_fraction: float, defender_fraction: float, seed: int) -> Split:
    """Split indices per class, seeded, so each part keeps the class balance."""
    generator = torch.Generator().manual_seed(seed)
    attacker, victim, defender = [], [], []
    labels = labels.cpu()
    for label in labels.unique():
        members = (labels == label).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        cut = int(round(len(members) * attacker_fraction))
        attacker.append(members[:cut])
        victim_part = members[cut:]
        victim.append(victim_part)
        defender.append(victim_part[: max(1, int(round(len(victim_part) * defender_fraction)))])
    return Split(*(torch.cat(part).sort().values for part in (attacker, victim, defender)))


def channel_statistics(images: torch.Tensor) -> tuple[tuple, tuple]:
    """Per-channel mean and (unbiased) standard deviation of uint8 images N×C×H×W on the
    [0, 1] scale, from exact integer sums: the same to the last bit whatever the number of
    threads, so that a worker process normalises exactly as the main process does."""
    pixels = images.transpose(0, 1).reshape(images.shape[1], -1).long()
    count = pixels.shape[1]
    sums, squares = pixels.sum(1).tolist(), pixels.pow(2).sum(1).tolist()
    mean = tuple(s / count / 255 for s in sums)
    std = tuple(((q - s * s / count) / (count - 1)) ** 0.5 / 255 for s, q in zip(sums, squares))
    return mean, std


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels to floats in [0, 1] (floats pass through)."""
    return images.float().div_(255) if images.dtype == torch.uint8 else images


def quantize(images: torch.Tensor) -> torch.Tensor:
    """Clamp to [0, 1] and round to the 8-bit grid, as an image written to disk would be."""
    return images.clamp(0, 1).mul(255).round().div(255)


def augment(images: torch.Tensor, hflip: bool, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random crop (zero padding of size/8) and, where the dataset allows it, horizontal flip.

    Runs on whole batches on the images' device, of any dtype (uint8 moves a quarter of the
    bytes of float32): one random translation per image, applied by gathering from a padded
    copy.
    """
    n, _, h, w = images.shape
    pad = max(1, h // 8)
    device = images.device
    padded = F.pad(images, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device="cpu").to(device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device="cpu").to(device)
    rows = (torch.arange(h, device=device)[None, :] + dy[:, None])  # n×h
    cols = (torch.arange(w, device=device)[None, :] + dx[:, None])  # n×w
    if hflip:
        flip = torch.rand(n, generator=generator, device="cpu").to(device) < 0.5
        cols = torch.where(flip[:, None], cols.flip(1), cols)
    batch = torch.arange(n, device=device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()  # one-channel batches keep a channels-last stride


def batch_count(n: int, batch_size: int) -> int:
    """How many batches ``batches`` cuts ``range(n)`` into: the optimiser steps of one epoch."""
    return -(-n // batch_size)


def batches(n: int, batch_size: int, shuffle: bool, generator: torch.Generator | None = None, device="cpu"):
    """Index tensors covering ``range(n)``; shuffled ones drop nothing."""
    order = torch.randperm(n, generator=generator).to(device) if shuffle else torch.arange(n, device=device)
    return order.split(batch_size)
