"""Publishing: seeds aggregated, the HTML page, its figures."""
import numpy as np
import pandas as pd
import pytest

from kdbench import leaderboard

GROUP = dict(dataset="digits", teacher_arch="small_cnn", student_arch="small_cnn(width=16)", distiller="kd")


def three_seeds() -> tuple[list, list]:
    """Rows of two attacks × three seeds, one more seed that failed, and a detector on each model."""
    rng = np.random.default_rng(0)
    distillation, detection = [], []
    for attack in ("badnets", "blended"):
        for seed in range(3):
            distillation.append(dict(GROUP, attack=attack, seed=seed, status="ok", error="",
                                     teacher_ca=rng.uniform(0.9, 1), teacher_asr=rng.uniform(0.8, 1),
                                     student_ca=rng.uniform(0.9, 1), student_asr=rng.uniform(0, 1),
                                     control_student_asr=rng.uniform(0, 0.1)))
            for model in ("teacher", "student"):
                detection.append(dict(GROUP, attack=attack, seed=seed, defense="strip(n=8)", family="input",
                                      model=model, auroc=rng.uniform(0.4, 1), auprc=rng.uniform(0.4, 1), status="ok",
                                      error=""))
        distillation.append(dict(GROUP, attack=attack, seed=3, status="failed", error="diverged", teacher_ca=0.0))
    return distillation, detection


def test_summary_is_pandas_mean_std_and_count_over_seeds(tmp_path):
    distillation, detection = three_seeds()
    leaderboard.write(tmp_path, distillation, detection)
    summary = pd.read_csv(tmp_path / "summary.csv")
    for table, group in (("distillation", ["attack"]), ("detection", ["attack", "model"])):
        long = pd.read_csv(tmp_path / f"{table}.csv")
        long = long[long["status"] == "ok"]
        metrics = ["teacher_ca", "student_asr"] if table == "distillation" else ["auroc", "auprc"]
        expected = long.groupby(group)[metrics].agg(["mean", "std", "count"])
        ours = summary[summary["table"] == table]
        for keys, row in expected.iterrows():
            keys = keys if isinstance(keys, tuple) else (keys,)
            mine = ours[np.logical_and.reduce([ours[c] == k for c, k in zip(group, keys)])]
            for metric in metrics:
                found = mine[mine["metric"] == metric].iloc[0]
                assert found["mean"] == pytest.approx(row[metric, "mean"], abs=1e-6)
                assert found["std"] == pytest.approx(row[metric, "std"], abs=1e-6)
                assert found["n"] == row[metric, "count"] == 3
    # a metric no seed measured has no summary row
    assert not len(summary[summary["metric"] == "teacher_titg"])


def test_markdown_shows_mean_std_and_seeds(tmp_path):
    rows = [dict(GROUP, attack="badnets", seed=seed, status="ok", error="", student_asr=value)
            for seed, value in enumerate([0.9, 0.95, 1.0])]
    rows.append(dict(GROUP, attack="blended", seed=0, status="ok", error="", student_asr=0.25))
    rows.append(dict(GROUP, attack="blended", seed=1, status="failed", error="loss diverged at epoch 2"))
    leaderboard.write(tmp_path, rows, [])
    text = (tmp_path / "leaderboard.md").read_text()
    # 0.9, 0.95, 1.0: mean 0.95, sample std sqrt((0.05² + 0 + 0.05²) / 2) = 0.05
    assert "| 0.950 ± 0.050 (n=3) |" in text
    assert "| 0.250 (n=1) |" in text
    assert "loss diverged at epoch 2" in text.split("## Failed")[1]
