"""Leaderboard CSVs: long format, one pair per suite, written atomically after every teacher."""
import os
from pathlib import Path

import pandas as pd

DISTILLATION_COLUMNS = [
    "dataset", "teacher_arch", "student_arch", "attack", "distiller", "seed",
    "teacher_ca", "teacher_asr", "teacher_ra", "student_ca", "student_asr", "student_ra",
    "control_student_ca", "control_student_asr", "teacher_seconds", "student_seconds",
    "device", "kdbench_version", "torch_version", "attack_plugin", "distiller_plugin", "spec_hash", "status", "error",
]
DETECTION_COLUMNS = [
    "dataset", "teacher_arch", "student_arch", "attack", "distiller", "seed", "defense", "family", "model",
    "auroc", "auprc", "score", "ca_after", "asr_after", "der", "defense_plugin", "spec_hash", "status", "error",
]
METRICS = ["teacher_ca", "teacher_asr", "student_ca", "student_asr", "control_student_ca", "control_student_asr"]


def frame(rows: list, columns: list) -> pd.DataFrame:
    table = pd.DataFrame(rows)
    for column in columns:
        if column not in table:
            table[column] = pd.NA
    extra = [c for c in table.columns if c not in columns]
    return table[columns + extra]


def write(out: Path, distillation: list, detection: list) -> tuple[Path, Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = out / "distillation.csv", out / "detection.csv"
    for path, rows, columns in zip(paths, (distillation, detection), (DISTILLATION_COLUMNS, DETECTION_COLUMNS)):
        tmp = path.with_name(f".{path.name}.tmp")
        frame(rows, columns).to_csv(tmp, index=False, float_format="%.4f")
        os.replace(tmp, path)
    return paths
