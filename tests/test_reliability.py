"""Reliability: kills and interrupts lose nothing, a corrupt artifact is set aside and
recomputed, a diverged job fails loudly, filesystem faults are one-line errors."""
import errno
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import ROW_KEYS, SMALL, SMALL_DEFENSE, table

from kdbench.cli import main
from kdbench.leaderboard import METRICS

COMMAND = [sys.executable, "-m", "kdbench", "run", *SMALL]


def start(workdir, out) -> subprocess.Popen:
    return subprocess.Popen(COMMAND + ["--workdir", str(workdir), "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_until(condition, timeout=300):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def training(workdir) -> bool:
    """Whether a stage is being computed: it holds a claim."""
    claims = Path(workdir) / "claims"
    return claims.is_dir() and any(not p.name.startswith(".") for p in claims.iterdir())


def same_metrics(out, reference):
    finished = table(out)
    assert not finished.duplicated(ROW_KEYS).any() and len(finished) == len(table(reference))
    pd.testing.assert_frame_equal(finished[ROW_KEYS + METRICS], table(reference)[ROW_KEYS + METRICS])


def test_sigkill_at_random_moments_of_training_loses_nothing(small_quick, tmp_path):
    moments = random.Random(0)
    for _ in range(5):
        process = start(tmp_path / "work", tmp_path / "out")
        wait_until(lambda: training(tmp_path / "work"))
        time.sleep(moments.uniform(0, 2))
        process.kill()
        process.wait()
    process = start(tmp_path / "work", tmp_path / "out")
    assert process.wait(timeout=600) == 0, process.stderr.read()
    same_metrics(tmp_path / "out", small_quick.out)


def rows_written(out) -> int:
    try:
        return len(pd.read_csv(Path(out) / "distillation.csv"))
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return 0


@pytest.mark.parametrize("number, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupt_writes_the_finished_rows_and_the_next_run_resumes(small_quick, tmp_path, number, code):
    process = start(tmp_path / "work", tmp_path / "out")
    wait_until(lambda: rows_written(tmp_path / "out") >= 1)
    process.send_signal(number)
    assert process.wait(timeout=120) == code
    lines = process.stderr.read().strip().splitlines()
    assert lines[-1].startswith("interrupted: the ") and "run the same command again to resume" in lines[-1]
    written = pd.read_csv(tmp_path / "out" / "distillation.csv")
    assert len(written) >= 1 and (written.status == "ok").all()
    resumed = start(tmp_path / "work", tmp_path / "out")
    assert resumed.wait(timeout=600) == 0
    assert "clean teacher small_cnn(width=16) (cached)" in resumed.stderr.read()
    same_metrics(tmp_path / "out", small_quick.out)


def flip_middle(path: Path, count: int = 4096):
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + count] = bytes(b ^ 0xFF for b in data[middle:middle + count])
    path.write_bytes(bytes(data))


def test_a_corrupt_teacher_is_set_aside_recomputed_and_reported_by_verify(small_quick, tmp_path):
    workdir = tmp_path / "work"
    shutil.copytree(small_quick.workdir, workdir)
    teacher = next(p for p in (workdir / "teacher").iterdir() if not p.name.startswith("."))
    flip_middle(teacher / "tensors.safetensors")
    # a defense not run yet: it loads the teacher, which would otherwise serve garbage
    result = CliRunner().invoke(main, ["run", *SMALL, "--defenses", "strip(n=1)", "--workdir", str(workdir),
                                       "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert f"corrupt artifact teacher/{teacher.name}" in result.output
    assert [p.name.split("-")[1] for p in (workdir / "quarantine").iterdir()] == [teacher.name]
    assert (teacher / "tensors.safetensors").exists()  # recomputed
    same_metrics(tmp_path / "out", small_quick.out)

    flip_middle(teacher / "tensors.safetensors")
    report = CliRunner().invoke(main, ["verify", "--workdir", str(workdir)])
    assert report.exit_code == 1
    assert f"corrupt artifact teacher/{teacher.name}" in report.output and "1 corrupt" in report.output
    assert CliRunner().invoke(main, ["verify", "--workdir", str(workdir)]).exit_code == 0


def test_a_student_whose_loss_turns_nan_fails_its_own_cells_only(small_quick, tmp_path):
    registry = tmp_path / "registry.yaml"
    registry.write_text("plugins: [nan_plugins]\n")
    result = CliRunner().invoke(main, ["run", *SMALL, "--registry", str(registry), "--distillers", "kd,kd_nan(at_step=5)",
                                       "--defenses", "", "--workdir", str(small_quick.workdir),
                                       "--out", str(tmp_path)])
    assert result.exit_code == 1, result.output
    rows = pd.read_csv(tmp_path / "distillation.csv")
    failed, ok = rows[rows.distiller == "kd_nan(at_step=5)"], rows[rows.distiller == "kd"]
    assert (failed.status == "failed").all() and (ok.status == "ok").all() and len(ok) == 2
    assert failed.error.str.contains(r"kd_nan\(at_step=5\) student small_cnn\(width=16\) of teacher [0-9a-f]{8}: "
                                     r"the loss became nan at epoch 1, step 5 of \d+").all()


def test_a_detector_with_non_finite_scores_fails_its_rows(small_quick, tmp_path):
    registry = tmp_path / "registry.yaml"
    registry.write_text("plugins: [nan_plugins]\n")
    result = CliRunner().invoke(main, ["run", *SMALL, "--registry", str(registry), "--defenses", f"nan_scores,{SMALL_DEFENSE}",
                                       "--workdir", str(small_quick.workdir), "--out", str(tmp_path)])
    assert result.exit_code == 1, result.output
    rows = pd.read_csv(tmp_path / "detection.csv")
    failed, ok = rows[rows.defense == "nan_scores"], rows[rows.defense == SMALL_DEFENSE]
    assert len(failed) == len(ok) == 2 and (failed.status == "failed").all() and (ok.status == "ok").all()
    assert failed.error.str.contains(r"defense nan_scores: \d+ of \d+ scores are not finite").all()


def one_line(result, *fragments):
    """Exit code 2, and the error is one line, the last: after the progress of what ran before."""
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error: ")]
    assert result.exit_code == 2 and errors == lines[-1:] and "Traceback" not in result.output, result.output
    assert all(fragment in lines[-1] for fragment in fragments), lines[-1]


def only_line(result, *fragments):
    """Exit code 2 and nothing printed but the one-line error."""
    one_line(result, *fragments)
    assert len([line for line in result.output.splitlines() if line.strip()]) == 1, result.output


def test_a_work_directory_that_cannot_be_created_is_one_line(tmp_path):
    only_line(CliRunner().invoke(main, ["run", *SMALL, "--workdir", "/sys/kdbench-work"]),
             "cannot write /sys/kdbench-work", "Operation not permitted")


def test_an_output_folder_that_cannot_be_written_is_one_line_before_anything_runs(tmp_path):
    only_line(CliRunner().invoke(main, ["run", *SMALL, "--workdir", str(tmp_path), "--out", "/sys/kernel"]),
             "cannot write /sys/kernel")
    assert not (tmp_path / "clean_teacher").exists()


def test_a_full_disk_is_one_line_and_keeps_what_was_stored(small_quick, tmp_path, monkeypatch):
    import safetensors.torch

    save = safetensors.torch.save_file
    calls = []

    def fills_the_disk(*args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return save(*args, **kwargs)

    monkeypatch.setattr(safetensors.torch, "save_file", fills_the_disk)
    result = CliRunner().invoke(main, ["run", *SMALL, "--workdir", str(tmp_path), "--out", str(tmp_path / "out")])
    one_line(result, "no space left on the device holding", str(tmp_path))
    assert len(list((tmp_path / "clean_teacher").iterdir())) == 1  # the first artifact stays


@pytest.mark.parametrize("args, fragment", [(["--epochs", "0"], "--epochs"), (["--epochs", "-3"], "--epochs"),
                                            (["--batch-size", "0"], "--batch-size"), (["--nope"], "--nope")])
def test_click_usage_errors_are_one_line(args, fragment):
    only_line(CliRunner().invoke(main, ["run", *args]), fragment)
