"""How visible a trigger is: triggered test images against their clean originals (DESIGN.md,
"Trigger visibility"), with scikit-image's PSNR and SSIM.

Pixels are floats in [0, 1].  ``psnr`` is the mean per-image PSNR over the images the trigger
changed (an unchanged image's is infinite) and ``changed`` their fraction; ``ssim`` (Wang et
al., 2004; channels averaged), ``linf`` (the largest pixel change) and ``l2`` (the change's
Euclidean norm) are means over all images.
"""
import numpy as np
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity


def visibility(clean: torch.Tensor, triggered: torch.Tensor) -> dict:
    """Visibility of ``triggered`` against ``clean`` (N×C×H×W floats in [0, 1])."""
    clean, triggered = clean.double().cpu().numpy(), triggered.double().cpu().numpy()
    difference = (triggered - clean).reshape(len(clean), -1)
    changed = np.abs(difference).max(axis=1) > 0
    psnr = [peak_signal_noise_ratio(c, t, data_range=1.0) for c, t in zip(clean[changed], triggered[changed])]
    ssim = [structural_similarity(c, t, data_range=1.0, channel_axis=0) for c, t in zip(clean, triggered)]
    return {"psnr": float(np.mean(psnr)) if psnr else float("inf"), "ssim": float(np.mean(ssim)),
            "linf": float(np.abs(difference).max(axis=1).mean()), "l2": float(np.linalg.norm(difference, axis=1).mean()),
            "changed": float(changed.mean()), "images": len(clean)}
