"""One client layer for every LLM call in the kit: corpus generation and GPT-Eval judging.

Any OpenAI-compatible endpoint works: OpenAI, Azure OpenAI (`azure_api_version`), or a local server
(vLLM, Ollama, llama.cpp) given by `base_url`. What lives here:

* `LLMConfig`: endpoint, model, prices and limits. It never holds the API key, only the *name* of the
  environment variable to read it from, so configs can be saved, printed and committed safely.
* `LLMClient`: async chat completions with bounded concurrency, one retry policy (exponential backoff
  with jitter, `Retry-After` honoured), malformed-reply detection, usage/cost accounting and a budget cap.
* Batch API helpers (`run_batch`): build the JSONL, upload, create, poll, download, parse by custom_id;
  the batch id is saved to a state file so a killed run resumes polling instead of paying twice.
* Append-only JSONL helpers shared by generation and the judge cache (flushed per line, fsync on a background thread, torn tail repair).
* `run_async`: run a coroutine from a script or from inside Jupyter's running event loop.

The `openai` package is an optional extra, imported only when a client is made.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import math
import os
import random
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

log = logging.getLogger(__name__)

T = TypeVar("T")

INSTALL_HINT = "pip install 'tinystories-lab[llm]'"
# Local servers (vLLM, Ollama, llama.cpp) accept any key; the openai client insists on one.
LOCAL_PLACEHOLDER_KEY = "sk-no-key"
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0"}
# HTTP statuses worth retrying besides 5xx: request timeout, lock conflict, rate limit.
_RETRY_STATUSES = {408, 409, 429}
_MAX_RETRY_AFTER_S = 600.0
_BATCH_TERMINAL = {"completed", "failed", "expired", "cancelled"}
# Rough chars-per-token ratio for English; only used for estimates and budget reservations.
_CHARS_PER_TOKEN = 4
CONNECTIONS_PER_CLIENT = 16  # requests in flight per openai client (see LLMClient._open)
_MESSAGE_OVERHEAD_TOKENS = 4


def import_openai():
    """The `openai` module, or an ImportError that says how to install it."""
    try:
        import openai
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(f"LLM generation and judging need the `openai` client: {INSTALL_HINT}") from e
    return openai


# --------------------------------------------------------------------------------------------- errors


class LLMError(RuntimeError):
    """Base class for the errors this module raises."""


class MissingAPIKey(LLMError):
    """The environment variable named by `LLMConfig.api_key_env` is not set for a remote endpoint."""


class MalformedReply(LLMError):
    """The server answered 200 but not with a usable chat completion (non-JSON, no choices, empty text)."""


class BudgetExceeded(LLMError):
    """Issuing another request would push spend (actual + in flight) past the budget cap."""

    def __init__(self, budget_usd: float, spent_usd: float, needed_usd: float):
        self.budget_usd, self.spent_usd, self.needed_usd = budget_usd, spent_usd, needed_usd
        super().__init__(
            f"budget cap ${budget_usd:.4f} reached: spent ${spent_usd:.4f}, "
            f"next request(s) would need about ${needed_usd:.4f} more; no new requests were issued"
        )


class BatchError(LLMError):
    """A batch job could not be used (e.g. a state file records a batch for other requests)."""


class BatchPending(LLMError):
    """`max_wait_s` ran out while the batch was still running; rerunning resumes polling the same batch."""

    def __init__(self, batch_id: str, status: str, state_path: Path | None):
        self.batch_id, self.status, self.state_path = batch_id, status, state_path
        where = f" (state in {state_path})" if state_path else ""
        super().__init__(f"batch {batch_id} is still {status}; rerun with the same arguments to resume{where}")


def describe_error(e: BaseException) -> str:
    """A short, key-free label for an error, used to group failures in reports."""
    openai = import_openai()
    if isinstance(e, openai.APITimeoutError):
        return "timeout"
    if isinstance(e, openai.APIConnectionError):
        return "connection_error"
    if isinstance(e, openai.APIStatusError):
        return f"http_{e.status_code}"
    if isinstance(e, MalformedReply):
        return "malformed_reply"
    if isinstance(e, BudgetExceeded):
        return "budget_exceeded"
    return type(e).__name__


def error_detail(e: BaseException | str, config: LLMConfig, limit: int = 300) -> str:
    """An error's text for reports and failed grades, cut short, with the API key (should a server
    ever echo it) replaced."""
    text = e if isinstance(e, str) else f"{type(e).__name__}: {e}"
    key = os.environ.get(config.api_key_env, "").strip()
    if len(key) >= 8:
        text = text.replace(key, "[redacted]")
    return text[:limit]


# --------------------------------------------------------------------------------------------- config


@dataclass
class LLMConfig:
    """Where and how to call an LLM. Prices are USD per million tokens; `batch_discount` is the
    fraction of the price the Batch API charges (OpenAI: 0.5). `max_tokens`/`temperature` of None
    leave the server's defaults. `est_output_tokens` is used for estimates when `max_tokens` is None.

    The API key is read from the environment variable `api_key_env` when a client is made and is
    never stored here. A localhost `base_url` may run without it (a placeholder key is sent)."""

    base_url: str | None
    model: str
    api_key_env: str = "OPENAI_API_KEY"
    max_concurrency: int = 16
    timeout_s: float = 60.0
    max_retries: int = 6
    price_per_1m_input: float = 0.0
    price_per_1m_output: float = 0.0
    batch_discount: float = 0.5
    temperature: float | None = None
    max_tokens: int | None = None
    azure_api_version: str | None = None
    est_output_tokens: int = 400
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0
    malformed_retries: int = 2
    # HTTP layer under the openai client: "aiohttp" (openai's DefaultAioHttpClient, the `openai[aiohttp]`
    # extra), "httpx" (its default), or "auto": aiohttp when installed. At concurrency 64 aiohttp needs
    # about a third less CPU per request (BENCHMARKS.md), which is what one event loop can sustain.
    http_client: str = "auto"

    def __post_init__(self):
        if not self.model:
            raise ValueError("LLMConfig.model is required")
        if self.http_client not in ("auto", "aiohttp", "httpx"):
            raise ValueError(f"LLMConfig.http_client must be 'auto', 'aiohttp' or 'httpx', not {self.http_client!r}")
        if self.max_concurrency < 1:
            raise ValueError("LLMConfig.max_concurrency must be >= 1")
        if self.max_retries < 0 or self.malformed_retries < 0:
            raise ValueError("LLMConfig retry counts must be >= 0")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LLMConfig:
        """Build from a plain dict (e.g. a YAML section). Unknown keys are an error, and so is a
        literal key: keys belong in the environment, named by `api_key_env`."""
        d = dict(d)
        if "api_key" in d:
            raise ValueError(
                "do not put API keys in configs: export the key in an environment variable and set "
                "`api_key_env` to its name (default OPENAI_API_KEY)"
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown LLMConfig keys {unknown}; known keys: {sorted(known)}")
        d.setdefault("base_url", None)
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def is_local(self) -> bool:
        """True when base_url points at this machine (no key needed)."""
        if not self.base_url:
            return False
        host = (urlparse(self.base_url).hostname or "").lower()
        return host in _LOCAL_HOSTS or host.endswith(".localhost")

    def cost_usd(self, prompt_tokens: float, completion_tokens: float, *, batch: bool = False) -> float:
        cost = (prompt_tokens * self.price_per_1m_input + completion_tokens * self.price_per_1m_output) / 1e6
        return cost * (self.batch_discount if batch else 1.0)

    def estimate_cost(
        self,
        n_requests: int,
        est_input_tokens: float,
        est_output_tokens: float | None = None,
        *,
        batch: bool = False,
    ) -> float:
        """Expected USD for `n_requests` calls of about this many tokens each (output defaults to
        `max_tokens`, else `est_output_tokens`)."""
        out = est_output_tokens if est_output_tokens is not None else self.default_output_tokens
        return n_requests * self.cost_usd(est_input_tokens, out, batch=batch)

    @property
    def default_output_tokens(self) -> int:
        return self.max_tokens if self.max_tokens is not None else self.est_output_tokens


def _resolve_api_key(config: LLMConfig) -> str:
    key = os.environ.get(config.api_key_env, "").strip()
    if key:
        return key
    if config.is_local:
        return LOCAL_PLACEHOLDER_KEY
    raise MissingAPIKey(
        f"environment variable {config.api_key_env} is not set: export your API key there "
        f"(endpoint {config.base_url or 'api.openai.com'}). Keys are read only from the environment; "
        "a localhost base_url needs none."
    )


def _use_aiohttp(choice: str) -> bool:
    if choice == "httpx":
        return False
    try:
        import aiohttp  # noqa: F401  (openai vendors the httpx-to-aiohttp transport itself)

        available = hasattr(import_openai(), "DefaultAioHttpClient")  # openai releases since mid-2025
    except ImportError:
        available = False
    if choice == "aiohttp" and not available:
        raise ImportError("http_client='aiohttp' needs aiohttp and a recent openai: pip install -U 'openai[aiohttp]'")
    return available


def make_async_client(config: LLMConfig):
    """An `openai.AsyncOpenAI` (or `AsyncAzureOpenAI`) with the client's own retries off, so the retry
    policy in this module is the only one."""
    openai = import_openai()
    common = {"api_key": _resolve_api_key(config), "timeout": config.timeout_s, "max_retries": 0}
    if _use_aiohttp(config.http_client):
        common["http_client"] = openai.DefaultAioHttpClient(timeout=config.timeout_s)
    if config.azure_api_version:
        if not config.base_url:
            raise ValueError("Azure OpenAI needs base_url set to the resource endpoint")
        return openai.AsyncAzureOpenAI(
            azure_endpoint=config.base_url, api_version=config.azure_api_version, **common
        )
    return openai.AsyncOpenAI(base_url=config.base_url, **common)


# ------------------------------------------------------------------------------------ usage, replies


@dataclass
class Usage:
    """Running totals. `requests` counts successful replies (online and batch), `failures` requests
    that gave up after retries, `retries` extra attempts."""

    requests: int = 0
    batch_requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    retries: int = 0
    failures: int = 0

    def add(self, result: ChatResult, config: LLMConfig, *, batch: bool = False) -> None:
        self.requests += 1
        self.batch_requests += int(batch)
        self.prompt_tokens += result.prompt_tokens
        self.completion_tokens += result.completion_tokens
        self.cost_usd += config.cost_usd(result.prompt_tokens, result.completion_tokens, batch=batch)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ChatResult:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str | None = None
    # True when the server sent no usage block and the counts are chars/4 estimates.
    usage_estimated: bool = False


def estimate_tokens(text: str) -> int:
    return len(text) // _CHARS_PER_TOKEN + 1


def estimate_message_tokens(messages: Sequence[Mapping[str, str]]) -> int:
    return sum(estimate_tokens(m.get("content") or "") + _MESSAGE_OVERHEAD_TOKENS for m in messages)


def _get(obj: Any, name: str) -> Any:
    """Field access that works on openai model objects and on plain dicts (batch output)."""
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def _preview(x: Any, n: int = 80) -> str:
    s = x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x)
    return s[:n] + ("..." if len(s) > n else "")


def _json_or_raw(raw: bytes) -> Any:
    """A reply body as JSON, or the raw bytes when it is not JSON (reported as a malformed reply)."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def chat_result_from_response(resp: Any, messages: Sequence[Mapping[str, str]] = ()) -> ChatResult:
    """Extract text and usage from a chat completion, raising MalformedReply when there is none.
    Accepts an openai `ChatCompletion` or the JSON dict of one (batch output lines)."""
    if resp is None or isinstance(resp, (str, bytes)):
        # The openai client hands back the raw text when the body is not JSON.
        raise MalformedReply(f"reply is not a JSON chat completion: {_preview(resp)!r}")
    choices = _get(resp, "choices")
    if not choices:
        raise MalformedReply("reply has no choices")
    message = _get(choices[0], "message")
    content = _get(message, "content") if message is not None else None
    if not isinstance(content, str) or not content.strip():
        raise MalformedReply("reply has empty content")
    usage = _get(resp, "usage")
    pt = _get(usage, "prompt_tokens") if usage is not None else None
    ct = _get(usage, "completion_tokens") if usage is not None else None
    estimated = not isinstance(pt, int) or not isinstance(ct, int)
    if estimated:  # some local servers omit usage; estimate so budgets still work
        pt, ct = estimate_message_tokens(messages), estimate_tokens(content)
    return ChatResult(content, pt, ct, _get(choices[0], "finish_reason"), estimated)


def chat_body(
    config: LLMConfig,
    messages: Sequence[Mapping[str, str]],
    *,
    max_tokens: int | None = None,
    temperature: float | None = None,
) -> dict:
    """The POST /v1/chat/completions body, shared by online calls and batch files."""
    body: dict[str, Any] = {"model": config.model, "messages": [dict(m) for m in messages]}
    temperature = temperature if temperature is not None else config.temperature
    if temperature is not None:
        body["temperature"] = temperature
    max_tokens = max_tokens if max_tokens is not None else config.max_tokens
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return body


# ------------------------------------------------------------------------------------ retry policy


def retry_after_seconds(headers: Mapping[str, str] | None) -> float | None:
    """Seconds asked for by `retry-after-ms` / `Retry-After` (seconds or an HTTP date), if any."""
    if not headers:
        return None
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _backoff_s(config: LLMConfig, attempt: int) -> float:
    # Exponential with jitter so that many workers hitting the same limit do not retry in lockstep.
    return min(config.backoff_max_s, config.backoff_base_s * 2**attempt) * random.uniform(0.5, 1.0)


def _retry_delay(config: LLMConfig, e: BaseException, attempt: int) -> float | None:
    """Seconds to wait before retrying after `e`, or None if `e` is not worth retrying."""
    openai = import_openai()
    if isinstance(e, MalformedReply) or isinstance(e, openai.APIConnectionError):  # incl. timeouts
        return _backoff_s(config, attempt)
    if isinstance(e, openai.APIStatusError):
        if e.status_code < 500 and e.status_code not in _RETRY_STATUSES:
            return None  # 400/401/404...: retrying cannot help
        asked = retry_after_seconds(e.response.headers)
        if asked is not None:
            # Never earlier than the server asked; a little jitter on top spreads the workers.
            return min(asked, _MAX_RETRY_AFTER_S) * random.uniform(1.0, 1.1)
        return _backoff_s(config, attempt)
    return None


async def with_retries(
    config: LLMConfig, call: Callable[[], Awaitable[T]], *, what: str, usage: Usage | None = None
) -> T:
    """Await `call()` until it succeeds, retrying transient errors up to `config.max_retries` times
    (malformed replies at most `config.malformed_retries` times)."""
    openai = import_openai()
    attempt = malformed = 0
    while True:
        try:
            try:
                return await call()
            except (json.JSONDecodeError, openai.APIResponseValidationError) as e:
                raise MalformedReply(f"reply body could not be decoded: {type(e).__name__}") from e
        except Exception as e:
            malformed += isinstance(e, MalformedReply)
            delay = _retry_delay(config, e, attempt)
            if delay is None or attempt >= config.max_retries or malformed > config.malformed_retries:
                raise
            attempt += 1
            if usage is not None:
                usage.retries += 1
            log.warning(
                "%s: %s, retry %d/%d in %.2fs", what, describe_error(e), attempt, config.max_retries, delay
            )
            await asyncio.sleep(delay)


# ------------------------------------------------------------------------------------ online client


class LLMClient:
    """Async chat completions with bounded concurrency, retries, usage accounting and a budget cap.

    Use inside a coroutine:  `async with LLMClient(cfg, budget_usd=5) as llm: r = await llm.chat(msgs)`.
    The budget check reserves an estimate for each request before it is issued (prompt chars/4 plus
    `max_tokens` or `est_output_tokens`) and refuses with BudgetExceeded once actual spend plus the
    reservations in flight would pass the cap; after the first refusal no new request is issued."""

    def __init__(self, config: LLMConfig, *, budget_usd: float | None = None, usage: Usage | None = None):
        self.config = config
        self.budget_usd = budget_usd
        self.usage = usage if usage is not None else Usage()
        self._clients: list = []  # empty until opened
        self._sem: asyncio.Semaphore | None = None
        self._reserved_usd = 0.0
        self._budget_hit = False

    def __repr__(self) -> str:
        c = self.config
        return f"LLMClient(model={c.model!r}, base_url={c.base_url!r}, max_concurrency={c.max_concurrency})"

    async def __aenter__(self) -> LLMClient:
        self._open()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    def _open(self) -> None:
        if not self._clients:
            # One HTTP/1.1 connection per request in flight. httpx's connection pool scans all its
            # connections on every request, so 64 in one pool cost more CPU than the requests themselves;
            # several clients of up to CONNECTIONS_PER_CLIENT each keep that scan short. aiohttp's pool
            # does not scan: one client is best there.
            n = 1 if _use_aiohttp(self.config.http_client) else math.ceil(self.config.max_concurrency / CONNECTIONS_PER_CLIENT)
            self._clients = [make_async_client(self.config) for _ in range(n)]
            self._in_flight = {id(c): 0 for c in self._clients}
            self._sem = asyncio.Semaphore(self.config.max_concurrency)

    async def aclose(self) -> None:
        for c in self._clients:
            await c.close()
        self._clients = []

    @property
    def budget_hit(self) -> bool:
        return self._budget_hit

    def _reserve(self, est_usd: float) -> None:
        if self.budget_usd is not None and (
            self._budget_hit or self.usage.cost_usd + self._reserved_usd + est_usd > self.budget_usd
        ):
            self._budget_hit = True
            raise BudgetExceeded(self.budget_usd, self.usage.cost_usd, self._reserved_usd + est_usd)
        self._reserved_usd += est_usd

    async def chat(
        self,
        messages: Sequence[Mapping[str, str]],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> ChatResult:
        """One chat completion (retried as configured). Raises BudgetExceeded, MalformedReply or the
        openai error that outlived the retries."""
        self._open()
        cfg = self.config
        body = chat_body(cfg, messages, max_tokens=max_tokens, temperature=temperature)
        est = cfg.cost_usd(estimate_message_tokens(messages), body.get("max_tokens", cfg.est_output_tokens))

        async def call() -> ChatResult:
            client = min(self._clients, key=lambda c: self._in_flight[id(c)])
            self._in_flight[id(client)] += 1
            try:
                # The client's generic POST to the same route as chat.completions.create, with the reply
                # read as bytes: the typed path spends ~2.5 ms of CPU per request converting the request
                # and the reply, which caps one event loop below 300 requests/s. Errors, auth, Azure
                # routing are the client's own, unchanged.
                raw = await client.post("/chat/completions", body=body, cast_to=bytes)
            finally:
                self._in_flight[id(client)] -= 1
            return chat_result_from_response(_json_or_raw(raw), messages)

        async with self._sem:
            self._reserve(est)
            try:
                result = await with_retries(cfg, call, what=cfg.model, usage=self.usage)
            except Exception:
                self.usage.failures += 1
                raise
            finally:
                self._reserved_usd -= est
            self.usage.add(result, cfg)
            return result


async def map_concurrently(items: Sequence[T], worker: Callable[[T], Awaitable[None]], n_workers: int) -> None:
    """Run `worker(item)` for every item with at most `n_workers` alive at once. A fixed pool of
    coroutines pulling from one iterator keeps memory flat even for millions of items. When one worker
    raises (or the caller is cancelled), the others are cancelled and awaited before the error goes on,
    so none outlives the files and client its caller is about to close."""
    it = iter(items)

    async def loop():
        for item in it:  # the shared iterator hands each item to exactly one coroutine
            await worker(item)

    tasks = [asyncio.ensure_future(loop()) for _ in range(max(1, min(n_workers, len(items))))]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def run_async(coro: Awaitable[T]) -> T:
    """Run a coroutine to completion from sync code. In a plain script this is `asyncio.run`; inside
    Jupyter (a loop is already running in this thread) it runs on a fresh loop in a worker thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _run_on_new_loop(coro)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tinystories-llm") as pool:
        return pool.submit(_run_on_new_loop, coro).result()


def _run_on_new_loop(coro: Awaitable[T]) -> T:
    """asyncio.run on uvloop's event loop when it is installed (the `llm` extra, not on Windows): the
    loop's own CPU per request is a large part of what caps one process near 300 requests/s."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    if not hasattr(asyncio, "Runner"):  # Python 3.10
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


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
    after a write, and once more on close: during a generation run here an fsync took about 5 ms on average
    and up to 140 ms, and on the event loop each one stalled every request in flight."""

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
