"""Defenses, in the families of DESIGN.md.  Each returns scores (higher = more suspicious);
the harness alone knows which inputs, samples or models are positives."""
import dataclasses
from typing import ClassVar

import torch
from torch import nn

from .component import Component


@dataclasses.dataclass
class DefenderData:
    """The defender's clean calibration subset of the victim half (never the test set)."""

    images: torch.Tensor  # uint8, on the device
    labels: torch.Tensor
    num_classes: int


@dataclasses.dataclass
class Defense(Component):
    kind: ClassVar[str] = "defense"
    family: ClassVar[str] = ""


@dataclasses.dataclass
class InputDetector(Defense):
    """Test-time detection: one score per input image."""

    family: ClassVar[str] = "input"

    def score(self, model: nn.Module, images: torch.Tensor, calibration: DefenderData) -> torch.Tensor:
        raise NotImplementedError


@dataclasses.dataclass
class TrainingDataDetector(Defense):
    """Training-set inspection: one score per sample of the teacher's training set."""

    family: ClassVar[str] = "training-data"

    def score(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
              calibration: DefenderData) -> torch.Tensor:
        raise NotImplementedError


@dataclasses.dataclass
class ModelDetector(Defense):
    """Model inspection: one score per model."""

    family: ClassVar[str] = "model"

    def score(self, model: nn.Module, calibration: DefenderData) -> float:
        raise NotImplementedError


@dataclasses.dataclass
class Mitigation(Defense):
    """Repair: returns a model the harness re-measures (CA, ASR, DER)."""

    family: ClassVar[str] = "mitigation"

    def repair(self, model: nn.Module, calibration: DefenderData) -> nn.Module:
        raise NotImplementedError
