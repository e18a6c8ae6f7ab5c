"""Publishing a leaderboard folder: ``index.html`` rendered from its CSVs alone (no model is
loaded, nothing is recomputed), and ``leaderboards/index.html`` listing every folder."""
from pathlib import Path

import pandas as pd
import yaml

from .. import leaderboard
from ..registry import BASELINE
from ..store import writable
from . import figures, tables
from .gallery import gallery_html, write_gallery
from .about import About, read_about, write_about
from .page import BOARDS, PAGE

__all__ = ["render", "render_boards", "write_about", "read_about", "write_gallery", "About"]


def render(folder: Path) -> Path:
    """Write ``summary.csv``, ``leaderboard.md`` and ``index.html`` from the folder's long CSVs."""
    folder = Path(folder)
    summary = leaderboard.write_summary(folder)
    distillation, detection = leaderboard.read(folder)
    about = read_about(folder)
    html = PAGE.render(
        about=about, definition=_registry_entry(about), device=about.devices(distillation), cells=_cells(distillation),
        distillation_table=tables.distillation_table(summary), detection_table=tables.detection_table(summary),
        failed_table=tables.failed_table(distillation, detection),
        survival=figures.survival(summary), accuracy=figures.accuracy_against_asr(summary),
        transfer=figures.detection_transfer(summary), scores=figures.model_scores(detection), gallery=gallery_html(folder))
    path = folder / "index.html"
    leaderboard.atomic_text(path, html)
    return path


def render_boards(root: Path) -> Path:
    """``index.html`` in ``root`` listing every leaderboard folder under it, by name."""
    root = Path(root)
    writable(root)
    boards = []
    for folder in sorted(p.parent for p in root.glob("*/distillation.csv")):
        distillation, detection = leaderboard.read(folder)
        about = read_about(folder)
        boards.append(dict(folder=folder.name, suite=about.suite, description=about.description, date=about.date,
                           device=about.devices(distillation), cells=_cells(distillation), command=about.command,
                           headline=headline(distillation, detection)))
    path = root / "index.html"
    leaderboard.atomic_text(path, BOARDS.render(boards=boards))
    return path


def headline(distillation: pd.DataFrame, detection: pd.DataFrame) -> list[str]:
    """A few lines that say what a suite found, from the means over seeds."""
    ok = distillation[(distillation["status"] == "ok") & (distillation["attack"] != BASELINE)]
    lines = []
    if len(ok) and "teacher_asr" in ok:
        cells = ok.groupby(["attack", "distiller", "student_arch"])[["teacher_asr", "student_asr",
                                                                     "control_student_asr"]].mean()
        gap = (cells["student_asr"] - cells["control_student_asr"]).dropna()
        lines.append(f"teacher ASR {cells['teacher_asr'].mean():.2f} on average over {len(cells)} cells")
        if len(gap):
            attack, distiller, _ = gap.idxmax()
            lines.append(f"student − control ASR {figures.signed(gap.mean())} on average, most {figures.signed(gap.max())} "
                         f"({attack}, {distiller})")
    found = detection[(detection["status"] == "ok") & (detection["attack"] != BASELINE)] if len(detection) else detection
    if len(found) and found["auroc"].notna().any():
        auroc = found.groupby("model")["auroc"].mean()
        if {"teacher", "student"} <= set(auroc.index):
            lines.append(f"detection AUROC {auroc['teacher']:.2f} on teachers, {auroc['student']:.2f} on students "
                         f"(mean over {found['defense'].nunique()} defenses)")
    return lines


def _registry_entry(about: About) -> str:
    return yaml.safe_dump({"suites": {about.suite: about.definition}}, sort_keys=False) if about.definition else ""


def _cells(distillation: pd.DataFrame) -> str:
    ok = int((distillation["status"] == "ok").sum())
    seeds = distillation["seed"].nunique()
    return f"{ok} of {len(distillation)} rows ok, {seeds} seed{'s' if seeds != 1 else ''}"
