"""Start-up time of the ``kdbench`` command, in fresh processes, against ``import torch``.

Times ``kdbench --version``, ``--help``, ``list``, ``plugins`` and a fully cached rerun of
``kdbench run quick`` (the suite is run once first to fill the work directory, a temporary
one unless ``--workdir`` names one that is already filled), ``--repeats`` times each, and
prints the median and the fastest run of each beside the issue's target, and the ratio of
the median to that of ``python -c "import torch"`` measured in the same run (the cost of
the one import every computing command needs).

    python perf/startup.py
    python perf/startup.py --repeats 3 --workdir /tmp/kdbench-quick
"""
import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGETS = {"--version": 1.0, "--help": 1.0, "list": 4.0, "plugins": 4.0, "run quick (cached)": 8.0}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each command")
    parser.add_argument("--workdir", help="a work directory for quick (filled first if it is not)")
    parser.add_argument("--kdbench", default=str(Path(sys.executable).with_name("kdbench")),
                        help="the kdbench executable (default: the one beside this Python)")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if not Path(args.kdbench).exists():
        found = shutil.which("kdbench")
        if found is None:
            parser.error(f"no kdbench executable at {args.kdbench} nor on PATH")
        args.kdbench = found
    return args


def seconds(command: list, cwd: Path) -> float:
    """Wall-clock seconds of one run of ``command`` in a fresh process; fails if it fails."""
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
    return elapsed


def main():
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="kdbench-startup-") as scratch:
        scratch = Path(scratch)
        workdir = Path(args.workdir) if args.workdir else scratch / "work"
        quick = [args.kdbench, "run", "quick", "--workdir", str(workdir), "--out", str(scratch / "leaderboard")]
        print(f"filling {workdir} with one run of quick ...", flush=True)
        fill = seconds(quick, scratch)
        print(f"  {fill:.1f} s (computed what was not stored)")
        commands = {"import torch": [sys.executable, "-c", "import torch"],
                    "--version": [args.kdbench, "--version"], "--help": [args.kdbench, "--help"],
                    "list": [args.kdbench, "list"], "plugins": [args.kdbench, "plugins"],
                    "run quick (cached)": quick}
        times = {name: [] for name in commands}
        for _ in range(args.repeats):  # interleaved, so that a change in the machine's load hits all
            for name, command in commands.items():
                times[name].append(seconds(command, scratch))
    reference = statistics.median(times["import torch"])
    print(f"\n{args.repeats} runs each, fresh processes; reference: python -c 'import torch'")
    print(f"{'command':<22}{'median s':>10}{'min s':>9}{'target s':>10}{'met':>6}{'÷ import torch':>16}")
    for name, runs in times.items():
        median = statistics.median(runs)
        target = TARGETS.get(name)
        met = "" if target is None else ("yes" if median <= target else "NO")
        shown = "-" if target is None else f"{target:.1f}"
        print(f"{name:<22}{median:>10.2f}{min(runs):>9.2f}{shown:>10}{met:>6}{median / reference:>16.2f}")


if __name__ == "__main__":
    main()
