"""Attention transfer: the student matches the teacher's spatial attention maps stage by stage."""
import dataclasses

import torch
import torch.nn.functional as F

import kdbench
from kdbench.features import common_size, matched_stages, pool_to, require_maps, stage_indices


@dataclasses.dataclass
class AT(kdbench.Distiller):
    """Attention Transfer (Zagoruyko & Komodakis, "Paying More Attention to Attention", ICLR 2017).

    The activation-based attention map of a stage is the channel mean of |A|^p, flattened and
    L2-normalised (p = 2).  The loss is the authors' (szagoruyko/attention-transfer,
    ``utils.py`` ``at_loss`` and ``cifar.py``; RepDistiller ``distiller_zoo/AT.py`` and
    mdistiller ``mdistiller/distillers/AT.py`` agree):

        L = CE(z_s, y) + β·Σ_stages mean over batch and positions of (Q_s − Q_t)²,  β = 10³,

    on the outputs of the residual stages (the authors' three WRN groups; RepDistiller's
    ``feat[1:-1]``, mdistiller's ``feats[1:]``): the stem's output, which timm's
    ``forward_intermediates`` lists first for a ResNet, is left out (``kdbench.stage_indices``).
    For p = 2, |A|^p is the references' A^p.

    The references pair the stages of two networks with equally many; for networks with
    different numbers of stages every stage of the shallower one is paired with the stage of
    the other nearest in relative depth (``kdbench.matched_stages``), and where a pair's
    resolutions differ the larger map is average-pooled to the smaller (as RepDistiller and
    mdistiller do) before the attention is taken.

    Option (a deviation, off by default): ``min_positions`` > 1 averages the squared distance
    of a map of fewer positions as if it had ``min_positions``.  The distance between two
    unit vectors does not shrink with the map, so the mean over positions makes a small map
    weigh more; the references' smallest maps are 8×8 on CIFAR, while the small CNN's last
    map on 16-px digits is 2×2, which weighs 16 times as much.  ``min_positions`` = 64 keeps
    every map at the weight of an 8×8 one (kdbench's behaviour before version 2, which also
    halved β).
    """

    name = "at"
    paper = "Zagoruyko & Komodakis, Paying More Attention to Attention, ICLR 2017"
    version = "2"
    needs = frozenset({"logits", "intermediates"})

    beta: float = 1000.0
    p: float = 2.0
    min_positions: int = 1

    def validate(self):
        kdbench.check_non_negative(self, "beta")
        kdbench.check_positive(self, "p", "min_positions")

    def setup(self, teacher, student, teacher_probe, student_probe):
        student_stages = stage_indices(student, len(student_probe.intermediates))
        teacher_stages = stage_indices(teacher, len(teacher_probe.intermediates))
        self.pairs = [(student_stages[s], teacher_stages[t])
                      for s, t in matched_stages(len(student_stages), len(teacher_stages))]
        for s, t in self.pairs:
            require_maps(self.name, **{f"student stage {s}": student_probe.intermediates[s],
                                       f"teacher stage {t}": teacher_probe.intermediates[t]})

    def attention(self, stage: torch.Tensor, size) -> torch.Tensor:
        """The L2-normalised attention map (B×HW) of a stage, at spatial ``size``."""
        return F.normalize(pool_to(stage.float(), size).abs().pow(self.p).mean(1).flatten(1), dim=1)

    def loss(self, student, teacher, batch):
        transfer = 0.0
        for s, t in self.pairs:
            size = common_size(student.intermediates[s], teacher.intermediates[t])
            difference = self.attention(student.intermediates[s], size) - self.attention(teacher.intermediates[t], size)
            transfer = transfer + difference.pow(2).sum(1).mean() / max(difference.shape[1], self.min_positions)
        return F.cross_entropy(student.logits.float(), batch.labels) + self.beta * transfer


@kdbench.hookimpl
def register_distillers(register):
    register(AT)
