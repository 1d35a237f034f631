"""The errors of the LLM layer, and how they are reported.

`LLMError` and its kinds (`MissingAPIKey`, `MalformedReply`, `RequestRefused`, `BudgetExceeded`,
`BatchError`, `BatchPending`), `describe_error` (a short label to count failures by) and `error_detail` (an error's text
with the API key redacted). `import_openai` says how to install the optional client. A module of its own
so the client, the Batch API path, generation and the judge raise and catch the same classes without
importing each other.
"""

from __future__ import annotations

import os
from pathlib import Path

INSTALL_HINT = "pip install 'tinystories-lab[llm]'"


def import_openai():
    """The `openai` module, or an ImportError that says how to install it."""
    try:
        import openai
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(f"LLM generation and judging need the `openai` client: {INSTALL_HINT}") from e
    return openai


# --------------------------------------------------------------------------------------------- errors


class LLMError(RuntimeError):
    """Base class for the errors the LLM layer (`tinystories_lib.llm`) raises."""


class MissingAPIKey(LLMError):
    """The environment variable named by `LLMConfig.api_key_env` is not set for a remote endpoint."""


class MalformedReply(LLMError):
    """The server answered 200 but not with a usable chat completion (non-JSON, no choices, empty text)."""


class RequestRefused(LLMError):
    """The endpoint refused a request in a way that asking again cannot change: HTTP 400/401/403/404/422
    (and other 4xx but 408/409/429), or a 5xx with the same body twice running (e.g. a prompt longer than
    a local server's context). `status_code` and `server_message` (key redacted) are the server's."""

    def __init__(self, status_code: int, server_message: str, advice: str):
        self.status_code, self.server_message = status_code, server_message
        super().__init__(f"the endpoint answered HTTP {status_code}: {server_message!r}; {advice}")


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
    if isinstance(e, RequestRefused):
        return f"http_{e.status_code}"
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


def error_detail(e: BaseException | str, api_key_env: str, limit: int = 300) -> str:
    """An error's text for reports and failed grades, cut short, with the API key read from the
    environment variable `api_key_env` (should a server ever echo it) replaced."""
    text = e if isinstance(e, str) else f"{type(e).__name__}: {e}"
    key = os.environ.get(api_key_env, "").strip()
    if len(key) >= 8:
        text = text.replace(key, "[redacted]")
    return text[:limit]
