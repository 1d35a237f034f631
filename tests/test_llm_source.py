"""data.source: llm through the corpus stage, against a local OpenAI-compatible server: stories written
from the paper's prompts, validated, resumable, then cleaned and split like any other source."""

import pytest

from tests.openai_server import FakeOpenAI, StoryWriter
from tinystories_lib import pipeline
from tinystories_lib.params import ParamsError
from tinystories_lib.prompts import sample_prompts
from tinystories_lib.records import read_jsonl
from tinystories_lib.runs import Run


def test_llm_source_builds_a_corpus_and_resumes(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-SECRET-source-1")
    n = 40
    with FakeOpenAI(reply=StoryWriter(sample_prompts(n, seed=7))) as server:
        over = {"data.source": "llm", "data.n_stories": n, "data.llm.base_url": server.base_url,
                "data.llm.model": "fake-writer", "data.llm.max_concurrency": 8}
        run = Run.load("tiny", over, runs_root=tmp_path / "runs", figures_root=tmp_path / "figs")
        d = pipeline.corpus(run, progress=False)
        calls = len(server.chat_requests)
        # a second build reuses the corpus: no new calls
        pipeline.corpus(run, progress=False)
        assert len(server.chat_requests) == calls
    stories = list(read_jsonl(d / "train.jsonl")) + list(read_jsonl(d / "val.jsonl"))
    assert calls == n and len(stories) == n
    assert all(s.source == "fake-writer" and s.prompt and s.words for s in stories)
    raw = next((tmp_path / "runs").rglob("llm_stories/*/stories.jsonl")).read_text()
    assert "sk-test-SECRET" not in raw


def test_an_api_key_in_a_profile_is_refused():
    with pytest.raises(ParamsError, match="API keys never go in a profile"):
        Run.load("tiny", {"data.llm.api_key": "sk-123"})
