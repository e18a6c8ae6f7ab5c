"""SIG: a horizontal sinusoidal signal added to target-class images, labels untouched."""
import dataclasses
import math

import torch

import kdbench
from kdbench.triggers import AdditiveTrigger


@dataclasses.dataclass
class Sig(kdbench.PoisoningAttack):
    """SIG (Barni, Kallas & Tondi, "A New Backdoor Attack in CNNs by Training Set Corruption
    Without Label Poisoning", ICIP 2019): the sinusoidal signal v(i, j) = Δ·sin(2π·j·f / m)
    over the image's m columns, f = ``frequency`` (the paper's f = 6), added to
    ``poison_rate`` of the *target class's* training images, whose labels stay correct
    (clean label).

    As in the paper, the signal is weak while poisoning (Δ = ``delta`` = 20 on the 0–255
    scale, the paper's value) and stronger at test time (Δ = ``test_delta``): the teacher
    only learns to associate the pattern with the target, and a stronger copy of the pattern
    outweighs the content of an image of another class.  The trigger the harness stores and
    measures is the test-time one; the poisoned training images carry the ``delta`` one
    (the harness records a poisoned set as trigger + indices, so its copy of these samples,
    for training-data defenses, carries the stronger signal).

    ``poison_rate`` defaults to the whole target class, as BackdoorBench's setting (10 % of
    a ten-class training set, drawn from the target class) amounts to; the paper varies the
    poisoned fraction α of the target class.
    """

    name = "sig"
    paper = "Barni, Kallas & Tondi, A New Backdoor Attack in CNNs by Training Set Corruption Without Label Poisoning, ICIP 2019"
    clean_label = True

    poison_rate: float = 1.0
    delta: float = 20.0
    test_delta: float = 60.0
    frequency: int = 6

    def validate(self):
        super().validate()
        kdbench.check_range(self.name, "delta", self.delta, 0.0, 255.0)
        kdbench.check_range(self.name, "test_delta", self.test_delta, 0.0, 255.0)
        if self.frequency < 1:
            raise kdbench.ConfigError(f"sig: frequency must be ≥ 1, got {self.frequency}")

    def check(self, info):
        super().check(info)
        if 2 * self.frequency >= info.size:
            raise kdbench.ConfigError(
                f"sig: frequency {self.frequency} aliases on a {info.size}-px image (needs < {info.size / 2})")

    def signal(self, info, delta: float) -> AdditiveTrigger:
        columns = torch.arange(info.size, dtype=torch.float32)
        wave = delta / 255 * torch.sin(2 * math.pi * columns * self.frequency / info.size)
        return AdditiveTrigger(wave.expand(info.channels, info.size, info.size).clone())

    def build_trigger(self, info) -> AdditiveTrigger:
        return self.signal(info, self.test_delta)

    def poison(self, ctx, trigger, indices):
        return super().poison(ctx, self.signal(ctx.info, self.delta).to(ctx.device), indices)


@kdbench.hookimpl
def register_attacks(register):
    register(Sig)
