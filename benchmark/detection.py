"""Running a defense on one model; the harness alone decides which inputs, samples or
models are positive (DESIGN.md, "Metrics")."""
import copy
import math

import torch

from .data import to_float
from .errors import ConfigError
from .metrics import defense_effectiveness, detection_metrics, measure
from .registry import BASELINE
from .training import predict


class NonFiniteScores(ValueError):
    """A detector returned NaN or infinite scores: its row fails instead of reporting NaN."""


def defend(stages, defense, model, model_key: str, teacher, view) -> dict:
    """The metrics of one defense on one model (a teacher or a student of ``teacher``)."""
    family = defense.family
    result = {"auroc": math.nan, "auprc": math.nan, "auroc_effective": math.nan, "auprc_effective": math.nan,
              "score": math.nan}
    calibration = view.defender_data()
    backdoor = teacher.backdoor
    if family == "model":
        score = defense.score(model, calibration)
        score = score if isinstance(score, dict) else {"score": float(score)}
        finite(defense, torch.tensor([float(v) for v in score.values()]))
        result.update(score)
    elif family == "mitigation":
        before = stages.evaluate(model_key, model, teacher)
        after = measure(defense.repair(copy.deepcopy(model), calibration), stages.load_data(), backdoor)
        result.update(ca_after=after["ca"], asr_after=after["asr"])
        if backdoor:
            result["der"] = defense_effectiveness(before["ca"], before["asr"], after["ca"], after["asr"])
    elif family == "input":
        result.update(input_detection(defense, model, stages.load_data(), backdoor, calibration))
    elif family == "training-data":
        images, labels, positive = view.poisoned_training_set(backdoor)
        images = images.to(labels.device)  # on the device, even where training streamed it
        scores = finite(defense, defense.score(model, images, labels, calibration))
        result["auroc"], result["auprc"] = detection_metrics(scores, positive)
    else:
        raise ConfigError(f"defense {defense.name} has unknown family {family!r}")
    return result


def input_detection(defense, model, data, backdoor: dict, calibration) -> dict:
    """AUROC/AUPRC of an input detector: triggered non-target test images against the clean
    test images (``auroc``), and over the effective cases only (``auroc_effective``):
    triggered images the model sends to the target against clean images it classifies
    correctly, the convention of SCALE-UP's, IBD-PSC's and BackdoorBox's evaluations."""
    keep = data.test_labels != backdoor["target"]
    with torch.no_grad():
        triggered = backdoor["trigger"](data.test_images[keep])
    images = torch.cat([to_float(data.test_images), triggered])
    positive = torch.cat([torch.zeros(len(data.test_images)), torch.ones(len(triggered))]).bool()
    scores = finite(defense, defense.score(model, images, calibration)).cpu()
    predicted = predict(model, images).cpu()
    effective = torch.cat([predicted[: len(data.test_images)] == data.test_labels.cpu(),
                           predicted[len(data.test_images):] == backdoor["target"]])
    auroc, auprc = detection_metrics(scores, positive)
    auroc_effective, auprc_effective = detection_metrics(scores[effective], positive[effective])
    return {"auroc": auroc, "auprc": auprc, "auroc_effective": auroc_effective, "auprc_effective": auprc_effective}


def finite(defense, scores: torch.Tensor) -> torch.Tensor:
    bad = int((~torch.isfinite(scores.float())).sum())
    if bad:
        raise NonFiniteScores(f"defense {defense.name}: {bad} of {len(scores)} scores are not finite")
    return scores


def with_model_level_auroc(rows: list) -> list:
    """Model-level detectors score one model each; their AUROC is over the suite's models,
    backdoored (attack other than the baseline) against clean, per defense and role."""
    groups = {}
    for row in rows:
        if row.get("family") == "model" and row.get("status") == "ok":
            groups.setdefault((row["defense"], row["model"]), []).append(row)
    for group in groups.values():
        unique = {(r["teacher_arch"], r["student_arch"], r["attack"], r["distiller"], r["seed"]): r for r in group}
        scores = torch.tensor([r["score"] for r in unique.values()])
        positive = torch.tensor([r["attack"] != BASELINE for r in unique.values()])
        auroc, auprc = detection_metrics(scores, positive)
        for row in group:
            row["auroc"], row["auprc"] = auroc, auprc
    return rows
