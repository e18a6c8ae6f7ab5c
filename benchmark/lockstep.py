"""The students of one teacher, distilled in lock-step: each batch is augmented once and the
teacher's forward pass computed once for all of them (DESIGN.md, "Speed").

Under claims, several workers may share one teacher's students: each trains, as one group,
the students nobody else is training, and waits for the others.  A student that diverges
or fails leaves the group with its error while the others go on.
"""
import copy
import time

import torch

from .errors import ConfigError
from .store import CorruptArtifact, prefixed, unprefixed
from .training import Learner, train


class LockStep:
    def __init__(self, stages, view, teacher, seed: int):
        self.stages, self.view, self.teacher, self.seed = stages, view, teacher, seed

    def students(self, distillers: list, architectures: list) -> dict:
        """{(distiller label, student label): (deployed model, key, seconds), or the error of a
        student that failed}, training those that are not stored."""
        stages = self.stages
        jobs = {(d.label, a.label): (d, a, stages.student_key(self.seed, self.teacher.key, d, a))
                for d in distillers for a in architectures}
        result, failures = {}, {}
        while len(result) < len(jobs):
            failures.update(self.train_missing(list(jobs.values()), failures))
            for name, (distiller, arch, key) in jobs.items():
                if name in result:
                    continue
                if key in failures:
                    result[name] = failures[key]
                    continue
                try:
                    result[name] = stages.remember("student", key, self.description(distiller, arch),
                                                   lambda d=distiller, a=arch, k=key: self.load(d, a, k))
                except CorruptArtifact:
                    pass  # moved aside: trained again on the next pass
        return result

    def description(self, distiller, arch) -> str:
        return f"{distiller.label} student {arch.label} of teacher {self.teacher.key[:8]}"

    def load(self, distiller, arch, key):
        """(deployed model, key, seconds) of a stored student."""
        tensors, meta = self.stages.store.load("student", key, self.stages.device)
        model, method = self.bind(distiller, arch)
        model.load_state_dict(unprefixed("model", tensors))
        method.parts.load_state_dict(unprefixed("parts", tensors))
        self.stages.finished("student", key, self.description(distiller, arch), meta["seconds"], True)
        return method.deploy(model, self.teacher.model).eval(), key, meta["seconds"]

    def train_missing(self, jobs: list, failed: dict) -> dict:
        """Train, as one group, the students that are neither stored nor being trained by another
        worker, then wait for those that are.  Returns {key: error} of those that failed."""
        store, claims, failures = self.stages.store, self.stages.claims, {}
        while True:
            mine, theirs = [], []
            for job in jobs:
                key = job[2]
                if key in failed or key in failures or store.has("student", key):
                    continue
                if not claims.acquire("student", key):
                    theirs.append(job)
                elif store.has("student", key):  # stored between the two checks
                    claims.release("student", key)
                else:
                    mine.append(job)
            if not mine and not theirs:
                return failures
            try:
                failures.update(self.train_group(mine))
            finally:
                for job in mine:
                    claims.release("student", job[2])
            for job in theirs:
                if not claims.wait_for("student", job[2], lambda key=job[2]: store.has("student", key)):
                    claims.release("student", job[2])  # its owner died: trained on the next pass

    def train_group(self, jobs: list) -> dict:
        """``distill``; if the group fails as a whole, each student alone, to find the one that fails."""
        from .stages import describe

        try:
            return self.distill(jobs)
        except ConfigError:
            raise
        except Exception as error:  # noqa: BLE001 - a failing student fails its own cells only
            if len(jobs) == 1:
                return {jobs[0][2]: describe(error)}
            return {k: v for job in jobs for k, v in self.train_group([job]).items()}

    def bind(self, distiller, arch):
        """A fresh student and a fresh distiller instance set up for it."""
        student = self.stages.new_network(arch, self.seed)
        method = copy.deepcopy(distiller.component)
        probe = self.stages.distillation_images(self.view)[:8].to(self.stages.device).float().div(255)
        with torch.no_grad():
            teacher_probe = self.teacher.model.eval().run(probe, method.needs)
            student_probe = student.eval().run(probe, method.needs)
        method.setup(self.teacher.model, student, teacher_probe, student_probe)
        method.parts.to(self.stages.device)
        return student, method

    def distill(self, jobs: list) -> dict:
        """Distil the students of ``jobs`` together and store each; {key: error} of those that diverged."""
        if not jobs:
            return {}
        stages, failures, learners, bound = self.stages, {}, [], []
        schedule = stages.schedule("student_epochs")
        for distiller, arch, key in jobs:
            student, method = self.bind(distiller, arch)
            name = self.description(distiller, arch)
            learners.append(Learner(student, method.loss, list(student.parameters()) + list(method.parts.parameters()),
                                    method.needs, name=name))
            bound.append((student, method, key, distiller, arch, name, []))
        for _, method, key, _, _, name, _ in bound:
            method.parts.train()
            stages.reporter.stage_started("student", key, name, schedule.epochs)
            stages.host.pm.hook.stage_started(stage="student", spec_hash=key, description=name)
        uses_teacher = any(job[3].registration.cls.uses_teacher for job in bound)
        started = time.perf_counter()

        def on_epoch(epoch, metrics):
            for i, (_, _, key, _, _, _, history) in enumerate(bound):
                if key not in failures:
                    stages.on_epoch("student", key, history)(epoch, {k: values[i] for k, values in metrics.items()})

        def on_diverged(index, message):
            failures[bound[index][2]] = message

        images, labels, info = stages.distillation_set(self.view, self.teacher)
        train(learners, images, labels, schedule, hflip=info.hflip, crop=info.crop, seed=self.seed,
              teacher=self.teacher.model if uses_teacher else None, on_epoch=on_epoch, on_diverged=on_diverged,
              compiled=stages.budget["compile"])
        seconds = (time.perf_counter() - started) / len(bound)  # lock-step time, shared evenly
        for student, method, key, distiller, arch, name, history in bound:
            if key in failures:
                continue
            method.parts.eval()
            tensors = {**prefixed("model", student.state_dict()), **prefixed("parts", method.parts.state_dict())}
            meta = {"result": {}, "spec": {"seed": self.seed, "distiller": distiller.label, "student": arch.label},
                    "inputs": [self.teacher.key], "description": name, "history": history, "lockstep": len(bound),
                    **stages.provenance(seconds)}
            stages.store.save("student", key, tensors, meta)
            stages.finished("student", key, name, meta["seconds"], False)
        return failures
