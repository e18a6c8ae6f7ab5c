"""The hooks a kdbench plugin may implement.

Registration hooks receive a ``register`` callable; each call registers one component
class of that kind.  Lifecycle hooks are told what the harness just finished, so that
loggers can be plugins too.
"""
import pluggy

hookspec = pluggy.HookspecMarker("kdbench")
hookimpl = pluggy.HookimplMarker("kdbench")


@hookspec
def register_datasets(register):
    """Register dataset classes (subclasses of ``kdbench.Dataset``)."""


@hookspec
def register_architectures(register):
    """Register architecture classes (subclasses of ``kdbench.Architecture``)."""


@hookspec
def register_attacks(register):
    """Register attack classes (subclasses of ``kdbench.Attack``)."""


@hookspec
def register_distillers(register):
    """Register distiller classes (subclasses of ``kdbench.Distiller``)."""


@hookspec
def register_defenses(register):
    """Register defense classes (subclasses of ``kdbench.Defense``)."""


@hookspec
def register_executors(register):
    """Register executor classes (subclasses of ``kdbench.Executor``)."""


@hookspec
def stage_started(stage, spec_hash, description):
    """A stage (``clean_teacher``, ``teacher``, ``student``, ``evaluation``, ``defense``) is
    being computed; ``spec_hash`` is the key its artifact will be stored under."""


@hookspec
def stage_finished(stage, spec_hash, seconds, cached):
    """A stage ended: computed, or loaded from the store (``cached``)."""


@hookspec
def cell_finished(row):
    """A leaderboard row of ``distillation.csv`` is complete (``row`` is a dict)."""


@hookspec
def epoch_finished(stage, spec_hash, epoch, metrics):
    """A training epoch of the stage stored under ``spec_hash`` ended; ``metrics`` maps names
    (``loss``, ``train_accuracy``) to floats."""
