"""Issue 18's faults of the LLM layer, each against the local OpenAI-compatible server with the real `openai`
client: reasoning blocks, cut-off replies, `max_tokens` refused by reasoning models, the judge's temperature
and model snapshot, what a resumed grading pays for, and two judges on one cache."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

import pytest

pytest.importorskip("openai")

from openai_server import (  # noqa: E402
    GRADE_FORMATS,
    JUDGE_ASSESSMENT,
    Answer,
    FakeOpenAI,
    Fault,
    StoryWriter,
    judge_reply,
    make_specs,
    random_story,
)

from tinystories_lib.evals.grades import Completion  # noqa: E402
from tinystories_lib.evals.judge import LLMJudge  # noqa: E402
from tinystories_lib.evals.judge_prompt import parse_grade  # noqa: E402
from tinystories_lib.llm.client import LLMClient, LLMConfig, run_async, strip_reasoning  # noqa: E402
from tinystories_lib.llm.generate import generate_stories  # noqa: E402
from tinystories_lib.llm.summaries import summarize_stories  # noqa: E402
from tinystories_lib.locks import ArtifactBusy  # noqa: E402
from tinystories_lib.stories.records import Story  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXPECTED = {"grammar": 8.0, "creativity": 7.0, "consistency": 9.0, "plot": 6.0}
DRAFT = "<think>Grammar: 3/10 Creativity: 2/10 Consistency: 2/10 Plot: 2/10 Age group: A. Let me reconsider.</think>\n"


def cfg(server: FakeOpenAI, model: str = "judge-model", **kw) -> LLMConfig:
    return LLMConfig(**{"base_url": server.base_url, "model": model, "backoff_base_s": 0.01, "max_concurrency": 4,
                        **kw})


def completions(n: int) -> list[Completion]:
    return [Completion(model="h64-l2", prompt_id=f"e{i}", beginning=f"Tom had a red ball. One day it {i}",
                       completion=" rolled away. Tom ran after it.", step=100, sample_index=i) for i in range(n)]


def chat(config: LLMConfig, n: int = 1, **kw) -> list:
    async def go():
        async with LLMClient(config) as llm:
            return [await llm.chat([{"role": "user", "content": "hi"}], **kw) for _ in range(n)]

    return run_async(go())


def grade_records(cache: Path) -> list[dict]:
    return [r for r in map(json.loads, cache.read_text().splitlines()) if r.get("kind") != "turn1"]


# ------------------------------------------------------------------------------------ 1. reasoning blocks


def test_strip_reasoning_forms():
    assert strip_reasoning("<think>plan</think>\n\nOnce upon a time.") == "Once upon a time."
    assert strip_reasoning("<reasoning>a\nb</reasoning>Answer") == "Answer"
    assert strip_reasoning("<think>cut off while thinking") == ""  # unclosed leading block: no answer
    assert strip_reasoning("plan, the template opened the block</think>Answer") == "Answer"
    assert strip_reasoning("Tom said <think> is a word.") == "Tom said <think> is a word."


def test_grades_inside_a_think_block_are_not_read():
    # Old parser: grammar 3 (the draft inside the block came first).
    parsed = parse_grade(DRAFT + GRADE_FORMATS["plain"])
    assert parsed.scores == EXPECTED and parsed.age_group == "B" and not parsed.missing
    assert parse_grade("<think>Grammar: 3/10 Creativity: 2/10 Consistency: 2 Plot: 2 Age group: A").missing


def test_judge_reads_past_the_reasoning_and_does_not_send_it_back():
    def reply(messages):
        return "<think>hmm</think>" + JUDGE_ASSESSMENT if len(messages) == 1 else DRAFT + GRADE_FORMATS["plain"]

    with FakeOpenAI(reply) as server:
        (grade,) = LLMJudge(cfg(server)).grade(completions(1))
        turn2 = server.chat_requests[1].json["messages"]
    assert grade.status == "ok" and grade.scores == EXPECTED
    assert turn2[1] == {"role": "assistant", "content": JUDGE_ASSESSMENT}


# ------------------------------------------------------------------------------------ 2. cut-off stories


def test_cut_off_and_reasoning_only_stories_are_rejected_and_think_blocks_dropped(tmp_path):
    specs = make_specs(5)
    full = StoryWriter(specs)
    story = {s.id: full([{"content": s.render()}]) for s in specs}
    writer = StoryWriter(specs, {
        "p0001": Answer(story["p0001"], finish_reason="length"),  # reads fine; its end is missing
        "p0002": "<think>The words are ball and run; a short plan.</think>\n" + story["p0002"],
        "p0003": "<think>I should write about a ball that",  # cut off while thinking
    })
    out = tmp_path / "s.jsonl"
    with FakeOpenAI(writer) as server:
        report = generate_stories(specs, cfg(server, model="story-model"), out, progress=False)
    rejects = {r["id"]: r for r in map(json.loads, (tmp_path / "s.rejects.jsonl").read_text().splitlines())}
    assert {k: r["reject_reason"] for k, r in rejects.items()} == {"p0001": "cut_off", "p0003": "reasoning_only"}
    assert "max_tokens" in rejects["p0001"]["reject_detail"]
    assert report.rejected == {"cut_off": 1, "reasoning_only": 1} and report.written == 3
    kept = {r["id"]: r["text"] for r in map(json.loads, out.read_text().splitlines())}
    assert kept["p0002"] == story["p0002"]  # the block is gone, the story kept


def test_cut_off_summaries_are_rejected_not_kept(tmp_path):
    specs = make_specs(3)
    writer = StoryWriter(specs)

    def reply(messages):
        content = messages[-1]["content"]
        if "summary" not in content:
            return writer(messages)
        if specs[0].noun + "s" in content and specs[0].verb + "ed" in content:  # p0000's story
            return Answer("A child plays with a ball and then", finish_reason="length")
        return "<think>short</think>A child has a small adventure."

    out = tmp_path / "s.jsonl"
    with FakeOpenAI(reply) as server:
        report = generate_stories(specs, cfg(server, model="story-model"), out, progress=False, with_summary=True)
    assert report.rejected == {"summary_cut_off": 1} and report.written == 2
    assert {json.loads(x)["summary"] for x in out.read_text().splitlines()} == {"A child has a small adventure."}

    stories = [Story(id=f"s{i}", text=random_story(f"s{i}"), source="file:x") for i in range(3)]

    def summarizer(messages):
        if stories[0].text in messages[-1]["content"]:
            return Answer("A child", finish_reason="length")
        return "<think>easy</think>A child has a day."

    with FakeOpenAI(summarizer) as server:
        done, rep = summarize_stories(stories, cfg(server, model="m"), tmp_path / "sum.jsonl")
    assert done == {"s1": "A child has a day.", "s2": "A child has a day."}
    assert rep["rejected"] == {"cut_off": 1} and rep["written"] == 2


# ------------------------------------------------------------------------------------ 3. max_completion_tokens


def test_token_param_auto_picks_max_completion_tokens_for_reasoning_models():
    fields = {m: LLMConfig(base_url=None, model=m).max_tokens_field
              for m in ("o1", "o3-mini", "o4-mini", "gpt-5", "gpt-5.1-mini", "openai/o3", "gpt-4o", "llama3", "qwen3")}
    assert {m for m, f in fields.items() if f == "max_completion_tokens"} == {
        "o1", "o3-mini", "o4-mini", "gpt-5", "gpt-5.1-mini", "openai/o3"}
    assert LLMConfig(base_url=None, model="gpt-5", token_param="max_tokens").max_tokens_field == "max_tokens"
    with pytest.raises(ValueError, match="token_param"):
        LLMConfig(base_url=None, model="m", token_param="max_new_tokens")
    with FakeOpenAI() as server:
        chat(cfg(server, model="o4-mini", max_tokens=50))
        body = server.chat_requests[0].json
    assert body["max_completion_tokens"] == 50 and "max_tokens" not in body


def test_a_server_refusing_max_tokens_gets_max_completion_tokens_once(caplog):
    with FakeOpenAI(refuse_max_tokens=True) as server:
        results = chat(cfg(server, model="my-azure-deployment", max_tokens=50), n=2)
        sent = [sorted(k for k in r.json if "tokens" in k) for r in server.chat_requests]
    assert all(r.text for r in results)
    assert sent == [["max_tokens"], ["max_completion_tokens"], ["max_completion_tokens"]]  # switched once, kept
    assert "max_completion_tokens" in caplog.text


# ------------------------------------------------------------------------------------ 5. temperature, snapshot


def test_judge_grades_at_temperature_0_unless_configured():
    with FakeOpenAI(judge_reply("plain")) as server:
        LLMJudge(cfg(server)).grade(completions(1))
        LLMJudge(cfg(server, temperature=0.3)).grade(completions(1))
        LLMJudge(cfg(server, model="o3-mini")).grade(completions(1))  # takes only its default
        sent = [r.json.get("temperature", "unset") for r in server.chat_requests]
    assert sent == [0.0, 0.0, 0.3, 0.3, "unset", "unset"]


def test_snapshot_is_recorded_and_a_new_snapshot_regrades(tmp_path, caplog):
    cache = tmp_path / "cache.jsonl"
    with FakeOpenAI(judge_reply("plain"), served_model="judge-model-2024-05-13") as server:
        grades = LLMJudge(cfg(server), cache_path=cache).grade(completions(2))
        assert len(server.chat_requests) == 4
        assert all(g.extra["judge_snapshot"] == "judge-model-2024-05-13" for g in grades)
        LLMJudge(cfg(server), cache_path=cache).grade(completions(3))  # same snapshot: only the new one is paid
        assert len(server.chat_requests) == 6

        server.served_model = "judge-model-2024-08-06"  # the alias now points at a newer model
        with caplog.at_level(logging.WARNING):
            grades = LLMJudge(cfg(server), cache_path=cache).grade(completions(4))
        assert len(server.chat_requests) == 6 + 4 * 2  # the new one, then the 3 cached ones again
    assert {g.extra["judge_snapshot"] for g in grades} == {"judge-model-2024-08-06"}
    assert "3 cached grades came from another snapshot" in caplog.text
    snapshots = [r["judge_snapshot"] for r in grade_records(cache)]
    assert snapshots.count("judge-model-2024-05-13") == 3 and snapshots.count("judge-model-2024-08-06") == 4


# ------------------------------------------------------------------------------------ 6. what a resume pays


def test_failed_grades_are_retried_a_bounded_number_of_times_paying_only_turn_2(tmp_path):
    cache = tmp_path / "cache.jsonl"
    with FakeOpenAI(judge_reply(unparseable=True)) as server:
        n = []
        for _ in range(4):
            (grade,) = LLMJudge(cfg(server), cache_path=cache).grade(completions(1))
            n.append(len(server.chat_requests))
    # turn 1 + turn 2 + reminder; then turn 2 + reminder (turn 1 kept) twice; then nothing.
    assert n == [3, 5, 7, 7]
    assert grade.status == "failed" and "unparseable" in grade.reason and "failed 3 times" in grade.reason
    assert grade.extra["cached"]


_CHILD = """
import json, sys
from tinystories_lib.evals.grades import Completion
from tinystories_lib.evals.judge import LLMJudge
from tinystories_lib.llm.client import LLMConfig
base_url, cache, items = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
config = LLMConfig(base_url=base_url, model="judge-model", max_concurrency=4, timeout_s=60)
LLMJudge(config, cache_path=cache).grade([Completion(**c) for c in items])
"""


def test_a_second_judge_is_refused_and_a_killed_grading_pays_only_turn_2_on_resume(tmp_path):
    cache, items = tmp_path / "cache.jsonl", completions(3)
    release = threading.Event()
    plain = judge_reply("plain")

    def reply(messages):
        if len(messages) > 1:
            release.wait(30)  # turn 2 hangs till the first judge is killed
        return plain(messages)

    with FakeOpenAI(reply) as server:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        child = subprocess.Popen([sys.executable, "-c", _CHILD, server.base_url, str(cache),
                                  json.dumps([asdict(c) for c in items])], env=env, cwd=ROOT)
        try:
            deadline = time.monotonic() + 60
            while sum(len(r.json["messages"]) > 1 for r in server.chat_requests) < 3:  # every turn 1 answered
                assert child.poll() is None and time.monotonic() < deadline, "the first judge did not start"
                time.sleep(0.05)
            time.sleep(0.2)  # the turn-1 records are written as soon as their replies arrive
            before = len(server.chat_requests)
            with pytest.raises(ArtifactBusy, match=f"process {child.pid} is already grading with"):
                LLMJudge(cfg(server), cache_path=cache).grade(items)
            assert len(server.chat_requests) == before  # the second judge paid nothing
        finally:
            child.kill()
            child.wait()
        release.set()
        grades = LLMJudge(cfg(server), cache_path=cache).grade(items)
        resumed = server.chat_requests[before:]
    assert all(g.status == "ok" and g.scores == EXPECTED for g in grades)
    assert len(resumed) == 3 and all(len(r.json["messages"]) == 3 for r in resumed)  # turn 2 only


def test_batch_grading_reuses_a_kept_turn_1_reply(tmp_path):
    cache = tmp_path / "cache.jsonl"
    with FakeOpenAI(judge_reply("plain"), batch_polls=1) as server:
        server.add_faults(Fault(), Fault(status=401, message="key revoked"))  # turn 1 ok, turn 2 refused
        (grade,) = LLMJudge(cfg(server, max_concurrency=1), cache_path=cache).grade(completions(1))
        assert grade.status == "failed" and "http_401" in grade.reason
        (grade,) = LLMJudge(cfg(server), cache_path=cache).grade_batch(completions(1), poll_s=0.01)
        assert len(server.batches) == 1  # turn 2 only: turn 1's reply was kept
        (line,) = map(json.loads, server.files[next(iter(server.batches.values())).input_file_id]["data"].splitlines())
    assert grade.status == "ok" and line["body"]["messages"][1]["content"] == JUDGE_ASSESSMENT
