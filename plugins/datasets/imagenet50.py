"""ImageNet-50: a 50-class ImageNet subset at 224 px, as the seeds evaluate at ImageNet scale."""
import dataclasses
from pathlib import Path

import kdbench
from kdbench.image_folder import load_image_folder


@dataclasses.dataclass
class ImageNet50(kdbench.Dataset):
    """A 50-class subset of ImageNet (Deng et al., CVPR 2009) in ImageFolder layout,
    ``train/<class>/*`` and ``val/<class>/*`` (or ``train.tar.gz`` / ``val.tar.gz``), at
    ``size`` px (224: the seeds' ImageNet models, whose stems timm keeps at this size); images
    of another size are resized to it once, when the uint8 cache is built.  Training augments
    with ImageNet's random-resized crop and flip (``crop: resized``, on the device) instead of
    CIFAR's padded crop.  The subset is the user's: torchvision has no download for ImageNet.
    ``root`` defaults to ``$KDBENCH_IMAGENET50``; ``max_per_class`` / ``test_per_class`` take
    the first images of each class (0 = all)."""

    name = "imagenet50"
    paper = "Deng et al., ImageNet: A Large-Scale Hierarchical Image Database, CVPR 2009 (a 50-class subset)"

    root: str = ""
    size: int = 224
    max_per_class: int = 0
    test_per_class: int = 0

    def validate(self):
        kdbench.check_non_negative(self, "max_per_class", "test_per_class")
        if self.size < 32:
            raise kdbench.ConfigError(f"imagenet50: size must be at least 32, got {self.size}")

    def load(self, cache_dir) -> kdbench.ImageData:
        root = Path(self.root).expanduser() if self.root else kdbench.data_root("KDBENCH_IMAGENET50", "imagenet50")
        if not any((root / f"train{suffix}").exists() for suffix in ("", ".tar.gz")):
            raise kdbench.ConfigError(f"imagenet50: no ImageNet subset at {root} (expected train/ and val/ class "
                                      "folders; set root=DIR or $KDBENCH_IMAGENET50)")
        return load_image_folder(self.name, str(root), self.size, self.max_per_class, self.test_per_class, cache_dir,
                                 crop="resized")


@kdbench.hookimpl
def register_datasets(register):
    register(ImageNet50)
