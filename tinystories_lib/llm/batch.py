"""The Batch API: requests answered within a day at the batch discount, resumable after a kill.

`run_batch` sends any set of chat requests (custom_id -> messages) as batches: split into input files
under OpenAI's limits (`BatchLimits`, `split_batch`), build the JSONL, upload, create, poll, download,
parse by custom_id (`build_batch_jsonl`, `parse_batch_output`). Each input file's id is saved to a state
file before its batch is created, and the batch id as soon as it exists, so a killed run resumes polling
instead of paying twice, even when killed between creating a batch and saving its id: it finds the batch
made from the recorded file among the endpoint's batches (`forget_batch` once the results are merged). A
batch refused for the enqueued-token limit waits for an earlier one and goes again from the same file. The judge uses it as is; `generate_stories_batch` runs corpus generation through it with the same
validation and output files as the online path (`llm.generate`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tinystories_lib.llm.client import (
    BATCH_MAX_BYTES,
    BATCH_MAX_ENQUEUED_TOKENS,
    BATCH_MAX_REQUESTS,
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
from tinystories_lib.llm.errors import (
    BatchError,
    BatchPending,
    BudgetExceeded,
    MalformedReply,
    RequestRefused,
)
from tinystories_lib.llm.jsonl import JsonlAppender
from tinystories_lib.llm.runner import (
    SUMMARY_MAX_TOKENS,
    GenerationReport,
    _exclusive,
    _prepare,
    _Run,
    story_messages,
    summary_messages,
    summary_problem,
)
from tinystories_lib.llm.story_checks import StoryValidator

log = logging.getLogger(__name__)
_BATCH_TERMINAL = {"completed", "failed", "expired", "cancelled"}
_IDLE_REFUSALS = 3  # refusals in a row with none of our batches in flight before giving up
_LIST_PAGES = 50  # pages of 100 batches searched for one made from a recorded file, at most


# ---------------------------------------------------------------------------------------- Batch API


@dataclass
class BatchOutcome:
    """What a finished batch returned: replies by custom_id, and an error text for every other id
    that was requested (server errors, malformed replies, ids missing from an expired batch)."""

    batch_id: str | None  # the first of `batch_ids`
    status: str  # e.g. "completed", or "completed/expired" when the batches ended differently
    results: dict[str, ChatResult] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    batch_ids: list[str] = field(default_factory=list)


def build_batch_jsonl(
    config: LLMConfig, requests: Mapping[str, Sequence[Mapping[str, str]]], *, max_tokens: int | None = None
) -> bytes:
    """The Batch API input file: one POST /v1/chat/completions per custom_id."""
    return b"".join(_jsonl_line(config, cid, msgs, max_tokens) for cid, msgs in requests.items())


def _jsonl_line(config: LLMConfig, cid: str, messages: Sequence[Mapping[str, str]], max_tokens) -> bytes:
    body = chat_body(config, messages, max_tokens=max_tokens)
    line = {"custom_id": cid, "method": "POST", "url": "/v1/chat/completions", "body": body}
    return (json.dumps(line, ensure_ascii=False) + "\n").encode("utf-8")


def _error_text(err: Any) -> str:
    if not isinstance(err, Mapping) and hasattr(err, "code"):  # a batch's own errors (openai objects)
        err = {"code": err.code, "message": getattr(err, "message", None)}
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


@dataclass(frozen=True)
class BatchLimits:
    """How a round's requests are split into batch input files. The defaults are OpenAI's per-batch
    limits (50,000 requests and 200 MB per input file). `max_enqueued_tokens` caps each file's estimated
    prompt tokens: OpenAI refuses a whole batch (`token_limit_exceeded`) while the organization's enqueued
    prompt tokens for the model would pass its tier's batch queue limit, so a file must fit that limit on
    its own. 1M fits gpt-4o from tier 2 and gpt-4o-mini from tier 1; smaller only means more files.
    A config's own limits (`LLMConfig.batch_max_*`, from a profile's endpoint section): `from_config`."""

    max_requests: int = BATCH_MAX_REQUESTS
    max_bytes: int = BATCH_MAX_BYTES
    max_enqueued_tokens: int = BATCH_MAX_ENQUEUED_TOKENS

    def __post_init__(self):
        if min(self.max_requests, self.max_bytes, self.max_enqueued_tokens) < 1:
            raise ValueError(f"BatchLimits must all be >= 1, got {self}")

    @classmethod
    def from_config(cls, config: LLMConfig) -> BatchLimits:
        return cls(config.batch_max_requests, config.batch_max_bytes, config.batch_max_enqueued_tokens)


def split_batch(sizes: Mapping[str, tuple[int, int]], limits: BatchLimits) -> list[list[str]]:
    """Consecutive chunks of the ids of `sizes` (id -> (bytes, estimated prompt tokens)), each under
    every limit. A single request over a limit still goes, alone."""
    chunks: list[list[str]] = []
    n_bytes = n_tokens = 0
    for cid, (b, t) in sizes.items():
        if not chunks or (
            len(chunks[-1]) >= limits.max_requests
            or n_bytes + b > limits.max_bytes
            or n_tokens + t > limits.max_enqueued_tokens
        ):
            chunks.append([])
            n_bytes = n_tokens = 0
        chunks[-1].append(cid)
        n_bytes += b
        n_tokens += t
    return chunks


def _load_batch_state(state_path: Path | None, config: LLMConfig, ids: set[str]) -> tuple[list, list[dict]] | None:
    """(the ids the recorded round planned, its submitted chunks) if `state_path` covers every id we
    still need, else None when there is no state."""
    if state_path is None or not state_path.exists():
        return None
    state = json.loads(state_path.read_text(encoding="utf-8"))
    if state.get("model") == config.model and ids <= set(state.get("custom_ids", ())):
        # files written before chunking recorded one batch for the whole round
        chunks = state.get("chunks", [{"batch_id": state.get("batch_id"), "custom_ids": state.get("custom_ids")}])
        return state["custom_ids"], chunks
    raise BatchError(
        f"{state_path} records batches for a different set of requests; rerun with the original inputs to "
        "collect them, or delete the file to submit new batches"
    )


def _save_batch_state(state_path: Path | None, config: LLMConfig, planned: Sequence[str], chunks: list) -> None:
    """Atomically record the round's planned ids and every uploaded chunk: its ids, its input file
    (`file_id`, `uploaded_at`), its batch (`batch_id`, None until created) and the batches that refused it."""
    if state_path is None:
        return
    state_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = state_path.with_name(state_path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"model": config.model, "custom_ids": list(planned), "chunks": chunks}, f)
        f.flush()
        os.fsync(f.fileno())  # a batch id lost to a crash is a batch paid for twice
    tmp.replace(state_path)


def forget_batch(state_path: str | Path | None) -> None:
    """Delete a batch state file once its results are merged."""
    if state_path is not None:
        Path(state_path).unlink(missing_ok=True)


async def _upload(client, config: LLMConfig, jsonl: bytes):
    return await with_retries(
        config,
        lambda: client.files.create(file=("batch.jsonl", jsonl, "application/jsonl"), purpose="batch"),
        what="batch upload",
    )


async def _create_batch(client, config: LLMConfig, file_id: str, description: str | None) -> str:
    kwargs = {"metadata": {"description": description}} if description else {}
    batch = await with_retries(
        config,
        lambda: client.batches.create(
            input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h", **kwargs
        ),
        what="batch create",
    )
    return batch.id


async def _submit_chunk(client, config: LLMConfig, chunk: dict, jsonl: bytes, description: str | None, save) -> str:
    """Create the batch of `chunk`, uploading its file unless the chunk holds one already (a batch refused
    for the enqueued-token limit goes again from the same file). The file id is saved (`save()`) before the
    batch is created: a kill between creating it and saving its id leaves a file to find it by."""
    if chunk.get("file_id"):
        try:
            return await _create_batch(client, config, chunk["file_id"], description)
        except RequestRefused as e:  # e.g. the file expired or was deleted: a fresh copy settles it
            if not 400 <= e.status_code < 500:
                raise
            log.info("the endpoint refused a batch from file %s (%s): uploading the file again", chunk["file_id"], e)
    upload = await _upload(client, config, jsonl)
    chunk.update(file_id=upload.id, uploaded_at=getattr(upload, "created_at", None))
    save()
    return await _create_batch(client, config, upload.id, description)


async def _batches_from_files(client, config: LLMConfig, chunks: Sequence[dict]) -> dict[str, str]:
    """file id -> the newest batch the endpoint holds made from it (none it refused before), for chunks whose
    file was uploaded but whose batch id was never saved. The endpoint lists batches newest first; the search
    stops at batches older than the oldest of the files."""
    refused = {ch["file_id"]: set(ch.get("refused", ())) for ch in chunks}
    oldest = min((ch.get("uploaded_at") or 0 for ch in chunks), default=0)
    found: dict[str, str] = {}
    after = None
    for _ in range(_LIST_PAGES):
        kwargs = {"limit": 100} | ({"after": after} if after else {})
        page = await with_retries(config, lambda kw=kwargs: client.batches.list(**kw), what="batch list")
        for b in page.data:
            if b.input_file_id in refused and b.id not in refused[b.input_file_id]:
                found.setdefault(b.input_file_id, b.id)
        if len(found) == len(refused) or not page.data or not page.has_more or page.data[-1].created_at < oldest:
            break
        after = page.data[-1].id
    return found


async def _poll(client, config: LLMConfig, batch_id: str):
    return await with_retries(config, lambda: client.batches.retrieve(batch_id), what="batch poll")


def _batch_errors(batch) -> list:
    errors = getattr(batch, "errors", None)
    return list(getattr(errors, "data", None) or [])


def _refused_for_tokens(batch) -> bool:
    """OpenAI refuses a batch whole when the model's enqueued-token limit is reached: status failed,
    error code token_limit_exceeded. Not a failure of its requests: they go again later."""
    codes = {getattr(e, "code", None) for e in _batch_errors(batch)}
    return batch.status == "failed" and "token_limit_exceeded" in codes


async def _download(client, config: LLMConfig, file_id: str | None) -> str:
    if not file_id:
        return ""
    content = await with_retries(config, lambda: client.files.content(file_id), what="batch download")
    return content.text


async def _collect(client, config: LLMConfig, batch, ids: Sequence[str], results: dict, errors: dict) -> None:
    """Add a finished batch's replies and errors; its ids without either (expired, failed) get one."""
    got, bad = parse_batch_output(await _download(client, config, batch.output_file_id))
    results.update(got)
    errors.update(bad)
    errors.update(parse_batch_output(await _download(client, config, batch.error_file_id))[1])
    why = "".join(f": {_error_text(e)}" for e in _batch_errors(batch))
    for cid in ids:
        if cid not in results and cid not in errors:
            errors[cid] = f"no result in batch {batch.id} (status {batch.status}{why})"


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
    limits: BatchLimits | None = None,
) -> BatchOutcome:
    """Run `requests` (custom_id -> messages) through the Batch API and return every reply or error.

    The requests go as one batch per chunk under `limits` (default: the config's `batch_max_*`, OpenAI's
    unless set). With `state_path`, each chunk's input file id is recorded before its batch is created and
    the batch id right after; a rerun (e.g. after a kill or a BatchPending from `max_wait_s`) re-polls
    those batches, looks among the endpoint's batches for one made from a recorded file whose batch id was
    never saved, and submits only the ids no batch holds yet. A chunk refused for the enqueued-token limit
    waits for an earlier batch to finish and goes again from its uploaded file; ids of a failed or expired
    batch come back as errors, for the caller's next run to resubmit. The caller
    deletes the state with `forget_batch` once the results are safely merged. The budget check happens
    before submission, on the estimated cost at the batch discount of what is not yet submitted."""
    if not requests:
        return BatchOutcome(None, "empty")
    limits = limits or BatchLimits.from_config(config)
    state_path = Path(state_path) if state_path is not None else None
    ids = list(requests)
    wanted = set(ids)
    planned, chunks = _load_batch_state(state_path, config, wanted) or (ids, [])
    lines = {cid: _jsonl_line(config, cid, m, max_tokens) for cid, m in requests.items()}

    def save() -> None:
        _save_batch_state(state_path, config, planned, chunks)

    client = make_async_client(config)
    try:
        # Chunks uploaded by an earlier run whose batch id was never saved: find their batches first.
        unsaved = [ch for ch in chunks if not ch.get("batch_id") and ch.get("file_id") and wanted & set(ch["custom_ids"])]
        found = await _batches_from_files(client, config, unsaved) if unsaved else {}
        waiting: deque[dict] = deque()
        for ch in unsaved:
            if ch["file_id"] in found:
                ch["batch_id"] = found[ch["file_id"]]
                log.info("found batch %s, created from %s before its id was saved", ch["batch_id"], ch["file_id"])
            elif wanted.issuperset(ch["custom_ids"]):
                waiting.append(ch)  # its batch was never created: create it from the same file
        chunks = [ch for ch in chunks if ch.get("batch_id") or ch in waiting]
        if unsaved:
            save()
        submitted = {cid for ch in chunks for cid in ch["custom_ids"]}
        todo = [cid for cid in ids if cid not in submitted]
        unpaid = todo + [cid for ch in waiting for cid in ch["custom_ids"]]
        tokens = {cid: estimate_message_tokens(requests[cid]) for cid in unpaid}
        waiting.extend({"batch_id": None, "custom_ids": part}
                       for part in split_batch({cid: (len(lines[cid]), tokens[cid]) for cid in todo}, limits))
        if unpaid:
            est = config.estimate_cost(len(unpaid), sum(tokens.values()) / len(unpaid), max_tokens, batch=True)
            if budget_usd is not None and est > budget_usd:
                raise BudgetExceeded(budget_usd, 0.0, est)
            log.info("%d requests to submit as %d batch(es), est. $%.4f", len(unpaid), len(waiting), est)
        # re-poll what an earlier run submitted, where it holds ids still wanted; batch id -> its ids
        flight = {ch["batch_id"]: ch["custom_ids"] for ch in chunks
                  if ch.get("batch_id") and not wanted.isdisjoint(ch["custom_ids"])}
        if flight:
            log.info("resuming %d batch(es) recorded in %s", len(flight), state_path)
        status: dict[str, str] = {}
        results: dict[str, ChatResult] = {}
        errors: dict[str, str] = {}
        # After a refusal, chunks go one at a time: the next when the last is seen accepted or a batch finishes.
        limited, blocked, probe, idle, last_refused = False, False, None, 0, None
        t0 = time.monotonic()
        while waiting or flight:
            while waiting and not blocked:
                ch = waiting.popleft()
                if ch not in chunks:
                    chunks.append(ch)
                jsonl = b"".join(lines[c] for c in ch["custom_ids"])
                batch_id = await _submit_chunk(client, config, ch, jsonl, description, save)
                ch["batch_id"] = batch_id
                save()
                flight[batch_id] = ch["custom_ids"]
                log.info("submitted batch %s (%d requests)", batch_id, len(ch["custom_ids"]))
                if limited:
                    blocked, probe = True, batch_id
            finished, refused = False, []
            for batch_id in list(flight):
                batch = await _poll(client, config, batch_id)
                status[batch_id] = batch.status
                if _refused_for_tokens(batch):
                    ch = next(c for c in chunks if c.get("batch_id") == batch_id)
                    part = [cid for cid in flight.pop(batch_id) if cid in wanted]  # a resumed one may hold more
                    if part == ch["custom_ids"]:  # the same file goes again (kept in the state): no new upload
                        ch.update(batch_id=None, refused=[*ch.get("refused", ()), batch_id])
                        refused.append(ch)
                    else:  # it held ids merged before: the ones still wanted go as a new file
                        chunks.remove(ch)
                        refused += [{"batch_id": None, "custom_ids": part}] if part else []
                    save()
                    last_refused = batch_id
                    log.warning(
                        "batch %s refused (%s); its %d requests go again once an earlier batch finishes",
                        batch_id, _error_text(_batch_errors(batch)[0]), len(part),
                    )
                elif batch.status in _BATCH_TERMINAL:
                    finished = True
                    await _collect(client, config, batch, flight.pop(batch_id), results, errors)
                else:
                    log.info("batch %s: %s %s", batch_id, batch.status, getattr(batch, "request_counts", "") or "")
                    if batch_id == probe and batch.status != "validating":
                        blocked, probe = False, None  # accepted: there may be room for the next
            if refused:
                waiting.extendleft(reversed(refused))
                limited, blocked = True, True
            if finished:
                blocked, idle = False, 0
            elif refused and not flight:  # nothing of ours holds the queue: retry a few times, then say so
                idle += 1
                if idle > _IDLE_REFUSALS:
                    raise BatchError(
                        f"the Batch API refused {sum(len(ch['custom_ids']) for ch in waiting)} requests for "
                        f"{config.model}'s enqueued-token limit with none of this run's batches in flight: wait "
                        "for the organization's other batches to finish, or lower BatchLimits.max_enqueued_tokens "
                        "(batch_max_enqueued_tokens) below the tier's batch queue limit, then rerun"
                        + (f" (submitted batches are kept in {state_path})" if state_path else "")
                    )
                blocked = False
            if not (waiting or flight):
                break
            if max_wait_s is not None and time.monotonic() - t0 + poll_s > max_wait_s:
                pending = next(iter(flight), last_refused)
                why = status[pending] if flight else "refused for the enqueued-token limit"
                raise BatchPending(pending, why, state_path)
            await asyncio.sleep(poll_s)
    finally:
        await client.close()
    batch_ids = [ch["batch_id"] for ch in chunks if ch["batch_id"] in status]
    outcome = BatchOutcome(batch_ids[0], "/".join(sorted({status[b] for b in batch_ids})), batch_ids=batch_ids)
    for cid in ids:  # only what we asked for: a resumed batch may hold ids merged earlier
        if cid in results:
            outcome.results[cid] = results[cid]
            if usage is not None:
                usage.add(results[cid], config, batch=True)
        else:
            outcome.errors[cid] = errors.get(cid, f"no result (status {outcome.status})")
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
    limits: BatchLimits | None = None,
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
            merged = await _batch_rounds(run, states, budget_usd, poll_s, max_wait_s, limits)
        except BatchPending as e:
            log.info("%s", e)
            run.report.status = "pending"
            run.report.batch_ids.append(e.batch_id)
            merged = False
        if merged:  # every result is in the files: the recorded batches are spent
            for state in states:
                forget_batch(state)
    return run.report.finish(run.usage, run.t0)


async def _batch_rounds(run: _Run, states: list[Path], budget_usd, poll_s, max_wait_s, limits) -> bool:
    """Round 1: stories; round 2 (with_summary): summaries of the valid ones. Valid stories are
    written only after the last round, so a kill in between resumes from the recorded batches.
    Returns False when the budget stopped a round (its state is kept for a rerun)."""
    if not run.pending:
        return True
    by_id = {s.id: s for s in run.pending}
    common = {"poll_s": poll_s, "max_wait_s": max_wait_s, "usage": run.usage, "limits": limits}
    try:
        stories_out = await run_batch(
            run.config, {s.id: story_messages(s) for s in run.pending}, state_path=states[0],
            budget_usd=budget_usd, description="tinystories-lab stories", **common,
        )
    except BudgetExceeded as e:
        log.warning("%s", e)
        run.report.not_attempted = len(run.pending)
        return False
    run.report.batch_ids.extend(stories_out.batch_ids)
    for sid, err in stories_out.errors.items():
        run.fail_in_batch(sid, err)
    with JsonlAppender(run.out_path) as out, JsonlAppender(run.rejects_path) as rejects:
        valid = [
            story
            for sid, reply in stories_out.results.items()
            if (story := run.validate(by_id[sid], reply.text, rejects, reply.finish_reason)) is not None
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
            run.report.batch_ids.extend(summaries.batch_ids)
            for sid, err in summaries.errors.items():
                run.fail_in_batch(sid, err, prefix="summary:")
            kept = []
            for s in (s for s in valid if s.id in summaries.results):
                summary = summaries.results[s.id]
                if (problem := summary_problem(summary)) is not None:  # cut off or all reasoning
                    s.summary = summary.text
                    run.reject(s, "summary_" + problem[0], problem[1], rejects)
                else:
                    s.summary = summary.answer
                    kept.append(s)
            valid = kept
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
    limits: BatchLimits | None = None,
) -> GenerationReport:
    """`generate_stories` through the Batch API (half price on OpenAI, results within 24 h).

    Sends the ids not yet done as batches under `limits` (default: OpenAI's per-batch limits), polls
    every `poll_s` seconds, downloads the output and error files, validates and appends to the same
    files as the online path. The batch ids are saved in `<out>.batch-stories.json`: a run killed (or
    stopped by `max_wait_s`, which returns status "pending") resumes polling those batches when called
    again with the same specs. `budget_usd` is checked against the estimate before submitting."""
    return run_async(
        agenerate_stories_batch(
            specs, config, out_path, budget_usd=budget_usd, with_summary=with_summary, poll_s=poll_s,
            max_wait_s=max_wait_s, validator=validator, rejects_path=rejects_path, retry_rejected=retry_rejected,
            limits=limits,
        )
    )
