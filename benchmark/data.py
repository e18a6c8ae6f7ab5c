"""Datasets as uint8 tensors, the attacker/victim split, and augmentation on the device."""
import dataclasses
import math
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
    crop: str = "pad"  # training augmentation: "pad" (CIFAR's padded random crop) or "resized" (ImageNet's)


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


def augment(images: torch.Tensor, hflip: bool, generator: torch.Generator | None = None,
            crop: str = "pad") -> torch.Tensor:
    """Random crop and, where the dataset allows it, horizontal flip, on whole batches on the
    images' device: ``crop`` "pad" is the CIFAR recipe (a random crop of the image padded with
    size/8 zeros), "resized" the ImageNet one (``random_resized_crop``).

    The padded crop works on any dtype (uint8 moves a quarter of the bytes of float32): one
    random translation per image, applied by gathering from a padded copy.
    """
    if crop == "resized":
        return random_resized_crop(images, hflip, generator)
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


def resized_crop_boxes(n: int, size: int, generator: torch.Generator | None = None,
                       scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), tries: int = 10) -> torch.Tensor:
    """n crop boxes (top, left, height, width) of a square ``size``-px image, drawn as
    torchvision's ``RandomResizedCrop.get_params`` draws them: an area fraction uniform in
    ``scale``, an aspect ratio log-uniform in ``ratio``, the first of ``tries`` that fits, at
    a uniform position; the whole image when none fits (torchvision's fallback for a square)."""
    area = size * size * torch.empty(n, tries).uniform_(*scale, generator=generator)
    log_ratio = torch.empty(n, tries).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)
    width = (area * log_ratio.exp()).sqrt().round()
    height = (area / log_ratio.exp()).sqrt().round()
    fits = (width > 0) & (width <= size) & (height > 0) & (height <= size)
    first = fits.float().argmax(1, keepdim=True)
    found = fits.any(1)
    height = torch.where(found, height.gather(1, first).squeeze(1), torch.tensor(float(size)))
    width = torch.where(found, width.gather(1, first).squeeze(1), torch.tensor(float(size)))
    top = (torch.rand(n, generator=generator) * (size - height + 1)).floor()
    left = (torch.rand(n, generator=generator) * (size - width + 1)).floor()
    return torch.stack([top, left, height, width], 1)


def resized_crop(images: torch.Tensor, boxes: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Each image's box (top, left, height, width) resampled bilinearly to the image's size,
    mirrored where ``flip``: one ``grid_sample`` for the batch, on its device, of uint8 or
    float images (returned in their dtype)."""
    n, _, h, w = images.shape
    boxes = boxes.to(images.device, torch.float32)
    top, left, height, width = boxes.unbind(1)
    theta = torch.zeros(n, 2, 3, device=images.device)
    theta[:, 0, 0] = torch.where(flip.to(images.device), -width / w, width / w)
    theta[:, 0, 2] = (2 * left + width) / w - 1
    theta[:, 1, 1] = height / h
    theta[:, 1, 2] = (2 * top + height) / h - 1
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    out = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.round().clamp(0, 255).to(torch.uint8) if images.dtype == torch.uint8 else out


def random_resized_crop(images: torch.Tensor, hflip: bool, generator: torch.Generator | None = None) -> torch.Tensor:
    """ImageNet's training augmentation (Szegedy et al. 2015; torchvision's
    ``RandomResizedCrop(size)`` and ``RandomHorizontalFlip``) on a batch of square images:
    a box of ``resized_crop_boxes`` per image, resized back to the image's size."""
    n = len(images)
    boxes = resized_crop_boxes(n, images.shape[-1], generator)
    flip = torch.rand(n, generator=generator) < 0.5 if hflip else torch.zeros(n, dtype=torch.bool)
    return resized_crop(images, boxes, flip)


def take(images: torch.Tensor, index: torch.Tensor, device=None) -> torch.Tensor:
    """``images[index]`` for an index (integers or a boolean mask) on any device, the rows on
    ``device`` (default: where ``images`` are).  Training images kept in host memory
    (``place``) reach a CUDA device through a pinned buffer, copied without blocking, so that
    the next batch is gathered on the host while the device still computes."""
    index = index.to(images.device)
    if device is None or torch.device(device).type == images.device.type:
        return images[index]
    if index.dtype == torch.bool:
        index = index.nonzero().flatten()
    rows = torch.empty((len(index), *images.shape[1:]), dtype=images.dtype,
                       pin_memory=torch.device(device).type == "cuda")
    torch.index_select(images, 0, index, out=rows)
    return rows.to(device, non_blocking=True)


def put(images: torch.Tensor, index: torch.Tensor, pixels: torch.Tensor):
    """Write float ``pixels`` in [0, 1] (clamped, rounded to the 8-bit grid) into uint8
    ``images`` at ``index`` (on any device), wherever ``images`` are: ``take``'s inverse."""
    images[index.to(images.device)] = (quantize(pixels) * 255).round().to(torch.uint8).to(images.device)


def fits_on_device(nbytes: int, device, fraction: float) -> bool:
    """Whether ``nbytes`` take at most ``fraction`` of the device's memory (always on the CPU,
    where the device is the host)."""
    device = torch.device(device)
    if device.type != "cuda":
        return True
    return nbytes <= fraction * torch.cuda.get_device_properties(device).total_memory


def place(data: ImageData, device, fraction: float, copies: int = 1) -> ImageData:
    """The dataset on ``device``, but for its training images where ``copies`` of them (the
    harness keeps the dataset's and, per seed, its split into halves) would take more than
    ``fraction`` of the device's memory: those stay in host memory, and the training loop,
    ``logits`` and ``AttackContext.batches`` stream each batch to the device (``take``).
    Labels and test images always move: they are small."""
    keep = fits_on_device(copies * data.train_images.nbytes, device, fraction)
    move = lambda t: t.to(device, non_blocking=True)  # noqa: E731
    return ImageData(data.info, move(data.train_images) if keep else data.train_images, move(data.train_labels),
                     move(data.test_images), move(data.test_labels))


def batch_count(n: int, batch_size: int) -> int:
    """How many batches ``batches`` cuts ``range(n)`` into: the optimiser steps of one epoch."""
    return -(-n // batch_size)


def batches(n: int, batch_size: int, shuffle: bool, generator: torch.Generator | None = None, device="cpu"):
    """Index tensors covering ``range(n)``; shuffled ones drop nothing."""
    order = torch.randperm(n, generator=generator).to(device) if shuffle else torch.arange(n, device=device)
    return order.split(batch_size)
