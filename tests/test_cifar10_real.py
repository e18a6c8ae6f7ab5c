"""Real data: a subset of the actual CIFAR-10 (the shared JPEG copy), trained on the CPU."""
import os
from pathlib import Path

import pytest

from kdbench.metrics import attack_metrics, clean_accuracy
from kdbench.registry import spec

from conftest import make_bench

SHARED = Path(os.environ.get("KDBENCH_CIFAR10", Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cifar10-jpg"))


@pytest.mark.skipif(not (SHARED / "train.tar.gz").exists(), reason=f"no CIFAR-10 archives at {SHARED}")
def test_cifar10_subset_teacher_learns_and_badnets_implants(host, store):
    """3,000 training images, 8 epochs of a small CNN: about 0.45 clean accuracy, and a
    4×4 checkerboard patch on 10 % of the attacker half is learned (measured: CA 0.455, ASR
    1.000; at 15 epochs 0.505 and 0.998)."""
    bench = make_bench(host, store, dataset=spec(f"cifar10(root={SHARED},max_per_class=300,test_per_class=100)", "dataset"),
                       teachers=[spec("small_cnn(width=16)", "teachers")], teacher_epochs=8, batch_size=128)
    data = bench.data
    assert data.train_images.shape == (3000, 3, 32, 32) and len(data.test_images) == 1000
    assert data.info.class_names[:2] == ("airplane", "automobile")
    clean = bench.runner.clean_teacher(bench.view, bench.arch, 0)
    assert clean_accuracy(clean.model, data.test_images, data.test_labels) >= 0.30  # chance is 0.10
    badnets = bench.teacher("badnets(pattern=checkerboard,patch_size=4)")  # the white 3×3 default: ASR 0.21 here
    asr, _ = attack_metrics(badnets.model, data.test_images, data.test_labels,
                            badnets.backdoor["trigger"], badnets.backdoor["target"])
    assert asr >= 0.8
