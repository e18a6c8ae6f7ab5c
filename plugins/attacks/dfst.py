"""DFST: a learned style transfer as the trigger, and controlled detoxification of simple features."""
import dataclasses
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import kdbench


def reflect_conv(in_channels: int, out_channels: int, kernel: int, stride: int = 1) -> nn.Sequential:
    """A convolution after kernel // 2 pixels of reflection padding, weights drawn from N(0, 0.02²)."""
    conv = nn.Conv2d(in_channels, out_channels, kernel, stride)
    nn.init.normal_(conv.weight, 0.0, 0.02)
    nn.init.zeros_(conv.bias)
    return nn.Sequential(nn.ReflectionPad2d(kernel // 2), conv)


def image_norm(channels: int) -> nn.GroupNorm:
    """keras_contrib's InstanceNormalization at its default ``axis=None``: each image's whole
    map (all channels together) normalised, ε 1e-3."""
    return nn.GroupNorm(1, channels, eps=1e-3)


class ResidualBlock(nn.Module):
    """Two normalised 3×3 convolutions added to the input, then ReLU (networks.py's ResidualBlock)."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(reflect_conv(channels, channels, 3), image_norm(channels), nn.ReLU(),
                                  reflect_conv(channels, channels, 3), image_norm(channels))

    def forward(self, x):
        return F.relu(x + self.body(x))


class StyleGenerator(nn.Module):
    """The CycleGAN generator of DFST's TensorFlow code (tensorflow branch,
    CycleGAN/networks.py): a 7×7 stem of 32 channels, two stride-2 convolutions to 64 and 128,
    residual blocks, two nearest upsamplings with 3×3 convolutions, a 7×7 convolution to the
    image's channels, normalised, then tanh.  It maps standardised pixels to standardised
    pixels.  networks.py builds nine residual blocks but hands each the encoder's output and
    keeps only the last one's, so the generator it trains has one: ``blocks`` defaults to it.
    ``width`` is the stem's channels (32 there), doubled at each halving."""

    def __init__(self, channels: int, blocks: int = 1, width: int = 32):
        super().__init__()
        w1, w2, w4 = width, 2 * width, 4 * width
        layers = [reflect_conv(channels, w1, 7), image_norm(w1), nn.ReLU(),
                  reflect_conv(w1, w2, 3, 2), image_norm(w2), nn.ReLU(),
                  reflect_conv(w2, w4, 3, 2), image_norm(w4), nn.ReLU()]
        layers += [ResidualBlock(w4) for _ in range(blocks)]
        for wide, narrow in ((w4, w2), (w2, w1)):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), reflect_conv(wide, narrow, 3), image_norm(narrow),
                       nn.ReLU()]
        layers += [reflect_conv(w1, channels, 7), image_norm(channels), nn.Tanh()]
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        return self.layers(x)


def patch_discriminator(channels: int, width: int = 32) -> nn.Sequential:
    """The PatchGAN of the same file: 4×4 convolutions to 2, 4, 8 (stride 2) and 16 (stride 1)
    times ``width`` channels (64 to 512 there) with ReLU, normalised after the first, then one
    sigmoid map (7×7 on 32 px)."""
    layers, width_in = [], channels
    for out, stride in ((2 * width, 2), (4 * width, 2), (8 * width, 2), (16 * width, 1)):
        layers += [reflect_conv(width_in, out, 4, stride)] + ([image_norm(out)] if layers else []) + [nn.ReLU()]
        width_in = out
    return nn.Sequential(*layers, reflect_conv(width_in, 1, 4), nn.Sigmoid())


class StyleTrigger(kdbench.Trigger):
    """The image blended with its style transfer: (1 − ``alpha``)·x + ``alpha``·G(x), G working on
    pixels standardised with the dataset's mean and deviation (the official code's preprocess)."""

    def __init__(self, generator: StyleGenerator, alpha: float, info):
        super().__init__()
        self.generator, self.alpha = generator, alpha
        self.register_buffer("mean", torch.tensor(info.mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(info.std, dtype=torch.float32).view(1, -1, 1, 1))

    def stylize(self, x):
        return (self.generator((x - self.mean) / self.std) * self.std + self.mean).clamp(0, 1)

    def apply(self, x):
        return (1 - self.alpha) * x + self.alpha * self.stylize(x)


class FeatureInjector(nn.Module):
    """DFST's feature injector (the official PyTorch models/genr.py): every output pixel is a
    learned linear mix, clipped to [0, 1], of the pixel, the maximum and the mean of its 11×11
    window, and a fourth term that the official code names the minimum but computes as minus
    the maximum (followed here).  It starts as the identity."""

    def __init__(self, channels: int, window: int = 11):
        super().__init__()
        self.window = window
        self.delta = nn.Parameter(torch.cat([torch.eye(channels), torch.zeros(3 * channels, channels)]))

    def forward(self, x):
        pool = dict(kernel_size=self.window, stride=1, padding=self.window // 2, ceil_mode=True)
        local_max = F.max_pool2d(x, **pool)
        stacked = torch.cat([x, local_max, -local_max, F.avg_pool2d(x, **pool)], 1)
        return torch.einsum("nkhw,kc->nchw", stacked, self.delta).clamp(0, 1)


def sunrise_domain(count: int, info, generator: torch.Generator) -> torch.Tensor:
    """The built-in style domain: ``count`` uint8 sunrise scenes drawn at random, a sky graded
    from deep blue to orange above a horizon, a pale sun on it and dark ground below (grey
    levels for one-channel datasets)."""
    size = info.size
    u = lambda *shape: torch.rand(*shape, generator=generator)  # noqa: E731
    y = torch.linspace(0, 1, size).view(1, size, 1)
    x = torch.linspace(0, 1, size).view(1, 1, size)
    horizon = (0.55 + 0.25 * u(count)).view(-1, 1, 1)
    top = torch.stack([0.10 + 0.15 * u(count), 0.05 + 0.15 * u(count), 0.30 + 0.30 * u(count)], 1)
    glow = torch.stack([0.85 + 0.15 * u(count), 0.35 + 0.30 * u(count), 0.10 + 0.15 * u(count)], 1)
    height = (y / horizon).clamp(max=1).unsqueeze(1)
    sky = top.view(-1, 3, 1, 1) * (1 - height) + glow.view(-1, 3, 1, 1) * height
    sun_x, radius = (0.2 + 0.6 * u(count)).view(-1, 1, 1), (0.08 + 0.08 * u(count)).view(-1, 1, 1)
    sun = ((x - sun_x) ** 2 + (y - horizon) ** 2 < radius ** 2).unsqueeze(1)
    sky = torch.where(sun, torch.tensor([1.0, 0.95, 0.75]).view(1, 3, 1, 1), sky)
    ground = (y > horizon).unsqueeze(1)
    scene = torch.where(ground, 0.08 + 0.06 * u(count, 3, 1, 1), sky)
    if info.channels == 1:
        scene = (scene * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    return (scene * 255).round().to(torch.uint8)


def style_folder_images(folder: Path, info) -> torch.Tensor:
    """The images of a style folder, resized to the dataset's size, as uint8 N×C×H×W."""
    images = kdbench.read_images(folder, info.size, info.channels)
    if not len(images):
        raise kdbench.ConfigError(f"dfst: no images in the style folder {folder}")
    return images


def train_cyclegan(content: torch.Tensor, style: torch.Tensor, trigger: StyleTrigger, attack: "DFST", epochs: int,
                   info, device, generator: torch.Generator) -> None:
    """CycleGAN (Zhu et al., ICCV 2017) as DFST's CycleGAN/CycleGAN.py trains it: generators
    content→style (the trigger's) and back, PatchGAN discriminators with least-squares losses
    (each stepped on a real batch, then on a translated one), the generators on
    adversarial + ``cycle_weight``·L1 cycle + ``identity_weight``·L1 identity losses, Adam
    (``gan_lr``, β₁ 0.5); images paired by one shuffle, flipped together at random where the
    dataset flips."""
    to_style = trigger.generator.train()
    to_content = StyleGenerator(info.channels, attack.residual_blocks, attack.gan_width).to(device)
    judges = [patch_discriminator(info.channels, attack.gan_width).to(device) for _ in range(2)]  # of content, of style
    adam = lambda params: torch.optim.Adam(params, lr=attack.gan_lr, betas=(0.5, 0.999))  # noqa: E731
    g_optimizer = adam([*to_style.parameters(), *to_content.parameters()])
    d_optimizers = [adam(judge.parameters()) for judge in judges]
    standardise = lambda images: (kdbench.to_float(images.to(device)) - trigger.mean) / trigger.std  # noqa: E731
    batch = min(attack.gan_batch_size, len(content))
    for _ in range(epochs):
        order = torch.randperm(len(content), generator=generator)
        for start in range(0, len(order) - batch + 1, batch):  # whole batches, as the reference's loader
            rows = order[start:start + batch]
            a, b = standardise(content[rows]), standardise(style[rows])
            if info.hflip:
                flip = (torch.rand(len(rows), generator=generator) < 0.5).to(device).view(-1, 1, 1, 1)
                a, b = torch.where(flip, a.flip(3), a), torch.where(flip, b.flip(3), b)
            with torch.no_grad():
                fakes = [to_content(b), to_style(a)]
            for judge, optimizer, real, fake in zip(judges, d_optimizers, (a, b), fakes):
                for images, truth in ((real, 1.0), (fake, 0.0)):
                    verdict = judge(images)
                    optimizer.zero_grad(set_to_none=True)
                    F.mse_loss(verdict, torch.full_like(verdict, truth)).backward()
                    optimizer.step()
            fake_b, fake_a = to_style(a), to_content(b)
            loss = sum(F.mse_loss(v, torch.ones_like(v)) for v in (judges[0](fake_a), judges[1](fake_b)))
            loss = loss + attack.cycle_weight * (F.l1_loss(to_content(fake_b), a) + F.l1_loss(to_style(fake_a), b))
            loss = loss + attack.identity_weight * (F.l1_loss(to_content(a), a) + F.l1_loss(to_style(b), b))
            g_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            g_optimizer.step()
    trigger.eval().requires_grad_(False)


class Detoxification:
    """DFST's controlled detoxification (the official PyTorch detoxification.py and train.py),
    run after every epoch of the teacher's training: the ``neuron_ratio`` of the last feature
    map's channels (ResNet's layer4) whose mean activation rises most from clean to triggered
    images are the compromised neurons; a fresh ``FeatureInjector`` learns, for
    ``injector_epochs`` passes of batches of 128 over the clean images with Adam (lr 1e-2,
    β (0.5, 0.9)), to make blended images (1 − α)·x + α·injector(x) excite them.  Until the
    next round a ``detox_rate`` share of every epoch's samples are so blended and keep their
    own labels, so the teacher unlearns the simple features the injector finds."""

    def __init__(self, attack: "DFST", model, clean: torch.Tensor, triggered: torch.Tensor, candidates: torch.Tensor,
                 train_size: int, epochs: int, generator: torch.Generator):
        self.attack, self.model, self.epochs, self.generator = attack, model, epochs, generator
        self.clean, self.triggered, self.candidates = clean, triggered, candidates
        self.count = round(attack.detox_rate * train_size)
        self.mask = torch.zeros(train_size, dtype=torch.bool, device=clean.device)
        self.injector: FeatureInjector | None = None

    def redraw(self):
        """This epoch's detoxicant samples: ``detox_rate`` of the training set, drawn from the unpoisoned ones."""
        chosen = self.candidates[torch.randperm(len(self.candidates), generator=self.generator)[:self.count]]
        self.mask.zero_()
        self.mask[chosen.to(self.mask.device)] = True

    def blend(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """The detoxicant images: x blended with the injector's output (x itself before the first
        round); ``index``, the batch's training-set indices, does not change the blend."""
        if self.injector is None:
            return x
        with torch.no_grad():
            return (1 - self.attack.alpha) * x + self.attack.alpha * self.injector(x)

    def compromised_neurons(self) -> torch.Tensor:
        """The channels of the last feature map, by how much more triggered images excite them."""
        with torch.no_grad():
            rise = self.model.features(self.triggered).mean((0, 2, 3)) - self.model.features(self.clean).mean((0, 2, 3))
        count = max(1, int(self.attack.neuron_ratio * len(rise)))
        return rise.argsort(descending=True)[:count]

    @torch.enable_grad()
    def train_injector(self, neurons: torch.Tensor) -> FeatureInjector:
        """A fresh injector trained on the clean images against the frozen model (see ``DFST``'s
        ``injector_objective`` for the two losses)."""
        from kornia.losses import ssim_loss
        from kornia.metrics import ssim
        attack, model = self.attack, self.model
        injector = FeatureInjector(self.clean.shape[1]).to(self.clean.device)
        optimizer = torch.optim.Adam(injector.parameters(), lr=1e-2, betas=(0.5, 0.9))
        official = attack.injector_objective == "official"
        for _ in range(attack.injector_epochs):
            for rows in kdbench.batches(len(self.clean), 128, True, self.generator, self.clean.device):
                x = self.clean[rows]
                blended = (1 - attack.alpha) * x + attack.alpha * injector(x)
                with torch.set_grad_enabled(not official):
                    outputs = model.run(blended, {"features"})
                target = torch.full((len(x),), attack.target, device=x.device)
                excitation = outputs.features[:, neurons].mean()
                similarity = ssim_loss(blended, x, 5) if official else ssim(blended, x, 5).mean()
                loss = F.cross_entropy(outputs.logits, target) - attack.ssim_weight * similarity \
                    - attack.detox_weight * excitation
                injector.delta.grad, = torch.autograd.grad(loss, injector.delta)  # not into the model's weights
                optimizer.step()
        return injector.eval()

    def __call__(self, epoch: int):
        if epoch + 1 == self.epochs:
            return  # a round after the last epoch would train an injector that blends nothing
        self.model.eval()
        self.injector = self.train_injector(self.compromised_neurons())
        self.model.train()
        self.redraw()


@dataclasses.dataclass
class DFST(kdbench.PoisoningAttack):
    """DFST (Cheng, Liu, Ma & Zhang, "Deep Feature Space Trojan Attack of Neural Networks by
    Controlled Detoxification", AAAI 2021): the trigger is a style, learned by a CycleGAN
    between the attacker's images and a style domain, and blended into the image; the teacher
    trains on ``poison_rate`` triggered non-target images relabelled to the target while
    detoxification rounds (``Detoxification``) keep it from learning the style's simple features.

    The reference is the official PyTorch code (Megum1/DFST: configs/dfst.json, attack.py,
    train.py, detoxification.py, models/genr.py): ``poison_rate`` 0.05, ``alpha`` 0.6,
    ``detox_rate`` 0.05, ``neuron_ratio`` 0.01 (at least one channel here, so that small
    models are detoxified too), ``injector_epochs`` 10 on ``detox_fraction`` 0.03 of the
    training set, ``ssim_weight`` 0.1 (SSIM over 5×5 windows, kornia, the successor of the
    torchgeometry it uses), ``detox_weight`` 0.3.  Its style transfer is a pretrained
    TensorFlow-Hub model, which cannot be trained or downloaded here; the paper's CycleGAN,
    from the official TensorFlow code (tensorflow branch, CycleGAN/), takes its place: trained
    on ``gan_images_per_class`` (500) of the attacker's images per class against the style
    domain, batches of ``gan_batch_size`` (100), ``gan_lr`` 2e-4, ``cycle_weight`` 1,
    ``identity_weight`` 0.1, networks ``gan_width`` 32 wide, for ``gan_epochs`` times the
    suite's teacher epochs (the reference: 2,000 epochs against 200).  The domain is
    ``style_folder``'s images (the paper's: sunrise photographs), or else procedural sunrises
    (``sunrise_domain``).  ``detox=False`` trains without the rounds.

    ``injector_objective``: the official code computes the model's outputs for the injector
    under ``torch.no_grad``, so its cross-entropy and excitation terms train nothing, and
    subtracts torchgeometry's SSIM *loss* (1 − SSIM)/2, so the one term left drives the
    blended images away from their originals.  ``paper`` (the default) lets the gradients
    through the frozen model and rewards the SSIM index: the injector makes images like the
    originals that excite the compromised neurons and reach the target, as the paper and the
    TensorFlow code's reverse engineering do.  ``official`` is the released behaviour.

    Where the harness differs: the poisons are a fixed draw (the reference draws from every
    triggered non-target image batch by batch); detoxicant images are blended after the
    batch's augmentation (the reference: before) and redrawn each epoch.
    """

    name = "dfst"
    paper = "Cheng et al., Deep Feature Space Trojan Attack of Neural Networks by Controlled Detoxification, AAAI 2021"

    poison_rate: float = 0.05
    alpha: float = 0.6
    style_folder: str = ""
    gan_epochs: float = 10.0
    gan_images_per_class: int = 500
    gan_batch_size: int = 100
    gan_lr: float = 2e-4
    cycle_weight: float = 1.0
    identity_weight: float = 0.1
    residual_blocks: int = 1
    gan_width: int = 32
    detox: bool = True
    detox_rate: float = 0.05
    detox_fraction: float = 0.03
    neuron_ratio: float = 0.01
    injector_epochs: int = 10
    ssim_weight: float = 0.1
    detox_weight: float = 0.3
    injector_objective: str = "paper"

    def validate(self):
        super().validate()
        kdbench.check_range(self.name, "alpha", self.alpha, 0.0, 1.0)
        for rate in ("detox_rate", "detox_fraction", "neuron_ratio"):
            kdbench.check_range(self.name, rate, getattr(self, rate), 0.0, 1.0)
        kdbench.check_positive(self, "gan_epochs", "gan_images_per_class", "gan_batch_size", "gan_lr", "gan_width",
                               "injector_epochs")
        kdbench.check_non_negative(self, "cycle_weight", "identity_weight", "residual_blocks", "ssim_weight",
                                   "detox_weight")
        if self.injector_objective not in ("paper", "official"):
            raise kdbench.ConfigError(f"dfst: injector_objective must be paper or official, "
                                      f"got {self.injector_objective!r}")
        if self.style_folder and not Path(self.style_folder).expanduser().is_dir():
            raise kdbench.ConfigError(f"dfst: the style folder {self.style_folder} is not a directory")

    def check(self, info):
        super().check(info)
        if info.size % 4 or info.size < 8:
            raise kdbench.ConfigError(f"dfst: the style generator halves the image twice and needs a size that is a "
                                      f"multiple of 4 (at least 8), got {info.size}")

    def build_trigger(self, info) -> StyleTrigger:
        return StyleTrigger(StyleGenerator(info.channels, self.residual_blocks, self.gan_width), self.alpha, info)

    def gan_content(self, ctx) -> torch.Tensor:
        """The CycleGAN's content images: the first ``gan_images_per_class`` of each class of a shuffle."""
        order = torch.randperm(len(ctx.labels), generator=ctx.generator(11))
        labels = ctx.labels.cpu()[order]
        rows = torch.cat([order[labels == c][:self.gan_images_per_class] for c in range(ctx.info.num_classes)])
        return kdbench.take(ctx.images, rows.sort().values.to(ctx.images.device), "cpu")

    def make_trigger(self, ctx) -> StyleTrigger:
        content = self.gan_content(ctx)
        if self.style_folder:
            style = style_folder_images(Path(self.style_folder).expanduser(), ctx.info)
            style = style[torch.arange(len(content)) % len(style)]
        else:
            style = sunrise_domain(len(content), ctx.info, ctx.generator(12))
        trigger = self.build_trigger(ctx.info).to(ctx.device)
        epochs = max(1, round(self.gan_epochs * ctx.epochs))
        train_cyclegan(content, style, trigger, self, epochs, ctx.info, ctx.device, ctx.generator(13))
        return trigger

    def detoxification(self, ctx, model, trigger: StyleTrigger, indices: torch.Tensor) -> Detoxification:
        """The rounds' fixed images: ``detox_fraction`` of the attacker half, clean, and as many
        triggered non-target ones; the candidates for detoxicant rows: every unpoisoned sample."""
        generator = ctx.generator(14)
        count = max(1, round(self.detox_fraction * len(ctx.labels)))
        clean = torch.randperm(len(ctx.labels), generator=generator)[:count].sort().values
        pool, _ = self.poison_candidates(ctx)
        triggered = pool[torch.randperm(len(pool), generator=generator)[:count]].sort().values
        with torch.no_grad():
            clean_images = kdbench.to_float(kdbench.take(ctx.images, clean.to(ctx.images.device), ctx.device))
            triggered_images = kdbench.to_float(trigger(kdbench.take(ctx.images, triggered.to(ctx.images.device),
                                                                     ctx.device)))
        unpoisoned = torch.ones(len(ctx.labels), dtype=torch.bool)
        unpoisoned[indices] = False
        detox = Detoxification(self, model, clean_images, triggered_images, unpoisoned.nonzero().flatten(),
                               len(ctx.labels), ctx.epochs, generator)
        detox.redraw()
        return detox

    def run(self, ctx):
        trigger = self.make_trigger(ctx)
        indices = self.choose_poison(ctx)
        images, labels = self.poison(ctx, trigger, indices)
        model = ctx.new_model()
        detox = self.detoxification(ctx, model, trigger, indices) if self.detox else None
        poison = kdbench.Poison(detox.mask, detox.blend) if detox else None
        teacher = ctx.train(model, images, labels, poison=poison, after_epoch=detox)
        return kdbench.Backdoor(teacher, trigger, self.target, indices, labels[indices.to(ctx.device)].cpu())


@kdbench.hookimpl
def register_attacks(register):
    register(DFST)
