"""ISSBA: an invisible, sample-specific trigger, the residual of a steganography encoder hiding a fixed string."""
import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

import kdbench

UNET_WIDTHS = (32, 32, 64, 128, 256)  # the encoder's stages: one at full size, four of stride 2


def conv(in_channels: int, out_channels: int, kernel: int, stride: int = 1) -> nn.Sequential:
    """A convolution whose output has ceil(size / stride) pixels a side (kernel − 1 zeros of
    padding, an even kernel's extra one at the bottom and right), and a ReLU."""
    before, after = (kernel - 1) // 2, kernel // 2
    return nn.Sequential(nn.ZeroPad2d((before, after, before, after)), nn.Conv2d(in_channels, out_channels, kernel, stride),
                         nn.ReLU(inplace=True))


class StegaStampEncoder(nn.Module):
    """StegaStamp's encoder (Tancik et al., CVPR 2020) at the dataset's size: the secret bits,
    through a dense layer, become an image-sized map stacked onto the image; a U-Net of four
    stride-2 stages (nearest upsampling, 2×2 convolutions, skip connections, the input joined
    again at the top) ends in a 1×1 convolution that gives the residual added to the image."""

    def __init__(self, secret_size: int, channels: int, size: int):
        super().__init__()
        self.channels, self.size = channels, size
        self.secret = nn.Sequential(nn.Linear(secret_size, channels * size * size), nn.ReLU(inplace=True))
        widths = UNET_WIDTHS
        self.down = nn.ModuleList([conv(2 * channels, widths[0], 3)] +
                                  [conv(widths[i - 1], widths[i], 3, 2) for i in range(1, len(widths))])
        self.up = nn.ModuleList([conv(widths[i], widths[i - 1], 2) for i in range(len(widths) - 1, 0, -1)])
        self.merge = nn.ModuleList([conv(2 * widths[i - 1] + (2 * channels if i == 1 else 0), widths[i - 1], 3)
                                    for i in range(len(widths) - 1, 0, -1)])
        self.residual = nn.Conv2d(widths[0], channels, 1)

    def forward(self, secret: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """The residual for each image (N×C×H×W in [0, 1]) and its secret (N×S, or S for all)."""
        code = self.secret(secret - 0.5).view(-1, self.channels, self.size, self.size)
        x = torch.cat([code.expand(len(image), -1, -1, -1), image - 0.5], 1)
        skips, h = [], x
        for layer in self.down:
            h = layer(h)
            skips.append(h)
        for level, (up, merge) in enumerate(zip(self.up, self.merge)):
            h = up(F.interpolate(h, scale_factor=2, mode="nearest"))
            joined = [skips[-2 - level], h] + ([x] if level == len(self.up) - 1 else [])
            h = merge(torch.cat(joined, 1))
        return self.residual(h)


class StegaStampDecoder(nn.Module):
    """StegaStamp's decoder: a spatial transformer (its affine map starting at the identity)
    and a strided CNN with two dense layers, to one logit per secret bit."""

    def __init__(self, secret_size: int, channels: int, size: int):
        super().__init__()
        self.localise = nn.Sequential(conv(channels, 32, 3, 2), conv(32, 64, 3, 2), conv(64, 128, 3, 2), nn.Flatten(),
                                      nn.Linear(128 * math.ceil(size / 8) ** 2, 128), nn.ReLU(inplace=True))
        self.affine = nn.Linear(128, 6)
        nn.init.zeros_(self.affine.weight)
        with torch.no_grad():
            self.affine.bias.copy_(torch.tensor([1.0, 0, 0, 0, 1, 0]))
        self.decode = nn.Sequential(
            conv(channels, 32, 3, 2), conv(32, 32, 3), conv(32, 64, 3, 2), conv(64, 64, 3), conv(64, 64, 3, 2),
            conv(64, 128, 3, 2), conv(128, 128, 3, 2), nn.Flatten(),
            nn.Linear(128 * math.ceil(size / 32) ** 2, 512), nn.ReLU(inplace=True), nn.Linear(512, secret_size))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image - 0.5
        theta = self.affine(self.localise(x)).view(-1, 2, 3)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return self.decode(F.grid_sample(x, grid, align_corners=False))


class EncodedTrigger(kdbench.Trigger):
    """The image with the encoder's residual for the attack's secret added, clipped to
    [0, 1]: an invisible trigger that differs from image to image."""

    def __init__(self, encoder: StegaStampEncoder, secret: torch.Tensor):
        super().__init__()
        self.encoder = encoder
        self.register_buffer("secret", secret)

    def apply(self, x):
        return (x + self.encoder(self.secret, x)).clamp(0, 1)


@dataclasses.dataclass
class ISSBA(kdbench.PoisoningAttack):
    """ISSBA (Li, Li, Wu, Li, He & Lyu, "Invisible Backdoor Attack with Sample-Specific
    Triggers", ICCV 2021): a StegaStamp encoder learns to hide a string in any image; the
    images it encodes with one fixed ``secret_size``-bit string are the poisons, relabelled
    to the target, and at test time every image encoded so is the trigger.

    The authors released a TensorFlow encoder trained on ImageNet; the reference here is the
    PyTorch implementation of BackdoorBox (core/attacks/ISSBA.py, its example in
    tests/test_ISSBA.py), whose authors include ISSBA's, which trains the encoder and decoder
    on the dataset itself: a random string per image, Adam at ``encoder_lr`` (1e-4), batches
    of ``encoder_batch_size`` (32), ``encoder_epochs`` of which the first
    ``secret_only_fraction`` optimise the decoding loss alone, then ``l2_weight``·mean r² +
    ``lpips_weight``·LPIPS + ``secret_weight``·BCE (2, 1.5, 1.5; its critic is off in the
    example, and here); ``poison_rate`` 0.05.  Here the encoder learns on the attacker half
    only (the reference: the whole training and test sets), and ``encoder_epochs`` is a
    fraction of the suite's teacher epochs (the reference: 20 against 200).  LPIPS needs
    torchvision's AlexNet weights installed; without them, ``lpips_weight=0`` trains without
    the perceptual term.  The image size must be a multiple of 16 (the U-Net's four halvings).
    """

    name = "issba"
    paper = "Li et al., Invisible Backdoor Attack with Sample-Specific Triggers, ICCV 2021"

    poison_rate: float = 0.05
    secret_size: int = 20
    encoder_epochs: float = 0.1
    secret_only_fraction: float = 0.1
    encoder_lr: float = 1e-4
    encoder_batch_size: int = 32
    l2_weight: float = 2.0
    lpips_weight: float = 1.5
    secret_weight: float = 1.5

    def validate(self):
        super().validate()
        kdbench.check_positive(self, "secret_size", "encoder_epochs", "encoder_lr", "encoder_batch_size")
        kdbench.check_range(self.name, "secret_only_fraction", self.secret_only_fraction, 0.0, 1.0)
        kdbench.check_non_negative(self, "l2_weight", "lpips_weight", "secret_weight")

    def check(self, info):
        super().check(info)
        if info.size % 16:
            raise kdbench.ConfigError(f"issba: the encoder needs an image size that is a multiple of 16, "
                                      f"got {info.size}")
        if self.lpips_weight:
            metric, missing = kdbench.perceptual_metric()
            if metric is None:
                raise kdbench.ConfigError(f"issba: its LPIPS loss cannot be built here ({missing}); "
                                          f"set lpips_weight=0 to train the encoder without it")

    def build_trigger(self, info) -> EncodedTrigger:
        return EncodedTrigger(StegaStampEncoder(self.secret_size, info.channels, info.size),
                              torch.zeros(self.secret_size))

    def make_trigger(self, ctx) -> EncodedTrigger:
        """The encoder, trained with its decoder; the trigger's string drawn at random."""
        generator = ctx.generator(8)
        trigger = self.build_trigger(ctx.info).to(ctx.device)
        encoder = trigger.encoder.train()
        decoder = StegaStampDecoder(self.secret_size, ctx.info.channels, ctx.info.size).to(ctx.device).train()
        perceptual = kdbench.perceptual_metric()[0].to(ctx.device) if self.lpips_weight else None
        secrets = torch.bernoulli(torch.full((len(ctx.images), self.secret_size), 0.5), generator=generator)
        secrets = secrets.to(ctx.device)
        optimizer = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=self.encoder_lr)
        epochs = max(1, round(self.encoder_epochs * ctx.epochs))
        for epoch in range(epochs):
            for rows in kdbench.batches(len(ctx.images), self.encoder_batch_size, True, generator, ctx.images.device):
                image = kdbench.to_float(kdbench.take(ctx.images, rows, ctx.device))
                secret = secrets[rows.to(ctx.device)]
                residual = encoder(secret, image)
                encoded = (image + residual).clamp(0, 1)
                loss = F.binary_cross_entropy_with_logits(decoder(encoded), secret)
                if epoch >= round(self.secret_only_fraction * epochs):
                    loss = self.secret_weight * loss + self.l2_weight * residual.square().mean()
                    if perceptual is not None:
                        loss = loss + self.lpips_weight * kdbench.perceptual_distances(perceptual, image, encoded).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        trigger.secret.copy_(torch.bernoulli(torch.full((self.secret_size,), 0.5), generator=generator))
        return trigger.eval().requires_grad_(False)


@kdbench.hookimpl
def register_attacks(register):
    register(ISSBA)
