"""Story generation (llm/generate.py, runner, process_shards, batch) against a local OpenAI-compatible server: validation, exactly-once resume, budget, batch."""

from __future__ import annotations

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
pytest.importorskip("datasketch")

from openai_server import FakeOpenAI, Fault, StoryWriter, make_specs, random_story  # noqa: E402

from tinystories_lib.llm.batch import generate_stories_batch
from tinystories_lib.llm.client import LLMConfig  # noqa: E402
from tinystories_lib.llm.generate import generate_stories
from tinystories_lib.llm.runner import estimate_remaining_cost
from tinystories_lib.llm.story_checks import StoryValidator, missing_words
from tinystories_lib.stories.words import word_forms

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


def cfg(server: FakeOpenAI, **kw) -> LLMConfig:
    base = {"base_url": server.base_url, "model": "fake-story-model", "backoff_base_s": 0.01, "max_concurrency": 4}
    return LLMConfig(**{**base, **kw})


def ids_in(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [json.loads(line)["id"] for line in path.read_text().splitlines() if line.strip()]


def rejects_of(path: Path) -> dict[str, str]:
    p = path.with_name(path.stem + ".rejects.jsonl")
    return {r["id"]: r["reject_reason"] for r in map(json.loads, p.read_text().splitlines())} if p.exists() else {}


# ------------------------------------------------------------------------------------ validation


def test_word_forms_cover_common_inflections():
    cases = {
        "jump": ["jumps", "jumped", "jumping"], "run": ["ran", "running", "runs"], "dance": ["danced", "dancing"],
        "happy": ["happier", "happiest", "happily"], "cry": ["cries", "cried"], "stop": ["stopped", "stopping"],
        "sad": ["sadder", "sadly"], "box": ["boxes"], "mouse": ["mice"], "swim": ["swam", "swimming"],
        "leaf": ["leaves"], "story": ["stories"], "good": ["better", "best"], "picnic": ["picnicking"],
    }
    for word, forms in cases.items():
        assert set(forms) <= word_forms(word), word
    text = "The dogs barked. Lily was happier when they ran home."
    assert missing_words(text, {"noun": "dog", "verb": "run", "adjective": "happy"}) == []
    assert missing_words(text, {"noun": "cat", "verb": "run", "adjective": "happy"}) == ["noun:cat"]
    assert missing_words("We ate ice cream.", {"noun": "ice cream"}) == []


def test_validator_reasons():
    words = {"noun": "ball", "verb": "jump", "adjective": "red"}
    story = random_story("s1", ("ball", "jumped", "red"))
    v = StoryValidator(min_words=20)
    assert v.check(story, words) is None
    v.add("s1", story)
    assert v.check(story, words)[0] == "exact_duplicate"
    near = story.replace("ball", "balls", 1)
    assert v.check(near, words)[0] == "near_duplicate"
    assert v.check("", words)[0] == "empty"
    assert v.check("I'm sorry, but I can't write that story.", words)[0] == "refusal"
    assert v.check("I cannot write a story about that. " + story, words)[0] == "refusal"
    opener = '"I can\'t find my ball!" cried Sam. ' + random_story("s4", ("ball", "jump", "red"))
    assert v.check(opener, words) is None
    assert v.check("Once upon a time... As an AI language model I think " + story, words)[0] == "refusal"
    assert v.check("Sure! Here is a story:\n\n" + story, words)[0] == "meta_text"
    assert v.check(story + " I hope you enjoyed this story!", words)[0] == "meta_text"
    assert v.check("The red ball jumped.", words)[0] == "too_short"
    assert v.check(random_story("s2", ("ball", "red")), words) == ("missing_words", "verb:jump")
    # A character apologising inside the story is not a refusal.
    dialogue = random_story("s3", ("ball", "jumps", "red")) + ' "I\'m sorry," said Tom.'
    assert v.check(dialogue, words) is None


# ------------------------------------------------------------------------------------ online generation


def test_generation_end_to_end_with_rejects(tmp_path):
    specs = make_specs(24)
    # p0005 and p0006 get p0000's words, so copies of its story pass the word check and reach the dup checks.
    for s in (specs[5], specs[6]):
        s.noun, s.verb, s.adjective = specs[0].noun, specs[0].verb, specs[0].adjective
    original = StoryWriter(specs)([{"content": specs[0].render()}])
    overrides = {
        "p0001": "I'm sorry, but I cannot help with that request. " * 10,
        "p0002": "Sure! Here is a short story for you:\n\n" + random_story("x", ("a",)),
        "p0003": random_story("p0003", ()),  # uses none of the words
        "p0004": "Tiny story.",
        "p0005": original,  # exact copy
        "p0006": original.rsplit(" ", 1)[0] + " moon.",  # one word changed
    }
    writer = StoryWriter(specs, overrides)
    out = tmp_path / "stories.jsonl"
    with FakeOpenAI(writer) as server:
        c = cfg(server, price_per_1m_input=1.0, price_per_1m_output=2.0, max_concurrency=1)
        report = generate_stories(specs, c, out, progress=False)
    assert report.status == "complete"
    assert report.requested == 24 and report.written == 18
    assert report.rejected == {
        "refusal": 1, "meta_text": 1, "missing_words": 1, "too_short": 1, "exact_duplicate": 1, "near_duplicate": 1,
    }
    assert rejects_of(out) == {
        "p0001": "refusal", "p0002": "meta_text", "p0003": "missing_words", "p0004": "too_short",
        "p0005": "exact_duplicate", "p0006": "near_duplicate",
    }
    good = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(s["id"] for s in good) == sorted(set(s.id for s in specs) - set(rejects_of(out)))
    first = next(s for s in good if s["id"] == "p0000")
    assert first["source"] == "fake-story-model" and first["prompt"] == specs[0].render()
    assert first["words"] == specs[0].words and first["features"] == ["dialogue"] and first["summary"] is None
    assert report.requests == 24 and report.prompt_tokens > 0 and report.completion_tokens > 0
    assert report.cost_usd == pytest.approx((report.prompt_tokens * 1.0 + report.completion_tokens * 2.0) / 1e6)
    assert report.estimated_cost_usd > 0 and report.stories_per_s > 0
    assert "complete" in report.summary()


def test_rerun_skips_everything_already_done(tmp_path):
    specs = make_specs(10)
    out = tmp_path / "s.jsonl"
    with FakeOpenAI(StoryWriter(specs, {"p0003": "Certainly! " + random_story("c", ())})) as server:
        generate_stories(specs, cfg(server), out, progress=False)
        n_calls = len(server.chat_requests)
        report = generate_stories(specs, cfg(server), out, progress=False)
        assert len(server.chat_requests) == n_calls  # rejected ids are not paid for twice either
    assert report.skipped_existing == 10 and report.written == 0 and report.status == "complete"
    assert len(ids_in(out)) == 9 and rejects_of(out) == {"p0003": "meta_text"}


def test_torn_last_line_is_repaired_on_resume(tmp_path):
    specs = make_specs(12)
    out = tmp_path / "s.jsonl"
    with FakeOpenAI(StoryWriter(specs)) as server:
        generate_stories(specs[:5], cfg(server), out, progress=False)
        with open(out, "a") as f:  # what a kill in the middle of a write leaves behind
            f.write('{"id": "p0005", "text": "Once upon a ti')
        report = generate_stories(specs, cfg(server), out, progress=False)
    ids = ids_in(out)  # every line parses
    assert sorted(ids) == [s.id for s in specs] and len(ids) == len(set(ids))
    assert report.skipped_existing == 5 and report.written == 7


def kill_generation_after(n_done: int, tmp_path: Path, c: LLMConfig, out: Path, n: int, processes: int = 1) -> int:
    """Run generate_stories(make_specs(n)) in a child Python, SIGKILL it once `n_done` stories are in
    `out`, and return how many were there when it died (asserting that was mid-run)."""
    script = textwrap.dedent(
        f"""
        import sys
        sys.path[:0] = [{str(REPO)!r}, {str(TESTS)!r}]
        from openai_server import make_specs
        from tinystories_lib.llm.generate import generate_stories
        from tinystories_lib.llm.client import LLMConfig
        if __name__ == "__main__":
            generate_stories(make_specs({n}), LLMConfig(**{c.to_dict()!r}), {str(out)!r}, progress=False,
                             processes={processes})
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(ids_in_safe(out)) < n_done and proc.poll() is None:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    killed_at = len(ids_in_safe(out))
    assert n_done <= killed_at < n, "the child should have been killed mid-run"
    return killed_at


def test_kill_mid_run_and_resume_gives_every_story_exactly_once(tmp_path):
    n = 60
    specs = make_specs(n)
    out = tmp_path / "killed.jsonl"
    with FakeOpenAI(StoryWriter(specs), latency_s=0.05) as server:
        c = cfg(server, max_concurrency=2)
        killed_at = kill_generation_after(10, tmp_path, c, out, n)
        report = generate_stories(specs, c, out, progress=False)
    ids = ids_in(out)
    assert sorted(ids) == sorted(s.id for s in specs) and len(ids) == n
    assert report.skipped_existing == killed_at and report.written == n - killed_at


def ids_in_safe(path: Path) -> list[str]:
    """Ids of the complete lines of a file another process is appending to."""
    if not path.exists():
        return []
    return [json.loads(x)["id"] for x in path.read_bytes().split(b"\n")[:-1] if x.strip()]


def test_sharded_generation_checks_duplicates_across_processes(tmp_path):
    specs = make_specs(24)
    for s in (specs[5], specs[6]):  # p0005 and p0006 copy p0000 (exactly, and but for one word)
        s.noun, s.verb, s.adjective = specs[0].noun, specs[0].verb, specs[0].adjective
    original = StoryWriter(specs)([{"content": specs[0].render()}])
    overrides = {
        "p0001": "I'm sorry, but I cannot help with that request. " * 10,
        "p0005": original,
        "p0006": original.rsplit(" ", 1)[0] + " moon.",
    }
    out = tmp_path / "stories.jsonl"
    with FakeOpenAI(StoryWriter(specs, overrides)) as server:
        report = generate_stories(specs, cfg(server, price_per_1m_input=1.0), out, progress=False, processes=2)
        assert len(server.chat_requests) == 24
    # p0000 and p0005 land in different processes (ids are dealt round-robin): one validator still sees both
    copies = {"p0000", "p0005", "p0006"}
    rejected = rejects_of(out)
    assert len(copies - set(rejected)) == 1 and {rejected[i] for i in copies & set(rejected)} <= {
        "exact_duplicate", "near_duplicate"}
    assert rejected["p0001"] == "refusal" and len(rejected) == 3
    ids = ids_in(out)
    assert sorted(ids + list(rejected)) == sorted(s.id for s in specs) and len(ids) == len(set(ids)) == 21
    assert report.status == "complete" and report.written == 21 and sum(report.rejected.values()) == 3
    assert report.requests == 24 and report.cost_usd > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stories.jsonl", "stories.jsonl.lock", "stories.rejects.jsonl"]
    again = generate_stories(specs, cfg(server), out, progress=False, processes=2)
    assert again.skipped_existing == 24 and again.written == 0


def test_sharded_kill_mid_run_and_resume_gives_every_story_exactly_once(tmp_path):
    """SIGKILL the parent of a 2-process run: its workers die with it, their shards stay on disk, and the
    next run merges them before asking for what is still missing."""
    n = 60
    specs = make_specs(n)
    out = tmp_path / "killed.jsonl"
    with FakeOpenAI(StoryWriter(specs), latency_s=0.1) as server:
        c = cfg(server, max_concurrency=2)
        kill_generation_after(10, tmp_path, c, out, n, processes=2)
        shards = sorted(tmp_path.glob("killed.shard-*.jsonl"))
        assert shards, "a killed sharded run leaves its shards on disk"
        time.sleep(0.5)
        sizes = [p.stat().st_size for p in shards]
        time.sleep(0.5)
        assert [p.stat().st_size for p in shards] == sizes, "a worker outlived its killed parent"
        on_disk = len(set(ids_in_safe(out)) | {i for p in shards for i in ids_in_safe(p)})
        report = generate_stories(specs, c, out, progress=False, processes=2)
    ids = ids_in(out)
    assert sorted(ids) == sorted(s.id for s in specs) and len(ids) == n
    assert report.skipped_existing == on_disk and report.written == n - on_disk
    assert not list(tmp_path.glob("killed.shard-*"))


def test_sharded_generation_needs_a_picklable_validator(tmp_path):
    with pytest.raises(TypeError, match="cannot be pickled"):
        generate_stories(make_specs(2), LLMConfig(base_url="http://127.0.0.1:9", model="m"), tmp_path / "s.jsonl",
                         progress=False, processes=2, validator=StoryValidator(forms=lambda w: {w}))


def test_budget_cap_stops_generation(tmp_path):
    specs = make_specs(20)
    out = tmp_path / "s.jsonl"
    # ~90 output tokens per story at $1000/1M = ~$0.09; max_tokens=100 reserves $0.10 per request.
    with FakeOpenAI(StoryWriter(specs)) as server:
        c = cfg(server, price_per_1m_output=1000.0, max_tokens=100, max_concurrency=1)
        report = generate_stories(specs, c, out, budget_usd=0.5, progress=False)
        calls = len(server.chat_requests)
    assert report.status == "budget_exceeded"
    assert report.cost_usd <= 0.5 and 1 <= report.written < 20
    assert calls == report.written and report.not_attempted == 20 - report.written
    assert len(ids_in(out)) == report.written


def test_failures_are_counted_and_retried_next_run(tmp_path):
    specs = make_specs(6)
    out = tmp_path / "s.jsonl"
    with FakeOpenAI(StoryWriter(specs)) as server:
        server.add_faults(Fault(status=400), Fault(status=401))
        report = generate_stories(specs, cfg(server, max_concurrency=1), out, progress=False)
        assert report.status == "incomplete" and report.failed == {"http_400": 1, "http_401": 1}
        assert report.written == 4 and len(report.failure_examples) == 2
        again = generate_stories(specs, cfg(server), out, progress=False)
    assert again.status == "complete" and again.written == 2
    assert sorted(ids_in(out)) == [s.id for s in specs]


def test_with_summary_asks_a_second_question(tmp_path):
    specs = make_specs(4)
    out = tmp_path / "s.jsonl"
    with FakeOpenAI(StoryWriter(specs)) as server:
        report = generate_stories(specs, cfg(server), out, progress=False, with_summary=True)
        summary_calls = [r for r in server.chat_requests if "summary" in r.json["messages"][0]["content"]]
    assert report.written == 4 and report.requests == 8 and len(summary_calls) == 4
    stories = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(s["summary"] == "A child has a small adventure and learns something." for s in stories)


def test_second_concurrent_run_is_refused(tmp_path):
    import fcntl

    out = tmp_path / "s.jsonl"
    with open(tmp_path / "s.jsonl.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(RuntimeError, match="already generating into"):
            generate_stories(make_specs(1), LLMConfig(base_url="http://127.0.0.1:9/v1", model="m"), out, progress=False)


def test_with_real_prompt_specs_if_available(tmp_path):
    prompts = pytest.importorskip("tinystories_lib.stories.prompts")
    if not hasattr(prompts, "sample_prompts"):
        pytest.skip("tinystories_lib.stories.prompts.sample_prompts not available yet")
    specs = prompts.sample_prompts(5, seed=0)
    out = tmp_path / "s.jsonl"
    with FakeOpenAI(StoryWriter(specs)) as server:
        report = generate_stories(specs, cfg(server), out, progress=False)
    assert report.written == 5, report.summary()
    first = next(s for s in map(json.loads, out.read_text().splitlines()) if s["id"] == specs[0].id)
    assert first["prompt"] == specs[0].render() and set(first["words"].values()) >= {specs[0].noun}


# ------------------------------------------------------------------------------------ Batch API


def test_batch_generation_end_to_end_and_idempotent(tmp_path):
    specs = make_specs(8)
    out = tmp_path / "b.jsonl"
    writer = StoryWriter(specs, {"p0002": "As an AI, I prefer not to. " * 10})
    with FakeOpenAI(writer, batch_polls=2, batch_fail_ids={"p0005"}) as server:
        c = cfg(server, price_per_1m_input=1.0, price_per_1m_output=2.0)
        report = generate_stories_batch(specs, c, out, poll_s=0.01)
        assert report.mode == "batch" and report.status == "incomplete"
        assert report.written == 6 and report.rejected == {"refusal": 1} and report.failed == {"http_500": 1}
        assert report.cost_usd == pytest.approx(0.5 * (report.prompt_tokens + 2 * report.completion_tokens) / 1e6)
        assert not list(tmp_path.glob("*.batch-*.json"))  # merged: no state left behind

        server.batch_fail_ids.clear()
        again = generate_stories_batch(specs, c, out, poll_s=0.01)
        resubmitted = [json.loads(x)["custom_id"] for x in server.files[server.batches[again.batch_ids[0]].input_file_id]["data"].decode().splitlines()]
        assert resubmitted == ["p0005"] and again.written == 1 and again.status == "complete"

        third = generate_stories_batch(specs, c, out, poll_s=0.01)
        assert third.skipped_existing == 8 and not third.batch_ids
        assert len(server.batches) == 2 and not server.chat_requests
    ids = ids_in(out)
    assert sorted(ids) == sorted(s.id for s in specs if s.id != "p0002") and len(ids) == len(set(ids))


def test_batch_generation_with_summaries_and_resume(tmp_path):
    specs = make_specs(5)
    out = tmp_path / "b.jsonl"
    with FakeOpenAI(StoryWriter(specs), batch_polls=3) as server:
        c = cfg(server)
        pending = generate_stories_batch(specs, c, out, poll_s=0.01, max_wait_s=0.015, with_summary=True)
        assert pending.status == "pending" and not out.exists() or not ids_in(out)
        assert (tmp_path / "b.jsonl.batch-stories.json").exists()
        report = generate_stories_batch(specs, c, out, poll_s=0.01, with_summary=True)
        assert report.written == 5 and report.status == "complete"
        assert len(server.batches) == 2  # stories resumed (not resubmitted), then summaries
    stories = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(s["summary"] for s in stories)


def test_batch_generation_budget_and_expired_batches(tmp_path):
    specs = make_specs(6)
    with FakeOpenAI(StoryWriter(specs), batch_polls=1, batch_final_status="expired") as server:
        too_dear = cfg(server, price_per_1m_output=1e5, max_tokens=100)
        report = generate_stories_batch(specs, too_dear, tmp_path / "a.jsonl", poll_s=0.01, budget_usd=0.01)
        assert report.status == "budget_exceeded" and report.not_attempted == 6 and not server.files

        report = generate_stories_batch(specs, cfg(server), tmp_path / "b.jsonl", poll_s=0.01)
    assert report.written == 3 and report.failed == {"missing_from_batch": 3} and report.status == "incomplete"


class FailingWriteValidator(StoryValidator):
    """Accepts stories until the `fail_at`-th, then raises as a full disk would while keeping it."""

    def __init__(self, fail_at: int):
        super().__init__()
        self.fail_at, self.added = fail_at, []

    def add(self, story_id: str, text: str) -> None:
        if len(self.added) + 1 == self.fail_at:
            raise OSError(28, "No space left on device")
        super().add(story_id, text)
        self.added.append(story_id)


def test_an_error_while_checking_a_reply_stops_the_run_and_nothing_is_lost(tmp_path):
    # Replies are checked and written just after their worker has sent its next request: an error there
    # must still stop the run with that error, and a rerun must finish the set exactly once.
    specs = make_specs(30)
    out = tmp_path / "s.jsonl"
    with FakeOpenAI(StoryWriter(specs), latency_s=0.02) as server:
        validator = FailingWriteValidator(fail_at=5)
        with pytest.raises(OSError, match="No space left"):
            generate_stories(specs, cfg(server, max_concurrency=4), out, progress=False, validator=validator)
        assert sorted(ids_in(out)) == sorted(validator.added) and len(validator.added) == 4
        assert len(server.chat_requests) < 30  # the workers stopped instead of spending the whole budget
        again = generate_stories(specs, cfg(server), out, progress=False)
    assert again.status == "complete" and again.skipped_existing == 4 and again.written == 26
    assert sorted(ids_in(out)) == sorted(s.id for s in specs)


def test_a_cancelled_run_keeps_every_story_it_accepted(tmp_path):
    import asyncio

    from tinystories_lib.llm.runner import agenerate_stories

    specs = make_specs(40)
    out = tmp_path / "s.jsonl"

    class CancelAfter(StoryValidator):
        task = None

        def add(self, story_id, text):
            super().add(story_id, text)
            self.added = getattr(self, "added", []) + [story_id]
            if len(self.added) == 6:
                self.task.cancel()  # as Ctrl-C does to asyncio.run's main task

    async def main(c):
        v = CancelAfter()
        v.task = asyncio.create_task(agenerate_stories(specs, c, out, progress=False, validator=v))
        with pytest.raises(asyncio.CancelledError):
            await v.task
        return v.added

    with FakeOpenAI(StoryWriter(specs), latency_s=0.02) as server:
        c = cfg(server, max_concurrency=8)
        added = asyncio.run(main(c))
        assert 6 <= len(added) < 40 and sorted(ids_in(out)) == sorted(added)
        again = generate_stories(specs, c, out, progress=False)
    assert again.skipped_existing == len(added) and again.written == 40 - len(added)
    assert sorted(ids_in(out)) == sorted(s.id for s in specs)


def test_cost_estimate_counts_only_what_is_left(tmp_path):
    specs = make_specs(10)
    config = LLMConfig(model="m", base_url="http://localhost:1", price_per_1m_input=1.0, price_per_1m_output=4.0,
                       max_tokens=500)
    out = tmp_path / "s.jsonl"
    todo, done, fresh = estimate_remaining_cost(specs, config, out)
    assert (todo, done) == (10, 0) and fresh > 10 * 500 * 4.0 / 1e6  # outputs at max_tokens, plus inputs
    out.write_text("".join(json.dumps({"id": s.id, "text": "x"}) + "\n" for s in specs[:3]))
    (tmp_path / "s.rejects.jsonl").write_text(json.dumps({"id": specs[3].id, "reason": "too_short"}) + "\n")
    todo, done, left = estimate_remaining_cost(specs, config, out, rejects_path=tmp_path / "s.rejects.jsonl")
    assert (todo, done) == (6, 4) and left == pytest.approx(fresh * 0.6, rel=0.05)
    assert estimate_remaining_cost(specs, config, out, rejects_path=tmp_path / "s.rejects.jsonl",
                                   batch=True)[2] == pytest.approx(left / 2)
    assert estimate_remaining_cost(specs, config, out, with_summary=True)[2] > left * 1.2
