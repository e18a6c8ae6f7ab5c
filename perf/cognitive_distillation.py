"""Images per second of Cognitive Distillation (paper defaults: 100 Adam steps per image).

    python perf/cognitive_distillation.py [--device cpu] [--images 256] [--size 16 --channels 1]

A randomly initialised small_cnn on random images: the cost of the distillation does not
depend on what the network has learned.  Prints wall-clock images/s, and the rate per CPU
second of the process, which on a busy machine (with --threads 1) still tells the speed of
an idle core.
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
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    info = kdbench.DatasetInfo("random", 10, args.channels, args.size, (0.5,) * args.channels, (0.25,) * args.channels,
                               tuple(str(k) for k in range(10)))
    model = SmallCnn(width=args.width).network(info).to(device).eval()
    images = torch.randint(0, 256, (args.images, args.channels, args.size, args.size), dtype=torch.uint8, device=device)
    detector = CognitiveDistillation(output=args.output, steps=args.steps)
    detector.score(model, images[:8], None)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter(), time.process_time()
    detector.score(model, images, None)
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"cognitive_distillation output={args.output} steps={args.steps} on {args.device} "
          f"({torch.get_num_threads()} threads), {args.images} images of {args.channels}×{args.size}×{args.size}, "
          f"small_cnn(width={args.width}): {args.images / wall:.1f} images/s "
          f"({wall:.1f} s wall; {cpu:.1f} s CPU, {args.images / cpu:.1f} images per CPU second)")


if __name__ == "__main__":
    main()
