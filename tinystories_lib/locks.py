"""One lock for every artifact a process writes: a stage directory, an append-only JSONL, a judge cache.

Two processes writing one artifact break what the kit promises (every id exactly once, one metric row a
step, one paid request a completion), so the second process is told, at once, which artifact is busy and
what to do. The lock is an advisory `flock` on a `<name>.lock` file beside the artifact: the kernel drops
it when a process dies, so a killed run never blocks the next one.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path


class ArtifactBusy(RuntimeError):
    """Another live process holds the artifact's lock."""


def lock_path(path: Path) -> Path:
    """`runs/smoke/models/<key>.lock` beside a stage directory, `stories.jsonl.lock` beside a file."""
    path = Path(path)
    return path.with_name(path.name + ".lock")


@contextlib.contextmanager
def exclusive(path: str | Path, what: str = "writing", wait_s: float = 0.0) -> Iterator[None]:
    """Hold `path`'s lock for the block. `what` names the work in the message ("training into", "grading
    with"); with `wait_s` > 0 wait that long for the other process before giving up (a notebook that
    wants the artifact another process is finishing), else refuse at once."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no locking
        yield
        return
    path = Path(path)
    lock_file = lock_path(path)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "a+") as lock:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    lock.seek(0)
                    holder = lock.read().strip() or "another process"
                    raise ArtifactBusy(
                        f"{holder} is already {what} {path}; wait for it to finish (or stop it) and run this "
                        "again: two processes on one artifact would duplicate or corrupt it") from None
                time.sleep(0.2)
        lock.seek(0)
        lock.truncate()
        lock.write(f"process {os.getpid()}")
        lock.flush()
        try:
            yield
        finally:
            lock.seek(0)
            lock.truncate()
            lock.flush()
            fcntl.flock(lock, fcntl.LOCK_UN)
