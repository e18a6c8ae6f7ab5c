"""Plugins that go wrong numerically: a distiller that is kd until its loss turns NaN at a given
step, and an input detector whose scores are NaN."""
import dataclasses

import torch

import kdbench
from kdbench_plugins.distillers.kd import KD


@dataclasses.dataclass
class KdNan(KD):
    name = "kd_nan"
    paper = "none: a test fixture"

    at_step: int = 5

    def __post_init__(self):
        super().__post_init__()
        self.steps = 0

    def loss(self, student, teacher, batch):
        self.steps += 1
        loss = super().loss(student, teacher, batch)
        return loss * float("nan") if self.steps >= self.at_step else loss


@dataclasses.dataclass
class NanScores(kdbench.InputDetector):
    name = "nan_scores"
    paper = "none: a test fixture"

    def score(self, model, images, calibration):
        scores = torch.zeros(len(images))
        scores[::3] = float("nan")
        return scores


@kdbench.hookimpl
def register_distillers(register):
    register(KdNan)


@kdbench.hookimpl
def register_defenses(register):
    register(NanScores)
