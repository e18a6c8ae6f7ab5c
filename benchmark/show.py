"""``kdbench show``: what a stored artifact is, how it was made, how to make it again, and
its tensors exported with a checksum so that a model can be shared."""
import shutil
from pathlib import Path

import yaml

from .errors import ConfigError
from .store import TENSORS, Store, file_digest, filesystem_error


def find(store: Store, prefix: str) -> tuple[str, str]:
    """(stage, key) of the one stored artifact whose key starts with ``prefix``."""
    found = [(stage, key) for stage, key in store.artifacts() if key.startswith(prefix)]
    if not found:
        raise ConfigError(f"no stored artifact has a key starting with {prefix!r} in {store.root}")
    if len(found) > 1:
        raise ConfigError(f"{prefix!r} is the start of {len(found)} keys ({', '.join(k for _, k in found[:4])}…); "
                          "give more of it")
    return found[0]


def describe(store: Store, stage: str, key: str) -> str:
    """The artifact's stage, spec, inputs, timings, device, history and reproducing command."""
    meta = store.meta(stage, key)
    inputs = dict((k, s) for s, k in store.artifacts() if k in meta.get("inputs", []))
    run = meta.get("run", {})
    lines = [f"{stage} {key}: {meta.get('description', '')}",
             "spec: " + ", ".join(f"{k}={v}" for k, v in sorted(meta.get("spec", {}).items())),
             "inputs: " + (", ".join(f"{inputs.get(k, '?')} {k}" for k in meta.get("inputs", [])) or "none"),
             f"seconds: {meta.get('seconds')} on {meta.get('device')} ({meta.get('threads')} threads); "
             f"kdbench {meta.get('kdbench_version')}, torch {meta.get('torch_version')}"]
    if meta.get("result"):
        lines.append("result: " + ", ".join(f"{k}={_number(v)}" for k, v in sorted(meta["result"].items())
                                           if not isinstance(v, (list, dict))))
    history = meta.get("history") or []
    if history:
        last = history[-1]
        lines.append(f"history: {len(history)} epochs, last " + ", ".join(f"{k}={_number(v)}" for k, v in last.items()
                                                                           if k != "epoch"))
    if "tensors" in meta:
        lines.append(f"tensors: {store.path(stage, key) / TENSORS} ({meta['tensors']['bytes']} bytes, "
                     f"sha256 {meta['tensors']['sha256']})")
    if run.get("command"):
        lines.append(f"reproduce: {run['command']}")
    if run.get("suite"):
        name = run["suite"].get("leaderboard", "suite")
        lines.append(f"the suite that computed it (kdbench run {name} --registry FILE, FILE holding):")
        lines.append(yaml.safe_dump({"suites": {name: run["suite"]}}, sort_keys=False).rstrip())
    return "\n".join(lines)


def export(store: Store, stage: str, key: str, path: Path) -> str:
    """Copy the artifact's safetensors to ``path`` and its SHA-256 to ``path.sha256``
    (``sha256sum -c`` format), after checking it against the store's record."""
    meta = store.meta(stage, key)
    if "tensors" not in meta:
        raise ConfigError(f"{stage} {key} stores no tensors (only its result) to export")
    problem = store.check(stage, key)
    if problem:
        raise ConfigError(f"{stage} {key} is corrupt ({problem}); run kdbench verify")
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(store.path(stage, key) / TENSORS, path)
        digest = file_digest(path)
        if digest != meta["tensors"]["sha256"]:
            raise ConfigError(f"the copy at {path} does not match the stored SHA-256")
        path.with_name(path.name + ".sha256").write_text(f"{digest}  {path.name}\n")
    except OSError as error:
        raise filesystem_error(error, path) from None
    return digest


def _number(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
