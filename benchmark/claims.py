"""Exclusive claims on artifact keys, so that no artifact is ever computed twice at once.

Before computing an artifact, a worker creates ``claims/<stage>-<key>`` with ``O_EXCL``;
the file names its owner (host, process, a random id) and its modification time is the
owner's heartbeat, refreshed by a background thread while the claim is held.  Another
worker, or another ``kdbench run`` on the same work directory, waits until the artifact
is stored or the claim goes stale: its process is gone (same host) or its heartbeat is
older than ``stale_after`` seconds (another host of a cluster); it then takes the claim
over.  A stale claim is taken over by renaming it first, which only one taker can do.
"""
import contextlib
import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path


class Claims:
    def __init__(self, root: Path, heartbeat: float = 5.0, stale_after: float = 60.0):
        self.folder = Path(root) / "claims"
        self.heartbeat, self.stale_after = heartbeat, stale_after
        self.owner = {"host": socket.gethostname(), "pid": os.getpid(), "id": uuid.uuid4().hex}
        self.held: set[Path] = set()
        self.lock = threading.Lock()
        self.beating = None

    def path(self, stage: str, key: str) -> Path:
        return self.folder / f"{stage}-{key}"

    def acquire(self, stage: str, key: str) -> bool:
        """Take the claim if it is free or stale; False if a live owner holds it."""
        path = self.path(stage, key)
        self.folder.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                if not self._take_over_if_stale(path):
                    return False
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(dict(self.owner, since=time.time()), f)
            with self.lock:
                self.held.add(path)
            self._start_heartbeat()
            return True
        return False

    def release(self, stage: str, key: str):
        path = self.path(stage, key)
        with self.lock:
            self.held.discard(path)
        path.unlink(missing_ok=True)

    @contextlib.contextmanager
    def holding(self, stage: str, key: str):
        """Hold a claim already acquired, and release it however the block ends."""
        try:
            yield
        finally:
            self.release(stage, key)

    def holder(self, stage: str, key: str) -> dict | None:
        """The owner of a claim, or None if there is no claim."""
        try:
            return json.loads(self.path(stage, key).read_text())
        except (OSError, ValueError):
            return None

    def wait_for(self, stage: str, key: str, stored, poll: float = 0.25) -> bool:
        """Wait until ``stored()`` is true (True) or the claim on the key can be taken (False:
        the caller now holds it and computes the artifact)."""
        while True:
            if stored():
                return True
            if self.acquire(stage, key):
                if stored():  # finished between the two checks
                    self.release(stage, key)
                    return True
                return False
            time.sleep(poll)

    def is_stale(self, path: Path) -> bool:
        try:
            owner = json.loads(path.read_text())
            age = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            return False
        except (OSError, ValueError):  # half-written by an owner that died while writing it
            return time.time() - path.stat().st_mtime > 1.0
        if owner.get("host") == self.owner["host"]:
            return not _alive(owner.get("pid", -1))
        return age > self.stale_after

    def _take_over_if_stale(self, path: Path) -> bool:
        if not self.is_stale(path):
            return False
        tombstone = path.with_name(f".stale-{path.name}-{uuid.uuid4().hex[:8]}")
        try:
            os.rename(path, tombstone)
        except FileNotFoundError:  # another taker was first
            return True
        tombstone.unlink(missing_ok=True)
        return True

    def _start_heartbeat(self):
        with self.lock:
            if self.beating is None:
                self.beating = threading.Thread(target=self._beat, daemon=True, name="kdbench-claims")
                self.beating.start()

    def _beat(self):
        while True:
            time.sleep(self.heartbeat)
            with self.lock:
                held = list(self.held)
                if not held:
                    self.beating = None
                    return
            for path in held:
                with contextlib.suppress(OSError):
                    os.utime(path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
