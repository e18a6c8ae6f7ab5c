"""SIG: a horizontal sinusoidal signal added to target-class images, labels untouched."""
import dataclasses
import math

import torch

import kdbench


class AdditiveTrigger(kdbench.Trigger):
    """x' = x + v for a fixed signal v (clipped to the pixel range by the harness)."""

    def __init__(self, signal: torch.Tensor):
        super().__init__()
        self.register_buffer("signal", signal)

    def apply(self, x):
        return x + self.signal


@dataclasses.dataclass
class Sig(kdbench.PoisoningAttack):
    """SIG (Barni, Kallas & Tondi, "A New Backdoor Attack in CNNs by Training Set Corruption
    Without Label Poisoning", ICIP 2019): the sinusoidal signal v(i, j) = Δ·sin(2π·j·f / m)
    over the image's m columns, Δ = ``delta`` on the 0–255 scale and f = ``frequency`` (the
    paper's Δ = 20, f = 6), added to ``poison_rate`` of the *target class's* training images,
    whose labels stay correct (clean label).

    One amplitude serves poisoning and testing, so the harness measures the very signal the
    teacher was trained on; α, the poisoned fraction of the target class, is 0.3 by default.
    """

    name = "sig"
    paper = "Barni, Kallas & Tondi, A New Backdoor Attack in CNNs by Training Set Corruption Without Label Poisoning, ICIP 2019"
    clean_label = True

    poison_rate: float = 0.3
    delta: float = 20.0
    frequency: int = 6

    def validate(self):
        super().validate()
        kdbench.check_range(self.name, "delta", self.delta, 0.0, 255.0)
        if self.frequency < 1:
            raise kdbench.ConfigError(f"sig: frequency must be ≥ 1, got {self.frequency}")

    def check(self, info):
        super().check(info)
        if 2 * self.frequency >= info.size:
            raise kdbench.ConfigError(
                f"sig: frequency {self.frequency} aliases on a {info.size}-px image (needs < {info.size / 2})")

    def build_trigger(self, info) -> AdditiveTrigger:
        columns = torch.arange(info.size, dtype=torch.float32)
        wave = self.delta / 255 * torch.sin(2 * math.pi * columns * self.frequency / info.size)
        return AdditiveTrigger(wave.expand(info.channels, info.size, info.size).clone())


@kdbench.hookimpl
def register_attacks(register):
    register(Sig)
