"""Rich progress bars and the summary tables the CLI shows."""
import math

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .stages import Reporter


class RichReporter(Reporter):
    """A bar for every stage being computed (its epochs), one line per finished stage (a stage
    loaded from the store, however often, once)."""

    def __init__(self, console: Console):
        self.console = console
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=console, transient=True)
        self.bars = {}
        self.shown = set()

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()

    def stage_started(self, stage, key, description, epochs):
        self.bars[key] = self.progress.add_task(description, total=epochs or None)

    def epoch_finished(self, key, epoch, metrics):
        if key in self.bars:
            self.progress.update(self.bars[key], completed=epoch + 1)

    def stage_finished(self, stage, key, description, seconds, cached):
        if key in self.bars:
            self.progress.remove_task(self.bars.pop(key))
        if stage != "evaluation" and key not in self.shown:
            how = "[dim]cached[/dim]" if cached else f"{seconds:.1f} s"
            self.console.print(f"  [green]✓[/green] {description} ({how})")
        self.shown.add(key)

    def message(self, text):
        self.console.print(f"  [yellow]![/yellow] {text}")


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


def plan_table(plan, store) -> Table:
    """Jobs per stage: in all, stored already, left to run, and their rough cost."""
    stored = plan.stored(store)
    table = Table(title=f"plan of suite {plan.suite.name}: {len(plan.cells)} distillation rows, "
                        f"{len(plan.detections)} detection rows")
    for column in ("stage", "jobs", "stored", "to run", "cost left (epochs × images)"):
        table.add_column(column, justify="left" if column == "stage" else "right")
    for stage in ("clean_teacher", "teacher", "students", "evaluation", "defense"):
        jobs = [job for job in plan.jobs.values() if job.stage == stage]
        left = [job for job in jobs if job.key not in stored]
        table.add_row(stage, str(len(jobs)), str(len(jobs) - len(left)), str(len(left)),
                      f"{sum(job.cost for job in left):,.0f}")
    return table
