"""Spectral signatures: poisoned samples stand out along the top singular vector of their class."""
import dataclasses

import torch

import kdbench
from kdbench.features import penultimate

SCORES = ("projection", "centred_squared")
NORMALISATIONS = ("per_class_mad", "global_mad", "none")
MAD_CONSISTENCY = 0.6745  # the modified z-score's constant (Iglewicz & Hoaglin), as pyod's MAD uses it


@dataclasses.dataclass
class SpectralSignatures(kdbench.TrainingDataDetector):
    """Spectral Signatures (Tran, Li & Madry, "Spectral Signatures in Backdoor Attacks",
    NeurIPS 2018).  For every label of the training set, the penultimate activations R of its
    samples are centred and their top right singular vector v is computed (SVD in float64,
    on the device).  Each sample's score, higher = more suspicious, is one of:

    - ``projection`` (default): |Rᵢ·v| on the uncentred activations, as the authors' code
      scores (MadryLab/backdoor_data_poisoning, ``compute_corr.py``; CD's
      ``analysis/spectral_signatures.py`` and BackdoorBox's ``core/defenses/Spectral.py``
      follow it);
    - ``centred_squared``: ((Rᵢ − mean)·v)², the paper's outlier score.

    The authors then remove the highest-scoring samples of one label at a time; the harness
    ranks the whole training set at once, where scores of different labels have different
    scales.  So each score is normalised (``normalise``):

    - ``per_class_mad`` (default): within its label, 0.6745·(s − median)/MAD, the modified
      z-score with the label's median and median absolute deviation, sign kept.  Increasing
      within each label, it keeps the authors' ranking of every label (they remove its
      highest scores) and only brings the labels to one scale;
    - ``global_mad``: 0.6745·|s − median|/MAD over the whole training set at once, as CD's
      evaluation does with pyod's ``MAD`` (HanxunH/CognitiveDistillation,
      ``analysis/spectral_signatures.py``): one scale for every label, and two-sided;
    - ``none``: the raw scores ranked together.

    Deviations: CD and kdbench read the pooled penultimate activations, where the authors'
    code reads the flattened map of an inner block of the last stage; a label whose MAD is 0
    (fewer than three distinct scores) is divided by 1 instead.
    """

    name = "spectral_signatures"
    paper = "Tran et al., Spectral Signatures in Backdoor Attacks, NeurIPS 2018"
    version = "2"

    score_form: str = "projection"
    normalise: str = "per_class_mad"
    batch_size: int = 1024

    def validate(self):
        if self.batch_size < 1:
            raise kdbench.ConfigError(f"spectral_signatures: batch_size must be ≥ 1, got {self.batch_size}")
        if self.score_form not in SCORES:
            raise kdbench.ConfigError(f"spectral_signatures: score_form must be one of {', '.join(SCORES)}, got {self.score_form!r}")
        if self.normalise not in NORMALISATIONS:
            raise kdbench.ConfigError(
                f"spectral_signatures: normalise must be one of {', '.join(NORMALISATIONS)}, got {self.normalise!r}")

    def score(self, model, images, labels, calibration):
        return self.scores(penultimate(model, images, self.batch_size), labels.to(images.device)).float()

    def scores(self, activations: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The normalised score of every sample (float64) from its activations and label."""
        activations = activations.double()
        scores = torch.zeros(len(activations), dtype=torch.float64, device=activations.device)
        for label in labels.unique():
            members = labels == label
            own = activations[members]
            centred = own - own.mean(0)
            top = torch.linalg.svd(centred, full_matrices=False).Vh[0]
            raw = (own @ top).abs() if self.score_form == "projection" else (centred @ top).square()
            scores[members] = _modified_z(raw) if self.normalise == "per_class_mad" else raw
        if self.normalise == "global_mad":
            scores = _modified_z(scores).abs()
        return scores


def _modified_z(scores: torch.Tensor) -> torch.Tensor:
    """0.6745·(s − median)/MAD, with numpy's median (the mean of the two middle values)."""
    median = scores.quantile(0.5)
    mad = (scores - median).abs().quantile(0.5)
    return MAD_CONSISTENCY * (scores - median) / (mad if mad > 0 else 1.0)


@kdbench.hookimpl
def register_defenses(register):
    register(SpectralSignatures)
