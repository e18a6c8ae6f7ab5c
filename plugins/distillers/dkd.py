"""Decoupled knowledge distillation: target-class and non-target-class KD weighted apart."""
import dataclasses

import torch
import torch.nn.functional as F

import kdbench

PAPER_WARMUP = 20 / 240  # 20 warm-up epochs of the paper's 240


def binary_log_probs(log_probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """log [p_target, 1 − p_target] (B×2) from log-probabilities over the classes
    (``target``: the one-hot mask of the labels)."""
    target_log = (log_probs * target).sum(1, keepdim=True)
    others_log = log_probs.masked_fill(target, float("-inf")).logsumexp(1, keepdim=True)
    return torch.cat([target_log, others_log], 1)


def non_target_log_probs(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Log-probabilities over the non-target classes only (the target's entry is −inf)."""
    return F.log_softmax(logits.masked_fill(target, float("-inf")), 1)


@dataclasses.dataclass
class DKD(kdbench.Distiller):
    """Decoupled Knowledge Distillation (Zhao, Cui, Song, Qiu & Liang, CVPR 2022).

    The KD loss splits into TCKD, the KL divergence of the binary (target, all others)
    probabilities, and NCKD, the KL divergence of the distributions over the non-target
    classes: KD = TCKD + (1 − p_target)·NCKD.  The paper weights the two apart instead:

    L = CE(z_s, y) + w·T²·(α·TCKD + β·NCKD),

    with α = 1, β = 8, T = 4 (the paper's CIFAR-100 settings) and w rising linearly from 0
    to 1 over the warm-up.  The paper warms up for 20 of 240 epochs; here the warm-up is
    that fraction of training (``batch.progress``), so it scales with the suite's budget.
    """

    name = "dkd"
    paper = "Zhao, Cui, Song, Qiu & Liang, Decoupled Knowledge Distillation, CVPR 2022"

    alpha: float = 1.0
    beta: float = 8.0
    temperature: float = 4.0
    warmup: float = PAPER_WARMUP

    def validate(self):
        kdbench.check_positive(self, "temperature")
        kdbench.check_non_negative(self, "alpha", "beta")
        kdbench.check_range(self.name, "warmup", self.warmup, 0.0, 1.0)

    def loss(self, student, teacher, batch):
        t = self.temperature
        s, z = student.logits.float() / t, teacher.logits.float() / t
        target = F.one_hot(batch.labels, s.shape[1]).bool()
        tckd = F.kl_div(binary_log_probs(F.log_softmax(s, 1), target), binary_log_probs(F.log_softmax(z, 1), target),
                        reduction="batchmean", log_target=True)
        s_rest, z_rest = non_target_log_probs(s, target), non_target_log_probs(z, target)
        # the target class lies outside both distributions: its entry (0·log 0/0) is left out
        nckd = (z_rest.exp() * (z_rest - s_rest)).masked_fill(target, 0).sum(1).mean()
        weight = min(batch.progress / self.warmup, 1.0) if self.warmup > 0 else 1.0
        kd = weight * t * t * (self.alpha * tckd + self.beta * nckd)
        return F.cross_entropy(student.logits.float(), batch.labels) + kd


@kdbench.hookimpl
def register_distillers(register):
    register(DKD)
