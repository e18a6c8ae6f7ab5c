"""Inference on the CPU: one forward pass per caller's batch against ``kdbench.logits``, one run.

Every metric and most detectors get their logits from ``kdbench.logits``, whose callers name
a batch size sized for an accelerator's memory (1,024 for the metrics, 4,096 for STRIP's
overlays).  On the CPU it takes at most ``CPU_INFERENCE_BATCH`` (128) images a pass, whose
activations stay in the caches, with the model and the batches channels_last as in training
(``kdbench.channels_last``).  For each model (freshly initialised, eval mode, random images of
its dataset's size) and each caller batch size, this prints the images per second of

1. ``whole batches``: one forward pass per caller batch in the default memory format, as
   before both;
2. ``128 a pass``: passes of 128 images in the default memory format, as before channels_last;
3. ``kdbench.logits``: the same images through the harness;

the ratios of the third to the first and to the second, and the largest difference of the
harness's logits from the first's, relative to the largest logit (rounding: 1e-6 and below).

    python perf/inference.py                  # two threads, 4,096 images a model
    python perf/inference.py --threads 1 --images 1024
"""
import argparse
import time

import torch

import kdbench
from kdbench.training import CPU_INFERENCE_BATCH
from kdbench.plugins import PluginHost
from kdbench.registry import load_registry, spec

MODELS = [("small_cnn", 1, 16), ("small_cnn(width=16)", 1, 16), ("resnet18", 3, 32), ("mobilenetv2_100", 3, 32)]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--batches", default="4096,1024", help="the callers' batch sizes, comma-separated")
    return parser.parse_args()


def timed(function):
    function()  # warm-up: kernels chosen, memory allocated
    started = time.perf_counter()
    result = function()
    return result, time.perf_counter() - started


@torch.no_grad()
def passes(model, images, batch_size):
    """One forward pass per ``batch_size`` images, in the model's and the images' default memory format."""
    return torch.cat([model(kdbench.to_float(chunk)) for chunk in images.split(batch_size)])


def difference(reference: torch.Tensor, logits: torch.Tensor) -> float:
    return ((logits - reference).abs().max() / reference.abs().max()).item()


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    host = PluginHost(load_registry().plugins)
    print(f"CPU, {args.threads} threads, {args.images} images a model; "
          f"kdbench.logits takes at most {CPU_INFERENCE_BATCH} a pass, channels_last")
    print(f"{'model':<22} {'caller batch':>12} {'whole batches':>14} {'128 a pass':>11} {'kdbench.logits':>15} "
          f"{'ratios':>11}  difference")
    for text, channels, size in MODELS:
        entry = spec(text, "model")
        info = kdbench.DatasetInfo("random", 10, channels, size, (0.5,) * channels, (0.25,) * channels,
                                   tuple(str(i) for i in range(10)))
        torch.manual_seed(0)
        model = host.create("architecture", entry.name, entry.kwargs)[1].network(info).eval()
        images = torch.randint(0, 256, (args.images, channels, size, size), dtype=torch.uint8)
        _, limited = timed(lambda: passes(model, images, CPU_INFERENCE_BATCH))
        for batch_size in (int(b) for b in args.batches.split(",")):
            reference, whole = timed(lambda: passes(model, images, batch_size))
            harness, after = timed(lambda: kdbench.logits(model, images, batch_size))
            print(f"{text:<22} {batch_size:>12} {args.images / whole:>10.0f} i/s {args.images / limited:>7.0f} i/s "
                  f"{args.images / after:>11.0f} i/s {whole / after:>5.2f} {limited / after:>5.2f}  "
                  f"{difference(reference, harness):.1e}", flush=True)


if __name__ == "__main__":
    main()
