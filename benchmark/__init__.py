"""kdbench: does a backdoor hidden in a teacher survive knowledge distillation, and can a defender see it?

The public API for plugin authors: the component bases, the ``hookimpl`` marker and the
helpers a component may use.  Built-in plugins use nothing else.
"""
__version__ = "0.1.0"

from .attack import Attack, AttackContext, Backdoor, PoisoningAttack, Trigger  # noqa: E402
from .component import Component, check_non_negative, check_positive, check_range  # noqa: E402
from .data import Dataset, DatasetInfo, ImageData, augment, quantize, to_float  # noqa: E402
from .defense import (DefenderData, Defense, InputDetector, Mitigation, ModelDetector,  # noqa: E402
                      TrainingDataDetector)
from .distiller import Distiller  # noqa: E402
from .errors import ConfigError  # noqa: E402
from .network import Architecture, Network, Outputs  # noqa: E402
from .plugins import hookimpl  # noqa: E402
from .store import cache_tensors  # noqa: E402
from .training import Learner, Schedule, logits, predict, train  # noqa: E402

__all__ = [
    "Architecture", "Attack", "AttackContext", "Backdoor", "Component", "ConfigError", "Dataset", "DatasetInfo",
    "DefenderData", "Defense", "Distiller", "ImageData", "InputDetector", "Learner", "Mitigation", "ModelDetector",
    "Network", "Outputs", "PoisoningAttack", "Schedule", "TrainingDataDetector", "Trigger", "augment",
    "cache_tensors", "check_non_negative", "check_positive", "check_range", "hookimpl", "logits", "predict", "quantize", "to_float", "train",
]
