"""The content-addressed artifact store: every stage's result under the hash of its spec.

An artifact is a folder ``<stage>/<key>/`` with ``tensors.safetensors`` (loading never
executes code) and ``meta.json``, which records the stage's spec, its inputs' keys, its
timings and the SHA-256 and size of the tensor file.  An artifact is written to a temporary
folder and renamed into place, so a killed run leaves either a whole artifact or none, and
one that is stored is never rewritten.  Every load checks the tensor file against its
recorded checksum; a mismatch moves the artifact aside into ``quarantine/`` (kept for
inspection) and the stage is computed again.
"""
import errno
import hashlib
import json
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

from .errors import ConfigError

TENSORS, META = "tensors.safetensors", "meta.json"
STAGES = ("clean_teacher", "teacher", "student", "evaluation", "defense")


def spec_hash(spec: dict) -> str:
    """A short, stable hash of a JSON-able spec."""
    text = json.dumps(spec, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def default_workdir() -> Path:
    if os.environ.get("KDBENCH_WORKDIR"):
        return Path(os.environ["KDBENCH_WORKDIR"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kdbench"


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class CorruptArtifact(Exception):
    """A stored artifact whose tensor file does not match its recorded checksum."""


class Store:
    def __init__(self, root: Path, on_quarantine=None):
        self.root = Path(root)
        self.on_quarantine = on_quarantine or (lambda message: None)

    def path(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def has(self, stage: str, key: str) -> bool:
        return (self.path(stage, key) / META).exists()

    def meta(self, stage: str, key: str) -> dict:
        return json.loads((self.path(stage, key) / META).read_text())

    def save(self, stage: str, key: str, tensors: dict, meta: dict):
        from safetensors.torch import save_file

        final = self.path(stage, key)
        tmp = final.parent / f".tmp-{key}-{uuid.uuid4().hex[:8]}"
        try:
            tmp.mkdir(parents=True)
            meta = dict(meta, stage=stage, key=key)
            if tensors:
                save_file({k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}, str(tmp / TENSORS))
                meta["tensors"] = {"sha256": file_digest(tmp / TENSORS), "bytes": (tmp / TENSORS).stat().st_size}
            (tmp / META).write_text(json.dumps(meta, indent=1, sort_keys=True, default=str))
            try:
                os.rename(tmp, final)
            except OSError:  # another run stored the same artifact first: keep theirs
                if not self.has(stage, key):
                    raise
        except OSError as error:
            raise filesystem_error(error, self.root) from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def load(self, stage: str, key: str, device="cpu"):
        """(tensors, meta) of a stored artifact; ``CorruptArtifact`` (after moving it aside)
        if its tensor file is not the one that was stored."""
        from safetensors.torch import load_file

        problem = self.check(stage, key)
        if problem:
            self.quarantine(stage, key, problem)
            raise CorruptArtifact(f"{stage} {key}: {problem}")
        folder = self.path(stage, key)
        meta = json.loads((folder / META).read_text())
        tensors = load_file(str(folder / TENSORS), device=str(device)) if "tensors" in meta else {}
        return tensors, meta

    def check(self, stage: str, key: str) -> str:
        """'' if the artifact is whole, otherwise what is wrong with it."""
        folder = self.path(stage, key)
        try:
            meta = json.loads((folder / META).read_text())
        except (OSError, ValueError) as error:
            return f"unreadable {META} ({error})"
        if "tensors" not in meta:
            return "" if not (folder / TENSORS).exists() else f"{TENSORS} without a recorded checksum"
        file = folder / TENSORS
        if not file.exists():
            return f"{TENSORS} is missing"
        if file.stat().st_size != meta["tensors"]["bytes"]:
            return f"{TENSORS} has {file.stat().st_size} bytes, {meta['tensors']['bytes']} were stored"
        if file_digest(file) != meta["tensors"]["sha256"]:
            return f"{TENSORS} does not match its SHA-256"
        return ""

    def quarantine(self, stage: str, key: str, problem: str) -> Path:
        """Move an artifact aside (never delete it) and say so in one line."""
        target = self.root / "quarantine" / f"{stage}-{key}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(self.path(stage, key), target)
        (target / "problem.txt").write_text(problem + "\n")
        self.on_quarantine(f"corrupt artifact {stage}/{key} ({problem}) moved to {target}; it will be recomputed")
        return target

    def artifacts(self):
        """(stage, key) of every stored artifact."""
        for stage in STAGES:
            folder = self.root / stage
            if folder.is_dir():
                for entry in sorted(folder.iterdir()):
                    if not entry.name.startswith(".") and (entry / META).exists():
                        yield stage, entry.name


def writable(folder: Path):
    """Create ``folder`` if needed and write a probe file in it; a one-line ConfigError naming
    the folder if either fails (permissions are not enough to tell: root may lack a write too)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise filesystem_error(error, folder) from None


def filesystem_error(error: OSError, path: Path) -> ConfigError:
    """A filesystem failure as one line naming the path (a full disk, no permission…)."""
    if error.errno == errno.ENOSPC:
        return ConfigError(f"no space left on the device holding {path}; nothing stored was lost")
    reason = error.strerror or str(error)
    return ConfigError(f"cannot write {error.filename or path}: {reason}")


def cache_tensors(path: Path, build) -> dict:
    """Load a dict of tensors from ``path`` (safetensors), building and saving it on a miss."""
    from safetensors.torch import load_file, save_file

    path = Path(path)
    if path.exists():
        return load_file(str(path))
    tensors = build()
    writable(path.parent)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
        os.replace(tmp, path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise filesystem_error(error, path) from None
    return tensors


def prefixed(prefix: str, state: dict) -> dict:
    return {f"{prefix}.{k}": v for k, v in state.items()}


def unprefixed(prefix: str, tensors: dict) -> dict:
    start = prefix + "."
    return {k[len(start):]: v for k, v in tensors.items() if k.startswith(start)}
