"""kdbench: does a backdoor hidden in a teacher survive knowledge distillation, and can a defender see it?

The public API for plugin authors: the component bases, the ``hookimpl`` marker and the
helpers a component may use.  Built-in plugins use nothing else.

Names are imported on first use (PEP 562), so that ``kdbench --help`` and commands that
train nothing do not pay for importing torch.
"""
import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "attack": ["Attack", "AttackContext", "Backdoor", "PoisoningAttack", "Trigger"],
    "component": ["Component", "check_non_negative", "check_positive", "check_range"],
    "data": ["Dataset", "DatasetInfo", "ImageData", "augment", "batch_count", "batches", "data_root", "channel_statistics",
             "fits_on_device", "place", "put", "quantize", "random_resized_crop", "take", "to_float"],
    "defense": ["DefenderData", "Defense", "InputDetector", "Mitigation", "ModelDetector", "TrainingDataDetector"],
    "distiller": ["Distiller"],
    "errors": ["ConfigError"],
    "executor": ["Executor", "ForwardingReporter", "JobGraph", "Worker", "run_job"],
    "features": ["common_size", "embedding", "match_size", "matched_stages", "penultimate", "pool_to",
                 "require_maps", "stage_at", "stage_indices"],
    "forgetting": ["ForgettingEvents"],
    "hookspecs": ["hookimpl"],
    "image_folder": ["load_image_folder", "read_images", "read_split"],
    "network": ["Architecture", "Network", "Outputs", "layers_in_forward_order"],
    "stages": ["Reporter"],
    "store": ["cache_tensors"],
    "triggers": ["AdditiveTrigger", "PatchTrigger"],
    "training": ["Diverged", "Learner", "Poison", "Schedule", "channels_last", "device_of", "logits", "predict",
                 "scheduled_sgd", "train"],
    "visibility": ["perceptual_distances", "perceptual_metric"],
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'kdbench' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
