"""One lock for every artifact a process writes: a stage directory, an append-only JSONL, a judge cache.

Two processes writing one artifact break what the kit promises (every id exactly once, one metric row a
step, one paid request a completion), so the second process is told, at once, which artifact is busy and
what to do. The lock is an advisory `flock` on a `<name>.lock` file beside the artifact (`.lock` inside a
directory): the kernel drops it when a process dies, so a killed run never blocks the next one. Temporary
files are named per process (`temp_path`), so even writers that bypass the lock never rename each other's
half-written file.

A stage (corpus, tokens) waits `STAGE_WAIT_S` for another process building the same artifact (a notebook
re-run while `make reproduce` runs), then reuses what it built; training refuses at once (hours, not seconds).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

from tinystories_lib.errors import KitError


class ArtifactBusy(KitError, RuntimeError):
    """Another live process holds the artifact's lock."""


# How long a stage waits for another process building its artifact; TINYSTORIES_LOCK_WAIT_S overrides it.
STAGE_WAIT_S = 600.0


def stage_wait_s() -> float:
    return float(os.environ.get("TINYSTORIES_LOCK_WAIT_S", STAGE_WAIT_S))


def temp_path(path: Path) -> Path:
    """`.name.<pid>.tmp` beside `path`: written, then renamed over it; unique to this process."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def lock_path(path: Path) -> Path:
    """`stories.jsonl.lock` beside a file; `.lock` inside a directory (a stage's, a model's: it exists
    before it is locked), so that a listing of a stage's directories shows only artifacts."""
    path = Path(path)
    return path / ".lock" if path.is_dir() else path.with_name(path.name + ".lock")


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
        deadline, waiting = time.monotonic() + wait_s, False
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                lock.seek(0)
                holder = lock.read().strip() or "another process"
                if time.monotonic() >= deadline:
                    raise ArtifactBusy(
                        f"{holder} is already {what} {path}; wait for it to finish (or stop it) and run this "
                        "again: two processes on one artifact would duplicate or corrupt it") from None
                if not waiting:  # said once: a silent wait looks like a hang
                    print(f"note: {holder} is {what} {path}; waiting up to {wait_s:.0f} s for it to finish", flush=True)
                    waiting = True
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
