"""A plugin whose distiller is kd, except that the first process to take a step with it kills
itself (SIGKILL) at that step: a worker dying in the middle of a job."""
import dataclasses
import os
import signal
from pathlib import Path

import kdbench
from kdbench_plugins.distillers.kd import KD


@dataclasses.dataclass
class KdDiesOnce(KD):
    name = "kd_dies_once"
    paper = "none: a test fixture"

    marker: str = ""

    def loss(self, student, teacher, batch):
        if self.marker and not Path(self.marker).exists():
            Path(self.marker).write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        return super().loss(student, teacher, batch)


@kdbench.hookimpl
def register_distillers(register):
    register(KdDiesOnce)
