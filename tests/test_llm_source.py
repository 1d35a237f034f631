"""data.source: llm through the corpus stage, against a local OpenAI-compatible server: stories written
from the paper's prompts, validated, resumable, then cleaned and split like any other source."""

import pytest

from tests.openai_server import FakeOpenAI, StoryWriter
from tinystories_lib import stages
from tinystories_lib.params import ParamsError
from tinystories_lib.runs import Run
from tinystories_lib.stories.prompts import sample_prompts
from tinystories_lib.stories.records import read_jsonl


def test_llm_source_builds_a_corpus_and_resumes(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-SECRET-source-1")
    n = 40
    with FakeOpenAI(reply=StoryWriter(sample_prompts(n, seed=7))) as server:
        over = {"data.source": "llm", "data.n_stories": n, "data.llm.base_url": server.base_url,
                "data.llm.model": "fake-writer", "data.llm.max_concurrency": 8}
        run = Run.load("tiny", over, runs_root=tmp_path / "runs", figures_root=tmp_path / "figs")
        d = stages.corpus(run, progress=False)
        calls = len(server.chat_requests)
        # a second build reuses the corpus: no new calls
        stages.corpus(run, progress=False)
        assert len(server.chat_requests) == calls
    stories = list(read_jsonl(d / "train.jsonl")) + list(read_jsonl(d / "val.jsonl"))
    assert calls == n and len(stories) == n
    assert all(s.source == "fake-writer" and s.prompt and s.words for s in stories)
    assert next((tmp_path / "runs").rglob("llm_stories/*/stories.jsonl")).exists()
    for f in (tmp_path / "runs").rglob("*"):  # stories, rejects, reports, corpus, markers
        assert not f.is_file() or b"sk-test-SECRET" not in f.read_bytes(), f


def test_llm_stories_are_paid_for_once_whatever_the_corpus_settings(tmp_path, monkeypatch, capsys):
    """The LLM stories file is keyed by what decides a story (seed, endpoint, summaries), not by n_stories
    or the corpus settings: raising n_stories pays only for the new prompts, lowering it or changing the
    split pays for nothing, and the corpus holds exactly this profile's prompts."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with FakeOpenAI(reply=StoryWriter(sample_prompts(40, seed=7))) as server:
        def corpus_ids(n, **more):
            over = {"data.source": "llm", "data.n_stories": n, "data.llm.base_url": server.base_url,
                    "data.llm.model": "fake-writer", "data.llm.max_concurrency": 8, **more}
            run = Run.load("tiny", over, runs_root=tmp_path / "runs", figures_root=tmp_path / "figs")
            d = stages.corpus(run, progress=False)
            return run, {s.id for s in read_jsonl(d / "train.jsonl")} | {s.id for s in read_jsonl(d / "val.jsonl")}

        run, ids = corpus_ids(30)
        assert len(server.chat_requests) == 30 and ids == {s.id for s in sample_prompts(30, seed=7)}
        # An upgrade from the old layout (the file under the whole data section's key) is moved, not paid again.
        new_dir = stages.llm_stories_path(run).parent
        run40 = Run.load("tiny", {"data.source": "llm", "data.n_stories": 40, "data.llm.base_url": server.base_url,
                                  "data.llm.model": "fake-writer", "data.llm.max_concurrency": 8,
                                  "data.val_fraction": 0.2}, runs_root=tmp_path / "runs", figures_root=tmp_path / "figs")
        new_dir.rename(new_dir.parent / run40.params.section_hash("data"))
        capsys.readouterr()
        run, ids = corpus_ids(40, **{"data.val_fraction": 0.2})
        assert "30 already done, 10 to generate" in capsys.readouterr().out
        assert len(server.chat_requests) == 40 and ids == {s.id for s in sample_prompts(40, seed=7)}
        run, ids = corpus_ids(20, **{"data.min_chars": 60})
        assert len(server.chat_requests) == 40 and ids == {s.id for s in sample_prompts(20, seed=7)}
        # A different model writes different stories: a new file.
        corpus_ids(20, **{"data.llm.model": "fake-writer-2"})
        assert len(server.chat_requests) == 60
        assert len(list((tmp_path / "runs").rglob("llm_stories/*/stories.jsonl"))) == 2


def test_an_api_key_in_a_profile_is_refused():
    with pytest.raises(ParamsError, match="API keys never go in a profile"):
        Run.load("tiny", {"data.llm.api_key": "sk-123"})
