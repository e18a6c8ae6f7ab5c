"""TeCo: triggered inputs lose their prediction at very different corruption severities."""
import dataclasses
import importlib.util
import multiprocessing
import os
import sys
import types

import numpy as np
import torch

import kdbench

# The 15 ImageNet-C corruptions of the paper less two that imagecorruptions 1.1.2 cannot run
# with today's libraries: glass_blur (calls scikit-image's gaussian with `multichannel`,
# removed in scikit-image 0.19) and fog (uses `np.float_`, removed in NumPy 2.0).
# The list is written with '+' so that it fits the command line's name(key=value,...) syntax.
CORRUPTIONS = ("gaussian_noise+shot_noise+impulse_noise+defocus_blur+motion_blur+zoom_blur+snow+frost+"
               "brightness+contrast+elastic_transform+pixelate+jpeg_compression")
KNOWN = CORRUPTIONS.split("+") + ["glass_blur", "fog", "speckle_noise", "gaussian_blur", "spatter", "saturate"]
MIN_SIZE = 32  # imagecorruptions refuses smaller images
CHUNK = 32  # images per unit of work; each chunk draws from its own seeded random stream


@dataclasses.dataclass
class Teco(kdbench.InputDetector):
    """TeCo (Liu, Li, Wang, Hu, Ye, Jin, Wu & Xiao, "Detecting Backdoors During the Inference
    Stage Based on Corruption Robustness Consistency", CVPR 2023).

    Each input is corrupted with every corruption type of ``corruptions`` (the ImageNet-C
    corruptions of Hendrycks & Dietterich, through the ``imagecorruptions`` package) at
    severities 1 to ``max_severity``.  For each type, the robustness of the input is the
    first severity at which the model's prediction leaves its prediction on the
    uncorrupted input (``max_severity + 1`` if it never does).  A clean input's robustness
    is similar across corruption types; a triggered input's is not (some corruptions
    break the trigger at once, others never).  Score = the standard deviation of the
    robustness over the types.  Needs no clean data.

    Deviations: glass_blur and fog are left out of the paper's 15 types (see CORRUPTIONS:
    the package cannot run them with scikit-image ≥ 0.19 and NumPy 2); images smaller than
    32 px, which the package refuses, are upsampled by pixel replication to at least 32 px,
    corrupted there and averaged back down block by block (relative to the image, blurs and
    displacements keep the extent they have on a 32-px image, while per-pixel noise loses
    half its standard deviation in the 2×2 averaging of the 16-px digits);
    a grey image is corrupted as the RGB image the package makes of it and its first
    channel kept.  Randomness comes from NumPy's global generator, re-seeded per chunk of
    ``CHUNK`` images from ``seed``, so scores do not depend on ``workers``; impulse_noise is
    the exception, its scikit-image call drawing from a fresh unseeded generator, so scores
    vary slightly from run to run.
    """

    name = "teco"
    paper = ("Liu et al., Detecting Backdoors During the Inference Stage Based on Corruption Robustness "
             "Consistency, CVPR 2023")

    corruptions: str = CORRUPTIONS
    max_severity: int = 5
    seed: int = 0
    workers: int = 0  # processes corrupting images; 0: one per CPU core
    batch_size: int = 1024

    def validate(self):
        unknown = sorted(set(self.names()) - set(KNOWN))
        if unknown or not self.names():
            raise kdbench.ConfigError(f"teco: unknown corruptions {unknown} (known: {', '.join(KNOWN)})")
        if not 1 <= self.max_severity <= 5 or self.workers < 0:
            raise kdbench.ConfigError(f"teco: max_severity must be in 1..5 and workers ≥ 0, "
                                      f"got {self.max_severity}, {self.workers}")
        if importlib.util.find_spec("imagecorruptions") is None:
            raise kdbench.ConfigError('teco needs the imagecorruptions package: pip install "kdbench[teco]"')

    def names(self) -> list:
        return [name.strip() for name in self.corruptions.split("+") if name.strip()]

    @torch.no_grad()
    def score(self, model, images, calibration):
        model.eval()
        pixels = (kdbench.to_float(images) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        jobs = [(pixels[start:start + CHUNK], self.names(), self.max_severity, self.seed * 100_003 + index)
                for index, start in enumerate(range(0, len(pixels), CHUNK))]
        original = kdbench.predict(model, images, self.batch_size)
        severity = torch.arange(1, self.max_severity + 1, device=original.device)
        robustness, offset = [], 0
        for corrupted in self._corrupt_all(jobs):  # chunk × corruption × severity × H × W × C, uint8
            versions = torch.from_numpy(corrupted).to(images.device).flatten(0, 2).permute(0, 3, 1, 2)
            predicted = kdbench.predict(model, versions, self.batch_size).view(corrupted.shape[:3])
            flipped = predicted != original[offset:offset + len(corrupted), None, None]
            robustness.append(torch.where(flipped, severity, self.max_severity + 1).min(2).values.float())
            offset += len(corrupted)
        return torch.cat(robustness).std(1, unbiased=False)

    def _corrupt_all(self, jobs):
        workers = min(self.workers or os.cpu_count() or 1, len(jobs))
        if workers <= 1:
            return map(_corrupt_chunk, jobs)
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            return pool.map(_corrupt_chunk, jobs)


def _corrupt_chunk(job) -> np.ndarray:
    """Every corruption at every severity of a chunk of N×H×W×C uint8 images."""
    images, names, max_severity, seed = job
    corrupt = _imagecorruptions()
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        height, width, channels = images.shape[1:]
        factor = -(-MIN_SIZE // min(height, width))
        out = np.empty((len(images), len(names), max_severity, height, width, channels), np.uint8)
        for i, image in enumerate(images):
            large = image.repeat(factor, 0).repeat(factor, 1)
            large = large[..., 0] if channels == 1 else large
            for j, name in enumerate(names):
                for k in range(max_severity):
                    corrupted = np.asarray(corrupt(large, corruption_name=name, severity=k + 1), np.float32)
                    corrupted = corrupted[..., :channels].reshape(height, factor, width, factor, channels)
                    out[i, j, k] = corrupted.mean((1, 3)).round().clip(0, 255)
        return out
    finally:
        np.random.set_state(state)


def _imagecorruptions():
    """imagecorruptions' ``corrupt``.  Release 1.1.2 imports ``pkg_resources`` only to find the
    frost pictures it ships; setuptools ≥ 81 no longer has that module, so while the package
    is imported a stand-in that resolves paths beside a module takes its place."""
    if "imagecorruptions" in sys.modules or importlib.util.find_spec("pkg_resources") is not None:
        from imagecorruptions import corrupt
        return corrupt
    stand_in = types.ModuleType("pkg_resources")
    stand_in.resource_filename = lambda module, path: os.path.join(
        os.path.dirname(importlib.util.find_spec(module).origin), path)
    sys.modules["pkg_resources"] = stand_in
    try:
        from imagecorruptions import corrupt
    finally:
        del sys.modules["pkg_resources"]
    return corrupt


@kdbench.hookimpl
def register_defenses(register):
    register(Teco)
