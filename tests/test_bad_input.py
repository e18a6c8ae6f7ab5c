"""Bad input stops with a one-line error naming the problem and exit code 2, never a traceback."""
import subprocess

import pytest
from click.testing import CliRunner

from kdbench.cli import main


def run(*args):
    return CliRunner().invoke(main, list(args))


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


@pytest.fixture
def registry(tmp_path):
    def write(text):
        path = tmp_path / "registry.yaml"
        path.write_text(text)
        return str(path)
    return write


def test_unknown_component_suggests_close_matches(tmp_path):
    line = one_line_error(run("run", "quick", "--attacks", "badnet", "--workdir", str(tmp_path)))
    assert "unknown attack 'badnet'" in line and "did you mean badnets" in line


def test_unknown_suite(tmp_path):
    assert "unknown suite 'quik'; did you mean quick" in one_line_error(run("run", "quik"))


def test_unknown_option_of_a_component(tmp_path):
    line = one_line_error(run("run", "--attacks", "badnets(patch=3)", "--workdir", str(tmp_path)))
    assert "badnets: unknown option patch" in line


def test_option_of_the_wrong_type(tmp_path):
    line = one_line_error(run("run", "--attacks", "badnets(patch_size=big)", "--workdir", str(tmp_path)))
    assert "patch_size must be int" in line


def test_optional_option_of_the_wrong_type(tmp_path):
    line = one_line_error(run("run", "--defenses", "cognitive_distillation(lr=fast)", "--workdir", str(tmp_path)))
    assert "lr must be float" in line


def test_poison_rate_outside_the_unit_interval(tmp_path):
    line = one_line_error(run("run", "--attacks", "blended(poison_rate=1.5)", "--workdir", str(tmp_path)))
    assert "poison_rate must be in [0.0, 1.0], got 1.5" in line


def test_trigger_larger_than_the_image(tmp_path):
    line = one_line_error(run("run", "--attacks", "badnets(patch_size=40)", "--workdir", str(tmp_path)))
    assert "does not fit a 16-px image" in line


def test_missing_dataset_root(tmp_path):
    line = one_line_error(run("run", "--dataset", f"cifar10(root={tmp_path / 'nowhere'})", "--workdir", str(tmp_path)))
    assert "no CIFAR-10 at" in line


@pytest.mark.parametrize("dataset, message", [("cifar100", "no CIFAR-100 at"), ("cinic10", "no CINIC-10 at"),
                                              ("gtsrb", "no GTSRB at"), ("imagenet50", "no ImageNet subset at")])
def test_missing_root_of_the_seeds_datasets(tmp_path, dataset, message):
    line = one_line_error(run("run", "--dataset", f"{dataset}(root={tmp_path / 'nowhere'})", "--workdir", str(tmp_path)))
    assert message in line and str(tmp_path / "nowhere") in line


def test_malformed_registry_yaml(registry):
    line = one_line_error(run("list", "--registry", registry("suites: [unclosed\n")))
    assert "is not valid YAML" in line


def test_registry_suite_missing_a_key(registry):
    line = one_line_error(run("list", "--registry", registry("suites:\n  mine:\n    dataset: digits\n    teachers: [small_cnn]\n")))
    assert "suite 'mine' is missing 'attacks'" in line


def test_registry_plugin_that_does_not_import(registry):
    line = one_line_error(run("plugins", "--registry", registry("plugins: [no_such_module_anywhere]\n")))
    assert "cannot import plugin module 'no_such_module_anywhere'" in line


def test_bad_budget_and_seeds(registry, tmp_path):
    text = "suites:\n  mine:\n    dataset: digits\n    teachers: [small_cnn]\n    attacks: [badnets]\n" \
           "    distillers: [kd]\n    budget: {teacher_epochs: 0}\n"
    assert "teacher_epochs must be a positive integer" in one_line_error(run("list", "--registry", registry(text)))
    text = text.replace("teacher_epochs: 0", "compile: yes please")
    assert "budget compile must be true or false, got 'yes please'" in one_line_error(
        run("list", "--registry", registry(text)))
    text = text.replace("compile: yes please", "device_data_fraction: 1.5")
    assert "budget device_data_fraction must be in [0, 1], got 1.5" in one_line_error(
        run("list", "--registry", registry(text)))
    assert "--seeds must be comma-separated integers" in one_line_error(run("run", "--seeds", "0,x"))


def test_errors_reach_the_shell_as_one_line_and_exit_code_2(tmp_path):
    result = subprocess.run(["kdbench", "run", "--attacks", "badnets,blendd", "--workdir", str(tmp_path)],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["Error: unknown attack 'blendd'; did you mean blended?"]
