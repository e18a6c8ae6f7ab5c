"""Executors run a plan's jobs: in this process, in one worker per device, or on a cluster.

An executor is a component like the others (``register_executors``).  Whatever it is, it
runs every job whose inputs are stored, reports each finished job to ``on_job`` (the
leaderboard is rewritten then), and fails a job whose input failed with that input's error.
Failure semantics stay the harness's: a failing job fails its own cells, the others go on;
bad input (``ConfigError``) stops the run.
"""
import dataclasses
from typing import Callable, ClassVar

from .component import Component
from .plan import Job, Plan
from .registry import Suite
from .stages import Reporter, Stages, describe


@dataclasses.dataclass(frozen=True)
class Worker:
    """What a worker process needs to rebuild the harness: plain, picklable data."""

    plugins: tuple  # the registry's plugin modules
    suite: Suite
    workdir: str
    device: str
    threads: int = 0  # torch threads of the worker (0: torch's default)
    command: str = ""  # the kdbench command line of the run

    def stages(self, reporter: Reporter | None = None) -> Stages:
        """The harness of this process for this worker (built once per process)."""
        import torch

        from .plugins import PluginHost
        from .store import Store

        if not _THIS_PROCESS or _THIS_PROCESS[0] != self:
            if self.threads:
                torch.set_num_threads(self.threads)
            stages = Stages(PluginHost(self.plugins), self.suite, Store(self.workdir), self.device, command=self.command)
            _THIS_PROCESS[:] = [self, stages]
        stages = _THIS_PROCESS[1]
        stages.reporter = reporter or Reporter()
        return stages


_THIS_PROCESS: list = []  # the worker this process serves, and its harness


def run_job(stages: Stages, job: Job) -> dict:
    """Run a job; {output key: error as one line} of the outputs it failed to store (empty if
    none).  Bad input is not caught: it stops the run."""
    from .errors import ConfigError
    from .jobs import compute

    try:
        return compute(stages, job)
    except ConfigError:
        raise
    except Exception as error:  # noqa: BLE001 - a failing job fails its own cells
        return {key: describe(error) for _, key in job.outputs}


class JobGraph:
    """Which jobs of a plan are ready (every input stored), running, or finished, and the
    errors of the artifacts that could not be stored (a job whose input failed fails alike)."""

    def __init__(self, plan: Plan, store):
        self.jobs = plan.jobs
        self.stored = {key for job in plan.jobs.values() for stage, key in job.outputs if store.has(stage, key)}
        self.failed: dict[str, str] = {}
        self.running: set[str] = set()
        self.finished_jobs: set[str] = set()

    def ready(self) -> list[Job]:
        """Jobs whose inputs are all stored, in plan order; a job whose input failed fails with its error."""
        ready = []
        for key, job in self.jobs.items():
            if key in self.finished_jobs or key in self.running:
                continue
            if all(output in self.stored for _, output in job.outputs):
                self.finished_jobs.add(key)
                continue
            failed_input = next((i for i in job.inputs if i in self.failed), None)
            if failed_input is not None:
                self.finish(job, {output: self.failed[failed_input] for _, output in job.outputs})
            elif all(i in self.stored for i in job.inputs):
                ready.append(job)
        return ready

    def start(self, job: Job):
        self.running.add(job.key)

    def finish(self, job: Job, failures: dict):
        self.running.discard(job.key)
        self.finished_jobs.add(job.key)
        for _, output in job.outputs:
            if output in failures:
                self.failed[output] = failures[output]
            else:
                self.stored.add(output)

    def finished(self) -> bool:
        """Whether every job has finished (a job whose input failed counts as finished)."""
        self.ready()
        return len(self.finished_jobs) == len(self.jobs)


@dataclasses.dataclass
class Executor(Component):
    """An executor plugin: ``execute`` runs a plan's jobs, calls ``on_job(job, failures)``
    as each finishes, and returns {artifact key: error} of every artifact that could not be
    stored.  ``stages`` is the harness of this process (its reporter shows progress),
    ``worker`` what a worker process needs to build its own."""

    kind: ClassVar[str] = "executor"

    def execute(self, plan: Plan, stages: Stages, worker: Worker,
                on_job: Callable[[Job, str | None], None]) -> dict:
        raise NotImplementedError


class ForwardingReporter(Reporter):
    """A worker's reporter: sends every event to ``send(event tuple)`` for the main process."""

    def __init__(self, send):
        self.send = send

    def stage_started(self, stage, key, description, epochs):
        self.send(("stage_started", stage, key, description, epochs))

    def epoch_finished(self, key, epoch, metrics):
        self.send(("epoch_finished", key, epoch, metrics))

    def stage_finished(self, stage, key, description, seconds, cached):
        self.send(("stage_finished", stage, key, description, seconds, cached))

    def message(self, text):
        self.send(("message", text))
