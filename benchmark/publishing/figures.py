"""The leaderboard's figures, drawn with matplotlib from the seed-aggregated summary and the
long tables, each returned as an inline SVG string (byte-for-byte reproducible)."""
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ..registry import BASELINE  # noqa: E402

STYLE = {"svg.hashsalt": "kdbench", "svg.fonttype": "none", "font.size": 9, "axes.titlesize": 10,
         "figure.dpi": 100}
ROLES = (("teacher", "o"), ("student", "s"), ("control_student", "^"))


def svg(figure) -> str:
    """The figure as an ``<svg>`` element: no date, fixed ids, text kept as text."""
    buffer = io.StringIO()
    with plt.rc_context(STYLE):
        figure.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": "kdbench"})
    plt.close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg"):]


def means(summary: pd.DataFrame, table: str) -> pd.DataFrame:
    """One row per group of ``table`` with the mean of each metric as a column."""
    part = summary[summary["table"] == table].drop(columns="table")
    if part.empty:
        return pd.DataFrame()
    part = part.dropna(axis=1, how="all")
    keys = [c for c in part.columns if c not in ("metric", "mean", "std", "n")]
    return part.pivot_table(index=keys, columns="metric", values="mean", sort=False, dropna=False).reset_index()


def survival(summary: pd.DataFrame) -> list[tuple[str, str]]:
    """Per student architecture, the heatmap attack × distiller of the student's ASR minus its
    control's: how much of each backdoor a distillation method carries over."""
    rows = means(summary, "distillation")
    needed = {"student_asr", "control_student_asr"}
    if rows.empty or not needed <= set(rows.columns):
        return []
    rows = rows[rows["attack"] != BASELINE].assign(gap=lambda r: r["student_asr"] - r["control_student_asr"])
    figures = []
    for student, part in rows.groupby("student_arch", sort=True):
        grid = part.pivot_table(index="attack", columns="distiller", values="gap", aggfunc="mean", sort=False)
        with plt.rc_context(STYLE):
            figure, axes = plt.subplots(figsize=(1.2 + 0.75 * grid.shape[1], 0.9 + 0.38 * grid.shape[0]))
            image = axes.imshow(grid.to_numpy(dtype=float), cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
            _labels(axes, grid)
            for (i, j), value in np.ndenumerate(grid.to_numpy(dtype=float)):
                if np.isfinite(value):
                    axes.text(j, i, signed(value), ha="center", va="center", fontsize=8,
                              color="white" if abs(value) > 0.6 else "black")
            axes.set_title(f"student {student}: ASR − control ASR")
            figure.colorbar(image, ax=axes, fraction=0.04)
        figures.append((f"Survival, student {student}", svg(figure)))
    return figures


def detection_transfer(summary: pd.DataFrame) -> list[tuple[str, str]]:
    """Per attack, each detector's AUROC on the teacher against the student (mean ± std over seeds)."""
    part = summary[(summary["table"] == "detection") & (summary["metric"] == "auroc")
                   & summary["family"].isin(["input", "training-data", "model"])]
    part = part[part["attack"] != BASELINE]
    if part.empty:
        return []
    figures = []
    for attack, rows in part.groupby("attack", sort=False):
        defenses = list(dict.fromkeys(rows["defense"]))
        with plt.rc_context(STYLE):
            figure, axes = plt.subplots(figsize=(6.5, 0.8 + 0.42 * len(defenses)))
            y = np.arange(len(defenses))
            for offset, (model, colour) in zip((-0.2, 0.2), (("teacher", "#b2182b"), ("student", "#2166ac"))):
                found = rows[rows["model"] == model].groupby("defense")[["mean", "std"]].mean().reindex(defenses)
                axes.barh(y + offset, found["mean"], height=0.38, xerr=found["std"].fillna(0), color=colour,
                          label=model, error_kw={"elinewidth": 0.8})
            axes.axvline(0.5, color="grey", linestyle=":", linewidth=1)
            axes.set_yticks(y, [_short(d) for d in defenses])
            axes.invert_yaxis()
            axes.set_xlim(0, 1)
            axes.set_xlabel("detection AUROC (0.5: chance)")
            axes.set_title(f"{attack}: seen in the teacher, seen in the student?")
            axes.legend(loc="lower right", fontsize=8)
        figures.append((f"Detection AUROC, {attack}", svg(figure)))
    return figures


def accuracy_against_asr(summary: pd.DataFrame) -> list[tuple[str, str]]:
    """CA against ASR of the teachers, students and control students, one colour per attack."""
    rows = means(summary, "distillation")
    if rows.empty or "teacher_asr" not in rows:
        return []
    rows = rows[rows["attack"] != BASELINE]
    attacks = list(dict.fromkeys(rows["attack"]))
    colours = dict(zip(attacks, plt.get_cmap("tab20")(np.linspace(0, 1, max(len(attacks), 2)))))
    with plt.rc_context(STYLE):
        figure, axes = plt.subplots(figsize=(7, 4.6))
        for role, marker in ROLES:
            if f"{role}_ca" not in rows or f"{role}_asr" not in rows:
                continue
            for attack in attacks:
                points = rows[rows["attack"] == attack]
                axes.scatter(points[f"{role}_asr"], points[f"{role}_ca"], marker=marker, color=colours[attack],
                             edgecolor="black", linewidth=0.4, s=36)
        for role, marker in ROLES:
            axes.scatter([], [], marker=marker, color="white", edgecolor="black", label=role.replace("_", " "))
        for attack in attacks:
            axes.scatter([], [], marker="o", color=colours[attack], label=attack)
        axes.set_xlabel("attack success rate (ASR)")
        axes.set_ylabel("clean accuracy (CA)")
        axes.set_xlim(-0.03, 1.03)
        axes.set_title("CA against ASR: teachers, students and their controls")
        axes.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    return [("CA against ASR", svg(figure))]


def model_scores(detection: pd.DataFrame) -> list[tuple[str, str]]:
    """For model-level detectors, the score of every inspected model (one dot per seed), clean
    baseline first; Neural Cleanse's is the anomaly index."""
    rows = detection[(detection["family"] == "model") & (detection["status"] == "ok")]
    if rows.empty:
        return []
    figures = []
    for defense, part in rows.groupby("defense", sort=False):
        attacks = list(dict.fromkeys([BASELINE] * (BASELINE in set(part["attack"])) + list(part["attack"])))
        with plt.rc_context(STYLE):
            figure, axes = plt.subplots(figsize=(1.5 + 0.7 * len(attacks), 3.2))
            for offset, (model, colour) in zip((-0.15, 0.15), (("teacher", "#b2182b"), ("student", "#2166ac"))):
                points = part[part["model"] == model]
                x = np.array([attacks.index(a) for a in points["attack"]]) + offset
                axes.scatter(x, points["score"], color=colour, label=model, s=24, edgecolor="black", linewidth=0.4)
            axes.set_xticks(range(len(attacks)), attacks, rotation=30, ha="right")
            axes.set_ylabel("score")
            axes.set_title(f"{_short(defense)}: score per model")
            axes.legend(fontsize=8)
        figures.append((f"Model scores, {_short(defense)}", svg(figure)))
    return figures


def signed(value: float) -> str:
    """``+0.26``, ``-0.05``; a value that rounds to zero is ``+0.00`` whatever its sign."""
    return f"{round(value, 2) + 0.0:+.2f}"


def _labels(axes, grid: pd.DataFrame):
    axes.set_xticks(range(grid.shape[1]), grid.columns, rotation=30, ha="right")
    axes.set_yticks(range(grid.shape[0]), grid.index)


def _short(name: str) -> str:
    """A defense's name without its options, for axis labels."""
    return name.split("(")[0]
