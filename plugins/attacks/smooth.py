"""Smooth: a low-frequency universal perturbation of the clean model as the trigger."""
import dataclasses
import math

import torch
import torch.nn.functional as F

import kdbench
from kdbench.triggers import AdditiveTrigger


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian low-pass filter of a C×H×W tensor, zero-padded, kernel ±2.5σ."""
    radius = max(1, math.ceil(2.5 * sigma))
    taps = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = x.shape[0]
    x = F.conv2d(x[None], kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), padding=(radius, 0), groups=channels)
    x = F.conv2d(x, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), padding=(0, radius), groups=channels)
    return x[0]


@dataclasses.dataclass
class Smooth(kdbench.PoisoningAttack):
    """The smooth (low-frequency) trigger of Zeng, Park, Mao & Jia, "Rethinking the Backdoor
    Attacks' Triggers: A Frequency Perspective", ICCV 2021.

    A universal perturbation v that pushes the clean model toward the target is searched
    under a low-pass constraint: after every update v is passed through a Gaussian filter
    (σ = ``sigma`` px on a 32-px image, the paper's setting, scaled with the image size)
    and min–max normalised to [0, ``amplitude``] (0.2 in the paper).  The search stops at
    the pass whose targeted fooling rate on the attacker half reaches ``fooling_rate`` (the
    paper's 20%) or after ``passes`` passes, keeping the best v.  ``poison_rate`` of the
    training set gets x + v and the target label.

    Deviations: the paper accumulates per-image DeepFool steps; here each update is a signed
    gradient step of the targeted cross-entropy over a batch of not-yet-fooled images, which
    runs on batches on the device.  The paper picks the class the trigger naturally leads to
    as the target; the harness fixes the target, so v is searched toward it.  Out-of-range
    pixels are clipped rather than smoothly pulled back.
    """

    name = "smooth"
    paper = "Zeng et al., Rethinking the Backdoor Attacks' Triggers: A Frequency Perspective, ICCV 2021"
    needs_clean_teacher = True

    sigma: float = 6.0
    amplitude: float = 0.2
    fooling_rate: float = 0.2
    passes: int = 10
    step_size: float = 0.05

    def validate(self):
        super().validate()
        kdbench.check_range(self.name, "amplitude", self.amplitude, 0.0, 1.0)
        kdbench.check_range(self.name, "fooling_rate", self.fooling_rate, 0.0, 1.0)
        if self.sigma <= 0 or self.passes < 1 or self.step_size <= 0:
            raise kdbench.ConfigError(
                f"smooth: sigma and step_size must be positive and passes ≥ 1, got {self.sigma}, {self.step_size}, {self.passes}")

    def build_trigger(self, info) -> AdditiveTrigger:
        return AdditiveTrigger(torch.zeros(info.channels, info.size, info.size))

    def low_pass(self, v: torch.Tensor) -> torch.Tensor:
        """Filter, then min–max normalise to [0, amplitude]."""
        v = gaussian_blur(v, self.sigma * v.shape[-1] / 32)
        return (v - v.min()) / (v.max() - v.min()).clamp_min(1e-12) * self.amplitude

    def make_trigger(self, ctx) -> AdditiveTrigger:
        trigger = self.build_trigger(ctx.info).to(ctx.device)
        model = ctx.clean_teacher.eval()
        others = (ctx.labels != self.target).nonzero().flatten()
        images = kdbench.take(ctx.images, others)
        target = torch.full((ctx.batch_size,), self.target, device=ctx.device)
        generator = ctx.generator(6)
        v = self.low_pass(torch.rand(trigger.signal.shape, generator=generator).to(ctx.device))
        best, best_rate = v, -1.0
        for _ in range(self.passes):
            for index in kdbench.batches(len(images), ctx.batch_size, True, generator, images.device):
                x = kdbench.to_float(kdbench.take(images, index, ctx.device))
                with torch.no_grad():
                    keep = model((x + v).clamp(0, 1)).argmax(1) != self.target
                if not keep.any():
                    continue
                v = v.detach().requires_grad_(True)
                loss = F.cross_entropy(model((x[keep] + v).clamp(0, 1)), target[: int(keep.sum())])
                grad, = torch.autograd.grad(loss, v)
                v = self.low_pass(v.detach() - self.step_size * grad.sign())
            rate = (kdbench.predict(model, images, transform=lambda x: (x + v).clamp(0, 1)) == self.target).float().mean().item()
            if rate > best_rate:
                best, best_rate = v, rate
            if rate >= self.fooling_rate:
                break
        trigger.signal.copy_(best)
        return trigger


@kdbench.hookimpl
def register_attacks(register):
    register(Smooth)
