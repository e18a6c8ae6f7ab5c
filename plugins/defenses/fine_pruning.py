"""Fine-pruning: remove the last convolutional channels clean data leave dormant, then fine-tune."""
import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

import kdbench


@dataclasses.dataclass
class FinePruning(kdbench.Mitigation):
    """Fine-pruning (Liu, Dolan-Gavitt & Garg, "Fine-Pruning: Defending Against Backdooring
    Attacks on Deep Neural Networks", RAID 2018).

    The channels of the last convolutional feature map (the output of the model's
    ``forward_features``) are ranked by their mean activation on the defender's clean
    data and pruned, most dormant first, as long as the clean accuracy on that data stays
    within ``max_accuracy_drop`` of the unpruned model's; backdoor neurons, which clean
    inputs do not excite, go first.  The pruned model is then fine-tuned on the same clean
    data for ``epochs`` with the harness's training loop (SGD, peak ``lr``, batches of
    ``batch_size``), the pruned channels held at zero.  ``max_accuracy_drop`` defaults to the
    paper's stopping threshold, a 4 % fall in clean validation accuracy.

    Deviations: the paper prunes the last convolutional layer of a plain CNN; on any timm
    model the pruned units are the channels of the final feature map (for a ResNet, the
    last block's output after the residual sum), held at zero by a mask in front of the
    model's head.  The paper does not fix a fine-tuning schedule; ``epochs`` and ``lr`` are
    ours, and augmentation is random cropping only, since the defender's data do not say
    whether horizontal flips suit the dataset.  On the small CNN the fine-tuning, more than
    the pruning, removes a BadNets backdoor, and on the quick suite's 60 clean digits it
    needs many small batches (the quick runs use 30 epochs of batches of 16 at lr 0.05).
    """

    name = "fine_pruning"
    paper = "Liu et al., Fine-Pruning: Defending Against Backdooring Attacks on Deep Neural Networks, RAID 2018"

    max_accuracy_drop: float = 0.04
    epochs: int = 10
    lr: float = 0.01
    batch_size: int = 64
    seed: int = 0

    def validate(self):
        kdbench.check_range(self.name, "max_accuracy_drop", self.max_accuracy_drop, 0.0, 1.0)
        if self.epochs < 0 or self.lr <= 0 or self.batch_size < 1:
            raise kdbench.ConfigError(f"fine_pruning: need epochs ≥ 0, lr > 0 and batch_size ≥ 1, "
                                      f"got {self.epochs}, {self.lr}, {self.batch_size}")

    def repair(self, model, calibration):
        model.eval()
        keep = self.pruning_mask(model, calibration)
        model.body = PrunedBody(model.body, keep)
        if self.epochs:
            schedule = kdbench.Schedule(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr)
            learner = kdbench.Learner(model, lambda outputs, _, batch: F.cross_entropy(outputs.logits, batch.labels))
            kdbench.train([learner], calibration.images, calibration.labels, schedule, hflip=False, seed=self.seed)
        return model.eval()

    @torch.no_grad()
    def pruning_mask(self, model, calibration) -> torch.Tensor:
        """1 for the channels of the last feature map that stay, 0 for the pruned ones."""
        features = torch.cat([model.features(kdbench.to_float(chunk)).float()
                              for chunk in calibration.images.split(512)])
        if features.dim() != 4:
            raise ValueError(f"fine_pruning needs a convolutional feature map, got shape {tuple(features.shape)}")
        labels = calibration.labels

        def accuracy(keep):
            logits = torch.cat([model.head(chunk * keep[None, :, None, None]) for chunk in features.split(512)])
            return (logits.argmax(1) == labels).float().mean().item()

        keep = torch.ones(features.shape[1], device=features.device)
        floor = accuracy(keep) - self.max_accuracy_drop
        for channel in features.mean((0, 2, 3)).argsort()[:-1]:  # most dormant first; one channel always stays
            keep[channel] = 0
            if accuracy(keep) < floor:
                keep[channel] = 1
                break
        return keep


class PrunedBody(nn.Module):
    """A timm-style body whose final feature map has the channels where ``keep`` is 0 removed."""

    def __init__(self, body: nn.Module, keep: torch.Tensor):
        super().__init__()
        self.body = body
        self.register_buffer("keep", keep.view(1, -1, 1, 1))

    def forward_features(self, x):
        return self.body.forward_features(x) * self.keep.to(x.dtype)

    def forward_head(self, x, pre_logits: bool = False):
        return self.body.forward_head(x, pre_logits=pre_logits)

    def get_classifier(self):
        return self.body.get_classifier()

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


@kdbench.hookimpl
def register_defenses(register):
    register(FinePruning)
