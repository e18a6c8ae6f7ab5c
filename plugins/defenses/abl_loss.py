"""Anti-Backdoor Learning's isolation signal: poisoned samples are learned first, so their loss is lowest."""
import copy
import dataclasses

import torch
import torch.nn.functional as F

import kdbench

LOSSES = ("lga", "cross_entropy")


@dataclasses.dataclass
class AblLoss(kdbench.TrainingDataDetector):
    """The backdoor-isolation stage of Anti-Backdoor Learning (Li, Lyu, Koren, Lyu, Li & Ma,
    "Anti-Backdoor Learning: Training Clean Models on Poisoned Data", NeurIPS 2021).  A
    model of the inspected model's architecture is trained from scratch on the (poisoned)
    training set for ``epochs`` epochs with the local gradient ascent loss
    sign(CE − γ)·CE on each mini-batch, which holds the loss of the clean samples near γ
    while the backdoor, learned faster, falls below it; each sample's score is then minus
    its cross-entropy under that model (ABL isolates the lowest-loss 1%).  Defaults are the
    paper's: 20 epochs, γ = 0.5, batch 64, learning rate 0.1.

    Cognitive Distillation's evaluation of this signal (HanxunH/CognitiveDistillation,
    ``analysis/abl.py`` on the per-sample losses ``train.py`` records) trains with plain
    cross-entropy and scores each sample by minus its loss averaged over the ends of the
    first 20 epochs: ``loss`` = ``cross_entropy`` with ``average_epochs`` = true reproduces it.

    Deviations: the inspected model serves only as the architecture (its parameters are
    re-initialised with each layer's ``reset_parameters``), so the score measures the
    training set rather than the model; training runs through the harness's loop (SGD with
    Nesterov momentum, weight decay 5·10⁻⁴, warm-up then linear decay instead of a constant
    rate, random-crop augmentation without flips since the defender is not told whether the
    dataset allows them); the losses are measured on the images as stored, not augmented."""

    name = "abl_loss"
    paper = "Li et al., Anti-Backdoor Learning: Training Clean Models on Poisoned Data, NeurIPS 2021"
    version = "2"

    epochs: int = 20
    gamma: float = 0.5
    batch_size: int = 64
    lr: float = 0.1
    loss: str = "lga"
    average_epochs: bool = False
    seed: int = 0

    def validate(self):
        if min(self.epochs, self.batch_size) < 1 or self.gamma < 0 or self.lr <= 0:
            raise kdbench.ConfigError("abl_loss: epochs and batch_size must be ≥ 1, gamma ≥ 0, lr > 0")
        if self.loss not in LOSSES:
            raise kdbench.ConfigError(f"abl_loss: loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")

    def score(self, model, images, labels, calibration):
        fresh = copy.deepcopy(model)
        device = images.device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else [], device_type=device.type):
            torch.manual_seed(self.seed)
            for layer in fresh.modules():
                if hasattr(layer, "reset_parameters"):
                    layer.reset_parameters()
        objective = self._local_gradient_ascent if self.loss == "lga" else _cross_entropy
        schedule = kdbench.Schedule(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr)
        losses = []

        def record(epoch, metrics):
            losses.append(_sample_losses(fresh, images, labels))
            fresh.train()  # measured in eval mode; training goes on

        isolated, = kdbench.train([kdbench.Learner(fresh, objective)], images, labels, schedule, hflip=False,
                                  seed=self.seed, on_epoch=record if self.average_epochs else None)
        if self.average_epochs:
            return -torch.stack(losses).mean(0)
        return -_sample_losses(isolated, images, labels)

    def _local_gradient_ascent(self, outputs, teacher, batch):
        loss = F.cross_entropy(outputs.logits, batch.labels)
        return torch.sign(loss - self.gamma) * loss


def _cross_entropy(outputs, teacher, batch):
    return F.cross_entropy(outputs.logits, batch.labels)


def _sample_losses(model, images, labels):
    return F.cross_entropy(kdbench.logits(model, images), labels, reduction="none")


@kdbench.hookimpl
def register_defenses(register):
    register(AblLoss)
