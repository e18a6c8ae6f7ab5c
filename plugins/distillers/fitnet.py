"""FitNets: a hint from the teacher's middle stage guides the student's, through a regressor."""
import dataclasses

import torch.nn.functional as F
from torch import nn

import kdbench
from kdbench.features import match_size, require_maps, stage_at


@dataclasses.dataclass
class FitNet(kdbench.Distiller):
    """FitNets (Romero, Ballas, Kahou, Chassang, Gatta & Bengio, "FitNets: Hints for Thin Deep
    Nets", ICLR 2015): the output of a middle stage of the student (the guided layer) is
    mapped by a convolutional regressor onto the teacher's middle stage (the hint), with the
    paper's L2 loss.

    The hint and the guided layer are the stages nearest to relative depth ``hint_depth``
    (the paper's middle, 0.5) in each network, so networks of different depths pair up.  The
    regressor is a 3×3 convolution from the student's channels to the teacher's, with batch
    normalisation, ending in a ReLU when the teacher's hint is non-negative on the probe batch
    (the paper gives the regressor the hint layer's non-linearity).

    Deviations, as in the benchmark of Tian et al. (ICLR 2020) that the later literature
    follows: one stage instead of the paper's two (hint pre-training, then KD), with
    L = CE(z_s, y) + β·MSE(r(guided), hint), β = 100; where the two maps' resolutions differ
    the larger is average-pooled to the smaller (the paper sizes a valid convolution so that
    a larger guided map shrinks to the hint's).
    """

    name = "fitnet"
    paper = "Romero, Ballas, Kahou, Chassang, Gatta & Bengio, FitNets: Hints for Thin Deep Nets, ICLR 2015"
    needs = frozenset({"logits", "intermediates"})

    beta: float = 100.0
    hint_depth: float = 0.5

    def validate(self):
        kdbench.check_non_negative(self, "beta")
        if not 0 < self.hint_depth <= 1:
            raise kdbench.ConfigError(f"fitnet: hint_depth must be in (0, 1], got {self.hint_depth}")

    def setup(self, teacher, student, teacher_probe, student_probe):
        self.guided = stage_at(len(student_probe.intermediates), self.hint_depth)
        self.hint = stage_at(len(teacher_probe.intermediates), self.hint_depth)
        guided, hint = student_probe.intermediates[self.guided], teacher_probe.intermediates[self.hint]
        require_maps(self.name, **{"student's guided stage": guided, "teacher's hint stage": hint})
        layers = [nn.Conv2d(guided.shape[1], hint.shape[1], 3, padding=1, bias=False), nn.BatchNorm2d(hint.shape[1])]
        if hint.min() >= 0:
            layers.append(nn.ReLU())
        self.parts["regressor"] = nn.Sequential(*layers)

    def loss(self, student, teacher, batch):
        guided, hint = match_size(student.intermediates[self.guided], teacher.intermediates[self.hint])
        regression = F.mse_loss(self.parts["regressor"](guided).float(), hint.float())
        return F.cross_entropy(student.logits.float(), batch.labels) + self.beta * regression


@kdbench.hookimpl
def register_distillers(register):
    register(FitNet)
