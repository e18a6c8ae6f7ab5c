"""CIFAR-100: torchvision's download for users, or a local ImageFolder copy / its archives."""
import dataclasses
from pathlib import Path

import kdbench
from kdbench.cifar import load_cifar


@dataclasses.dataclass
class Cifar100(kdbench.Dataset):
    """CIFAR-100 (Krizhevsky 2009): 50,000 training and 10,000 test 32×32 colour images of 100
    fine classes (500 and 100 per class), labelled as torchvision labels them.

    ``root`` (default ``$KDBENCH_CIFAR100``) may hold torchvision's ``cifar-100-python``
    (``download: true`` fetches it), an ImageFolder copy (``train/<class>/…``,
    ``test/<class>/…``; classes numbered lexicographically, which is torchvision's order of
    the fine labels) or that copy as ``train.tar.gz`` / ``test.tar.gz``.
    ``max_per_class`` / ``test_per_class`` take a balanced subset (0 = all).
    """

    name = "cifar100"
    paper = "Krizhevsky, Learning Multiple Layers of Features from Tiny Images, 2009"

    root: str = ""
    download: bool = False
    max_per_class: int = 0
    test_per_class: int = 0

    def validate(self):
        kdbench.check_non_negative(self, "max_per_class", "test_per_class")

    def load(self, cache_dir) -> kdbench.ImageData:
        root = Path(self.root).expanduser() if self.root else kdbench.data_root("KDBENCH_CIFAR100", "cifar100")
        return load_cifar(self.name, "CIFAR-100", "CIFAR100", "cifar-100-python", root, self.download,
                          self.max_per_class, self.test_per_class, cache_dir)


@kdbench.hookimpl
def register_datasets(register):
    register(Cifar100)
