"""Activation clustering: a poisoned label's activations split into two well-separated clusters."""
import dataclasses
import warnings

import numpy as np
import torch

import kdbench
from kdbench.features import penultimate

REDUCTIONS = ("ica", "pca")


@dataclasses.dataclass
class ActivationClustering(kdbench.TrainingDataDetector):
    """Activation Clustering (Chen, Carvalho, Baracaldo, Ludwig, Edwards, Lee, Molloy &
    Srivastava, "Detecting Backdoor Attacks on Deep Neural Networks by Activation
    Clustering", SafeAI@AAAI 2019, arXiv 1811.03728).  For every label of the training set
    the last hidden layer's activations of its samples are reduced to ``dims`` = 10
    dimensions with ICA (the paper's choice; ``reduction`` = ``pca`` is its alternative)
    and split into two clusters by k-means.  The paper judges the split with two of its
    analyses: the silhouette score (does the label really fall into two groups, as a
    poisoned label's clean and triggered samples do?) and the relative size (the poison is
    the smaller cluster).  Each sample's score joins both: its label's silhouette score
    times one minus its cluster's share of the label (higher = more suspicious).

    Deviations: the paper flags whole clusters by thresholds (or by exclusionary
    reclassification, which retrains the model); the harness needs a score per sample, and
    this product ranks the samples as the two analyses would flag them.  A label whose
    silhouette score is negative, or that has fewer than three samples, scores 0."""

    name = "activation_clustering"
    paper = "Chen et al., Detecting Backdoor Attacks on Deep Neural Networks by Activation Clustering, SafeAI@AAAI 2019"

    dims: int = 10
    reduction: str = "ica"
    batch_size: int = 1024
    seed: int = 0

    def validate(self):
        if self.reduction not in REDUCTIONS:
            raise kdbench.ConfigError(f"activation_clustering: reduction must be one of {', '.join(REDUCTIONS)}, got {self.reduction!r}")
        if min(self.dims, self.batch_size) < 1:
            raise kdbench.ConfigError(f"activation_clustering: dims and batch_size must be ≥ 1, got {self.dims}, {self.batch_size}")

    def score(self, model, images, labels, calibration):
        activations = penultimate(model, images, self.batch_size).cpu().double().numpy()
        labels = labels.cpu().numpy()
        scores = np.zeros(len(labels))
        for label in np.unique(labels):
            members = labels == label
            if members.sum() >= 3:
                scores[members] = self._suspicion(activations[members])
        return torch.from_numpy(scores).float()

    def _suspicion(self, activations):
        from sklearn.cluster import KMeans
        from sklearn.decomposition import PCA, FastICA
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.metrics import silhouette_score

        dims = min(self.dims, *activations.shape)
        reduction = FastICA if self.reduction == "ica" else PCA
        with warnings.catch_warnings():  # ICA's components serve as a projection even when not fully converged
            warnings.simplefilter("ignore", ConvergenceWarning)
            reduced = reduction(n_components=dims, random_state=self.seed).fit_transform(activations)
        clusters = KMeans(n_clusters=2, n_init=10, random_state=self.seed).fit_predict(reduced)
        if len(np.unique(clusters)) < 2:
            return np.zeros(len(activations))
        share = np.bincount(clusters)[clusters] / len(clusters)
        return max(silhouette_score(reduced, clusters), 0.0) * (1 - share)


@kdbench.hookimpl
def register_defenses(register):
    register(ActivationClustering)
