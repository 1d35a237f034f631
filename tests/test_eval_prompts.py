"""Evaluation prompts: the shipped set, the paper's probes, and the loader for the hub's evaluation file."""

from __future__ import annotations

import re
import sys
from collections import Counter

import pytest
from fake_hub import run_against_hub, run_python

from tinystories_lib.evals.eval_prompts import (
    PROMPT_KINDS,
    EvalPrompt,
    fetch_paper_eval_yaml,
    load_eval_prompts,
    load_paper_eval_yaml,
    load_paper_probes,
)
from tinystories_lib.evals.text_metrics import ends_mid_sentence


def test_shipped_set_is_large_and_covers_every_kind():
    prompts = load_eval_prompts()
    assert len(prompts) >= 60
    kinds = Counter(p.kind for p in prompts)
    assert set(kinds) == set(PROMPT_KINDS)
    assert all(kinds[k] >= 10 for k in ("knowledge", "reasoning", "context_tracking"))
    assert len({p.id for p in prompts}) == len(prompts)
    assert all(p.text.strip() == p.text and p.text for p in prompts)
    assert all(p.answers for p in prompts if p.kind != "story")
    for p in prompts:  # 1-5 sentences, counting an unfinished last one
        assert 1 <= len(re.findall(r"[.!?]+", p.text)) + ends_mid_sentence(p.text) <= 5, p.id
    assert sum(ends_mid_sentence(p.text) for p in prompts) > 0.9 * len(prompts)


def test_paper_probes_are_kept_apart():
    probes = load_paper_probes()
    assert [p.kind for p in probes] == ["knowledge", "reasoning", "context_tracking"]
    assert probes[0].text == "Alice was so tired when she got back home so she went"
    assert probes[1].text.startswith("Lily wanted to get either a cat or a dog.")
    ours = {p.text for p in load_eval_prompts()}
    assert not ours & {p.text for p in probes}


def test_answer_found():
    probe = EvalPrompt("k", "Alice was so tired when she got back home so she went", "knowledge", ["bed", "toy box"])
    assert probe.answer_found(" to bed and slept.") is True
    assert probe.answer_found(" to the park. Then she went to bed.", within_words=5) is False
    assert probe.answer_found(" to look in the toy box.") is True
    assert probe.answer_found(" to the bedroom.") is False  # whole words only
    assert EvalPrompt("s", "Once there was").answer_found("a cat") is None


def test_load_custom_set_validates(tmp_path):
    path = tmp_path / "set.yaml"
    path.write_text("prompts:\n  - {id: a, text: 'One day', kind: riddle}\n")
    with pytest.raises(ValueError, match="riddle"):
        load_eval_prompts(path)
    path.write_text("prompts:\n  - {id: a, text: 'One day'}\n  - {id: a, text: 'Two days'}\n")
    with pytest.raises(ValueError, match="duplicate"):
        load_eval_prompts(path)


# The hub file's quirks: block strings with trailing newlines and spaces, a beginning cut mid-word,
# paragraph breaks inside an entry, empty entries, Windows line endings.
PAPER_LIKE_YAML = (
    "- |\n"
    "  Once upon a time there was a small fox. The fox liked to\n"
    "\n"
    "- |-\n"
    "  Tom and Sue went to the beach. Sue found a shell and gave it to Tom. Tom said, \"\n"
    "- 'The little car drove up the hill. It was very tir'\n"
    "-\n"
    "- ''\n"
    "- |+\n"
    "  Ben had a kite.   \n"
    "\n"
    "  One day the wind took the kite and   \n"
    "\n"
    "\n"
    "- \"   \\n\\n  \"\n"
    "- \"The owl said hello.\\r\\nThen she flew to the\\r\\n\"\n"
)


def test_load_paper_eval_yaml_handles_quirks(tmp_path):
    path = tmp_path / "Evaluation prompts.yaml"
    path.write_text(PAPER_LIKE_YAML, encoding="utf-8")
    prompts = load_paper_eval_yaml(path)
    assert [p.id for p in prompts] == ["paper-01", "paper-02", "paper-03", "paper-04", "paper-05"]
    assert all(p.kind == "story" and p.answers == [] for p in prompts)
    texts = [p.text for p in prompts]
    assert texts[0] == "Once upon a time there was a small fox. The fox liked to"
    assert texts[1].endswith('Tom said, "')
    assert texts[2] == "The little car drove up the hill. It was very tir"  # mid-word: no space added
    assert texts[3] == "Ben had a kite.\n\nOne day the wind took the kite and"  # paragraph break kept
    assert texts[4] == "The owl said hello.\nThen she flew to the"


def test_load_paper_eval_yaml_rejects_other_shapes(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("prompts: [a, b]\n")
    with pytest.raises(ValueError, match="list"):
        load_paper_eval_yaml(path)


def test_fetch_paper_eval_yaml_offline_says_what_to_do(tmp_path):
    """The real hf_hub_download with the hub offline and a cold cache: the error says what was tried and
    what to do instead."""
    pytest.importorskip("huggingface_hub")
    code = ("from tinystories_lib.evals.eval_prompts import fetch_paper_eval_yaml\n"
            "try:\n    fetch_paper_eval_yaml()\nexcept RuntimeError as e:\n    print(e)\n")
    msg = run_python(code, None, tmp_path / "hf", offline=True).stdout
    assert "roneneldan/TinyStories" in msg and "Evaluation prompts.yaml" in msg and "dataset" in msg, msg
    assert "load_paper_eval_yaml(path)" in msg and "offline" in msg.lower(), msg


def test_fetch_paper_eval_yaml_without_huggingface_hub(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # makes the import fail
    with pytest.raises(RuntimeError, match="not installed.*load_paper_eval_yaml"):
        fetch_paper_eval_yaml(tmp_path)


def test_fetch_paper_eval_yaml_from_a_hub_endpoint(tmp_path):
    """The dataset file (a name with a space) through the real hf_hub_download from a local endpoint."""
    pytest.importorskip("huggingface_hub")
    files = {"datasets/roneneldan/TinyStories/resolve/main/Evaluation prompts.yaml": b"- Once there was a bee who\n"}
    code = ("from tinystories_lib.evals.eval_prompts import fetch_paper_eval_yaml, load_paper_eval_yaml\n"
            f"path = fetch_paper_eval_yaml({str(tmp_path / 'cache')!r})\n"
            "print(path)\nprint([p.text for p in load_paper_eval_yaml(path)])\n")
    stdout, downloaded = run_against_hub(files, code, tmp_path / "hf")
    assert str(tmp_path / "cache") in stdout and "['Once there was a bee who']" in stdout, stdout
    assert downloaded == {"/datasets/roneneldan/TinyStories/resolve/main/Evaluation prompts.yaml"}
