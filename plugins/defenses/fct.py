"""FCT: the features of poisoned training samples move more than clean ones' under rotation and shift."""
import copy
import dataclasses
import math

import torch
import torch.nn.functional as F

import kdbench


@dataclasses.dataclass
class Fct(kdbench.TrainingDataDetector):
    """Feature consistency towards transformations, the sample-distinguishment metric of
    D-BR/D-ST (Chen, Wu & Wang, "Effective Backdoor Defense by Exploiting Sensitivity of
    Poisoned Samples", NeurIPS 2022).

    The backdoored model is first fine-tuned on its (poisoned) training set with the
    paper's intra-class loss alone, the mean cosine similarity between the batch's class
    centres of the pooled features, which pushes the centres apart (``intra_epochs``
    epochs, SGD with momentum 0.9 and weight decay 5e-4 at ``lr``, batches of
    ``batch_size``, no augmentation).  Each sample x is then compared with τ(x), a random
    rotation in ±``rotation`` degrees followed by a random translation of up to
    ``translate`` of the image size (the authors' default τ, zero fill): the score is
    Δ(x) = mean over feature dimensions of (f(x) − f(τ(x)))², with f the pooled
    penultimate features (timm's ``pre_logits``).  The trigger of a poisoned sample is
    displaced or cut off by τ while the model's features of it hinge on the trigger, so
    its Δ is large.  Paper defaults: 10 epochs at lr 0.01, batch 128, rotation 180°,
    translation 0.2.

    Deviations: the paper computes FCT on a model it trains itself for two epochs without
    augmentation before the intra-class fine-tuning; here the model under inspection (the
    teacher the attacker trained, or a student) takes its place, so that the score
    measures that model.  τ is drawn once per sample, from ``seed``; rotation and shift
    are one bilinear resampling on the device rather than two nearest-neighbour PIL passes.
    """

    name = "fct"
    paper = "Chen et al., Effective Backdoor Defense by Exploiting Sensitivity of Poisoned Samples, NeurIPS 2022"

    intra_epochs: int = 10
    lr: float = 0.01
    batch_size: int = 128
    rotation: float = 180.0
    translate: float = 0.2
    seed: int = 0

    def validate(self):
        if self.intra_epochs < 0 or self.lr <= 0 or self.batch_size < 2 or not 0 <= self.translate <= 1:
            raise kdbench.ConfigError(f"fct: need intra_epochs ≥ 0, lr > 0, batch_size ≥ 2 and 0 ≤ translate ≤ 1, "
                                      f"got {self.intra_epochs}, {self.lr}, {self.batch_size}, {self.translate}")

    def score(self, model, images, labels, calibration):
        generator = torch.Generator().manual_seed(self.seed)
        model = self._separate_classes(copy.deepcopy(model), images, labels, generator).eval()
        scores = []
        with torch.no_grad():
            for index in torch.arange(len(images), device=images.device).split(self.batch_size):
                x = kdbench.to_float(images[index])
                moved = _rotate_and_shift(x, self.rotation, self.translate, generator)
                with _autocast(x.device):
                    difference = _pooled_features(model, x).float() - _pooled_features(model, moved).float()
                scores.append(difference.pow(2).mean(1))
        return torch.cat(scores)

    def _separate_classes(self, model, images, labels, generator):
        """The paper's intra-class fine-tuning: minimise the similarity of class centres."""
        optimizer = torch.optim.SGD(model.parameters(), lr=self.lr, momentum=0.9, weight_decay=5e-4)
        model.train()
        for _ in range(self.intra_epochs):
            for index in kdbench.batches(len(images), self.batch_size, True, generator, images.device):
                with _autocast(images.device):
                    features = _pooled_features(model, kdbench.to_float(images[index])).float()
                batch_labels = labels[index]
                present = batch_labels.unique()
                centres = torch.stack([features[batch_labels == label].mean(0) for label in present])
                centres = F.normalize(centres, dim=1)
                similarity = centres @ centres.T
                loss = (similarity - torch.diag(similarity.diagonal())).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        return model


def _pooled_features(model, x):
    return model.body.forward_head(model.features(x), pre_logits=True).flatten(1)


def _rotate_and_shift(x, degrees, translate, generator):
    """Each image rotated about its centre by a random angle in ±degrees, then shifted by up
    to ``translate`` of its size in each direction; uncovered pixels are black."""
    n = len(x)
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(degrees)
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * translate * 2  # grid units span 2 per image
    cos, sin = angle.cos(), angle.sin()
    theta = torch.stack([torch.stack([cos, -sin, -shift[:, 0]], 1), torch.stack([sin, cos, -shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _autocast(device):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


@kdbench.hookimpl
def register_defenses(register):
    register(Fct)
