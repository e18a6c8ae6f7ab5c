"""Distillers: a loss over student and teacher outputs, with trainable parts of their own."""
import dataclasses
from typing import ClassVar

import torch
from torch import nn

from .component import Component
from .network import Network, Outputs
from .training import Batch


@dataclasses.dataclass
class Distiller(Component):
    """A distillation method.

    The harness makes one instance per student, calls ``setup`` once with the teacher,
    the student and one probe batch of both models' outputs, then trains the student's
    parameters together with ``self.parts`` (projectors, bottlenecks…) on ``loss``.
    ``needs`` says which outputs the loss reads: ``logits``, ``features`` (the last
    feature map) or ``intermediates`` (every stage's map); the teacher's are computed
    once per batch for all the students of a lock-step group.
    """

    kind: ClassVar[str] = "distiller"
    needs: ClassVar[frozenset] = frozenset({"logits"})
    uses_teacher: ClassVar[bool] = True

    def __post_init__(self):
        super().__post_init__()
        self.parts = nn.ModuleDict()

    def setup(self, teacher: Network, student: Network, teacher_probe: Outputs, student_probe: Outputs):
        """Build trainable parts sized from the probe outputs (default: none)."""

    def loss(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> torch.Tensor:
        """The training loss of one batch (``batch.labels``, ``batch.indices``, ``batch.progress``)."""
        raise NotImplementedError

    def deploy(self, student: Network, teacher: Network) -> Network:
        """The model the victim deploys after distillation (default: the student itself);
        a ``Network``, so that defenses can read its features too."""
        return student
