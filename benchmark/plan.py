"""The planner: a suite becomes a graph of stage jobs before anything is computed.

Each job names the artifacts it stores (their content keys), the jobs whose artifacts it
reads, and roughly what it costs (epochs × images), so that an executor can run whatever
is ready, longest first.  The graph is plain data: it prints, pickles and travels to a
worker, which runs a job with nothing but the store and the job itself.
"""
import dataclasses

from .registry import BASELINE, Suite


@dataclasses.dataclass(frozen=True)
class Job:
    """One unit of work: ``stage`` is ``clean_teacher``, ``teacher``, ``students`` (the
    lock-step group of one teacher), ``evaluation`` or ``defense``; ``args`` are the suite
    labels it runs on; ``inputs`` the keys of the artifacts it reads, ``outputs`` the
    (stage, key) of those it stores."""

    stage: str
    key: str
    args: dict
    inputs: tuple
    outputs: tuple
    cost: float
    description: str


@dataclasses.dataclass
class Plan:
    suite: Suite
    jobs: dict  # key → Job, every job after the jobs that store its inputs
    cells: list  # one per distillation row: its labels and the keys of what it reads
    detections: list  # one per detection row

    def stored(self, store) -> set:
        """Keys of the jobs whose artifacts are all in the store already."""
        return {key for key, job in self.jobs.items() if all(store.has(*output) for output in job.outputs)}

    def summary(self, store) -> dict:
        """Jobs per stage: how many in all, how many stored."""
        stored, counts = self.stored(store), {}
        for key, job in self.jobs.items():
            total, done = counts.get(job.stage, (0, 0))
            counts[job.stage] = (total + 1, done + (key in stored))
        return counts


def plan_suite(stages) -> Plan:
    """Every job and row of ``stages.suite`` (``stages``: a ``kdbench.stages.Stages``)."""
    suite, data = stages.suite, stages.load_data()
    budget = suite.budget
    attacker = len(data.train_images) * budget["attacker_fraction"]
    victim_data = stages.load_victim_data()
    victim = len(victim_data.train_images) if victim_data else len(data.train_images) - attacker
    jobs, cells, detections = {}, [], []

    def add(stage, key, args, inputs, outputs, cost, description):
        jobs.setdefault(key, Job(stage, key, args, tuple(inputs), tuple(outputs), cost, description))
        return key

    distillers = [stages.resolve("distiller", str(s)) for s in suite.distillers]
    students = [stages.resolve("architecture", str(s)) for s in suite.students]
    attacks = [stages.resolve("attack", str(s)) for s in suite.attacks if s.name != BASELINE]
    defenses = [stages.resolve("defense", str(s)) for s in suite.defenses]
    victim_label = (stages.victim_dataset or stages.dataset).label  # the dataset the students saw
    for seed in suite.seeds:
        for arch in (stages.resolve("architecture", str(s)) for s in suite.teachers):
            clean = stages.clean_teacher_key(seed, arch)
            add("clean_teacher", clean, {"seed": seed, "arch": arch.label}, [], [("clean_teacher", clean)],
                budget["teacher_epochs"] * attacker, f"clean teacher {arch.label} (seed {seed})")
            teachers, student_keys = {BASELINE: clean}, {}

            def evaluation(model, trigger_attack):
                """The evaluation job of ``model`` (a dict naming it) under ``trigger_attack``'s trigger."""
                model_key = _model_key(model, teachers, student_keys)
                trigger = teachers[trigger_attack] if trigger_attack != BASELINE else None
                key = stages.evaluation_key(model_key, trigger)
                inputs = [model_key] + ([trigger] if trigger else [])
                return add("evaluation", key, {"seed": seed, "arch": arch.label, "trigger": _attack(trigger_attack),
                                               "model": model}, inputs, [("evaluation", key)],
                           len(data.test_images) / 100, f"evaluation of {_describe(model)} (seed {seed})")

            for label, attack in [(BASELINE, None)] + [(a.label, a) for a in attacks]:
                # each teacher's jobs together, so that a serial run finishes its rows early
                if attack is not None:
                    key = stages.teacher_key(seed, arch, attack)
                    needs = [clean] if attack.registration.cls.needs_clean_teacher else []
                    teachers[label] = add("teacher", key, {"seed": seed, "arch": arch.label, "attack": label},
                                          needs, [("teacher", key)], 2 * budget["teacher_epochs"] * attacker,
                                          f"{label} teacher {arch.label} (seed {seed})")
                members = {(d.label, s.label): stages.student_key(seed, teachers[label], d, s)
                           for d in distillers for s in students}
                student_keys[label] = members
                add("students", "students-" + teachers[label],
                                    {"seed": seed, "arch": arch.label, "attack": _attack(label)},
                                    [teachers[label]], [("student", k) for k in members.values()],
                                    budget["student_epochs"] * victim * len(members),
                                    f"{len(members)} student(s) of the {label} teacher {arch.label} (seed {seed})")
                for distiller in distillers:
                    for student in students:
                        row = {"dataset": stages.dataset.label, "victim_dataset": victim_label,
                               "teacher_arch": arch.label, "student_arch": student.label,
                               "attack": label, "distiller": distiller.label, "seed": seed}
                        model = {"attack": _attack(label), "distiller": distiller.label, "student": student.label}
                        evaluations = {"teacher": evaluation({"attack": _attack(label)}, label),
                                       "student": evaluation(model, label)}
                        if attack is not None:
                            evaluations["control_student"] = evaluation(dict(model, attack=None), label)
                            evaluations["clean_teacher"] = evaluation({"attack": None}, label)
                        cells.append({"row": row, "teacher": teachers[label],
                                      "student": members[distiller.label, student.label], "evaluations": evaluations})
                        for defense in defenses:
                            family = defense.registration.cls.family
                            if attack is None and family in ("input", "training-data"):
                                continue  # no trigger, no poisoned samples: nothing to detect
                            for role, inspected in (("teacher", {"attack": _attack(label)}), ("student", model)):
                                model_key = _model_key(inspected, teachers, student_keys)
                                key = stages.defense_key(seed, defense, model_key, teachers[label] if attack else None)
                                inputs = [model_key, teachers[label]]
                                if family == "mitigation":
                                    inputs.append(evaluation(inspected, label))
                                add("defense", key, {"seed": seed, "arch": arch.label, "attack": _attack(label),
                                                     "defense": defense.label, "model": inspected}, inputs,
                                    [("defense", key)], len(data.test_images) / 10,
                                    f"{defense.label} on {_describe(inspected)} (seed {seed})")
                                detections.append({"row": dict(row, defense=defense.label, family=family, model=role),
                                                   "needs": [*inputs, key]})
    return Plan(suite, jobs, cells, detections)


def _attack(label: str):
    return None if label == BASELINE else label


def _model_key(model: dict, teachers: dict, student_keys: dict) -> str:
    """The artifact key of the model a dict names: a teacher (``attack``, None for the clean
    one) or a student of it (with ``distiller`` and ``student``)."""
    label = model["attack"] or BASELINE
    if model.get("distiller") is None:
        return teachers[label]
    return student_keys[label][model["distiller"], model["student"]]


def _describe(model: dict) -> str:
    teacher = f"the {model['attack'] or 'clean'} teacher"
    if model.get("distiller") is None:
        return teacher
    return f"the {model['distiller']} student {model['student']} of {teacher}"
