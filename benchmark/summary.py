"""Seeds aggregated: mean, standard deviation and count over the seeds of each group.

``summary.csv`` is long: one row per (table, group, metric) with ``mean``, ``std`` (pandas'
sample standard deviation, ddof=1) and ``n`` (the seeds whose value is a number).  Only the
rows whose status is ``ok`` count; a metric no seed of a group measured is left out.
"""
import math

import pandas as pd

DISTILLATION_GROUP = ["dataset", "teacher_arch", "student_arch", "attack", "distiller"]
DETECTION_GROUP = DISTILLATION_GROUP + ["defense", "family", "model"]
DISTILLATION_METRICS = ["teacher_ca", "teacher_asr", "teacher_ra", "teacher_titg", "student_ca", "student_asr",
                        "student_ra", "student_titg", "control_student_ca", "control_student_asr",
                        "control_student_ra", "control_student_titg", "clean_teacher_asr"]
DETECTION_METRICS = ["auroc", "auprc", "auroc_effective", "auprc_effective", "score", "ca_after", "asr_after", "der"]
COLUMNS = ["table", *DETECTION_GROUP, "metric", "mean", "std", "n"]


def aggregate(table: pd.DataFrame, group: list, metrics: list) -> pd.DataFrame:
    """Mean, std and n of every metric over the seeds of each group, long format."""
    metrics = [m for m in metrics if m in table]
    ok = table[table["status"] == "ok"] if "status" in table else table
    if ok.empty or not metrics:
        return pd.DataFrame(columns=[*group, "metric", "mean", "std", "n"])
    values = ok[group].assign(**{m: pd.to_numeric(ok[m], errors="coerce").astype(float) for m in metrics})
    stats = values.groupby(group, sort=False, dropna=False)[metrics].agg(["mean", "std", "count"])
    stats.columns.names = ["metric", "statistic"]
    long = stats.stack("metric", future_stack=True).reset_index().rename(columns={"count": "n"})
    long = long[long["n"] > 0]
    return long[[*group, "metric", "mean", "std", "n"]].reset_index(drop=True)


def summarize(distillation: pd.DataFrame, detection: pd.DataFrame) -> pd.DataFrame:
    """``summary.csv``: both tables aggregated over seeds."""
    parts = [aggregate(distillation, DISTILLATION_GROUP, DISTILLATION_METRICS).assign(table="distillation"),
             aggregate(detection, DETECTION_GROUP, DETECTION_METRICS).assign(table="detection")]
    parts = [part for part in parts if len(part)]
    if not parts:
        return pd.DataFrame(columns=COLUMNS)
    summary = pd.concat(parts, ignore_index=True)
    for column in COLUMNS:
        if column not in summary:
            summary[column] = pd.NA
    return summary[COLUMNS].astype({"n": int})


def wide(summary: pd.DataFrame, table: str, metrics: list) -> pd.DataFrame:
    """One row per group of ``table`` and one ``(metric, statistic)`` column pair per metric."""
    group = DISTILLATION_GROUP if table == "distillation" else DETECTION_GROUP
    part = summary[summary["table"] == table]
    if part.empty:
        return pd.DataFrame()
    order = part[group].drop_duplicates()
    pivot = part.pivot_table(index=group, columns="metric", values=["mean", "std", "n"], dropna=False, sort=False,
                             aggfunc="first")
    pivot = pivot.swaplevel(axis=1)
    shown = [m for m in metrics if m in pivot.columns.get_level_values(0)]
    pivot = pivot[[(m, s) for m in shown for s in ("mean", "std", "n")]]
    return pivot.reindex(pd.MultiIndex.from_frame(order))


def mean_std(mean: float, std: float, n) -> str:
    """``0.934 ± 0.006 (n=3)``; one seed has no spread: ``0.934 (n=1)``; nothing measured: ``–``."""
    if n is None or pd.isna(n) or int(n) == 0 or pd.isna(mean):
        return "–"
    if int(n) == 1 or pd.isna(std) or math.isnan(std):
        return f"{mean:.3f} (n={int(n)})"
    return f"{mean:.3f} ± {std:.3f} (n={int(n)})"
