"""Training throughput of kdbench's loop against a reference loop in the seeds' style, one run.

The same device, the same models (kdbench's ResNet-18 with the small CIFAR stem and
MobileNetV2, built by its architecture plugin), the same CIFAR-10 JPEG files (the first
``--images`` of the training archive, balanced over the classes) and the same number of
timed steps, after ``--warmup`` untimed ones (the fastest of ``--repeats`` runs of each,
run in turn, so that the load of a shared machine weighs least), for:

1. ``reference``: the loop of the seeds' code (Cognitive Distillation's ``train.py``, with
   its CIFAR-10 transforms in ``datasets/utils.py`` and ``n_workers: 4`` in its configs):
   torchvision ``ImageFolder`` decoding the JPEG files at every epoch, PIL
   ``RandomCrop(32, padding=4)`` + ``RandomHorizontalFlip`` + ``ToTensor`` + ``Normalize``
   in ``DataLoader`` workers, batch 128, fp32 SGD, the loss and accuracy read every step;
2. ``kdbench``: ``kdbench.train`` (the loop every stage runs) at batch 128;
3. ``kdbench`` at the suite's batch size (``--suite``'s budget);
4. ``kdbench compiled``: the same at batch 128 with ``compiled=True`` (the budget's
   ``compile: true``); the compilation happens in the warm-up and is timed apart.

Then distillation: one teacher and ``N`` students (every ``--models`` entry, the ``kd``
distiller), in lock-step through ``kdbench.train`` (each batch augmented once, the
teacher's forward pass computed once for all students), against ``N`` reference-style runs
(one DataLoader and one teacher forward pass per student).  Images/s counts student images.

First, each loop's data path alone, per batch of 128: the reference's decoding and PIL
transforms (one worker's share), kdbench's conversion, crop and flip of a batch already on
the device.  Prints images/s, the ratio to the reference and, on CUDA, the peak memory of
each; ``--csv`` writes the same rows.  Models are freshly initialised: weights do not change
a step's cost.

    python perf/throughput.py --steps 3                     # CPU, a few minutes
    python perf/throughput.py --device cuda --steps 50 --images 25600 --csv throughput.csv
"""
import argparse
import csv
import os
import tarfile
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import kdbench
from kdbench.plugins import PluginHost
from kdbench.registry import load_registry, spec, split_list
from kdbench.training import cross_entropy
from kdbench.image_folder import read_split

REFERENCE_BATCH = 128
SEEDS_WORKERS = 4  # n_workers of every CIFAR-10 config of Cognitive Distillation's code
KD_TEMPERATURE, KD_ALPHA = 4.0, 0.9  # kdbench's kd defaults (Hinton et al. 2015)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=os.environ.get("KDBENCH_CIFAR10", "/work/shared/datasets/cifar10-jpg"),
                        help="CIFAR-10 as ImageFolder (train/<class>/*.jpg) or its train.tar.gz")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", default="resnet18,mobilenetv2_100", help="comma-separated architectures")
    parser.add_argument("--teacher", default="resnet18", help="the distillation teacher")
    parser.add_argument("--suite", default="cifar10-paper", help="the suite whose batch size loop 3 uses")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps of each loop")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before them")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each loop, alternated; the fastest counts")
    parser.add_argument("--images", type=int, default=0,
                        help="training images to read (default: enough for warm-up and timed steps)")
    parser.add_argument("--workers", type=int, default=SEEDS_WORKERS, help="DataLoader workers of the reference")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile loop")
    parser.add_argument("--no-distillation", action="store_true", help="skip the lock-step benchmark")
    parser.add_argument("--csv", help="also write the figures to this CSV file")
    args = parser.parse_args()
    for name in ("steps", "warmup", "repeats"):
        if getattr(args, name) < (0 if name == "warmup" else 1):
            parser.error(f"--{name} is too small")
    return args


def extract(root: Path, count: int, into: Path) -> Path:
    """An ImageFolder ``into/train`` of the first ``count`` training JPEGs, as many per class,
    in file-name order, from ``root/train/`` or ``root/train.tar.gz``."""
    per_class = -(-count // 10)
    target = into / "train"
    if (root / "train").is_dir():
        for folder in sorted(p for p in (root / "train").iterdir() if p.is_dir()):
            (target / folder.name).mkdir(parents=True)
            for path in sorted(folder.iterdir())[:per_class]:
                (target / folder.name / path.name).write_bytes(path.read_bytes())
        return target
    archive = root / "train.tar.gz"
    if not archive.exists():
        raise SystemExit(f"no CIFAR-10 at {root} (expected train/ or train.tar.gz)")
    taken = {}
    with tarfile.open(archive, "r:gz") as tar:
        members = sorted((m for m in tar if m.isfile() and m.name.endswith(".jpg")), key=lambda m: m.name)
        for member in members:
            cls = Path(member.name).parent.name
            if taken.get(cls, 0) < per_class:
                taken[cls] = taken.get(cls, 0) + 1
                (target / cls).mkdir(parents=True, exist_ok=True)
                (target / cls / Path(member.name).name).write_bytes(tar.extractfile(member).read())
    return target


class Clock:
    """Wall-clock seconds and peak accelerator memory of a block, synchronised on CUDA."""

    def __init__(self, device):
        self.cuda = torch.device(device).type == "cuda"

    def __enter__(self):
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize()
        self.seconds = time.perf_counter() - self.started
        self.peak_mib = torch.cuda.max_memory_allocated() / 2**20 if self.cuda else None


def reference_loader(folder: Path, info, workers: int, device):
    from torch.utils.data import DataLoader
    from torchvision import transforms
    from torchvision.datasets import ImageFolder

    transform = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                                    transforms.ToTensor(), transforms.Normalize(info.mean, info.std)])
    return DataLoader(ImageFolder(str(folder), transform), batch_size=REFERENCE_BATCH, shuffle=True,
                      num_workers=workers, pin_memory=torch.device(device).type == "cuda")


def reference_run(loader, body, device, warmup: int, steps: int, teacher=None) -> Clock:
    """The seeds' loop on a timm module (normalisation in the transform): ``warmup`` untimed
    steps, then ``steps`` timed ones.  With ``teacher`` the loss is Hinton's KD with kdbench's
    ``kd`` defaults."""
    body.to(device).train()
    optimizer = torch.optim.SGD(body.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    batches = iter(loader)
    clock = Clock(device)
    for step in range(warmup + steps):
        if step == warmup:
            clock.__enter__()
        images, labels = next(batches)
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        logits = body(images)
        loss = F.cross_entropy(logits, labels)
        if teacher is not None:
            with torch.no_grad():
                soft = teacher(images)
            t = KD_TEMPERATURE
            kl = F.kl_div(F.log_softmax(logits / t, 1), F.softmax(soft / t, 1), reduction="batchmean")
            loss = KD_ALPHA * t * t * kl + (1 - KD_ALPHA) * loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss.item(), (logits.argmax(1) == labels).float().mean().item()  # the seeds' meters, every step
    clock.__exit__()
    return clock


def kdbench_run(learners, images, labels, batch: int, warmup: int, steps: int, compiled=False, teacher=None):
    """``kdbench.train`` for ``warmup`` untimed steps (compilation, allocator), then ``steps``
    timed ones on the same models; returns (clock, warm-up seconds)."""
    def run(first, count):
        index = torch.arange(first * batch, (first + count) * batch) % len(images)
        kdbench.train(learners, images[index], labels[index], kdbench.Schedule(epochs=1, batch_size=batch),
                      hflip=True, seed=first, teacher=teacher, compiled=compiled)

    started = time.perf_counter()
    if warmup:
        run(0, warmup)
    warm = time.perf_counter() - started
    with Clock(images.device) as clock:
        run(warmup, steps)
    return clock, warm


def steps_at(batch: int, steps: int) -> int:
    """Timed steps at ``batch`` covering about the images of ``steps`` steps of 128."""
    return max(1, round(steps * REFERENCE_BATCH / batch))


def alternated(measures: list, repeats: int) -> list:
    """The fastest of ``repeats`` runs of each of ``measures`` (each returns a Clock), run in turn
    so that a change in the machine's load hits all of them: the runs least slowed by it."""
    runs = [[] for _ in measures]
    for _ in range(repeats):
        for measure, clocks in zip(measures, runs):
            clocks.append(measure())
    return [min(clocks, key=lambda clock: clock.seconds) for clocks in runs]


def data_only(loader, images, device, batches: int = 5) -> dict:
    """Seconds per batch of 128 of each loop's data path alone: the reference's decoding and PIL
    transforms (what each DataLoader worker does, run here in one process), and kdbench's
    uint8 → float, crop and flip of a batch already on the device."""
    dataset, clock = loader.dataset, Clock(device)
    with clock:
        for i in range(batches * REFERENCE_BATCH):
            dataset[i % len(dataset)]
    reference = clock.seconds / batches
    index = torch.arange(REFERENCE_BATCH, device=device)
    with clock:
        for _ in range(batches):
            kdbench.to_float(kdbench.augment(images[index], True))
    return {"reference": reference, "kdbench": clock.seconds / batches}


def main():
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device here")
    device = torch.device(args.device)
    registry = load_registry()
    host = PluginHost(registry.plugins)
    suite_batch = registry.suite(args.suite).budget["batch_size"]
    models = split_list(args.models)
    count = args.images or max(REFERENCE_BATCH * (args.warmup + args.steps),
                               suite_batch * (args.warmup + steps_at(suite_batch, args.steps)))
    rows = []

    def report(loop, model, batch, steps, students, seconds, peak_mib=None, reference=None, note=""):
        rate = students * steps * batch / seconds
        ratio = rate / reference["images_per_s"] if reference else 1.0
        row = {"loop": loop, "model": model, "batch": batch, "students": students, "steps": steps,
               "seconds": round(seconds, 6), "images_per_s": round(rate, 1), "ratio": round(ratio, 2),
               "peak_mib": None if peak_mib is None else round(peak_mib)}
        rows.append(row)
        memory = "" if peak_mib is None else f"  peak {peak_mib:7.0f} MiB"
        print(f"  {loop:<28} batch {batch:>4}  {rate:9.1f} images/s  × {ratio:5.2f}{memory}{note}", flush=True)
        return row

    with tempfile.TemporaryDirectory(prefix="kdbench-throughput-") as scratch:
        folder = extract(Path(args.root), count, Path(scratch))
        images, labels, _ = read_split(folder.parent, "train", 32, 0)  # the same files, decoded once
        mean, std = kdbench.channel_statistics(images)
        info = kdbench.DatasetInfo("cifar10", 10, 3, 32, mean, std, tuple(str(i) for i in range(10)))
        images, labels = images.to(device), labels.to(device)
        loader = reference_loader(folder, info, args.workers, device)
        print(f"device {device} ({torch.get_num_threads()} threads), {len(images)} CIFAR-10 JPEGs from {args.root}; "
              f"{args.warmup} untimed + {args.steps} timed steps of 128 (or as many images at batch {suite_batch}), "
              f"best of {args.repeats}; reference: {args.workers} DataLoader workers; "
              f"× = images/s against the reference loop", flush=True)

        costs = data_only(loader, images, device)
        print("data path alone, per batch of 128")
        reference = report("data: reference", "", REFERENCE_BATCH, 1, 1, costs["reference"],
                           note="  (JPEG decoding + PIL crop, flip, ToTensor, Normalize; per worker)")
        report("data: kdbench", "", REFERENCE_BATCH, 1, 1, costs["kdbench"], reference=reference,
               note=f"  (uint8 → float, crop and flip on {device})")

        def network(name):
            torch.manual_seed(0)
            entry = spec(name, "--models")
            return host.create("architecture", entry.name, entry.kwargs)[1].network(info).to(device)

        def kdbench_loop(model, batch, compiled=False, warm=None):
            def measure():
                learner = kdbench.Learner(network(model), cross_entropy)
                clock, seconds = kdbench_run([learner], images, labels, batch, max(args.warmup, compiled),
                                             steps_at(batch, args.steps), compiled=compiled)
                if warm is not None:
                    warm.append(seconds)
                return clock
            return measure

        for model in models:
            print(model)
            warm = []
            loops = [("reference (seeds' style)", REFERENCE_BATCH, args.steps,
                      lambda: reference_run(loader, network(model).body, device, args.warmup, args.steps))]
            loops += [("kdbench", batch, steps_at(batch, args.steps), kdbench_loop(model, batch))
                      for batch in dict.fromkeys([REFERENCE_BATCH, suite_batch])]
            if not args.no_compile:
                loops.append(("kdbench compiled", REFERENCE_BATCH, args.steps,
                              kdbench_loop(model, REFERENCE_BATCH, True, warm)))
            reference = None
            for (loop, batch, steps, _), clock in zip(loops, alternated([m for *_, m in loops], args.repeats)):
                note = f"  (first warm-up, compiling: {warm[0]:.0f} s)" if loop == "kdbench compiled" else ""
                row = report(loop, model, batch, steps, 1, clock.seconds, clock.peak_mib, reference, note)
                reference = reference or row

        if not args.no_distillation:
            distill(args, host, network, models, loader, images, labels, device, report)
    if args.csv:
        with open(args.csv, "w", newline="") as out:
            writer = csv.DictWriter(out, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


def distill(args, host, network, models, loader, images, labels, device, report):
    """N reference-style KD runs against one lock-step group of the same N students."""
    teacher = network(args.teacher).eval()
    n, names = len(models), "+".join(models)
    print(f"distillation: teacher {args.teacher}, {n} kd students ({', '.join(models)})")
    kd = host.create("distiller", "kd", {})[1]

    def separate(model):
        return lambda: reference_run(loader, network(model).body, device, args.warmup, args.steps, teacher.body)

    def lockstep():
        learners = [kdbench.Learner(network(model), kd.loss, needs=kd.needs) for model in models]
        return kdbench_run(learners, images, labels, REFERENCE_BATCH, args.warmup, args.steps, teacher=teacher)[0]

    *clocks, clock = alternated([separate(model) for model in models] + [lockstep], args.repeats)
    peaks = [c.peak_mib for c in clocks if c.peak_mib is not None]
    reference = report(f"{n} reference-style runs", names, REFERENCE_BATCH, args.steps, n,
                       sum(c.seconds for c in clocks), max(peaks) if peaks else None)
    report("kdbench lock-step", names, REFERENCE_BATCH, args.steps, n, clock.seconds, clock.peak_mib, reference)


if __name__ == "__main__":
    main()
