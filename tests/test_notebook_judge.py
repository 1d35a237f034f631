"""Notebook 04 with the LLM judge, through papermill, against a local OpenAI-compatible server:
the key from the environment is really sent, and appears in no executed notebook or artifact."""

import json

import pytest

from tests.openai_server import FakeOpenAI, StoryWriter, judge_reply
from tinystories_lib.reproduce import reproduce

pytestmark = pytest.mark.slow

SECRET = "sk-test-SECRET-notebook-777"


def test_grading_notebook_with_an_llm_judge(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with FakeOpenAI(reply=judge_reply("plain")) as server:
        overrides = {"grade.judge": "llm", "grade.llm.base_url": server.base_url, "grade.llm.model": "fake-judge",
                     "grade.n_prompts": 3}
        reproduce("tiny", only=["04"], overrides=overrides, runs_root=tmp_path / "runs",
                  figures_root=tmp_path / "figures", log_output=False)
        requests = server.chat_requests
    assert requests, "the judge made no calls"
    assert all(r.headers.get("authorization") == f"Bearer {SECRET}" for r in requests)
    turn2 = [r for r in requests if len(r.json["messages"]) == 3]
    assert len(turn2) == len(requests) // 2  # two turns per completion
    assert turn2[0].json["messages"][2]["content"].startswith("Now, grade the student's completion")

    manifest = json.loads((tmp_path / "figures" / "tiny" / "manifest.json").read_text())
    assert "not GPT-4" not in manifest["figures"]["grades"]["reproduces"]
    assert "llm-judge:fake-judge" in manifest["figures"]["grades"]["caption"]
    import nbformat

    nb = nbformat.read(tmp_path / "runs" / "tiny" / "notebooks" / "04_grading.ipynb", as_version=4)
    shown = "".join(str(o.get("data", {}).get("text/markdown", "")) for c in nb.cells if c.cell_type == "code"
                    for o in c.get("outputs", []))
    assert (tmp_path / "figures" / "tiny" / "grades_llm_vs_offline.png").exists()
    assert "B: 4-5" in shown and "100%" in shown  # the age-group table: every fake grade says B
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.suffix in (".ipynb", ".json", ".jsonl", ".txt", ".md", ".yaml", ".log"):
            assert SECRET not in path.read_text(errors="ignore"), path


def test_data_notebook_with_an_llm_writer(tmp_path, monkeypatch):
    """Notebook 01 with `data.source: llm` and summaries, through papermill, against a local server: the key
    is sent, the notebook shows the LLM's stories and their Instruct records, and the key is nowhere on disk."""
    from tinystories_lib.stories.prompts import sample_prompts

    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    n = 60
    with FakeOpenAI(reply=StoryWriter(sample_prompts(n, seed=7))) as server:
        overrides = {"data.source": "llm", "data.n_stories": n, "data.llm_summaries": True,
                     "data.llm.base_url": server.base_url, "data.llm.model": "fake-writer",
                     "data.llm.max_concurrency": 8}
        reproduce("tiny", only=["01"], overrides=overrides, runs_root=tmp_path / "runs",
                  figures_root=tmp_path / "figures", log_output=False)
        requests = server.chat_requests
    assert len(requests) == 2 * n  # a story and a summary each
    assert all(r.headers.get("authorization") == f"Bearer {SECRET}" for r in requests)
    import nbformat

    nb = nbformat.read(tmp_path / "runs" / "tiny" / "notebooks" / "01_data_creation.ipynb", as_version=4)
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "[fake-writer]" in text and "records in" in text
    exported = next((tmp_path / "runs").rglob("instruct-train.txt")).read_text()
    assert "Summary: A child has a small adventure" in exported and "Random sentence: " in exported
    for path in tmp_path.rglob("*"):
        assert not path.is_file() or SECRET.encode() not in path.read_bytes(), path
