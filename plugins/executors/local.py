"""One worker process per device on this machine, each running the jobs it is handed."""
import dataclasses
import multiprocessing
import os
import queue
import signal

import kdbench


@dataclasses.dataclass
class Local(kdbench.Executor):
    """Runs the jobs in worker processes on this machine: one per device of ``devices``
    (``cuda:0,cuda:1``), or ``workers`` of them on the run's device (by default one per
    CUDA device, or two on the CPU).  Each worker takes the longest ready job whenever it is
    idle; CPU workers share the cores evenly.  A worker that dies fails the job it was
    running (its claim goes stale at once) and is replaced."""

    name = "local"
    paper = "kdbench's multi-process executor"

    workers: int = 0
    devices: str = ""

    def validate(self):
        kdbench.check_non_negative(self, "workers")

    def worker_devices(self, device: str) -> list[str]:
        import torch

        if self.devices:
            return [d.strip() for d in self.devices.split(",") if d.strip()]
        if self.workers:
            return [device] * self.workers
        if torch.device(device).type == "cuda":
            return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        return [device] * 2

    def execute(self, plan, stages, worker, on_job):
        devices = self.worker_devices(worker.device)
        threads = worker.threads or max(1, (os.cpu_count() or 1) // len(devices))
        context = multiprocessing.get_context("spawn")
        results = context.Queue()
        slots = [Slot(context, dataclasses.replace(worker, device=device, threads=threads), results, index)
                 for index, device in enumerate(devices)]
        graph = kdbench.JobGraph(plan, stages.store)
        interrupted = True
        try:
            while not graph.finished():
                ready = sorted(graph.ready(), key=lambda job: -job.cost)
                for slot in slots:
                    if slot.job is None and ready:
                        slot.assign(ready.pop(0))
                        graph.start(slot.job)
                try:
                    message = results.get(timeout=1.0)
                except queue.Empty:
                    for slot in slots:
                        if slot.job is not None and not slot.process.is_alive():
                            died = f"worker {slot.index} died (exit code {slot.process.exitcode})"
                            self.finish(graph, slot, {key: died for _, key in slot.job.outputs}, on_job)
                            slot.restart()
                    continue
                kind, index, *payload = message
                if kind == "event":
                    stages.reporter.replay(payload[0])
                elif kind == "bad input":
                    raise kdbench.ConfigError(payload[0])
                else:
                    self.finish(graph, slots[index], payload[0], on_job)
            interrupted = False
        finally:
            for slot in slots:
                slot.stop(at_once=interrupted)
        return graph.failed

    @staticmethod
    def finish(graph, slot, failures, on_job):
        job, slot.job = slot.job, None
        graph.finish(job, failures)
        on_job(job, failures)


class Slot:
    """A worker process and the job it is running."""

    def __init__(self, context, worker, results, index):
        self.context, self.worker, self.results, self.index = context, worker, results, index
        self.job = None
        self.restart()

    def restart(self):
        self.tasks = self.context.Queue()
        self.process = self.context.Process(target=work, args=(self.worker, self.tasks, self.results, self.index),
                                            daemon=True, name=f"kdbench-worker-{self.index}")
        self.process.start()

    def assign(self, job):
        self.job = job
        self.tasks.put(job)

    def stop(self, at_once: bool):
        """End the worker: after its current job, or at once (the run was interrupted)."""
        if self.process.is_alive() and not at_once:
            self.tasks.put(None)
            self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join()


def work(worker, tasks, results, index):
    """A worker process: run jobs until told to stop, forwarding progress events.  Ctrl-C is
    the main process's to handle: it ends the workers."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    reporter = kdbench.ForwardingReporter(lambda event: results.put(("event", index, event)))
    stages = worker.stages(reporter)
    while (job := tasks.get()) is not None:
        try:
            results.put(("done", index, kdbench.run_job(stages, job)))
        except kdbench.ConfigError as error:
            results.put(("bad input", index, error.message))


@kdbench.hookimpl
def register_executors(register):
    register(Local)
