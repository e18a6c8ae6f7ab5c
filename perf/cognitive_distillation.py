"""Images per second of Cognitive Distillation (paper defaults: 100 Adam steps per image),
batched as the harness runs it against the reference of one image at a time.

    python perf/cognitive_distillation.py [--device cpu] [--images 256] [--size 16 --channels 1]

A randomly initialised small_cnn on random images: the cost of the distillation does not
depend on what the network has learned.  Prints wall-clock images/s, the rate per CPU
second of the process (which on a busy machine, with --threads 1, still tells the speed of
an idle core), and the ratio of the batched rate to the one-image-at-a-time rate
(measured on ``--reference-images`` images).
"""
import argparse
import time

import torch

import kdbench
from kdbench_plugins.architectures.small_cnn import SmallCnn
from kdbench_plugins.defenses.cognitive_distillation import CognitiveDistillation


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--size", type=int, default=16, help="image side (16: the quick suite's digits)")
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--width", type=int, default=32, help="small_cnn width (32: the quick suite's teacher)")
    parser.add_argument("--output", default="logits", choices=("logits", "features"))
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--reference-images", type=int, default=16, help="images the one-at-a-time reference processes")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    info = kdbench.DatasetInfo("random", 10, args.channels, args.size, (0.5,) * args.channels, (0.25,) * args.channels,
                               tuple(str(k) for k in range(10)))
    model = SmallCnn(width=args.width).network(info).to(device).eval()
    images = torch.randint(0, 256, (args.images, args.channels, args.size, args.size), dtype=torch.uint8, device=device)
    batched = CognitiveDistillation(output=args.output, steps=args.steps)
    one_by_one = CognitiveDistillation(output=args.output, steps=args.steps, batch_size=1)
    batched.score(model, images[:8], None)  # warm-up
    print(f"cognitive_distillation output={args.output} steps={args.steps} on {args.device} "
          f"({torch.get_num_threads()} threads), images of {args.channels}×{args.size}×{args.size}, "
          f"small_cnn(width={args.width})")
    rates = {}
    for label, detector, count in (("batched", batched, args.images),
                                   ("one at a time", one_by_one, args.reference_images)):
        wall, cpu = timed(lambda: detector.score(model, images[:count], None), device)
        rates[label] = count / wall
        print(f"{label:>14}: {count:5d} images {count / wall:8.1f} images/s "
              f"({wall:.1f} s wall; {cpu:.1f} s CPU, {count / cpu:.1f} images per CPU second)")
    print(f"ratio batched / one at a time: {rates['batched'] / rates['one at a time']:.1f}")


def timed(run, device) -> tuple[float, float]:
    """(wall-clock, CPU) seconds of ``run()``."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - wall, time.process_time() - cpu


if __name__ == "__main__":
    main()
