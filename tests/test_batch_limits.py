"""llm/batch.py under the Batch API's limits (project issue 18, item 10), against a local OpenAI-compatible
server and the real `openai` client: a round too big for one batch goes as several input files (requests,
bytes, estimated enqueued tokens), each file's batch id is kept on disk so a killed run re-polls rather
than resubmits, an expired batch's missing ids (and only those) go again, and a batch refused for the
enqueued-token limit waits for an earlier one and is submitted again instead of failing."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytest.importorskip("openai")
pytest.importorskip("datasketch")  # the story validator of the generation tests

from openai_server import FakeOpenAI, StoryWriter, make_specs  # noqa: E402

import tinystories_lib  # noqa: E402
from tinystories_lib.llm.batch import BatchLimits, build_batch_jsonl, generate_stories_batch, run_batch  # noqa: E402
from tinystories_lib.llm.client import LLMConfig, estimate_message_tokens, run_async  # noqa: E402
from tinystories_lib.llm.errors import BatchError, BatchPending  # noqa: E402

ROOT = Path(tinystories_lib.__file__).resolve().parents[1]  # the package a child process should import
TESTS = Path(__file__).resolve().parent


def cfg(server: FakeOpenAI, **kw) -> LLMConfig:
    base = {"base_url": server.base_url, "model": "fake-model", "backoff_base_s": 0.01, "timeout_s": 5}
    return LLMConfig(**{**base, **kw})


def _requests(n: int) -> dict:
    return {f"req-{i}": [{"role": "user", "content": f"story number {i}"}] for i in range(n)}


def uploaded_ids(server: FakeOpenAI, batches=None) -> list[list[str]]:
    """The custom ids of each batch's input file, in creation order."""
    batches = server.batches.values() if batches is None else batches
    return [[line["custom_id"] for line in b.lines] for b in batches]


def accepted(server: FakeOpenAI) -> list:
    return [b for b in server.batches.values() if not b.extra.get("refused")]


def test_ten_requests_go_as_four_files_and_a_resumed_call_repolls_them(tmp_path):
    state = tmp_path / "round.json"
    limits = BatchLimits(max_requests=3)
    with FakeOpenAI(batch_polls=4) as server:
        c = cfg(server)
        with pytest.raises(BatchPending):
            run_async(run_batch(c, _requests(10), poll_s=0.01, max_wait_s=0.015, state_path=state, limits=limits))
        assert [len(f) for f in uploaded_ids(server)] == [3, 3, 3, 1]
        recorded = json.loads(state.read_text())["chunks"]
        assert [ch["custom_ids"] for ch in recorded] == uploaded_ids(server)
        out = run_async(run_batch(c, _requests(10), poll_s=0.01, state_path=state, limits=limits))
        assert len(server.requests_to("POST", "/v1/batches")) == 4  # the resumed call submitted nothing
        files = uploaded_ids(server)
    assert sorted(i for f in files for i in f) == sorted(_requests(10))  # every id exactly once
    assert set(out.results) == set(_requests(10)) and not out.errors and out.status == "completed"
    assert out.batch_ids == [ch["batch_id"] for ch in recorded] and out.batch_id == out.batch_ids[0]


@pytest.mark.parametrize("limit", ["bytes", "tokens"])
def test_byte_and_token_limits_split_too(limit):
    with FakeOpenAI(batch_polls=1) as server:
        c = cfg(server)
        one = _requests(1)
        line_bytes, line_tokens = len(build_batch_jsonl(c, one)), estimate_message_tokens(one["req-0"])
        if limit == "bytes":
            limits = BatchLimits(max_bytes=2 * line_bytes + line_bytes // 2)
        else:
            limits = BatchLimits(max_enqueued_tokens=2 * line_tokens + line_tokens // 2)
        out = run_async(run_batch(c, _requests(10), poll_s=0.01, limits=limits))
        sizes = [len(server.files[b.input_file_id]["data"]) for b in server.batches.values()]
        files = uploaded_ids(server)
    assert [len(f) for f in files] == [2] * 5
    assert all(s <= limits.max_bytes for s in sizes)
    assert sorted(i for f in files for i in f) == sorted(_requests(10)) and len(out.results) == 10


def test_token_limit_refusal_waits_for_an_earlier_batch_and_goes_again(tmp_path):
    """Each file holds 3 requests of 3 fake tokens; the organization may have 10 enqueued, so one file at a
    time: the refused ones go again once an earlier batch finishes, and none counts as failed."""
    state = tmp_path / "round.json"
    with FakeOpenAI(batch_polls=2, batch_token_limit=10) as server:
        out = run_async(run_batch(cfg(server), _requests(10), poll_s=0.01, state_path=state,
                                  limits=BatchLimits(max_requests=3)))
        refused = [b for b in server.batches.values() if b.extra.get("refused")]
        ok = accepted(server)
    assert refused, "the fake's limit should have refused some batches"
    assert len(server.requests_to("POST", "/v1/files")) == 4  # a refused file goes again as it is
    assert {b.input_file_id for b in refused} <= {b.input_file_id for b in ok}
    assert set(out.results) == set(_requests(10)) and not out.errors and out.status == "completed"
    assert sorted(i for f in uploaded_ids(server, ok) for i in f) == sorted(_requests(10))
    # each chunk keeps its accepted batch (its refused ones listed apart): a rerun re-polls it, never a refused one
    recorded = json.loads(state.read_text())["chunks"]
    assert [ch["batch_id"] for ch in recorded] == [b.id for b in ok] == out.batch_ids


def test_a_recorded_batch_found_refused_goes_again(tmp_path):
    """A run killed between a refusal and its state update finds the refusal on resume and submits the ids
    still wanted again (here from a state file in the one-batch format written before chunking)."""
    import openai

    with FakeOpenAI(batch_polls=1, batch_token_limit=5) as server:
        c = cfg(server)
        client = openai.OpenAI(base_url=server.base_url, api_key="unused")
        f = client.files.create(file=("b.jsonl", build_batch_jsonl(c, _requests(3))), purpose="batch")
        first = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
        client.close()
        state = tmp_path / "round.json"
        state.write_text(json.dumps({"batch_id": first.id, "model": c.model, "custom_ids": list(_requests(3))}))
        server.batch_token_limit = 100  # room now
        wanted = dict(list(_requests(3).items())[:2])  # req-2 was merged before the kill
        out = run_async(run_batch(c, wanted, poll_s=0.01, state_path=state))
        files = uploaded_ids(server)
    assert server.batches[first.id].extra["refused"] and files[1:] == [["req-0", "req-1"]]
    assert set(out.results) == set(wanted) and not out.errors and out.batch_ids == [list(server.batches)[1]]


def test_refusal_with_nothing_in_flight_says_what_to_do(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-SECRET-456")
    with FakeOpenAI(batch_polls=2, batch_token_limit=5) as server:  # one file of 9 tokens never fits
        with pytest.raises(BatchError) as info:
            run_async(run_batch(cfg(server), _requests(3), poll_s=0.01))
        tries = len(server.batches)
    msg = str(info.value)
    assert "enqueued-token limit" in msg and "max_enqueued_tokens" in msg and "SECRET" not in msg
    assert 1 < tries < 10  # retried a few times, then stopped


def test_expired_batch_only_its_missing_ids_are_resubmitted(tmp_path):
    specs = make_specs(10)
    out = tmp_path / "s.jsonl"
    limits = BatchLimits(max_requests=3)
    with FakeOpenAI(StoryWriter(specs), batch_polls=1, batch_statuses=["completed", "expired"]) as server:
        c = cfg(server, model="fake-story-model")
        first = generate_stories_batch(specs, c, out, poll_s=0.01, limits=limits)
        assert len(server.batches) == 4 and first.written == 8
        assert first.failed == {"missing_from_batch": 2} and first.status == "incomplete"
        second = generate_stories_batch(specs, c, out, poll_s=0.01, limits=limits)
        files = uploaded_ids(server)
    assert files[1] == ["p0003", "p0004", "p0005"]  # it returned p0003 before it expired
    assert len(files) == 5 and files[4] == ["p0004", "p0005"]
    assert second.written == 2 and second.status == "complete"
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert sorted(ids) == sorted(s.id for s in specs)


@pytest.mark.parametrize("created", [False, True], ids=["killed-while-creating", "killed-after-creating"])
def test_kill_during_a_submission_resubmits_nothing_submitted(tmp_path, created):
    """SIGKILL a generation while its second batch is being created: before the server made it, or after
    (the batch exists but the client never saved its id). The rerun re-polls the first batch, finds the
    second among the endpoint's batches by its recorded input file (or creates it from that file, without
    uploading it again), and submits only the ids no batch holds."""
    specs = make_specs(10)
    out = tmp_path / "k.jsonl"
    with FakeOpenAI(StoryWriter(specs), batch_polls=2, hold_batches_after=1, hold_after_creating=created) as server:
        c = cfg(server, model="fake-story-model")
        script = textwrap.dedent(
            f"""
            import sys
            sys.path[:0] = [{str(ROOT)!r}, {str(TESTS)!r}]
            from openai_server import make_specs
            from tinystories_lib.llm.batch import BatchLimits, generate_stories_batch
            from tinystories_lib.llm.client import LLMConfig
            generate_stories_batch(make_specs(10), LLMConfig(**{c.to_dict()!r}), {str(out)!r}, poll_s=0.01,
                                   limits=BatchLimits(max_requests=3))
            """
        )
        proc = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path)
        deadline = time.monotonic() + 60
        while not server.batch_held.wait(0.05) and proc.poll() is None and time.monotonic() < deadline:
            pass
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert server.batch_held.is_set(), "the child should have been killed while submitting its second batch"
        first, *made = server.batches
        assert len(made) == int(created)
        recorded = json.loads((tmp_path / "k.jsonl.batch-stories.json").read_text())["chunks"]
        assert [ch["batch_id"] for ch in recorded] == [first, None] and not out.exists()
        assert recorded[1]["file_id"] and recorded[1]["custom_ids"] == ["p0003", "p0004", "p0005"]

        server.hold_batches_after = None
        report = generate_stories_batch(specs, c, out, poll_s=0.01, limits=BatchLimits(max_requests=3))
        files = uploaded_ids(server)
        uploads = len(server.requests_to("POST", "/v1/files"))
        second = next(b for b in server.batches.values() if b.input_file_id == recorded[1]["file_id"])
    counts = collections.Counter(i for f in files for i in f)
    assert len(files) == 4 and set(counts.values()) == {1} and len(counts) == 10  # nothing paid twice
    assert uploads == 4  # the second file was not uploaded again
    assert report.written == 10 and report.status == "complete" and report.batch_ids[:2] == [first, second.id]
    assert not made or made == [second.id]  # the batch made before the kill is the one collected
    assert not list(tmp_path.glob("*.batch-*.json"))


def test_a_recorded_file_the_endpoint_no_longer_holds_is_uploaded_again(tmp_path):
    state = tmp_path / "round.json"
    with FakeOpenAI(batch_polls=1) as server:
        c = cfg(server)
        chunk = {"batch_id": None, "custom_ids": list(_requests(3)), "file_id": "file-deleted", "uploaded_at": 0}
        state.write_text(json.dumps({"model": c.model, "custom_ids": list(_requests(3)), "chunks": [chunk]}))
        out = run_async(run_batch(c, _requests(3), poll_s=0.01, state_path=state))
        listed = len(server.requests_to("GET", "/v1/batches?"))
        uploads = len(server.requests_to("POST", "/v1/files"))
    assert set(out.results) == set(_requests(3)) and not out.errors
    assert listed == 1 and uploads == 1 and len(server.batches) == 1


def test_profile_keys_reach_the_client_for_generation_and_the_judge(tmp_path):
    """`token_param` and the `batch_max_*` limits of a profile's endpoint sections become the LLMConfig of
    generation and of the judge; they change how requests go, not what they make (artifact keys stay)."""
    from tinystories_lib import params
    from tinystories_lib.runs import Run
    from tinystories_lib.stages.corpus import llm_config
    from tinystories_lib.stages.grading import make_grader

    keys = {"token_param": "max_completion_tokens", "batch_max_requests": 3, "batch_max_bytes": 5000,
            "batch_max_enqueued_tokens": 700}
    overrides = {f"{section}.llm.{k}": v for section in ("data", "grade") for k, v in keys.items()}
    p = params.load("smoke", {**overrides, "grade.judge": "llm", "grade.judge_repeats": 3})
    for ep in (p.data.llm, p.grade.llm):
        c = llm_config(ep)
        assert c.max_tokens_field == "max_completion_tokens"
        assert BatchLimits.from_config(c) == BatchLimits(max_requests=3, max_bytes=5000, max_enqueued_tokens=700)
    assert p.section_hash("data") == params.load("smoke").section_hash("data")
    judge = make_grader(Run.load("smoke", {**overrides, "grade.judge": "llm", "grade.judge_repeats": 3}))
    assert judge.repeats == 3 and judge.config.batch_max_requests == 3
    assert BatchLimits.from_config(LLMConfig(base_url=None, model="m")) == BatchLimits()  # OpenAI's by default
    for bad in ({"data.llm.batch_max_requests": 0}, {"grade.llm.token_param": "max_output_tokens"},
                {"grade.judge_repeats": 0}):
        with pytest.raises(params.ParamsError, match=next(iter(bad)).split(".")[-1]):
            params.load("smoke", bad)

    specs = make_specs(7)
    with FakeOpenAI(StoryWriter(specs), batch_polls=1) as server:
        c = llm_config(params.load("smoke", {"data.llm.base_url": server.base_url, "data.llm.model": "fake",
                                             "data.llm.batch_max_requests": 3}).data.llm)
        report = generate_stories_batch(specs, c, tmp_path / "s.jsonl", poll_s=0.01)  # no limits passed
        sizes = [len(f) for f in uploaded_ids(server)]
    assert sizes == [3, 3, 1] and report.written == 7
