"""The stages of a cell, each computed once and stored under its content key.

A cell is the chain clean teacher → backdoored teacher → students (and the control
students of the clean teacher) → evaluation → defense.  Each stage's key hashes its spec,
its inputs' keys and the components' versions, so one clean teacher serves every attack,
one backdoored teacher every distiller, and a second run recomputes nothing.  ``Stages``
computes one stage at a time, loading its inputs from the store; it is what every executor
runs, in this process or in a worker.
"""
import collections
import copy
import dataclasses
import time

import torch

from . import __version__
from .attack import AttackContext
from .claims import Claims
from .data import ImageData, place, stratified_split
from .detection import defend
from .errors import ConfigError
from .forgetting import ForgettingEvents
from .metrics import measure
from .network import Network
from .registry import Suite, spec
from .store import CorruptArtifact, Store, prefixed, spec_hash, unprefixed
from .threat_model import ThreatModel
from .training import Learner, Schedule, cross_entropy, predict, prepare, train

HARNESS_VERSION = "2"
LOADED = 16  # models a process keeps in memory after loading them


class Reporter:
    """Receives progress; the CLI's shows rich progress bars.  The default says nothing."""

    def stage_started(self, stage: str, key: str, description: str, epochs: int): ...

    def epoch_finished(self, key: str, epoch: int, metrics: dict): ...

    def stage_finished(self, stage: str, key: str, description: str, seconds: float, cached: bool): ...

    def message(self, text: str): ...

    def replay(self, event: tuple):
        """An event a worker forwarded (``ForwardingReporter``), handed to this reporter."""
        getattr(self, event[0])(*event[1:])


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

    @property
    def plugin(self) -> str:
        return f"{self.registration.plugin}=={self.registration.plugin_version}"


@dataclasses.dataclass
class Teacher:
    key: str
    model: Network
    backdoor: dict | None  # trigger, target, poison_indices, poison_labels for attacked teachers
    seconds: float
    forgetting: torch.Tensor | None = None  # a clean teacher's forgetting events per attacker-half sample


class Stages:
    def __init__(self, host, suite: Suite, store: Store, device, reporter: Reporter | None = None,
                 claims: Claims | None = None, command: str = ""):
        self.host, self.suite, self.store = host, suite, store
        self.command = command  # the kdbench command line of the run, recorded with every artifact
        self.device = torch.device(device)
        self.reporter = reporter or Reporter()
        self.claims = claims or Claims(store.root)
        store.on_quarantine = lambda message: self.reporter.message(message)
        self.budget = suite.budget
        self.resolved = {}
        self.dataset = self.resolve("dataset", str(suite.dataset))
        self.victim_dataset = self.resolve("dataset", str(suite.victim_dataset)) if suite.victim_dataset else None
        self.data: ImageData | None = None
        self.victim_data: ImageData | None = None
        self.views = {}
        self.loaded = collections.OrderedDict()  # recently loaded models, by artifact key

    def resolve(self, kind: str, label: str) -> Resolved:
        """A suite entry (``name`` or ``name(key=value,...)``) as its registration and instance."""
        entry = spec(label, kind)
        label = str(entry)
        if (kind, label) not in self.resolved:
            registration, component = self.host.create(kind, entry.name, entry.kwargs)
            self.resolved[kind, label] = Resolved(label, registration, component)
        return self.resolved[kind, label]

    # ------------------------------------------------------------------ data

    def load_data(self) -> ImageData:
        """The dataset on the device (its test split capped at the budget's ``max_test``)."""
        if self.data is None:
            data = self.dataset.component.load(self.store.root / "datasets")
            if self.budget["max_test"]:
                keep = stratified_split(data.test_labels, 0.5, 0.5, 0).attacker  # a fixed, balanced subset
                keep = keep[: self.budget["max_test"]] if len(keep) > self.budget["max_test"] else keep
                data = dataclasses.replace(data, test_images=data.test_images[keep], test_labels=data.test_labels[keep])
            copies = 1 + len(self.suite.seeds)  # the dataset, and each seed's attacker and victim halves
            self.data = place(data, self.device, self.budget["device_data_fraction"], copies)
        return self.data

    def load_victim_data(self) -> ImageData | None:
        """The training split of the suite's ``victim_dataset`` on the device (None without one),
        checked to hold images of the dataset's size and channels."""
        if self.victim_dataset is None or self.victim_data is not None:
            return self.victim_data
        info, victim = self.load_data().info, self.victim_dataset.component.load(self.store.root / "datasets")
        if (victim.info.size, victim.info.channels) != (info.size, info.channels):
            raise ConfigError(f"victim_dataset {self.victim_dataset.label} has {victim.info.size}-px images with "
                              f"{victim.info.channels} channel(s), the dataset {self.dataset.label} "
                              f"{info.size}-px images with {info.channels}: the teacher cannot read them")
        train_only = dataclasses.replace(victim, test_images=victim.test_images[:0], test_labels=victim.test_labels[:0])
        self.victim_data = place(train_only, self.device, self.budget["device_data_fraction"])
        return self.victim_data

    def distillation_images(self, view: ThreatModel) -> torch.Tensor:
        """The images the victim distils on (``distillation_set``'s first part)."""
        victim = self.load_victim_data()
        return view.victim_images if victim is None else victim.train_images

    def distillation_set(self, view: ThreatModel, teacher: "Teacher") -> tuple:
        """(images, labels, info) the victim distils the teacher on: the victim half of the
        dataset, or with a ``victim_dataset`` every training image of that one (BackWeak's code
        distils a CIFAR-10 teacher on CINIC-10; evaluation stays on the dataset's test set).
        The labels are the victim dataset's own where its classes are the dataset's (the same
        class names in the same order); otherwise they mean nothing to the teacher, and the
        distillers' hard-label terms read the teacher's predictions instead."""
        victim = self.load_victim_data()
        if victim is None:
            return view.victim_images, view.victim_labels, self.data.info
        if victim.info.class_names == self.data.info.class_names:
            return victim.train_images, victim.train_labels, victim.info
        return victim.train_images, predict(teacher.model, victim.train_images), victim.info

    def view(self, seed: int) -> ThreatModel:
        if seed not in self.views:
            data = self.load_data()
            split = stratified_split(data.train_labels.cpu(), self.budget["attacker_fraction"],
                                     self.budget["defender_fraction"], seed)
            self.views[seed] = ThreatModel(data, split, self.device)
        return self.views[seed]

    # ------------------------------------------------------------------ keys

    def data_key(self, seed) -> dict:
        return {"dataset": self.dataset.key, "seed": seed, "harness": HARNESS_VERSION,
                "attacker_fraction": self.budget["attacker_fraction"],
                "defender_fraction": self.budget["defender_fraction"]}

    def schedule(self, epochs_key: str) -> Schedule:
        return Schedule(epochs=self.budget[epochs_key], batch_size=self.budget["batch_size"], lr=self.budget["lr"])

    def clean_teacher_key(self, seed, arch: Resolved) -> str:
        return spec_hash({"stage": "clean_teacher", "data": self.data_key(seed), "arch": arch.key,
                          "schedule": dataclasses.asdict(self.schedule("teacher_epochs")), "records": ["forgetting"]})

    def suite_student(self) -> Resolved:
        """The suite's first student architecture: the one attacks that simulate a student use."""
        return self.resolve("architecture", str(self.suite.students[0]))

    def teacher_key(self, seed, arch: Resolved, attack: Resolved) -> str:
        needs_clean = attack.registration.cls.needs_clean_teacher
        spec = {"stage": "teacher", "data": self.data_key(seed), "arch": arch.key, "attack": attack.key,
                "schedule": dataclasses.asdict(self.schedule("teacher_epochs")),
                "clean_teacher": self.clean_teacher_key(seed, arch) if needs_clean else None}
        if attack.component.uses_suite_student:
            spec["suite_student"] = self.suite_student().key
        return spec_hash(spec)

    def student_key(self, seed, teacher_key: str, distiller: Resolved, arch: Resolved) -> str:
        spec = {"stage": "student", "teacher": teacher_key, "distiller": distiller.key,
                "student": arch.key, "data": self.data_key(seed),
                "schedule": dataclasses.asdict(self.schedule("student_epochs"))}
        if self.victim_dataset is not None:
            spec["victim_dataset"] = self.victim_dataset.key
        return spec_hash(spec)

    def evaluation_key(self, model_key: str, trigger_key: str | None) -> str:
        return spec_hash({"stage": "evaluation", "model": model_key, "trigger": trigger_key,
                          "test": self.budget["max_test"]})

    def defense_key(self, seed, defense: Resolved, model_key: str, teacher_key: str | None) -> str:
        return spec_hash({"stage": "defense", "defense": defense.key, "model": model_key, "backdoor": teacher_key,
                          "data": self.data_key(seed), "test": self.budget["max_test"]})

    # ------------------------------------------------------------------ storing and loading

    def stage(self, stage, key, description, epochs, compute, labels: dict, inputs: list):
        """Load the stage's artifact, or claim, compute and store it; returns (tensors, meta).

        ``compute(on_epoch)`` returns (tensors, result): the tensors to store and a JSON-able
        result, kept in the meta as ``result``; ``on_epoch`` records its per-epoch metrics.
        """
        while True:
            if self.store.has(stage, key):
                try:
                    tensors, meta = self.store.load(stage, key, self.device)
                except CorruptArtifact:
                    continue  # moved aside: compute it again
                self.finished(stage, key, description, meta["seconds"], True)
                return tensors, meta
            if self.claims.wait_for(stage, key, lambda: self.store.has(stage, key)):
                continue  # another worker stored it meanwhile
            with self.claims.holding(stage, key):
                return self._compute(stage, key, description, epochs, compute, labels, inputs)

    def _compute(self, stage, key, description, epochs, compute, labels, inputs):
        self.reporter.stage_started(stage, key, description, epochs)
        self.host.pm.hook.stage_started(stage=stage, spec_hash=key, description=description)
        started = time.perf_counter()
        history = []
        tensors, result = compute(self.on_epoch(stage, key, history))
        meta = dict(result=result, spec=labels, inputs=inputs, description=description, history=history,
                    **self.provenance(time.perf_counter() - started))
        self.store.save(stage, key, tensors, meta)
        self.finished(stage, key, description, meta["seconds"], False)
        return tensors, meta

    def provenance(self, seconds: float) -> dict:
        """Where, when and by what a stage was computed, and how to compute it again."""
        return {"seconds": round(seconds, 3), "device": device_name(self.device), "threads": torch.get_num_threads(),
                "compiled": self.budget["compile"],
                "kdbench_version": __version__, "torch_version": torch.__version__,
                "run": {"command": self.command, "suite": self.suite.definition()}}

    def finished(self, stage, key, description, seconds, cached):
        self.reporter.stage_finished(stage, key, description, seconds, cached)
        self.host.pm.hook.stage_finished(stage=stage, spec_hash=key, seconds=seconds, cached=cached)

    def on_epoch(self, stage, key, history: list):
        def on_epoch(epoch, metrics):
            history.append({"epoch": epoch, **metrics})
            self.reporter.epoch_finished(key, epoch, metrics)
            self.host.pm.hook.epoch_finished(stage=stage, spec_hash=key, epoch=epoch, metrics=metrics)
        return on_epoch

    def remember(self, stage: str, key: str, description: str, load):
        """A stored model loaded once per process: kept while recently used (``LOADED`` of them)."""
        if key in self.loaded:
            self.loaded.move_to_end(key)
            found = self.loaded[key]
            self.finished(stage, key, description, found.seconds if isinstance(found, Teacher) else found[2], True)
            return found
        found = self.loaded[key] = load()
        while len(self.loaded) > LOADED:
            self.loaded.popitem(last=False)
        return found

    def new_network(self, arch: Resolved, seed) -> Network:
        torch.manual_seed(seed)
        return arch.component.network(self.load_data().info).to(self.device)

    def _fit(self, seed, name, on_epoch):
        """The training function handed to attacks: the harness loop on one model."""
        def fit(model, images, labels, epochs=None, lr_scale=1.0, params=None, poison=None, after_epoch=None,
                on_batch=None):
            schedule = self.schedule("teacher_epochs")
            schedule = dataclasses.replace(schedule, epochs=epochs or schedule.epochs, lr=schedule.lr * lr_scale)
            learner = Learner(prepare(model, self.device), cross_entropy, params, name=name, on_batch=on_batch)
            return train([learner], images, labels, schedule, hflip=self.data.info.hflip, crop=self.data.info.crop,
                         seed=seed, compiled=self.budget["compile"], poison=poison, after_epoch=after_epoch,
                         on_epoch=lambda epoch, metrics: on_epoch(epoch, {k: v[0] for k, v in metrics.items()}))[0]
        return fit

    # ------------------------------------------------------------------ the stages

    def clean_teacher(self, view, arch: Resolved, seed) -> Teacher:
        key = self.clean_teacher_key(seed, arch)
        return self.remember("clean_teacher", key, f"clean teacher {arch.label}",
                             lambda: self._clean_teacher(view, arch, seed, key))

    def _clean_teacher(self, view, arch, seed, key) -> Teacher:
        model = self.new_network(arch, seed)

        def compute(on_epoch):
            forgetting = ForgettingEvents(len(view.attacker_labels), self.device)
            self._fit(seed, f"clean teacher {arch.label}", on_epoch)(model, view.attacker_images, view.attacker_labels,
                                                                    on_batch=forgetting)
            return {**prefixed("model", model.state_dict()), "forgetting": forgetting.counts.cpu()}, {}

        tensors, meta = self.stage("clean_teacher", key, f"clean teacher {arch.label}", self.budget["teacher_epochs"],
                                   compute, {"seed": seed, "arch": arch.label}, [])
        model.load_state_dict(unprefixed("model", tensors))
        return Teacher(key, model.eval(), None, meta["seconds"], tensors["forgetting"].cpu())

    def backdoored_teacher(self, view, arch: Resolved, attack: Resolved, seed, clean: Teacher) -> Teacher:
        key = self.teacher_key(seed, arch, attack)
        return self.remember("teacher", key, f"{attack.label} teacher {arch.label}",
                             lambda: self._backdoored_teacher(view, arch, attack, seed, clean, key))

    def _backdoored_teacher(self, view, arch, attack, seed, clean, key) -> Teacher:
        needs_clean = attack.registration.cls.needs_clean_teacher
        info = self.data.info

        def compute(on_epoch):
            ctx = AttackContext(info, view.attacker_images, view.attacker_labels,
                                new_model=lambda name=None: self.new_network(self.resolve("architecture", name) if name else arch, seed),
                                train=self._fit(seed, f"{attack.label} teacher {arch.label}", on_epoch),
                                epochs=self.budget["teacher_epochs"], batch_size=self.budget["batch_size"],
                                device=self.device, seed=seed,
                                clean_teacher=copy.deepcopy(clean.model) if needs_clean else None,
                                forgetting=clean.forgetting if needs_clean else None,
                                lr=self.budget["lr"],
                                student=self.suite_student().label if attack.component.uses_suite_student else None)
            torch.manual_seed(seed)  # attacks that draw from the global generator repeat themselves
            backdoor = attack.component.run(ctx)
            tensors = {**prefixed("model", backdoor.teacher.state_dict()),
                       **prefixed("trigger", backdoor.trigger.state_dict()),
                       "poison_indices": backdoor.poison_indices.cpu().long(),
                       "poison_labels": backdoor.poison_labels.cpu().long()}
            return tensors, {"target": backdoor.target}

        tensors, meta = self.stage("teacher", key, f"{attack.label} teacher {arch.label}", self.budget["teacher_epochs"],
                                   compute, {"seed": seed, "arch": arch.label, "attack": attack.label},
                                   [clean.key] if needs_clean else [])
        model = arch.component.network(info).to(self.device)
        model.load_state_dict(unprefixed("model", tensors))
        trigger = attack.component.build_trigger(info).to(self.device)
        trigger.load_state_dict(unprefixed("trigger", tensors))
        backdoor = {"trigger": trigger.eval(), "target": meta["result"]["target"],
                    "poison_indices": tensors["poison_indices"], "poison_labels": tensors["poison_labels"]}
        return Teacher(key, model.eval(), backdoor, meta["seconds"])

    def students_of(self, view, teacher: Teacher, seed, distillers=None, students=None) -> dict:
        """Every (distiller, student architecture) student of one teacher, trained in lock-step.

        Returns {(distiller label, student label): (deployed model, key, seconds)} and, for a
        student that failed, its error string in place of the tuple.
        """
        from .lockstep import LockStep

        distillers = distillers or [self.resolve("distiller", str(s)) for s in self.suite.distillers]
        students = students or [self.resolve("architecture", str(s)) for s in self.suite.students]
        return LockStep(self, view, teacher, seed).students(distillers, students)

    # ------------------------------------------------------------------ measurements

    def evaluate(self, model_key: str, model, teacher: Teacher) -> dict:
        """CA of a model, and its ASR/RA/TITG under the teacher's trigger if it has one (cached)."""
        trigger_key = teacher.key if teacher.backdoor else None
        key = self.evaluation_key(model_key, trigger_key)
        return self.stage("evaluation", key, f"evaluation {model_key[:8]}", 0,
                          lambda on_epoch: ({}, measure(model, self.load_data(), teacher.backdoor)),
                          {}, [model_key] + ([trigger_key] if trigger_key else []))[1]["result"]

    def defense(self, view, defense: Resolved, role: str, model, model_key: str, teacher: Teacher, seed) -> dict:
        """One defense's result on one model (cached)."""
        key = self.defense_key(seed, defense, model_key, teacher.key if teacher.backdoor else None)
        return self.stage("defense", key, f"{defense.label} on {role} {model_key[:8]}", 0,
                          lambda on_epoch: ({}, defend(self, defense.component, model, model_key, teacher, view)),
                          {"defense": defense.label, "role": role, "seed": seed},
                          [model_key] + ([teacher.key] if teacher.backdoor else []))[1]["result"]


def device_name(device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device.type


def describe(error: Exception) -> str:
    """An error as one line: its type, message and where it was raised."""
    import traceback
    from pathlib import Path

    where = traceback.extract_tb(error.__traceback__)[-1] if error.__traceback__ else None
    suffix = f" at {Path(where.filename).name}:{where.lineno}" if where else ""
    return f"{type(error).__name__}: {error}{suffix}"
