"""The leaderboard's tables as HTML, with pandas' Styler: every value ``mean ± std (n)`` over
seeds, colour scales on ASR and AUROC from their means, headers that stay in view."""
import matplotlib
import pandas as pd

from ..leaderboard import SHOWN, failed_rows
from ..summary import DETECTION_GROUP, DISTILLATION_GROUP, mean_std, wide

LABELS = {"teacher_ca": "teacher CA", "teacher_asr": "teacher ASR", "teacher_titg": "teacher TITG",
          "student_ca": "student CA", "student_asr": "student ASR", "student_titg": "student TITG",
          "control_student_ca": "control CA", "control_student_asr": "control ASR",
          "clean_teacher_asr": "clean teacher ASR"}
DISTILLATION = {column: LABELS[column] for column in SHOWN}  # the Markdown's columns, in its order
DETECTION = {"auroc": "AUROC", "auprc": "AUPRC", "auroc_effective": "effective AUROC", "score": "score",
             "ca_after": "CA after", "asr_after": "ASR after", "der": "DER"}
SCALES = {"ASR": "Reds", "AUROC": "Blues"}


def distillation_table(summary: pd.DataFrame, table_id: str = "distillation") -> str:
    return _styled(wide(summary, "distillation", list(DISTILLATION)), DISTILLATION_GROUP, DISTILLATION, table_id)


def detection_table(summary: pd.DataFrame, table_id: str = "detection") -> str:
    return _styled(wide(summary, "detection", list(DETECTION)), DETECTION_GROUP, DETECTION, table_id)


def failed_table(distillation: pd.DataFrame, detection: pd.DataFrame) -> str:
    """The rows that failed, with their errors (empty when none did)."""
    failed = failed_rows(distillation, detection)
    if failed.empty:
        return ""
    columns = [c for c in [*DISTILLATION_GROUP, "seed", "defense", "model", "error"] if c in failed]
    shown = failed[columns].astype(object).where(failed[columns].notna(), "–")
    return shown.style.set_uuid("failed").hide(axis="index").to_html(table_attributes='class="board"')


def _styled(table: pd.DataFrame, group: list, names: dict, table_id: str) -> str:
    if table.empty:
        return ""
    metrics = [m for m in names if m in table.columns.get_level_values(0)]
    keys = table.index.to_frame(index=False).astype(object).fillna("–")
    varying = [c for c in group if keys[c].nunique() > 1 or c in ("attack", "distiller")]
    fixed = " · ".join(f"{c} {keys[c].iloc[0]}" for c in group if c not in varying and keys[c].iloc[0] != "–")
    cells = pd.DataFrame({names[m]: [mean_std(*values) for values in table[m][["mean", "std", "n"]].to_numpy()]
                          for m in metrics})
    shown = pd.concat([keys[varying].reset_index(drop=True), cells], axis=1)
    styler = shown.style.set_uuid(table_id).hide(axis="index").set_sticky(axis="columns").set_caption(fixed)
    styler = styler.set_properties(subset=varying, **{"text-align": "left", "white-space": "normal",
                                                      "min-width": "6em", "max-width": "18em",
                                                      "overflow-wrap": "anywhere"})
    for m in metrics:
        scale = next((cmap for word, cmap in SCALES.items() if word in names[m].split()), None)
        if scale is not None:
            colours = [_colour(scale, value) for value in table[m]["mean"].astype(float)]
            styler = styler.apply(lambda column, colours=colours: colours, subset=[names[m]])
    return styler.to_html(table_attributes='class="board"')


def _colour(scale: str, value: float) -> str:
    """CSS for a cell whose mean is ``value`` in [0, 1] on the colour map ``scale``; none for a gap."""
    if pd.isna(value):
        return ""
    red, green, blue, _ = matplotlib.colormaps[scale](min(max(value, 0.0), 1.0))
    text = "#000000" if 0.299 * red + 0.587 * green + 0.114 * blue > 0.55 else "#ffffff"
    return f"background-color: {matplotlib.colors.to_hex((red, green, blue))}; color: {text}"
