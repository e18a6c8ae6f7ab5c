"""Running one planned job: it reads its inputs from the store and stores its artifacts.

The same function runs every job under every executor, in the main process or in a
worker; ``Stages`` loads an input from the store (or, should it have gone missing or been
found corrupt, computes it again under a claim) and stores what the job computes.
"""
from .plan import Job
from .registry import BASELINE
from .stages import Stages


def compute(stages: Stages, job: Job) -> dict:
    """Compute (or find stored) every artifact of ``job``; {key: error} of those that failed
    while the others were stored (the students of a lock-step group)."""
    args = job.args
    if job.stage == "clean_teacher":
        teacher(stages, args["seed"], args["arch"], None)
    elif job.stage == "teacher":
        teacher(stages, args["seed"], args["arch"], args["attack"])
    elif job.stage == "students":
        source = teacher(stages, args["seed"], args["arch"], args["attack"])
        students = stages.students_of(stages.view(args["seed"]), source, args["seed"])
        return {stages.student_key(args["seed"], source.key, stages.resolve("distiller", distiller),
                                   stages.resolve("architecture", arch)): found
                for (distiller, arch), found in students.items() if isinstance(found, str)}
    elif job.stage == "evaluation":
        key, model = model_of(stages, args)
        stages.evaluate(key, model, teacher(stages, args["seed"], args["arch"], args["trigger"]))
    elif job.stage == "defense":
        key, model = model_of(stages, args)
        defense = stages.resolve("defense", args["defense"])
        role = "teacher" if args["model"].get("distiller") is None else "student"
        source = teacher(stages, args["seed"], args["arch"], args["attack"])
        stages.defense(stages.view(args["seed"]), defense, role, model, key, source, args["seed"])
    else:
        raise ValueError(f"unknown job stage {job.stage!r}")
    return {}


def teacher(stages: Stages, seed: int, arch_label: str, attack_label: str | None):
    """The clean teacher (``attack_label`` None) or the backdoored one, loaded once per process."""
    arch = stages.resolve("architecture", arch_label)
    view = stages.view(seed)
    clean = stages.clean_teacher(view, arch, seed)
    if attack_label is None or attack_label == BASELINE:
        return clean
    return stages.backdoored_teacher(view, arch, stages.resolve("attack", attack_label), seed, clean)


def model_of(stages: Stages, args: dict):
    """(artifact key, model) of the model a job's ``args["model"]`` names."""
    model, seed = args["model"], args["seed"]
    source = teacher(stages, seed, args["arch"], model["attack"])
    if model.get("distiller") is None:
        return source.key, source.model
    distiller = stages.resolve("distiller", model["distiller"])
    student = stages.resolve("architecture", model["student"])
    found = stages.students_of(stages.view(seed), source, seed, [distiller], [student])[distiller.label, student.label]
    if isinstance(found, str):
        raise RuntimeError(found)
    return found[1], found[0]
