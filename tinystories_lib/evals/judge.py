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

Replies are parsed from free text or JSON; a reply whose scores cannot be read gets one format
reminder turn, then a `Grade(status="failed", reason=...)`: never dropped. Grades are cached in an
append-only JSONL keyed by (Completion.key, judge model, PROMPT_VERSION, instructions), so a re-run
makes no calls. Bump PROMPT_VERSION whenever the prompt text changes.
"""

from __future__ import annotations

import hashlib
import logging
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
from tinystories_lib.llm.client import LLMClient, LLMConfig, Usage, map_concurrently, run_async
from tinystories_lib.llm.errors import BudgetExceeded, describe_error, error_detail
from tinystories_lib.llm.jsonl import JsonlAppender, read_jsonl_records, repair_jsonl_tail

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------ the judge


def _instructions_hash(instructions: str | None) -> str:
    return hashlib.sha256(instructions.encode()).hexdigest()[:12] if instructions else "-"


@dataclass
class _Item:
    completion: Completion
    instructions: str | None

    @property
    def cache_key(self) -> str:
        return f"{self.completion.key}:{_instructions_hash(self.instructions)}"

    @property
    def dimensions(self) -> tuple[str, ...]:
        return LLM_DIMENSIONS + ((INSTRUCTION_DIMENSION,) if self.instructions else ())


class LLMJudge:
    """The paper's GPT-Eval as a `Grader`, with any OpenAI-compatible model as the judge.

    `grade(completions)` runs the two-turn conversations concurrently (bounded by the config), caches
    each good grade in `cache_path` (append-only JSONL) and returns one Grade per completion, in
    order; failed ones carry `status="failed"` and a `reason`. Failures are not cached, so a re-run
    retries them. `usage` accumulates tokens and cost over the judge's life; `budget_usd` caps it.
    `grade_batch` does the same through the Batch API (turn 1 and turn 2 as two batch rounds)."""

    is_llm = True

    def __init__(
        self,
        config: LLMConfig,
        *,
        cache_path: str | Path | None = None,
        budget_usd: float | None = None,
        progress: bool = False,
    ):
        self.config = config
        self.name = f"llm-judge:{config.model}"
        self.cache_path = Path(cache_path) if cache_path is not None else None
        self.budget_usd = budget_usd
        self.progress = progress
        self.usage = Usage()
        self._cache: dict[str, dict] | None = None

    def __repr__(self) -> str:
        return f"LLMJudge(model={self.config.model!r}, base_url={self.config.base_url!r}, cache={self.cache_path})"

    # -------------------------------------------------------------- cache
    def _load_cache(self) -> dict[str, dict]:
        if self._cache is None:
            self._cache = {}
            if self.cache_path is not None:
                repair_jsonl_tail(self.cache_path)
                for rec in read_jsonl_records(self.cache_path):
                    if rec.get("judge_model") == self.config.model and rec.get("prompt_version") == PROMPT_VERSION:
                        self._cache[rec["cache_key"]] = rec
        return self._cache

    def _cache_writer(self):
        if self.cache_path is None:
            return _NullWriter()
        return JsonlAppender(self.cache_path)

    def _remember(self, writer, item: _Item, record: dict) -> None:
        if record["status"] == "ok":
            writer.write(record)
            self._load_cache()[item.cache_key] = record

    # -------------------------------------------------------------- records and grades
    def _record(self, item: _Item, replies: list[str], parsed: ParsedGrade | None, error: str | None = None) -> dict:
        rec = {
            "cache_key": item.cache_key,
            "completion_key": item.completion.key,
            "judge_model": self.config.model,
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
        extra = {"prompt_version": PROMPT_VERSION, "cached": cached}
        if item.instructions:
            extra["instructions_sha"] = _instructions_hash(item.instructions)
        if not ok:
            extra.update(partial_scores=rec["scores"], replies=rec["replies"])
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

        return [_Item(c, lookup(c)) for c in completions]

    def _todo(self, items: list[_Item]) -> dict[str, _Item]:
        cache = self._load_cache()
        return {it.cache_key: it for it in items if it.cache_key not in cache}

    def _finish(self, items: list[_Item], fresh: dict[str, dict]) -> list[Grade]:
        cache = self._load_cache()
        grades = []
        for it in items:
            if it.cache_key in fresh:
                grades.append(self._grade(it, fresh[it.cache_key], cached=False))
            else:
                grades.append(self._grade(it, cache[it.cache_key], cached=True))
        n_failed = sum(g.status != "ok" for g in grades)
        log.info(
            "%s: %d graded (%d from cache, %d failed), $%.4f so far",
            self.name, len(grades), len(items) - len(fresh), n_failed, self.usage.cost_usd,
        )
        return grades

    # -------------------------------------------------------------- online
    async def _converse(self, client: LLMClient, item: _Item) -> dict:
        """Turn 1, turn 2, and one format reminder if turn 2 cannot be parsed."""
        msgs1 = turn1_messages(item.completion, item.instructions)
        replies: list[str] = []
        try:
            assessment = (await client.chat(msgs1)).text
            replies.append(assessment)
            msgs2 = turn2_messages(msgs1, assessment, item.instructions)
            grading = (await client.chat(msgs2)).text
            replies.append(grading)
            parsed = parse_grade(grading, item.dimensions)
            if parsed.missing:
                again = (await client.chat(reminder_messages(msgs2, grading, item.dimensions))).text
                replies.append(again)
                parsed = parse_grade(again, item.dimensions)
        except BudgetExceeded as e:
            return self._record(item, replies, None, f"budget exceeded: {e}")
        except Exception as e:  # recorded on the Grade, retried by the next run
            return self._record(item, replies, None, self._error_reason(e))
        return self._record(item, replies, parsed)

    async def agrade(self, completions: Sequence[Completion], *, instructions: Instructions = None) -> list[Grade]:
        """Async form of `grade`."""
        items = self._items(completions, instructions)
        todo = self._todo(items)
        fresh: dict[str, dict] = {}
        bar = _progress(len(todo), self.progress)
        if todo:
            async with LLMClient(self.config, budget_usd=self.budget_usd, usage=self.usage) as client:
                with self._cache_writer() as writer:

                    async def one(item: _Item) -> None:
                        rec = await self._converse(client, item)
                        fresh[item.cache_key] = rec
                        self._remember(writer, item, rec)
                        if bar is not None:
                            bar.update(1)

                    try:
                        await map_concurrently(list(todo.values()), one, self.config.max_concurrency)
                    finally:
                        if bar is not None:
                            bar.close()
        return self._finish(items, fresh)

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
        todo = self._todo(items)
        states = [self._state_path(state_dir, "turn1"), self._state_path(state_dir, "turn2")]
        common = {"poll_s": poll_s, "max_wait_s": max_wait_s, "usage": self.usage}
        fresh: dict[str, dict] = {}
        try:
            first = await run_batch(
                self.config, {k: turn1_messages(it.completion, it.instructions) for k, it in todo.items()},
                state_path=states[0], budget_usd=self._budget_left(), description="gpt-eval turn 1", **common,
            )
            turn2 = {
                k: turn2_messages(turn1_messages(it.completion, it.instructions), first.results[k].text, it.instructions)
                for k, it in todo.items()
                if k in first.results
            }
            second = await run_batch(
                self.config, turn2, state_path=states[1], budget_usd=self._budget_left(),
                description="gpt-eval turn 2", **common,
            )
        except BudgetExceeded as e:
            fresh = {k: self._record(it, [], None, f"budget exceeded: {e}") for k, it in todo.items()}
            return self._finish(items, fresh)
        fresh = await self._merge_batches(todo, first, turn2, second)
        for state in states:
            forget_batch(state)
        return self._finish(items, fresh)

    async def _merge_batches(
        self, todo: dict[str, _Item], first: BatchOutcome, turn2: dict, second: BatchOutcome
    ) -> dict[str, dict]:
        """Parse turn-2 replies; unreadable ones get their format reminder online (few, and a third
        batch round would add up to a day of waiting)."""
        fresh: dict[str, dict] = {}
        retry: list[str] = []
        for k, it in todo.items():
            if k in first.errors or k in second.errors:
                err = first.errors.get(k) or second.errors.get(k)
                fresh[k] = self._record(it, [], None, "batch error: " + error_detail(err, self.config.api_key_env))
                continue
            replies = [first.results[k].text, second.results[k].text]
            parsed = parse_grade(replies[1], it.dimensions)
            fresh[k] = self._record(it, replies, parsed)
            if parsed.missing:
                retry.append(k)
        with self._cache_writer() as writer:
            if retry:
                async with LLMClient(self.config, budget_usd=self.budget_usd, usage=self.usage) as client:

                    async def remind(k: str) -> None:
                        it, replies = todo[k], fresh[k]["replies"]
                        try:
                            again = (await client.chat(reminder_messages(turn2[k], replies[1], it.dimensions))).text
                        except Exception as e:
                            fresh[k] = self._record(it, replies, None, self._error_reason(e))
                            return
                        fresh[k] = self._record(it, replies + [again], parse_grade(again, it.dimensions))

                    await map_concurrently(retry, remind, self.config.max_concurrency)
            for k, rec in fresh.items():
                self._remember(writer, todo[k], rec)
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
