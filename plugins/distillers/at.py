"""Attention transfer: the student matches the teacher's spatial attention maps stage by stage."""
import dataclasses

import torch
import torch.nn.functional as F

import kdbench
from kdbench.features import common_size, matched_stages, pool_to, require_maps

PAPER_SMALLEST_MAP = 8 * 8  # positions of the smallest attention map in the paper's experiments


@dataclasses.dataclass
class AT(kdbench.Distiller):
    """Attention Transfer (Zagoruyko & Komodakis, "Paying More Attention to Attention", ICLR 2017).

    The activation-based attention map of a stage is the channel mean of |A|^p, flattened and
    L2-normalised (p = 2).  The loss is
    L = CE(z_s, y) + β/2·Σ_stages ‖Q_s − Q_t‖² / max(H·W, 64), β = 10³.
    The paper divides β by the number of elements of the attention map and the batch size,
    i.e. averages the squared distance over batch and positions, as the authors' released
    code does, on maps of at least 8×8 (its smallest, on CIFAR).  Deviation: a map of fewer
    positions is averaged as if it had 64.  The distance between two unit vectors does not
    shrink with the map, so on 16-px digits the last 2×2 map would otherwise weigh 16 times
    as much as any map β was tuned on, and training diverges.

    The paper pairs the outputs of the groups of two ResNets of equal depth.  For networks
    with different numbers of stages every stage of the shallower one is paired with the
    stage of the other nearest in relative depth (``kdbench.matched_stages``), and where a
    pair's resolutions differ the larger attention map is average-pooled to the smaller
    before normalisation (the paper requires equal resolutions).
    """

    name = "at"
    paper = "Zagoruyko & Komodakis, Paying More Attention to Attention, ICLR 2017"
    needs = frozenset({"logits", "intermediates"})

    beta: float = 1000.0
    p: float = 2.0

    def validate(self):
        kdbench.check_non_negative(self, "beta")
        kdbench.check_positive(self, "p")

    def setup(self, teacher, student, teacher_probe, student_probe):
        self.pairs = matched_stages(len(student_probe.intermediates), len(teacher_probe.intermediates))
        for s, t in self.pairs:
            require_maps(self.name, **{f"student stage {s}": student_probe.intermediates[s],
                                       f"teacher stage {t}": teacher_probe.intermediates[t]})

    def attention(self, stage: torch.Tensor, size) -> torch.Tensor:
        """The L2-normalised attention map (B×HW) of a stage, at spatial ``size``."""
        return F.normalize(pool_to(stage.float().abs().pow(self.p).mean(1), size).flatten(1), dim=1)

    def loss(self, student, teacher, batch):
        transfer = 0.0
        for s, t in self.pairs:
            size = common_size(student.intermediates[s], teacher.intermediates[t])
            difference = self.attention(student.intermediates[s], size) - self.attention(teacher.intermediates[t], size)
            transfer = transfer + difference.pow(2).sum(1).mean() / max(difference.shape[1], PAPER_SMALLEST_MAP)
        return F.cross_entropy(student.logits.float(), batch.labels) + self.beta / 2 * transfer


@kdbench.hookimpl
def register_distillers(register):
    register(AT)
