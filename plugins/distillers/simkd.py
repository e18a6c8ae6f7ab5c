"""SimKD: the student's features, projected onto the teacher's, reuse the teacher's classifier."""
import dataclasses
import types

import torch.nn.functional as F
from torch import nn

import kdbench
from kdbench.features import common_size, pool_to, require_maps


def bottleneck(in_channels: int, out_channels: int, factor: int, non_negative: bool) -> nn.Sequential:
    """The paper's projector: 1×1, 3×3 and 1×1 convolutions, each with batch norm and ReLU,
    through ``out_channels // factor`` hidden channels; the last ReLU only for a
    ``non_negative`` target."""
    hidden = max(1, out_channels // factor)
    layers = []
    for cin, cout, kernel in ((in_channels, hidden, 1), (hidden, hidden, 3), (hidden, out_channels, 1)):
        layers += [nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
    return nn.Sequential(*(layers if non_negative else layers[:-1]))


class SimKDBody(nn.Module):
    """The deployed SimKD classifier, with timm's interface: the student's feature extractor,
    the trained projector, and the teacher's head (pooling and classifier)."""

    def __init__(self, student: nn.Module, projector: nn.Module, teacher: nn.Module, size: tuple[int, int]):
        super().__init__()
        self.student, self.projector, self.teacher = student, projector, teacher
        self.size = size

    def project(self, features):
        return self.projector(pool_to(features, self.size))

    def forward_features(self, x):
        return self.project(self.student.forward_features(x))

    def forward_intermediates(self, x):
        features, intermediates = self.student.forward_intermediates(x)
        return self.project(features), intermediates

    def forward_head(self, x, pre_logits: bool = False):
        return self.teacher.forward_head(x, pre_logits=pre_logits)

    def get_classifier(self):
        return self.teacher.get_classifier()

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


class SimKDNetwork(kdbench.Network):
    """A SimKD student as deployed: pixels → student features → projector → teacher's head.
    ``features`` (and ``run``) expose the projected map, the one the teacher's head reads."""

    def __init__(self, student: kdbench.Network, projector: nn.Module, teacher: kdbench.Network, size):
        # Network reads only the normalisation statistics from a DatasetInfo; the student's serve.
        normalisation = types.SimpleNamespace(mean=tuple(student.mean.flatten().tolist()),
                                              std=tuple(student.std.flatten().tolist()))
        super().__init__(SimKDBody(student.body, projector, teacher.body, size), normalisation)


@dataclasses.dataclass
class SimKD(kdbench.Distiller):
    """SimKD (Chen, Mei, Wang, Feng & Chen, "Knowledge Distillation with the Reused Teacher
    Classifier", CVPR 2022).

    A projector (1×1–3×3–1×1 convolutional bottleneck with ``teacher channels / factor``
    hidden channels, factor 2 as in the paper) maps the student's last feature map onto the
    teacher's; the only training loss is their mean squared error (no cross-entropy, no KD
    term).  The deployed model is the student's feature extractor, the
    projector and the teacher's frozen pooling and classifier (``deploy``).

    Where the two final maps differ in resolution, the larger is average-pooled to the
    smaller before the projector (the authors' released code does the same).  The projector's
    last ReLU is kept only when the teacher's map is non-negative on the probe batch (it is
    after a ReLU in the paper's CNNs; other families' maps need not be).  Both networks
    must produce N×C×H×W maps (CNN families; a ViT's token features do not qualify).
    """

    name = "simkd"
    paper = "Chen, Mei, Wang, Feng & Chen, Knowledge Distillation with the Reused Teacher Classifier, CVPR 2022"
    needs = frozenset({"features"})

    factor: int = 2

    def validate(self):
        if self.factor < 1:
            raise kdbench.ConfigError(f"simkd: factor must be at least 1, got {self.factor}")

    def setup(self, teacher, student, teacher_probe, student_probe):
        require_maps(self.name, **{"student's last feature map": student_probe.features,
                                   "teacher's last feature map": teacher_probe.features})
        self.size = common_size(student_probe.features, teacher_probe.features)
        target = teacher_probe.features
        self.parts["projector"] = bottleneck(student_probe.features.shape[1], target.shape[1], self.factor,
                                             non_negative=bool(target.min() >= 0))

    def loss(self, student, teacher, batch):
        projected = self.parts["projector"](pool_to(student.features, self.size))
        return F.mse_loss(projected.float(), pool_to(teacher.features, self.size).float())

    def deploy(self, student, teacher):
        return SimKDNetwork(student, self.parts["projector"], teacher, self.size)


@kdbench.hookimpl
def register_distillers(register):
    register(SimKD)
