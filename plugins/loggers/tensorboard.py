"""TensorBoard logs of every trained stage, built only on kdbench's lifecycle hooks.

On when ``KDBENCH_TENSORBOARD`` names a folder (``kdbench run --log tensorboard[=DIR]`` sets
it for the run and its workers): each computed stage gets its own run, ``<DIR>/<stage>/<key>``
(named by the key it is stored under), with one scalar series per epoch metric (``loss``,
``train_accuracy``), like the per-epoch logs of the original research code.  Stages loaded from
the store train nothing and write nothing.
"""
import os

import kdbench

VARIABLE = "KDBENCH_TENSORBOARD"
_writers = {}


def _writer(stage: str, key: str):
    from torch.utils.tensorboard import SummaryWriter

    if (stage, key) not in _writers:
        _writers[stage, key] = SummaryWriter(log_dir=os.path.join(os.environ[VARIABLE], stage, key))
    return _writers[stage, key]


@kdbench.hookimpl
def epoch_finished(stage, spec_hash, epoch, metrics):
    if os.environ.get(VARIABLE):
        writer = _writer(stage, spec_hash)
        for name, value in metrics.items():
            writer.add_scalar(name, value, epoch)


@kdbench.hookimpl
def stage_finished(stage, spec_hash, seconds, cached):
    writer = _writers.pop((stage, spec_hash), None)
    if writer is not None:
        writer.close()
