"""The ``kdbench`` command line: run or plan a suite, list plugins and suites, verify a store.

Torch, timm and scikit-learn are imported inside the commands that need them, so that
``kdbench --help``, ``--version`` and ``list`` answer at once.  Every bad input, click's
own range and usage errors included, ends in one line and exit code 2.
"""
import contextlib
import os
import shlex
import signal
import sys
import time
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from . import __version__
from .errors import ConfigError
from .registry import BASELINE, load_registry, spec, split_list
from .store import writable

TENSORBOARD = "KDBENCH_TENSORBOARD"  # read by kdbench_plugins.loggers.tensorboard


class OneLineErrors:
    """Click's usage errors (a bad range, an unknown option or command) as one line, exit 2."""

    def make_context(self, *args, **kwargs):
        try:
            return super().make_context(*args, **kwargs)
        except click.UsageError as error:
            raise ConfigError(error.format_message()) from None

    def resolve_command(self, ctx, args):
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as error:
            raise ConfigError(error.format_message()) from None


class Command(OneLineErrors, click.Command):
    pass


class Group(OneLineErrors, click.Group):
    command_class = Command


registry_option = click.option("--registry", "registry_file", type=click.Path(dir_okay=False),
                               help="A registry YAML of your own, read on top of the default one.")


def _host(registry):
    from .plugins import PluginHost

    return PluginHost(registry.plugins)


@click.group(cls=Group)
@click.version_option(__version__, prog_name="kdbench")
def main():
    """kdbench: does a backdoor in a teacher survive distillation, and can a defender see it?"""


def _list_option(name, what):
    return click.option(f"--{name}", help=f"Comma-separated {what}, replacing the suite's (name or name(key=value,...)).")


def suite_options(command):
    """The options that choose and change the suite, shared by ``run`` and ``plan``."""
    options = [
        click.argument("suite_name", default="quick", metavar="[SUITE]"),
        registry_option,
        click.option("--dataset", help="The dataset, replacing the suite's (name or name(key=value,...))."),
        click.option("--victim-dataset", help="The dataset the victim distils on, replacing the suite's "
                                              "(default: the victim half of the dataset)."),
        _list_option("teachers", "teacher architectures"),
        _list_option("students", "student architectures"),
        _list_option("attacks", "attacks"),
        _list_option("distillers", "distillers"),
        _list_option("defenses", "defenses ('' for none)"),
        click.option("--seeds", help="Comma-separated integer seeds."),
        click.option("--epochs", type=click.IntRange(min=1), help="Teacher and student epochs."),
        click.option("--teacher-epochs", type=click.IntRange(min=1)),
        click.option("--student-epochs", type=click.IntRange(min=1)),
        click.option("--batch-size", type=click.IntRange(min=1)),
        click.option("--device", default="auto", show_default=True, help="auto (CUDA where there is one), cpu, cuda, cuda:N."),
        click.option("--workdir", type=click.Path(file_okay=False),
                     help="Artifact cache (default: $KDBENCH_WORKDIR or ~/.cache/kdbench)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _suite(registry, suite_name, dataset, victim_dataset, teachers, students, attacks, distillers, defenses, seeds,
           epochs, teacher_epochs, student_epochs, batch_size):
    axes = {name: [spec(item, f"--{name}") for item in split_list(value)] if value is not None else None
            for name, value in (("teachers", teachers), ("students", students), ("attacks", attacks),
                                ("distillers", distillers), ("defenses", defenses))}
    return registry.suite(suite_name).override(
        dataset=spec(dataset, "--dataset") if dataset else None,
        victim_dataset=spec(victim_dataset, "--victim-dataset") if victim_dataset else None, seeds=_seeds(seeds),
        teacher_epochs=teacher_epochs or epochs, student_epochs=student_epochs or epochs, batch_size=batch_size,
        **axes)


def _runner(options, executor=None, threads=0):
    from .runner import Runner
    from .store import Store, default_workdir, writable

    registry = load_registry(options.pop("registry_file"))
    device, workdir = options.pop("device"), options.pop("workdir")
    suite = _suite(registry, **options)
    root = Path(workdir) if workdir else default_workdir()
    writable(root)
    host = _host(registry)
    store = Store(root)
    if executor is not None:
        entry = spec(executor, "--executor")
        executor = host.create("executor", entry.name, entry.kwargs)[1]
    command = shlex.join(["kdbench", *sys.argv[1:]]) if _from_command_line() else ""
    return Runner(host, suite, store, _device(device), executor=executor, threads=threads, command=command)


@main.command()
@suite_options
@click.option("--out", type=click.Path(file_okay=False), help="Leaderboard folder (default: leaderboards/<suite>).")
@click.option("--executor", default=None, help="serial (default), local or ray, or name(key=value,...).")
@click.option("--workers", type=click.IntRange(min=1), help="local: this many worker processes on the run's device.")
@click.option("--devices", help="local: one worker per device, e.g. cuda:0,cuda:1.")
@click.option("--address", help="ray: the cluster's address (auto: the one this machine belongs to).")
@click.option("--threads", type=click.IntRange(min=1), help="Torch threads per worker (default: the cores shared evenly).")
@click.option("--dry-run", is_flag=True, help="Print the plan (jobs stored and left) and compute nothing.")
@click.option("--log", callback=lambda ctx, param, value: _check_log(value),
              help="tensorboard[=DIR]: TensorBoard logs of every trained stage "
                   "(default DIR: <workdir>/tensorboard; or set $KDBENCH_TENSORBOARD).")
def run(out, executor, workers, devices, address, threads, dry_run, log, **options):
    """Run SUITE (default: quick) and write its leaderboard."""
    from . import leaderboard
    from .progress import RichReporter, detection_table, distillation_table, plan_table
    from .publishing import render, write_about, write_gallery
    from .visibility import perceptual_metric

    executor = _executor(executor, workers, devices, address)
    console = Console(stderr=True)
    runner = _runner(options, executor, threads or 0)
    plan = runner.plan()
    if dry_run:
        Console(width=max(120, Console().width)).print(plan_table(plan, runner.store))
        return
    out_dir = Path(out) if out else Path("leaderboards") / runner.suite.leaderboard
    writable(out_dir)
    console.print(f"[bold]kdbench {__version__}[/bold] suite [bold]{runner.suite.name}[/bold] on {runner.stages.device}"
                  f" ({runner.executor.label()}): {len(plan.cells)} cells → {out_dir}")
    started, written = time.perf_counter(), [0]

    def write(distillation, detection):
        leaderboard.write(out_dir, distillation, detection)
        written[0] = len(distillation) + len(detection)

    with Interrupts() as stopped, RichReporter(console) as reporter, _logging(log, runner.store.root):
        runner.reporter = reporter
        runner.store.on_quarantine = reporter.message
        try:
            distillation, detection = runner.run(on_rows=write, plan=plan)
        except (KeyboardInterrupt, Terminated):
            code = 143 if stopped.signal == signal.SIGTERM else 130
            click.echo(f"interrupted: the {written[0]} finished rows are in {out_dir}; "
                       "run the same command again to resume", err=True)
            raise SystemExit(code) from None
    paths = leaderboard.write(out_dir, distillation, detection)
    write_about(out_dir, runner.suite, runner.stages.command)
    perceptual, missing = perceptual_metric()
    if missing:
        click.echo(f"triggers.csv without LPIPS: {missing}", err=True)
    write_gallery(out_dir, runner.stages, plan, perceptual)
    page = render(out_dir)
    output = Console(width=max(140, Console().width))
    output.print(distillation_table(distillation))
    if detection:
        output.print(detection_table(detection))
    failed = sum(row["status"] != "ok" for row in distillation + detection)
    console.print(f"wrote {paths[0]}, {paths[1]} and {page} in {time.perf_counter() - started:.1f} s"
                  + (f"; [red]{failed} failed[/red]" if failed else ""))
    if failed:
        raise SystemExit(1)


@main.command()
@suite_options
def plan(**options):
    """Show the jobs SUITE needs, how many are stored already and what is left, computing nothing."""
    from .progress import plan_table

    runner = _runner(options)
    Console(width=max(120, Console().width)).print(plan_table(runner.plan(), runner.store))


@main.command()
@click.argument("folder", type=click.Path(file_okay=False))
def report(folder):
    """Render FOLDER's summary.csv, leaderboard.md and index.html from its CSVs alone; a folder of
    leaderboard folders (leaderboards/) has each rendered and an index.html listing them."""
    from .publishing import render, render_boards

    folder = Path(folder)
    if (folder / "distillation.csv").is_file():
        click.echo(f"wrote {render(folder)}")
        return
    boards = sorted(p.parent for p in folder.glob("*/distillation.csv"))
    if not boards:
        raise ConfigError(f"no distillation.csv in {folder} nor in any folder inside it")
    for board in boards:
        click.echo(f"wrote {render(board)}")
    click.echo(f"wrote {render_boards(folder)}")


@main.command()
@click.argument("key")
@click.option("--workdir", type=click.Path(file_okay=False), help="The store (default: $KDBENCH_WORKDIR or ~/.cache/kdbench).")
@click.option("--export", "export_to", type=click.Path(dir_okay=False),
              help="Copy the artifact's safetensors here, with its SHA-256 in PATH.sha256.")
def show(key, workdir, export_to):
    """A stored artifact (KEY, or the start of it): stage, spec, inputs, timings, device and the
    command that reproduces it."""
    from .show import describe, export, find

    store = _existing_store(workdir)
    stage, key = find(store, key)
    click.echo(describe(store, stage, key))
    if export_to:
        click.echo(f"exported {export_to} (sha256 {export(store, stage, key, Path(export_to))})")


def _existing_store(workdir, on_quarantine=None):
    """The store at ``workdir`` (default: the user's), which must exist already."""
    from .store import Store, default_workdir

    root = Path(workdir) if workdir else default_workdir()
    if not root.is_dir():
        raise ConfigError(f"no work directory at {root}")
    return Store(root, on_quarantine=on_quarantine)


@main.command()
@click.option("--workdir", type=click.Path(file_okay=False), help="The store (default: $KDBENCH_WORKDIR or ~/.cache/kdbench).")
def verify(workdir):
    """Check every stored artifact against its checksum; move corrupt ones aside."""
    store = _existing_store(workdir, on_quarantine=click.echo)
    root = store.root
    checked = corrupt = 0
    for stage, key in list(store.artifacts()):
        checked += 1
        problem = store.check(stage, key)
        if problem:
            corrupt += 1
            store.quarantine(stage, key, problem)
    click.echo(f"{checked} artifacts checked in {root}: " + (f"{corrupt} corrupt, set aside in {root / 'quarantine'}"
                                                            if corrupt else "all whole"))
    if corrupt:
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
        dataset = str(suite.dataset) + (f" (victim: {suite.victim_dataset})" if suite.victim_dataset else "")
        table.add_row(suite.name, dataset, join(suite.teachers), join(suite.students),
                      join([spec(BASELINE, "")] + suite.attacks), join(suite.distillers), join(suite.defenses),
                      ", ".join(map(str, suite.seeds)),
                      f"{suite.budget['teacher_epochs']}/{suite.budget['student_epochs']}", str(_cells(suite)),
                      suite.description)
    Console(width=220).print(table)


def _cells(suite) -> int:
    attacks = 1 + sum(s.name != BASELINE for s in suite.attacks)
    return len(suite.seeds) * len(suite.teachers) * attacks * len(suite.distillers) * len(suite.students)


def _executor(executor, workers, devices, address) -> str | None:
    """The ``--executor`` spec with ``--workers``, ``--devices`` and ``--address`` folded in."""
    options = {"workers": workers, "devices": devices, "address": address}
    given = {k: v for k, v in options.items() if v is not None}
    if not given:
        return executor
    if executor is None:
        executor = "ray" if "address" in given else "local"
    entry = spec(executor, "--executor")
    merged = dict(entry.options, **given)
    return f"{entry.name}(" + ",".join(f"{k}={v}" for k, v in merged.items()) + ")"


def _check_log(log: str | None) -> str | None:
    """``--log`` names a logger that is installed: tensorboard or tensorboard=DIR."""
    if log is None:
        return None
    name = log.partition("=")[0]
    if name != "tensorboard":
        raise ConfigError(f"--log: unknown logger {name!r} (tensorboard or tensorboard=DIR)")
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise ConfigError("--log tensorboard needs the tensorboard package: pip install 'kdbench[tensorboard]'") from None
    return log


@contextlib.contextmanager
def _logging(log: str | None, workdir: Path):
    """``--log tensorboard[=DIR]``: the TensorBoard logger on for this run and its workers."""
    if log is None:
        yield
        return
    folder = log.partition("=")[2]
    folder = Path(folder) if folder else Path(workdir) / "tensorboard"
    writable(folder)
    previous = os.environ.get(TENSORBOARD)
    os.environ[TENSORBOARD] = str(folder)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(TENSORBOARD, None)
        else:
            os.environ[TENSORBOARD] = previous


class Terminated(BaseException):
    """SIGTERM, raised where the run is, like KeyboardInterrupt for SIGINT."""


class Interrupts:
    """SIGINT and SIGTERM stop the run where it is; ``signal`` says which one came."""

    def __enter__(self):
        self.signal = None
        self.previous = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
        signal.signal(signal.SIGINT, self._handle)
        signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, number, frame):
        self.signal = number
        raise KeyboardInterrupt if number == signal.SIGINT else Terminated

    def __exit__(self, *exc):
        for number, handler in self.previous.items():
            signal.signal(number, handler)


def _from_command_line() -> bool:
    """Whether this process is ``kdbench`` (or ``python -m kdbench``), not a program calling ``main``."""
    started = Path(sys.argv[0])
    return started.name == "kdbench" or started.resolve() == Path(__file__).with_name("__main__.py").resolve()


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
