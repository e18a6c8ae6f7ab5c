"""A plugin whose distiller is kd until its loss turns NaN at a given step."""
import dataclasses

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


@kdbench.hookimpl
def register_distillers(register):
    register(KdNan)
