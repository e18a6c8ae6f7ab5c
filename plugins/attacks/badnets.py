"""BadNets: a fixed patch stamped into the corner of poisoned training images."""
import dataclasses

import torch

import kdbench
from kdbench.triggers import PatchTrigger


@dataclasses.dataclass
class BadNets(kdbench.PoisoningAttack):
    """BadNets (Gu, Dolan-Gavitt & Garg, "BadNets: Identifying Vulnerabilities in the
    Machine Learning Model Supply Chain", 2017): a ``patch_size``² patch in the
    bottom-right corner (``margin`` pixels in), white or a black/white checkerboard,
    on ``poison_rate`` of the training set relabelled to ``target`` (all-to-one)."""

    name = "badnets"
    paper = "Gu et al., BadNets: Identifying Vulnerabilities in the Machine Learning Model Supply Chain, 2017"

    patch_size: int = 3
    margin: int = 1
    pattern: str = "white"

    def validate(self):
        super().validate()
        if self.patch_size < 1 or self.margin < 0:
            raise kdbench.ConfigError(f"badnets: patch_size must be ≥ 1 and margin ≥ 0, got {self.patch_size}, {self.margin}")
        if self.pattern not in ("white", "checkerboard"):
            raise kdbench.ConfigError(f"badnets: pattern must be white or checkerboard, got {self.pattern!r}")

    def check(self, info):
        super().check(info)
        if self.patch_size + self.margin > info.size:
            raise kdbench.ConfigError(
                f"badnets: a {self.patch_size}-px patch {self.margin} px from the edge does not fit a {info.size}-px image")

    def build_trigger(self, info) -> PatchTrigger:
        mask = torch.zeros(1, info.size, info.size)
        pattern = torch.zeros(info.channels, info.size, info.size)
        end = info.size - self.margin
        start = end - self.patch_size
        mask[:, start:end, start:end] = 1
        if self.pattern == "white":
            pattern[:, start:end, start:end] = 1
        else:
            rows = torch.arange(self.patch_size)
            pattern[:, start:end, start:end] = ((rows[:, None] + rows[None, :]) % 2 == 0).float()
        return PatchTrigger(mask, pattern)


@kdbench.hookimpl
def register_attacks(register):
    register(BadNets)
