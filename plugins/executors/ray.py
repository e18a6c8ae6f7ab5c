"""Every job a Ray task, on an existing Ray cluster or a local one."""
import dataclasses

import kdbench


@dataclasses.dataclass
class Ray(kdbench.Executor):
    """Runs each job as a Ray core task (Moritz et al., "Ray: A Distributed Framework for
    Emerging AI Applications", OSDI 2018): submitted as soon as its inputs are stored,
    collected in completion order with ``ray.wait``, retried up to ``max_retries`` times when
    its worker dies.  ``address`` is the cluster's (``auto``: the one this machine belongs
    to; empty: ``RAY_ADDRESS``, or a local cluster started for the run).  A job asks for
    ``gpus_per_job`` GPUs (−1: one on a CUDA run, none on the CPU) and ``cpus_per_job`` CPUs.
    The work directory must be on a filesystem every node mounts: jobs talk only through it.
    """

    name = "ray"
    paper = "Moritz et al., Ray: A Distributed Framework for Emerging AI Applications, OSDI 2018"

    address: str = ""
    gpus_per_job: float = -1.0
    cpus_per_job: float = 1.0
    max_retries: int = 3

    def validate(self):
        kdbench.check_positive(self, "cpus_per_job")
        kdbench.check_non_negative(self, "max_retries")

    def execute(self, plan, stages, worker, on_job):
        try:
            import ray
            from ray.util.queue import Empty, Queue
        except ImportError:
            raise kdbench.ConfigError('the ray executor needs Ray: pip install "kdbench[ray]"') from None
        if not ray.is_initialized():
            ray.init(address=self.address or None, logging_level="ERROR", log_to_driver=False)
        cuda = worker.device.startswith("cuda")
        gpus = (1.0 if cuda else 0.0) if self.gpus_per_job < 0 else self.gpus_per_job
        remote = ray.remote(run_remotely).options(num_cpus=self.cpus_per_job, num_gpus=gpus,
                                                  max_retries=self.max_retries, retry_exceptions=False)
        worker = dataclasses.replace(worker, device="cuda" if cuda else "cpu", threads=max(1, int(self.cpus_per_job)))
        events = Queue()
        graph = kdbench.JobGraph(plan, stages.store)
        pending = {}
        try:
            while not graph.finished():
                for job in sorted(graph.ready(), key=lambda job: -job.cost):
                    pending[remote.remote(worker, job, events)] = job
                    graph.start(job)
                done, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
                while True:
                    try:
                        stages.reporter.replay(events.get_nowait())
                    except Empty:
                        break
                for ref in done:
                    job = pending.pop(ref)
                    try:
                        bad_input, failures = ray.get(ref)
                    except ray.exceptions.RayError as failure:  # its worker died more often than it may be retried
                        error = f"{type(failure).__name__}: {str(failure).splitlines()[0]}"
                        bad_input, failures = None, {key: error for _, key in job.outputs}
                    if bad_input:
                        raise kdbench.ConfigError(bad_input)
                    graph.finish(job, failures)
                    on_job(job, failures)
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)
        return graph.failed


def run_remotely(worker, job, events):
    """A Ray task: (bad input, failures) of one job, forwarding its progress events."""
    stages = worker.stages(kdbench.ForwardingReporter(events.put))
    try:
        return None, kdbench.run_job(stages, job)
    except kdbench.ConfigError as error:
        return error.message, None


@kdbench.hookimpl
def register_executors(register):
    register(Ray)
