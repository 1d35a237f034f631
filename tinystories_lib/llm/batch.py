"""The Batch API: requests answered within a day at the batch discount, resumable after a kill.

`run_batch` sends any set of chat requests (custom_id -> messages) as one batch: build the JSONL, upload,
create, poll, download, parse by custom_id (`build_batch_jsonl`, `parse_batch_output`); the batch id is
saved to a state file as soon as it exists, so a killed run resumes polling instead of paying twice
(`forget_batch` once the results are merged). The judge uses it as is; `generate_stories_batch` runs
corpus generation through it with the same validation and output files as the online path
(`llm.generate`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tinystories_lib.llm.client import (
    ChatResult,
    LLMConfig,
    Usage,
    _preview,
    chat_body,
    chat_result_from_response,
    estimate_message_tokens,
    make_async_client,
    run_async,
    with_retries,
)
from tinystories_lib.llm.errors import BatchError, BatchPending, BudgetExceeded, MalformedReply
from tinystories_lib.llm.jsonl import JsonlAppender
from tinystories_lib.llm.runner import (
    SUMMARY_MAX_TOKENS,
    GenerationReport,
    _exclusive,
    _prepare,
    _Run,
    story_messages,
    summary_messages,
)
from tinystories_lib.llm.story_checks import StoryValidator

log = logging.getLogger(__name__)
_BATCH_TERMINAL = {"completed", "failed", "expired", "cancelled"}


# ---------------------------------------------------------------------------------------- Batch API


@dataclass
class BatchOutcome:
    """What a finished batch returned: replies by custom_id, and an error text for every other id
    that was requested (server errors, malformed replies, ids missing from an expired batch)."""

    batch_id: str | None
    status: str
    results: dict[str, ChatResult] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


def build_batch_jsonl(
    config: LLMConfig, requests: Mapping[str, Sequence[Mapping[str, str]]], *, max_tokens: int | None = None
) -> bytes:
    """The Batch API input file: one POST /v1/chat/completions per custom_id."""
    lines = [
        json.dumps(
            {
                "custom_id": cid,
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": chat_body(config, msgs, max_tokens=max_tokens),
            },
            ensure_ascii=False,
        )
        for cid, msgs in requests.items()
    ]
    return ("\n".join(lines) + "\n").encode("utf-8")


def _error_text(err: Any) -> str:
    if isinstance(err, Mapping):
        parts = [str(err[k]) for k in ("code", "message") if err.get(k)]
        return ": ".join(parts) or json.dumps(err)[:200]
    return str(err)


def parse_batch_output(text: str) -> tuple[dict[str, ChatResult], dict[str, str]]:
    """Parse a batch output or error file into (results, errors) keyed by custom_id."""
    results: dict[str, ChatResult] = {}
    errors: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            log.warning("skipping an unreadable batch output line: %r", _preview(line))
            continue
        cid = rec.get("custom_id")
        response = rec.get("response") or {}
        body = response.get("body") or {}
        if rec.get("error"):
            errors[cid] = _error_text(rec["error"])
        elif response.get("status_code") != 200:
            errors[cid] = f"http_{response.get('status_code')}: {_error_text(body.get('error') or body)}"
        else:
            try:
                results[cid] = chat_result_from_response(body)
            except MalformedReply as e:
                errors[cid] = str(e)
    return results, errors


def _load_batch_state(state_path: Path | None, config: LLMConfig, ids: set[str]) -> str | None:
    """The batch id recorded in `state_path` if it covers every id we still need, else None."""
    if state_path is None or not state_path.exists():
        return None
    state = json.loads(state_path.read_text(encoding="utf-8"))
    if state.get("model") == config.model and ids <= set(state.get("custom_ids", ())):
        return state["batch_id"]
    raise BatchError(
        f"{state_path} records batch {state.get('batch_id')} for a different set of requests; rerun with "
        "the original inputs to collect it, or delete the file to submit a new batch"
    )


def _save_batch_state(state_path: Path | None, config: LLMConfig, batch_id: str, ids: Sequence[str]) -> None:
    if state_path is None:
        return
    state_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = state_path.with_name(state_path.name + ".tmp")
    tmp.write_text(json.dumps({"batch_id": batch_id, "model": config.model, "custom_ids": list(ids)}))
    tmp.replace(state_path)


def forget_batch(state_path: str | Path | None) -> None:
    """Delete a batch state file once its results are merged."""
    if state_path is not None:
        Path(state_path).unlink(missing_ok=True)


async def _submit_batch(client, config: LLMConfig, jsonl: bytes, description: str | None) -> str:
    upload = await with_retries(
        config,
        lambda: client.files.create(file=("batch.jsonl", jsonl, "application/jsonl"), purpose="batch"),
        what="batch upload",
    )
    metadata = {"description": description} if description else None
    kwargs = {"metadata": metadata} if metadata else {}
    batch = await with_retries(
        config,
        lambda: client.batches.create(
            input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h", **kwargs
        ),
        what="batch create",
    )
    return batch.id


async def _wait_batch(client, config, batch_id: str, poll_s: float, max_wait_s: float | None, state_path):
    t0 = time.monotonic()
    while True:
        batch = await with_retries(config, lambda: client.batches.retrieve(batch_id), what="batch poll")
        if batch.status in _BATCH_TERMINAL:
            return batch
        counts = getattr(batch, "request_counts", None)
        log.info("batch %s: %s %s", batch_id, batch.status, counts or "")
        if max_wait_s is not None and time.monotonic() - t0 + poll_s > max_wait_s:
            raise BatchPending(batch_id, batch.status, state_path)
        await asyncio.sleep(poll_s)


async def _download(client, config: LLMConfig, file_id: str | None) -> str:
    if not file_id:
        return ""
    content = await with_retries(config, lambda: client.files.content(file_id), what="batch download")
    return content.text


async def run_batch(
    config: LLMConfig,
    requests: Mapping[str, Sequence[Mapping[str, str]]],
    *,
    state_path: str | Path | None = None,
    poll_s: float = 30.0,
    max_wait_s: float | None = None,
    budget_usd: float | None = None,
    usage: Usage | None = None,
    max_tokens: int | None = None,
    description: str | None = None,
) -> BatchOutcome:
    """Run `requests` (custom_id -> messages) through the Batch API and return every reply or error.

    With `state_path`, the batch id is recorded right after submission; a rerun (e.g. after a kill
    or a BatchPending from `max_wait_s`) resumes polling that batch instead of submitting again. The
    caller deletes the state with `forget_batch` once the results are safely merged. The budget check
    happens before submission, on the estimated cost at the batch discount."""
    if not requests:
        return BatchOutcome(None, "empty")
    state_path = Path(state_path) if state_path is not None else None
    ids = list(requests)
    client = make_async_client(config)
    try:
        batch_id = _load_batch_state(state_path, config, set(ids))
        if batch_id is None:
            n_in = sum(estimate_message_tokens(m) for m in requests.values()) / len(requests)
            est = config.estimate_cost(len(requests), n_in, max_tokens, batch=True)
            if budget_usd is not None and est > budget_usd:
                raise BudgetExceeded(budget_usd, 0.0, est)
            jsonl = build_batch_jsonl(config, requests, max_tokens=max_tokens)
            batch_id = await _submit_batch(client, config, jsonl, description)
            _save_batch_state(state_path, config, batch_id, ids)
            log.info("submitted batch %s (%d requests, est. $%.4f)", batch_id, len(ids), est)
        else:
            log.info("resuming batch %s from %s", batch_id, state_path)
        batch = await _wait_batch(client, config, batch_id, poll_s, max_wait_s, state_path)
        results, errors = parse_batch_output(await _download(client, config, batch.output_file_id))
        errors.update(parse_batch_output(await _download(client, config, batch.error_file_id))[1])
    finally:
        await client.close()
    outcome = BatchOutcome(batch_id, batch.status)
    for cid in ids:  # only what we asked for: a resumed batch may hold ids merged earlier
        if cid in results:
            outcome.results[cid] = results[cid]
            if usage is not None:
                usage.add(results[cid], config, batch=True)
        else:
            outcome.errors[cid] = errors.get(cid, f"no result in batch {batch_id} (status {batch.status})")
    return outcome



# ------------------------------------------------------------------------------------ Batch API


def _batch_state_path(out_path: Path, round_name: str) -> Path:
    return out_path.with_name(f"{out_path.name}.batch-{round_name}.json")


async def agenerate_stories_batch(
    specs: Sequence,
    config: LLMConfig,
    out_path: str | Path,
    *,
    budget_usd: float | None = None,
    with_summary: bool = False,
    poll_s: float = 30.0,
    max_wait_s: float | None = None,
    validator: StoryValidator | None = None,
    rejects_path: str | Path | None = None,
    retry_rejected: bool = False,
) -> GenerationReport:
    """Async form of `generate_stories_batch`."""
    out_path = Path(out_path)
    with _exclusive(out_path):
        run = _prepare(
            specs, config, out_path, rejects_path, validator, with_summary=with_summary,
            retry_rejected=retry_rejected, mode="batch", budget_usd=budget_usd,
        )
        states = [_batch_state_path(out_path, "stories"), _batch_state_path(out_path, "summaries")]
        try:
            merged = await _batch_rounds(run, states, budget_usd, poll_s, max_wait_s)
        except BatchPending as e:
            log.info("%s", e)
            run.report.status = "pending"
            run.report.batch_ids.append(e.batch_id)
            merged = False
        if merged:  # every result is in the files: the recorded batches are spent
            for state in states:
                forget_batch(state)
    return run.report.finish(run.usage, run.t0)


async def _batch_rounds(run: _Run, states: list[Path], budget_usd, poll_s, max_wait_s) -> bool:
    """Round 1: stories; round 2 (with_summary): summaries of the valid ones. Valid stories are
    written only after the last round, so a kill in between resumes from the recorded batches.
    Returns False when the budget stopped a round (its state is kept for a rerun)."""
    if not run.pending:
        return True
    by_id = {s.id: s for s in run.pending}
    common = {"poll_s": poll_s, "max_wait_s": max_wait_s, "usage": run.usage}
    try:
        stories_out = await run_batch(
            run.config, {s.id: story_messages(s) for s in run.pending}, state_path=states[0],
            budget_usd=budget_usd, description="tinystories-lab stories", **common,
        )
    except BudgetExceeded as e:
        log.warning("%s", e)
        run.report.not_attempted = len(run.pending)
        return False
    run.report.batch_ids.append(stories_out.batch_id)
    for sid, err in stories_out.errors.items():
        run.fail_in_batch(sid, err)
    with JsonlAppender(run.out_path) as out, JsonlAppender(run.rejects_path) as rejects:
        valid = [
            story
            for sid, reply in stories_out.results.items()
            if (story := run.validate(by_id[sid], reply.text, rejects)) is not None
        ]
        if run.with_summary and valid:
            left = None if budget_usd is None else max(0.0, budget_usd - run.usage.cost_usd)
            try:
                summaries = await run_batch(
                    run.config, {s.id: summary_messages(s.text) for s in valid}, state_path=states[1],
                    budget_usd=left, max_tokens=SUMMARY_MAX_TOKENS, description="tinystories-lab summaries",
                    **common,
                )
            except BudgetExceeded as e:
                log.warning("%s", e)
                run.report.not_attempted = len(valid)
                return False
            run.report.batch_ids.append(summaries.batch_id)
            for sid, err in summaries.errors.items():
                run.fail_in_batch(sid, err, prefix="summary:")
            valid = [s for s in valid if s.id in summaries.results]
            for s in valid:
                s.summary = summaries.results[s.id].text.strip()
        for story in valid:
            run.accept(story, out)
    return True


def generate_stories_batch(
    specs: Sequence,
    config: LLMConfig,
    out_path: str | Path,
    *,
    budget_usd: float | None = None,
    with_summary: bool = False,
    poll_s: float = 30.0,
    max_wait_s: float | None = None,
    validator: StoryValidator | None = None,
    rejects_path: str | Path | None = None,
    retry_rejected: bool = False,
) -> GenerationReport:
    """`generate_stories` through the Batch API (half price on OpenAI, results within 24 h).

    Builds one batch of the ids not yet done, uploads it, polls every `poll_s` seconds, downloads
    the output and error files, validates and appends to the same files as the online path. The
    batch id is saved in `<out>.batch-stories.json`: a run killed (or stopped by `max_wait_s`, which
    returns status "pending") resumes polling that batch when called again with the same specs.
    `budget_usd` is checked against the estimate before submitting."""
    return run_async(
        agenerate_stories_batch(
            specs, config, out_path, budget_usd=budget_usd, with_summary=with_summary, poll_s=poll_s,
            max_wait_s=max_wait_s, validator=validator, rejects_path=rejects_path, retry_rejected=retry_rejected,
        )
    )
