"""Spectral signatures: poisoned samples stand out along the top singular vector of their class."""
import dataclasses

import torch

import kdbench
from kdbench.features import penultimate


@dataclasses.dataclass
class SpectralSignatures(kdbench.TrainingDataDetector):
    """Spectral Signatures (Tran, Li & Madry, "Spectral Signatures in Backdoor Attacks",
    NeurIPS 2018).  For every label of the training set, the last hidden layer's
    activations R of its samples are centred (R − mean), their top right singular vector v
    is computed, and each sample's score is its squared projection ((Rᵢ − mean)·v)², the
    paper's outlier score (higher = more suspicious).  The paper then removes the 1.5·ε
    highest-scoring samples of each label; here the scores themselves are returned and the
    harness ranks them over the whole training set.  The SVD runs on the device in float64."""

    name = "spectral_signatures"
    paper = "Tran et al., Spectral Signatures in Backdoor Attacks, NeurIPS 2018"

    batch_size: int = 1024

    def validate(self):
        if self.batch_size < 1:
            raise kdbench.ConfigError(f"spectral_signatures: batch_size must be ≥ 1, got {self.batch_size}")

    def score(self, model, images, labels, calibration):
        activations = penultimate(model, images, self.batch_size).double()
        scores = torch.zeros(len(images), dtype=torch.float64, device=activations.device)
        for label in labels.unique():
            members = labels == label
            centred = activations[members] - activations[members].mean(0)
            top = torch.linalg.svd(centred, full_matrices=False).Vh[0]
            scores[members] = (centred @ top).square()
        return scores.float()


@kdbench.hookimpl
def register_defenses(register):
    register(SpectralSignatures)
