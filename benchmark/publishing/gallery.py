"""The trigger gallery: for each attack, a few clean test images, their triggered versions and
the amplified difference (``gallery/<attack>.png``), and the trigger's visibility on the whole
test split (``triggers.csv``), made from the triggers stored with the backdoored teachers."""
import base64
import html
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from ..data import to_float
from ..registry import BASELINE
from ..store import unprefixed
from ..visibility import visibility

SHOWN, CELL, GAP = 6, 64, 2  # images per attack, pixels per image, pixels between images
TABLE = "triggers.csv"
COLUMNS = ["attack", "seed", "teacher_key", "psnr", "ssim", "linf", "l2", "lpips", "changed", "images"]


def write_gallery(folder: Path, stages, plan, perceptual=None) -> pd.DataFrame:
    """``triggers.csv`` and one PNG per attack, from each attack's first stored teacher;
    LPIPS with ``perceptual`` (``kdbench.visibility.perceptual_metric``), else left empty."""
    folder = Path(folder)
    teachers = {}
    for cell in plan.cells:
        attack = cell["row"]["attack"]
        if attack != BASELINE and attack not in teachers and stages.store.has("teacher", cell["teacher"]):
            teachers[attack] = (cell["row"]["seed"], cell["teacher"])
    rows = []
    perceptual = perceptual.to(stages.device) if perceptual is not None else None
    clean = to_float(stages.data.test_images).to(stages.device)
    for attack, (seed, key) in teachers.items():
        tensors, _ = stages.store.load("teacher", key)
        trigger = stages.resolve("attack", attack).component.build_trigger(stages.data.info).to(stages.device)
        trigger.load_state_dict(unprefixed("trigger", tensors))
        with torch.no_grad():
            triggered = trigger.eval()(clean)
        rows.append({"attack": attack, "seed": seed, "teacher_key": key, **visibility(clean, triggered, perceptual)})
        (folder / "gallery").mkdir(exist_ok=True)
        strip(clean[:SHOWN], triggered[:SHOWN]).save(folder / "gallery" / f"{file_name(attack)}.png")
    table = pd.DataFrame(rows, columns=COLUMNS)
    table.to_csv(folder / TABLE, index=False, float_format="%.4f")
    return table


def strip(clean: torch.Tensor, triggered: torch.Tensor) -> Image.Image:
    """Three rows: clean images, triggered images, their absolute difference scaled to fill [0, 1]."""
    difference = (triggered - clean).abs()
    difference = difference / difference.max() if difference.max() > 0 else difference
    rows = [clean, triggered, difference]
    height, width = len(rows) * (CELL + GAP) - GAP, len(clean) * (CELL + GAP) - GAP
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    for r, images in enumerate(rows):
        for c, image in enumerate(images):
            pixels = image.expand(3, -1, -1) if image.shape[0] == 1 else image
            big = torch.nn.functional.interpolate(pixels[None].float().cpu(), size=(CELL, CELL), mode="nearest")[0]
            canvas[r * (CELL + GAP):r * (CELL + GAP) + CELL, c * (CELL + GAP):c * (CELL + GAP) + CELL] = \
                big.mul(255).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()
    return Image.fromarray(canvas)


def file_name(attack: str) -> str:
    """An attack label as a file name (options kept, unsafe characters replaced)."""
    return "".join(ch if ch.isalnum() or ch in "-_=.," else "_" for ch in attack)


def gallery_html(folder: Path) -> str:
    """The gallery as HTML: each attack's strip as an inline PNG with its visibility."""
    folder = Path(folder)
    if not (folder / TABLE).exists():
        return ""
    table = pd.read_csv(folder / TABLE)
    parts = []
    for _, row in table.iterrows():
        path = folder / "gallery" / f"{file_name(row['attack'])}.png"
        if not path.exists():
            continue
        data, name = base64.b64encode(path.read_bytes()).decode(), html.escape(row["attack"])
        perceptual = "" if pd.isna(row.get("lpips")) else f", LPIPS {row['lpips']:.3f}"
        parts.append(f'<figure class="trigger"><img alt="{name}: clean, triggered, difference" '
                     f'src="data:image/png;base64,{data}"><figcaption><b>{name}</b> (seed {row["seed"]}): '
                     f'PSNR {row["psnr"]:.1f} dB, SSIM {row["ssim"]:.3f}, L∞ {row["linf"]:.3f}, L2 {row["l2"]:.2f}'
                     f'{perceptual} ({row["changed"]:.0%} of {row["images"]} test images changed)</figcaption></figure>')
    return "\n".join(parts)
