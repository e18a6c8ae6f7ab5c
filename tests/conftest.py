"""Shared fixtures: the quick suite's harness on digits, with its teachers trained once per session."""
import dataclasses

import pytest
import torch

from kdbench.data import stratified_split
from kdbench.plugins import PluginHost
from kdbench.registry import load_registry, spec
from kdbench.runner import Runner
from kdbench.store import Store
from kdbench.threat_model import ThreatModel

torch.set_num_threads(2)


@dataclasses.dataclass
class Bench:
    """A harness on the quick suite's dataset: the runner, the threat model's data views
    (seed 0), and the teacher architecture."""

    runner: Runner
    view: ThreatModel
    arch: object

    @property
    def data(self):
        return self.runner.data

    def resolve(self, kind: str, text: str):
        """A suite entry (``name`` or ``name(key=value)``) resolved to its registration and instance."""
        return self.runner._resolve(kind, spec(text, kind))

    def teacher(self, attack_text: str):
        """The backdoored teacher of an attack (cached in the session's store)."""
        clean = self.runner.clean_teacher(self.view, self.arch, 0)
        return self.runner.backdoored_teacher(self.view, self.arch, self.resolve("attack", attack_text), 0, clean)


@pytest.fixture(scope="session")
def host():
    return PluginHost(load_registry().plugins)


@pytest.fixture(scope="session")
def store(tmp_path_factory):
    return Store(tmp_path_factory.mktemp("kdbench-work"))


def make_bench(host, store, **overrides) -> Bench:
    suite = load_registry().suite("quick").override(**overrides)
    runner = Runner(host, suite, store, "cpu")
    data = runner.load_data()
    split = stratified_split(data.train_labels, suite.budget["attacker_fraction"], suite.budget["defender_fraction"], 0)
    return Bench(runner, ThreatModel(data, split, runner.device), runner.teachers[0])


@pytest.fixture(scope="session")
def bench(host, store) -> Bench:
    return make_bench(host, store)


@pytest.fixture(scope="session")
def clean_teacher(bench):
    return bench.runner.clean_teacher(bench.view, bench.arch, 0)


@pytest.fixture(scope="session")
def badnets_teacher(bench, clean_teacher):
    return bench.teacher("badnets")
