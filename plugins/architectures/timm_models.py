"""Any timm model, by name, with a small-image stem for the families used on 32-px data."""
import dataclasses
import functools

from torch import nn

import kdbench

PREFIX = "timm:"
SMALL_IMAGES = 64  # at or below this size, the stem keeps full resolution


@functools.lru_cache(maxsize=1)
def _timm_names() -> frozenset:
    import timm

    return frozenset(timm.list_models())


@dataclasses.dataclass
class TimmModel(kdbench.Architecture):
    """A model of the timm library (Wightman, PyTorch Image Models, 2019), randomly initialised.

    On images of at most 64 px the ImageNet stem (a stride-2 7×7 conv and a max-pool) would
    throw away three quarters of the pixels, so ``small_stem`` replaces it as CIFAR-style
    papers do (He et al. 2016, §4.2): a stride-1 3×3 conv and no stem pooling for ResNet,
    Wide ResNet and pre-activation ResNet (``resnetv2_*``); a stride-1 stem conv for
    MobileNetV2/EfficientNet.  VGG has no downsampling stem and is left as it is; so is any
    other family (its first conv's stride is set to 1).
    """

    name = "timm"
    paper = "Wightman, PyTorch Image Models (timm), 2019"

    model: str = "resnet18"
    small_stem: bool = True

    def validate(self):
        if self.model not in _timm_names():
            raise kdbench.ConfigError(f"timm has no model named '{self.model}'")

    @classmethod
    def claims(cls, name: str) -> bool:
        return name.startswith(PREFIX) or name in _timm_names()

    @classmethod
    def from_name(cls, name: str, options: dict) -> "TimmModel":
        return cls.create({"model": name.removeprefix(PREFIX), **options})

    def build(self, info: kdbench.DatasetInfo) -> nn.Module:
        import timm

        model = timm.create_model(self.model, num_classes=info.num_classes, in_chans=info.channels)
        if self.small_stem and info.size <= SMALL_IMAGES:
            _small_stem(model)
        return model


def _small_stem(model: nn.Module):
    family = type(model).__name__
    if family == "ResNet":
        if isinstance(model.conv1, nn.Conv2d):
            model.conv1 = _conv3x3(model.conv1)
        else:  # the deep stem of the "d" variants: three 3×3 convs, the first one strided
            model.conv1[0].stride = (1, 1)
        model.maxpool = nn.Identity()
    elif family == "ResNetV2":
        model.stem.conv = _conv3x3(model.stem.conv) if isinstance(model.stem.conv, nn.Conv2d) else model.stem.conv
        if hasattr(model.stem, "pool"):
            model.stem.pool = nn.Identity()
    elif family == "VGG":
        return
    elif hasattr(model, "conv_stem"):
        model.conv_stem.stride = (1, 1)
    else:
        first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
        if first is not None:
            first.stride = (1, 1)


def _conv3x3(conv: nn.Conv2d) -> nn.Conv2d:
    return nn.Conv2d(conv.in_channels, conv.out_channels, 3, stride=1, padding=1, bias=conv.bias is not None)


@kdbench.hookimpl
def register_architectures(register):
    register(TimmModel)
