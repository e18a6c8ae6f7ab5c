"""The threat model's parties and what each may see (DESIGN.md, "Threat model")."""
import torch

from .data import ImageData, Split
from .defense import DefenderData


class ThreatModel:
    """The training set split into the attacker's half and the victim's half, and the
    defender's clean calibration subset of the victim half; all on the device."""

    def __init__(self, data: ImageData, split: Split, device):
        self.data = data
        index = lambda part: part.to(device)  # noqa: E731
        self.attacker_images = data.train_images[index(split.attacker)]
        self.attacker_labels = data.train_labels[index(split.attacker)]
        self.victim_images = data.train_images[index(split.victim)]
        self.victim_labels = data.train_labels[index(split.victim)]
        self.defender = DefenderData(data.train_images[index(split.defender)],
                                     data.train_labels[index(split.defender)], data.info.num_classes)

    def defender_data(self) -> DefenderData:
        return self.defender

    def poisoned_training_set(self, backdoor: dict):
        """The teacher's training set as the attacker built it, and the mask of poisoned samples."""
        images, labels = self.attacker_images.clone(), self.attacker_labels.clone()
        indices = backdoor["poison_indices"].to(images.device)
        positive = torch.zeros(len(images), dtype=torch.bool)
        if len(indices):
            with torch.no_grad():
                images[indices] = (backdoor["trigger"](images[indices]) * 255).round().to(torch.uint8)
            labels[indices] = backdoor["poison_labels"].to(images.device)
            positive[indices.cpu()] = True
        return images, labels, positive
