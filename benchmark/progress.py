"""Rich progress bars and the summary tables the CLI shows."""
import math

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .runner import Reporter


class RichReporter(Reporter):
    """One bar for the stage being computed (its epochs), one line per finished stage."""

    def __init__(self, console: Console):
        self.console = console
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=console, transient=True)
        self.task = None

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()

    def stage_started(self, stage, description, epochs):
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task(description, total=epochs or None)

    def epoch_finished(self, epoch, metrics):
        if self.task is not None:
            self.progress.update(self.task, completed=epoch + 1)

    def stage_finished(self, stage, description, seconds, cached):
        if self.task is not None:
            self.progress.remove_task(self.task)
            self.task = None
        if stage != "evaluation":
            how = "[dim]cached[/dim]" if cached else f"{seconds:.1f} s"
            self.console.print(f"  [green]✓[/green] {description} ({how})")


def _fraction(value) -> str:
    return "–" if value is None or isinstance(value, float) and math.isnan(value) else f"{value:.3f}"


def distillation_table(rows: list) -> Table:
    table = Table(title="distillation (fractions of the test set)")
    for column in ("attack", "distiller", "student", "teacher CA", "teacher ASR", "student CA", "student ASR",
                   "control ASR", "status"):
        table.add_column(column, justify="left" if column in ("attack", "distiller", "student", "status") else "right")
    for row in rows:
        table.add_row(row["attack"], row["distiller"], row["student_arch"],
                      *(_fraction(row.get(k)) for k in ("teacher_ca", "teacher_asr", "student_ca", "student_asr",
                                                        "control_student_asr")),
                      row["status"] if row["status"] == "ok" else f"[red]{row['error']}[/red]")
    return table


def detection_table(rows: list) -> Table:
    table = Table(title="detection")
    for column in ("defense", "family", "attack", "distiller", "student", "model", "AUROC", "AUPRC", "status"):
        table.add_column(column, justify="right" if column in ("AUROC", "AUPRC") else "left")
    for row in rows:
        table.add_row(row["defense"], row["family"], row["attack"], row["distiller"], row["student_arch"],
                      row["model"], _fraction(row.get("auroc")), _fraction(row.get("auprc")),
                      row["status"] if row["status"] == "ok" else f"[red]{row['error']}[/red]")
    return table
