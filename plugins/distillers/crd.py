"""Contrastive representation distillation, with memory banks of negatives."""
import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

import kdbench
from kdbench.features import embedding


class MemoryBank(nn.Module):
    """One unit vector per training sample for each of the student and the teacher, indexed
    by ``batch.indices``.

    The banks grow as larger indices arrive (new rows are random unit vectors, as the paper's
    banks start), so their size comes from the training set without the distiller being
    told it.  They are training state, not part of the result: their buffers are not
    persistent, and a stored student does not carry them.  Random draws come from a
    generator of their own, so that a student's negatives do not depend on the students it
    trains beside.
    """

    def __init__(self, dim: int, seed: int):
        super().__init__()
        self.dim, self.seed = dim, seed
        self.register_buffer("student", torch.empty(0, dim), persistent=False)
        self.register_buffer("teacher", torch.empty(0, dim), persistent=False)
        self.generator = None
        self.log_normalisers = {}  # per bank, fixed on the first batch

    def _draw(self):
        if self.generator is None:
            self.generator = torch.Generator(self.student.device).manual_seed(self.seed)
        return self.generator

    def grow(self, size: int):
        rows = size - len(self.student)
        if rows > 0:
            new = torch.randn(2, rows, self.dim, generator=self._draw(), device=self.student.device)
            new = F.normalize(new, dim=2)
            self.student = torch.cat([self.student, new[0]])
            self.teacher = torch.cat([self.teacher, new[1]])

    def sample(self, count: int) -> torch.Tensor:
        """Indices of ``count`` negatives, uniformly with replacement."""
        return torch.randint(len(self.student), (count,), generator=self._draw(), device=self.student.device)

    @torch.no_grad()
    def update(self, indices: torch.Tensor, student: torch.Tensor, teacher: torch.Tensor, momentum: float):
        """Move the samples' rows towards their new embeddings, then back onto the unit sphere."""
        self.student[indices] = F.normalize(momentum * self.student[indices] + (1 - momentum) * student, dim=1)
        self.teacher[indices] = F.normalize(momentum * self.teacher[indices] + (1 - momentum) * teacher, dim=1)


@dataclasses.dataclass
class CRD(kdbench.Distiller):
    """Contrastive Representation Distillation (Tian, Krishnan & Isola, ICLR 2020).

    The penultimate embeddings of student and teacher are each mapped by a linear layer to
    ``embedding_dim`` = 128 and L2-normalised.  A student embedding and the teacher's memory
    entry of the same training sample are the positive pair; N = 16384 entries drawn from
    the teacher's memory bank are negatives, and symmetrically for a teacher embedding
    against the student's bank.  The NCE critic of the paper,
    h = e^{s/τ} / (e^{s/τ} + N·Z), τ = 0.07, with Z the mean of e^{s/τ} over the first batch
    (as in the authors' code), gives per anchor
    −log h(positive) − Σ_negatives log(1 − h), i.e. softplus(c − s⁺/τ) + Σ softplus(s⁻/τ − c)
    with c = log(N·Z).  Memories move towards the new embeddings with momentum 0.5.
    L = CE(z_s, y) + β·(L_student anchor + L_teacher anchor), β = 0.8.

    Deviation: one set of N negatives is drawn per batch and shared by its anchors (the paper
    draws N per anchor); the estimate is the same in expectation at a fraction of the memory.
    """

    name = "crd"
    paper = "Tian, Krishnan & Isola, Contrastive Representation Distillation, ICLR 2020"
    needs = frozenset({"features"})

    beta: float = 0.8
    embedding_dim: int = 128
    negatives: int = 16384
    temperature: float = 0.07
    momentum: float = 0.5

    def validate(self):
        kdbench.check_non_negative(self, "beta")
        if self.embedding_dim < 1 or self.negatives < 1:
            raise kdbench.ConfigError(
                f"crd: embedding_dim and negatives must be positive, got {self.embedding_dim}, {self.negatives}")
        kdbench.check_positive(self, "temperature")
        kdbench.check_range(self.name, "momentum", self.momentum, 0.0, 1.0)

    def setup(self, teacher, student, teacher_probe, student_probe):
        self.teacher_network, self.student_network = teacher, student
        self.parts["student"] = nn.Linear(embedding(student, student_probe.features).shape[1], self.embedding_dim)
        self.parts["teacher"] = nn.Linear(embedding(teacher, teacher_probe.features).shape[1], self.embedding_dim)
        self.parts["memory"] = MemoryBank(self.embedding_dim, seed=int(torch.randint(2 ** 62, ())))

    def contrast(self, bank_name: str, anchor: torch.Tensor, indices: torch.Tensor, negatives: torch.Tensor):
        """The NCE loss of a batch of anchors against the other model's memory bank."""
        memory = self.parts["memory"]
        bank = getattr(memory, bank_name)
        positive = (anchor * bank[indices]).sum(1) / self.temperature
        negative = anchor @ bank[negatives].T / self.temperature
        if bank_name not in memory.log_normalisers:
            scores = torch.cat([positive[:, None], negative], 1).detach()
            memory.log_normalisers[bank_name] = (scores.logsumexp((0, 1)) - math.log(scores.numel())).item()
        bias = math.log(self.negatives) + memory.log_normalisers[bank_name]
        return (F.softplus(bias - positive).sum() + F.softplus(negative - bias).sum()) / len(anchor)

    def loss(self, student, teacher, batch):
        s = F.normalize(self.parts["student"](embedding(self.student_network, student.features)).float(), dim=1)
        with torch.no_grad():
            teacher_embedding = embedding(self.teacher_network, teacher.features)
        t = F.normalize(self.parts["teacher"](teacher_embedding).float(), dim=1)
        memory = self.parts["memory"]
        memory.grow(int(batch.indices.max()) + 1)
        negatives = memory.sample(self.negatives)
        contrastive = (self.contrast("teacher", s, batch.indices, negatives)
                       + self.contrast("student", t, batch.indices, negatives))
        memory.update(batch.indices, s.detach(), t.detach(), self.momentum)
        return F.cross_entropy(student.logits.float(), batch.labels) + self.beta * contrastive


@kdbench.hookimpl
def register_distillers(register):
    register(CRD)
