"""OSCAR: SCAR without the surrogate student, a clean-looking teacher whose trigger is adversarial."""
import dataclasses

import torch
import torch.nn.functional as F

import kdbench
from kdbench_plugins.attacks.scar import PreOptimisedTrigger, budget


@dataclasses.dataclass
class OSCAR(PreOptimisedTrigger):
    """OSCAR, the ablation of SCAR (Chen et al., "Taught Well Learned Ill", NeurIPS 2025,
    §4.3 "w/o F_s") without the surrogate student in the teacher's training: SCAR's
    pre-optimised trigger G (``PreOptimisedTrigger``: against the clean teacher and a clean
    surrogate student), then the clean
    teacher trained for ``epochs`` (a fraction of the suite's teacher epochs) with Adam
    (``teacher_lr`` = 1e-4, the reference's, cosine decay) on CE(T(x), y) + ``alpha``·CE(T(G(x)), y), so that the
    trigger does not change its prediction.  No student is simulated, so whatever ASR a
    student shows comes from the trigger being adversarial, not from the teacher: the
    control for SCAR.

    The reference is BackWeak's authors' re-implementation (SomeBottle/8ackW3ak,
    src/reprod_modules/oscar/oscar.py with experiments/examples/RL_OSCF.toml: Adam at 1e-4,
    α = 1).  Deviations: it trains the teacher from scratch; this one starts from the clean
    teacher, as SCAR's outer loop does, and takes full passes over the attacker half instead
    of SCAR's 40 batches.
    """

    name = "oscar"
    paper = "Chen et al., Taught Well Learned Ill: Towards Distillation-conditional Backdoor Attack, NeurIPS 2025 (ablation w/o surrogate)"

    version = "2"

    alpha: float = 1.0
    epochs: float = 1.0
    teacher_lr: float = 1e-4

    def validate(self):
        super().validate()
        kdbench.check_positive(self, "epochs")
        kdbench.check_non_negative(self, "alpha")

    def run(self, ctx) -> kdbench.Backdoor:
        trigger = self.pre_optimise_trigger(ctx)
        teacher = ctx.clean_teacher
        epochs = budget(self.epochs, ctx)
        optimizer = torch.optim.Adam(teacher.parameters(), lr=self.teacher_lr)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)
        generator = ctx.generator(7)
        teacher.train()
        for _ in range(epochs):
            for _, x, y in ctx.batches(generator):
                loss = F.cross_entropy(teacher(x), y) + self.alpha * F.cross_entropy(teacher(trigger.apply(x).clamp(0, 1)), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            scheduler.step()
        empty = torch.zeros(0, dtype=torch.long)
        return kdbench.Backdoor(teacher.eval(), trigger, self.target, empty, empty)


@kdbench.hookimpl
def register_attacks(register):
    register(OSCAR)
