"""How visible a trigger is: triggered test images against their clean originals (DESIGN.md,
"Trigger visibility"), with scikit-image's PSNR and SSIM and the lpips package's LPIPS.

Pixels are floats in [0, 1].  ``psnr`` is the mean per-image PSNR over the images the trigger
changed (an unchanged image's is infinite) and ``changed`` their fraction; ``ssim`` (Wang et
al., 2004; channels averaged), ``linf`` (the largest pixel change), ``l2`` (the change's
Euclidean norm) and ``lpips`` (Zhang et al., "The Unreasonable Effectiveness of Deep Features
as a Perceptual Metric", CVPR 2018) are means over all images.
"""
import importlib.util
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

LPIPS_MIN_SIZE = 32  # the AlexNet trunk's five stages need at least 32 pixels a side
LPIPS_BATCH = 256
# torchvision's AlexNet_Weights.IMAGENET1K_V1 checkpoint, which lpips loads: named here, since
# importing torchvision.models to ask costs every command two seconds
ALEXNET_WEIGHTS = "alexnet-owt-7be5be79.pth"


def perceptual_metric():
    """(LPIPS with its AlexNet trunk, None), or (None, why not) when the lpips package or
    torchvision's ImageNet AlexNet weights (in torch.hub's checkpoint folder) are missing:
    nothing is downloaded."""
    if importlib.util.find_spec("lpips") is None:
        return None, "the lpips package is not installed (pip install 'kdbench[lpips]')"
    weights = Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_WEIGHTS
    if not weights.exists():
        return None, f"torchvision's AlexNet weights are not installed ({weights})"
    import lpips  # two seconds of imports, only when it will be used

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's notice about lpips' legacy `pretrained=` argument
        return lpips.LPIPS(net="alex", verbose=False).eval(), None


def perceptual_distances(metric, clean: torch.Tensor, changed: torch.Tensor) -> torch.Tensor:
    """The LPIPS of ``metric`` (from ``perceptual_metric``) of each pair of a batch, on the
    metric's device and differentiable (an attack's perceptual loss); one-channel images are
    repeated to RGB and images under 32 pixels a side upsampled bilinearly to 32 first."""
    device = next(metric.parameters()).device
    clean, changed = (_rgb_at_least(x.float().to(device), LPIPS_MIN_SIZE) for x in (clean, changed))
    return metric(clean, changed, normalize=True).flatten()


def lpips_distance(metric, clean: torch.Tensor, triggered: torch.Tensor) -> float:
    """Mean LPIPS of ``metric`` between the pairs (``perceptual_distances``)."""
    with torch.no_grad():
        distances = [perceptual_distances(metric, a, b).cpu()
                     for a, b in zip(clean.split(LPIPS_BATCH), triggered.split(LPIPS_BATCH))]
    return float(torch.cat(distances).double().mean())


def _rgb_at_least(images: torch.Tensor, size: int) -> torch.Tensor:
    images = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images
    if min(images.shape[-2:]) < size:
        images = F.interpolate(images, size=(max(size, images.shape[-2]), max(size, images.shape[-1])),
                               mode="bilinear", align_corners=False)
    return images


def visibility(clean: torch.Tensor, triggered: torch.Tensor, perceptual=None) -> dict:
    """Visibility of ``triggered`` against ``clean`` (N×C×H×W floats in [0, 1]); ``lpips`` is
    NaN unless ``perceptual`` (from ``perceptual_metric``) is given."""
    lpips = lpips_distance(perceptual, clean, triggered) if perceptual is not None else float("nan")
    clean, triggered = clean.double().cpu().numpy(), triggered.double().cpu().numpy()
    difference = (triggered - clean).reshape(len(clean), -1)
    changed = np.abs(difference).max(axis=1) > 0
    psnr = [peak_signal_noise_ratio(c, t, data_range=1.0) for c, t in zip(clean[changed], triggered[changed])]
    ssim = [structural_similarity(c, t, data_range=1.0, channel_axis=0) for c, t in zip(clean, triggered)]
    return {"psnr": float(np.mean(psnr)) if psnr else float("inf"), "ssim": float(np.mean(ssim)),
            "linf": float(np.abs(difference).max(axis=1).mean()), "l2": float(np.linalg.norm(difference, axis=1).mean()),
            "lpips": lpips, "changed": float(changed.mean()), "images": len(clean)}
