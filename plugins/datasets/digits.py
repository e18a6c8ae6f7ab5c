"""scikit-learn's bundled handwritten digits: the embedded dataset that needs no download."""
import dataclasses

import torch
import torch.nn.functional as F

import kdbench


@dataclasses.dataclass
class Digits(kdbench.Dataset):
    """The UCI optical digits (Alpaydin & Kaynak 1998) as shipped by scikit-learn: 1,797
    grey 8×8 images of 10 classes, upsampled (bilinear) to ``size`` pixels so that a patch
    trigger covers a small part of the image.  A fixed stratified third is the test split."""

    name = "digits"
    version = "2"
    paper = "Alpaydin & Kaynak, Optical Recognition of Handwritten Digits, UCI 1998"

    size: int = 16
    test_fraction: float = 0.33

    def validate(self):
        if not 8 <= self.size <= 256:
            raise kdbench.ConfigError(f"digits: size must be between 8 and 256, got {self.size}")
        kdbench.check_range(self.name, "test_fraction", self.test_fraction, 0.05, 0.95)

    def load(self, cache_dir) -> kdbench.ImageData:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        raw = load_digits()
        images = torch.tensor(raw.images, dtype=torch.float32).unsqueeze(1) / 16.0
        images = F.interpolate(images, size=(self.size, self.size), mode="bilinear", align_corners=False)
        images = (images.clamp(0, 1) * 255).round().to(torch.uint8)
        labels = torch.tensor(raw.target, dtype=torch.int64)
        train, test = train_test_split(torch.arange(len(labels)).numpy(), test_size=self.test_fraction,
                                       stratify=labels.numpy(), random_state=0)
        train, test = torch.from_numpy(train), torch.from_numpy(test)
        mean, std = kdbench.channel_statistics(images[train])
        info = kdbench.DatasetInfo(
            name=self.name, num_classes=10, channels=1, size=self.size, mean=mean, std=std,
            class_names=tuple(str(d) for d in range(10)), hflip=False,
        )
        return kdbench.ImageData(info, images[train], labels[train], images[test], labels[test])


@kdbench.hookimpl
def register_datasets(register):
    register(Digits)
