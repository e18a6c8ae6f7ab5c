"""WaNet: an imperceptible warp of the whole image as the trigger."""
import dataclasses

import torch
import torch.nn.functional as F

import kdbench


def identity_grid(size: int) -> torch.Tensor:
    """The 1×H×W×2 sampling grid of ``grid_sample`` (x, y in [−1, 1]) that leaves an image unchanged."""
    axis = torch.linspace(-1, 1, size)
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([x, y], dim=-1)[None]


def warp(x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    return F.grid_sample(x, grid.expand(len(x), -1, -1, -1), mode="bilinear", align_corners=True)


class WarpTrigger(kdbench.Trigger):
    """Resamples the image along a fixed, smooth warping field (a ``grid_sample`` grid)."""

    def __init__(self, grid: torch.Tensor):
        super().__init__()
        self.register_buffer("grid", grid)

    def apply(self, x):
        return warp(x, self.grid)


@dataclasses.dataclass
class WaNet(kdbench.PoisoningAttack):
    """WaNet (Nguyen & Tran, "WaNet – Imperceptible Warping-based Backdoor Attack", ICLR 2021).

    The warping field is a ``grid_size``² field of uniform noise in [−1, 1], normalised by its
    mean absolute value, upsampled bicubically to the image and scaled by ``strength`` / size
    (the paper's k = 4, s = 0.5); poisoned samples are warped and relabelled to the target.
    Noise mode: ``cross_ratio`` × as many other samples are warped by the field plus per-pixel
    noise in [−1, 1]/size and keep their labels, so that the model learns the exact warp.

    As in the official train.py (VinAIResearch/Warping-based_Backdoor_Attack-release), the
    warp comes before the augmentation: that loop warps the loaded batch and only then applies
    its ``PostTensorTransform`` (crop, rotation, flip).  Deviation: it poisons each batch on
    the fly (fresh choice, fresh noise); the harness trains on a fixed poisoned set, so the poisoned and noise samples (and the noise)
    are drawn once, from the cell's seed.  The noise samples are not reported as poisoned
    (they keep their labels and are not reproduced by the trigger).
    """

    name = "wanet"
    paper = "Nguyen & Tran, WaNet - Imperceptible Warping-based Backdoor Attack, ICLR 2021"

    grid_size: int = 4
    strength: float = 0.5
    cross_ratio: float = 2.0
    field_seed: int = 0

    def validate(self):
        super().validate()
        if self.grid_size < 2:
            raise kdbench.ConfigError(f"wanet: grid_size must be ≥ 2, got {self.grid_size}")
        kdbench.check_positive(self, "strength")
        if self.cross_ratio < 0 or self.poison_rate * (1 + self.cross_ratio) > 1:
            raise kdbench.ConfigError(
                f"wanet: cross_ratio must be ≥ 0 with poison_rate × (1 + cross_ratio) ≤ 1, got {self.cross_ratio}")

    def check(self, info):
        super().check(info)
        if self.grid_size > info.size:
            raise kdbench.ConfigError(f"wanet: grid_size {self.grid_size} exceeds the {info.size}-px image")

    def build_trigger(self, info) -> WarpTrigger:
        generator = torch.Generator().manual_seed(self.field_seed)
        noise = torch.rand(1, 2, self.grid_size, self.grid_size, generator=generator) * 2 - 1
        noise = noise / noise.abs().mean()
        field = F.interpolate(noise, size=info.size, mode="bicubic", align_corners=True).permute(0, 2, 3, 1)
        return WarpTrigger((identity_grid(info.size) + self.strength * field / info.size).clamp(-1, 1))

    def poison(self, ctx, trigger, indices):
        images, labels = super().poison(ctx, trigger, indices)
        taken = torch.zeros(len(ctx.labels), dtype=torch.bool)
        taken[indices] = True
        free = (~taken).nonzero().flatten()
        count = min(len(free), int(round(self.cross_ratio * len(indices))))
        cross = free[torch.randperm(len(free), generator=ctx.generator(2))[:count]]
        if count:
            size = ctx.info.size
            jitter = (torch.rand(count, size, size, 2, generator=ctx.generator(3)) * 2 - 1).to(ctx.device) / size
            with torch.no_grad():
                chosen = kdbench.to_float(kdbench.take(images, cross, ctx.device))
                warped = warp(chosen, (trigger.grid + jitter).clamp(-1, 1))
            kdbench.put(images, cross, warped)
        return images, labels


@kdbench.hookimpl
def register_attacks(register):
    register(WaNet)
