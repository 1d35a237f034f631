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
    varying_judge_reply,
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


# ------------------------------------------------------------------------------------ repeats


def test_repeats_are_averaged_and_a_resume_pays_only_the_missing_repeats(tmp_path):
    from tinystories_lib.evals.grade_tables import agreement_table, judge_agreement

    cache = tmp_path / "judge_cache.jsonl"
    items = completions(4)
    with FakeOpenAI(varying_judge_reply()) as server:
        grades = LLMJudge(cfg(server), cache_path=cache, repeats=3).grade(items)
        assert len(server.chat_requests) == 4 * 3 * 2  # every repeat is a two-turn conversation of its own
        assert len(grades) == 4 and all(g.status == "ok" and g.extra["repeats"] == 3 for g in grades)
        for g in grades:
            reps = g.extra["repeat_scores"]
            assert len(reps) == 3
            assert g.scores == pytest.approx({d: sum(r[d] for r in reps) / 3 for d in EXPECTED_SCORES})
        graded = sorted(r[d] for g in grades for r in g.extra["repeat_scores"] for d in ("grammar",))
        assert graded == sorted([6.0, 7.0, 8.0] * 4)  # the judge varied, and every judgment is in a mean

        again = LLMJudge(cfg(server), cache_path=cache, repeats=3).grade(items)
        assert len(server.chat_requests) == 24 and [g.scores for g in again] == [g.scores for g in grades]
        assert all(g.extra["cached"] for g in again)
        more = LLMJudge(cfg(server), cache_path=cache, repeats=4).grade(items)  # only the 4th repeat is asked
        assert len(server.chat_requests) == 24 + 4 * 2
        assert all(len(g.extra["repeat_scores"]) == 4 for g in more)
        one = LLMJudge(cfg(server), cache_path=cache).grade(items)  # repeats 1: the first judgment, cached
        assert len(server.chat_requests) == 32
    assert [g.scores for g in one] == [g.extra["repeat_scores"][0] for g in grades]
    assert "repeat_scores" not in one[0].extra and judge_agreement(one) == []

    rows = {r["dimension"]: r for r in judge_agreement(grades)}
    assert list(rows) == ["grammar", "creativity", "consistency", "plot"]
    assert rows["consistency"]["sd"] == 0 and rows["consistency"]["identical"] == 1.0  # always 9
    for dim, row in rows.items():  # the same numbers computed here from the repeats
        groups = [[r[dim] for r in g.extra["repeat_scores"]] for g in grades]
        var = [sum((v - sum(x) / 3) ** 2 for v in x) / 2 for x in groups]
        assert row["n"] == 4 and row["repeats"] == 3
        assert row["sd"] == pytest.approx((sum(var) / 4) ** 0.5)
        assert row["within_1"] == sum(max(x) - min(x) <= 1 for x in groups) / 4
    assert rows["grammar"]["sd"] > 0 and "| grammar |" in agreement_table(list(rows.values()))


def test_agreement_statistic_by_hand():
    from tinystories_lib.evals.grade_tables import judge_agreement
    from tinystories_lib.evals.grades import Grade

    def grade(*values):
        reps = [{"grammar": v} for v in values]
        return Grade("m", "p", "k", "judge", {"grammar": sum(values) / len(values)},
                     extra={"repeat_scores": reps})

    (row,) = judge_agreement([grade(6, 8), grade(7, 7), grade(5, 5, 6), grade(9)])  # one judgment: not counted
    assert row["n"] == 3 and row["repeats"] == 3
    assert row["sd"] == pytest.approx(((2 + 0 + 1 / 3) / 3) ** 0.5)
    assert row["mean_range"] == pytest.approx(1.0) and row["within_1"] == pytest.approx(2 / 3)
    assert row["identical"] == pytest.approx(1 / 3)


def test_a_failing_repeat_leaves_the_mean_of_the_others_and_all_failing_is_a_failed_grade(tmp_path):
    items = completions(2)
    with FakeOpenAI(varying_judge_reply(unparseable_for="it 1")) as server:
        server.add_faults(Fault(status=400, message="scripted refusal"))  # the first request: c0's 1st repeat
        judge = LLMJudge(cfg(server, max_concurrency=1), cache_path=tmp_path / "c.jsonl", repeats=2, max_attempts=1)
        partly, bad = judge.grade(items)
    assert partly.status == "ok" and partly.extra["repeats_failed"] == 1 and len(partly.extra["repeat_scores"]) == 1
    assert partly.scores == partly.extra["repeat_scores"][0] and "scripted refusal" in partly.extra["repeat_errors"][0]
    assert bad.status == "failed" and bad.extra["repeats_failed"] == 2 and bad.extra["permanent"]
    assert all("unparseable" in e for e in bad.extra["repeat_errors"])


def test_a_judge_at_another_temperature_does_not_reuse_grades(tmp_path):
    cache = tmp_path / "c.jsonl"
    with FakeOpenAI(judge_reply("plain")) as server:
        LLMJudge(cfg(server), cache_path=cache).grade(completions(2))
        LLMJudge(cfg(server, temperature=0.0), cache_path=cache).grade(completions(2))
        assert len(server.chat_requests) == 4  # 0 is the default: the same judge
        warm = LLMJudge(cfg(server, temperature=0.7), cache_path=cache).grade(completions(2))
        assert len(server.chat_requests) == 8
        assert {r.json["temperature"] for r in server.chat_requests[4:]} == {0.7}
    assert all(g.extra["temperature"] == 0.7 for g in warm)


def test_judge_summary_names_the_snapshot_temperature_and_failures(tmp_path):
    from tinystories_lib.evals.grade_tables import judge_report
    from tinystories_lib.stages.grading import judge_summary

    cache = tmp_path / "c.jsonl"
    with FakeOpenAI(varying_judge_reply(unparseable_for="it 2"), served_model="judge-model-2024-05-13") as server:
        for _ in range(2):  # the second run retries the failure: 2 attempts of max_attempts 2, then for good
            judge = LLMJudge(cfg(server), cache_path=cache, repeats=2, max_attempts=2)
            grades = judge.grade(completions(3))
        assert judge_summary(judge, grades)["permanently_failed"] == 1
        cached = LLMJudge(cfg(server), cache_path=cache, repeats=2, max_attempts=2)
        grades = cached.grade(completions(3))  # asks nothing, still knows who judged
        n = len(server.chat_requests)
        summary = judge_summary(cached, grades)
        assert len(server.chat_requests) == n and cached.snapshot is None
    assert summary["snapshots"] == ["judge-model-2024-05-13"] and summary["temperatures"] == [0.0]
    assert summary["repeats"] == 2 and summary["n"] == 3 and summary["failed"] == 1
    assert summary["permanently_failed"] == 1
    (failure,) = summary["failures"]
    assert "unparseable judge reply" in failure["error"] and failure["count"] == 1 and failure["permanent"] == 1
    shown = judge_report(summary)
    assert "`judge-model-2024-05-13`" in shown and "temperature 0" in shown and "judged 2 times" in shown
    assert "1 failed, of which 1 for good" in shown and "unparseable judge reply" in shown
    assert "| grammar |" in shown  # the agreement table


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


def test_grade_batch_splits_under_the_configs_batch_limits(tmp_path):
    with FakeOpenAI(judge_reply("plain"), batch_polls=1) as server:
        grades = LLMJudge(cfg(server, batch_max_requests=2), cache_path=tmp_path / "c.jsonl").grade_batch(
            completions(3), poll_s=0.01)
        sizes = [len(b.lines) for b in server.batches.values()]
    assert sizes == [2, 1, 2, 1] and all(g.status == "ok" for g in grades)  # turn 1 in two files, then turn 2


def test_grade_batch_with_repeats_then_cached_online(tmp_path):
    cache = tmp_path / "c.jsonl"
    with FakeOpenAI(varying_judge_reply(), batch_polls=1) as server:
        grades = LLMJudge(cfg(server), cache_path=cache, repeats=2).grade_batch(completions(3), poll_s=0.01)
        sizes = [len(b.lines) for b in server.batches.values()]
        again = LLMJudge(cfg(server), cache_path=cache, repeats=2).grade(completions(3))
        assert not server.chat_requests
    assert sizes == [6, 6] and all(len(g.extra["repeat_scores"]) == 2 for g in grades)
    assert [g.scores for g in again] == [g.scores for g in grades]


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
