"""Corpus generation spread over several client processes (`generate_stories(..., processes=k)`).

One event loop can only make so many requests; `generate_sharded` spawns `k` client processes, each
running the single-process loop (`llm.runner.agenerate_stories`) on its share of the prompts and writing
its own shard file, while this process merges the shards into the output as they grow and runs the
duplicate checks across all of them. A kill at any moment leaves shards the next run merges first.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from tinystories_lib.llm.client import (
    LLMConfig,
    Usage,
    run_async,
)
from tinystories_lib.llm.jsonl import JsonlAppender
from tinystories_lib.llm.runner import (
    _MAX_FAILURE_EXAMPLES,
    GenerationReport,
    _exclusive,
    _prepare,
    _progress,
    _Run,
    _stem,
    agenerate_stories,
    default_rejects_path,
)
from tinystories_lib.llm.story_checks import StoryValidator

# ------------------------------------------------------------------------------------ several processes


def shard_paths(out_path: Path, k: int) -> Path:
    """Where client process k of a sharded run writes its stories (its rejects go beside, by the usual
    `default_rejects_path` rule)."""
    return out_path.with_name(f"{_stem(out_path)}.shard-{k}.jsonl")


def _shard_files(out_path: Path) -> list[Path]:
    return sorted(p for p in out_path.parent.glob(f"{_stem(out_path)}.shard-*.jsonl")
                  if not p.name.endswith(".rejects.jsonl"))


class _ShardMerger:
    """Folds the shard files of client processes into the run's own output, one complete line at a
    time (a line still being written waits for the next poll). Stories go through the duplicate checks of
    the run's one validator, so copies made in different processes are caught as in a single process.
    Ids already in the output (or, for rejects, in either file) are skipped: merging the same shard again
    after a kill adds nothing."""

    def __init__(self, run: _Run, written: set, rejected: set, out: JsonlAppender, rejects: JsonlAppender):
        self.run, self.written, self.rejected, self.out, self.rejects = run, written, rejected, out, rejects
        self.offsets: dict[Path, int] = {}

    def _new_records(self, path: Path) -> list[dict]:
        if not path.exists():
            return []
        with open(path, "rb") as f:
            f.seek(self.offsets.get(path, 0))
            chunk = f.read()
        end = chunk.rfind(b"\n") + 1
        self.offsets[path] = self.offsets.get(path, 0) + end
        return [json.loads(line) for line in chunk[:end].splitlines() if line.strip()]

    def poll(self, shard: Path, count: bool = True) -> int:
        """Merge what `shard` (and its rejects file) gained since the last poll; returns how many records
        were handled. `count`: add them to this run's report (not for a previous run's leftovers)."""
        run, n = self.run, 0
        for rec in self._new_records(default_rejects_path(shard)):
            n += 1
            if rec["id"] not in self.written and rec["id"] not in self.rejected:
                self.rejects.write(rec)
                self.rejected.add(rec["id"])
        for rec in self._new_records(shard):
            n += 1
            if rec["id"] in self.written:
                continue
            problem = run.validator.check_duplicate(rec["text"])
            if problem is None:
                run.validator.add(rec["id"], rec["text"])
                self.out.write(rec)
                self.written.add(rec["id"])
                run.report.written += int(count)
            else:
                self.rejects.write({**rec, "reject_reason": problem[0], "reject_detail": problem[1]})
                self.rejected.add(rec["id"])
                if count:
                    run.report.add_rejection(problem[0])
        return n

    def finish(self, shard: Path) -> None:
        """Remove a shard once all of it is merged and the merged lines are on disk."""
        self.out.sync()
        self.rejects.sync()
        for path in (default_rejects_path(shard), shard, shard.with_name(shard.name + ".lock")):
            path.unlink(missing_ok=True)
        self.offsets.pop(shard, None)
        self.offsets.pop(default_rejects_path(shard), None)


def _die_with_parent() -> None:
    """Pool initializer: on Linux, ask the kernel to kill this worker when its parent dies, so a killed
    run leaves no orphan still writing (and locking) its shard."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - not Linux/glibc
        pass


def _shard_worker(specs, config, out_path, budget_usd, with_summary, validator) -> GenerationReport:
    return run_async(agenerate_stories(specs, config, out_path, budget_usd=budget_usd, progress=False,
                                       with_summary=with_summary, validator=validator, retry_rejected=True))


def generate_sharded(
    specs, config: LLMConfig, out_path, processes: int, *, budget_usd, progress, with_summary, validator,
    rejects_path, retry_rejected,
) -> GenerationReport:
    """`generate_stories` with the requests shared among `processes` client processes (spawned), each
    with its share of `max_concurrency` and of the budget, writing its own append-only shard file
    (`<out>.shard-K.jsonl`). This process merges the shards into `out_path` as they grow and runs the
    duplicate checks across all of them; each story is checked for everything else where it was made.
    A kill at any moment leaves shards that the next run merges first: every story still ends up exactly
    once. The validator must be picklable (its `forms` a module-level function)."""
    import multiprocessing
    import pickle

    out_path = Path(out_path)
    validator = validator if validator is not None else StoryValidator()
    local = dataclasses.replace(validator, near_dup_threshold=None)  # duplicates are checked here, across shards
    try:
        pickle.dumps(local)
    except Exception as e:
        raise TypeError(f"processes > 1 sends the validator to each process, but it cannot be pickled ({e}); "
                        "give it a module-level `forms` function, or use processes=1") from None
    with _exclusive(out_path):
        rejects_path = Path(rejects_path) if rejects_path is not None else default_rejects_path(out_path)
        with JsonlAppender(out_path) as out, JsonlAppender(rejects_path) as rejects:
            merger = None

            def merge_leftovers(run: _Run, written: set, rejected: set) -> None:
                nonlocal merger
                merger = _ShardMerger(run, written, rejected, out, rejects)
                for shard in _shard_files(out_path):  # a killed sharded run's work, finished but not merged
                    merger.poll(shard, count=False)
                    merger.finish(shard)

            run = _prepare(
                specs, config, out_path, rejects_path, validator, with_summary=with_summary,
                retry_rejected=retry_rejected, mode="online", budget_usd=budget_usd, before_plan=merge_leftovers,
            )
            n = max(1, min(processes, len(run.pending)))
            shards = [shard_paths(out_path, k) for k in range(n)]
            usage = Usage()
            bar = _progress(len(run.pending), progress)
            ctx = multiprocessing.get_context("spawn")  # safe beside threads (Jupyter, torch)
            try:
                with ctx.Pool(n, initializer=_die_with_parent) as pool:  # an exception here terminates them
                    jobs = [
                        pool.apply_async(_shard_worker, (
                            run.pending[k::n],
                            dataclasses.replace(config, max_concurrency=max(1, (config.max_concurrency + k) // n)),
                            str(shards[k]), None if budget_usd is None else budget_usd / n, with_summary, local,
                        ))
                        for k in range(n)
                    ]
                    while True:
                        finished = all(j.ready() for j in jobs)  # before the poll: nothing is left behind
                        moved = sum(merger.poll(shard) for shard in shards)
                        if bar is not None and moved:
                            bar.update(moved)
                        if finished:
                            break
                        time.sleep(0.05)
                    reports = [j.get() for j in jobs]  # a worker's exception is raised here
            finally:
                if bar is not None:
                    bar.close()
            for shard in shards:
                merger.finish(shard)
    report = run.report
    for r in reports:
        for reason, k in r.rejected.items():
            report.rejected[reason] = report.rejected.get(reason, 0) + k
        for reason, k in r.failed.items():
            report.failed[reason] = report.failed.get(reason, 0) + k
        report.failure_examples.extend(r.failure_examples[: _MAX_FAILURE_EXAMPLES - len(report.failure_examples)])
        report.not_attempted += r.not_attempted
        usage.requests += r.requests
        usage.retries += r.retries
        usage.prompt_tokens += r.prompt_tokens
        usage.completion_tokens += r.completion_tokens
        usage.cost_usd += r.cost_usd
    return report.finish(usage, run.t0)
