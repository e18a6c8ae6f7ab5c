"""Image-classification datasets in ImageFolder layout (``<split>/<class>/<image>``, or each
split as ``<split>.tar.gz``), decoded once into a uint8 tensor cache: the building block of the
dataset plugins that read such copies (CIFAR-10's JPEG copy, CINIC-10, GTSRB, any ImageFolder)."""
import hashlib
import io
import tarfile
from pathlib import Path

import numpy as np
import torch

from .data import DatasetInfo, ImageData, channel_statistics
from .errors import ConfigError
from .store import cache_tensors

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".webp"}
TEST_FOLDERS = ("test", "val", "valid")


def read_split(root: Path, split: str, size: int | None, max_per_class: int):
    """(uint8 images N×C×H×W, labels, class names) of one split, from ``root/<split>/<class>/*``
    or from the archive ``root/<split>.tar.gz`` holding that layout.  Classes are numbered in
    lexicographic order (as torchvision's ImageFolder does); at most ``max_per_class``
    images per class are decoded (0 = all), the first ones in file-name order."""
    archive = root / f"{split}.tar.gz"
    if archive.exists():
        files = _archive_files(archive, split)
    else:
        files = {path.relative_to(root / split).as_posix(): path.read_bytes
                 for path in sorted((root / split).rglob("*")) if path.suffix.lower() in IMAGE_SUFFIXES}
    by_class = {}
    for name in sorted(files):
        parts = name.split("/")
        if len(parts) == 2:
            by_class.setdefault(parts[0], []).append(name)
    if not by_class:
        raise ConfigError(f"no images in {root / split} (expected {split}/<class>/<image> or {split}.tar.gz)")
    classes = sorted(by_class)
    images, labels = [], []
    for label, cls in enumerate(classes):
        chosen = by_class[cls][:max_per_class] if max_per_class else by_class[cls]
        for name in chosen:
            images.append(_decode(files[name](), size))
            labels.append(label)
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(), torch.tensor(labels), classes


def _archive_files(archive: Path, split: str) -> dict:
    """Member name (relative to the split folder) → a function returning its bytes."""
    contents = {}
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            path = Path(member.name)
            if member.isfile() and path.suffix.lower() in IMAGE_SUFFIXES and path.parts[0] == split:
                data = tar.extractfile(member).read()
                contents[Path(*path.parts[1:]).as_posix()] = lambda data=data: data
    return contents


def _decode(data: bytes, size: int | None, channels: int = 3) -> np.ndarray:
    """H×W×C uint8 pixels, RGB or (one channel) PIL's luma, resized bilinearly to ``size``."""
    from PIL import Image

    image = Image.open(io.BytesIO(data)).convert("L" if channels == 1 else "RGB")
    if size and image.size != (size, size):
        image = image.resize((size, size), Image.BILINEAR)
    return np.asarray(image, dtype=np.uint8).reshape(image.size[1], image.size[0], channels)


def read_images(folder: Path, size: int, channels: int = 3) -> torch.Tensor:
    """Every image under ``folder`` (any depth, in path order), resized to ``size``, as uint8
    N×C×H×W (N may be 0): a folder of unlabelled images, such as a style domain."""
    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    images = [_decode(p.read_bytes(), size, channels) for p in files]
    if not images:
        return torch.zeros(0, channels, size, size, dtype=torch.uint8)
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()


def load_image_folder(name: str, root: str, size: int | None, max_per_class: int, test_per_class: int,
                      cache_dir, train_splits: tuple = ("train",), hflip: bool = True, crop: str = "pad") -> ImageData:
    """Decode (once; later loads read the uint8 cache) an ImageFolder-style dataset: training
    images from every split in ``train_splits`` (each ``max_per_class`` at most), test images
    from ``test/`` (or ``val/``, ``valid/``); ``hflip`` and ``crop`` are the augmentation's
    (``DatasetInfo``)."""
    root_path = Path(root).expanduser()
    if not root_path.exists():
        raise ConfigError(f"{name}: dataset root not found: {root_path}")
    test_split = next((s for s in TEST_FOLDERS if (root_path / s).is_dir() or (root_path / f"{s}.tar.gz").exists()), None)
    if test_split is None:
        raise ConfigError(f"{name}: {root_path} has no test/ (or val/) folder or test.tar.gz")
    extra = "" if train_splits == ("train",) else f"|{','.join(train_splits)}"
    tag = hashlib.sha256(f"{root_path.resolve()}|{size}|{max_per_class}|{test_per_class}{extra}".encode()).hexdigest()[:12]

    def build():
        parts = [read_split(root_path, split, size, max_per_class) for split in train_splits]
        test_x, test_y, test_classes = read_split(root_path, test_split, size, test_per_class)
        if any(classes != test_classes for _, _, classes in parts):
            raise ConfigError(f"{name}: the {', '.join(train_splits)} and {test_split} folders have different classes")
        return {"train_images": torch.cat([x for x, _, _ in parts]), "train_labels": torch.cat([y for _, y, _ in parts]),
                "test_images": test_x, "test_labels": test_y}

    tensors = cache_tensors(Path(cache_dir) / f"{name}-{tag}.safetensors", build)
    classes = _class_names(root_path, test_split)
    mean, std = channel_statistics(tensors["train_images"])
    info = DatasetInfo(
        name=name, num_classes=len(classes), channels=3, size=tensors["train_images"].shape[-1], mean=mean, std=std,
        class_names=tuple(classes), hflip=hflip, crop=crop,
    )
    return ImageData(info, tensors["train_images"], tensors["train_labels"].long(),
                     tensors["test_images"], tensors["test_labels"].long())


def _class_names(root: Path, split: str) -> list:
    if (root / split).is_dir():
        return sorted(p.name for p in (root / split).iterdir() if p.is_dir())
    with tarfile.open(root / f"{split}.tar.gz", "r:gz") as tar:
        return sorted({Path(m.name).parts[1] for m in tar if m.isfile() and len(Path(m.name).parts) == 3})
