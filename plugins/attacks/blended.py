"""Blended: a key pattern alpha-blended over the whole poisoned image."""
import dataclasses

import torch

import kdbench


class BlendTrigger(kdbench.Trigger):
    """x' = (1−α)·x + α·k for a fixed key pattern k."""

    def __init__(self, key: torch.Tensor, alpha: float):
        super().__init__()
        self.register_buffer("key", key)
        self.alpha = alpha

    def apply(self, x):
        return (1 - self.alpha) * x + self.alpha * self.key


@dataclasses.dataclass
class Blended(kdbench.PoisoningAttack):
    """Blended injection (Chen, Liu, Li, Lu & Song, "Targeted Backdoor Attacks on Deep
    Learning Systems Using Data Poisoning", 2017): the key is the paper's random-pattern
    variant, uniform noise drawn from ``pattern_seed``, blended with ``alpha`` = 0.2 both
    when poisoning and at test time (the paper's Σ_train = Σ_test = 0.2 setting)."""

    name = "blended"
    paper = "Chen et al., Targeted Backdoor Attacks on Deep Learning Systems Using Data Poisoning, 2017"

    alpha: float = 0.2
    pattern_seed: int = 0

    def validate(self):
        super().validate()
        kdbench.check_range(self.name, "alpha", self.alpha, 0.0, 1.0)

    def build_trigger(self, info) -> BlendTrigger:
        generator = torch.Generator().manual_seed(self.pattern_seed)
        return BlendTrigger(torch.rand(info.channels, info.size, info.size, generator=generator), self.alpha)


@kdbench.hookimpl
def register_attacks(register):
    register(Blended)
