"""Training images on the device against streamed from host memory (``kdbench.place``), one run.

The same model (an architecture of kdbench's plugin, freshly initialised with one seed), the
same synthetic uint8 images of ImageNet-50's size (224 px, with its random-resized crop and
flip on the device) and the same epochs of ``kdbench.train``, with the training images

1. ``resident``: on the device, as every dataset that fits in the budget's
   ``device_data_fraction`` of its memory;
2. ``streamed``: in host memory, each batch gathered into a pinned buffer and copied to the
   device without blocking.

Prints images/s, the ratio of streamed to resident, the peak device memory of each (CUDA)
and the largest difference between the two trained models' parameters: the computation is
the same, so it is zero up to the device's nondeterministic kernels.  On the CPU the host is
the device and both runs are resident; the script then only checks that it runs.

    python perf/streaming.py --device cuda                # ResNet-18, 4,096 images of 224 px
    python perf/streaming.py --device cpu --tiny          # seconds, for CI
"""
import argparse
import csv
import time

import torch

import kdbench
from kdbench.plugins import PluginHost
from kdbench.registry import load_registry, spec
from kdbench.training import cross_entropy


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--csv", help="write the two rows here")
    parser.add_argument("--tiny", action="store_true", help="small_cnn on 64 images of 32 px, one epoch")
    return parser.parse_args()


def synthetic(count: int, size: int, classes: int = 50) -> kdbench.ImageData:
    """Random uint8 images and balanced labels with ImageNet's augmentation."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (count, 3, size, size), dtype=torch.uint8, generator=generator)
    labels = torch.arange(count) % classes
    info = kdbench.DatasetInfo("synthetic", classes, 3, size, (0.5,) * 3, (0.25,) * 3,
                               tuple(str(i) for i in range(classes)), crop="resized")
    return kdbench.ImageData(info, images, labels, images[:0], labels[:0])


def run(host, args, data, fraction, device) -> dict:
    """Train one fresh model on ``data`` placed with ``fraction``; seconds, peak memory, model."""
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    placed = kdbench.place(data, device, fraction)
    torch.manual_seed(0)
    entry = spec(args.model, "--model")
    model = host.create("architecture", entry.name, entry.kwargs)[1].network(data.info).to(device)
    schedule = kdbench.Schedule(args.epochs, args.batch_size)
    started = time.perf_counter()
    kdbench.train([kdbench.Learner(model, cross_entropy)], placed.train_images, placed.train_labels, schedule,
                  hflip=True, crop="resized", seed=0)
    if cuda:
        torch.cuda.synchronize()
    return {"seconds": time.perf_counter() - started, "model": model,
            "images_on": placed.train_images.device.type,
            "peak_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None}


def main():
    args = parse_args()
    if args.tiny:
        args.model, args.images, args.size, args.batch_size, args.epochs = "small_cnn(width=4)", 64, 32, 32, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device here")
    host = PluginHost(load_registry().plugins)
    data = synthetic(args.images, args.size)
    print(f"device {device}: {args.model} on {args.images} images of {args.size} px "
          f"({data.train_images.nbytes / 2**20:.0f} MiB), batch {args.batch_size}, {args.epochs} epochs", flush=True)
    run(host, args, synthetic(args.batch_size, args.size), 1.0, device)  # warm-up: kernels chosen, caches filled
    rows, models = [], []
    for mode, fraction in (("resident", 1.0), ("streamed", 0.0)):
        result = run(host, args, data, fraction, device)
        rate = args.epochs * args.images / result["seconds"]
        ratio = rate / rows[0]["images_per_s"] if rows else 1.0
        peak = result["peak_mib"]
        rows.append({"mode": mode, "images_on": result["images_on"], "images_per_s": round(rate, 1),
                     "ratio": round(ratio, 3), "peak_mib": None if peak is None else round(peak)})
        models.append(result["model"])
        memory = "" if peak is None else f"  peak {peak:8.0f} MiB"
        print(f"  {mode:<9} images on {result['images_on']:<5} {rate:9.1f} images/s  × {ratio:5.3f}{memory}",
              flush=True)
    difference = max((a - b).abs().max().item() for a, b in zip(models[0].parameters(), models[1].parameters()))
    print(f"  largest parameter difference between the two trained models: {difference:.3g}")
    if args.csv:
        with open(args.csv, "w", newline="") as handle:
            writer = csv.DictWriter(handle, [*rows[0], "parameter_difference"])
            writer.writeheader()
            writer.writerows({**row, "parameter_difference": difference} for row in rows)


if __name__ == "__main__":
    main()
