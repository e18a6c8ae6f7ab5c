"""NAD: fine-tune a copy on clean data, then distil the model's attention maps towards the copy's."""
import copy
import dataclasses

import torch.nn.functional as F

import kdbench


@dataclasses.dataclass
class Nad(kdbench.Mitigation):
    """Neural Attention Distillation (Li, Lyu, Koren, Lyu, Li & Ma, "Neural Attention
    Distillation: Erasing Backdoor Triggers from Deep Neural Networks", ICLR 2021).

    A copy of the backdoored model is fine-tuned with cross-entropy on the defender's clean
    data for ``teacher_epochs`` (the NAD teacher); then the backdoored model itself (the
    student) is trained on the same data for ``epochs`` with cross-entropy plus ``beta``
    times the attention distillation loss at the outputs of its last ``stages`` stages
    (timm's ``forward_intermediates``).  An attention map is the channel sum of |a|^``p``,
    divided by its L2 norm over the positions; the loss is the mean squared difference of
    the student's and the NAD teacher's maps.  Both phases use the harness's training loop
    (SGD with Nesterov momentum, weight decay ``weight_decay``, batches of ``batch_size``,
    peak ``lr``).  Paper defaults: 10 teacher epochs, 20 NAD epochs, lr 0.1, batch 64,
    weight decay 1e-4, p = 2, β = 5000, attention taken at the ends of a WRN's three residual
    groups (the authors' released configuration keeps a non-zero β for the last group only).

    β multiplies a mean over positions, so the same β pulls harder on smaller maps: on the
    small CNN's 2×2 last map of 16-px digits 5000 wipes out clean accuracy, and the quick
    runs use 100.  Deviations: the learning rate follows the harness's schedule (linear
    warm-up, then linear decay to zero) instead of the paper's steps (0.1 for two epochs,
    then 0.01); augmentation is random cropping only, since the defender's data do not say
    whether horizontal flips suit the dataset; on a timm model with more stages than a WRN
    (a ResNet's stem and four stages) the last ``stages`` of them are distilled.
    """

    name = "nad"
    paper = "Li et al., Neural Attention Distillation: Erasing Backdoor Triggers from Deep Neural Networks, ICLR 2021"

    teacher_epochs: int = 10
    epochs: int = 20
    lr: float = 0.1
    batch_size: int = 64
    weight_decay: float = 1e-4
    beta: float = 5000.0
    p: float = 2.0
    stages: int = 3
    seed: int = 0

    def validate(self):
        if self.teacher_epochs < 1 or self.epochs < 1 or self.lr <= 0 or self.batch_size < 1:
            raise kdbench.ConfigError(f"nad: need teacher_epochs, epochs, batch_size ≥ 1 and lr > 0, got "
                                      f"{self.teacher_epochs}, {self.epochs}, {self.batch_size}, {self.lr}")
        if self.beta < 0 or self.p <= 0 or self.stages < 1:
            raise kdbench.ConfigError(f"nad: need beta ≥ 0, p > 0 and stages ≥ 1, "
                                      f"got {self.beta}, {self.p}, {self.stages}")

    def repair(self, model, calibration):
        teacher = self._train(copy.deepcopy(model), calibration, self.teacher_epochs,
                              lambda outputs, _, batch: F.cross_entropy(outputs.logits, batch.labels))
        return self._train(model, calibration, self.epochs, self.loss, teacher=teacher.eval())

    def loss(self, outputs, teacher, batch):
        pairs = list(zip(outputs.intermediates, teacher.intermediates))[-self.stages:]
        distillation = sum(F.mse_loss(self.attention(s), self.attention(t)) for s, t in pairs)
        return F.cross_entropy(outputs.logits, batch.labels) + self.beta * distillation

    def attention(self, feature_map):
        attention = feature_map.float().abs().pow(self.p).sum(1).flatten(1)
        return F.normalize(attention, dim=1, eps=1e-6)

    def _train(self, model, calibration, epochs, loss, teacher=None):
        schedule = kdbench.Schedule(epochs=epochs, batch_size=self.batch_size, lr=self.lr,
                                    weight_decay=self.weight_decay)
        needs = frozenset({"intermediates"}) if teacher is not None else frozenset({"logits"})
        learner = kdbench.Learner(model, loss, needs=needs)
        return kdbench.train([learner], calibration.images, calibration.labels, schedule,
                             hflip=False, seed=self.seed, teacher=teacher)[0]


@kdbench.hookimpl
def register_defenses(register):
    register(Nad)
