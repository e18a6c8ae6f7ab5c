"""Leaderboard rows assembled from the store: a row is ready once every artifact it reads is
stored, and failed, with the first error, once a job it needs has failed."""
import math

import torch

from . import __version__
from .detection import with_model_level_auroc
from .plan import Plan
from .registry import BASELINE

MEASURED = ("ca", "asr", "ra", "titg")


class Rows:
    """The rows of one plan, rebuilt from the store whenever a job finishes."""

    def __init__(self, plan: Plan, stages):
        self.plan, self.stages, self.store = plan, stages, stages.store
        self.metas = {}  # stored artifacts never change: each meta.json is read once

    def meta(self, stage: str, key: str) -> dict | None:
        if (stage, key) not in self.metas:
            if not self.store.has(stage, key):
                return None
            self.metas[stage, key] = self.store.meta(stage, key)
        return self.metas[stage, key]

    def assemble(self, failed: dict) -> tuple[list, list]:
        """(distillation rows, detection rows) of every finished or failed cell."""
        distillation, detection = [], []
        for cell in self.plan.cells:
            row = self.distillation_row(cell, failed)
            if row is not None:
                distillation.append(row)
        for entry in self.plan.detections:
            row = self.detection_row(entry, failed)
            if row is not None:
                detection.append(row)
        return distillation, with_model_level_auroc(detection)

    def distillation_row(self, cell: dict, failed: dict) -> dict | None:
        row = dict(cell["row"])
        needed = [cell["teacher"], cell["student"], *cell["evaluations"].values()]
        error = next((failed[key] for key in needed if key in failed), None)
        if error is not None:
            return dict(row, status="failed", error=error)
        evaluations = {role: self.meta("evaluation", key) for role, key in cell["evaluations"].items()}
        teacher = self.meta("clean_teacher" if row["attack"] == BASELINE else "teacher", cell["teacher"])
        student = self.meta("student", cell["student"])
        if teacher is None or student is None or any(meta is None for meta in evaluations.values()):
            return None  # not finished yet
        for role in ("teacher", "student", "control_student", "clean_teacher"):
            result = evaluations[role]["result"] if role in evaluations else {}
            for metric in MEASURED:
                if role != "clean_teacher" or metric == "asr":
                    row[f"{role}_{metric}"] = result.get(metric, math.nan)
        attack = None if row["attack"] == BASELINE else self.stages.resolve("attack", row["attack"])
        row.update(teacher_seconds=teacher["seconds"], student_seconds=student["seconds"], device=student["device"],
                   threads=student.get("threads"), kdbench_version=__version__, torch_version=torch.__version__,
                   attack_plugin=attack.plugin if attack else "",
                   distiller_plugin=self.stages.resolve("distiller", row["distiller"]).plugin,
                   spec_hash=cell["student"], status="ok", error="")
        return row

    def detection_row(self, entry: dict, failed: dict) -> dict | None:
        row = dict(entry["row"])
        error = next((failed[key] for key in entry["needs"] if key in failed), None)
        if error is not None:
            return dict(row, auroc=math.nan, auprc=math.nan, score=math.nan, status="failed", error=error)
        key = entry["needs"][-1]
        meta = self.meta("defense", key)
        if meta is None:
            return None
        return dict(row, **meta["result"], defense_plugin=self.stages.resolve("defense", row["defense"]).plugin,
                    spec_hash=key, status="ok", error="")
