"""A small fast CNN for CPU runs and tests, with timm's feature interface."""
import dataclasses

from torch import nn

import kdbench


class SmallCNN(nn.Module):
    """Three conv-BN-ReLU stages (each halving the resolution) and a linear classifier.

    Exposes ``forward_features`` (the last map), ``forward_head``,
    ``forward_intermediates`` (every stage's map) and ``get_classifier`` like timm models.
    """

    def __init__(self, num_classes: int, in_chans: int, width: int):
        super().__init__()
        widths = (width, 2 * width, 4 * width)
        self.stages = nn.ModuleList()
        previous = in_chans
        for channels in widths:
            self.stages.append(nn.Sequential(
                nn.Conv2d(previous, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
                nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ))
            previous = channels
        self.num_features = previous
        self.fc = nn.Linear(previous, num_classes)

    def forward_intermediates(self, x):
        intermediates = []
        for stage in self.stages:
            x = stage(x)
            intermediates.append(x)
        return x, intermediates

    def forward_features(self, x):
        for stage in self.stages:
            x = stage(x)
        return x

    def forward_head(self, x, pre_logits: bool = False):
        x = x.mean((2, 3))
        return x if pre_logits else self.fc(x)

    def get_classifier(self):
        return self.fc

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


@dataclasses.dataclass
class SmallCnn(kdbench.Architecture):
    """A VGG-style 6-layer CNN (Simonyan & Zisserman 2015 in miniature), sized for CPU tests."""

    name = "small_cnn"
    paper = "Simonyan & Zisserman, Very Deep Convolutional Networks, ICLR 2015 (miniature)"

    width: int = 32

    def validate(self):
        if self.width < 1:
            raise kdbench.ConfigError(f"small_cnn: width must be positive, got {self.width}")

    def build(self, info: kdbench.DatasetInfo) -> nn.Module:
        if info.size < 8:
            raise kdbench.ConfigError(f"small_cnn needs images of at least 8 px, got {info.size}")
        return SmallCNN(info.num_classes, info.channels, self.width)


@kdbench.hookimpl
def register_architectures(register):
    register(SmallCnn)


