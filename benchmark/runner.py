"""The harness: runs a suite's matrix as cached stages and produces the leaderboard rows.

A cell is the chain clean teacher → backdoored teacher → student (and the control
student distilled from the clean teacher) → evaluation → defense.  Every stage is stored
under the hash of its spec and its inputs' hashes, so one clean teacher serves every
attack, one backdoored teacher every distiller, and a second run recomputes nothing.
"""
import copy
import dataclasses
import math
import time
import traceback
from pathlib import Path

import torch

from . import __version__
from .attack import AttackContext
from .data import ImageData, stratified_split, to_float
from .errors import ConfigError
from .metrics import attack_metrics, clean_accuracy, defense_effectiveness, detection_metrics
from .network import Network
from .plugins import PluginHost
from .registry import BASELINE, Suite, spec
from .store import Store, prefixed, spec_hash, unprefixed
from .threat_model import ThreatModel
from .training import Learner, Schedule, cross_entropy, prepare, train

HARNESS_VERSION = "1"


class Reporter:
    """Receives progress; the CLI's shows rich progress bars.  The default says nothing."""

    def stage_started(self, stage: str, description: str, epochs: int): ...

    def epoch_finished(self, epoch: int, metrics: dict): ...

    def stage_finished(self, stage: str, description: str, seconds: float, cached: bool): ...


@dataclasses.dataclass
class Resolved:
    """A suite axis entry: its spec string, registration and configured instance."""

    label: str
    registration: object
    component: object

    @property
    def key(self) -> dict:
        return {"name": self.registration.name, "version": self.registration.version,
                "options": self.component.options()}


@dataclasses.dataclass
class Teacher:
    key: str
    model: Network
    backdoor: dict | None  # trigger, target, poison_indices, poison_labels for attacked teachers
    seconds: float


class Runner:
    def __init__(self, host: PluginHost, suite: Suite, store: Store, device, reporter: Reporter | None = None):
        self.host, self.suite, self.store = host, suite, store
        self.device = torch.device(device)
        self.reporter = reporter or Reporter()
        self.budget = suite.budget
        self.dataset = self._resolve("dataset", suite.dataset)
        self.teachers = [self._resolve("architecture", s) for s in suite.teachers]
        self.students = [self._resolve("architecture", s) for s in suite.students]
        self.attacks = [self._resolve("attack", s) for s in suite.attacks if s.name != BASELINE]
        self.distillers = [self._resolve("distiller", s) for s in suite.distillers]
        self.defenses = [self._resolve("defense", s) for s in suite.defenses]
        self.data: ImageData | None = None

    def _architecture(self, name: str) -> Resolved:
        return self._resolve("architecture", spec(name, "architecture"))

    def _resolve(self, kind, spec) -> Resolved:
        registration, component = self.host.create(kind, spec.name, spec.kwargs)
        return Resolved(str(spec), registration, component)

    # ------------------------------------------------------------------ the matrix

    def load_data(self) -> ImageData:
        """Load the dataset and check every attack against it (before anything is trained)."""
        started = time.perf_counter()
        data = self.dataset.component.load(self.store.root / "datasets")
        if self.budget["max_test"]:
            keep = stratified_split(data.test_labels, 0.5, 0.5, 0).attacker  # a fixed, balanced subset
            keep = keep[: self.budget["max_test"]] if len(keep) > self.budget["max_test"] else keep
            data = dataclasses.replace(data, test_images=data.test_images[keep], test_labels=data.test_labels[keep])
        for attack in self.attacks:
            attack.component.check(data.info)
        self.data = data.to(self.device)
        self.reporter.stage_finished("dataset", self.dataset.label, time.perf_counter() - started, False)
        return self.data

    def run(self, on_rows=None):
        """Run every cell; ``on_rows(distillation_rows, detection_rows)`` is called after each
        teacher's cells, so a caller can write what is finished."""
        data = self.data or self.load_data()
        distillation, detection = [], []
        for seed in self.suite.seeds:
            split = stratified_split(data.train_labels.cpu(), self.budget["attacker_fraction"],
                                     self.budget["defender_fraction"], seed)
            view = ThreatModel(data, split, self.device)
            for teacher_arch in self.teachers:
                try:
                    rows, detections = self._teacher_cells(view, teacher_arch, seed)
                except (KeyboardInterrupt, ConfigError):
                    raise
                except Exception as error:  # noqa: BLE001 - the clean teacher failed: all its cells did
                    rows, detections = self._all_failed(teacher_arch, seed, _describe(error)), []
                distillation += rows
                detection += detections
                if on_rows:
                    on_rows(distillation, _with_model_level_auroc(detection))
        return distillation, _with_model_level_auroc(detection)

    def _teacher_cells(self, view, arch, seed):
        base = self._row_base(arch, seed)
        clean = self.clean_teacher(view, arch, seed)
        teachers = {BASELINE: (clean, None)}
        failures = {}
        for attack in self.attacks:
            try:
                teachers[attack.label] = (self.backdoored_teacher(view, arch, attack, seed, clean), attack)
            except (KeyboardInterrupt, ConfigError):
                raise
            except Exception as error:  # noqa: BLE001 - a failing cell is recorded, the others go on
                failures[attack.label] = _describe(error)
        students = {label: self.students_of(view, teacher, seed) for label, (teacher, _) in teachers.items()}
        rows, detections = [], []
        for attack_label in [BASELINE] + [a.label for a in self.attacks]:
            for distiller in self.distillers:
                for student_arch in self.students:
                    row = dict(base, attack=attack_label, distiller=distiller.label, student_arch=student_arch.label)
                    if attack_label in failures:
                        rows.append(_failed(row, failures[attack_label]))
                        continue
                    teacher, attack = teachers[attack_label]
                    student = students[attack_label].get((distiller.label, student_arch.label))
                    control = students[BASELINE].get((distiller.label, student_arch.label))
                    if isinstance(student, str) or isinstance(control, str):
                        rows.append(_failed(row, student if isinstance(student, str) else control))
                        continue
                    rows.append(self._distillation_row(row, teacher, student, control, attack, distiller))
                    self.host.pm.hook.cell_finished(row=rows[-1])
                    for defense in self.defenses:
                        if attack is None and defense.registration.cls.family in ("input", "training-data"):
                            continue  # no trigger, no poisoned samples: nothing to detect
                        for role, (model, key) in {"teacher": (teacher.model, teacher.key),
                                                   "student": (student[0], student[1])}.items():
                            detections.append(self._detection_row(row, defense, role, model, key, teacher, view))
        return rows, detections

    def _all_failed(self, arch, seed, error) -> list:
        return [_failed(dict(self._row_base(arch, seed), attack=attack, distiller=d.label, student_arch=s.label), error)
                for attack in [BASELINE] + [a.label for a in self.attacks]
                for d in self.distillers for s in self.students]

    def _row_base(self, arch, seed) -> dict:
        return {"dataset": self.dataset.label, "teacher_arch": arch.label, "seed": seed}

    # ------------------------------------------------------------------ stages

    def _data_key(self, seed) -> dict:
        return {"dataset": self.dataset.key, "seed": seed, "harness": HARNESS_VERSION,
                "attacker_fraction": self.budget["attacker_fraction"],
                "defender_fraction": self.budget["defender_fraction"]}

    def _schedule(self, epochs_key: str) -> Schedule:
        return Schedule(epochs=self.budget[epochs_key], batch_size=self.budget["batch_size"], lr=self.budget["lr"])

    def _fit(self, seed, stage):
        """The training function handed to attacks: the harness loop on one model."""
        def fit(model, images, labels, epochs=None, lr_scale=1.0, params=None):
            schedule = self._schedule("teacher_epochs")
            schedule = dataclasses.replace(schedule, epochs=epochs or schedule.epochs, lr=schedule.lr * lr_scale)
            learner = Learner(prepare(model, self.device), cross_entropy, params)
            return train([learner], images, labels, schedule, hflip=self.data.info.hflip, seed=seed,
                         on_epoch=self._on_epoch(stage))[0]
        return fit

    def _on_epoch(self, stage):
        def on_epoch(epoch, metrics):
            self.reporter.epoch_finished(epoch, metrics)
            self.host.pm.hook.epoch_finished(stage=stage, epoch=epoch, metrics=metrics)
        return on_epoch

    def _stage(self, stage, key, description, epochs, compute):
        """Load the stage's artifact, or compute and store it; returns (tensors, meta, cached)."""
        if self.store.has(stage, key):
            tensors, meta = self.store.load(stage, key, self.device)
            self._finished(stage, description, key, meta["seconds"], True)
            return tensors, meta
        self.reporter.stage_started(stage, description, epochs)
        started = time.perf_counter()
        tensors, meta = compute()
        meta = dict(meta, seconds=round(time.perf_counter() - started, 3), device=_device_name(self.device))
        self.store.save(stage, key, tensors, meta)
        self._finished(stage, description, key, meta["seconds"], False)
        return tensors, meta

    def _finished(self, stage, description, key, seconds, cached):
        self.reporter.stage_finished(stage, description, seconds, cached)
        self.host.pm.hook.stage_finished(stage=stage, spec_hash=key, seconds=seconds, cached=cached)

    def _new_network(self, arch, seed) -> Network:
        torch.manual_seed(seed)
        return arch.component.network(self.data.info).to(self.device)

    def clean_teacher(self, view, arch, seed) -> Teacher:
        key = spec_hash({"stage": "clean_teacher", "data": self._data_key(seed), "arch": arch.key,
                         "schedule": dataclasses.asdict(self._schedule("teacher_epochs"))})
        model = self._new_network(arch, seed)

        def compute():
            fit = self._fit(seed, "clean_teacher")
            fit(model, view.attacker_images, view.attacker_labels)
            return prefixed("model", model.state_dict()), {}

        tensors, meta = self._stage("clean_teacher", key, f"clean teacher {arch.label}",
                                    self.budget["teacher_epochs"], compute)
        model.load_state_dict(unprefixed("model", tensors))
        return Teacher(key, model.eval(), None, meta["seconds"])

    def backdoored_teacher(self, view, arch, attack, seed, clean: Teacher) -> Teacher:
        needs_clean = attack.registration.cls.needs_clean_teacher
        key = spec_hash({"stage": "teacher", "data": self._data_key(seed), "arch": arch.key, "attack": attack.key,
                         "schedule": dataclasses.asdict(self._schedule("teacher_epochs")),
                         "clean_teacher": clean.key if needs_clean else None})
        info = self.data.info

        def compute():
            ctx = AttackContext(info, view.attacker_images, view.attacker_labels,
                                new_model=lambda name=None: self._new_network(self._architecture(name) if name else arch, seed),
                                train=self._fit(seed, "teacher"),
                                epochs=self.budget["teacher_epochs"], batch_size=self.budget["batch_size"],
                                device=self.device, seed=seed,
                                clean_teacher=copy.deepcopy(clean.model) if needs_clean else None)
            torch.manual_seed(seed)  # attacks that draw from the global generator repeat themselves
            backdoor = attack.component.run(ctx)
            tensors = {**prefixed("model", backdoor.teacher.state_dict()),
                       **prefixed("trigger", backdoor.trigger.state_dict()),
                       "poison_indices": backdoor.poison_indices.cpu().long(),
                       "poison_labels": backdoor.poison_labels.cpu().long()}
            return tensors, {"target": backdoor.target}

        tensors, meta = self._stage("teacher", key, f"{attack.label} teacher {arch.label}",
                                    self.budget["teacher_epochs"], compute)
        model = arch.component.network(info).to(self.device)
        model.load_state_dict(unprefixed("model", tensors))
        trigger = attack.component.build_trigger(info).to(self.device)
        trigger.load_state_dict(unprefixed("trigger", tensors))
        backdoor = {"trigger": trigger.eval(), "target": meta["target"],
                    "poison_indices": tensors["poison_indices"], "poison_labels": tensors["poison_labels"]}
        return Teacher(key, model.eval(), backdoor, meta["seconds"])

    def students_of(self, view, teacher: Teacher, seed) -> dict:
        """Every (distiller, student architecture) student of one teacher, trained in lock-step.

        Returns {(distiller label, student label): (deployed model, key, seconds)} and, for a
        student that failed, its error string in place of the tuple.
        """
        schedule = self._schedule("student_epochs")
        jobs = {}
        for distiller in self.distillers:
            for arch in self.students:
                key = spec_hash({"stage": "student", "teacher": teacher.key, "distiller": distiller.key,
                                 "student": arch.key, "data": self._data_key(seed),
                                 "schedule": dataclasses.asdict(schedule)})
                jobs[(distiller.label, arch.label)] = (distiller, arch, key)
        missing = [job for job in jobs.values() if not self.store.has("student", job[2])]
        if missing:
            try:
                self._distill(view, teacher, missing, seed, schedule)
            except (KeyboardInterrupt, ConfigError):
                raise
            except Exception:  # noqa: BLE001 - fall back to one student at a time to isolate the failure
                for job in missing:
                    if not self.store.has("student", job[2]):
                        try:
                            self._distill(view, teacher, [job], seed, schedule)
                        except (KeyboardInterrupt, ConfigError):
                            raise
                        except Exception as error:  # noqa: BLE001
                            jobs[(job[0].label, job[1].label)] = _describe(error)
        students = {}
        for name, job in jobs.items():
            if isinstance(job, str):
                students[name] = job
                continue
            distiller, arch, key = job
            tensors, meta = self.store.load("student", key, self.device)
            if job not in missing:
                self._finished("student", f"{distiller.label} student {arch.label}", key, meta["seconds"], True)
            model, parts_owner = self._bind(view, teacher, distiller, arch, seed)
            model.load_state_dict(unprefixed("model", tensors))
            parts_owner.parts.load_state_dict(unprefixed("parts", tensors))
            deployed = parts_owner.deploy(model, teacher.model).eval()
            students[name] = (deployed, key, meta["seconds"])
        return students

    def _bind(self, view, teacher, distiller, arch, seed):
        """A fresh student and a fresh distiller instance set up for it."""
        student = self._new_network(arch, seed)
        method = copy.deepcopy(distiller.component)
        probe = to_float(view.victim_images[:8])
        with torch.no_grad():
            teacher_probe = teacher.model.eval().run(probe, method.needs)
            student_probe = student.eval().run(probe, method.needs)
        method.setup(teacher.model, student, teacher_probe, student_probe)
        method.parts.to(self.device)
        return student, method

    def _distill(self, view, teacher, jobs, seed, schedule):
        started = time.perf_counter()
        learners, bound = [], []
        for distiller, arch, key in jobs:
            student, method = self._bind(view, teacher, distiller, arch, seed)
            learners.append(Learner(student, method.loss, list(student.parameters()) + list(method.parts.parameters()),
                                    method.needs))
            bound.append((student, method, key, distiller, arch))
        uses_teacher = any(job[0].registration.cls.uses_teacher for job in jobs)
        names = ", ".join(f"{distiller.label} {arch.label}" for distiller, arch, _ in jobs)
        description = f"student(s) {names} of teacher {teacher.key[:8]}"
        self.reporter.stage_started("student", description, schedule.epochs)
        for _, method, *_ in bound:
            method.parts.train()
        train(learners, view.victim_images, view.victim_labels, schedule, hflip=self.data.info.hflip,
              seed=seed, teacher=teacher.model if uses_teacher else None, on_epoch=self._on_epoch("student"))
        seconds = round((time.perf_counter() - started) / len(jobs), 3)  # lock-step time, shared evenly
        for student, method, key, distiller, arch in bound:
            method.parts.eval()
            tensors = {**prefixed("model", student.state_dict()), **prefixed("parts", method.parts.state_dict())}
            self.store.save("student", key, tensors, {"seconds": seconds, "device": _device_name(self.device),
                                                      "lockstep": len(jobs)})
            self._finished("student", f"{distiller.label} student {arch.label}", key, seconds, False)

    # ------------------------------------------------------------------ measurements

    def evaluate(self, model_key: str, model, teacher: Teacher) -> dict:
        """CA of a model, and its ASR/RA under the teacher's trigger if it has one (cached)."""
        key = spec_hash({"stage": "evaluation", "model": model_key, "trigger": teacher.key if teacher.backdoor else None,
                         "test": self.budget["max_test"]})
        return self._stage("evaluation", key, f"evaluation {model_key[:8]}", 0,
                           lambda: ({}, self._measure(model, teacher.backdoor)))[1]

    def _measure(self, model, backdoor: dict | None) -> dict:
        data = self.data
        result = {"ca": clean_accuracy(model, data.test_images, data.test_labels), "asr": math.nan, "ra": math.nan}
        if backdoor:
            result["asr"], result["ra"] = attack_metrics(model, data.test_images, data.test_labels,
                                                         backdoor["trigger"], backdoor["target"])
        return result

    def _distillation_row(self, row, teacher, student, control, attack, distiller) -> dict:
        model, key, seconds = student
        t = self.evaluate(teacher.key, teacher.model, teacher)
        s = self.evaluate(key, model, teacher)
        row.update(teacher_ca=t["ca"], teacher_asr=t["asr"], teacher_ra=t["ra"],
                   student_ca=s["ca"], student_asr=s["asr"], student_ra=s["ra"])
        if attack is not None:
            c = self.evaluate(control[1], control[0], teacher)
            row.update(control_student_ca=c["ca"], control_student_asr=c["asr"])
        else:
            row.update(control_student_ca=math.nan, control_student_asr=math.nan)
        row.update(teacher_seconds=teacher.seconds, student_seconds=seconds, device=_device_name(self.device),
                   kdbench_version=__version__, torch_version=torch.__version__,
                   attack_plugin=_plugin(attack), distiller_plugin=_plugin(distiller),
                   spec_hash=key, status="ok", error="")
        return row

    def _detection_row(self, row, defense, role, model, model_key, teacher: Teacher, view) -> dict:
        family = defense.registration.cls.family
        out = {k: row[k] for k in ("dataset", "teacher_arch", "student_arch", "attack", "distiller", "seed")}
        out.update(defense=defense.label, family=family, model=role)
        key = spec_hash({"stage": "defense", "defense": defense.key, "model": model_key,
                         "backdoor": teacher.key if teacher.backdoor else None, "data": self._data_key(row["seed"]),
                         "test": self.budget["max_test"]})
        try:
            _, result = self._stage("defense", key, f"{defense.label} on {role} {model_key[:8]}", 0,
                                    lambda: ({}, self._defend(defense.component, family, model, model_key, teacher, view)))
        except (KeyboardInterrupt, ConfigError):
            raise
        except Exception as error:  # noqa: BLE001
            return dict(out, auroc=math.nan, auprc=math.nan, score=math.nan, status="failed", error=_describe(error))
        return dict(out, **result, defense_plugin=_plugin(defense), spec_hash=key, status="ok", error="")

    def _defend(self, defense, family, model, model_key, teacher: Teacher, view) -> dict:
        """Run one defense on one model; the harness alone decides what is positive."""
        result = {"auroc": math.nan, "auprc": math.nan, "score": math.nan}
        calibration = view.defender_data()
        backdoor = teacher.backdoor
        if family == "model":
            score = defense.score(model, calibration)
            result.update(score if isinstance(score, dict) else {"score": float(score)})
        elif family == "mitigation":
            before = self.evaluate(model_key, model, teacher)
            repaired = defense.repair(copy.deepcopy(model), calibration)
            after = self._measure(repaired, backdoor)
            result.update(ca_after=after["ca"], asr_after=after["asr"])
            if backdoor:
                result["der"] = defense_effectiveness(before["ca"], before["asr"], after["ca"], after["asr"])
        elif family == "input":
            data = self.data
            clean = to_float(data.test_images)
            keep = data.test_labels != backdoor["target"]
            with torch.no_grad():
                triggered = backdoor["trigger"](data.test_images[keep])
            images = torch.cat([clean, triggered])
            positive = torch.cat([torch.zeros(len(clean)), torch.ones(len(triggered))]).bool()
            result["auroc"], result["auprc"] = detection_metrics(defense.score(model, images, calibration), positive)
        elif family == "training-data":
            images, labels, positive = view.poisoned_training_set(backdoor)
            scores = defense.score(model, images, labels, calibration)
            result["auroc"], result["auprc"] = detection_metrics(scores, positive)
        else:
            raise ConfigError(f"defense {defense.name} has unknown family {family!r}")
        return result


def _with_model_level_auroc(rows: list) -> list:
    """Model-level detectors score one model each; their AUROC is over the suite's models,
    backdoored (attack other than the baseline) against clean, per defense and role."""
    groups = {}
    for row in rows:
        if row.get("family") == "model" and row.get("status") == "ok":
            groups.setdefault((row["defense"], row["model"]), []).append(row)
    for group in groups.values():
        unique = {(r["teacher_arch"], r["student_arch"], r["attack"], r["distiller"], r["seed"]): r for r in group}
        scores = torch.tensor([r["score"] for r in unique.values()])
        positive = torch.tensor([r["attack"] != BASELINE for r in unique.values()])
        auroc, auprc = detection_metrics(scores, positive)
        for row in group:
            row["auroc"], row["auprc"] = auroc, auprc
    return rows


def _plugin(resolved) -> str:
    if resolved is None:
        return ""
    return f"{resolved.registration.plugin}=={resolved.registration.plugin_version}"


def _device_name(device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device.type


def _describe(error: Exception) -> str:
    where = traceback.extract_tb(error.__traceback__)[-1] if error.__traceback__ else None
    suffix = f" at {Path(where.filename).name}:{where.lineno}" if where else ""
    return f"{type(error).__name__}: {error}{suffix}"


def _failed(row: dict, error: str) -> dict:
    return dict(row, status="failed", error=error)
