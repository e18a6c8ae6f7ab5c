"""Cross-dataset distillation: the victim distils the released teacher on another dataset's
images (``victim_dataset``), labelled by that dataset where its classes are the teacher's, by
the teacher where they are not; evaluation stays on the attacker's test set."""
import pandas as pd
import torch
from click.testing import CliRunner

from conftest import SMALL, make_bench, table
from kdbench.cli import main
from kdbench.plugins import PluginHost
from kdbench.registry import load_registry, spec
from kdbench.training import predict
from kdbench_plugins.datasets.digits import Digits


def test_a_victim_dataset_distils_on_its_own_images_with_its_own_labels(host, store, clean_teacher):
    bench = make_bench(host, store, victim_dataset=spec("digits(test_fraction=0.5)", "victim"))
    images, labels, info = bench.runner.distillation_set(bench.view, clean_teacher)
    other = Digits(test_fraction=0.5).load(None)
    assert len(images) == 898 != len(bench.view.victim_images)  # 1,797 images less 899 held out; not the victim half
    assert torch.equal(images.cpu(), other.train_images) and torch.equal(labels.cpu(), other.train_labels)
    assert info.hflip is False and info.size == 16


def test_a_victim_dataset_of_other_classes_is_labelled_by_the_teacher(store, clean_teacher):
    host = PluginHost(load_registry().plugins + ["relabelled_digits"])
    bench = make_bench(host, store, victim_dataset=spec("letters", "victim"))
    images, labels, _ = bench.runner.distillation_set(bench.view, clean_teacher)
    assert torch.equal(labels, predict(clean_teacher.model, images))
    assert not torch.equal(labels.cpu(), Digits().load(None).train_labels)  # the teacher errs on a few


def test_a_cross_dataset_run_keeps_the_teachers_and_says_what_the_students_saw(small_quick, tmp_path):
    result = CliRunner().invoke(main, ["run", *SMALL, "--victim-dataset", "digits(test_fraction=0.5)", "--defenses", "",
                                       "--workdir", str(small_quick.workdir), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    crossed, same = table(tmp_path), table(small_quick.out)
    assert (crossed.victim_dataset == "digits(test_fraction=0.5)").all() and (crossed.dataset == "digits").all()
    assert (same.victim_dataset == "digits").all()
    pd.testing.assert_series_equal(crossed.teacher_asr, same.teacher_asr)  # the same teachers, from the store
    assert not set(crossed.spec_hash) & set(same.spec_hash)  # new students
    assert (crossed.student_ca > 0.5).all()


def test_a_victim_dataset_of_another_image_size_is_refused_in_one_line(small_quick, tmp_path):
    result = CliRunner().invoke(main, ["run", *SMALL, "--victim-dataset", "digits(size=20)",
                                       "--workdir", str(small_quick.workdir), "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "Error: victim_dataset digits(size=20) has 20-px images with 1 channel(s), the dataset digits 16-px "
        "images with 1: the teacher cannot read them"]
