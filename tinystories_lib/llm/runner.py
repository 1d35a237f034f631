"""One generation run's machinery, shared by the single-process, sharded and Batch API paths: the
report (`GenerationReport`), the resumable working state (`_prepare`), the messages, the cost estimate
(`estimate_remaining_cost`), the rejects by reason kept across runs (`rejects_by_reason`, `rejects_table`),
and the async single-process loop `agenerate_stories`. The entry points are
`tinystories_lib.llm.generate.generate_stories` and `tinystories_lib.llm.batch.generate_stories_batch`."""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tinystories_lib.llm.client import (
    ChatResult,
    LLMClient,
    LLMConfig,
    Usage,
    estimate_message_tokens,
    map_concurrently,
    strip_reasoning,
)
from tinystories_lib.llm.errors import BudgetExceeded, describe_error, error_detail
from tinystories_lib.llm.jsonl import JsonlAppender, read_jsonl_records, repair_jsonl_tail
from tinystories_lib.llm.story_checks import REJECT_MEANINGS, StoryValidator, reply_problem
from tinystories_lib.locks import exclusive
from tinystories_lib.stories.records import Story

log = logging.getLogger(__name__)

# TinyStories-Instruct stories carry a short summary; this asks for one in the same spirit.
SUMMARY_PROMPT = (
    "Write a one-sentence summary of the story below, using only simple words that a small child "
    "would understand. Reply with the summary only.\n\nStory:\n{story}"
)
SUMMARY_MAX_TOKENS = 120
_MAX_FAILURE_EXAMPLES = 20


# ------------------------------------------------------------------------------------ report


@dataclass
class GenerationReport:
    """What a generation run did. `status`: "complete" (every requested id is now written or
    rejected), "incomplete" (some requests failed: rerun to retry them), "budget_exceeded" (the cap
    stopped new requests; `not_attempted` were left), "pending" (a batch is still running: rerun)."""

    model: str
    out_path: str
    rejects_path: str
    mode: str = "online"
    status: str = "complete"
    requested: int = 0
    skipped_existing: int = 0
    written: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)
    failure_examples: list[dict] = field(default_factory=list)
    not_attempted: int = 0
    requests: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    estimated_cost_usd: float = 0.0
    budget_usd: float | None = None
    batch_ids: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    stories_per_s: float = 0.0

    def add_failure(self, story_id: str, reason: str, detail: str) -> None:
        self.failed[reason] = self.failed.get(reason, 0) + 1
        if len(self.failure_examples) < _MAX_FAILURE_EXAMPLES:
            self.failure_examples.append({"id": story_id, "reason": reason, "detail": detail})

    def add_rejection(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    def finish(self, usage: Usage, t0: float) -> GenerationReport:
        self.requests, self.retries = usage.requests, usage.retries
        self.prompt_tokens, self.completion_tokens = usage.prompt_tokens, usage.completion_tokens
        self.cost_usd = round(usage.cost_usd, 6)
        self.wall_s = round(time.monotonic() - t0, 3)
        self.stories_per_s = round(self.written / self.wall_s, 3) if self.wall_s > 0 else 0.0
        if self.status == "complete":
            if self.not_attempted:
                self.status = "budget_exceeded"
            elif self.failed:
                self.status = "incomplete"
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        rejected = sum(self.rejected.values())
        failed = sum(self.failed.values())
        lines = [
            f"{self.model} ({self.mode}): {self.status}",
            f"  requested {self.requested}, already done {self.skipped_existing}, written {self.written}, "
            f"rejected {rejected} {self.rejected or ''}, failed {failed} {self.failed or ''}, "
            f"not attempted {self.not_attempted}",
            f"  tokens in/out {self.prompt_tokens}/{self.completion_tokens}, cost ${self.cost_usd:.4f} "
            f"(estimated ${self.estimated_cost_usd:.4f}), {self.wall_s:.1f}s, {self.stories_per_s:.2f} stories/s",
        ]
        return "\n".join(lines)


# ------------------------------------------------------------------------------------ shared pieces


def _spec_words(spec) -> dict[str, str]:
    words = getattr(spec, "words", None)
    if isinstance(words, dict):
        return {k: str(v) for k, v in words.items()}
    return {"noun": spec.noun, "verb": spec.verb, "adjective": spec.adjective}


def story_messages(spec) -> list[dict]:
    return [{"role": "user", "content": spec.render()}]


def summary_messages(story_text: str) -> list[dict]:
    return [{"role": "user", "content": SUMMARY_PROMPT.format(story=story_text)}]


def _stem(out_path: Path) -> str:
    return out_path.name[: -len(".jsonl")] if out_path.name.endswith(".jsonl") else out_path.name


def default_rejects_path(out_path: Path) -> Path:
    return out_path.with_name(_stem(out_path) + ".rejects.jsonl")


def _exclusive(out_path: Path):
    """Refuse to run two generations into the same file at once (that would break exactly-once)."""
    return exclusive(out_path, "generating into")


@dataclass
class _Run:
    """One generation run's working state: files, what is left to do, the validator, the report."""

    specs: list
    config: LLMConfig
    out_path: Path
    rejects_path: Path
    validator: StoryValidator
    report: GenerationReport
    with_summary: bool
    pending: list = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    t0: float = field(default_factory=time.monotonic)

    def story(self, spec, text: str, summary: str | None = None) -> Story:
        return Story(
            id=spec.id, text=text, source=self.config.model, prompt=spec.render(), words=_spec_words(spec),
            features=list(getattr(spec, "features", []) or []), summary=summary,
        )

    def validate(self, spec, text: str, rejects: JsonlAppender, finish_reason: str | None = None) -> Story | None:
        """The Story if valid (and remembered for duplicate checks), else None after filing the reject.
        Synchronous, so concurrent workers cannot both accept two copies of one story."""
        answer = strip_reasoning(text)
        story = self.story(spec, answer or text.strip())
        problem = reply_problem(text, answer, finish_reason) or self.validator.check(story.text, story.words)
        if problem is not None:
            self.reject(story, *problem, rejects)
            return None
        self.validator.add(story.id, story.text)
        return story

    def reject(self, story: Story, reason: str, detail: str, rejects: JsonlAppender) -> None:
        rejects.write({**vars(story), "reject_reason": reason, "reject_detail": detail})
        self.report.add_rejection(reason)

    def fail(self, story_id: str, error: BaseException, prefix: str = "") -> None:
        self.report.add_failure(story_id, prefix + describe_error(error), error_detail(error, self.config.api_key_env))

    def fail_in_batch(self, story_id: str, error: str, prefix: str = "") -> None:
        # Batch errors read "http_500: ..." or "no result in batch ...": group by their first part.
        reason = "missing_from_batch" if error.startswith("no result") else error.split(":")[0].strip()
        self.report.add_failure(story_id, prefix + (reason or "batch_error"), error_detail(error, self.config.api_key_env))

    def accept(self, story: Story, out: JsonlAppender) -> None:
        out.write(vars(story))  # its fields as they are: json reads them (asdict would deep-copy each)
        self.report.written += 1


def _prepare(
    specs: Sequence, config: LLMConfig, out_path, rejects_path, validator, *, with_summary: bool,
    retry_rejected: bool, mode: str, budget_usd: float | None, before_plan: Callable[[_Run, set, set], None] | None = None,
) -> _Run:
    """Repair torn tails, load what is already done, and work out what is left. `before_plan(run, written,
    rejected)` may add finished work (a sharded run's leftover shards) before what is left is worked out."""
    out_path = Path(out_path)
    rejects_path = Path(rejects_path) if rejects_path is not None else default_rejects_path(out_path)
    validator = validator if validator is not None else StoryValidator()
    report = GenerationReport(
        model=config.model, out_path=str(out_path), rejects_path=str(rejects_path), mode=mode,
        requested=len(specs), budget_usd=budget_usd,
    )
    run = _Run(list(specs), config, out_path, rejects_path, validator, report, with_summary)
    repair_jsonl_tail(out_path)
    repair_jsonl_tail(rejects_path)
    written: set[str] = set()
    for rec in read_jsonl_records(out_path):
        if "id" in rec and "text" in rec and rec["id"] not in written:
            written.add(rec["id"])
            validator.add(rec["id"], rec["text"])
    rejected = {rec["id"] for rec in read_jsonl_records(rejects_path) if "id" in rec}
    if before_plan is not None:
        before_plan(run, written, rejected)
    done = written if retry_rejected else written | rejected
    seen: set[str] = set()
    for spec in specs:
        if spec.id in done or spec.id in seen:
            report.skipped_existing += 1
        else:
            seen.add(spec.id)
            run.pending.append(spec)
    report.estimated_cost_usd = round(_estimate(run.pending, config, with_summary, batch=mode == "batch"), 6)
    log.info(
        "%s: %d to generate (%d already done), estimated $%.4f",
        out_path, len(run.pending), report.skipped_existing, report.estimated_cost_usd,
    )
    return run


def estimate_remaining_cost(
    specs: Sequence, config: LLMConfig, out_path, *, with_summary: bool = False, batch: bool = False,
    rejects_path=None,
) -> tuple[int, int, float]:
    """(to generate, already done, estimated USD) for `generate_stories(specs, config, out_path, ...)`,
    before running it: the ids already written or rejected in its files are not paid for again. Input
    tokens are estimated from each prompt's characters; output tokens from `max_tokens`, else
    `est_output_tokens`."""
    out_path = Path(out_path)
    rejects_path = Path(rejects_path) if rejects_path is not None else default_rejects_path(out_path)
    done = {rec["id"] for path in (out_path, rejects_path) for rec in read_jsonl_records(path) if "id" in rec}
    pending = list({s.id: s for s in specs if s.id not in done}.values())
    return len(pending), len(specs) - len(pending), _estimate(pending, config, with_summary, batch=batch)


def _estimate(pending: Sequence, config: LLMConfig, with_summary: bool, *, batch: bool) -> float:
    if not pending:
        return 0.0
    n_in = sum(estimate_message_tokens(story_messages(s)) for s in pending) / len(pending)
    cost = config.estimate_cost(len(pending), n_in, batch=batch)
    if with_summary:  # the summary call reads the story back
        out = config.default_output_tokens
        cost += config.estimate_cost(len(pending), out + 40, min(out, SUMMARY_MAX_TOKENS), batch=batch)
    return cost


def rejects_by_reason(out_path, *, ids=None, rejects_path=None) -> dict:
    """What a generation into `out_path` kept out of it, over every run so far (read from its files):
    `written` stories, `rejected` replies, and `reasons`: per reason (`story_checks.REJECT_REASONS`, and
    `summary_*`), most frequent first, its count, what it means, and the first example (id, detail). Only
    the prompt ids in `ids` when given (the file may hold a larger run's)."""
    out_path = Path(out_path)
    rejects_path = Path(rejects_path) if rejects_path is not None else default_rejects_path(out_path)
    keep = (lambda rec: "id" in rec) if ids is None else (lambda rec: rec.get("id") in ids)
    written = {rec["id"] for rec in read_jsonl_records(out_path) if keep(rec)}
    counts: collections.Counter = collections.Counter()
    examples: dict[str, dict] = {}
    rejected = set()
    for rec in read_jsonl_records(rejects_path):
        if not keep(rec) or rec["id"] in written or rec["id"] in rejected:  # retried and written since, or twice
            continue
        rejected.add(rec["id"])
        reason = rec.get("reject_reason") or "unknown"
        counts[reason] += 1
        examples.setdefault(reason, {"id": rec["id"], "detail": rec.get("reject_detail") or "",
                                     "text": (rec.get("text") or "")[:200]})
    reasons = [{"reason": r, "count": n, "meaning": REJECT_MEANINGS.get(r, ""), "example": examples[r]}
               for r, n in counts.most_common()]
    return {"out_path": str(out_path), "written": len(written), "rejected": len(rejected), "reasons": reasons}


def rejects_table(out_path, *, ids=None, rejects_path=None) -> str:
    """`rejects_by_reason` as markdown: a row per reason with its count, share and an example."""
    r = rejects_by_reason(out_path, ids=ids, rejects_path=rejects_path)
    total = r["written"] + r["rejected"]
    head = f"{r['written']:,} stories kept and {r['rejected']:,} replies rejected in `{Path(r['out_path']).name}`"
    if not r["reasons"]:
        return head + ": nothing rejected.\n"

    def cell(text: str) -> str:
        return " ".join(str(text).split()).replace("|", "/")[:120]

    lines = [head + ", by reason:", "", "| reason | replies | share | what it means | example |",
             "|---|---:|---:|---|---|"]
    for row in r["reasons"]:
        ex = row["example"]
        lines.append(f"| {row['reason']} | {row['count']:,} | {row['count'] / total:.1%} | {cell(row['meaning'])} | "
                     f"{ex['id']}: {cell(ex['text'] or ex['detail'])} |")
    return "\n".join(lines) + "\n"


def _progress(total: int, enabled: bool):
    if not enabled or total == 0:
        return None
    try:
        from tinystories_lib.progress import bar
    except ImportError:  # pragma: no cover
        return None
    return bar(total=total, desc="generating", unit="story")


# ------------------------------------------------------------------------------------ online


async def agenerate_stories(
    specs: Sequence,
    config: LLMConfig,
    out_path: str | Path,
    *,
    budget_usd: float | None = None,
    progress: bool = True,
    with_summary: bool = False,
    validator: StoryValidator | None = None,
    rejects_path: str | Path | None = None,
    retry_rejected: bool = False,
) -> GenerationReport:
    """Async form of `generate_stories` (await it from a notebook cell or your own event loop)."""
    out_path = Path(out_path)
    with _exclusive(out_path):
        run = _prepare(
            specs, config, out_path, rejects_path, validator, with_summary=with_summary,
            retry_rejected=retry_rejected, mode="online", budget_usd=budget_usd,
        )
        bar = _progress(len(run.pending), progress)
        client = LLMClient(config, budget_usd=budget_usd, usage=run.usage)
        try:
            async with client:
                with JsonlAppender(run.out_path) as out, JsonlAppender(run.rejects_path) as rejects:
                    checks = _DeferredChecks(run, out, rejects, bar)

                    async def one(spec) -> None:
                        checks.raise_first_error()
                        if run.with_summary:  # the summary call needs the checked story first
                            await _generate_with_summary(run, client, spec, out, rejects)
                            if bar is not None:
                                bar.update(1)
                            return
                        checks.defer(spec, await _fetch_story(run, client, spec))

                    try:
                        await map_concurrently(run.pending, one, config.max_concurrency)
                    finally:
                        checks.drain()  # replies already paid for are checked and kept, even when interrupted
                    checks.raise_first_error()
        finally:
            if bar is not None:
                bar.close()
    return run.report.finish(run.usage, run.t0)


class _DeferredChecks:
    """Validation and writing of replies, run just after the worker that received a reply has sent its
    next request. Replies arrive in bursts; checking each one before the next request goes out would
    delay every request behind it in the burst. Checks still run one at a time, in arrival order, on
    the event loop (so two copies of a story cannot both be accepted); `drain` finishes any left over."""

    def __init__(self, run: _Run, out: JsonlAppender, rejects: JsonlAppender, bar):
        self.run, self.out, self.rejects, self.bar = run, out, rejects, bar
        self.queue: collections.deque = collections.deque()
        self.errors: list[BaseException] = []
        self.closed = False  # after `drain`: the files are about to close

    def defer(self, spec, reply: ChatResult | None) -> None:
        if reply is None:  # failed or over budget: already counted
            if self.bar is not None:
                self.bar.update(1)
            return
        self.queue.append((spec, reply))
        asyncio.get_running_loop().call_soon(self._check_one)

    def _check_one(self) -> None:
        if not self.queue or self.errors or self.closed:  # drained, or stopped by an error
            return
        spec, reply = self.queue.popleft()
        try:
            story = self.run.validate(spec, reply.text, self.rejects, reply.finish_reason)
            if story is not None:
                self.run.accept(story, self.out)
        except Exception as e:  # e.g. a full disk: stop the run (the workers re-raise it) rather than lose it
            self.errors.append(e)
        if self.bar is not None:
            self.bar.update(1)

    def drain(self) -> None:
        """Check what is queued (unless a check failed: those replies are retried by the next run)."""
        while self.queue and not self.errors:
            self._check_one()
        self.closed = True

    def raise_first_error(self) -> None:
        if self.errors:
            raise self.errors[0]


async def _fetch_story(run: _Run, client: LLMClient, spec) -> ChatResult | None:
    """The reply, or None after counting the failure (or the budget stop)."""
    try:
        return await client.chat(story_messages(spec))
    except BudgetExceeded:
        run.report.not_attempted += 1
    except Exception as e:  # the run goes on; the id is retried next time
        run.fail(spec.id, e)
    return None


async def _generate_with_summary(run: _Run, client: LLMClient, spec, out: JsonlAppender, rejects: JsonlAppender):
    """A story, checked, then its one-line summary (a second call), then the record: in that order, since
    the summary is asked of the checked story."""
    reply = await _fetch_story(run, client, spec)
    if reply is None:
        return
    story = run.validate(spec, reply.text, rejects, reply.finish_reason)
    if story is None:
        return
    try:
        summary = await client.chat(summary_messages(story.text), max_tokens=SUMMARY_MAX_TOKENS)
    except BudgetExceeded:
        run.report.not_attempted += 1
        return
    except Exception as e:  # story not written: the next run generates it again, with its summary
        run.fail(spec.id, e, prefix="summary:")
        return
    if (problem := summary_problem(summary)) is not None:  # rejected like a cut-off story: asking again
        story.summary = summary.text                        # would most likely pay for the same again
        run.reject(story, "summary_" + problem[0], problem[1], rejects)
        return
    story.summary = summary.answer
    run.accept(story, out)


def summary_problem(reply: ChatResult) -> tuple[str, str] | None:
    """Why a summary reply cannot be used (cut off, all reasoning, empty), else None."""
    answer = reply.answer
    return reply_problem(reply.text, answer, reply.finish_reason) or (None if answer else ("empty", ""))
