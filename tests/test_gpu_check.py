"""perf/gpu-check.sh at its tiny CPU size: every step runs and writes sane figures."""
import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("KDBENCH_CIFAR10", ROOT.parent / "shared" / "datasets" / "cifar10-jpg"))


def rows(path: Path) -> list[dict]:
    with path.open() as file:
        return list(csv.DictReader(file))


@pytest.mark.skipif(not (SHARED / "train.tar.gz").exists(), reason=f"no CIFAR-10 archives at {SHARED}")
def test_gpu_check_tiny_on_the_cpu(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "KDBENCH_CIFAR10": str(SHARED), "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(ROOT / "perf" / "gpu-check.sh"), "--device", "cpu", "--tiny"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert {"env.txt", "throughput.txt", "throughput.csv", "streaming.txt", "streaming.csv", "teacher.txt",
            "teacher.csv", "teacher-history.csv"} <= {p.name for p in tmp_path.iterdir()}

    throughput = rows(tmp_path / "throughput.csv")
    loops = [(row["loop"], int(row["batch"]), int(row["steps"])) for row in throughput]
    # the data paths alone; two models × (reference, kdbench at 128, kdbench at cifar10-paper's 512,
    # one step: as many images as one of 128 at least); the distillation pair
    assert loops == [("data: reference", 128, 1), ("data: kdbench", 128, 1)] + [
        ("reference (seeds' style)", 128, 1), ("kdbench", 128, 1), ("kdbench", 512, 1)] * 2 + [
        ("2 reference-style runs", 128, 1), ("kdbench lock-step", 128, 1)]
    for row in throughput:
        seconds, rate = float(row["seconds"]), float(row["images_per_s"])
        assert seconds > 0 and math.isfinite(rate) and rate > 0
        # images/s: the images of the timed steps (student images in distillation) over the seconds
        assert rate == pytest.approx(int(row["students"]) * int(row["steps"]) * int(row["batch"]) / seconds,
                                     rel=0.01, abs=0.1)
        assert row["peak_mib"] == ""  # accelerator memory is reported on CUDA only
    for group in (throughput[0:2], throughput[2:5], throughput[5:8], throughput[8:10]):
        reference = float(group[0]["images_per_s"])  # each ratio is against the reference of its group
        assert [float(row["ratio"]) for row in group] == pytest.approx(
            [float(row["images_per_s"]) / reference for row in group], abs=0.01)

    resident, streamed = rows(tmp_path / "streaming.csv")
    assert (resident["mode"], streamed["mode"]) == ("resident", "streamed")
    assert resident["images_on"] == streamed["images_on"] == "cpu"  # on the CPU the host is the device
    assert float(streamed["ratio"]) == pytest.approx(
        float(streamed["images_per_s"]) / float(resident["images_per_s"]), abs=0.001)
    assert float(resident["parameter_difference"]) == 0.0  # the same computation trains the same model

    summary, = rows(tmp_path / "teacher.csv")
    history = rows(tmp_path / "teacher-history.csv")
    assert summary["suite"] == "cifar10-paper" and summary["teacher"] == "small_cnn(width=8)"
    assert int(summary["epochs"]) == 3 and len(history) == 3
    assert int(summary["train_images"]) == 150  # the attacker half of 30 images × 10 classes
    assert 0.0 <= float(summary["clean_accuracy"]) <= 1.0
    assert summary["met"] == str(float(summary["clean_accuracy"]) >= float(summary["target"]))
    assert float(summary["images_per_s"]) == pytest.approx(3 * 150 / float(summary["seconds"]), rel=0.01)
    assert all(math.isfinite(float(row["loss"])) and 0.0 <= float(row["train_accuracy"]) <= 1.0 for row in history)
    assert float(history[-1]["loss"]) < float(history[0]["loss"])  # it trains
