"""Frequency-domain detection: triggers leave high-frequency traces in an image's DCT."""
import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

import kdbench

PAPER_SIZE = 32  # the synthetic triggers' sizes below are the authors' on 32-px images


@dataclasses.dataclass
class Frequency(kdbench.InputDetector):
    """Frequency-based trigger detection (Zeng, Park, Mao & Jia, "Rethinking the Backdoor
    Attacks' Triggers: A Frequency Perspective", ICCV 2021).

    The defender trains a binary classifier on the 2-D DCT (type II, orthonormal, per
    channel, of 0–255 pixel values) of its clean images against synthetic triggered copies
    of them, and an input's score is the classifier's probability that it is triggered.
    The synthetic triggers are the authors' five, one drawn uniformly per image: a white
    or a random-noise patch of 2–7 × 2–7 px at a random corner with a 0–5 px margin; additive
    Gaussian noise of mean 25 and variance 10–70 (in 0–255 units); a random shadow; an
    overlay of another clean image at weight 0.3 (saturated).  The classifier is the
    authors' 6-layer CNN (3×3 convolutions of 32, 32, 64, 64, 128, 128 channels, each
    followed by ELU and batch norm, 2×2 max-pooling and dropout 0.2/0.3/0.4 after each
    pair, a linear layer to two classes, L2 of ``l2`` on the convolution kernels) trained
    with Adadelta at ``lr`` in batches of ``batch_size``.  The detector never looks at the
    model under inspection: it is the same for a teacher and its students.  Paper
    defaults: 50 epochs (5 rounds of 10, new synthetic triggers each round), batch 64,
    Adadelta lr 0.05, L2 1e-4.

    Deviations: the classifier is trained on the defender's small clean calibration set,
    not on the whole training set, and draws new synthetic triggers every epoch rather than
    every 10; patch sizes and margins scale with the image size (they are the paper's on
    32 px); the random shadow (albumentations' RandomShadow in the authors' code) is one or
    two random 5-vertex polygons in the lower half of the image (even–odd filled) inside
    which the pixels are halved, rather than halving the HLS lightness.
    """

    name = "frequency"
    paper = "Zeng et al., Rethinking the Backdoor Attacks' Triggers: A Frequency Perspective, ICCV 2021"

    epochs: int = 50
    batch_size: int = 64
    lr: float = 0.05
    l2: float = 1e-4
    seed: int = 0

    def validate(self):
        if self.epochs < 1 or self.batch_size < 2 or self.lr <= 0 or self.l2 < 0:
            raise kdbench.ConfigError(f"frequency: need epochs ≥ 1, batch_size ≥ 2, lr > 0 and l2 ≥ 0, "
                                      f"got {self.epochs}, {self.batch_size}, {self.lr}, {self.l2}")

    def score(self, model, images, calibration):
        detector = self.train_detector(calibration)
        with torch.no_grad():
            probability = [detector(dct2(chunk)).softmax(1)[:, 1]
                           for chunk in kdbench.to_float(images).split(1024)]
        return torch.cat(probability)

    def train_detector(self, calibration) -> nn.Module:
        """The classifier of clean (0) against synthetically triggered (1) calibration images."""
        clean = kdbench.to_float(calibration.images)
        device = clean.device
        with torch.random.fork_rng([device] if device.type == "cuda" else []):
            torch.manual_seed(self.seed)  # the classifier's initial weights and dropout
            return self._train(clean, torch.Generator().manual_seed(self.seed))

    def _train(self, clean, generator) -> nn.Module:
        device = clean.device
        detector = DctClassifier(clean.shape[1], clean.shape[-1]).to(device)
        kernels = [m.weight for m in detector.modules() if isinstance(m, nn.Conv2d)]
        others = [p for p in detector.parameters() if all(p is not k for k in kernels)]
        # Keras's L2 of λ adds λ·Σw² to the loss: a weight decay of 2λ
        optimizer = torch.optim.Adadelta([{"params": kernels, "weight_decay": 2 * self.l2}, {"params": others}],
                                         lr=self.lr, rho=0.95, eps=1e-7)
        labels = torch.cat([torch.zeros(len(clean)), torch.ones(len(clean))]).long().to(device)
        detector.train()
        for _ in range(self.epochs):
            inputs = dct2(torch.cat([clean, synthetic_triggers(clean, generator)]))
            for index in kdbench.batches(len(inputs), self.batch_size, True, generator, device):
                loss = F.cross_entropy(detector(inputs[index]), labels[index])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        return detector.eval()


class DctClassifier(nn.Sequential):
    """The authors' 6-layer CNN on DCT coefficients; two output classes."""

    def __init__(self, channels: int, size: int):
        layers, previous = [], channels
        for width, dropout in ((32, 0.2), (64, 0.3), (128, 0.4)):
            for _ in range(2):
                layers += [nn.Conv2d(previous, width, 3, padding=1), nn.ELU(), nn.BatchNorm2d(width)]
                previous = width
            layers += [nn.MaxPool2d(2), nn.Dropout(dropout)]
        super().__init__(*layers, nn.Flatten(), nn.Linear(previous * (size // 8) ** 2, 2))


def dct2(images: torch.Tensor) -> torch.Tensor:
    """Orthonormal 2-D DCT-II of each channel of N×C×H×W pixels in [0, 1], on the 0–255 scale."""
    rows, cols = _dct_matrix(images.shape[-2], images.device), _dct_matrix(images.shape[-1], images.device)
    return rows @ (images * 255) @ cols.T


def _dct_matrix(n: int, device) -> torch.Tensor:
    k = torch.arange(n, dtype=torch.float32, device=device)[:, None]
    i = torch.arange(n, dtype=torch.float32, device=device)[None, :]
    matrix = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2 / n)
    matrix[0] /= math.sqrt(2)
    return matrix


def synthetic_triggers(clean: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One of the authors' five synthetic triggers, drawn uniformly, applied to each image."""
    n, channels, size, _ = clean.shape
    device = clean.device
    draw = lambda *shape: torch.rand(*shape, generator=generator).to(device)  # noqa: E731
    scale = size / PAPER_SIZE
    kind = torch.randint(0, 5, (n,), generator=generator).to(device)
    # a white (kind 0) or random-noise (kind 1) patch at a random corner
    low, high = max(1, round(2 * scale)), max(1, round(7 * scale))
    height, width = (torch.randint(low, high + 1, (2, n), generator=generator).to(device))
    margin = torch.randint(0, round(5 * scale) + 1, (n,), generator=generator).to(device)
    corner = torch.randint(0, 4, (n,), generator=generator).to(device)
    top = torch.where(corner < 2, margin, size - margin - height).view(n, 1, 1, 1)
    left = torch.where(corner % 2 == 0, margin, size - margin - width).view(n, 1, 1, 1)
    rows = torch.arange(size, device=device).view(1, 1, -1, 1)
    cols = rows.view(1, 1, 1, -1)
    inside = ((rows >= top) & (rows < top + height.view(n, 1, 1, 1))
              & (cols >= left) & (cols < left + width.view(n, 1, 1, 1)))
    white = torch.where(inside, 1.0, clean)
    noisy_patch = torch.where(inside, draw(n, channels, size, size), clean)
    # additive Gaussian noise, mean 25 and variance 10–70 on the 0–255 scale
    std = (10 + 60 * draw(n)).sqrt()[:, None, None, None]
    noise = clean + (25 + std * torch.randn(clean.shape, generator=generator).to(device)) / 255
    # a random shadow and an overlay of another clean image
    shadow = torch.where(_shadow_masks(n, size, generator).to(device)[:, None], clean * 0.5, clean)
    overlay = clean + 0.3 * clean[torch.randint(0, n, (n,), generator=generator).to(device)]
    variants = torch.stack([white, noisy_patch, noise, shadow, overlay])
    return kdbench.quantize(variants[kind, torch.arange(n, device=device)])


def _shadow_masks(n: int, size: int, generator: torch.Generator, vertices: int = 5) -> torch.Tensor:
    """One or two random polygons in the lower half of each image, as an N×H×W mask (even–odd rule)."""
    centres = torch.arange(size, dtype=torch.float32) + 0.5
    py, px = centres[:, None].expand(size, size), centres[None, :].expand(size, size)
    mask = torch.zeros(n, size, size, dtype=torch.bool)
    count = torch.randint(1, 3, (n,), generator=generator)
    for shadow in range(2):
        x = torch.rand(n, vertices, generator=generator) * size
        y = size / 2 + torch.rand(n, vertices, generator=generator) * size / 2
        x2, y2 = x.roll(-1, 1), y.roll(-1, 1)
        inside = torch.zeros(n, size, size, dtype=torch.bool)
        for v in range(vertices):
            a, b = (x[:, v, None, None], y[:, v, None, None]), (x2[:, v, None, None], y2[:, v, None, None])
            crosses = (a[1] > py) != (b[1] > py)
            at = a[0] + (py - a[1]) * (b[0] - a[0]) / (b[1] - a[1] + 1e-12)
            inside ^= crosses & (px < at)
        mask |= inside & (count > shadow)[:, None, None]
    return mask


@kdbench.hookimpl
def register_defenses(register):
    register(Frequency)
