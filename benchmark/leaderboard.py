"""Leaderboard CSVs: long format, one pair per suite, written atomically after every teacher."""
import os
from pathlib import Path

import pandas as pd

from .store import filesystem_error, writable

METRICS = ["teacher_ca", "teacher_asr", "teacher_ra", "teacher_titg", "student_ca", "student_asr", "student_ra",
           "student_titg", "control_student_ca", "control_student_asr", "control_student_ra", "control_student_titg",
           "clean_teacher_asr"]
DISTILLATION_COLUMNS = [
    "dataset", "teacher_arch", "student_arch", "attack", "distiller", "seed", *METRICS,
    "teacher_seconds", "student_seconds", "device", "threads", "kdbench_version", "torch_version",
    "attack_plugin", "distiller_plugin", "spec_hash", "status", "error",
]
DETECTION_COLUMNS = [
    "dataset", "teacher_arch", "student_arch", "attack", "distiller", "seed", "defense", "family", "model",
    "auroc", "auprc", "auroc_effective", "auprc_effective", "score", "ca_after", "asr_after", "der",
    "defense_plugin", "spec_hash", "status", "error",
]


def frame(rows: list, columns: list) -> pd.DataFrame:
    table = pd.DataFrame(rows)
    for column in columns:
        if column not in table:
            table[column] = pd.NA
    extra = [c for c in table.columns if c not in columns]
    return table[columns + extra]


def write(out: Path, distillation: list, detection: list) -> tuple[Path, Path]:
    """Write ``distillation.csv``, ``detection.csv`` and their rendering ``leaderboard.md``."""
    out = Path(out)
    writable(out)
    paths = out / "distillation.csv", out / "detection.csv"
    tables = frame(distillation, DISTILLATION_COLUMNS), frame(detection, DETECTION_COLUMNS)
    for path, table in zip(paths, tables):
        _atomic(path, lambda tmp, table=table: table.to_csv(tmp, index=False, float_format="%.4f"))
    _atomic(out / "leaderboard.md", lambda tmp: Path(tmp).write_text(markdown(*tables)))
    return paths


def markdown(distillation: pd.DataFrame, detection: pd.DataFrame) -> str:
    """The leaderboard's main columns as Markdown tables."""
    parts = ["## Distillation\n", _markdown_table(distillation, KEYS + SHOWN + ["status"])]
    if len(detection):
        parts += ["\n## Detection\n", _markdown_table(detection, KEYS + ["defense", "family", "model", "auroc", "auprc",
                                                                         "score", "der", "status"])]
    return "\n".join(parts)


KEYS = ["dataset", "teacher_arch", "student_arch", "attack", "distiller", "seed"]
SHOWN = ["teacher_ca", "teacher_asr", "student_ca", "student_asr", "control_student_ca", "control_student_asr",
         "clean_teacher_asr"]


def _markdown_table(table: pd.DataFrame, columns: list) -> str:
    def cell(value):
        if isinstance(value, float):
            return "–" if pd.isna(value) else f"{value:.3f}"
        return "–" if value is None or value is pd.NA else str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row[c]) for c in columns) + " |" for _, row in table.iterrows()]
    return "\n".join(lines) + "\n"


def _atomic(path: Path, write_to):
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write_to(tmp)
        os.replace(tmp, path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise filesystem_error(error, path) from None
