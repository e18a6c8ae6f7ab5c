"""Lock-step distillation against separate runs, on the same machine in one run.

Distils N students of one teacher (every distiller × student architecture given) twice:
once in lock-step through the harness's training loop, where each batch is augmented once
and the teacher's forward pass runs once for all the students, and once as N separate runs
of the same loop, one student each.  The two modes alternate ``--repeats`` times; the best
wall-clock (and CPU) time of each and their ratio are printed.

The teacher is a freshly initialised network: its weights do not change the cost of a step.

    python perf/lockstep.py                                   # CPU, small scale (digits)
    python perf/lockstep.py --device cuda --dataset cifar10 --teacher resnet18 \\
        --students resnet18,mobilenetv2_100 --batch-size 512 --epochs 2
"""
import argparse
import time

import torch

import kdbench
from kdbench.plugins import PluginHost
from kdbench.registry import load_registry, spec
from kdbench.store import default_workdir
from kdbench.training import Learner


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--teacher", default="small_cnn")
    parser.add_argument("--students", default="small_cnn(width=16)", help="comma-separated architectures")
    parser.add_argument("--distillers", default="kd,dist,dkd,at", help="comma-separated distillers")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2, help="timed runs of each mode; the best counts")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    return parser.parse_args()


def component(host, kind, text):
    entry = spec(text, kind)
    return host.create(kind, entry.name, entry.kwargs)[1]


def jobs(host, args, info, teacher, probe) -> list[tuple[Learner, bool]]:
    """A fresh student and distiller for every (distiller, student architecture), set up as the
    harness does: (its learner, whether its distiller reads the teacher)."""
    built = []
    for distiller_text in args.distillers.split(","):
        for student_text in args.students.split(","):
            torch.manual_seed(0)
            student = component(host, "architecture", student_text).network(info).to(args.device)
            method = component(host, "distiller", distiller_text)
            with torch.no_grad():
                method.setup(teacher, student, teacher.eval().run(probe, method.needs), student.eval().run(probe, method.needs))
            method.parts.to(args.device).train()
            learner = Learner(student, method.loss, list(student.parameters()) + list(method.parts.parameters()),
                              method.needs)
            built.append((learner, method.uses_teacher))
    return built


def timed(run, device) -> tuple[float, float]:
    """(wall-clock, CPU) seconds of ``run()``."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    host = PluginHost(load_registry().plugins)
    data = component(host, "dataset", args.dataset).load(default_workdir() / "datasets").to(args.device)
    info = data.info
    torch.manual_seed(0)
    teacher = component(host, "architecture", args.teacher).network(info).to(args.device).eval()
    probe = kdbench.to_float(data.train_images[:8])

    def train(group, epochs):
        reads_teacher = any(uses_teacher for _, uses_teacher in group)
        kdbench.train([learner for learner, _ in group], data.train_images, data.train_labels,
                      kdbench.Schedule(epochs=epochs, batch_size=args.batch_size), hflip=info.hflip, seed=0,
                      teacher=teacher if reads_teacher else None)

    def lockstep():
        train(jobs(host, args, info, teacher, probe), args.epochs)

    def separate():
        for job in jobs(host, args, info, teacher, probe):
            train([job], args.epochs)

    train(jobs(host, args, info, teacher, probe)[:1], 1)  # warm-up: allocator, kernels, thread pool
    times = {"lock-step": [], "separate": []}
    for _ in range(args.repeats):  # alternated, so that a change in the machine's load hits both
        times["lock-step"].append(timed(lockstep, args.device))
        times["separate"].append(timed(separate, args.device))
    best = {mode: min(runs) for mode, runs in times.items()}
    n = len(args.distillers.split(",")) * len(args.students.split(","))
    print(f"device {args.device}, {args.dataset} ({len(data.train_images)} images), teacher {args.teacher}, "
          f"{n} students ({args.distillers} × {args.students}), {args.epochs} epochs, batch {args.batch_size}, "
          f"best of {args.repeats}")
    for mode, (wall, cpu) in best.items():
        print(f"{mode:>10}: {wall:8.2f} s wall   {cpu:8.2f} s CPU")
    print(f"ratio separate / lock-step: {best['separate'][0] / best['lock-step'][0]:.2f} (wall), "
          f"{best['separate'][1] / best['lock-step'][1]:.2f} (CPU)")


if __name__ == "__main__":
    main()
