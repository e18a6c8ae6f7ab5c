"""A tiny two-seed quick run, published: its page opened in a real headless browser (Debian's
chromium, driven by Playwright's Python API), its TensorBoard logs, its artifacts shown and
exported."""
import io
import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from kdbench.cli import main

TINY = ["run", "quick", "--epochs", "1", "--seeds", "0,1", "--attacks", "badnets", "--device", "cpu", "--threads", "1",
        "--defenses", "strip(n=2),neural_cleanse(steps=2,samples_per_step=8,batch_size=8)"]


def browser() -> str:
    """The system chromium's path, or a skip that says what is missing."""
    pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install -e '.[test]')")
    path = next((shutil.which(name) for name in ("chromium", "chromium-browser") if shutil.which(name)), None)
    if path is None:
        pytest.skip("no chromium on PATH: the browser test needs Debian's chromium (apt-get install chromium)")
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(work directory, leaderboard folder, TensorBoard folder, printed output) of the tiny run."""
    work, out = tmp_path_factory.mktemp("tiny-work"), tmp_path_factory.mktemp("tiny-board")
    logs = work / "logs"
    result = CliRunner().invoke(main, [*TINY, "--workdir", str(work), "--out", str(out), "--log", f"tensorboard={logs}"])
    assert result.exit_code == 0, result.output
    assert "KDBENCH_TENSORBOARD" not in os.environ  # on for the run only
    return work, out, logs, result.output


@pytest.fixture(scope="module")
def tiny_board(tiny):
    return tiny[1]


def test_run_writes_the_page_report_rewrites_it_byte_for_byte(tiny_board):
    page = (tiny_board / "index.html").read_bytes()
    assert b"<pre>kdbench run quick</pre>" in page  # in-process: the suite's command and its definition
    assert b"student_epochs: 1" in page and b"- neural_cleanse(batch_size=8,samples_per_step=8,steps=2)" in page
    (tiny_board / "index.html").unlink()
    assert CliRunner().invoke(main, ["report", str(tiny_board)]).exit_code == 0
    assert (tiny_board / "index.html").read_bytes() == page


def test_page_in_headless_chromium(tiny_board):
    from playwright.sync_api import sync_playwright

    executable = browser()
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        page = chromium.new_page(viewport={"width": 1280, "height": 900})
        problems = []
        page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.on("requestfailed", lambda request: problems.append(f"failed to load {request.url}"))
        page.goto((tiny_board / "index.html").as_uri())
        tables = {t.get_attribute("id"): t.locator("tbody tr").count() for t in page.locator("table").all()}
        figures = [f.locator("svg, img").bounding_box() for f in page.locator("figure").all()]
        decoded = page.locator("figure.trigger img").evaluate_all("images => images.map(i => i.naturalWidth)")
        captions = page.locator("figcaption").all_inner_texts()
        shot = page.screenshot(full_page=True)
        page.evaluate("console.error('the listener hears errors')")  # the check itself can fail
        chromium.close()
    assert problems == ["the listener hears errors"]
    # none and badnets under kd; strip on two models and Neural Cleanse on two models, for each attack
    assert tables == {"T_distillation": 2, "T_detection": 6}
    # survival, CA against ASR, the BadNets trigger, detection AUROC for badnets, Neural Cleanse's scores
    assert [c.split(":")[0].split(" (")[0] for c in captions] == [
        "Survival, student small_cnn(width=16)", "CA against ASR", "badnets", "Detection AUROC, badnets",
        "Model scores, neural_cleanse"]
    assert decoded == [6 * 64 + 5 * 2]  # six images of 64 pixels, 2-pixel gaps
    assert all(box["width"] > 150 and box["height"] > 100 for box in figures)
    pixels = np.asarray(Image.open(io.BytesIO(shot)).convert("L"), dtype=float)
    assert pixels.shape[0] > 900 and (pixels < 200).mean() > 0.01 and pixels.std() > 10


def test_visibility_of_the_stored_trigger(tiny):
    _, board, _, output = tiny
    row = pd.read_csv(board / "triggers.csv").iloc[0]
    assert row["attack"] == "badnets" and row["seed"] == 0
    # BadNets stamps a white patch on every test image: all of them change, none beyond [0, 1]
    assert row["changed"] == 1.0 and 0 < row["linf"] <= 1 and row["psnr"] > 10 and 0 < row["ssim"] < 1
    from kdbench.visibility import perceptual_metric

    _, missing = perceptual_metric()
    if missing:  # no download here: the run says once, in one line, why the column is empty
        assert pd.isna(row["lpips"]) and output.count(f"triggers.csv without LPIPS: {missing}\n") == 1
    else:
        assert 0 < row["lpips"] < 1 and "without LPIPS" not in output


def test_tensorboard_holds_one_series_per_trained_stage(tiny):
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install -e '.[test]')")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    work, _, logs, _ = tiny
    trained = {}
    for meta_file in work.glob("*/*/meta.json"):
        meta = json.loads(meta_file.read_text())
        if meta.get("history"):
            trained[f"{meta['stage']}/{meta['key']}"] = meta["history"]
    # two seeds: a clean teacher, a BadNets teacher, a kd student of each
    assert sorted(run.split("/")[0] for run in trained) == ["clean_teacher"] * 2 + ["student"] * 4 + ["teacher"] * 2
    runs = sorted(str(p.parent.relative_to(logs)) for p in logs.glob("*/*/events.out.tfevents.*"))
    assert runs == sorted(trained)
    for run, history in trained.items():
        events = EventAccumulator(str(logs / run))
        events.Reload()
        for tag in ("loss", "train_accuracy"):
            logged = events.Scalars(tag)
            assert [e.step for e in logged] == [h["epoch"] for h in history]
            assert [e.value for e in logged] == pytest.approx([h[tag] for h in history], rel=1e-6)


def test_show_prints_the_reproducing_command_and_exports_with_checksum(tiny, tmp_path):
    import hashlib

    work, _, _, _ = tiny
    student = json.loads(next(work.glob("student/*/meta.json")).read_text())
    result = CliRunner().invoke(main, ["show", student["key"][:8], "--workdir", str(work),
                                       "--export", str(tmp_path / "student.safetensors")])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"student {student['key']}: kd")
    assert f"teacher {student['inputs'][0]}" in result.output or f"clean_teacher {student['inputs'][0]}" in result.output
    assert "student_epochs: 1" in result.output  # the suite that computed it
    exported = (tmp_path / "student.safetensors").read_bytes()
    digest = hashlib.sha256(exported).hexdigest()
    assert exported == (work / "student" / student["key"] / "tensors.safetensors").read_bytes()
    assert (tmp_path / "student.safetensors.sha256").read_text() == f"{digest}  student.safetensors\n"
    missing = CliRunner().invoke(main, ["show", "ffffffffff", "--workdir", str(work)])
    assert missing.exit_code == 2 and "no stored artifact" in missing.output
