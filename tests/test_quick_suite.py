"""The quick suite end to end: the bars of the foundation issue, caching, resuming, failures."""
import pandas as pd
import pytest
from click.testing import CliRunner

import kdbench
from kdbench.cli import main
from kdbench.leaderboard import METRICS
from kdbench.registry import load_registry
from kdbench.runner import Reporter, Runner
from kdbench.store import Store


class Recorder(Reporter):
    def __init__(self, interrupt_after=None):
        self.finished, self.interrupt_after = [], interrupt_after

    def stage_finished(self, stage, key, description, seconds, cached):
        self.finished.append((stage, key, cached))
        computed = sum(not cached for _, _, cached in self.finished)
        if self.interrupt_after is not None and computed >= self.interrupt_after:
            raise KeyboardInterrupt


@pytest.fixture(scope="module")
def quick(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("leaderboard")
    result = CliRunner().invoke(main, ["run", "--device", "cpu", "--workdir", str(store.root), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return pd.read_csv(out / "distillation.csv"), pd.read_csv(out / "detection.csv")


def test_quick_meets_the_foundation_bars(quick):
    distillation, detection = quick
    rows = distillation.set_index("attack")
    assert set(rows.index) == {"none", "badnets", "blended"} and (rows.status == "ok").all()
    clean_ca = rows.loc["none", "teacher_ca"]
    assert clean_ca >= 0.90
    for attack in ("badnets", "blended"):
        assert rows.loc[attack, "teacher_asr"] >= 0.90
        assert abs(rows.loc[attack, "teacher_ca"] - clean_ca) <= 0.05
        assert rows.loc[attack, "control_student_asr"] <= 0.15
    strip = detection.query("defense.str.startswith('strip') and attack == 'badnets' and model == 'teacher'")
    assert strip.auroc.iloc[0] >= 0.80
    assert set(detection.model) == {"teacher", "student"} and set(detection.family) == {"input"}


def test_values_are_fractions_and_rows_carry_provenance(quick):
    distillation, _ = quick
    fractions = distillation[[m for m in METRICS if not m.endswith("titg")]].stack().dropna()
    gains = distillation[[m for m in METRICS if m.endswith("titg")]].stack().dropna()
    assert ((fractions >= 0) & (fractions <= 1)).all() and ((gains >= -1) & (gains <= 1)).all()
    for column in ("teacher_seconds", "device", "kdbench_version", "torch_version", "spec_hash"):
        assert distillation[column].notna().all()


def test_a_second_run_recomputes_nothing(quick, host, store):
    recorder, cells = Recorder(), []

    class CellLogger:
        @kdbench.hookimpl
        def cell_finished(self, row):
            cells.append(row["attack"])

    host.pm.register(CellLogger(), name="test-cell-logger")
    try:
        distillation, _ = Runner(host, load_registry().suite("quick"), store, "cpu", recorder).run()
    finally:
        host.pm.unregister(name="test-cell-logger")
    assert all(cached for _, _, cached in recorder.finished)  # everything stored: nothing even loaded
    assert sorted(cells) == ["badnets", "blended", "none"]
    again = pd.DataFrame(distillation)[METRICS]
    pd.testing.assert_frame_equal(again.reset_index(drop=True), quick[0][METRICS], check_exact=False, atol=1e-4)


def test_a_killed_run_resumes_where_it_stopped(host, tmp_path):
    suite = load_registry().suite("quick").override(teacher_epochs=2, student_epochs=2, defenses=[])
    store = Store(tmp_path)
    interrupted = Recorder(interrupt_after=2)
    with pytest.raises(KeyboardInterrupt):
        Runner(host, suite, store, "cpu", interrupted).run()
    before = {key for _, key, cached in interrupted.finished if not cached}
    recorder = Recorder()
    rows, _ = Runner(host, suite, store, "cpu", recorder).run()
    assert len(before) == 2 and before <= {key for _, key, cached in recorder.finished if cached}
    assert not all(cached for _, _, cached in recorder.finished)
    assert len(rows) == 3 and all(row["status"] == "ok" for row in rows)


def test_a_failing_cell_is_recorded_and_the_others_finish(store, tmp_path):
    registry = tmp_path / "registry.yaml"
    registry.write_text("plugins: [failing_attack]\n")
    result = CliRunner().invoke(main, ["run", "--registry", str(registry), "--attacks", "always_fails,badnets",
                                       "--defenses", "", "--device", "cpu", "--workdir", str(store.root),
                                       "--out", str(tmp_path)])
    assert result.exit_code == 1
    rows = pd.read_csv(tmp_path / "distillation.csv").set_index("attack")
    assert rows.loc["always_fails", "status"] == "failed"
    assert "this attack always fails" in rows.loc["always_fails", "error"]
    assert (rows.loc[["none", "badnets"], "status"] == "ok").all()
