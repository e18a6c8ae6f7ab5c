"""The benchmark's metrics, defined in one place (DESIGN.md, "Metrics")."""
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


def target_gain(clean_predicted: torch.Tensor, triggered_predicted: torch.Tensor, target: int) -> float:
    """TITG, BackWeak's trigger-induced target gain: the target-prediction rate on all
    triggered test images minus the rate on the same images clean."""
    return ((triggered_predicted == target).float().mean() - (clean_predicted == target).float().mean()).item()


def measure(model, data, backdoor: dict | None) -> dict:
    """CA of a model on the test split, and with a backdoor's trigger its ASR, RA and TITG."""
    predicted = predict(model, data.test_images)
    result = {"ca": (predicted == data.test_labels).float().mean().item(), "asr": math.nan, "ra": math.nan,
              "titg": math.nan}
    if backdoor:
        target = backdoor["target"]
        triggered = predict(model, data.test_images, transform=backdoor["trigger"])
        keep = data.test_labels != target
        result["asr"] = (triggered[keep] == target).float().mean().item()
        result["ra"] = (triggered[keep] == data.test_labels[keep]).float().mean().item()
        result["titg"] = target_gain(predicted, triggered, target)
    return result


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
