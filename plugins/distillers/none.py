"""The no-distillation control: the student trained on the victim's labels alone."""
import dataclasses

import torch.nn.functional as F

import kdbench


@dataclasses.dataclass
class NoDistillation(kdbench.Distiller):
    """Cross-entropy on the victim's clean labels, never reading the teacher.

    The control of every distillation method: a student that cannot inherit the backdoor,
    so its ASR is what the trigger earns on its own.  With ``uses_teacher`` False the
    harness skips the teacher's forward pass when a lock-step group has only such students.
    """

    name = "none"
    paper = "No distillation: cross-entropy on the labels alone (the control)"
    uses_teacher = False

    def loss(self, student, teacher, batch):
        return F.cross_entropy(student.logits.float(), batch.labels)


@kdbench.hookimpl
def register_distillers(register):
    register(NoDistillation)
