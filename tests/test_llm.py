"""llm/client.py, errors, batch and jsonl against a local OpenAI-compatible server: real sockets, the real `openai` client."""

from __future__ import annotations

import asyncio
import email.utils
import json
import time

import pytest

openai = pytest.importorskip("openai")

from openai_server import FakeOpenAI, Fault  # noqa: E402

from tinystories_lib.llm.batch import build_batch_jsonl, forget_batch, run_batch  # noqa: E402
from tinystories_lib.llm.client import (  # noqa: E402
    LLMClient,
    LLMConfig,
    Usage,
    make_async_client,
    map_concurrently,
    retry_after_seconds,
    run_async,
)
from tinystories_lib.llm.errors import (  # noqa: E402
    BatchError,
    BatchPending,
    BudgetExceeded,
    MalformedReply,
    MissingAPIKey,
    RequestRefused,
)
from tinystories_lib.llm.jsonl import JsonlAppender, repair_jsonl_tail  # noqa: E402

MSG = [{"role": "user", "content": "Tell me a story"}]


def cfg(server: FakeOpenAI, **kw) -> LLMConfig:
    base = {"base_url": server.base_url, "model": "fake-model", "backoff_base_s": 0.01, "timeout_s": 5}
    return LLMConfig(**{**base, **kw})


async def _chat_many(config: LLMConfig, n: int, **client_kw) -> tuple[list, Usage]:
    async with LLMClient(config, **client_kw) as llm:
        results = await asyncio.gather(*(llm.chat(MSG) for _ in range(n)), return_exceptions=True)
        return results, llm.usage


def chat_once(config: LLMConfig):
    results, usage = run_async(_chat_many(config, 1))
    if isinstance(results[0], BaseException):
        raise results[0]
    return results[0], usage


# ------------------------------------------------------------------------------------ config & keys


def test_config_from_dict_validates_keys():
    c = LLMConfig.from_dict({"model": "gpt-4o-mini", "price_per_1m_input": 0.15, "max_concurrency": 4})
    assert c.base_url is None and c.max_concurrency == 4
    with pytest.raises(ValueError, match="unknown LLMConfig keys"):
        LLMConfig.from_dict({"model": "m", "modle": "typo"})
    with pytest.raises(ValueError, match="api_key_env"):
        LLMConfig.from_dict({"model": "m", "api_key": "sk-literal"})
    assert LLMConfig.from_dict(c.to_dict()) == c


def test_missing_key_for_remote_endpoint_names_the_variable(monkeypatch):
    monkeypatch.delenv("TS_TEST_KEY_VAR", raising=False)
    remote = LLMConfig(base_url="https://api.example.invalid/v1", model="m", api_key_env="TS_TEST_KEY_VAR")
    with pytest.raises(MissingAPIKey, match="TS_TEST_KEY_VAR"):
        make_async_client(remote)
    # OpenAI itself (base_url None) is remote too.
    with pytest.raises(MissingAPIKey):
        make_async_client(LLMConfig(base_url=None, model="m", api_key_env="TS_TEST_KEY_VAR"))


def test_local_server_without_key_gets_placeholder_and_env_key_is_sent(monkeypatch):
    monkeypatch.delenv("TS_TEST_KEY_VAR", raising=False)
    with FakeOpenAI() as server:
        chat_once(cfg(server, api_key_env="TS_TEST_KEY_VAR"))
        assert server.chat_requests[-1].headers["authorization"] == "Bearer sk-no-key"
        monkeypatch.setenv("TS_TEST_KEY_VAR", "sk-test-SECRET-123")
        chat_once(cfg(server, api_key_env="TS_TEST_KEY_VAR"))
        assert server.chat_requests[-1].headers["authorization"] == "Bearer sk-test-SECRET-123"


def test_repr_never_shows_the_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-SECRET-123")
    c = LLMConfig(base_url=None, model="m")
    client = LLMClient(c)
    for text in (repr(c), str(c), repr(client), json.dumps(c.to_dict())):
        assert "SECRET" not in text


def test_azure_client_uses_deployment_path_and_api_key_header(monkeypatch):
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "azure-secret")
    with FakeOpenAI() as server:
        c = LLMConfig(
            base_url=server.root_url, model="my-deployment", api_key_env="AZURE_OPENAI_API_KEY",
            azure_api_version="2024-06-01",
        )
        result, _ = chat_once(c)
        req = server.chat_requests[-1]
    assert result.text == "Hello from the fake model."
    assert req.path.startswith("/openai/deployments/my-deployment/chat/completions")
    assert "api-version=2024-06-01" in req.path
    assert req.headers["api-key"] == "azure-secret"


# ------------------------------------------------------------------------------------ concurrency & retries


def test_concurrency_bound_is_respected():
    with FakeOpenAI(latency_s=0.1) as server:
        results, usage = run_async(_chat_many(cfg(server, max_concurrency=3), 12))
    assert all(r.text for r in results)
    assert server.max_in_flight == 3  # bounded, and the bound is actually used
    assert usage.requests == 12 and usage.retries == 0


def test_429_retry_after_is_honoured():
    with FakeOpenAI() as server:
        server.add_faults(Fault(status=429, retry_after=1))
        t0 = time.monotonic()
        result, usage = chat_once(cfg(server))
        elapsed = time.monotonic() - t0
        first, second = server.chat_requests
    assert result.text
    assert elapsed >= 1.0 and second.time - first.time >= 1.0
    assert usage.retries == 1


def test_500_is_retried_then_gives_up():
    with FakeOpenAI() as server:
        server.add_faults(Fault(status=500), Fault(status=503))
        result, usage = chat_once(cfg(server))
        assert result.text and usage.retries == 2 and len(server.chat_requests) == 3

        server.add_faults(Fault(status=500, message="busy (req 1)"), Fault(status=500, message="busy (req 2)"))
        with pytest.raises(openai.InternalServerError):  # two different bodies: transient, retries ran out
            chat_once(cfg(server, max_retries=1))


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_client_errors_fail_at_once_with_the_servers_message(status, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-never-shown-1234")
    with FakeOpenAI() as server:
        server.add_faults(Fault(status=status, message="prompt is 9000 tokens, sk-test-never-shown-1234 allows 2048"))
        with pytest.raises(RequestRefused, match=f"HTTP {status}: 'prompt is 9000 tokens") as e:
            chat_once(cfg(server))
        assert len(server.chat_requests) == 1 and e.value.status_code == status
    assert "sk-test-never-shown" not in str(e.value) and "[redacted]" in str(e.value)
    assert ("OPENAI_API_KEY" in str(e.value)) == (status in (401, 403))  # what to do: check the key


def test_a_5xx_with_the_same_body_twice_fails_after_the_second():
    """`transformers serve` answers a context overflow with a 500 and the same body each time."""
    overflow = "Input length 3000 exceeds the model's maximum context of 2048"
    with FakeOpenAI() as server:
        server.add_faults(*[Fault(status=500, message=overflow)] * 2)  # a third try would succeed
        with pytest.raises(RequestRefused, match="same answer twice") as e:
            chat_once(cfg(server))
        assert len(server.chat_requests) == 2 and overflow in str(e.value)
        server.add_faults(Fault(status=500, message=overflow), Fault(status=503, message=overflow))
        result, usage = chat_once(cfg(server))  # not two in a row: retried as before
        assert result.text and usage.retries == 2


def test_a_connection_error_between_two_same_5xx_does_not_hide_them():
    """`transformers serve` may drop the connection after its 500: the next try is a connection error or a
    timeout, then the same 500 again. Refused at that one, not retried six times."""
    overflow = "Input length 3000 exceeds the model's maximum context of 2048"
    with FakeOpenAI() as server:
        server.add_faults(Fault(status=500, message=overflow), Fault(delay_s=3.0), Fault(status=500, message=overflow))
        with pytest.raises(RequestRefused, match="same answer twice"):
            chat_once(cfg(server, timeout_s=0.3))
        assert len(server.chat_requests) == 3


def test_timeout_is_retried():
    with FakeOpenAI() as server:
        server.add_faults(Fault(delay_s=3.0))
        t0 = time.monotonic()
        result, usage = chat_once(cfg(server, timeout_s=0.3))
        assert result.text and usage.retries == 1
        assert len(server.chat_requests) == 2 and time.monotonic() - t0 < 2.5


@pytest.mark.parametrize(
    "fault",
    [
        Fault(body=b"<html>502 Bad Gateway</html>", content_type="text/html"),
        Fault(body=b'{"choices": [{"message": {"role": "assi'),  # truncated JSON
        Fault(body=b'{"id": "x", "object": "chat.completion", "choices": []}'),
        Fault(body=b'{"id": "x", "choices": [{"index": 0, "message": {"role": "assistant", "content": ""}}]}'),
    ],
    ids=["not-json", "truncated-json", "no-choices", "empty-content"],
)
def test_malformed_reply_is_retried(fault):
    with FakeOpenAI() as server:
        server.add_faults(fault)
        result, usage = chat_once(cfg(server))
        assert result.text == "Hello from the fake model." and usage.retries == 1


def test_persistent_malformed_reply_raises_clear_error():
    with FakeOpenAI() as server:
        server.add_faults(*[Fault(body=b"not json", content_type="text/plain")] * 5)
        with pytest.raises(MalformedReply, match="not a JSON chat completion"):
            chat_once(cfg(server, malformed_retries=2))
        assert len(server.chat_requests) == 3  # bounded: 1 try + 2 retries


def test_retry_after_header_forms():
    assert retry_after_seconds({"retry-after": "2"}) == 2.0
    assert retry_after_seconds({"retry-after-ms": "1500"}) == 1.5
    date = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= retry_after_seconds({"retry-after": date}) <= 31
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({}) is None


# ------------------------------------------------------------------------------------ usage & budget


def test_usage_and_cost_accounting():
    with FakeOpenAI() as server:
        c = cfg(server, price_per_1m_input=2.0, price_per_1m_output=10.0)
        results, usage = run_async(_chat_many(c, 4))
    # The fake counts words: 4 prompt tokens and 5 completion tokens per call.
    assert (usage.prompt_tokens, usage.completion_tokens) == (16, 20)
    assert usage.cost_usd == pytest.approx((16 * 2.0 + 20 * 10.0) / 1e6)
    assert c.estimate_cost(1000, 100, 200) == pytest.approx(1000 * (100 * 2 + 200 * 10) / 1e6)
    assert c.estimate_cost(1000, 100, 200, batch=True) == pytest.approx(0.5 * 1000 * (100 * 2 + 200 * 10) / 1e6)


def test_budget_cap_stops_new_requests():
    # Each reply costs 5 output tokens * $1000/1M = $0.005; each reservation max_tokens=10 -> $0.01.
    with FakeOpenAI(latency_s=0.01) as server:
        c = cfg(server, price_per_1m_output=1000.0, max_tokens=10, max_concurrency=1)
        results, usage = run_async(_chat_many(c, 20, budget_usd=0.03))
        issued = len(server.chat_requests)
    done = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BudgetExceeded)]
    assert len(done) + len(refused) == 20 and refused and done
    assert issued == len(done)  # refused requests never reached the server
    assert usage.cost_usd <= 0.03
    assert "budget cap" in str(refused[0])


def test_run_async_works_inside_a_running_loop():
    async def inner():
        await asyncio.sleep(0)
        return 42

    async def notebook_cell():  # Jupyter runs cells inside a live event loop
        return run_async(inner())

    assert run_async(inner()) == 42
    assert asyncio.run(notebook_cell()) == 42


# ------------------------------------------------------------------------------------ Batch API


def _requests(n: int) -> dict:
    return {f"req-{i}": [{"role": "user", "content": f"story number {i}"}] for i in range(n)}


def test_build_batch_jsonl():
    c = LLMConfig(base_url=None, model="m", temperature=0.7, max_tokens=50)
    lines = [json.loads(x) for x in build_batch_jsonl(c, _requests(2)).decode().splitlines()]
    assert [x["custom_id"] for x in lines] == ["req-0", "req-1"]
    assert lines[0]["method"] == "POST" and lines[0]["url"] == "/v1/chat/completions"
    assert lines[0]["body"] == {
        "model": "m", "messages": [{"role": "user", "content": "story number 0"}], "temperature": 0.7, "max_tokens": 50,
    }


def test_batch_end_to_end_with_errors_and_discount():
    with FakeOpenAI(batch_polls=3, batch_fail_ids={"req-1"}) as server:
        c = cfg(server, price_per_1m_input=2.0, price_per_1m_output=10.0)
        usage = Usage()
        out = run_async(run_batch(c, _requests(3), poll_s=0.01, usage=usage))
        uploads = server.requests_to("POST", "/v1/files")
        polls = server.requests_to("GET", "/v1/batches/")
        uploaded = server.files[server.batches[out.batch_id].input_file_id]
    assert out.status == "completed"
    assert set(out.results) == {"req-0", "req-2"} and set(out.errors) == {"req-1"}
    assert "http_500" in out.errors["req-1"]
    assert len(uploads) == 1 and uploaded["purpose"] == "batch" and len(polls) == 3
    assert [json.loads(x)["custom_id"] for x in uploaded["data"].decode().splitlines()] == ["req-0", "req-1", "req-2"]
    # 3 prompt words and 5 completion words per result, at half price.
    assert usage.batch_requests == 2
    assert usage.cost_usd == pytest.approx(0.5 * 2 * (3 * 2.0 + 5 * 10.0) / 1e6)
    assert not server.chat_requests  # nothing went through the online endpoint


def test_batch_expired_reports_missing_ids():
    with FakeOpenAI(batch_polls=1, batch_final_status="expired") as server:
        out = run_async(run_batch(cfg(server), _requests(4), poll_s=0.01))
    assert out.status == "expired" and len(out.results) == 2
    assert all("expired" in e for e in out.errors.values()) and len(out.errors) == 2


def test_batch_resumes_from_state_instead_of_resubmitting(tmp_path):
    state = tmp_path / "batch.json"
    with FakeOpenAI(batch_polls=4) as server:
        c = cfg(server)
        with pytest.raises(BatchPending) as info:
            run_async(run_batch(c, _requests(3), poll_s=0.01, max_wait_s=0.015, state_path=state))
        assert state.exists() and info.value.batch_id in state.read_text()
        out = run_async(run_batch(c, _requests(3), poll_s=0.01, state_path=state))
        assert out.batch_id == info.value.batch_id and len(out.results) == 3
        # A subset of the recorded ids (some merged before a kill) reuses the batch too.
        out2 = run_async(run_batch(c, dict(list(_requests(3).items())[:1]), poll_s=0.01, state_path=state))
        assert set(out2.results) == {"req-0"}
        assert len(server.requests_to("POST", "/v1/batches")) == 1
        with pytest.raises(BatchError, match="different set of requests"):
            run_async(run_batch(c, _requests(5), poll_s=0.01, state_path=state))
        forget_batch(state)
        assert not state.exists()


def test_batch_budget_checked_before_submission():
    with FakeOpenAI() as server:
        c = cfg(server, price_per_1m_output=1e6, max_tokens=100)
        with pytest.raises(BudgetExceeded):
            run_async(run_batch(c, _requests(3), poll_s=0.01, budget_usd=1.0))
        assert not server.requests_to("POST", "/v1/files")


# ------------------------------------------------------------------------------------ JSONL


def test_repair_jsonl_tail(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"id": 1}\n{"id": 2}\n')
    assert repair_jsonl_tail(p) == 0 and p.read_text() == '{"id": 1}\n{"id": 2}\n'
    with open(p, "a") as f:
        f.write('{"id": 3, "te')
    assert repair_jsonl_tail(p) == len('{"id": 3, "te')
    assert p.read_text() == '{"id": 1}\n{"id": 2}\n'
    p.write_text('{"torn only')
    repair_jsonl_tail(p)
    assert p.read_text() == ""


def test_jsonl_appender_fsyncs_off_the_writing_thread(tmp_path, monkeypatch):
    """Each line reaches the OS at once; fsync runs on the appender's own thread, so a slow disk never
    stalls the writer (an event loop), and close syncs once more on the caller's thread."""
    import os
    import threading

    main = threading.current_thread()
    in_fsync, release = threading.Event(), threading.Event()
    calls = []
    real_fsync = os.fsync

    def slow_fsync(fd):
        calls.append(threading.current_thread())
        if threading.current_thread() is not main:
            in_fsync.set()
            assert release.wait(10), "test did not release the fsync"
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", slow_fsync)
    p = tmp_path / "out.jsonl"
    with JsonlAppender(p, fsync_every_s=0.01) as out:
        out.write({"id": 0})
        assert in_fsync.wait(10), "no background fsync after a write"
        for i in range(1, 50):  # the disk is "stuck" in fsync; writes go on
            out.write({"id": i})
        assert not release.is_set() and calls == [calls[0]] and calls[0] is not main
        assert [json.loads(line)["id"] for line in p.read_text().splitlines()] == list(range(50))
        release.set()
    assert calls[-1] is main  # the final sync on close
    assert len(p.read_text().splitlines()) == 50


def test_jsonl_appender_reports_a_failed_fsync(tmp_path, monkeypatch):
    import errno
    import os

    def broken(fd):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken)
    out = JsonlAppender(tmp_path / "out.jsonl", fsync_every_s=0.01).__enter__()
    out.write({"id": 0})
    deadline = time.monotonic() + 10
    with pytest.raises(OSError, match="fsync of .*out.jsonl failed"):
        while time.monotonic() < deadline:
            out.write({"id": 1})
            time.sleep(0.01)
    with pytest.raises(OSError, match="Input/output error"):
        out.__exit__(None, None, None)
    assert out._f.closed


@pytest.mark.parametrize("http_client", ["httpx", "aiohttp"])
def test_both_http_layers_bound_retry_and_time_out(http_client):
    """The same behaviour over openai's default httpx layer (several clients past 16 connections) and
    over its aiohttp layer (the default when installed)."""
    if http_client == "aiohttp":
        pytest.importorskip("aiohttp")
    with FakeOpenAI(latency_s=0.05) as server:
        results, usage = run_async(_chat_many(cfg(server, max_concurrency=40, http_client=http_client), 80))
        assert all(r.text == "Hello from the fake model." for r in results)
        assert server.max_in_flight <= 40 and usage.requests == 80
        llm = LLMClient(cfg(server, max_concurrency=40, http_client=http_client))
        llm._open()  # httpx: three clients of at most 16 connections each; aiohttp: one
        assert len(llm._clients) == (3 if http_client == "httpx" else 1)
        run_async(llm.aclose())
        server.add_faults(Fault(status=500), Fault(body=b'{"choices": [{"message": {"role": "assi'),
                          Fault(delay_s=3.0))
        result, usage = chat_once(cfg(server, http_client=http_client, timeout_s=0.5))
        assert result.text and usage.retries == 3
        req = server.chat_requests[-1]
    assert req.path == "/v1/chat/completions" and json.loads(req.body)["messages"] == MSG


def test_http_client_choice_is_validated():
    with pytest.raises(ValueError, match="http_client"):
        LLMConfig(base_url=None, model="m", http_client="requests")


def test_map_concurrently_stops_the_other_workers_when_one_fails():
    finished, cancelled = [], []

    async def worker(i: int) -> None:
        try:
            await asyncio.sleep(0.01 if i == 0 else 5)
            if i == 0:
                raise ValueError("item 0 failed")
            finished.append(i)
        except asyncio.CancelledError:
            cancelled.append(i)
            raise

    async def main() -> float:
        t0 = time.monotonic()
        with pytest.raises(ValueError, match="item 0 failed"):
            await map_concurrently(list(range(10)), worker, 3)
        # by the time the error arrives, the two other workers have been cancelled and have finished
        assert sorted(cancelled) == [1, 2] and not finished
        return time.monotonic() - t0

    assert run_async(main()) < 2
