"""IBD-PSC: triggered inputs keep their prediction when the last BN layers' parameters are amplified."""
import copy
import dataclasses

import torch
from torch import nn

import kdbench

NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)  # timm's BatchNormAct2d is a BatchNorm2d


@dataclasses.dataclass
class IbdPsc(kdbench.InputDetector):
    """IBD-PSC (Hou, Feng, Hua, Luo, Zhang & Li, "IBD-PSC: Input-level Backdoor Detection via
    Parameter-oriented Scaling Consistency", ICML 2024; the authors' code is BackdoorBox's
    ``core/defenses/IBD_PSC.py``, which this follows).

    Scaling the weight and bias of the last BatchNorm layers by ``scale`` makes a benign
    model's predictions collapse, while a triggered input keeps its prediction.  A depth k is
    chosen adaptively on the defender's clean calibration data: the fewest last BN layers
    whose scaling pushes the error rate on that data above ``xi`` (``prob_start``).  ``n``
    models are then built, scaling the last k + 1, k + 2, …, k + n layers (``_test``: the
    layers ``sorted_indices[:layer_index + 1]`` for ``layer_index`` = k … k + n − 1), and the
    score of an input is its parameter-oriented scaling consistency: the mean probability
    those models give to the original model's predicted label.  Defaults: n = 5, ξ = 0.6,
    scale 1.5.

    Deviations: the BN layers are ordered as a forward pass meets them, not as the model
    lists its modules, so that modules a deployed model holds but does not run (the
    teacher's body inside a SimKD student) are left out; where no depth short of all the
    BN layers reaches the error rate ``xi`` (BackdoorBox then has no depth and fails), k is
    the number of BN layers; the depths are capped at that number (the small CNN has six),
    as BackdoorBox's slicing caps them, so a shallow model may average fewer than ``n``
    distinct scaled models.
    """

    name = "ibd_psc"
    paper = "Hou et al., IBD-PSC: Input-level Backdoor Detection via Parameter-oriented Scaling Consistency, ICML 2024"
    version = "2"

    n: int = 5
    xi: float = 0.6
    scale: float = 1.5
    batch_size: int = 1024

    def validate(self):
        if self.n < 1 or not 0 < self.xi < 1 or self.scale <= 0:
            raise kdbench.ConfigError(f"ibd_psc: need n ≥ 1, 0 < xi < 1 and scale > 0, "
                                      f"got {self.n}, {self.xi}, {self.scale}")

    @torch.no_grad()
    def score(self, model, images, calibration):
        model.eval()
        norms = _norms_in_forward_order(model, kdbench.to_float(calibration.images[:2]))
        if not norms:
            raise ValueError(f"ibd_psc needs BatchNorm layers; {type(model).__name__} runs none")
        start = self._first_depth(model, calibration, norms)
        predicted = kdbench.predict(model, images, self.batch_size)
        consistency = torch.zeros(len(images), device=predicted.device)
        for layers in range(start + 1, start + self.n + 1):
            scaled = _scaled(model, norms[-min(layers, len(norms)):], self.scale)
            probs = kdbench.logits(scaled, images, self.batch_size).softmax(1)
            consistency += probs.gather(1, predicted[:, None]).squeeze(1)
        return consistency / self.n

    def _first_depth(self, model, calibration, norms) -> int:
        """The fewest last BN layers whose amplification pushes the clean error rate above ξ."""
        for layers in range(1, len(norms) + 1):
            predicted = kdbench.predict(_scaled(model, norms[-layers:], self.scale), calibration.images,
                                        self.batch_size)
            if (predicted != calibration.labels).float().mean().item() > self.xi:
                return layers
        return len(norms)


def _norms_in_forward_order(model: nn.Module, probe: torch.Tensor) -> list:
    """Positions in ``model.modules()`` of the affine BN layers a forward pass runs, in the order it runs them."""
    positions = {module: i for i, module in enumerate(model.modules()) if isinstance(module, NORMS) and module.affine}
    met = []
    hooks = [module.register_forward_hook(lambda module, *_: met.append(positions[module])) for module in positions]
    try:
        model(probe)
    finally:
        for hook in hooks:
            hook.remove()
    return list(dict.fromkeys(met))


def _scaled(model: nn.Module, norms: list, scale: float) -> nn.Module:
    """A copy of the model with the affine parameters of the BN layers at ``norms`` times ``scale``."""
    scaled = copy.deepcopy(model)
    modules = list(scaled.modules())
    for position in norms:
        modules[position].weight.mul_(scale)
        modules[position].bias.mul_(scale)
    return scaled.eval()


@kdbench.hookimpl
def register_defenses(register):
    register(IbdPsc)
