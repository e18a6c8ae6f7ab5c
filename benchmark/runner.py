"""The harness: plans a suite's matrix, has an executor run the jobs, assembles the rows.

Planning decides everything before anything is computed (``plan.py``); an executor runs
the jobs whose inputs are stored (``executor.py``, the ``serial``, ``local`` and ``ray``
plugins); every job talks to the others only through the store (``jobs.py``,
``stages.py``); the leaderboard rows are read back from the store (``rows.py``) each time
a job finishes.
"""
from .executor import Worker
from .plan import Plan, plan_suite
from .plugins import PluginHost
from .registry import BASELINE, Suite
from .rows import Rows
from .stages import Reporter, Stages
from .store import Store


class Runner:
    def __init__(self, host: PluginHost, suite: Suite, store: Store, device, reporter: Reporter | None = None,
                 executor=None, threads: int = 0, command: str = ""):
        self.stages = Stages(host, suite, store, device, reporter, command=command)
        self.host, self.suite, self.store = host, suite, store
        self.executor = executor or host.create("executor", "serial")[1]
        self.threads = threads

    @property
    def reporter(self) -> Reporter:
        return self.stages.reporter

    @reporter.setter
    def reporter(self, reporter: Reporter):
        self.stages.reporter = reporter

    def load_data(self):
        """Load the dataset (and the victim's) and check every attack against it (before anything is trained)."""
        data = self.stages.load_data()
        self.stages.load_victim_data()
        for attack in self.suite.attacks:
            if attack.name != BASELINE:
                self.stages.resolve("attack", str(attack)).component.check(data.info)
        return data

    def plan(self) -> Plan:
        self.load_data()
        return plan_suite(self.stages)

    def worker(self) -> Worker:
        return Worker(tuple(self.host.modules), self.suite, str(self.store.root), str(self.stages.device),
                      self.threads, self.stages.command)

    def run(self, on_rows=None, plan: Plan | None = None) -> tuple[list, list]:
        """Run every job; ``on_rows(distillation_rows, detection_rows)`` is called whenever a
        job finishes, with every row finished so far, so a caller can write them."""
        plan = plan or self.plan()
        rows = Rows(plan, self.stages)
        failed, announced = {}, set()

        def finished_rows():
            """Every row finished so far; ``cell_finished`` for those that were not before."""
            distillation, detection = rows.assemble(failed)
            for row in distillation:
                cell = tuple(row[k] for k in ("dataset", "teacher_arch", "student_arch", "attack", "distiller", "seed"))
                if cell not in announced:
                    announced.add(cell)
                    self.host.pm.hook.cell_finished(row=row)
            return distillation, detection

        def on_job(job, failures):
            failed.update(failures)
            if on_rows:
                on_rows(*finished_rows())

        failed.update(self.executor.execute(plan, self.stages, self.worker(), on_job))
        return finished_rows()
