"""The default executor: every job in this process, one after another, in plan order."""
import dataclasses

import kdbench


@dataclasses.dataclass
class Serial(kdbench.Executor):
    """Runs the jobs in this process on the run's device, in the planner's order (each
    teacher's cells together, so its rows are written as soon as they are finished)."""

    name = "serial"
    paper = "kdbench's in-process executor"

    def execute(self, plan, stages, worker, on_job):
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(worker.threads or threads)
        try:
            graph = kdbench.JobGraph(plan, stages.store)
            while ready := graph.ready():
                job = ready[0]
                failures = kdbench.run_job(stages, job)
                graph.finish(job, failures)
                on_job(job, failures)
        finally:
            torch.set_num_threads(threads)
        return graph.failed


@kdbench.hookimpl
def register_executors(register):
    register(Serial)
