"""The ``kdbench`` command line: run a suite, list plugins, list suites.

Torch, timm and scikit-learn are imported inside the commands that need them, so that
``kdbench --help``, ``--version`` and ``list`` answer at once.
"""
import time
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from . import __version__
from .errors import ConfigError
from .registry import BASELINE, load_registry, spec, split_list

registry_option = click.option("--registry", "registry_file", type=click.Path(dir_okay=False),
                               help="A registry YAML of your own, read on top of the default one.")


def _host(registry):
    from .plugins import PluginHost

    return PluginHost(registry.plugins)


@click.group()
@click.version_option(__version__, prog_name="kdbench")
def main():
    """kdbench: does a backdoor in a teacher survive distillation, and can a defender see it?"""


def _list_option(name, what):
    return click.option(f"--{name}", help=f"Comma-separated {what}, replacing the suite's (name or name(key=value,...)).")


@main.command()
@click.argument("suite_name", default="quick", metavar="[SUITE]")
@registry_option
@click.option("--dataset", help="The dataset, replacing the suite's (name or name(key=value,...)).")
@_list_option("teachers", "teacher architectures")
@_list_option("students", "student architectures")
@_list_option("attacks", "attacks")
@_list_option("distillers", "distillers")
@_list_option("defenses", "defenses ('' for none)")
@click.option("--seeds", help="Comma-separated integer seeds.")
@click.option("--epochs", type=click.IntRange(min=1), help="Teacher and student epochs.")
@click.option("--teacher-epochs", type=click.IntRange(min=1))
@click.option("--student-epochs", type=click.IntRange(min=1))
@click.option("--batch-size", type=click.IntRange(min=1))
@click.option("--device", default="auto", show_default=True, help="auto (CUDA where there is one), cpu, cuda, cuda:N.")
@click.option("--workdir", type=click.Path(file_okay=False), help="Artifact cache (default: $KDBENCH_WORKDIR or ~/.cache/kdbench).")
@click.option("--out", type=click.Path(file_okay=False), help="Leaderboard folder (default: leaderboards/<suite>).")
def run(suite_name, registry_file, dataset, teachers, students, attacks, distillers, defenses, seeds, epochs,
        teacher_epochs, student_epochs, batch_size, device, workdir, out):
    """Run SUITE (default: quick) and write its leaderboard CSVs."""
    from . import leaderboard
    from .progress import RichReporter, detection_table, distillation_table
    from .runner import Runner
    from .store import Store, default_workdir

    registry = load_registry(registry_file)
    suite = registry.suite(suite_name)
    axes = {name: [spec(item, f"--{name}") for item in split_list(value)] if value is not None else None
            for name, value in (("teachers", teachers), ("students", students), ("attacks", attacks),
                                ("distillers", distillers), ("defenses", defenses))}
    suite = suite.override(
        dataset=spec(dataset, "--dataset") if dataset else None, seeds=_seeds(seeds),
        teacher_epochs=teacher_epochs or epochs, student_epochs=student_epochs or epochs, batch_size=batch_size,
        **axes)
    console = Console(stderr=True)
    runner = Runner(_host(registry), suite, Store(Path(workdir) if workdir else default_workdir()), _device(device))
    out_dir = Path(out) if out else Path("leaderboards") / suite.leaderboard
    runner.load_data()
    console.print(f"[bold]kdbench {__version__}[/bold] suite [bold]{suite.name}[/bold] on {runner.device}: "
                  f"{_cells(suite)} cells → {out_dir}")
    started = time.perf_counter()
    with RichReporter(console) as reporter:
        runner.reporter = reporter
        distillation, detection = runner.run(on_rows=lambda a, b: leaderboard.write(out_dir, a, b))
    paths = leaderboard.write(out_dir, distillation, detection)
    output = Console(width=max(140, Console().width))
    output.print(distillation_table(distillation))
    if detection:
        output.print(detection_table(detection))
    failed = sum(row["status"] != "ok" for row in distillation + detection)
    console.print(f"wrote {paths[0]} and {paths[1]} in {time.perf_counter() - started:.1f} s"
                  + (f"; [red]{failed} failed[/red]" if failed else ""))
    if failed:
        raise SystemExit(1)


@main.command()
@registry_option
def plugins(registry_file):
    """List every registered component: kind, name, plugin, version and paper."""
    host = _host(load_registry(registry_file))
    table = Table(title="kdbench components")
    for column in ("kind", "name", "plugin", "version", "paper"):
        table.add_column(column, overflow="fold")
    for registration in host.all():
        table.add_row(registration.kind, registration.name, registration.plugin,
                      f"{registration.plugin_version} (v{registration.version})", registration.paper)
    Console(width=200).print(table)


@main.command("list")
@registry_option
def list_suites(registry_file):
    """Show the suites and what a run of each would compute."""
    registry = load_registry(registry_file)
    table = Table(title=f"suites in {registry.source}")
    for column in ("suite", "dataset", "teachers", "students", "attacks", "distillers", "defenses", "seeds",
                   "epochs (T/S)", "cells", "description"):
        table.add_column(column, overflow="fold")
    for suite in registry.suites.values():
        join = lambda specs: ", ".join(map(str, specs)) or "–"  # noqa: E731
        table.add_row(suite.name, str(suite.dataset), join(suite.teachers), join(suite.students),
                      join([spec(BASELINE, "")] + suite.attacks), join(suite.distillers), join(suite.defenses),
                      ", ".join(map(str, suite.seeds)),
                      f"{suite.budget['teacher_epochs']}/{suite.budget['student_epochs']}", str(_cells(suite)),
                      suite.description)
    Console(width=220).print(table)


def _cells(suite) -> int:
    attacks = 1 + sum(s.name != BASELINE for s in suite.attacks)
    return len(suite.seeds) * len(suite.teachers) * attacks * len(suite.distillers) * len(suite.students)


def _seeds(text):
    if text is None:
        return None
    try:
        return [int(s) for s in split_list(text)]
    except ValueError:
        raise ConfigError(f"--seeds must be comma-separated integers, got {text!r}") from None


def _device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device: unknown device {name!r} (auto, cpu, cuda, cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available here (use --device cpu)")
    return device
