"""The threat model's parties and what each may see (DESIGN.md, "Threat model")."""
import torch

from .data import ImageData, Split, put, take
from .defense import DefenderData


class ThreatModel:
    """The training set split into the attacker's half and the victim's half, and the
    defender's clean calibration subset of the victim half.  The halves' images stay where
    the training images are (on the device, or in host memory: ``kdbench.place``); labels
    and the defender's subset are on the device."""

    def __init__(self, data: ImageData, split: Split, device):
        self.data = data
        self.device = device
        labels = lambda part: data.train_labels[part.to(device)]  # noqa: E731
        self.attacker_images = take(data.train_images, split.attacker)
        self.attacker_labels = labels(split.attacker)
        self.victim_images = take(data.train_images, split.victim)
        self.victim_labels = labels(split.victim)
        self.defender = DefenderData(take(data.train_images, split.defender, device), labels(split.defender),
                                     data.info.num_classes)

    def defender_data(self) -> DefenderData:
        return self.defender

    def poisoned_training_set(self, backdoor: dict):
        """The teacher's training set as the attacker built it, and the mask of poisoned samples."""
        images, labels = self.attacker_images.clone(), self.attacker_labels.clone()
        indices = backdoor["poison_indices"].cpu()
        positive = torch.zeros(len(images), dtype=torch.bool)
        if len(indices):
            with torch.no_grad():
                put(images, indices, backdoor["trigger"](take(images, indices, self.device)))
            labels[indices.to(labels.device)] = backdoor["poison_labels"].to(labels.device)
            positive[indices] = True
        return images, labels, positive
