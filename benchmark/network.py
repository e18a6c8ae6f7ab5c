"""Models as the harness sees them: pixels in [0, 1] in, logits and features out."""
import dataclasses
from typing import ClassVar

import torch
from torch import nn

from .component import Component
from .data import DatasetInfo


@dataclasses.dataclass
class Outputs:
    """What one forward pass exposes to distillers: logits, the last feature map, and
    (when asked for) the intermediate feature maps of each stage."""

    logits: torch.Tensor
    features: torch.Tensor | None = None
    intermediates: list | None = None


def layers_in_forward_order(model: nn.Module, x: torch.Tensor) -> list[nn.Module]:
    """The leaf modules that hold parameters, in the order a forward pass of ``x`` (in eval
    mode) calls them; a module called twice counts where it is called last.  What BackWeak's
    official code calls a model's layers (``get_module_seq`` in ``src/utils/funcs.py``)."""
    order = {}

    def seen(module, args):
        order.pop(id(module), None)
        order[id(module)] = module

    leaves = [m for m in model.modules() if not list(m.children()) and any(True for _ in m.parameters(recurse=False))]
    hooks = [m.register_forward_pre_hook(seen) for m in leaves]
    training = model.training
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        model.train(training)
        for hook in hooks:
            hook.remove()
    return list(order.values())


class Network(nn.Module):
    """An image classifier that takes pixels in [0, 1] and normalises them itself.

    Triggers and defenses therefore all work in pixel space.  ``body`` follows timm's
    interface: ``forward_features`` (the last feature map), ``forward_head`` (pooling and
    classifier) and, where a distiller needs them, ``forward_intermediates``.
    """

    def __init__(self, body: nn.Module, info: DatasetInfo):
        super().__init__()
        self.body = body
        self.register_buffer("mean", torch.tensor(info.mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(info.std, dtype=torch.float32).view(1, -1, 1, 1))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.normalize(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body.forward_features(self.normalize(x))

    def head(self, features: torch.Tensor) -> torch.Tensor:
        return self.body.forward_head(features)

    def classifier(self) -> nn.Module:
        """The final linear layer (timm's ``get_classifier``)."""
        return self.body.get_classifier()

    def run(self, x: torch.Tensor, needs=frozenset({"logits"})) -> Outputs:
        """One forward pass returning what ``needs`` names (``features``, ``intermediates``)."""
        x = self.normalize(x)
        if "intermediates" in needs:
            features, intermediates = self.body.forward_intermediates(x)
            return Outputs(self.body.forward_head(features), features, list(intermediates))
        if "features" in needs:
            features = self.body.forward_features(x)
            return Outputs(self.body.forward_head(features), features)
        return Outputs(self.body(x))


@dataclasses.dataclass
class Architecture(Component):
    """An architecture plugin: ``build`` returns a timm-style module for the dataset."""

    kind: ClassVar[str] = "architecture"

    @classmethod
    def claims(cls, name: str) -> bool:
        """Whether this architecture serves a name nobody registered (timm's model names)."""
        return False

    @classmethod
    def from_name(cls, name: str, options: dict) -> "Architecture":
        """The instance for a claimed name (see ``claims``) with the user's options."""
        raise NotImplementedError

    def build(self, info: DatasetInfo) -> nn.Module:
        raise NotImplementedError

    def network(self, info: DatasetInfo) -> Network:
        return Network(self.build(info), info)
