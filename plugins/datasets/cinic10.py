"""CINIC-10: CIFAR-10's ten classes from CIFAR-10 and downsampled ImageNet, 32×32."""
import dataclasses
from pathlib import Path

import kdbench
from kdbench.image_folder import load_image_folder

# Lexicographic, as the official layout's folders sort: the same ids as CIFAR-10's labels.
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@dataclasses.dataclass
class Cinic10(kdbench.Dataset):
    """CINIC-10 (Darlow, Crowley, Antoniou & Storkey, "CINIC-10 is not ImageNet or CIFAR-10",
    2018): 270,000 32×32 images, 90,000 each in ``train/``, ``valid/`` and ``test/`` of the
    official release (``<split>/<class>/*.png``, or each split as ``<split>.tar.gz``), in
    CIFAR-10's ten classes with CIFAR-10's label ids (airplane 0 … truck 9).  ``include_valid``
    adds ``valid/`` to the training split, for a larger training set.
    torchvision has no CINIC-10: download it from https://github.com/BayesWatch/cinic-10 and
    give ``root`` (default ``$KDBENCH_CINIC10``).  ``max_per_class`` / ``test_per_class`` take
    the first images of each class (0 = all)."""

    name = "cinic10"
    paper = "Darlow et al., CINIC-10 is not ImageNet or CIFAR-10, arXiv 1810.03505, 2018"

    root: str = ""
    include_valid: bool = False
    max_per_class: int = 0
    test_per_class: int = 0

    def validate(self):
        kdbench.check_non_negative(self, "max_per_class", "test_per_class")

    def load(self, cache_dir) -> kdbench.ImageData:
        root = Path(self.root).expanduser() if self.root else kdbench.data_root("KDBENCH_CINIC10", "cinic10")
        if not any((root / f"train{suffix}").exists() for suffix in ("", ".tar.gz")):
            raise kdbench.ConfigError(f"cinic10: no CINIC-10 at {root} (expected train/, valid/, test/; "
                                      "get it from https://github.com/BayesWatch/cinic-10 and set root=DIR or $KDBENCH_CINIC10)")
        splits = ("train", "valid") if self.include_valid else ("train",)
        data = load_image_folder(self.name, str(root), 32, self.max_per_class, self.test_per_class, cache_dir,
                                 train_splits=splits)
        if data.info.class_names != CLASSES:
            raise kdbench.ConfigError(f"cinic10: {root} holds classes {', '.join(data.info.class_names)}, "
                                      f"not CINIC-10's {', '.join(CLASSES)}")
        return data


@kdbench.hookimpl
def register_datasets(register):
    register(Cinic10)
