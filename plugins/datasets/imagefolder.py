"""Any image-classification dataset in ImageFolder layout (CINIC-10, an ImageNet subset, GTSRB…)."""
import dataclasses
from pathlib import Path

import kdbench
from kdbench.image_folder import load_image_folder


@dataclasses.dataclass
class ImageFolder(kdbench.Dataset):
    """A generic ImageFolder dataset: ``root/train/<class>/*`` and ``root/test/<class>/*``
    (or ``val/``, or the same layouts as ``train.tar.gz`` / ``test.tar.gz``), resized to
    ``size`` pixels.  Decoded once into a uint8 tensor cache."""

    name = "imagefolder"
    version = "2"
    paper = "torchvision ImageFolder layout (e.g. CINIC-10, Darlow et al. 2018; GTSRB, Stallkamp et al. 2012)"

    root: str = ""
    size: int = 32
    max_per_class: int = 0
    test_per_class: int = 0

    def validate(self):
        if not self.root:
            raise kdbench.ConfigError("imagefolder: give the dataset folder, e.g. {name: imagefolder, root: /data/cinic10}")
        if self.size < 8:
            raise kdbench.ConfigError(f"imagefolder: size must be at least 8, got {self.size}")

    def load(self, cache_dir) -> kdbench.ImageData:
        name = Path(self.root).name or self.name
        return load_image_folder(name, self.root, self.size, self.max_per_class, self.test_per_class, cache_dir)


@kdbench.hookimpl
def register_datasets(register):
    register(ImageFolder)
