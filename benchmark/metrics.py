"""The benchmark's metrics, defined in one place (DESIGN.md)."""
import math

import torch

from .training import predict


def clean_accuracy(model, images, labels) -> float:
    """CA: top-1 accuracy on the clean test set."""
    return (predict(model, images) == labels).float().mean().item()


def attack_metrics(model, images, labels, trigger, target: int) -> tuple[float, float]:
    """(ASR, RA) over the test images whose true label is not the target, once triggered:
    the fraction classified as the target, and the fraction still classified correctly."""
    keep = labels != target
    predicted = predict(model, images[keep], transform=trigger)
    truth = labels[keep]
    return (predicted == target).float().mean().item(), (predicted == truth).float().mean().item()


def detection_metrics(scores: torch.Tensor, positive: torch.Tensor) -> tuple[float, float]:
    """(AUROC, AUPRC) of scores (higher = more suspicious) against the positive mask."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    scores = scores.detach().float().cpu().numpy()
    positive = positive.detach().cpu().numpy().astype(bool)
    if positive.all() or not positive.any() or not math.isfinite(scores.sum()):
        return math.nan, math.nan
    return float(roc_auc_score(positive, scores)), float(average_precision_score(positive, scores))


def defense_effectiveness(ca_before, asr_before, ca_after, asr_after) -> float:
    """DER = (max(0, ΔASR) − max(0, ΔCA) + 1) / 2, with Δ the drop caused by the mitigation."""
    return (max(0.0, asr_before - asr_after) - max(0.0, ca_before - ca_after) + 1) / 2
