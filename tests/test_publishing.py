"""Publishing: seeds aggregated, the HTML page, its figures."""
import math

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


def test_markdown_and_page_show_each_asr_beside_its_target_gain(tmp_path):
    """A teacher with ASR 0.42 and TITG 0.00 answers the target for clean images as often:
    both tables put the gain next to the rate, so the reader sees it."""
    from kdbench.publishing import render

    rows = [dict(GROUP, attack="adba", seed=0, status="ok", error="", teacher_ca=0.39, teacher_asr=0.42,
                 teacher_titg=0.0, student_ca=0.39, student_asr=0.38, student_titg=0.0)]
    leaderboard.write(tmp_path, rows, [])
    text = (tmp_path / "leaderboard.md").read_text()
    assert "| teacher_asr | teacher_titg | student_ca | student_asr | student_titg |" in text
    assert "| 0.420 (n=1) | 0.000 (n=1) | 0.390 (n=1) | 0.380 (n=1) | 0.000 (n=1) |" in text
    header = render(tmp_path).read_text().split('id="distillation"')[1].split("</thead>")[0]
    names = ["teacher ASR", "teacher TITG", "student CA", "student ASR", "student TITG"]
    assert all(name in header for name in names)
    assert [header.index(name) for name in names] == sorted(header.index(name) for name in names)


def write_board(folder, seeds=3):
    distillation, detection = three_seeds()
    detection += [dict(GROUP, attack=attack, seed=seed, defense="neural_cleanse", family="model", model=model,
                       score=1.0 + seed + (attack != "none"), auroc=1.0, auprc=1.0, status="ok", error="")
                  for attack in ("none", "badnets") for seed in range(seeds) for model in ("teacher", "student")]
    distillation += [dict(GROUP, attack="none", seed=seed, status="ok", error="", teacher_ca=0.99, student_ca=0.98)
                     for seed in range(seeds)]
    leaderboard.write(folder, distillation, detection)


def test_report_renders_every_table_and_figure_from_the_csvs_alone(tmp_path):
    from click.testing import CliRunner

    from kdbench.cli import main

    write_board(tmp_path / "board")
    first = CliRunner().invoke(main, ["report", str(tmp_path / "board")])
    assert first.exit_code == 0, first.output
    page = (tmp_path / "board" / "index.html").read_text()
    assert [part.split('"')[0] for part in page.split('<table id="T_')[1:]] == ["distillation", "detection", "failed"]
    assert "diverged" in page.split('id="failed"')[1]
    # survival (one student), CA against ASR, detection AUROC per attack (2), Neural Cleanse's scores
    assert page.count("<svg") == 5
    assert not any(fetch in page for fetch in ('src="http', 'href="http', "url(http", "<link", "@import"))
    assert "<script" not in page
    # the same page again, in another folder holding only the long CSVs
    (tmp_path / "copy").mkdir()
    for name in ("distillation.csv", "detection.csv"):
        (tmp_path / "copy" / name).write_bytes((tmp_path / "board" / name).read_bytes())
    CliRunner().invoke(main, ["report", str(tmp_path / "copy")])
    assert (tmp_path / "copy" / "index.html").read_text() == page.replace("kdbench · board", "kdbench · copy")
    assert (tmp_path / "copy" / "summary.csv").read_bytes() == (tmp_path / "board" / "summary.csv").read_bytes()


def test_report_of_a_folder_of_boards_lists_them(tmp_path):
    from click.testing import CliRunner

    from kdbench.cli import main

    for name in ("quick-attacks", "mine"):
        write_board(tmp_path / name)
    result = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert result.exit_code == 0, result.output
    listing = (tmp_path / "index.html").read_text()
    assert listing.index('href="mine/index.html"') < listing.index('href="quick-attacks/index.html"')
    assert "Every attack against kd on digits" in listing  # quick-attacks described by the registry's suite
    assert "kdbench run quick-attacks" in listing
    assert (tmp_path / "mine" / "index.html").exists()


def test_report_without_csvs_is_one_line_exit_2(tmp_path):
    from click.testing import CliRunner

    from kdbench.cli import main

    result = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0 and "no distillation.csv" in result.output


def test_visibility_of_a_patch_against_hand_computed_values():
    import math

    import torch

    from kdbench.visibility import visibility

    clean = torch.full((2, 1, 16, 16), 0.5)
    triggered = clean.clone()
    triggered[0, :, :2, :2] = 1.0  # four pixels moved by 0.5 on the first image; the second unchanged
    found = visibility(clean, triggered)
    assert found["changed"] == 0.5 and found["images"] == 2
    assert found["linf"] == pytest.approx((0.5 + 0) / 2)
    assert found["l2"] == pytest.approx((math.sqrt(4 * 0.25) + 0) / 2)
    assert found["psnr"] == pytest.approx(10 * math.log10(1 / (4 * 0.25 / 256)))  # over the changed image only
    assert 0.5 < found["ssim"] < 1


@pytest.mark.parametrize("arguments, message", [
    (["run", "--log", "wandb"], "--log: unknown logger 'wandb'"),
    (["show", "abc", "--workdir", "/nonexistent/kdbench"], "no work directory at /nonexistent/kdbench"),
])
def test_publishing_options_refuse_bad_input_in_one_line(arguments, message):
    from click.testing import CliRunner

    from kdbench.cli import main

    result = CliRunner().invoke(main, arguments)
    assert result.exit_code == 2 and message in result.output and result.output.strip().count("\n") == 0


def test_a_board_whose_every_row_failed_shows_the_errors(tmp_path):
    from kdbench.publishing import render

    leaderboard.write(tmp_path, [dict(GROUP, attack="badnets", seed=0, status="failed", error="loss is NaN")], [])
    page = render(tmp_path).read_text()
    assert "<svg" not in page and "loss is NaN" in page.split('id="failed"')[1]


@pytest.mark.parametrize("board", ["quick", "quick-methods"])
def test_published_pages_are_what_report_renders_from_the_folder(tmp_path, board):
    """A published page is rendered again byte for byte from its CSVs, suite.json and gallery
    (after a change to the rendering, republish: kdbench report leaderboards)."""
    import shutil
    from pathlib import Path

    from kdbench.publishing import render

    published = Path(__file__).parents[1] / "leaderboards" / board
    copy = tmp_path / board
    copy.mkdir()
    for name in ("distillation.csv", "detection.csv", "suite.json", "triggers.csv", "gallery"):
        if (published / name).is_dir():
            shutil.copytree(published / name, copy / name)
        elif (published / name).exists():
            shutil.copy(published / name, copy / name)
    assert render(copy).read_bytes() == (published / "index.html").read_bytes()
    assert (copy / "summary.csv").read_bytes() == (published / "summary.csv").read_bytes()


def test_lpips_follows_its_definition_on_a_random_trunk():
    """Zhang et al.'s Eq. 1 worked out from the trunk's features: each stage's activations
    unit-normalised over channels, their squared difference weighted per channel by the
    calibrated linear layer, averaged over positions, summed over stages; inputs in [−1, 1]
    through LPIPS's scaling layer.  The trunk is a randomly initialised AlexNet (nothing to
    download); one-channel 28-pixel images count as their RGB repetition upsampled to 32."""
    lpips = pytest.importorskip("lpips", reason="lpips is not installed (pip install -e '.[test]')")
    import warnings

    import torch
    import torch.nn.functional as F

    from kdbench.visibility import visibility

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metric = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False).eval()
    torch.manual_seed(0)
    clean = torch.rand(3, 3, 32, 32)
    triggered = clean.clone()
    triggered[:, :, -6:, -6:] = 1.0

    def by_definition(a, b):
        with torch.no_grad():
            features = [metric.net(metric.scaling_layer(2 * x - 1)) for x in (a, b)]
            total = torch.zeros(len(a))
            for fa, fb, linear in zip(*features, metric.lins):
                fa, fb = (f / (f.pow(2).sum(1, keepdim=True).sqrt() + 1e-10) for f in (fa, fb))
                weights = linear.model[-1].weight.flatten()
                total += ((fa - fb).pow(2) * weights[None, :, None, None]).sum(1).mean((1, 2))
        return total.mean().item()

    assert visibility(clean, clean, metric)["lpips"] == 0
    assert visibility(clean, triggered, metric)["lpips"] == pytest.approx(by_definition(clean, triggered), rel=1e-5)
    grey, stamped = clean[:, :1, :28, :28], triggered[:, :1, :28, :28]
    upsampled = [F.interpolate(x.expand(-1, 3, -1, -1), size=(32, 32), mode="bilinear", align_corners=False)
                 for x in (grey, stamped)]
    assert visibility(grey, stamped, metric)["lpips"] == pytest.approx(by_definition(*upsampled), rel=1e-5)


def test_lpips_is_skipped_with_the_reason_when_the_trunk_weights_are_missing(monkeypatch, tmp_path):
    pytest.importorskip("lpips", reason="lpips is not installed (pip install -e '.[test]')")
    import torch

    from kdbench.visibility import perceptual_metric, visibility

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    metric, missing = perceptual_metric()
    assert metric is None and str(tmp_path / "checkpoints" / "alexnet-owt-7be5be79.pth") in missing
    assert "\n" not in missing
    assert math.isnan(visibility(torch.zeros(1, 1, 8, 8), torch.ones(1, 1, 8, 8))["lpips"])


def test_the_alexnet_checkpoint_is_the_one_torchvision_downloads():
    from torchvision.models import AlexNet_Weights

    from kdbench.visibility import ALEXNET_WEIGHTS

    assert AlexNet_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[1] == ALEXNET_WEIGHTS
