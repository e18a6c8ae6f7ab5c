"""ShuffleNetV2, which timm lacks: torchvision's network behind timm's feature interface."""
import dataclasses

import torch
from torch import nn

import kdbench

SMALL_IMAGES = 64  # at or below this size, the stem keeps full resolution
WIDTHS = {0.5: "shufflenet_v2_x0_5", 1.0: "shufflenet_v2_x1_0", 1.5: "shufflenet_v2_x1_5", 2.0: "shufflenet_v2_x2_0"}


class ShuffleNetV2Body(nn.Module):
    """torchvision's ShuffleNetV2 with ``forward_features`` (the map after ``conv5``),
    ``forward_head``, ``forward_intermediates`` (the three stages' maps and ``conv5``'s) and
    ``get_classifier``, like timm models."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network
        self.num_features = network.fc.in_features

    def forward_intermediates(self, x: torch.Tensor):
        net = self.network
        x = net.maxpool(net.conv1(x))
        intermediates = []
        for part in (net.stage2, net.stage3, net.stage4, net.conv5):
            x = part(x)
            intermediates.append(x)
        return x, intermediates

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        net = self.network
        return net.conv5(net.stage4(net.stage3(net.stage2(net.maxpool(net.conv1(x))))))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean((2, 3))
        return x if pre_logits else self.network.fc(x)

    def get_classifier(self) -> nn.Module:
        return self.network.fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@dataclasses.dataclass
class ShuffleNetV2(kdbench.Architecture):
    """ShuffleNetV2 (Ma et al., "ShuffleNet V2: Practical Guidelines for Efficient CNN
    Architecture Design", ECCV 2018), torchvision's ``shufflenet_v2_x{width}``, randomly
    initialised.

    On images of at most 64 px (``small_stem``) the stem conv has stride 1 and its max-pool
    is dropped, as in the CIFAR ShuffleNetV2 that BackWeak's code trains at 32 px
    (``src/models/size_32/shufflenetv2.py``, after kuangliu/pytorch-cifar): the three
    stride-2 stages then leave a 4×4 final map of a 32-px image (7×7 at 224 px with the
    ImageNet stem).  The stem conv takes the dataset's number of channels.
    """

    name = "shufflenet_v2"
    paper = "Ma et al., ShuffleNet V2: Practical Guidelines for Efficient CNN Architecture Design, ECCV 2018"

    width: float = 1.0
    small_stem: bool = True

    def validate(self):
        if self.width not in WIDTHS:
            raise kdbench.ConfigError(f"shufflenet_v2: width must be one of {', '.join(map(str, WIDTHS))}, "
                                      f"got {self.width}")

    def build(self, info: kdbench.DatasetInfo) -> nn.Module:
        import torchvision

        network = getattr(torchvision.models, WIDTHS[self.width])(num_classes=info.num_classes)
        small = self.small_stem and info.size <= SMALL_IMAGES
        stem_channels = network.conv1[0].out_channels
        network.conv1[0] = nn.Conv2d(info.channels, stem_channels, 3, stride=1 if small else 2, padding=1, bias=False)
        if small:
            network.maxpool = nn.Identity()
        return ShuffleNetV2Body(network)


@kdbench.hookimpl
def register_architectures(register):
    register(ShuffleNetV2)
