"""The default registry: every suite names components that exist, and user registries add to it."""
import pytest

from kdbench.registry import BASELINE, load_registry, split_list, spec
from kdbench.runner import Runner

SUITES = sorted(load_registry().suites)


@pytest.mark.parametrize("name", SUITES)
def test_every_suite_resolves_all_its_components(host, store, name):
    suite = load_registry().suite(name)
    stages = Runner(host, suite, store, "cpu").stages  # resolves the dataset
    axes = {"architecture": suite.teachers + suite.students, "distiller": suite.distillers, "defense": suite.defenses,
            "attack": [attack for attack in suite.attacks if attack.name != BASELINE]}
    for kind, entries in axes.items():
        for entry in entries:
            assert stages.resolve(kind, str(entry)).registration.kind == kind


def test_a_user_registry_adds_suites_and_plugins(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("plugins: [failing_attack]\nsuites:\n  mine:\n    dataset: digits(size=12)\n"
                    "    teachers: [small_cnn]\n    attacks: [{name: badnets, patch_size: 2}]\n    distillers: [kd]\n")
    registry = load_registry(path)
    assert "quick" in registry.suites and registry.plugins[-1] == "failing_attack"
    suite = registry.suite("mine")
    assert suite.attacks[0].kwargs == {"patch_size": 2} and suite.students == suite.teachers
    assert suite.dataset.kwargs == {"size": 12} and suite.leaderboard == "mine" and suite.victim_dataset is None
    crossed = load_registry().suite("cinic10-victim")
    assert str(crossed.victim_dataset) == "cinic10" and crossed.definition()["victim_dataset"] == "cinic10"


def test_command_line_lists_keep_options_together():
    assert split_list("badnets(patch_size=4,margin=0),blended") == ["badnets(patch_size=4,margin=0)", "blended"]
    assert spec("blended(alpha=0.1)", "x").kwargs == {"alpha": 0.1}


def test_compile_is_no_part_of_the_cache_keys(host, store):
    """``compile: true`` computes the same function (only the rounding differs, as across devices
    and thread counts): its artifacts serve runs without it, and the other way round."""
    suite = load_registry().suite("quick")
    assert suite.budget["compile"] is False
    plain, compiled = (Runner(host, s, store, "cpu").stages for s in (suite, suite.override(compile=True)))
    assert compiled.budget["compile"] is True
    arch, kd = plain.resolve("architecture", "small_cnn"), plain.resolve("distiller", "kd")
    assert plain.clean_teacher_key(0, arch) == compiled.clean_teacher_key(0, arch)
    assert plain.student_key(0, "t", kd, arch) == compiled.student_key(0, "t", kd, arch)
    # nor is where the training images sit (on the device or streamed from host memory)
    streamed = Runner(host, suite.override(device_data_fraction=0.0), store, "cpu").stages
    assert plain.clean_teacher_key(0, arch) == streamed.clean_teacher_key(0, arch)
