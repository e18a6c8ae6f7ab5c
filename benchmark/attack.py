"""Attacks: what the attacker releases (a backdoored teacher) and the trigger it answers to."""
import dataclasses
from typing import Callable, ClassVar

import torch
from torch import nn

from .component import Component, check_range
from .data import DatasetInfo, augment, batch_count, batches, put, quantize, take, to_float
from .network import Network
from .training import Poison, Schedule, scheduled_sgd


class Trigger(nn.Module):
    """A batched, on-device function from clean to triggered pixels in [0, 1].

    Everything a trigger learns lives in buffers or parameters, so the harness stores it
    with ``state_dict`` and rebuilds it with ``Attack.build_trigger`` plus ``load_state_dict``.
    Calling a trigger returns images on the 8-bit grid, as the attacker would submit them.
    """

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return quantize(self.apply(to_float(x)))


@dataclasses.dataclass
class Backdoor:
    """What an attack hands back: the released teacher and how to trigger it.

    ``poison_indices`` index the attacker half (empty for attacks that poison no data);
    ``poison_labels`` are the labels those samples carried in the teacher's training set.
    """

    teacher: Network
    trigger: Trigger
    target: int
    poison_indices: torch.Tensor
    poison_labels: torch.Tensor


@dataclasses.dataclass
class AttackContext:
    """What the attacker has: their half of the training set and the harness's tools.

    ``train(model, images, labels, epochs=None, lr_scale=1.0, params=None, poison=None,
    after_epoch=None)`` is the harness's training loop (augmentation, mixed precision,
    schedule; ``poison``, a ``kdbench.Poison``, triggers chosen rows of each batch after
    augmentation; ``after_epoch(epoch)`` runs between epochs);
    ``scheduled_sgd`` is its optimiser and schedule for an attack's own loop (``lr`` is the
    suite's) and ``steps`` the number of steps that loop takes.  ``new_model()`` builds a
    fresh teacher, ``new_model("small_cnn")`` any other architecture (a surrogate student,
    say); ``student`` names the suite's (first) student architecture, for
    ``new_model(ctx.student)``, given to attacks whose ``uses_suite_student`` is true;
    ``clean_teacher`` is a clean model trained on the attacker half, given to attacks that
    ask for one, with ``forgetting``, the forgetting events of each attacker-half sample
    while it trained (``kdbench.ForgettingEvents``; int32, on the CPU).
    """

    info: DatasetInfo
    images: torch.Tensor  # uint8, on the device or in host memory (``kdbench.place``): index with ``kdbench.take``
    labels: torch.Tensor
    new_model: Callable[..., Network]
    train: Callable[..., Network]
    epochs: int
    batch_size: int
    device: torch.device
    seed: int
    clean_teacher: Network | None = None
    forgetting: torch.Tensor | None = None
    lr: float = 0.1
    student: str | None = None

    def scheduled_sgd(self, params, epochs: int | None = None):
        """(optimiser, scheduler) of the harness for ``epochs`` (default: the teacher's)
        passes of ``batches``; step the scheduler after every optimiser step."""
        epochs = self.epochs if epochs is None else epochs
        return scheduled_sgd(params, Schedule(epochs, self.batch_size, self.lr), self.device, self.steps(epochs))

    def steps(self, epochs: int | None = None) -> int:
        """Optimiser steps of ``epochs`` (default: the teacher's) passes of ``batches``."""
        return (self.epochs if epochs is None else epochs) * batch_count(len(self.images), self.batch_size)

    def generator(self, offset: int = 0) -> torch.Generator:
        """A CPU generator seeded from the cell's seed, for reproducible choices."""
        return torch.Generator().manual_seed(self.seed * 7919 + offset)

    def batches(self, generator: torch.Generator, limit: int | None = None):
        """(indices, augmented float images, labels) for each batch of one shuffled pass over
        the attacker half (its first ``limit`` batches), for attacks with their own loops."""
        for rows in batches(len(self.images), self.batch_size, True, generator, self.images.device)[:limit]:
            index = rows.to(self.device, non_blocking=True)
            x = to_float(augment(take(self.images, rows, self.device), self.info.hflip, generator, self.info.crop))
            yield index, x, self.labels[index]


@dataclasses.dataclass
class Attack(Component):
    """An attack plugin.  ``run`` trains (or fine-tunes) the teacher and returns a ``Backdoor``."""

    kind: ClassVar[str] = "attack"
    needs_clean_teacher: ClassVar[bool] = False

    target: int = 0

    @property
    def uses_suite_student(self) -> bool:
        """Whether ``run`` builds the suite's student architecture (``ctx.student``); the
        teacher's cache key then includes it."""
        return False

    def check(self, info: DatasetInfo):
        """Raise ``ConfigError`` if the attack cannot work on this dataset."""
        check_range(self.name, "target", self.target, 0, info.num_classes - 1)

    def build_trigger(self, info: DatasetInfo) -> Trigger:
        """A trigger of the right shape (its learned state is loaded afterwards)."""
        raise NotImplementedError

    def run(self, ctx: AttackContext) -> Backdoor:
        raise NotImplementedError


@dataclasses.dataclass
class PoisoningAttack(Attack):
    """The shared base of data-poisoning attacks: a trigger, a poison rate, ordinary training.

    A ``poison_rate`` fraction of the attacker half is triggered and relabelled to the
    target (dirty label), or, for clean-label attacks, that fraction of the *target
    class's* samples is triggered and keeps its label.
    """

    clean_label: ClassVar[bool] = False

    poison_rate: float = 0.1

    def validate(self):
        check_range(self.name, "poison_rate", self.poison_rate, 0.0, 1.0)

    def make_trigger(self, ctx: AttackContext) -> Trigger:
        """The trigger to poison with; attacks that learn their trigger override this."""
        return self.build_trigger(ctx.info).to(ctx.device)

    def poison_candidates(self, ctx: AttackContext) -> tuple[torch.Tensor, int]:
        """The attacker-half indices that may be poisoned (the target class's for clean-label
        attacks, the other classes' otherwise) and how many of them to poison."""
        labels = ctx.labels.cpu()
        pool = (labels == self.target) if self.clean_label else (labels != self.target)
        pool = pool.nonzero().flatten()
        count = int(round(self.poison_rate * (len(pool) if self.clean_label else len(labels))))
        return pool, min(count, len(pool))

    def choose_poison(self, ctx: AttackContext) -> torch.Tensor:
        """A seeded random draw of the candidates, sorted."""
        pool, count = self.poison_candidates(ctx)
        return pool[torch.randperm(len(pool), generator=ctx.generator(1))[:count]].sort().values

    def relabel(self, ctx: AttackContext, indices: torch.Tensor) -> torch.Tensor:
        """The training labels: the target at ``indices`` unless clean-label."""
        labels = ctx.labels.clone()
        if len(indices) and not self.clean_label:
            labels[indices.to(ctx.device)] = self.target
        return labels

    def poison(self, ctx: AttackContext, trigger: Trigger, indices: torch.Tensor):
        """The teacher's training set: triggered images at ``indices``, relabelled unless clean-label."""
        images = ctx.images.clone()
        if len(indices):
            with torch.no_grad():
                put(images, indices, trigger(take(images, indices, ctx.device)))
        return images, self.relabel(ctx, indices)

    def poison_batches(self, ctx: AttackContext, trigger: Trigger, indices: torch.Tensor) -> Poison | None:
        """Poisoning of each augmented batch (for attacks whose official code triggers after
        augmentation; their ``poison`` then leaves the images clean), or None."""
        return None

    def run(self, ctx: AttackContext) -> Backdoor:
        trigger = self.make_trigger(ctx)
        indices = self.choose_poison(ctx)
        images, labels = self.poison(ctx, trigger, indices)
        teacher = ctx.train(ctx.new_model(), images, labels, poison=self.poison_batches(ctx, trigger, indices))
        return Backdoor(teacher, trigger, self.target, indices, labels[indices.to(ctx.device)].cpu())
