"""Relational knowledge distillation: distances and angles between the samples' embeddings."""
import dataclasses

import torch
import torch.nn.functional as F

import kdbench
from kdbench.features import embedding


def distances(x: torch.Tensor) -> torch.Tensor:
    """Pairwise Euclidean distances (B×B), divided by their mean over distinct pairs."""
    squared = (x.unsqueeze(0) - x.unsqueeze(1)).pow(2).sum(-1)
    off_diagonal = ~torch.eye(len(x), dtype=torch.bool, device=x.device)
    d = squared.clamp_min(1e-12).sqrt() * off_diagonal
    return d / d[off_diagonal].mean()


def angles(x: torch.Tensor) -> torch.Tensor:
    """cos ∠(x_i, x_j, x_k) for every triplet (B×B×B): the cosine at vertex x_j
    between the unit vectors towards x_i and towards x_k (0 where two points coincide)."""
    towards = F.normalize(x.unsqueeze(0) - x.unsqueeze(1), dim=2)  # towards[j, i] = unit(x_i − x_j)
    return towards @ towards.transpose(1, 2)


@dataclasses.dataclass
class RKD(kdbench.Distiller):
    """Relational Knowledge Distillation (Park, Kim, Lu & Cho, CVPR 2019), distance and angle.

    On the penultimate embeddings of a batch (the vectors the two classifiers read, of any
    widths: relations do not need a projector), the student matches the teacher's
    normalised pairwise distances and triplet angles under the Huber loss (δ = 1):
    L = CE(z_s, y) + λ_D·Huber(ψ_D(s), ψ_D(t)) + λ_A·Huber(ψ_A(s), ψ_A(t)),
    each Huber term averaged over its pairs or triplets, with the paper's λ_D = 25, λ_A = 50
    for classification.
    """

    name = "rkd"
    paper = "Park, Kim, Lu & Cho, Relational Knowledge Distillation, CVPR 2019"
    needs = frozenset({"features"})

    distance_weight: float = 25.0
    angle_weight: float = 50.0

    def validate(self):
        kdbench.check_non_negative(self, "distance_weight", "angle_weight")

    def setup(self, teacher, student, teacher_probe, student_probe):
        self.teacher_network, self.student_network = teacher, student

    def loss(self, student, teacher, batch):
        s = embedding(self.student_network, student.features).float()
        with torch.no_grad():
            t = embedding(self.teacher_network, teacher.features).float()
        relations = (self.distance_weight * F.smooth_l1_loss(distances(s), distances(t))
                     + self.angle_weight * F.smooth_l1_loss(angles(s), angles(t)))
        return F.cross_entropy(student.logits.float(), batch.labels) + relations


@kdbench.hookimpl
def register_distillers(register):
    register(RKD)
