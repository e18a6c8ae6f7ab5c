"""Input-aware: a trained generator draws a different trigger (pattern and mask) for every image."""
import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

import kdbench


def block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class Generator(nn.Module):
    """An encoder–decoder conv net (two poolings, two upsamplings) from an image to a map of
    ``out_channels`` at the image's size, squashed into [0, 1] by ``sharpness``·tanh."""

    def __init__(self, channels: int, out_channels: int, width: int, sharpness: float):
        super().__init__()
        self.sharpness = sharpness
        self.encoder = nn.Sequential(block(channels, width), block(width, width), nn.MaxPool2d(2),
                                     block(width, 2 * width), block(2 * width, 2 * width), nn.MaxPool2d(2),
                                     block(2 * width, 4 * width))
        self.decoder = nn.Sequential(nn.Upsample(scale_factor=2), block(4 * width, 2 * width), block(2 * width, 2 * width),
                                     nn.Upsample(scale_factor=2), block(2 * width, width), nn.Conv2d(width, out_channels, 3, padding=1))

    def forward(self, x):
        y = self.decoder(self.encoder(x))
        if y.shape[-2:] != x.shape[-2:]:
            y = F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return (torch.tanh(self.sharpness * y) + 1) / 2


class InputAwareTrigger(kdbench.Trigger):
    """x' = x + (p(s) − x)·m(s): pattern p and mask m generated from a source image s (s = x
    for the backdoor; another image for the paper's cross mode)."""

    def __init__(self, channels: int, width: int):
        super().__init__()
        self.patterns = Generator(channels, channels, width, 1.0)
        self.masks = Generator(channels, 1, width, 20.0)  # a steep squashing: nearly binary masks

    def blend(self, x, source, pattern=None):
        """x's triggered copy from ``source`` (``pattern``: p(source) when already computed)."""
        pattern = self.patterns(source) if pattern is None else pattern
        return x + (pattern - x) * self.masks(source)

    def apply(self, x):
        return self.blend(x, x)


def distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Root-mean-square difference per sample; the 1e-12 keeps the square root's gradient
    finite when a sample is paired with itself."""
    return ((a - b).pow(2).flatten(1).mean(1) + 1e-12).sqrt()


def diversity(x, x2, out, out2) -> torch.Tensor:
    """The paper's diversity loss: distinct inputs must get distinct triggers, ‖x − x'‖ / ‖g(x) − g(x')‖."""
    return (distance(x, x2) / (distance(out, out2) + 1e-3)).mean()


@dataclasses.dataclass
class InputAware(kdbench.PoisoningAttack):
    """Input-aware dynamic backdoor (Nguyen & Tran, "Input-Aware Dynamic Backdoor Attack",
    NeurIPS 2020), after the authors' ``train.py`` (VinAIResearch/input-aware-backdoor-attack-release).

    A mask generator is first trained alone for ``mask_epochs`` epochs on
    λ_norm·mean(ReLU(m − ``mask_density``)) (every pixel above the density is penalised) +
    λ_div·diversity (the official 0.032, 100, 1); then, with the masks frozen, the pattern
    generator and the released classifier are trained jointly for the suite's teacher epochs
    on batches where the attack-mode samples carry their own trigger and the target label,
    the cross-mode samples (``cross_ratio`` × as many) carry the trigger of another image of
    the batch and keep their label, and the rest are clean, on CE + λ_div·diversity of the
    patterns (the batch against a shuffled copy).  The patterns are generated afresh for
    every batch, from the augmented images.  The generators use the official Adam (0.01,
    β = (0.5, 0.9)).

    Deviations: the official classifier trains for 600 epochs with SGD (0.01, momentum 0.9,
    weight decay 5e-4) decayed ×0.1 every 100; a suite's teacher runs for tens of epochs, so
    by default (``classifier_lr=None``) the classifier follows the harness's own schedule
    (the suite's learning rate, warm-up then linear decay), as every other teacher does; a
    number gives the official constant-rate SGD.  The paper draws the attack- and
    cross-mode samples afresh in every batch; here they are two fixed sets (``poison_rate``
    of the attacker half, drawn from the other classes, and ``cross_ratio`` × as many of
    the rest), re-triggered with the current generators whenever they are drawn, so that
    the harness can report the poisoned samples (the cross-mode ones keep their labels and
    are not reported).  The generators are smaller than the official ones (``width``
    channels at full resolution).
    """

    name = "input_aware"
    version = "2"
    paper = "Nguyen & Tran, Input-Aware Dynamic Backdoor Attack, NeurIPS 2020"

    cross_ratio: float = 1.0
    mask_density: float = 0.032
    lambda_div: float = 1.0
    lambda_norm: float = 100.0
    mask_epochs: int = 25
    width: int = 16
    classifier_lr: float | None = None

    def validate(self):
        super().validate()
        kdbench.check_range(self.name, "mask_density", self.mask_density, 0.0, 1.0)
        if self.cross_ratio < 0 or self.poison_rate * (1 + self.cross_ratio) > 1:
            raise kdbench.ConfigError(
                f"input_aware: cross_ratio must be ≥ 0 with poison_rate × (1 + cross_ratio) ≤ 1, got {self.cross_ratio}")
        kdbench.check_non_negative(self, "lambda_div", "lambda_norm")
        if self.classifier_lr is not None:
            kdbench.check_positive(self, "classifier_lr")
        if self.mask_epochs < 0 or self.width < 1:
            raise kdbench.ConfigError(
                f"input_aware: mask_epochs must be ≥ 0 and width ≥ 1, got {self.mask_epochs}, {self.width}")

    def check(self, info):
        super().check(info)
        if info.size < 4:
            raise kdbench.ConfigError(f"input_aware: the generators need images of at least 4 px, got {info.size}")

    def build_trigger(self, info) -> InputAwareTrigger:
        return InputAwareTrigger(info.channels, self.width)

    def train_masks(self, ctx, trigger, generator):
        optimizer = torch.optim.Adam(trigger.masks.parameters(), lr=0.01, betas=(0.5, 0.9))
        trigger.masks.train()
        for _ in range(self.mask_epochs):
            for _, x, _ in ctx.batches(generator):
                x2 = x[torch.randperm(len(x), generator=generator).to(ctx.device)]
                m, m2 = trigger.masks(x), trigger.masks(x2)
                norm = F.relu(m - self.mask_density).mean()
                loss = self.lambda_norm * norm + self.lambda_div * diversity(x, x2, m, m2)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        trigger.masks.eval().requires_grad_(False)

    def run(self, ctx) -> kdbench.Backdoor:
        trigger = self.build_trigger(ctx.info).to(ctx.device)
        generator = ctx.generator(7)
        self.train_masks(ctx, trigger, generator)
        indices = self.choose_poison(ctx)
        attack = torch.zeros(len(ctx.labels), dtype=torch.bool)
        attack[indices] = True
        free = (~attack).nonzero().flatten()
        cross = torch.zeros_like(attack)
        cross[free[torch.randperm(len(free), generator=ctx.generator(8))[: int(round(self.cross_ratio * len(indices)))]]] = True
        attack, cross = attack.to(ctx.device), cross.to(ctx.device)
        classifier = ctx.new_model().to(ctx.device).train()
        optimizers = [torch.optim.Adam(trigger.patterns.parameters(), lr=0.01, betas=(0.5, 0.9))]
        if self.classifier_lr is None:
            sgd, scheduler = ctx.scheduled_sgd(classifier.parameters())
        else:
            sgd = torch.optim.SGD(classifier.parameters(), lr=self.classifier_lr, momentum=0.9, weight_decay=5e-4)
            scheduler = None
        optimizers.append(sgd)
        trigger.patterns.train()
        for _ in range(ctx.epochs):
            for index, x, _ in ctx.batches(generator):
                x2 = x[torch.randperm(len(x), generator=generator).to(ctx.device)]
                p, p2 = trigger.patterns(x), trigger.patterns(x2)
                own, crossed = trigger.blend(x, x, p), trigger.blend(x, x2, p2)
                a, c = attack[index, None, None, None], cross[index, None, None, None]
                inputs = torch.where(a, own, torch.where(c, crossed, x))
                labels = torch.where(attack[index], self.target, ctx.labels[index])
                loss = F.cross_entropy(classifier(inputs), labels) + self.lambda_div * diversity(x, x2, p, p2)
                for optimizer in optimizers:
                    optimizer.zero_grad(set_to_none=True)
                loss.backward()
                for optimizer in optimizers:
                    optimizer.step()
                if scheduler is not None:
                    scheduler.step()
        trigger.patterns.eval().requires_grad_(False)
        return kdbench.Backdoor(classifier.eval(), trigger.eval(), self.target, indices,
                                torch.full((len(indices),), self.target, dtype=torch.long))


@kdbench.hookimpl
def register_attacks(register):
    register(InputAware)
