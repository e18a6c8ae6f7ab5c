"""Leaderboard CSVs: long format, one pair per suite, written atomically after every job, with
their seeds aggregated (``summary.csv``) and rendered as Markdown."""
import os
from pathlib import Path

import pandas as pd

from .store import filesystem_error, writable
from .summary import DETECTION_GROUP, DISTILLATION_GROUP, DISTILLATION_METRICS, mean_std, summarize, wide

METRICS = DISTILLATION_METRICS
DISTILLATION_COLUMNS = [
    "dataset", "victim_dataset", "teacher_arch", "student_arch", "attack", "distiller", "seed", *METRICS,
    "teacher_seconds", "student_seconds", "device", "threads", "kdbench_version", "torch_version",
    "attack_plugin", "distiller_plugin", "spec_hash", "status", "error",
]
DETECTION_COLUMNS = [
    "dataset", "victim_dataset", "teacher_arch", "student_arch", "attack", "distiller", "seed", "defense", "family",
    "model", "auroc", "auprc", "auroc_effective", "auprc_effective", "score", "ca_after", "asr_after", "der",
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
    """Write ``distillation.csv``, ``detection.csv``, their seeds aggregated (``summary.csv``)
    and the Markdown rendering ``leaderboard.md``."""
    out = Path(out)
    writable(out)
    paths = out / "distillation.csv", out / "detection.csv"
    tables = frame(distillation, DISTILLATION_COLUMNS), frame(detection, DETECTION_COLUMNS)
    for path, table in zip(paths, tables):
        _atomic(path, lambda tmp, table=table: table.to_csv(tmp, index=False, float_format="%.4f"))
    write_summary(out)
    return paths


def read(out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The long tables as written (values rounded as in the CSVs)."""
    return tuple(pd.read_csv(Path(out) / name) for name in ("distillation.csv", "detection.csv"))


def write_summary(out: Path) -> pd.DataFrame:
    """``summary.csv`` and ``leaderboard.md`` from the long CSVs in ``out``, so that anyone
    aggregating the published CSVs finds the same numbers."""
    tables = read(out)
    summary = summarize(*tables)
    _atomic(out / "summary.csv", lambda tmp: summary.to_csv(tmp, index=False, float_format="%.6f"))
    atomic_text(out / "leaderboard.md", markdown(summary, *tables))
    return summary


def atomic_text(path: Path, text: str):
    """Write ``text`` to ``path`` whole or not at all."""
    _atomic(path, lambda tmp: Path(tmp).write_text(text))


# TITG beside each ASR: an ASR that comes with no gain is a model that answers the target on
# clean images too, not a trigger
SHOWN = ["teacher_ca", "teacher_asr", "teacher_titg", "student_ca", "student_asr", "student_titg", "control_student_ca",
         "control_student_asr", "clean_teacher_asr"]
DETECTION_SHOWN = ["auroc", "auprc", "score", "der"]


def markdown(summary: pd.DataFrame, distillation: pd.DataFrame, detection: pd.DataFrame) -> str:
    """The leaderboard's main columns as Markdown tables, each value ``mean ± std (n=seeds)``,
    and the failed rows with their errors."""
    parts = ["## Distillation (mean ± std over seeds)\n", _markdown_table(wide(summary, "distillation", SHOWN),
                                                                          DISTILLATION_GROUP, SHOWN)]
    if len(detection):
        parts += ["\n## Detection (mean ± std over seeds)\n",
                  _markdown_table(wide(summary, "detection", DETECTION_SHOWN), DETECTION_GROUP, DETECTION_SHOWN)]
    failed = failed_rows(distillation, detection)
    if len(failed):
        columns = [c for c in [*DETECTION_GROUP, "seed", "error"] if c in failed]
        lines = [_row(columns), "|" + "---|" * len(columns)]
        lines += [_row(_text(row[c]) for c in columns) for _, row in failed.iterrows()]
        parts += ["\n## Failed\n", "\n".join(lines) + "\n"]
    return "\n".join(parts)


def failed_rows(distillation: pd.DataFrame, detection: pd.DataFrame) -> pd.DataFrame:
    """The rows of both tables whose status is not ``ok``."""
    parts = [t[t["status"] != "ok"] for t in (distillation, detection) if len(t)]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def _markdown_table(table: pd.DataFrame, group: list, metrics: list) -> str:
    metrics = [m for m in metrics if m in table.columns.get_level_values(0)] if len(table) else []
    lines = [_row([*group, *metrics]), "|" + "---|" * (len(group) + len(metrics))]
    for keys, row in table.iterrows():
        cells = [_text(k) for k in keys] + [mean_std(row[m, "mean"], row[m, "std"], row[m, "n"]) for m in metrics]
        lines.append(_row(cells))
    return "\n".join(lines) + "\n"


def _row(cells) -> str:
    return "| " + " | ".join(cells) + " |"


def _text(value) -> str:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return "–"
    return str(value).replace("|", "\\|")


def _atomic(path: Path, write_to):
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write_to(tmp)
        os.replace(tmp, path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise filesystem_error(error, path) from None
