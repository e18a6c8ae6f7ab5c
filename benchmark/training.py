"""The one training loop every stage shares, and batched prediction.

Data stay on the device as uint8 (or, where they do not fit, in host memory, each batch
streamed to the device: ``kdbench.place``); each batch is converted, augmented once and, in
distillation, passed once through the teacher for every student of the group.  Models and
batches are channels_last on every device (oneDNN's CPU convolutions are faster so: MobileNetV2
trains on CIFAR-10 1.3 to 1.9 times faster, ``perf/throughput.py``); on CUDA the loop adds
bf16 autocast and the fused SGD.  With ``compiled`` (the budget's ``compile: true``) every
forward pass goes through ``torch.compile`` (Ansel et al., PyTorch 2, ASPLOS 2024).
"""
import contextlib
import dataclasses
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .data import augment, batch_count, batches, take, to_float
from .network import Network, Outputs


@dataclasses.dataclass
class Schedule:
    """Optimisation settings of one training run (SGD + Nesterov, warm-up then linear decay)."""

    epochs: int
    batch_size: int = 256
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup: float = 0.15  # fraction of the steps spent warming up


@dataclasses.dataclass
class Batch:
    """One training batch as a loss sees it: the augmented images, their labels, their
    indices into the training set (for memory banks) and how far training has got (0 → 1)."""

    images: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor
    progress: float


@dataclasses.dataclass
class Learner:
    """One model being trained: its loss over (its outputs, teacher outputs, batch), the
    parameters the optimiser moves (default: all of the model's) and a ``name`` that errors
    about it use (the stage and component)."""

    model: Network
    loss: Callable[[Outputs, Outputs | None, Batch], torch.Tensor]
    params: list | None = None
    needs: frozenset = frozenset({"logits"})
    name: str = "model"
    on_batch: Callable[[Outputs, Batch], None] | None = None  # sees each batch's outputs before the step


@dataclasses.dataclass
class Poison:
    """Poisoning applied per batch, after augmentation, on the device: the rows of a batch
    whose training-set index is marked in ``mask`` (bool over the training set) are replaced
    by ``apply(x, indices)`` of the augmented float batch ``x`` and its indices (the whole
    batch is passed, so that the loop never waits for the device; rows outside ``mask`` are
    discarded).  Their labels are the training labels, which the attack has already set."""

    mask: torch.Tensor
    apply: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

    def __call__(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        rows = self.mask[index].view(-1, *[1] * (x.dim() - 1))
        return torch.where(rows, self.apply(x, index).to(x.dtype), x)


class Diverged(RuntimeError):
    """A training loss became NaN or infinite."""


def cross_entropy(outputs: Outputs, teacher: Outputs | None, batch: Batch) -> torch.Tensor:
    return F.cross_entropy(outputs.logits, batch.labels)


def autocast(device: torch.device):
    """bf16 autocast on CUDA, nothing elsewhere."""
    if torch.device(device).type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def prepare(model: nn.Module, device) -> nn.Module:
    """The model on ``device`` in channels_last memory format (the loop's batches are too);
    ``train`` hands its models back in the default format."""
    return model.to(device, memory_format=torch.channels_last)


def scheduled_sgd(params, schedule: Schedule, device, steps: int):
    """The harness's optimiser for ``steps`` steps: SGD with Nesterov momentum, linear
    warm-up over ``schedule.warmup`` of the steps, then linear decay to zero; step the
    returned scheduler after every optimiser step."""
    fused = {"fused": True} if torch.device(device).type == "cuda" else {}
    optimizer = torch.optim.SGD(params, lr=schedule.lr, momentum=schedule.momentum, nesterov=True,
                                weight_decay=schedule.weight_decay, **fused)
    warm = max(1, int(schedule.warmup * steps))

    def factor(step):
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (steps - step) / max(1, steps - warm))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train(learners: list[Learner], images: torch.Tensor, labels: torch.Tensor, schedule: Schedule, *,
          hflip: bool, seed: int, crop: str = "pad", teacher: Network | None = None,
          on_epoch: Callable[[int, dict], None] | None = None, after_epoch: Callable[[int], None] | None = None,
          on_diverged: Callable[[int, str], None] | None = None, compiled: bool = False,
          poison: Poison | None = None) -> list[Network]:
    """Train every learner on (images, labels) in lock-step; returns their models.

    The learners train on the labels' device; the images may be there or in host memory
    (``kdbench.place``).  Each batch is augmented with ``kdbench.augment`` (``crop``,
    ``hflip``: the dataset's).  ``poison`` (an attack's) triggers its rows of every batch
    after augmentation.

    ``teacher`` (frozen, eval mode) is run once per batch and its outputs handed to every
    learner's loss; it computes the union of what the learners need.  ``on_epoch(epoch,
    metrics)`` receives each learner's mean loss and training accuracy (lists, one value per
    learner); ``after_epoch(epoch)`` runs before the next epoch starts (an attack's freezing
    of layers), and a learner's ``on_batch(outputs, batch)`` sees its outputs of every batch
    (``ForgettingEvents``).  Losses stay on the device and are checked once per epoch, so that the loop
    does not wait for the device at every step: a learner whose loss became NaN or infinite
    raises ``Diverged`` naming it, the epoch and the step, or, with ``on_diverged(index,
    message)``, is told so and leaves the group while the others go on.  ``compiled`` runs
    the forward passes (teacher and learners) through ``torch.compile``: the same computation,
    fused into fewer kernels, so only its rounding differs.
    """
    device = labels.device
    generator = torch.Generator().manual_seed(seed)
    per_epoch = batch_count(len(images), schedule.batch_size)
    steps = schedule.epochs * per_epoch
    optimizers, forwards = [], []
    for learner in learners:
        prepare(learner.model, device).train()
        params = learner.params if learner.params is not None else list(learner.model.parameters())
        optimizers.append(scheduled_sgd(params, schedule, device, steps))
        forwards.append(_forward(learner.model, compiled))
    if teacher is not None:
        prepare(teacher, device).eval()
        teacher_forward = _forward(teacher, compiled)
        teacher_needs = frozenset().union(*(learner.needs for learner in learners))
    active = list(range(len(learners)))
    for epoch in range(schedule.epochs):
        losses = torch.zeros(per_epoch, len(learners), device=device)
        correct = torch.zeros(len(learners), device=device)
        for step, rows in enumerate(batches(len(images), schedule.batch_size, True, generator, images.device)):
            index = rows.to(device, non_blocking=True)  # rows index the images where they are, index the rest
            x = to_float(augment(take(images, rows, device), hflip, generator, crop))  # crop and flip the uint8 pixels
            if poison is not None:
                x = poison(x, index)
            x = x.contiguous(memory_format=torch.channels_last)
            batch = Batch(x, labels[index], index, (epoch * per_epoch + step) / steps)
            with autocast(device):
                with torch.no_grad():
                    teacher_out = teacher_forward(x, teacher_needs) if teacher is not None else None
                for i in active:
                    learner, (optimizer, scheduler) = learners[i], optimizers[i]
                    outputs = forwards[i](x, learner.needs)
                    loss = learner.loss(outputs, teacher_out, batch)
                    if learner.on_batch is not None:
                        learner.on_batch(outputs, batch)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    scheduler.step()
                    losses[step, i] = loss.detach()
                    correct[i] += (outputs.logits.detach().argmax(1) == batch.labels).sum()
        for i in _diverged(losses, active):
            step = int((~torch.isfinite(losses[:, i])).nonzero()[0])
            message = (f"{learners[i].name}: the loss became {losses[step, i].item()} at epoch {epoch + 1}, "
                       f"step {step + 1} of {per_epoch}")
            if on_diverged is None:
                raise Diverged(message)
            on_diverged(i, message)
            active.remove(i)
        if on_epoch is not None:
            on_epoch(epoch, {"loss": losses.mean(0).tolist(), "train_accuracy": (correct / len(images)).tolist()})
        if after_epoch is not None:
            after_epoch(epoch)
        if not active:
            break
    for model in [learner.model for learner in learners] + ([teacher] if teacher is not None else []):
        model.eval().to(memory_format=torch.contiguous_format)  # as a model loaded from the store is
    return [learner.model for learner in learners]


def _forward(model: Network, compiled: bool) -> Callable[..., Outputs]:
    """``model.run``, or its ``torch.compile``d version."""
    return torch.compile(model.run) if compiled else model.run


def device_of(model: nn.Module, images: torch.Tensor) -> torch.device:
    """The device the model computes on (its parameters'), else the images'."""
    parameter = next(model.parameters(), None)
    return images.device if parameter is None else parameter.device


def _diverged(losses: torch.Tensor, active: list) -> list:
    """The active learners whose loss was not finite at some step (one device sync)."""
    finite = torch.isfinite(losses).all(0).tolist()
    return [i for i in active if not finite[i]]


CPU_INFERENCE_BATCH = 128


def inference_batch(device: torch.device, batch_size: int) -> int:
    """How many images one inference forward pass takes: ``batch_size`` on an accelerator;
    on the CPU at most 128, whose activations stay in the caches.  ``perf/inference.py`` on
    two cores, with the passes channels_last (``logits``): 2.0–3.0× the images per second of
    whole default-format batches of 1,024 or 4,096 for the small CNNs, 3.0× for MobileNetV2
    and 1.3–1.4× for ResNet-18 at 32 px."""
    return min(batch_size, CPU_INFERENCE_BATCH) if torch.device(device).type == "cpu" else batch_size


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 1024,
            transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Predicted labels for uint8 or float images, optionally transformed (triggered) first."""
    return logits(model, images, batch_size, transform).argmax(1)


@torch.no_grad()
def logits(model: nn.Module, images: torch.Tensor, batch_size: int = 1024,
           transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Float32 logits of the model on a whole image tensor (on the model's device or in host
    memory), batch by batch on the model's device."""
    model.eval()
    device = device_of(model, images)
    out = []
    with channels_last(model):
        for index in batches(len(images), inference_batch(device, batch_size), False, device=images.device):
            x = to_float(take(images, index, device))
            if transform is not None:
                x = transform(x)
            with autocast(device):
                out.append(model(x.contiguous(memory_format=torch.channels_last)).float())
    return torch.cat(out)


@contextlib.contextmanager
def channels_last(model: nn.Module):
    """The model in channels_last memory format for the duration, as the training loop runs it,
    and in the format it had after (the default one of a model loaded from the store, or the
    loop's own in the middle of training).  On two CPU cores, passes of 128 images run 1.2 to 3
    times as fast so as in the default format (``perf/inference.py``: ResNet-18 1.2×,
    MobileNetV2 2.1–2.4×, the small CNNs 1.3–3.1×); the logits differ in rounding only (1e-6
    of their size and below)."""
    was_channels_last = any(p.dim() == 4 and not p.is_contiguous() for p in model.parameters())
    model.to(memory_format=torch.channels_last)
    try:
        yield model
    finally:
        if not was_channels_last:
            model.to(memory_format=torch.contiguous_format)
