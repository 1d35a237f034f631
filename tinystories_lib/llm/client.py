"""One client layer for every LLM call in the kit: corpus generation and GPT-Eval judging.

Any OpenAI-compatible endpoint works: OpenAI, Azure OpenAI (`azure_api_version`), or a local server
(vLLM, Ollama, llama.cpp) given by `base_url`. What lives here:

* `LLMConfig`: endpoint, model, prices and limits. It never holds the API key, only the *name* of the
  environment variable to read it from, so configs can be saved, printed and committed safely.
* `LLMClient`: async chat completions with bounded concurrency, one retry policy (`with_retries`:
  exponential backoff with jitter, `Retry-After` honoured; requests the server refuses for good fail at
  once as `RequestRefused`), malformed-reply detection, usage/cost accounting and a budget cap;
  `chat_body` / `chat_result_from_response` are shared with the Batch API.
* `strip_reasoning`: the answer of a reply without the `<think>` block reasoning models put before it,
  used by every reader of replies (story checks, summaries, the judge).
* `map_concurrently` and `run_async`: a fixed pool of workers over many items, and running a coroutine
  from a script or from inside Jupyter's running event loop.

The errors, JSONL files and Batch API are `llm.errors`, `llm.jsonl` and `llm.batch`. The `openai` package
is an optional extra, imported only when a client is made.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import math
import os
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from typing import Any, TypeVar
from urllib.parse import urlparse

from tinystories_lib.llm.errors import (
    BudgetExceeded,
    MalformedReply,
    MissingAPIKey,
    RequestRefused,
    describe_error,
    error_detail,
    import_openai,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
# Local servers (vLLM, Ollama, llama.cpp) accept any key; the openai client insists on one.
LOCAL_PLACEHOLDER_KEY = "sk-no-key"
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0"}
# HTTP statuses worth retrying besides 5xx: request timeout, lock conflict, rate limit.
_RETRY_STATUSES = {408, 409, 429}
_MAX_RETRY_AFTER_S = 600.0
# Rough chars-per-token ratio for English; only used for estimates and budget reservations.
_CHARS_PER_TOKEN = 4
CONNECTIONS_PER_CLIENT = 16  # requests in flight per openai client (see LLMClient._open)
_MESSAGE_OVERHEAD_TOKENS = 4
TOKEN_PARAMS = ("auto", "max_tokens", "max_completion_tokens")
# OpenAI's per-batch limits: requests and bytes per input file (llm.batch.BatchLimits).
BATCH_MAX_REQUESTS = 50_000
BATCH_MAX_BYTES = 200_000_000
# Estimated prompt tokens per batch file: under OpenAI's batch queue limit for gpt-4o from tier 2 and
# gpt-4o-mini from tier 1 (a file must fit the organization's enqueued-token limit on its own).
BATCH_MAX_ENQUEUED_TOKENS = 1_000_000
# OpenAI's reasoning models refuse `max_tokens` (and any temperature but 1).
_REASONING_MODEL = re.compile(r"(?:o[134]|gpt-5)(?![0-9a-z])", re.IGNORECASE)


# --------------------------------------------------------------------------------------------- config


@dataclass
class LLMConfig:
    """Where and how to call an LLM. Prices are USD per million tokens; `batch_discount` is the
    fraction of the price the Batch API charges (OpenAI: 0.5). `max_tokens`/`temperature` of None
    leave the server's defaults. `est_output_tokens` is used for estimates when `max_tokens` is None.
    `token_param` names the request field that carries `max_tokens`: "auto" sends `max_completion_tokens`
    to OpenAI's reasoning models (o1, o3, o4, gpt-5...), which refuse `max_tokens`, and `max_tokens`
    to the rest (local servers know it best); a server that refuses `max_tokens` gets the other, once.
    `batch_max_*` split Batch API rounds into input files (`llm.batch.BatchLimits`; default OpenAI's).

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
    token_param: str = "auto"
    batch_max_requests: int = BATCH_MAX_REQUESTS
    batch_max_bytes: int = BATCH_MAX_BYTES
    batch_max_enqueued_tokens: int = BATCH_MAX_ENQUEUED_TOKENS

    def __post_init__(self):
        if not self.model:
            raise ValueError("LLMConfig.model is required")
        if self.http_client not in ("auto", "aiohttp", "httpx"):
            raise ValueError(f"LLMConfig.http_client must be 'auto', 'aiohttp' or 'httpx', not {self.http_client!r}")
        if self.token_param not in TOKEN_PARAMS:
            raise ValueError(f"LLMConfig.token_param must be one of {TOKEN_PARAMS}, not {self.token_param!r}")
        if self.max_concurrency < 1:
            raise ValueError("LLMConfig.max_concurrency must be >= 1")
        if self.max_retries < 0 or self.malformed_retries < 0:
            raise ValueError("LLMConfig retry counts must be >= 0")
        if min(self.batch_max_requests, self.batch_max_bytes, self.batch_max_enqueued_tokens) < 1:
            raise ValueError("LLMConfig.batch_max_requests, batch_max_bytes and batch_max_enqueued_tokens must be >= 1")

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

    @property
    def is_reasoning_model(self) -> bool:
        return is_reasoning_model(self.model)

    @property
    def max_tokens_field(self) -> str:
        """The request field for the output-token cap, `token_param` resolved."""
        if self.token_param != "auto":
            return self.token_param
        return "max_completion_tokens" if self.is_reasoning_model else "max_tokens"


def is_reasoning_model(model: str) -> bool:
    """OpenAI's reasoning models by name ("o3-mini", "openai/gpt-5.1"); any other name is not one."""
    return _REASONING_MODEL.match(model.rsplit("/", 1)[-1]) is not None


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
    finish_reason: str | None = None  # "length": cut off at max_tokens
    # True when the server sent no usage block and the counts are chars/4 estimates.
    usage_estimated: bool = False
    model: str | None = None  # the model (snapshot) the server says answered, e.g. "gpt-4o-2024-08-06"

    @property
    def answer(self) -> str:
        """The text without reasoning blocks ("" when the reply is all reasoning)."""
        return strip_reasoning(self.text)


# Reasoning models served by vLLM, Ollama, llama.cpp (DeepSeek-R1, Qwen3...) may put their chain of
# thought inside the content. Their chat templates often open the block in the prompt, so a reply can
# also carry only the closing tag.
_REASONING_BLOCK = re.compile(r"<(think|thinking|reasoning)>.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_REASONING_OPEN = re.compile(r"^\s*<(?:think|thinking|reasoning)>", re.IGNORECASE)
_REASONING_CLOSE = re.compile(r"</(?:think|thinking|reasoning)\s*>", re.IGNORECASE)


def strip_reasoning(text: str) -> str:
    """A reply's answer: reasoning blocks removed, and what comes before a lone closing tag. A block
    that opens the reply and never closes (cut off while thinking) leaves no answer: ""."""
    text = _REASONING_BLOCK.sub("", text)
    if _REASONING_OPEN.match(text):
        return ""
    *_, text = _REASONING_CLOSE.split(text)
    return text.strip()


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
    return ChatResult(content, pt, ct, _get(choices[0], "finish_reason"), estimated, _get(resp, "model"))


def chat_body(
    config: LLMConfig,
    messages: Sequence[Mapping[str, str]],
    *,
    max_tokens: int | None = None,
    temperature: float | None = None,
    token_field: str | None = None,
) -> dict:
    """The POST /v1/chat/completions body, shared by online calls and batch files. The output cap goes
    in `token_field`, by default `config.max_tokens_field`."""
    body: dict[str, Any] = {"model": config.model, "messages": [dict(m) for m in messages]}
    temperature = temperature if temperature is not None else config.temperature
    if temperature is not None:
        body["temperature"] = temperature
    max_tokens = max_tokens if max_tokens is not None else config.max_tokens
    if max_tokens is not None:
        body[token_field or config.max_tokens_field] = max_tokens
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


# What to do about a refusal that asking again cannot change.
_ADVICE = {
    401: "the endpoint did not accept the API key: check the key exported in {key_env}",
    403: "the API key in {key_env} may not use model {model!r} here: check the key and the model's access",
    404: "no such model or route: check `model` ({model!r}) and `base_url` ({base_url})",
    "4xx": "the request itself was refused (e.g. a prompt longer than the model's context, or a setting the "
           "model does not take): change the request or the endpoint settings, then run again",
    "5xx": "the server failed with the same answer twice running (e.g. a prompt longer than its context), "
           "so retrying cannot help: change the request or fix the server, then run again",
}


def _server_message(e: Any, config: LLMConfig) -> str:
    """What the server said: its error message, else its whole body (FastAPI's 422 `detail`...)."""
    body = e.body
    if isinstance(body, Mapping):
        body = body.get("message") or body.get("detail") or body
    text = body if isinstance(body, str) else json.dumps(body, default=str)
    return error_detail(text.strip() or "(empty body)", config.api_key_env, limit=500)


def _refusal(config: LLMConfig, e: BaseException, last_5xx: str | None) -> RequestRefused | None:
    """`e` as a RequestRefused when retrying cannot help: a 4xx other than 408/409/429, or a 5xx whose
    body is the one of the attempt before (`last_5xx`); else None."""
    if not isinstance(e, import_openai().APIStatusError) or e.status_code in _RETRY_STATUSES:
        return None
    if e.status_code >= 500:
        if last_5xx is None or repr(e.body) != last_5xx:
            return None
        advice = _ADVICE["5xx"]
    else:
        advice = _ADVICE.get(e.status_code, _ADVICE["4xx"])
    where = config.base_url or "api.openai.com"
    advice = advice.format(key_env=config.api_key_env, model=config.model, base_url=where)
    return RequestRefused(e.status_code, _server_message(e, config), advice)


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
    (malformed replies at most `config.malformed_retries` times). A refusal that retrying cannot change
    raises RequestRefused at once, with the server's message and what to do."""
    openai = import_openai()
    attempt = malformed = 0
    last_5xx = None  # the body of the previous attempt's 5xx: the same one again is not transient
    while True:
        try:
            try:
                return await call()
            except (json.JSONDecodeError, openai.APIResponseValidationError) as e:
                raise MalformedReply(f"reply body could not be decoded: {type(e).__name__}") from e
        except Exception as e:
            if (refused := _refusal(config, e, last_5xx)) is not None:
                raise refused from e
            # A connection error or timeout between two 5xx says nothing of the server's answer (a server may
            # close the connection after its 500): the rule "the same 5xx twice running" looks past it.
            if isinstance(e, openai.APIStatusError) and e.status_code >= 500:
                last_5xx = repr(e.body)
            elif not isinstance(e, openai.APIConnectionError):
                last_5xx = None
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
        self._token_field = config.max_tokens_field  # switched once if the server refuses it

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
        """One chat completion (retried as configured). Raises BudgetExceeded, MalformedReply,
        RequestRefused (retrying cannot help) or the openai error that outlived the retries."""
        self._open()
        cfg = self.config
        est_out = max_tokens if max_tokens is not None else cfg.default_output_tokens
        est = cfg.cost_usd(estimate_message_tokens(messages), est_out)

        async def post() -> bytes:
            body = chat_body(cfg, messages, max_tokens=max_tokens, temperature=temperature,
                             token_field=self._token_field)
            client = min(self._clients, key=lambda c: self._in_flight[id(c)])
            self._in_flight[id(client)] += 1
            try:
                # The client's generic POST to the same route as chat.completions.create, with the reply
                # read as bytes: the typed path spends enough CPU converting the request and the reply to
                # cap the requests one event loop can make (see BENCHMARKS.md). Errors, auth, Azure
                # routing are the client's own, unchanged.
                return await client.post("/chat/completions", body=body, cast_to=bytes)
            finally:
                self._in_flight[id(client)] -= 1

        async def call() -> ChatResult:
            try:
                raw = await post()
            except import_openai().BadRequestError as e:
                if not _wants_max_completion_tokens(e) or self._token_field == "max_completion_tokens":
                    raise
                log.warning("%s refuses max_tokens: sending max_completion_tokens from now on "
                            "(set token_param: max_completion_tokens to skip this)", cfg.model)
                self._token_field = "max_completion_tokens"
                raw = await post()
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


def _wants_max_completion_tokens(e: Any) -> bool:
    """OpenAI's 400 for `max_tokens` sent to a reasoning model: "Unsupported parameter: 'max_tokens' is not
    supported with this model. Use 'max_completion_tokens' instead." (param "max_tokens")."""
    body = e.body if isinstance(e.body, Mapping) else {}
    text = f"{body.get('message', '')} {e.message}"
    return "max_completion_tokens" in text and (body.get("param") == "max_tokens" or "max_tokens'" in text)


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
    loop's own CPU per request is a large part of what caps the requests one process can make."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    if not hasattr(asyncio, "Runner"):  # Python 3.10
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)
