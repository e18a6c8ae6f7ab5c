"""Shared fixtures: the quick suite's harness on digits, with its teachers trained once per session.

Under pytest-xdist the workers share one work directory: an artifact one of them computes
(a teacher, a student) the others load, and the claims keep two from computing it at once.
Each worker then trains with one torch thread, so that two of them share two cores.
"""
import dataclasses
import os
from pathlib import Path

import pandas as pd
import pytest
import torch

from kdbench.metrics import attack_metrics, clean_accuracy
from kdbench.plugins import PluginHost
from kdbench.registry import load_registry, spec
from kdbench.runner import Runner
from kdbench.stages import Stages
from kdbench.store import Store
from kdbench.threat_model import ThreatModel

WORKER = os.environ.get("PYTEST_XDIST_WORKER")
torch.set_num_threads(1 if WORKER else 2)

# The order in which the files start, each xdist worker taking the next one as it finishes one:
# the long ones first, so that the workers finish close together (seconds under xdist at one
# thread, in one run: SCAR 135, ISSBA 97, execution 79, quick suite 81, distillation-aware 58,
# reliability 58, defenses a 60, DFST 30, defenses b 31, and so on; a run to run spread of
# about 10 %).  The poisoning family (61 s), which trains the narrow clean teacher, starts beside
# SCAR, which trains the suite's, so that no worker waits at the start for the other's.  The
# files not named follow in their order.
START_ORDER = ["test_attacks_scar.py", "test_attacks_poisoning.py", "test_attacks_issba.py", "test_execution.py",
               "test_quick_suite.py", "test_attacks_distillation_aware.py", "test_reliability.py",
               "test_defenses_a.py", "test_attacks_dfst.py", "test_defenses_b.py", "test_architectures.py",
               "test_gpu_check.py", "test_cifar10_real.py", "test_backweak_options.py", "test_plugins.py",
               "test_distillers.py", "test_publishing_run.py"]


def pytest_collection_modifyitems(items):
    position = {name: index for index, name in enumerate(START_ORDER)}
    items.sort(key=lambda item: position.get(item.path.name, len(START_ORDER)))  # stable within a file


def shared(tmp_path_factory, name: str) -> Path:
    """A folder of this test run that every xdist worker sees (the session's own without xdist)."""
    root = tmp_path_factory.getbasetemp()
    folder = (root.parent if WORKER else root) / name
    folder.mkdir(exist_ok=True)
    return folder


@dataclasses.dataclass
class Bench:
    """A harness on the quick suite's dataset: its stages (``runner``), the threat model's
    data views (seed 0), and the teacher architecture."""

    runner: Stages
    view: ThreatModel
    arch: object

    @property
    def data(self):
        return self.runner.data

    def resolve(self, kind: str, text: str):
        """A suite entry (``name`` or ``name(key=value)``) resolved to its registration and instance."""
        return self.runner.resolve(kind, text)

    def clean_teacher(self):
        """The clean teacher of seed 0 (cached in the session's store)."""
        return self.runner.clean_teacher(self.view, self.arch, 0)

    def teacher(self, attack_text: str):
        """The backdoored teacher of an attack (cached in the session's store)."""
        return self.runner.backdoored_teacher(self.view, self.arch, self.resolve("attack", attack_text), 0,
                                              self.clean_teacher())


@pytest.fixture(scope="session")
def host():
    return PluginHost(load_registry().plugins)


@pytest.fixture(scope="session")
def store(tmp_path_factory):
    return Store(shared(tmp_path_factory, "kdbench-work"))


def make_bench(host, store, **overrides) -> Bench:
    suite = load_registry().suite("quick").override(**overrides)
    runner = Runner(host, suite, store, "cpu")
    runner.load_data()
    stages = runner.stages
    return Bench(stages, stages.view(0), stages.resolve("architecture", str(suite.teachers[0])))


@pytest.fixture(scope="session")
def bench(host, store) -> Bench:
    return make_bench(host, store)


@pytest.fixture(scope="session")
def clean_teacher(bench):
    return bench.clean_teacher()


@pytest.fixture(scope="session")
def badnets_teacher(bench, clean_teacher):
    return bench.teacher("badnets")


@pytest.fixture(scope="session")
def narrow_bench(host, store) -> Bench:
    """The quick suite with its student architecture, small_cnn(width=16), as the teacher too:
    a third of the suite teacher's training time, for the claims measured on it (a file takes
    it as its ``bench`` from narrow.py, a single test names it)."""
    return make_bench(host, store, teachers=[spec("small_cnn(width=16)", "architecture")])


def asr(bench, model, teacher) -> float:
    """The attack success rate of ``model`` on the bench's test split under a teacher's trigger."""
    backdoor = teacher.backdoor
    return attack_metrics(model, bench.data.test_images, bench.data.test_labels,
                          backdoor["trigger"], backdoor["target"])[0]


def accuracy(bench, model) -> float:
    """The clean accuracy of ``model`` on the bench's test split."""
    return clean_accuracy(model, bench.data.test_images, bench.data.test_labels)


# ---------------------------------------------------------------- command-line runs of a small quick

SMALL_DEFENSE = "strip(n=2)"  # two overlays: a detection row per model at a quarter of strip(n=8)'s forward passes
# one attack and the student's architecture as the teacher: the clean row and a backdoored one
# are all that kills, interrupts, executors and concurrent runs need, and a process that trains
# them spends 2 to 3 s less than with the suite's teacher
SMALL = ["quick", "--epochs", "3", "--teachers", "small_cnn(width=16)", "--attacks", "badnets", "--defenses",
         SMALL_DEFENSE, "--device", "cpu", "--threads", "1"]
ROW_KEYS = ["attack", "distiller", "student_arch", "seed"]


def table(out) -> pd.DataFrame:
    """A leaderboard's distillation.csv, rows in a fixed order."""
    return pd.read_csv(Path(out) / "distillation.csv").sort_values(ROW_KEYS).reset_index(drop=True)


@dataclasses.dataclass
class Finished:
    workdir: Path
    out: Path


@pytest.fixture(scope="session")
def small_quick(tmp_path_factory) -> Finished:
    """The quick suite at 3 epochs with badnets alone on the narrow teacher, one thread, serial,
    uninterrupted: the reference table."""
    from click.testing import CliRunner

    from kdbench.cli import main

    finished = Finished(shared(tmp_path_factory, "small-work"), tmp_path_factory.mktemp("small-out"))
    result = CliRunner().invoke(main, ["run", *SMALL, "--workdir", str(finished.workdir), "--out", str(finished.out)])
    assert result.exit_code == 0, result.output
    return finished
