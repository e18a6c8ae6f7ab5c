"""The page of a small two-seed suite, opened in a real headless browser (Debian's chromium,
driven by Playwright's Python API)."""
import io
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from kdbench.cli import main

TINY = ["run", "quick", "--epochs", "1", "--seeds", "0,1", "--attacks", "badnets", "--device", "cpu", "--threads", "1",
        "--defenses", "strip(n=8),neural_cleanse(steps=2,samples_per_step=8,batch_size=8)"]


def browser() -> str:
    """The system chromium's path, or a skip that says what is missing."""
    pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install -e '.[test]')")
    path = next((shutil.which(name) for name in ("chromium", "chromium-browser") if shutil.which(name)), None)
    if path is None:
        pytest.skip("no chromium on PATH: the browser test needs Debian's chromium (apt-get install chromium)")
    return path


@pytest.fixture(scope="module")
def tiny_board(tmp_path_factory):
    work, out = tmp_path_factory.mktemp("tiny-work"), tmp_path_factory.mktemp("tiny-board")
    result = CliRunner().invoke(main, [*TINY, "--workdir", str(work), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


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
        figures = [f.locator("svg").bounding_box() for f in page.locator("figure").all()]
        captions = page.locator("figcaption").all_inner_texts()
        shot = page.screenshot(full_page=True)
        page.evaluate("console.error('the listener hears errors')")  # the check itself can fail
        chromium.close()
    assert problems == ["the listener hears errors"]
    # none and badnets under kd; strip on two models and Neural Cleanse on two models, for each attack
    assert tables == {"T_distillation": 2, "T_detection": 6}
    # survival, CA against ASR, detection AUROC for badnets, Neural Cleanse's scores
    assert [c.split(":")[0].split(" (")[0] for c in captions] == [
        "Survival, student small_cnn(width=16)", "CA against ASR", "Detection AUROC, badnets",
        "Model scores, neural_cleanse"]
    assert all(box["width"] > 150 and box["height"] > 100 for box in figures)
    pixels = np.asarray(Image.open(io.BytesIO(shot)).convert("L"), dtype=float)
    assert pixels.shape[0] > 900 and (pixels < 200).mean() > 0.01 and pixels.std() > 10
