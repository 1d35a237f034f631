"""Probes, the manipulation check and entity heads on plain stories (text only, no storyteller facts):
entities are read from the text, and a figure with nothing to plot is neither saved nor listed."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from tinystories_lib.evals import interpret, manipulation
from tinystories_lib.evals.entities import text_entities, text_facts
from tinystories_lib.evals.probes import PROBE_KINDS, build_probes
from tinystories_lib.stories.prompts import vocab_index
from tinystories_lib.stories.records import EOT, Story
from tinystories_lib.stories.storyteller import tell_stories
from tinystories_lib.stories.words import find_word

SAMPLE = "data/tinystories_sample/tinystories_v1_sample_2500.txt"

TEXT = ("Once upon a time, there was a little girl named Lily. Lily had a big red ball. She loved the ball. "
        "One day, Lily went to the park with her mom. At the park, Lily saw a dog named Max. Max ran to the "
        "ball and Lily laughed. Suddenly, Max took the ball home.")


def plain(stories) -> list[Story]:
    """Stories as a text corpus gives them: id, text and source only."""
    return [Story(id=s.id, text=s.text, source="file:plain") for s in stories]


@pytest.fixture(scope="module", params=["storyteller text", "TinyStories sample"])
def stories(request):
    """Plain stories: storyteller texts with their facts stripped, and the real TinyStories sample."""
    if request.param == "storyteller text":
        return plain(tell_stories(300, seed=21))
    from conftest import shared_path  # skips, with a reason, when ../shared is absent

    from tinystories_lib.stories.loading import load_txt

    return plain(load_txt(shared_path(SAMPLE), limit=600))


# ------------------------------------------------------------------ entities


def test_entities_are_read_from_the_text():
    e = text_entities(TEXT)
    assert e.names == ["Lily", "Max"]  # by mentions; "Once", "One", "At", "Suddenly" open sentences
    assert e.kinds == {"Lily": "girl", "Max": "animal"}
    assert e.nouns["toy"] == ["ball"] and e.nouns["place"] == ["park"]
    assert e.nouns["person"] == ["girl", "mom"] and e.nouns["animal"] == ["dog"]
    f = text_facts(TEXT)
    hero, pet = f["characters"][:2]
    assert (hero["name"], hero["role"], hero["pronoun"], hero["possessive"]) == ("Lily", "hero", "she", "her")
    assert (pet["name"], pet["gender"]) == ("Max", "none") and "pronoun" not in pet
    assert (f["object"], f["place"], f["animal"], f["animal_name"], f["found_in_text"]) == ("ball", "park", "dog", "Max", True)


def test_pronouns_tell_a_gender_and_openers_are_not_names():
    text = "Tom ran home. He was happy. Tom ate his cake. Sadly, Tom dropped it. Later Tom went to bed."
    e = text_entities(text, known_words={"sadly"})
    assert e.names == ["Tom"] and e.kinds == {"Tom": "boy"}
    assert text_entities("Yuck! The soup was cold.").names == []  # said once: not a character
    assert text_entities("The End. It was the End.").names == []  # after an article: a noun


# ------------------------------------------------------------------ probes


def test_probes_are_cut_from_plain_text(stories):
    probes = build_probes(stories, 200, seed=0)
    by_id = {s.id: s for s in stories}
    assert {p.kind for p in probes} == set(PROBE_KINDS)  # each kind where the text allows it
    assert all(p.found_in == "text" for p in probes)
    for p in probes:
        text = by_id[p.story_id].text
        assert text.startswith(p.prefix + p.answer) and not text[len(p.prefix) + len(p.answer):][:1].isalnum()
        said = find_word(p.prefix, p.answer) or (p.kind == "pronoun" and find_word(p.prefix, p.answer.lower()))
        assert said, p  # the answer is in the story before the cut
        assert p.answer in p.candidates and len(set(p.candidates)) == len(p.candidates) >= 3
        if p.kind in ("object", "place"):
            assert all(not find_word(text, c) for c in p.candidates if c != p.answer)
        if p.kind == "object":
            assert ("noun", p.answer) in vocab_index()


def test_storyteller_facts_stay_the_exact_source():
    told = tell_stories(60, seed=4)
    mixed = told[:30] + plain(told[30:])
    probes = build_probes(mixed, 400, seed=0)
    facts_ids = {s.id for s in told[:30]}
    assert {p.found_in for p in probes if p.story_id in facts_ids} == {"facts"}
    assert {p.found_in for p in probes if p.story_id not in facts_ids} == {"text"}


# ------------------------------------------------------------------ the manipulation check


def test_manipulation_cases_swap_a_name_and_an_object_found_in_the_text(stories):
    val, train = stories[:100], stories[100:]
    pool = manipulation.word_pool(train)
    assert pool["boy"] and pool["girl"] and pool["object"]
    cases = manipulation.manipulation_cases(val, 10, pool, seed=0)
    assert {c.kind for c in cases} == {"name", "object"}
    by_id = {s.id: s for s in val}
    for c in cases:
        story = by_id[c.story_id].text
        assert story.startswith(c.original) and manipulation.mentions(c.original, c.old)
        assert not manipulation.mentions(c.manipulated, c.old) and manipulation.mentions(c.manipulated, c.new)
        assert not find_word(story, c.new)  # the replacement is nowhere in the story
        if c.kind == "name":
            assert c.old in text_entities(story).names and c.new in pool["boy"] + pool["girl"]
        else:
            assert ("noun", c.old) in vocab_index() and c.new in pool["object"]


def test_a_name_of_unknown_gender_takes_the_pool_gender():
    case = manipulation.manipulate("Sam went out. Sam saw a dog.", {"found_in_text": True, "characters": [
        {"name": "Sam", "gender": "unknown", "role": "hero", "kind": ""}]}, "name", random.Random(0),
        {"boy": ["Ben", "Sam"], "girl": ["Mia"]})
    assert case.new == "Ben"


# ------------------------------------------------------------------ entity heads


def test_entity_words_and_a_finite_entity_lift(stories):
    from tinystories_lib.lm.model import GPTNeo, GPTNeoConfig
    from tinystories_lib.lm.tokenizer import train_bpe

    some = stories[:12]
    assert all(interpret.entity_words(s) for s in some)
    codec = train_bpe([s.text for s in stories[:200]], 300)
    tokens = interpret.prepare(codec, some, 96)
    assert sum(st.entity.any() for st in tokens) >= 10
    named = {w for st in tokens for w, c in zip(st.words, st.classes) if c == "name"}
    assert {w.lower() for s in some for w in text_entities(s.text).names} & named
    model = GPTNeo(GPTNeoConfig(vocab_size=codec.vocab_size, hidden=32, layers=2, heads=2, context=96,
                                window=32)).eval()
    rows = interpret.head_scores(model, codec, tokens)
    assert all(np.isfinite(r["entity_score"]) and np.isfinite(r["entity_lift"]) for r in rows)


def test_a_nan_entity_score_does_not_hide_the_distance_score():
    from tinystories_lib.show import plots

    row = {"layer": 0, "head": 0, "attention": "global", "distance_score": 0.8, "entity_score": float("nan"),
           "entity_chance": float("nan"), "entity_lift": float("nan"), "start_score": 0.1}
    row["verdict"] = interpret.classify(row)
    assert row["verdict"] == "distance"
    assert "0.80 | – (no entity query)" in interpret.head_table({"m": [row]})
    fig = plots.head_scores({"m": [row]}, interpret.DISTANCE_MIN, interpret.ENTITY_LIFT_MIN)
    assert plots.has_data(fig)  # the head is drawn (at lift 0), not dropped as NaN


# ------------------------------------------------------------------ empty figures


@pytest.mark.filterwarnings("ignore:No artists with labels")
def test_an_empty_figure_is_not_saved_nor_listed(tmp_path):
    from tinystories_lib import params
    from tinystories_lib.runs import Run
    from tinystories_lib.show import plots

    run = Run(params.load("tiny"), runs_root=tmp_path / "runs", figures_root=tmp_path / "figures")
    rows = [{"model": "a", "kind": "name", "follows": 0.0, "original_mentions": 0.5}]
    assert plots.save(run, plots.manipulation_bars(rows), "manipulation_check", "c", "r", data=rows)  # zero is data
    manifest = run.figures / "manifest.json"
    assert "manipulation_check" in json.loads(manifest.read_text())["figures"]
    grades = [{"model": "a", "dimension": "x", "mean": 5.0, "ci95": 1.0, "n": 3}]
    assert plots.save(run, plots.grade_bars(grades, ["x"], "g"), "bars", "c", "r", data=grades)
    nan_rows = [{"model": "a", "kind": "name", "follows": float("nan"), "original_mentions": float("nan")}]
    for fig in (plots.manipulation_bars(nan_rows), plots.manipulation_bars([]), None):
        got = plots.save(run, fig, "manipulation_check", "c", "r", data=[], why="no cases")
        assert not got and "no cases" in repr(got) and "manipulation_check.png" in got._repr_markdown_()
        assert not (run.figures / "manipulation_check.png").exists()
        assert set(json.loads(manifest.read_text())["figures"]) == {"bars"}  # the earlier entry is gone
    heat = plots.heatmap(np.full((2, 2), np.nan), [1, 2], [16, 32], "t", "layers", "hidden", "loss")
    assert not plots.save(run, heat, "hm", "c", "r", data=[])  # a colorbar alone is not data


# ------------------------------------------------------------------ notebooks 04-06 on plain text


@pytest.mark.slow
def test_notebooks_04_to_06_on_plain_stories(tmp_path):
    pytest.importorskip("papermill")
    import nbformat

    from tinystories_lib.reproduce import reproduce

    corpus = tmp_path / "plain.txt"
    corpus.write_text("".join(f"{s.text}\n{EOT}\n" for s in tell_stories(400, seed=9)), encoding="utf-8")
    overrides = {"data.source": "files", "data.paths": [str(corpus)], "data.n_stories": 0}
    reproduce("tiny", only=["04", "05", "06"], overrides=overrides, runs_root=tmp_path / "runs",
              figures_root=tmp_path / "figs", log_output=False)
    figs = tmp_path / "figs" / "tiny"
    listed = json.loads((figs / "manifest.json").read_text())["figures"]
    assert {"probe_accuracy", "manipulation_check", "head_scores"} <= set(listed)
    assert {p.stem for p in figs.glob("*.png")} == set(listed)
    for name, entry in listed.items():
        assert (figs / entry["file"]).stat().st_size > 5000, name
    for path in sorted((tmp_path / "runs" / "tiny" / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
        text = json.dumps(outputs)
        assert not [o for o in outputs if o.get("output_type") == "error"], path
        assert "Not saved" not in text and "not saved" not in text, path
        if path.stem.startswith("06"):
            assert "– (no entity query)" not in text  # entities read from the text: every lift is a number
        if path.stem.startswith("05"):
            assert "| name |" in text and "| object |" in text  # both kinds of swap were made
