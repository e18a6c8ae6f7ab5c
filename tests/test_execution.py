"""Planning and executors: the plan computes nothing; serial, local and Ray runs give the same
table; two runs on one work directory compute each artifact once; a Ray worker killed in the
middle of a job is retried."""
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import ROW_KEYS as KEYS
from conftest import SMALL, table

from kdbench.cli import main
from kdbench.leaderboard import METRICS
from kdbench.registry import load_registry
from kdbench.runner import Runner
from kdbench.store import Store

TESTS = Path(__file__).parent


def run(*args, workdir, out=None):
    command = ["run", *args, "--workdir", str(workdir)] + (["--out", str(out)] if out else [])
    return CliRunner().invoke(main, command)


def detections(out) -> pd.DataFrame:
    return pd.read_csv(Path(out) / "detection.csv").sort_values(KEYS + ["defense", "model"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def serial(small_quick):
    return small_quick.out


def test_plan_shows_the_jobs_and_computes_nothing(tmp_path):
    result = CliRunner().invoke(main, ["plan", *SMALL[:-2], "--workdir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    lines = {line.split("│")[1].strip(): [cell.strip() for cell in line.split("│")[2:-1]]
             for line in result.output.splitlines() if line.count("│") == 6}
    # quick with badnets alone: the clean teacher, the backdoored one, a student group of each,
    # strip on the backdoored teacher and on its student
    assert lines["clean_teacher"][:3] == ["1", "0", "1"] and lines["teacher"][:3] == ["1", "0", "1"]
    assert lines["students"][:3] == ["2", "0", "2"] and lines["defense"][:3] == ["2", "0", "2"]
    assert not any((tmp_path / stage).exists() for stage in ("clean_teacher", "teacher", "student"))


def test_the_plan_is_plain_data_in_dependency_order(host, tmp_path):
    plan = Runner(host, load_registry().suite("quick-methods"), Store(tmp_path), "cpu").plan()
    again = pickle.loads(pickle.dumps(plan))
    assert again.jobs == plan.jobs and again.cells == plan.cells and again.detections == plan.detections
    stored = set()
    for job in plan.jobs.values():
        assert set(job.inputs) <= stored, job.description  # every input is stored by an earlier job
        stored |= {key for _, key in job.outputs}
    # 3 attacks and the baseline: 4 teachers, each with one group of 11 distillers' students
    groups = [job for job in plan.jobs.values() if job.stage == "students"]
    assert len(groups) == 4 and all(len(job.outputs) == 11 for job in groups)
    assert len(plan.cells) == 44 and len({cell["student"] for cell in plan.cells}) == 44


def test_a_dry_run_after_a_run_finds_everything_stored(small_quick):
    result = run(*SMALL, "--dry-run", workdir=small_quick.workdir)
    assert result.exit_code == 0, result.output
    assert all(line.split("│")[4].strip() == "0" for line in result.output.splitlines() if line.count("│") == 6
               and line.split("│")[1].strip() in ("clean_teacher", "teacher", "students", "evaluation", "defense"))


@pytest.fixture(scope="module")
def ray_cluster():
    """A real local Ray cluster of two CPUs whose workers can import this folder's plugins."""
    ray = pytest.importorskip("ray")
    previous = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), previous]))
    ray.init(num_cpus=2, logging_level="ERROR", log_to_driver=False)
    yield ray
    ray.shutdown()
    if previous is None:
        del os.environ["PYTHONPATH"]
    else:
        os.environ["PYTHONPATH"] = previous


@pytest.mark.parametrize("executor", ["local(workers=2)", "ray"])
def test_every_executor_gives_the_serial_table(serial, tmp_path, executor, request):
    if executor == "ray":
        request.getfixturevalue("ray_cluster")
    result = run(*SMALL, "--executor", executor, workdir=tmp_path / "work", out=tmp_path / "out")
    assert result.exit_code == 0, result.output
    pd.testing.assert_frame_equal(table(tmp_path / "out")[KEYS + METRICS], table(serial)[KEYS + METRICS])
    pd.testing.assert_frame_equal(detections(tmp_path / "out")[["auroc", "auroc_effective"]],
                                  detections(serial)[["auroc", "auroc_effective"]])


def test_two_runs_at_once_compute_every_artifact_once(serial, tmp_path):
    command = [sys.executable, "-m", "kdbench", "run", *SMALL, "--workdir", str(tmp_path / "work")]
    runs = [subprocess.Popen(command + ["--out", str(tmp_path / f"out{i}")], stderr=subprocess.PIPE,
                             stdout=subprocess.DEVNULL, text=True) for i in range(2)]
    outputs = [process.communicate(timeout=600)[1] for process in runs]
    assert [process.returncode for process in runs] == [0, 0], outputs
    computed = sum(line.strip().startswith("✓") and "(cached)" not in line for text in outputs
                   for line in text.splitlines())
    stored = sum(1 for stage in ("clean_teacher", "teacher", "student", "defense")  # one line each when computed
                 for entry in (tmp_path / "work" / stage).iterdir() if not entry.name.startswith("."))
    assert computed == stored
    for i in range(2):
        pd.testing.assert_frame_equal(table(tmp_path / f"out{i}")[KEYS + METRICS], table(serial)[KEYS + METRICS])


def test_a_ray_worker_killed_in_the_middle_of_a_job_is_retried(serial, ray_cluster, tmp_path):
    """``kd_dies_once`` is kd whose worker process kills itself at its first step; its student,
    trained in lock-step with kd's from the same initialisation, must equal kd's once retried."""
    registry = tmp_path / "registry.yaml"
    registry.write_text("plugins: [dying_distiller]\n")
    dying = f"kd_dies_once(marker={tmp_path / 'died'})"
    result = run(*SMALL, "--registry", str(registry), "--distillers", f"kd,{dying}", "--defenses", "",
                 "--executor", "ray", workdir=tmp_path / "work", out=tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "died").exists()
    rows = table(tmp_path / "out")
    assert (rows.status == "ok").all()
    kd, dying = (rows[rows.distiller == name].reset_index(drop=True) for name in ("kd", dying))
    pd.testing.assert_frame_equal(kd[METRICS], dying[METRICS])
    pd.testing.assert_frame_equal(kd[METRICS], table(serial)[METRICS])


def test_the_default_executor_never_imports_ray(small_quick, tmp_path):
    script = ("import sys; from click.testing import CliRunner; from kdbench.cli import main; "
              f"result = CliRunner().invoke(main, {['run', *SMALL, '--workdir', str(small_quick.workdir), '--out', str(tmp_path)]!r}); "
              "print(result.exit_code, 'ray' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["0", "False"], done.stdout + done.stderr
