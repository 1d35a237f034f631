"""Notebooks 04 (the LLM judge) and 01 (an LLM writer), through papermill, against a local OpenAI-compatible
server: the key from the environment is really sent and appears in no executed notebook or artifact; 04 shows
who judged (the served snapshot, the temperature, failed grades, the repeats' agreement) and 01 the
generation's rejects by reason."""

import json

import pytest

from tests.openai_server import Answer, FakeOpenAI, StoryWriter, random_story, varying_judge_reply
from tinystories_lib.reproduce import reproduce

pytestmark = pytest.mark.slow

SECRET = "sk-test-SECRET-notebook-777"


def test_grading_notebook_with_an_llm_judge(tmp_path, monkeypatch):
    from tinystories_lib.stages.grading import prompt_set

    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    unreadable = prompt_set("kit")[0].text[:40]  # every completion of the first prompt gets an unreadable grade
    judge = varying_judge_reply(unparseable_for=unreadable, ages="B")
    with FakeOpenAI(reply=judge, served_model="fake-judge-2024-08-06") as server:
        overrides = {"grade.judge": "llm", "grade.llm.base_url": server.base_url, "grade.llm.model": "fake-judge",
                     "grade.n_prompts": 3, "grade.judge_repeats": 2}
        reproduce("tiny", only=["04"], overrides=overrides, runs_root=tmp_path / "runs",
                  figures_root=tmp_path / "figures", log_output=False)
        requests = server.chat_requests
    assert requests, "the judge made no calls"
    assert all(r.headers.get("authorization") == f"Bearer {SECRET}" for r in requests)
    turn1, turn2, reminders = ([r for r in requests if len(r.json["messages"]) == n] for n in (1, 3, 5))
    assert len(turn1) + len(turn2) + len(reminders) == len(requests) and reminders
    # two turns per judgment; an unreadable grade (reminded once) is retried when the same completion comes
    # again (a checkpoint's), with its kept turn-1 reply: turn 2 only
    assert len(turn2) >= len(turn1)
    assert {r.json["temperature"] for r in requests} == {0.0}
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
    assert "served by `fake-judge-2024-08-06`; temperature 0; each completion judged 2 times" in shown
    assert "failed, of which 0 for good" in shown and "unparseable judge reply" in shown
    assert "Agreement of the repeated judgments" in shown and "| grammar |" in shown
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.suffix in (".ipynb", ".json", ".jsonl", ".txt", ".md", ".yaml", ".log"):
            assert SECRET not in path.read_text(errors="ignore"), path


def test_data_notebook_with_an_llm_writer(tmp_path, monkeypatch):
    """Notebook 01 with `data.source: llm` and summaries, through papermill, against a local server: the key
    is sent, the notebook shows the LLM's stories and their Instruct records, and the key is nowhere on disk."""
    from tinystories_lib.stories.prompts import sample_prompts

    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    n = 60
    specs = sample_prompts(n, seed=7)
    bad = {specs[0].id: Answer(random_story(specs[0].id, (specs[0].noun,)), finish_reason="length"),
           specs[1].id: "I'm sorry, but I can't write that story."}
    with FakeOpenAI(reply=StoryWriter(specs, bad)) as server:
        overrides = {"data.source": "llm", "data.n_stories": n, "data.llm_summaries": True,
                     "data.llm.base_url": server.base_url, "data.llm.model": "fake-writer",
                     "data.llm.max_concurrency": 8}
        reproduce("tiny", only=["01"], overrides=overrides, runs_root=tmp_path / "runs",
                  figures_root=tmp_path / "figures", log_output=False)
        requests = server.chat_requests
    assert len(requests) == 2 * n - len(bad)  # a story and a summary each, but no summary of a rejected story
    assert all(r.headers.get("authorization") == f"Bearer {SECRET}" for r in requests)
    import nbformat

    nb = nbformat.read(tmp_path / "runs" / "tiny" / "notebooks" / "01_data_creation.ipynb", as_version=4)
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "[fake-writer]" in text and "records in" in text
    shown = "".join(str(o.get("data", {}).get("text/markdown", "")) for c in nb.cells if c.cell_type == "code"
                    for o in c.get("outputs", []))
    assert f"{n - 2} stories kept and 2 replies rejected" in shown
    assert "| cut_off | 1 |" in shown and "| refusal | 1 |" in shown and specs[1].id in shown
    exported = next((tmp_path / "runs").rglob("instruct-train.txt")).read_text()
    assert "Summary: A child has a small adventure" in exported and "Random sentence: " in exported
    for path in tmp_path.rglob("*"):
        assert not path.is_file() or SECRET.encode() not in path.read_bytes(), path
