"""The content-addressed artifact store: every stage's result under the hash of its spec.

An artifact is a folder with ``tensors.safetensors`` (loading never executes code) and
``meta.json``.  It is written to a temporary folder and renamed into place, so a killed
run leaves either a whole artifact or none.
"""
import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path


from safetensors.torch import load_file, save_file

def spec_hash(spec: dict) -> str:
    """A short, stable hash of a JSON-able spec."""
    text = json.dumps(spec, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]

def default_workdir() -> Path:
    if os.environ.get("KDBENCH_WORKDIR"):
        return Path(os.environ["KDBENCH_WORKDIR"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kdbench"

class Store:
    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def has(self, stage: str, key: str) -> bool:
        return (self.path(stage, key) / "meta.json").exists()

    def save(self, stage: str, key: str, tensors: dict, meta: dict):
        final = self.path(stage, key)
        tmp = final.parent / f".tmp-{key}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        try:
            if tensors:
                save_file({k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()},
                          str(tmp / "tensors.safetensors"))
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True, default=str))
            try:
                os.rename(tmp, final)
            except OSError:  # another run stored the same artifact first
                if not self.has(stage, key):
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def load(self, stage: str, key: str, device="cpu"):
        folder = self.path(stage, key)
        meta = json.loads((folder / "meta.json").read_text())
        file = folder / "tensors.safetensors"
        tensors = load_file(str(file), device=str(device)) if file.exists() else {}
        return tensors, meta

def cache_tensors(path: Path, build) -> dict:
    """Load a dict of tensors from ``path`` (safetensors), building and saving it on a miss."""
    path = Path(path)
    if path.exists():
        return load_file(str(path))
    tensors = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
    os.replace(tmp, path)
    return tensors

def prefixed(prefix: str, state: dict) -> dict:
    return {f"{prefix}.{k}": v for k, v in state.items()}

def unprefixed(prefix: str, tensors: dict) -> dict:
    start = prefix + "."
    return {k[len(start):]: v for k, v in tensors.items() if k.startswith(start)}

