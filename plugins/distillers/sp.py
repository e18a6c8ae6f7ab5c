"""Similarity-preserving distillation: the student matches the teacher's batch similarity matrix."""
import dataclasses

import torch
import torch.nn.functional as F

import kdbench


def similarity(features: torch.Tensor) -> torch.Tensor:
    """The row-normalised Gram matrix (B×B) of the batch's flattened activations."""
    flat = features.flatten(1).float()
    return F.normalize(flat @ flat.T, dim=1)


@dataclasses.dataclass
class SP(kdbench.Distiller):
    """Similarity-Preserving Knowledge Distillation (Tung & Mori, ICCV 2019).

    Inputs that activate the teacher alike should activate the student alike: on the last
    feature maps of the batch (any shapes: the B×B matrices need no projector),
    L = CE(z_s, y) + γ/B²·‖G_s − G_t‖_F², with γ = 3000, the paper's
    value for CIFAR-10, applied at the end of the last stage as in the paper's experiments.
    """

    name = "sp"
    paper = "Tung & Mori, Similarity-Preserving Knowledge Distillation, ICCV 2019"
    needs = frozenset({"features"})

    gamma: float = 3000.0

    def validate(self):
        kdbench.check_non_negative(self, "gamma")

    def loss(self, student, teacher, batch):
        b = len(batch.labels)
        transfer = (similarity(student.features) - similarity(teacher.features)).pow(2).sum() / (b * b)
        return F.cross_entropy(student.logits.float(), batch.labels) + self.gamma * transfer


@kdbench.hookimpl
def register_distillers(register):
    register(SP)
