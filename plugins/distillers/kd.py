"""Vanilla knowledge distillation on softened logits."""
import dataclasses

import torch.nn.functional as F

import kdbench


@dataclasses.dataclass
class KD(kdbench.Distiller):
    """Knowledge distillation (Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural
    Network", 2015): α·T²·KL(softmax(t/T) ‖ softmax(s/T)) + (1−α)·CE(s, y).  The T² factor
    keeps the soft term's gradients on the scale of the hard term's (paper, §2)."""

    name = "kd"
    paper = "Hinton, Vinyals & Dean, Distilling the Knowledge in a Neural Network, 2015"

    temperature: float = 4.0
    alpha: float = 0.9

    def validate(self):
        kdbench.check_range(self.name, "alpha", self.alpha, 0.0, 1.0)
        kdbench.check_positive(self, "temperature")

    def loss(self, student, teacher, batch):
        t = self.temperature
        soft = F.kl_div(F.log_softmax(student.logits.float() / t, 1), F.log_softmax(teacher.logits.float() / t, 1),
                        reduction="batchmean", log_target=True)
        return self.alpha * t * t * soft + (1 - self.alpha) * F.cross_entropy(student.logits.float(), batch.labels)


@kdbench.hookimpl
def register_distillers(register):
    register(KD)
