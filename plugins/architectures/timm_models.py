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

    On images of at most 64 px the ImageNet stem (a stride-2 conv, often with a max-pool)
    would throw away three quarters of the pixels, so ``small_stem`` gives each family the
    resolution its CIFAR variant keeps: the models BackWeak's code trains at 32 px
    (``src/models/size_32``, after kuangliu/pytorch-cifar) and He et al. 2016, §4.2.  The
    final feature map of a 32-px image is then

    - 4×4 for ResNet, Wide ResNet and pre-activation ResNet (``resnetv2_*``): a stride-1 3×3
      stem conv and no stem pooling;
    - 4×4 for MobileNetV2: a stride-1 stem conv and a stride-1 second stage (the CIFAR
      variant's two changes); other EfficientNet-style models get the stride-1 stem only (2×2);
    - 4×4 for DenseNet: a stride-1 3×3 stem conv and no stem pooling;
    - 8×8 for RegNet: a stride-1 stem and stride-1 first two stages (the CIFAR variant's
      stage strides 1, 1, 2, 2);
    - 4×4 for ConvNeXt(V2): a stride-1 3×3 stem conv in place of the 4×4 patchify (no CIFAR
      variant in the seeds; the ResNet's total stride 8 is kept);
    - 1×1 for VGG, whose five max-pools are kept; its 4096-wide ImageNet MLP (a 7×7 conv on
      a map that is 1×1 here) is dropped for one linear classifier on the 512 channels, as
      in the CIFAR VGG;
    - any other family: its first conv's stride set to 1.

    Above 64 px (and with ``small_stem: false``) the ImageNet stems are left as timm builds them.
    """

    name = "timm"
    paper = "Wightman, PyTorch Image Models (timm), 2019"
    version = "2"

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
        model.pre_logits = nn.Identity()
        model.head.fc = nn.Linear(model.num_features, model.head.fc.out_features)
        model.head_hidden_size = model.num_features
    elif family == "EfficientNet":
        model.conv_stem.stride = (1, 1)
        if model.pretrained_cfg.get("architecture", "").startswith("mobilenetv2"):
            _unstride(model.blocks[1][0])
    elif family == "DenseNet" and isinstance(model.features.conv0, nn.Conv2d):
        model.features.conv0 = _conv3x3(model.features.conv0)
        model.features.pool0 = nn.Identity()
    elif family == "RegNet":
        for part in (model.stem, model.s1.b1, model.s2.b1):
            _unstride(part)
    elif family == "ConvNeXt":
        model.stem[0] = _conv3x3(model.stem[0])
    else:
        first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
        if first is not None:
            first.stride = (1, 1)


def _conv3x3(conv: nn.Conv2d) -> nn.Conv2d:
    return nn.Conv2d(conv.in_channels, conv.out_channels, 3, stride=1, padding=1, bias=conv.bias is not None)


def _unstride(module: nn.Module):
    """Stride 1 for every strided conv of ``module``: the same padding then keeps the size."""
    for conv in module.modules():
        if isinstance(conv, nn.Conv2d):
            conv.stride = (1, 1)


@kdbench.hookimpl
def register_architectures(register):
    register(TimmModel)
