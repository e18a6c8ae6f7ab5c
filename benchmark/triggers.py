"""Trigger building blocks that several attacks share, for built-in and third-party attacks alike."""
import torch

from .attack import Trigger


class PatchTrigger(Trigger):
    """Pixels inside ``mask`` are replaced by ``pattern``: x·(1−m) + p·m."""

    def __init__(self, mask: torch.Tensor, pattern: torch.Tensor):
        super().__init__()
        self.register_buffer("mask", mask)
        self.register_buffer("pattern", pattern)

    def apply(self, x):
        return x * (1 - self.mask) + self.pattern * self.mask


class AdditiveTrigger(Trigger):
    """x' = x + v for one signal v of an image's shape, fixed or learned (clipped to the pixel
    range by the harness)."""

    def __init__(self, signal: torch.Tensor):
        super().__init__()
        self.register_buffer("signal", signal)

    def apply(self, x):
        return x + self.signal
