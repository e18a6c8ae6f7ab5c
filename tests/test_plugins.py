"""The plugin host: built-ins, third-party packages, validation of registrations."""
import dataclasses
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

import kdbench
from kdbench.plugins import PluginHost
from kdbench.registry import load_registry

PACKAGE = Path(__file__).parent / "plugin_package"


def test_builtins_register_every_kind(host):
    kinds = {r.kind for r in host.all()}
    assert kinds == {"dataset", "architecture", "attack", "distiller", "defense", "executor"}
    badnets = host.get("attack", "badnets")
    assert badnets.plugin == "kdbench_plugins.attacks.badnets"
    assert "Gu" in badnets.paper and badnets.plugin_version == kdbench.__version__


def test_timm_names_resolve_to_the_timm_architecture(host):
    registration, arch = host.create("architecture", "timm:resnet18", {"small_stem": False})
    assert registration.name == "timm" and arch.model == "resnet18" and arch.small_stem is False
    assert host.create("architecture", "mobilenetv2_100")[1].model == "mobilenetv2_100"


def _plugin_module(name, *classes, hook="register_attacks"):
    module = types.ModuleType(name)

    def register_all(register):
        for cls in classes:
            register(cls)

    setattr(module, hook, kdbench.hookimpl(register_all, specname=hook))
    sys.modules[name] = module
    return name


@dataclasses.dataclass
class _Twin(kdbench.PoisoningAttack):
    name = "badnets"
    paper = "a twin"


@dataclasses.dataclass
class _BadName(kdbench.PoisoningAttack):
    name = "Bad Name"
    paper = "x"


@dataclasses.dataclass
class _NoPaper(kdbench.PoisoningAttack):
    name = "no_paper"


class _NotADataclass(kdbench.PoisoningAttack):
    name = "plain"
    paper = "x"


@pytest.mark.parametrize("cls, message", [
    (_Twin, "registered twice: by kdbench_plugins.attacks.badnets and by"),
    (_BadName, "invalid attack name 'Bad Name'"),
    (_NoPaper, "does not cite its paper"),
    (_NotADataclass, "must be a @dataclass"),
])
def test_malformed_registrations_are_refused(cls, message):
    extra = _plugin_module(f"kdbench_test_{cls.__name__.lower()}", cls)
    with pytest.raises(kdbench.ConfigError, match=message.replace("(", r"\(")):
        PluginHost(load_registry().plugins + [extra], entry_points=False)


def test_a_registration_of_the_wrong_kind_is_refused():
    extra = _plugin_module("kdbench_test_wrong_kind", _Twin, hook="register_distillers")
    with pytest.raises(kdbench.ConfigError, match="not a kdbench.Distiller"):
        PluginHost(load_registry().plugins + [extra], entry_points=False)


def test_environment_allow_and_block_lists(monkeypatch):
    modules = load_registry().plugins
    monkeypatch.setenv("KDBENCH_BLOCK_PLUGINS", "kdbench_plugins.attacks.blended")
    assert "blended" not in PluginHost(modules).components["attack"]
    monkeypatch.delenv("KDBENCH_BLOCK_PLUGINS")
    monkeypatch.setenv("KDBENCH_PLUGINS", "kdbench_plugins.attacks.badnets,kdbench_plugins.datasets.digits")
    host = PluginHost(modules)
    assert set(host.components["attack"]) == {"badnets"} and set(host.components["distiller"]) == set()


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory):
    """The example package under tests/ installed (with its entry point) into a private folder."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(PACKAGE)], check=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")]))
    return env


def test_a_third_party_package_shows_in_kdbench_plugins(installed_plugin):
    result = subprocess.run(["kdbench", "plugins"], env=installed_plugin, capture_output=True, text=True, check=True)
    line = next(line for line in result.stdout.splitlines() if "corner_dot" in line)
    assert "kdbench-corner-dot" in line and "0.3.0" in line


def test_a_third_party_attack_runs_in_a_suite(installed_plugin, store, tmp_path):
    result = subprocess.run(
        ["kdbench", "run", "quick", "--epochs", "5", "--attacks", "corner_dot", "--defenses", "", "--device", "cpu",
         "--threads", "1", "--workdir", str(store.root), "--out", str(tmp_path)],
        env=installed_plugin, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    import pandas as pd

    rows = pd.read_csv(tmp_path / "distillation.csv").set_index("attack")
    assert rows.loc["corner_dot", "status"] == "ok"
    assert rows.loc["corner_dot", "teacher_asr"] >= 0.9
    assert rows.loc["corner_dot", "attack_plugin"] == "kdbench-corner-dot==0.3.0"


def test_lifecycle_hooks_reach_a_logger_plugin(bench, clean_teacher):
    """A logger is a plugin too: it hears every finished stage (here, a cached one)."""
    heard = []

    class Logger:
        @kdbench.hookimpl
        def stage_finished(self, stage, spec_hash, seconds, cached):
            heard.append((stage, spec_hash, cached))

    bench.runner.host.pm.register(Logger(), name="test-logger")
    try:
        again = bench.runner.clean_teacher(bench.view, bench.arch, 0)
    finally:
        bench.runner.host.pm.unregister(name="test-logger")
    assert heard == [("clean_teacher", again.key, True)] and again.key == clean_teacher.key
