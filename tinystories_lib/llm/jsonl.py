"""Append-only JSONL files that survive a kill: the generated corpus, its rejects and the judge's cache.

    JsonlAppender(path)     one record per line, flushed at once, fsynced on a background thread
    repair_jsonl_tail(path) cut off the torn last line a killed writer left
    read_jsonl_records(path) the records, skipping (with a warning) lines that are not JSON objects

Resuming a run means reading what earlier runs wrote, so these are the whole persistence story of the
LLM layer (`llm.runner`, `llm.process_shards`, `llm.batch`, `evals.judge`), kept free of any client.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------ append-only JSONL files


def repair_jsonl_tail(path: str | Path) -> int:
    """Truncate a torn last line (no trailing newline: the writer was killed mid-line). Returns the
    number of bytes dropped. Complete lines are never touched."""
    path = Path(path)
    if not path.exists():
        return 0
    with open(path, "r+b") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return 0
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return 0
        # Walk back to the last newline; the tail after it is the torn line.
        pos, chunk = size, 65536
        keep = 0
        while pos > 0:
            start = max(0, pos - chunk)
            f.seek(start)
            block = f.read(pos - start)
            nl = block.rfind(b"\n")
            if nl >= 0:
                keep = start + nl + 1
                break
            pos = start
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    log.warning("%s: dropped a torn last line (%d bytes) left by an interrupted run", path, size - keep)
    return size - keep


def read_jsonl_records(path: str | Path) -> Iterator[dict]:
    """Records of a JSONL file, skipping (with a warning) lines that are not valid JSON objects."""
    path = Path(path)
    if not path.exists():
        return
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                log.warning("%s:%d: skipping an unreadable line", path, n)
                continue
            if isinstance(rec, dict):
                yield rec


class JsonlAppender:
    """Append one JSON record per line. Every line is flushed to the OS at once, so killing the process
    loses at most the line being written (which `repair_jsonl_tail` removes on the next start). fsync, which
    only matters if the machine itself goes down, runs on a background thread at most every `fsync_every_s`
    after a write, and once more on close: on the event loop each fsync stalled every request in flight
    (timings in BENCHMARKS.md)."""

    def __init__(self, path: str | Path, fsync_every_s: float = 0.25):
        self.path = Path(path)
        self.fsync_every_s = fsync_every_s
        self._f = None
        self._dirty = threading.Event()  # set by write, cleared by the syncer before it syncs
        self._closing = threading.Event()
        self._syncer: threading.Thread | None = None
        self._sync_error: OSError | None = None

    def __enter__(self) -> JsonlAppender:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "a", encoding="utf-8")
        return self

    def __exit__(self, *exc) -> None:
        try:
            self._stop_syncer()
            self.sync()
        finally:
            self._f.close()

    def sync(self) -> None:
        """Flush and fsync now: what was written survives even the machine going down."""
        self._f.flush()
        os.fsync(self._f.fileno())

    def write(self, record: Mapping[str, Any]) -> None:
        if self._sync_error is not None:
            raise OSError(f"fsync of {self.path} failed: {self._sync_error}") from self._sync_error
        self._f.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._f.flush()
        self._dirty.set()
        if self._syncer is None:
            self._syncer = threading.Thread(target=self._sync_loop, name=f"fsync {self.path.name}", daemon=True)
            self._syncer.start()

    def _sync_loop(self) -> None:
        # os.fsync releases the GIL, so the writer (and its event loop) goes on while the disk works.
        fd = self._f.fileno()
        while not self._closing.is_set():
            self._dirty.wait()
            if self._closing.is_set():
                return
            self._dirty.clear()
            try:
                os.fsync(fd)
            except OSError as e:  # reported by the next write; close syncs (and raises) again
                self._sync_error = e
                return
            self._closing.wait(self.fsync_every_s)

    def _stop_syncer(self) -> None:
        if self._syncer is not None:
            self._closing.set()
            self._dirty.set()  # wake it if it waits for a write
            self._syncer.join()
            self._syncer = None
