"""judge.py (the paper's GPT-Eval) against a local OpenAI-compatible server, plus the key-leak check."""

from __future__ import annotations

import json
import logging

import pytest

pytest.importorskip("openai")

from openai_server import (  # noqa: E402
    GRADE_FORMATS,
    JUDGE_ASSESSMENT,
    FakeOpenAI,
    Fault,
    StoryWriter,
    judge_reply,
    make_specs,
)

from tinystories_lib.evals.grades import Completion  # noqa: E402
from tinystories_lib.evals.judge import LLMJudge
from tinystories_lib.evals.judge_prompt import parse_age_group, parse_grade  # noqa: E402
from tinystories_lib.llm.client import LLMConfig  # noqa: E402

# The paper's prompt, typed out here independently of judge.py so a drift in the module shows up.
PAPER_TURN1_INTRO = (
    "the following exercise, the student is given a beginning of a story. The student needs to complete it "
    "into a full story. The exercise tests the student's language abilities and creativity. The symbol *** "
    "marks the separator between the prescribed beginning and the student's completion:"
)
PAPER_TURN1_QUESTION = (
    "Please provide your general assessment about the part written by the student (the one after the *** "
    "symbol). Is it gramatically correct? Is it consistent with the beginning of the story? Pay special "
    "attention to whether the student manages to complete the sentence which is split in the middle by the "
    "separator ***."
)
PAPER_TURN2 = (
    "Now, grade the student's completion in terms of grammar, creativity, consistency with the story's "
    "beginning and whether the plot makes sense. Moreover, please provide your best guess of what the age of "
    "the student might be, as reflected from the completion. Choose from possible age groups: A: 3 or under. "
    "B: 4-5. C: 6-7. D: 8-9. E: 10-12. F: 13-16."
)
EXPECTED_SCORES = {"grammar": 8.0, "creativity": 7.0, "consistency": 9.0, "plot": 6.0}


def cfg(server: FakeOpenAI, model: str = "judge-model", **kw) -> LLMConfig:
    return LLMConfig(**{"base_url": server.base_url, "model": model, "backoff_base_s": 0.01, "max_concurrency": 4, **kw})


def completions(n: int = 3) -> list[Completion]:
    return [
        Completion(model="h64-l2", prompt_id=f"e{i}", beginning=f"Tom had a red ball. One day he threw it and it {i}",
                   completion=" rolled far away. Tom ran after it and laughed.", step=100, sample_index=i)
        for i in range(n)
    ]


# ------------------------------------------------------------------------------------ the conversation


def test_two_turns_are_the_papers_prompt_exactly(tmp_path):
    c = completions(1)[0]
    with FakeOpenAI(judge_reply("plain")) as server:
        judge = LLMJudge(cfg(server), cache_path=tmp_path / "cache.jsonl")
        (grade,) = judge.grade([c])
        first, second = (r.json["messages"] for r in server.chat_requests)
    turn1 = f"{PAPER_TURN1_INTRO}\n\n{c.beginning}***{c.completion}\n\n{PAPER_TURN1_QUESTION}"
    assert first == [{"role": "user", "content": turn1}]
    assert second == [
        {"role": "user", "content": turn1},
        {"role": "assistant", "content": JUDGE_ASSESSMENT},
        {"role": "user", "content": PAPER_TURN2},
    ]
    assert grade.status == "ok" and grade.scores == EXPECTED_SCORES and grade.age_group == "B"
    assert (grade.model, grade.prompt_id, grade.completion_key, grade.step) == ("h64-l2", "e0", c.key, 100)
    assert grade.grader == "llm-judge:judge-model" and judge.is_llm


@pytest.mark.parametrize("fmt", sorted(GRADE_FORMATS))
def test_reply_formats_end_to_end(fmt):
    with FakeOpenAI(judge_reply(fmt)) as server:
        grades = LLMJudge(cfg(server)).grade(completions(2))
        assert len(server.chat_requests) == 4  # no reminder needed
    assert all(g.status == "ok" and g.scores == EXPECTED_SCORES and g.age_group == "B" for g in grades)


@pytest.mark.parametrize(
    "reply, scores, age",
    [
        ("Grammar: 8/10\nCreativity: 7 out of 10\nConsistency: 9\nPlot: 6.5/10\nAge group: C", (8, 7, 9, 6.5), "C"),
        ("grammar - 8\ncreativity - 7\nconsistency - 9\nplot - 6\nB: 4-5", (8, 7, 9, 6), "B"),
        ("**Grammar**: 8\n**Creativity**: 7\n**Consistency**: 9\n**Plot**: 6\n**Age group**: (D)", (8, 7, 9, 6), "D"),
        ("Grammar (1-10): 9\nCreativity (1-10): 5\nConsistency (1-10): 4\nPlot (1-10): 3\nage: 6-7", (9, 5, 4, 3), "C"),
        ('{"Grammar": 8, "Creativity": 7, "Consistency": 9, "Plot": 6, "Age group": "E"}', (8, 7, 9, 6), "E"),
        ("The grammar is good: 8/10. Creativity: 4/5. Consistency with the beginning: 9/10. "
         "Plot makes sense: 6/10.\nThe student is probably 10 to 12 years old.", (8, 8, 9, 6), "E"),
        ("Choose from possible age groups: A: 3 or under. B: 4-5. C: 6-7. D: 8-9. E: 10-12. F: 13-16.\n"
         "Grammar: 8\nCreativity: 7\nConsistency: 9\nPlot: 6\nMy answer: F: 13-16", (8, 7, 9, 6), "F"),
    ],
)
def test_parse_grade_formats(reply, scores, age):
    parsed = parse_grade(reply)
    assert parsed.missing == []
    assert tuple(parsed.scores[d] for d in ("grammar", "creativity", "consistency", "plot")) == scores
    assert parsed.age_group == age


def test_parse_reports_what_is_missing():
    assert parse_grade("Lovely story!").missing == ["grammar", "creativity", "consistency", "plot", "age_group"]
    assert parse_grade("Grammar: 15/10\nCreativity: 7\nConsistency: 9\nPlot: 6\nAge: B").missing == ["grammar"]
    assert parse_age_group("Age group: A") == "A" and parse_age_group("I'd say (B).") == "B"
    assert parse_age_group("A nice story.") is None


def test_unparseable_reply_is_reminded_once_then_failed(tmp_path):
    cache = tmp_path / "cache.jsonl"
    with FakeOpenAI(judge_reply(unparseable=True)) as server:
        judge = LLMJudge(cfg(server), cache_path=cache)
        (grade,) = judge.grade(completions(1))
        third = server.chat_requests[2].json["messages"]
        assert len(server.chat_requests) == 3  # turn 1, turn 2, one format reminder
        assert third[-2]["role"] == "assistant" and "Age group: <one letter" in third[-1]["content"]
        assert grade.status == "failed" and "unparseable" in grade.reason and "grammar" in grade.reason
        assert grade.scores == {} and len(grade.extra["replies"]) == 3
        judge.grade(completions(1))  # a re-run asks again, from turn 2: turn 1's reply is kept
        assert len(server.chat_requests) == 5


def test_reminder_can_recover_a_grade():
    def reply(messages):
        if len(messages) == 1:
            return JUDGE_ASSESSMENT
        return "It was fine." if len(messages) == 3 else GRADE_FORMATS["plain"]

    with FakeOpenAI(reply) as server:
        (grade,) = LLMJudge(cfg(server)).grade(completions(1))
        assert len(server.chat_requests) == 3
    assert grade.status == "ok" and grade.scores == EXPECTED_SCORES


def test_api_failure_becomes_a_failed_grade_not_a_gap():
    with FakeOpenAI(judge_reply("plain")) as server:
        server.add_faults(Fault(status=400))
        grades = LLMJudge(cfg(server, max_concurrency=1)).grade(completions(2))
    assert [g.status for g in grades] == ["failed", "ok"]
    assert grades[0].reason.startswith("llm error: http_400")


# ------------------------------------------------------------------------------------ cache, usage, budget


def test_cache_prevents_repeat_calls(tmp_path):
    cache = tmp_path / "judge_cache.jsonl"
    items = completions(3) + completions(1)  # a repeated completion is graded once
    with FakeOpenAI(judge_reply("markdown")) as server:
        judge = LLMJudge(cfg(server, price_per_1m_input=1.0, price_per_1m_output=4.0), cache_path=cache)
        grades = judge.grade(items)
        calls = len(server.chat_requests)
        assert calls == 6 and len(grades) == 4 and grades[3].scores == grades[0].scores
        assert judge.usage.requests == 6
        assert judge.usage.cost_usd == pytest.approx((judge.usage.prompt_tokens + 4 * judge.usage.completion_tokens) / 1e6)

        again = LLMJudge(cfg(server), cache_path=cache).grade(items)  # a fresh process, same cache file
        assert len(server.chat_requests) == calls
        assert [g.scores for g in again] == [g.scores for g in grades] and all(g.extra["cached"] for g in again)

        LLMJudge(cfg(server, model="other-judge"), cache_path=cache).grade(items[:1])  # other judge: new key
        assert len(server.chat_requests) == calls + 2
    records = [json.loads(line) for line in cache.read_text().splitlines()]
    assert {r["judge_model"] for r in records} == {"judge-model", "other-judge"}
    grades = [r for r in records if r.get("kind") != "turn1"]
    assert len(grades) == 4 and all(r["prompt_version"] and len(r["replies"]) == 2 for r in grades)


def test_budget_cap_turns_the_rest_into_failed_grades():
    with FakeOpenAI(judge_reply("plain")) as server:
        c = cfg(server, price_per_1m_output=1000.0, max_tokens=20, max_concurrency=1)
        judge = LLMJudge(c, budget_usd=0.1)
        grades = judge.grade(completions(6))
    assert len(grades) == 6 and judge.usage.cost_usd <= 0.1
    assert any(g.status == "ok" for g in grades)
    failed = [g for g in grades if g.status == "failed"]
    assert failed and all("budget" in g.reason for g in failed)


def test_instruct_completions_get_an_instruction_following_grade():
    instructions = {"e0": "Words: ball, roll, red. Features: Dialogue."}
    with FakeOpenAI(judge_reply("plain", instruction_score="\nInstruction following: 9/10")) as server:
        grades = LLMJudge(cfg(server)).grade(completions(2), instructions=instructions)
        turn1 = next(m[0]["content"] for m in (r.json["messages"] for r in server.chat_requests) if "it 0" in m[0]["content"])
        turn2s = [r.json["messages"][-1]["content"] for r in server.chat_requests if len(r.json["messages"]) == 3]
    assert instructions["e0"] in turn1 and turn1.startswith(PAPER_TURN1_INTRO)
    assert sorted(t == PAPER_TURN2 for t in turn2s) == [False, True]  # only e0 is asked the extra question
    assert grades[0].scores["instruction_following"] == 9.0 and "instruction_following" not in grades[1].scores


# ------------------------------------------------------------------------------------ Batch API


def test_grade_batch_two_rounds_then_cached(tmp_path):
    cache = tmp_path / "cache.jsonl"
    replies = {"n": 0}

    def reply(messages):  # one turn-2 reply is unreadable: it gets an online format reminder
        if len(messages) == 1:
            return JUDGE_ASSESSMENT
        if len(messages) == 3 and "it 1" in messages[0]["content"]:
            replies["n"] += 1
            return "Nice."
        return GRADE_FORMATS["json"]

    items = completions(3)
    with FakeOpenAI(reply, batch_polls=2) as server:
        judge = LLMJudge(cfg(server), cache_path=cache)
        grades = judge.grade_batch(items, poll_s=0.01)
        batches = list(server.batches.values())
        assert len(batches) == 2  # turn 1, then turn 2
        turn2_lines = [json.loads(x) for x in server.files[batches[1].input_file_id]["data"].decode().splitlines()]
        assert all(line["body"]["messages"][1] == {"role": "assistant", "content": JUDGE_ASSESSMENT}
                   for line in turn2_lines)
        assert all(line["body"]["messages"][2]["content"] == PAPER_TURN2 for line in turn2_lines)
        assert len(server.chat_requests) == 1 and replies["n"] == 1  # just the reminder
        assert all(g.status == "ok" and g.scores == EXPECTED_SCORES for g in grades)
        assert judge.usage.batch_requests == 6
        assert not list(tmp_path.glob("*.batch-*.json"))

        LLMJudge(cfg(server), cache_path=cache).grade(items)
        assert len(server.chat_requests) == 1 and len(server.batches) == 2


# ------------------------------------------------------------------------------------ secrets


def test_api_key_never_leaks(tmp_path, monkeypatch, caplog, capsys):
    """The key reaches the server (as a header) and nowhere else: files, reports, reprs, logs."""
    secret = "sk-test-SECRET-123"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    caplog.set_level(logging.DEBUG)  # includes openai's and httpx's own debug logging
    from tinystories_lib.llm.batch import generate_stories_batch
    from tinystories_lib.llm.generate import generate_stories

    specs = make_specs(6)
    writer = StoryWriter(specs, {"p0001": "I'm sorry, I cannot do that."})
    judge_fn = judge_reply("plain")

    def reply(messages):
        return judge_fn(messages) if "student" in messages[0]["content"] else writer(messages)

    with FakeOpenAI(reply, batch_polls=1) as server:
        server.add_faults(Fault(status=429, retry_after=0), Fault(status=401))
        c = LLMConfig(base_url=server.base_url, model="m", backoff_base_s=0.01, max_concurrency=1)
        reports = [
            generate_stories(specs, c, tmp_path / "online.jsonl", progress=True, with_summary=True),
            generate_stories_batch(specs, c, tmp_path / "batch.jsonl", poll_s=0.01),
        ]
        judge = LLMJudge(c, cache_path=tmp_path / "judge.jsonl")
        grades = judge.grade(completions(2)) + judge.grade_batch(completions(4), poll_s=0.01)
        assert all(r.headers.get("authorization") == f"Bearer {secret}" for r in server.requests)
    out, err = capsys.readouterr()
    texts = [out, err, caplog.text, repr(c), repr(judge), repr(judge.usage), json.dumps(c.to_dict())]
    texts += [r.summary() + repr(r) + json.dumps(r.to_dict()) for r in reports]
    texts += [repr(g) for g in grades]
    texts += [p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file()]
    assert len(caplog.records) > 10 and reports[0].failed  # the paths that log and report did run
    assert not [t for t in texts if secret in t or "SECRET" in t]


def test_grade_batch_pending_then_resumed(tmp_path):
    from tinystories_lib.llm.errors import BatchPending

    cache = tmp_path / "cache.jsonl"
    with FakeOpenAI(judge_reply("plain"), batch_polls=3) as server:
        judge = LLMJudge(cfg(server), cache_path=cache)
        with pytest.raises(BatchPending, match="rerun"):
            judge.grade_batch(completions(2), poll_s=0.01, max_wait_s=0.015)
        assert (tmp_path / "cache.jsonl.batch-turn1.json").exists()
        grades = LLMJudge(cfg(server), cache_path=cache).grade_batch(completions(2), poll_s=0.01)
        assert len(server.batches) == 2  # turn 1 resumed, not resubmitted; then turn 2
    assert all(g.status == "ok" for g in grades)
