"""Cognitive Distillation: a backdoored input keeps its output with a suspiciously small mask."""
import dataclasses

import torch

import kdbench

OUTPUTS = ("logits", "features")
OFFICIAL = {"logits": (0.1, 0.01, 1.0), "features": (0.05, 0.001, 10.0)}  # (lr, α, β) of CD-L and CD-F


@dataclasses.dataclass
class _CognitiveDistillation(kdbench.Defense):
    """Cognitive Distillation (Huang, Ma, Erfani & Bailey, "Distilling Cognitive Backdoor
    Patterns within an Image", ICLR 2023).  For every image x a mask m = (tanh θ + 1)/2
    (one channel, broadcast over the colour channels, θ initialised to 1) is learned with
    Adam so that x·m + (1−m)·δ, with δ a uniformly random colour per image and step,
    keeps the model's output:

        ‖f(x·m + (1−m)·δ) − f(x)‖₁ (mean over outputs) + α‖m‖₁ + β·TV(m),

    TV(m) the summed squared differences of neighbouring mask pixels over the number of
    pixels.  ``output`` = ``logits`` is CD-L, ``features`` is CD-F (the last feature map).
    The mask of a triggered input shrinks to the trigger, so the score is −‖m‖₁ (higher =
    more suspicious).  The defaults are the authors' code's (HanxunH/CognitiveDistillation,
    ``detection/cognitive_distillation.py``, run by ``extract.py`` with the settings of the
    mask files ``detect_analysis.py`` reads): 100 steps of Adam with betas (0.1, 0.1), and
    per output: CD-L learning rate 0.1, α = 0.01, β = 1; CD-F learning rate 0.05, α = 0.001,
    β = 10.  ``lr``, ``alpha`` and ``beta`` left unset take the values of the chosen output.

    Deviations: the images are optimised in batches on the device and the per-image
    objectives are summed rather than averaged, so that (Adam being scale-invariant) an
    image's mask does not depend on the batch it shares; on CUDA the forward passes run in
    bf16 autocast while the objective is computed in float32.  The network normalises its
    input itself, so the mask and δ live in pixel space for both forward passes."""

    paper = "Huang et al., Distilling Cognitive Backdoor Patterns within an Image, ICLR 2023"

    version = "2"

    output: str = "logits"
    steps: int = 100
    lr: float | None = None
    alpha: float | None = None
    beta: float | None = None
    batch_size: int = 512
    seed: int = 0

    def validate(self):
        if self.output not in OUTPUTS:
            raise kdbench.ConfigError(f"{self.name}: output must be one of {', '.join(OUTPUTS)}, got {self.output!r}")
        lr, alpha, beta = self.settings()
        if min(self.steps, self.batch_size) < 1 or lr <= 0 or min(alpha, beta) < 0:
            raise kdbench.ConfigError(f"{self.name}: steps and batch_size must be ≥ 1, lr > 0, alpha and beta ≥ 0")

    def settings(self) -> tuple[float, float, float]:
        """(learning rate, α, β): the options given, the official values of ``output`` for the others."""
        given = (self.lr, self.alpha, self.beta)
        return tuple(official if value is None else value for value, official in zip(given, OFFICIAL[self.output]))

    def mask_norms(self, model, images: torch.Tensor) -> torch.Tensor:
        """‖m‖₁ of the distilled mask of every image (uint8 or float pixels)."""
        model.eval()
        generator = torch.Generator(device=images.device).manual_seed(self.seed)
        with kdbench.channels_last(model):  # as the training loop runs it
            return torch.cat([self._distill(model, kdbench.to_float(chunk), generator)
                              for chunk in images.split(self.batch_size)])

    def _output(self, model, x):
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=x.device.type == "cuda"):
            out = model.features(x) if self.output == "features" else model(x)
        return out.float().flatten(1)

    def _distill(self, model, x, generator):
        n, channels, height, width = x.shape
        lr, alpha, beta = self.settings()
        with torch.no_grad():
            reference = self._output(model, x)
        theta = torch.ones(n, 1, height, width, device=x.device, requires_grad=True)
        optimizer = torch.optim.Adam([theta], lr=lr, betas=(0.1, 0.1))
        for _ in range(self.steps):
            mask = (torch.tanh(theta) + 1) / 2
            colour = torch.rand(n, channels, 1, 1, device=x.device, generator=generator)
            kept = (self._output(model, x * mask + (1 - mask) * colour) - reference).abs().mean(1)
            objective = kept + alpha * mask.sum((1, 2, 3)) + beta * _total_variation(mask)
            theta.grad, = torch.autograd.grad(objective.sum(), theta)
            optimizer.step()
        return ((torch.tanh(theta) + 1) / 2).detach().sum((1, 2, 3))


def _total_variation(mask):
    vertical = (mask[:, :, 1:] - mask[:, :, :-1]).pow(2).sum((1, 2, 3))
    horizontal = (mask[:, :, :, 1:] - mask[:, :, :, :-1]).pow(2).sum((1, 2, 3))
    return (vertical + horizontal) / mask[0].numel()


@dataclasses.dataclass
class CognitiveDistillation(_CognitiveDistillation, kdbench.InputDetector):
    """Cognitive Distillation on test-time inputs (the method is described on
    ``_CognitiveDistillation``).  ``cognitive_distillation_data`` runs the same distillation
    over the teacher's training set: two components, because a component declares one
    family and the harness files each of its rows under it."""

    name = "cognitive_distillation"

    def score(self, model, images, calibration):
        return -self.mask_norms(model, images)


@dataclasses.dataclass
class CognitiveDistillationData(_CognitiveDistillation, kdbench.TrainingDataDetector):
    """Cognitive Distillation over the teacher's training set, the paper's main use:
    finding the poisoned samples.  The labels are not needed."""

    name = "cognitive_distillation_data"

    def score(self, model, images, labels, calibration):
        return -self.mask_norms(model, images)


@kdbench.hookimpl
def register_defenses(register):
    register(CognitiveDistillation)
    register(CognitiveDistillationData)
