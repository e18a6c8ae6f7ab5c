"""CIFAR-10: torchvision's download for users, or a local ImageFolder copy / its archives."""
import dataclasses
from pathlib import Path

import kdbench
from kdbench.cifar import load_cifar


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
        root = Path(self.root).expanduser() if self.root else kdbench.data_root("KDBENCH_CIFAR10", "cifar10")
        return load_cifar(self.name, "CIFAR-10", "CIFAR10", "cifar-10-batches-py", root, self.download,
                          self.max_per_class, self.test_per_class, cache_dir)


@kdbench.hookimpl
def register_datasets(register):
    register(Cifar10)
