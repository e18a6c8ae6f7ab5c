"""Activation clustering: a poisoned label's activations split into two well-separated clusters."""
import dataclasses
import warnings

import numpy as np
import torch

import kdbench
from kdbench.features import penultimate

REDUCTIONS = ("ica", "pca", "none")
SCORES = ("silhouette_size", "sample_silhouette")


@dataclasses.dataclass
class ActivationClustering(kdbench.TrainingDataDetector):
    """Activation Clustering (Chen, Carvalho, Baracaldo, Ludwig, Edwards, Lee, Molloy &
    Srivastava, "Detecting Backdoor Attacks on Deep Neural Networks by Activation
    Clustering", SafeAI@AAAI 2019, arXiv 1811.03728).  For every label of the training set
    the penultimate activations of its samples are reduced to ``dims`` = 10 dimensions with
    ICA (the paper's choice, with the authors' settings in IBM's ART,
    ``art/defences/detector/poison/activation_defence.py``: FastICA, 1000 iterations,
    tolerance 0.005; ``reduction`` = ``pca`` is the paper's alternative) and split into two
    clusters by k-means.  The paper judges the split with two of its analyses: the
    silhouette score (does the label really fall into two groups, as a poisoned label's
    clean and triggered samples do?) and the relative size (the poison is the smaller
    cluster).  Each sample's score (``score_form`` = ``silhouette_size``) joins both: its
    label's silhouette score times one minus its cluster's share of the label (higher = more
    suspicious).

    Cognitive Distillation's evaluation of AC (HanxunH/CognitiveDistillation,
    ``analysis/activation_clustering.py``) runs k-means on the raw activations and scores
    each sample by its own silhouette value: ``reduction`` = ``none`` with ``score_form`` =
    ``sample_silhouette`` reproduces it.

    Deviations: the paper flags whole clusters by thresholds (or by exclusionary
    reclassification, which retrains the model); the harness needs a score per sample, and
    ``silhouette_size`` ranks the samples as the two analyses would flag them.  Under it, a
    label whose silhouette score is negative scores 0; under either score, a label of fewer
    than three samples scores 0.  k-means keeps the best of 10 starts, seeded.
    """

    name = "activation_clustering"
    paper = "Chen et al., Detecting Backdoor Attacks on Deep Neural Networks by Activation Clustering, SafeAI@AAAI 2019"
    version = "2"

    dims: int = 10
    reduction: str = "ica"
    score_form: str = "silhouette_size"
    batch_size: int = 1024
    seed: int = 0

    def validate(self):
        if self.reduction not in REDUCTIONS:
            raise kdbench.ConfigError(f"activation_clustering: reduction must be one of {', '.join(REDUCTIONS)}, got {self.reduction!r}")
        if self.score_form not in SCORES:
            raise kdbench.ConfigError(f"activation_clustering: score_form must be one of {', '.join(SCORES)}, got {self.score_form!r}")
        if min(self.dims, self.batch_size) < 1:
            raise kdbench.ConfigError(f"activation_clustering: dims and batch_size must be ≥ 1, got {self.dims}, {self.batch_size}")

    def score(self, model, images, labels, calibration):
        activations = penultimate(model, images, self.batch_size).cpu().double().numpy()
        return torch.from_numpy(self.scores(activations, labels.cpu().numpy())).float()

    def scores(self, activations: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """The score of every sample from its activations and label."""
        scores = np.zeros(len(labels))
        for label in np.unique(labels):
            members = labels == label
            if members.sum() >= 3:
                scores[members] = self._suspicion(activations[members])
        return scores

    def _suspicion(self, activations):
        from sklearn.cluster import KMeans
        from sklearn.metrics import silhouette_samples, silhouette_score

        reduced = self._reduce(activations)
        clusters = KMeans(n_clusters=2, n_init=10, random_state=self.seed).fit_predict(reduced)
        if len(np.unique(clusters)) < 2:
            return np.zeros(len(activations))
        if self.score_form == "sample_silhouette":
            return silhouette_samples(reduced, clusters)
        share = np.bincount(clusters)[clusters] / len(clusters)
        return max(silhouette_score(reduced, clusters), 0.0) * (1 - share)

    def _reduce(self, activations):
        from sklearn.decomposition import PCA, FastICA
        from sklearn.exceptions import ConvergenceWarning

        if self.reduction == "none":
            return activations
        dims = min(self.dims, *activations.shape)
        if self.reduction == "pca":
            return PCA(n_components=dims, random_state=self.seed).fit_transform(activations)
        with warnings.catch_warnings():  # ICA's components serve as a projection even when not fully converged
            warnings.simplefilter("ignore", ConvergenceWarning)
            return FastICA(n_components=dims, max_iter=1000, tol=0.005, random_state=self.seed).fit_transform(activations)


@kdbench.hookimpl
def register_defenses(register):
    register(ActivationClustering)
