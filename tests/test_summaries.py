"""Summaries for stories that have none, from a local OpenAI-compatible server (notebook 07's Summary field)."""

from __future__ import annotations

import pytest

pytest.importorskip("openai")

from tests.openai_server import FakeOpenAI  # noqa: E402
from tinystories_lib.llm.client import LLMConfig  # noqa: E402
from tinystories_lib.llm.summaries import summarize_stories  # noqa: E402
from tinystories_lib.runs import Run  # noqa: E402
from tinystories_lib.stories.records import Story  # noqa: E402
from tinystories_lib.stories.storyteller import tell_stories  # noqa: E402

SECRET = "sk-test-summaries-123456"


def _summary(messages) -> str:
    story = messages[-1]["content"].split("Story:\n", 1)[1]
    return f"  A story that starts with {story.split()[0]}.  "


def _plain(n: int) -> list[Story]:
    return [Story(id=s.id, text=s.text, source="file:plain.txt") for s in tell_stories(n, seed=4)]


def test_each_story_is_summarised_once_and_a_rerun_pays_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    stories = _plain(12)
    with FakeOpenAI(reply=_summary) as server:
        cfg = LLMConfig(base_url=server.base_url, model="fake", max_concurrency=4)
        first, report = summarize_stories(stories[:8], cfg, tmp_path / "s.jsonl")
        assert report["written"] == 8 and len(server.chat_requests) == 8
        both, report = summarize_stories(stories, cfg, tmp_path / "s.jsonl")  # 8 done before, 4 new
        assert report["done_before"] == 8 and report["written"] == 4 and len(server.chat_requests) == 12
    assert set(both) == {s.id for s in stories}
    assert both[stories[0].id] == f"A story that starts with {stories[0].text.split()[0]}."  # one line, trimmed
    assert SECRET not in (tmp_path / "s.jsonl").read_text()


def test_a_dead_endpoint_is_counted_and_retried_next_time(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    cfg = LLMConfig(base_url="http://127.0.0.1:9/v1", model="fake", max_concurrency=3, timeout_s=2, max_retries=1)
    summaries, report = summarize_stories(_plain(3), cfg, tmp_path / "s.jsonl")
    assert summaries == {} and report["failed"] == 3 and report["failure_examples"]
    assert not (tmp_path / "s.jsonl").exists() or not (tmp_path / "s.jsonl").read_text()


def test_plain_stories_get_the_summary_field_from_the_endpoint(tmp_path, monkeypatch):
    from tinystories_lib.stages import instruct

    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    texts = [s.text for s in _plain(120)]
    corpus_file = tmp_path / "plain.txt"
    corpus_file.write_text("".join(t + "\n<|endoftext|>\n" for t in texts))
    with FakeOpenAI(reply=_summary) as server:
        run = Run.load("tiny", {"data.source": "files", "data.paths": [str(corpus_file)], "data.n_stories": 0,
                                "instruct.summaries": "llm", "data.llm.base_url": server.base_url,
                                "data.llm.model": "fake-summariser", "data.llm.max_concurrency": 16,
                                "instruct.max_records": 60},
                       runs_root=tmp_path / "runs", figures_root=tmp_path / "figures")
        meta = Run.artifact(instruct.instruct_tokens(run, progress=False))
        n_calls = len(server.chat_requests)
        records = instruct.example_records(run, 12)
        assert any(r.startswith("Summary: A story that starts with") for r in records), records
        assert len(server.chat_requests) == n_calls  # summaries are kept, not asked again
    assert "summary" in meta["available_fields"] and meta["held_out_pair"] == ["summary", "words"]
    assert n_calls == 60 + meta["n_val_records"]
