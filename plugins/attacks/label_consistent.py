"""Label-consistent: adversarially perturbed target-class images plus a corner pattern, labels untouched."""
import dataclasses

import torch
import torch.nn.functional as F

import kdbench
from kdbench.triggers import AdditiveTrigger


@dataclasses.dataclass
class LabelConsistent(kdbench.PoisoningAttack):
    """Label-consistent backdoor attack (Turner, Tsipras & Madry, "Label-Consistent Backdoor
    Attacks", 2019).

    ``poison_rate`` of the *target class's* training images keep their (correct) label but
    are made hard to classify by an untargeted L∞ PGD perturbation of radius ``epsilon``/255
    (``pgd_steps`` steps of 2.5·ε/steps from a random start, Madry et al.'s rule), so that
    the model leans on the trigger to fit them; the trigger is then applied.  The trigger is a
    3×3 black-and-white checkerboard in each of the four image corners (``corners="all"``,
    the paper's variant that survives flips and crops) or only the bottom-right one, added
    with ``amplitude`` on a 0–1 scale (1 overwrites the corners; the paper's reduced-
    visibility variant uses e.g. 16/255–64/255).  At test time only the pattern is applied.

    Deviations: the paper perturbs with an adversarially trained model; here the perturbations
    are made against the clean teacher the harness trains on the attacker half.  The default
    radius, 32/255, is larger than the CIFAR-10 radii of the paper's main experiments: at
    16/255 the clean digits model still classifies most perturbed images correctly, and the
    perturbation then gives the model no reason to rely on the pattern.  The harness
    records a poisoned set as trigger + indices, so its copy of these samples (for
    training-data defenses) carries the corner pattern but not the perturbation.
    """

    name = "label_consistent"
    paper = "Turner, Tsipras & Madry, Label-Consistent Backdoor Attacks, arXiv:1912.02771, 2019"
    clean_label = True
    needs_clean_teacher = True

    poison_rate: float = 0.8
    epsilon: float = 32.0
    pgd_steps: int = 10
    corners: str = "all"
    amplitude: float = 1.0

    def validate(self):
        super().validate()
        kdbench.check_range(self.name, "epsilon", self.epsilon, 0.0, 255.0)
        kdbench.check_range(self.name, "amplitude", self.amplitude, 0.0, 1.0)
        if self.pgd_steps < 1:
            raise kdbench.ConfigError(f"label_consistent: pgd_steps must be ≥ 1, got {self.pgd_steps}")
        if self.corners not in ("all", "bottom-right"):
            raise kdbench.ConfigError(f"label_consistent: corners must be all or bottom-right, got {self.corners!r}")

    def check(self, info):
        super().check(info)
        if info.size < 6:
            raise kdbench.ConfigError(f"label_consistent: 3-px corner patterns need images of at least 6 px, got {info.size}")

    def build_trigger(self, info) -> AdditiveTrigger:
        rows = torch.arange(3)
        checker = ((rows[:, None] + rows[None, :]) % 2 == 0).float() * 2 - 1  # +1 white, −1 black
        signal = torch.zeros(info.size, info.size)
        signal[-3:, -3:] = checker
        if self.corners == "all":
            signal[:3, :3] = checker.flip(0, 1)
            signal[:3, -3:] = checker.flip(0)
            signal[-3:, :3] = checker.flip(1)
        return AdditiveTrigger(self.amplitude * signal.expand(info.channels, -1, -1).clone())

    def perturb(self, model, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Untargeted L∞ PGD: push x away from its own label y within the ε-ball."""
        epsilon = self.epsilon / 255
        step = 2.5 * epsilon / self.pgd_steps
        delta = ((torch.rand(x.shape, generator=generator) * 2 - 1) * epsilon).to(x.device)
        for _ in range(self.pgd_steps):
            delta.requires_grad_(True)
            loss = F.cross_entropy(model((x + delta).clamp(0, 1)), y)
            grad, = torch.autograd.grad(loss, delta)
            delta = (delta + step * grad.sign()).clamp(-epsilon, epsilon).detach()
        return (x + delta).clamp(0, 1)

    def poison(self, ctx, trigger, indices):
        model = ctx.clean_teacher.eval()
        generator = ctx.generator(5)
        hard = ctx.images.clone()
        for chunk in indices.cpu().split(ctx.batch_size):
            x = kdbench.to_float(kdbench.take(hard, chunk, ctx.device))
            adversarial = self.perturb(model, x, ctx.labels[chunk.to(ctx.device)], generator)
            kdbench.put(hard, chunk, adversarial)
        return super().poison(dataclasses.replace(ctx, images=hard), trigger, indices)


@kdbench.hookimpl
def register_attacks(register):
    register(LabelConsistent)
