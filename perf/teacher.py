"""Train a suite's clean teacher on the attacker half and check its clean accuracy target.

The same job ``kdbench run SUITE`` runs first (the ``clean_teacher`` stage, stored in the
work directory under the same key, so a later run of the suite on that work directory
starts from it).  Prints the epochs, the seconds, the images per second and the clean
accuracy on the test split against ``--target``; ``--csv`` writes one row per epoch
(mean training loss and accuracy) and ``--summary`` one row of the figures.

    python perf/teacher.py                                   # cifar10-paper's teacher, seed 0
    python perf/teacher.py --dataset "cifar10(max_per_class=50,test_per_class=20)" \\
        --teacher "small_cnn(width=8)" --epochs 2 --batch-size 64 --target 0 --device cpu
"""
import argparse
import csv
import sys
from pathlib import Path

import torch

from kdbench.errors import ConfigError
from kdbench.metrics import clean_accuracy
from kdbench.plugins import PluginHost
from kdbench.registry import load_registry, spec
from kdbench.stages import Stages
from kdbench.store import Store, default_workdir


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", default="cifar10-paper")
    parser.add_argument("--dataset", help="replaces the suite's dataset")
    parser.add_argument("--teacher", help="replaces the suite's (first) teacher architecture")
    parser.add_argument("--epochs", type=int, help="replaces the suite's teacher epochs")
    parser.add_argument("--batch-size", type=int, help="replaces the suite's batch size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--target", type=float, default=0.92, help="the clean accuracy the teacher must reach")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--workdir", default=str(default_workdir()))
    parser.add_argument("--csv", help="per-epoch history")
    parser.add_argument("--summary", help="one row: seconds, images/s, clean accuracy, target, met")
    return parser.parse_args()


def main():
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    registry = load_registry()
    suite = registry.suite(args.suite).override(
        dataset=spec(args.dataset, "--dataset") if args.dataset else None,
        teachers=[spec(args.teacher, "--teacher")] if args.teacher else None,
        teacher_epochs=args.epochs, batch_size=args.batch_size)
    stages = Stages(PluginHost(registry.plugins), suite, Store(Path(args.workdir)), args.device)
    view = stages.view(args.seed)
    arch = stages.resolve("architecture", str(suite.teachers[0]))
    teacher = stages.clean_teacher(view, arch, args.seed)
    data = stages.load_data()
    accuracy = clean_accuracy(teacher.model, data.test_images, data.test_labels)
    _, meta = stages.store.load("clean_teacher", teacher.key, stages.device)
    epochs = suite.budget["teacher_epochs"]
    rate = epochs * len(view.attacker_images) / meta["seconds"]
    summary = {"suite": suite.name, "teacher": arch.label, "device": meta["device"], "epochs": epochs,
               "batch_size": suite.budget["batch_size"], "train_images": len(view.attacker_images),
               "seconds": meta["seconds"], "images_per_s": round(rate, 1), "clean_accuracy": round(accuracy, 4),
               "target": args.target, "met": accuracy >= args.target}
    print(f"clean teacher {arch.label} of {suite.name} (seed {args.seed}) on {meta['device']}: {epochs} epochs of "
          f"{len(view.attacker_images)} images in {meta['seconds']:.1f} s ({rate:.0f} images/s); clean accuracy "
          f"{accuracy:.4f} against the target {args.target} ({'met' if summary['met'] else 'NOT met'})")
    if args.csv:
        write(args.csv, meta["history"])
    if args.summary:
        write(args.summary, [summary])


def write(path, rows):
    with open(path, "w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    try:
        main()
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
