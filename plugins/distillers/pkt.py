"""Probabilistic knowledge transfer: the student matches the teacher's cosine-kernel neighbourhoods."""
import dataclasses

import torch
import torch.nn.functional as F

import kdbench
from kdbench.features import embedding

EPS = 1e-7


def conditional_probabilities(x: torch.Tensor) -> torch.Tensor:
    """Row i: the probability of each sample of the batch as x_i's neighbour under the cosine
    kernel K(a, b) = (cos(a, b) + 1) / 2, normalised over the row."""
    unit = F.normalize(x, dim=1)
    kernel = (unit @ unit.T + 1) / 2
    return kernel / kernel.sum(1, keepdim=True)


@dataclasses.dataclass
class PKT(kdbench.Distiller):
    """Probabilistic Knowledge Transfer (Passalis & Tefas, "Learning Deep Representations with
    Probabilistic Knowledge Transfer", ECCV 2018).

    On the penultimate embeddings of a batch (any widths: the kernel needs no projector),
    the KL divergence of the teacher's conditional neighbour probabilities from the
    student's: L = CE(z_s, y) + β·mean_ij p_ij·log(p_ij / q_ij).
    As in the authors' released code the diagonal stays in the rows and the divergence is
    averaged over all B² pairs; β = 3·10⁴ and the cross-entropy term are the settings of
    Tian et al.'s benchmark (ICLR 2020), the paper training on the transfer loss alone.
    """

    name = "pkt"
    paper = "Passalis & Tefas, Learning Deep Representations with Probabilistic Knowledge Transfer, ECCV 2018"
    needs = frozenset({"features"})

    beta: float = 30000.0

    def validate(self):
        kdbench.check_non_negative(self, "beta")

    def setup(self, teacher, student, teacher_probe, student_probe):
        self.teacher_network, self.student_network = teacher, student

    def loss(self, student, teacher, batch):
        q = conditional_probabilities(embedding(self.student_network, student.features).float())
        with torch.no_grad():
            p = conditional_probabilities(embedding(self.teacher_network, teacher.features).float())
        transfer = (p * torch.log((p + EPS) / (q + EPS))).mean()
        return F.cross_entropy(student.logits.float(), batch.labels) + self.beta * transfer


@kdbench.hookimpl
def register_distillers(register):
    register(PKT)
