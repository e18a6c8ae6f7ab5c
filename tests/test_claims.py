"""Claims: one owner per artifact key at a time; a dead owner's claim is taken over."""
import json
import os
import subprocess
import sys
import time

from kdbench.claims import Claims
from kdbench.store import Store


def dead_pid() -> int:
    """The id of a process that has exited."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_claim_is_exclusive_until_released(tmp_path):
    first, second = Claims(tmp_path), Claims(tmp_path)
    assert first.acquire("teacher", "abc")
    assert not second.acquire("teacher", "abc")
    assert first.holder("teacher", "abc")["id"] == first.owner["id"]
    first.release("teacher", "abc")
    assert second.acquire("teacher", "abc")


def test_the_claim_of_a_process_that_died_is_taken_over(tmp_path):
    claims = Claims(tmp_path)
    claims.folder.mkdir(parents=True)
    owner = dict(claims.owner, pid=dead_pid(), id="gone")
    claims.path("student", "k").write_text(json.dumps(owner))
    assert Claims(tmp_path).acquire("student", "k")


def test_a_claim_of_another_host_goes_stale_when_its_heartbeat_stops(tmp_path):
    claims = Claims(tmp_path, stale_after=30)
    claims.folder.mkdir(parents=True)
    path = claims.path("student", "k")
    path.write_text(json.dumps({"host": "another-node", "pid": 1, "id": "remote"}))
    assert not claims.acquire("student", "k")  # fresh heartbeat: a live owner elsewhere
    old = time.time() - 31
    os.utime(path, (old, old))
    assert claims.acquire("student", "k")


def test_the_heartbeat_keeps_a_held_claim_fresh(tmp_path):
    claims = Claims(tmp_path, heartbeat=0.05)
    assert claims.acquire("teacher", "k")
    path = claims.path("teacher", "k")
    old = time.time() - 100
    os.utime(path, (old, old))
    time.sleep(0.3)
    assert time.time() - path.stat().st_mtime < 5
    claims.release("teacher", "k")
    assert not path.exists()


def test_a_waiter_returns_when_the_artifact_is_stored(tmp_path):
    store, owner, waiter = Store(tmp_path), Claims(tmp_path), Claims(tmp_path)
    assert owner.acquire("evaluation", "k")
    store.save("evaluation", "k", {}, {"result": {}})
    assert waiter.wait_for("evaluation", "k", lambda: store.has("evaluation", "k"))
    assert owner.holder("evaluation", "k")["id"] == owner.owner["id"]  # the waiter took nothing
