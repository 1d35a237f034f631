"""The paper's GPT-Eval (Eldan & Li 2023, section 3) with any OpenAI-compatible judge model.

The judge sees the story beginning and the student's completion joined by `***`, gives a general
assessment (turn 1), then grades grammar, creativity, consistency and plot out of 10 and guesses the
author's age group A-F (turn 2). Both turns are the paper's text word for word (including its typo
"gramatically" and its opening "the following exercise").

Joining whitespace (our choice; the paper shows the blocks but not the bytes): turn 1 is
`<intro>\\n\\n<beginning>***<completion>\\n\\n<question>`. The beginning and completion are inserted
exactly as given, not stripped, so a sentence split mid-way reads `...she saw a***big dog...` as in
the paper's figure.

Extension (not in the paper), used only when instructions are passed for a completion (Instruct
models): the instructions are shown after the story in turn 1, and turn 2 also asks for an
"instruction following" grade, scored as the extra dimension `instruction_following`.

Replies are parsed from free text or JSON (a reasoning model's `<think>` block left out); a reply whose
scores cannot be read gets one format reminder turn, then a `Grade(status="failed", reason=...)`: never
dropped. The judge grades at `LLMConfig.temperature`, else 0 (`judge_temperature`).

`repeats` > 1 judges each completion that many times, each repeat a conversation of its own (its own
cache entries, so a resumed grading pays only for the repeats it lacks); the Grade holds the mean of the
repeats that succeeded, the most common age group, and each repeat's scores in `extra["repeat_scores"]`
(`grade_tables.judge_agreement` says how far they agree).

The cache, one append-only JSONL that one process at a time may grade with (`locks.exclusive`), holds:
* grades keyed by (Completion.key, instructions, repeat, judge model as configured, the model snapshot
  the server said answered, the temperature, PROMPT_VERSION), so a re-run makes no calls, and a model update behind an alias
  ("gpt-4o") regrades instead of mixing two judges' grades (the snapshot is learnt from replies: a run
  that finds every grade cached asks nothing and keeps them). Bump PROMPT_VERSION whenever the prompt
  text changes.
* each turn-1 reply as it arrives, so a grading killed mid-way pays only for turn 2 when resumed.
* failed grades that a new try could change (unreadable replies, refused requests), each with its error:
  a completion failed `max_attempts` times (over several runs) is reported failed without a new request.
  Failures that do not belong to the completion (budget, a bad key, a server down) are retried next run.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tinystories_lib.evals.grades import LLM_DIMENSIONS, Completion, Grade
from tinystories_lib.evals.judge_prompt import (
    INSTRUCTION_DIMENSION,
    PROMPT_VERSION,
    Instructions,
    ParsedGrade,
    parse_grade,
    reminder_messages,
    turn1_messages,
    turn2_messages,
)
from tinystories_lib.llm.batch import BatchOutcome, forget_batch, run_batch
from tinystories_lib.llm.client import (
    ChatResult,
    LLMClient,
    LLMConfig,
    Usage,
    map_concurrently,
    run_async,
    strip_reasoning,
)
from tinystories_lib.llm.errors import (
    BudgetExceeded,
    MalformedReply,
    RequestRefused,
    describe_error,
    error_detail,
)
from tinystories_lib.llm.jsonl import JsonlAppender, read_jsonl_records, repair_jsonl_tail
from tinystories_lib.locks import exclusive

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3  # failed grades of one completion, over all runs, before it is no longer asked


def judge_temperature(config: LLMConfig) -> float | None:
    """The config's temperature, else 0: a grade should not hang on a dice roll. OpenAI's reasoning models
    take none but their default, so they get None (not sent)."""
    if config.temperature is not None:
        return config.temperature
    return None if config.is_reasoning_model else 0.0


def _counts_as_attempt(e: BaseException) -> bool:
    """Whether a failure says something about this completion's request (cached, retried a bounded number
    of times), not about the budget, the key or a server that is down (retried by the next run)."""
    return isinstance(e, MalformedReply) or (isinstance(e, RequestRefused) and e.status_code not in (401, 403, 404))


# ------------------------------------------------------------------------------------ the judge


def _instructions_hash(instructions: str | None) -> str:
    return hashlib.sha256(instructions.encode()).hexdigest()[:12] if instructions else "-"


@dataclass
class _Item:
    completion: Completion
    instructions: str | None
    repeat: int = 0  # the first judgment of a completion has the key it had before repeats existed

    @property
    def cache_key(self) -> str:
        key = f"{self.completion.key}:{_instructions_hash(self.instructions)}"
        return f"{key}:r{self.repeat}" if self.repeat else key

    @property
    def dimensions(self) -> tuple[str, ...]:
        return LLM_DIMENSIONS + ((INSTRUCTION_DIMENSION,) if self.instructions else ())


class LLMJudge:
    """The paper's GPT-Eval as a `Grader`, with any OpenAI-compatible model as the judge.

    `grade(completions)` runs the two-turn conversations concurrently (bounded by the config), caches
    turn-1 replies and grades in `cache_path` (append-only JSONL, see the module docstring) and returns
    one Grade per completion, in order; failed ones carry `status="failed"` and a `reason`, and are
    retried by later runs up to `max_attempts` in all. `usage` accumulates tokens and cost over the judge's
    life; `budget_usd` caps it. `grade_batch` does the same through the Batch API (turn 1 and turn 2 as
    two batch rounds). `snapshot` is the model the endpoint says answered, once a reply has come.
    `repeats` judgments of each completion are averaged into its Grade (see the module docstring)."""

    is_llm = True

    def __init__(
        self,
        config: LLMConfig,
        *,
        cache_path: str | Path | None = None,
        budget_usd: float | None = None,
        progress: bool = False,
        max_attempts: int = MAX_ATTEMPTS,
        repeats: int = 1,
    ):
        if repeats < 1:
            raise ValueError(f"LLMJudge repeats must be >= 1, got {repeats}")
        self.config = config
        self.repeats = repeats
        self.name = f"llm-judge:{config.model}"
        self.cache_path = Path(cache_path) if cache_path is not None else None
        self.budget_usd = budget_usd
        self.progress = progress
        self.max_attempts = max_attempts
        self.temperature = judge_temperature(config)
        self.usage = Usage()
        self.snapshot: str | None = None
        # The cache as read by the last `grade` call (each call reads it again, under its lock).
        self._grades: dict[str, dict[str | None, dict]] = {}  # key -> snapshot -> grade
        self._failures: dict[str, list[dict]] = {}
        self._turn1: dict[str, dict] = {}
        self._file_snapshot: str | None = None  # of the latest record: the judge's snapshot till a reply says

    def __repr__(self) -> str:
        return (f"LLMJudge(model={self.config.model!r}, base_url={self.config.base_url!r}, cache={self.cache_path}"
                + (f", repeats={self.repeats})" if self.repeats > 1 else ")"))

    # -------------------------------------------------------------- cache
    def _load_cache(self) -> None:
        """(Re)read the cache file: another process may have graded into it since this judge last did."""
        self._grades, self._failures, self._turn1, self._file_snapshot = {}, {}, {}, None
        if self.cache_path is None:
            return
        repair_jsonl_tail(self.cache_path)
        for rec in read_jsonl_records(self.cache_path):
            if rec.get("judge_model") != self.config.model or rec.get("prompt_version") != PROMPT_VERSION:
                continue
            # Another temperature is another judge; records from before temperatures were kept are used.
            if "temperature" in rec and rec["temperature"] != self.temperature:
                continue
            key, snap = rec["cache_key"], rec.get("judge_snapshot")
            if rec.get("kind") == "turn1":
                self._turn1[key] = rec
            elif rec.get("status") == "ok":
                self._grades.setdefault(key, {})[snap] = rec
            else:
                self._failures.setdefault(key, []).append(rec)
            self._file_snapshot = snap or self._file_snapshot

    def _locked(self):
        """Grading with a cache file is one process's at a time (else both pay for every completion)."""
        if self.cache_path is None:
            return contextlib.nullcontext()
        return exclusive(self.cache_path, "grading with")

    def _cache_writer(self):
        if self.cache_path is None:
            return _NullWriter()
        return JsonlAppender(self.cache_path)

    def _current_snapshot(self) -> str | None:
        return self.snapshot or self._file_snapshot

    def _saw(self, result: ChatResult) -> None:
        self.snapshot = self.snapshot or result.model

    def _compatible(self, rec: dict) -> bool:
        # Records written before snapshots were recorded have none: kept rather than paid for again.
        snap, current = rec.get("judge_snapshot"), self._current_snapshot()
        return snap is None or current is None or snap == current

    def _cached(self, item: _Item) -> dict | None:
        """The record that answers for `item` without a request: its grade by the current snapshot, or its
        last failure once it has failed `max_attempts` times; else None."""
        by_snapshot = self._grades.get(item.cache_key, {})
        current = self._current_snapshot()
        if current:
            rec = by_snapshot.get(current) or by_snapshot.get(None)
        else:
            rec = next(reversed(by_snapshot.values()), None)
        if rec is not None:
            return rec
        failures = self._failures.get(item.cache_key, [])
        if len(failures) < self.max_attempts:
            return None
        return {**failures[-1], "error": failures[-1]["reason"],
                "reason": f"{failures[-1]['reason']} (failed {len(failures)} times, so not asked "
                          f"again; delete its lines from {self.cache_path} to try once more)"}

    def _remember(self, writer, item: _Item, record: dict, counts: bool = True) -> None:
        """Keep a grade, or a failure that `counts` as one of the completion's attempts."""
        if record["status"] == "ok":
            self._grades.setdefault(item.cache_key, {})[record["judge_snapshot"]] = record
        elif counts:
            self._failures.setdefault(item.cache_key, []).append(record)
        else:
            return
        writer.write(record)

    def _turn1_reply(self, item: _Item) -> str | None:
        rec = self._turn1.get(item.cache_key)
        return rec["reply"] if rec is not None and self._compatible(rec) else None

    def _remember_turn1(self, writer, item: _Item, result: ChatResult) -> None:
        rec = {"kind": "turn1", "cache_key": item.cache_key, "judge_model": self.config.model,
               "judge_snapshot": result.model, "temperature": self.temperature, "prompt_version": PROMPT_VERSION,
               "reply": result.text}
        writer.write(rec)  # at once: a kill before turn 2 then costs only turn 2
        self._turn1[item.cache_key] = rec

    # -------------------------------------------------------------- records and grades
    def _record(
        self, item: _Item, replies: list[str], parsed: ParsedGrade | None, error: str | None = None,
        snapshot: str | None = None,
    ) -> dict:
        rec = {
            "cache_key": item.cache_key,
            "completion_key": item.completion.key,
            "judge_model": self.config.model,
            "judge_snapshot": snapshot or self.snapshot,
            "temperature": self.temperature,
            "prompt_version": PROMPT_VERSION,
            "instructions_sha": _instructions_hash(item.instructions),
            "status": "ok",
            "reason": None,
            "scores": parsed.scores if parsed else {},
            "age_group": parsed.age_group if parsed else None,
            "replies": replies,
        }
        if error is not None:
            rec.update(status="failed", reason=error)
        elif parsed is not None and parsed.missing:
            rec.update(
                status="failed",
                reason=f"unparseable judge reply after a format reminder (missing {', '.join(parsed.missing)})",
            )
        return rec

    def _grade(self, item: _Item, rec: dict, cached: bool) -> Grade:
        c = item.completion
        ok = rec["status"] == "ok"
        extra = {"prompt_version": PROMPT_VERSION, "cached": cached, "judge_snapshot": rec.get("judge_snapshot"),
                 "temperature": rec.get("temperature")}
        if item.instructions:
            extra["instructions_sha"] = _instructions_hash(item.instructions)
        if not ok:
            # `permanent`: failed `max_attempts` times (over all runs), so no later run asks again
            attempts = len(self._failures.get(item.cache_key, []))
            extra.update(partial_scores=rec["scores"], replies=rec["replies"], error=rec.get("error") or rec["reason"],
                         attempts=attempts, permanent=attempts >= self.max_attempts)
        return Grade(
            model=c.model, prompt_id=c.prompt_id, completion_key=c.key, grader=self.name,
            scores=dict(rec["scores"]) if ok else {}, age_group=rec["age_group"] if ok else None,
            status=rec["status"], reason=rec["reason"], step=c.step, sample_index=c.sample_index, extra=extra,
        )

    def _items(self, completions: Sequence[Completion], instructions: Instructions) -> list[_Item]:
        def lookup(c: Completion) -> str | None:
            if instructions is None:
                return None
            if callable(instructions):
                return instructions(c)
            return instructions.get(c.prompt_id)

        return [_Item(c, text, r) for c in completions for text in [lookup(c)] for r in range(self.repeats)]

    def _todo(self, items: list[_Item], fresh: dict[str, dict]) -> dict[str, _Item]:
        todo = {it.cache_key: it for it in items if it.cache_key not in fresh and self._cached(it) is None}
        stale = sum(bool(self._grades.get(k)) for k in todo)
        if stale:
            log.warning("%s: %d cached grades came from another snapshot than %s (the model behind %r changed): "
                        "graded again, not mixed", self.name, stale, self._current_snapshot(), self.config.model)
        return todo

    def _finish(self, items: list[_Item], fresh: dict[str, dict]) -> list[Grade]:
        judged = []
        for it in items:
            if it.cache_key in fresh:
                judged.append(self._grade(it, fresh[it.cache_key], cached=False))
            else:
                judged.append(self._grade(it, self._cached(it), cached=True))
        n = self.repeats
        grades = [_mean_of_repeats(judged[i:i + n]) if n > 1 else judged[i] for i in range(0, len(judged), n)]
        n_failed = sum(g.status != "ok" for g in grades)
        log.info(
            "%s: %d graded%s (%d judgments from cache, %d grades failed), $%.4f so far",
            self.name, len(grades), f" {n} times each" if n > 1 else "", len(items) - len(fresh), n_failed,
            self.usage.cost_usd,
        )
        return grades

    # -------------------------------------------------------------- online
    async def _ask(self, client: LLMClient, messages: list[dict]) -> ChatResult:
        result = await client.chat(messages, temperature=self.temperature)
        self._saw(result)
        return result

    async def _converse(self, client: LLMClient, item: _Item, writer) -> tuple[dict, bool]:
        """Turn 1 (unless its reply is cached), turn 2, and one format reminder if turn 2 cannot be parsed.
        The record, and whether a failure counts as one of the completion's attempts."""
        msgs1 = turn1_messages(item.completion, item.instructions)
        assessment = self._turn1_reply(item)
        replies: list[str] = [] if assessment is None else [assessment]
        try:
            if assessment is None:
                first = await self._ask(client, msgs1)
                assessment = first.text
                replies.append(assessment)
                if not strip_reasoning(assessment):  # not kept: a new try may answer
                    return self._record(item, replies, None, "the judge's turn-1 reply was all reasoning, no "
                                        "assessment: raise max_tokens", first.model), True
                self._remember_turn1(writer, item, first)
            # Turn 2 sees the assessment without its reasoning, as reasoning models' own APIs pass it on.
            msgs2 = turn2_messages(msgs1, strip_reasoning(assessment), item.instructions)
            grading = await self._ask(client, msgs2)
            replies.append(grading.text)
            parsed = parse_grade(grading.text, item.dimensions)
            if parsed.missing:
                reminder = reminder_messages(msgs2, strip_reasoning(grading.text), item.dimensions)
                grading = await self._ask(client, reminder)
                replies.append(grading.text)
                parsed = parse_grade(grading.text, item.dimensions)
        except BudgetExceeded as e:
            return self._record(item, replies, None, f"budget exceeded: {e}"), False
        except Exception as e:  # recorded on the Grade, retried by the next run
            return self._record(item, replies, None, self._error_reason(e)), _counts_as_attempt(e)
        return self._record(item, replies, parsed, snapshot=grading.model), True

    async def agrade(self, completions: Sequence[Completion], *, instructions: Instructions = None) -> list[Grade]:
        """Async form of `grade`."""
        items = self._items(completions, instructions)
        fresh: dict[str, dict] = {}
        with self._locked():
            self._load_cache()
            # A second pass when the replies of the first show that the model behind the alias changed.
            for _ in range(2):
                todo = self._todo(items, fresh)
                if todo:
                    await self._grade_online(todo, fresh)
            return self._finish(items, fresh)

    async def _grade_online(self, todo: dict[str, _Item], fresh: dict[str, dict]) -> None:
        bar = _progress(len(todo), self.progress)
        async with LLMClient(self.config, budget_usd=self.budget_usd, usage=self.usage) as client:
            with self._cache_writer() as writer:

                async def one(item: _Item) -> None:
                    rec, counts = await self._converse(client, item, writer)
                    fresh[item.cache_key] = rec
                    self._remember(writer, item, rec, counts)
                    if bar is not None:
                        bar.update(1)

                try:
                    await map_concurrently(list(todo.values()), one, self.config.max_concurrency)
                finally:
                    if bar is not None:
                        bar.close()

    def grade(self, completions: Sequence[Completion], *, instructions: Instructions = None) -> list[Grade]:
        """One Grade per completion, in order. `instructions` (Instruct models): prompt_id -> text, or a
        function Completion -> text|None; those completions are also graded on instruction following."""
        return run_async(self.agrade(completions, instructions=instructions))

    # -------------------------------------------------------------- Batch API
    def _state_path(self, state_dir: str | Path | None, turn: str) -> Path | None:
        if state_dir is not None:
            return Path(state_dir) / f"judge-{self.config.model}-{turn}.json"
        if self.cache_path is not None:
            return self.cache_path.with_name(f"{self.cache_path.name}.batch-{turn}.json")
        return None

    async def agrade_batch(
        self,
        completions: Sequence[Completion],
        *,
        instructions: Instructions = None,
        poll_s: float = 30.0,
        max_wait_s: float | None = None,
        state_dir: str | Path | None = None,
    ) -> list[Grade]:
        """Async form of `grade_batch`."""
        items = self._items(completions, instructions)
        fresh: dict[str, dict] = {}
        with self._locked():
            self._load_cache()
            for _ in range(2):  # a second round pair when the replies show a new model behind the alias
                todo = self._todo(items, fresh)
                if todo:
                    fresh.update(await self._grade_batch(todo, poll_s, max_wait_s, state_dir))
            return self._finish(items, fresh)

    async def _grade_batch(self, todo: dict[str, _Item], poll_s, max_wait_s, state_dir) -> dict[str, dict]:
        states = [self._state_path(state_dir, "turn1"), self._state_path(state_dir, "turn2")]
        common = {"poll_s": poll_s, "max_wait_s": max_wait_s, "usage": self.usage}
        kept = {k: reply for k, it in todo.items() if (reply := self._turn1_reply(it)) is not None}
        turn1 = {k: turn1_messages(it.completion, it.instructions) for k, it in todo.items() if k not in kept}
        try:
            first = await run_batch(self.config, turn1, state_path=states[0], budget_usd=self._budget_left(),
                                    description="gpt-eval turn 1", **common)
            with self._cache_writer() as writer:
                for k, result in first.results.items():
                    if strip_reasoning(result.text):
                        self._remember_turn1(writer, todo[k], result)
            assessments = kept | {k: r.text for k, r in first.results.items()}
            turn2 = {
                k: turn2_messages(turn1_messages(it.completion, it.instructions),
                                  strip_reasoning(assessments[k]), it.instructions)
                for k, it in todo.items()
                if k in assessments
            }
            second = await run_batch(
                self.config, turn2, state_path=states[1], budget_usd=self._budget_left(),
                description="gpt-eval turn 2", **common,
            )
        except BudgetExceeded as e:
            return {k: self._record(it, [], None, f"budget exceeded: {e}") for k, it in todo.items()}
        for result in (*first.results.values(), *second.results.values()):
            self._saw(result)
        fresh = await self._merge_batches(todo, first.errors, assessments, turn2, second)
        for state in states:
            forget_batch(state)
        return fresh

    async def _merge_batches(
        self, todo: dict[str, _Item], errors: dict[str, str], assessments: dict[str, str], turn2: dict,
        second: BatchOutcome,
    ) -> dict[str, dict]:
        """Parse turn-2 replies; unreadable ones get their format reminder online (few, and a third
        batch round would add up to a day of waiting)."""
        fresh: dict[str, dict] = {}
        uncounted: set[str] = set()  # failures the next run retries without counting them
        retry: list[str] = []
        for k, it in todo.items():
            if k in errors or k in second.errors:
                err = errors.get(k) or second.errors.get(k)
                fresh[k] = self._record(it, [], None, "batch error: " + error_detail(err, self.config.api_key_env))
                uncounted.add(k)
                continue
            replies = [assessments[k], second.results[k].text]
            parsed = parse_grade(replies[1], it.dimensions)
            fresh[k] = self._record(it, replies, parsed, snapshot=second.results[k].model)
            if parsed.missing:
                retry.append(k)
        with self._cache_writer() as writer:
            if retry:
                async with LLMClient(self.config, budget_usd=self.budget_usd, usage=self.usage) as client:

                    async def remind(k: str) -> None:
                        it, replies = todo[k], fresh[k]["replies"]
                        reminder = reminder_messages(turn2[k], strip_reasoning(replies[1]), it.dimensions)
                        try:
                            again = await self._ask(client, reminder)
                        except Exception as e:
                            fresh[k] = self._record(it, replies, None, self._error_reason(e))
                            if not _counts_as_attempt(e):
                                uncounted.add(k)
                            return
                        parsed = parse_grade(again.text, it.dimensions)
                        fresh[k] = self._record(it, replies + [again.text], parsed, snapshot=again.model)

                    await map_concurrently(retry, remind, self.config.max_concurrency)
            for k, rec in fresh.items():
                self._remember(writer, todo[k], rec, counts=k not in uncounted)
        return fresh

    def _error_reason(self, e: BaseException) -> str:
        return f"llm error: {describe_error(e)}: {error_detail(e, self.config.api_key_env)}"

    def _budget_left(self) -> float | None:
        return None if self.budget_usd is None else max(0.0, self.budget_usd - self.usage.cost_usd)

    def grade_batch(
        self,
        completions: Sequence[Completion],
        *,
        instructions: Instructions = None,
        poll_s: float = 30.0,
        max_wait_s: float | None = None,
        state_dir: str | Path | None = None,
    ) -> list[Grade]:
        """`grade` through the Batch API at the batch discount: turn 1 for every uncached completion
        as one batch, then turn 2 as a second. Batch ids are saved next to the cache (or in
        `state_dir`), so after a kill, or a BatchPending raised when `max_wait_s` runs out, calling
        again with the same completions resumes polling instead of paying twice."""
        return run_async(
            self.agrade_batch(
                completions, instructions=instructions, poll_s=poll_s, max_wait_s=max_wait_s, state_dir=state_dir
            )
        )


def _mean_of_repeats(repeats: list[Grade]) -> Grade:
    """One Grade from a completion's repeated judgments: the mean score per dimension of those that
    succeeded, the most common age group (the earliest on a tie); failed when none did."""
    ok = [g for g in repeats if g.status == "ok"]
    failed = [g for g in repeats if g.status != "ok"]
    info = {"repeats": len(repeats), "repeats_failed": len(failed), "repeat_scores": [g.scores for g in ok],
            "repeat_errors": [g.extra.get("error") or g.reason for g in failed],
            "cached": all(g.extra.get("cached") for g in repeats)}
    if not ok:
        base = repeats[-1]
        return Grade(**{**vars(base), "extra": {**base.extra, **info,
                                                "permanent": all(g.extra.get("permanent") for g in repeats)}})
    base = ok[0]
    scores = {d: sum(g.scores[d] for g in ok) / len(ok) for d in base.scores if all(d in g.scores for g in ok)}
    ages = Counter(g.age_group for g in ok if g.age_group)
    age = max(ages, key=lambda a: (ages[a], -[g.age_group for g in ok].index(a))) if ages else None
    return Grade(**{**vars(base), "scores": scores, "age_group": age, "extra": {**base.extra, **info}})


class _NullWriter:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def write(self, record) -> None:
        pass


def _progress(total: int, enabled: bool):
    if not enabled or total == 0:
        return None
    from tinystories_lib.progress import bar

    return bar(total=total, desc="judging", unit="completion")
