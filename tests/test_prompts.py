"""The vocabulary and the paper's prompt template."""

from __future__ import annotations

import collections
import subprocess
import sys
from pathlib import Path

import pytest

from tinystories_lib.stories.prompts import (
    DESIGNS_DIR,
    FEATURE_TEXT,
    FEATURES,
    PromptSpec,
    load_design,
    load_vocab,
    sample_prompts,
    vocab_index,
)

PAPER_EXAMPLE = (
    "Write a short story (3-5 paragraphs) which only uses very simple words that a 3 year old child "
    'would understand. The story should use the verb "hang", the noun "foot" and the adjective "cute". '
    "The story has the following features: the story should contain at least one dialogue. "
    "Remember to only use simple words!\n\nPossible story:"
)


def test_render_matches_paper_example_exactly():
    spec = PromptSpec("p000000", noun="foot", verb="hang", adjective="cute", features=("dialogue",))
    assert spec.render() == PAPER_EXAMPLE


def test_render_bad_ending_wording_and_joining():
    spec = PromptSpec("p1", "ball", "kick", "red", ("dialogue", "bad_ending"))
    text = spec.render()
    assert ("The story has the following features: the story should contain at least one dialogue, "
            "the story has a bad ending. Remember") in text


def test_render_without_features_omits_the_feature_sentence():
    text = PromptSpec("p1", "ball", "kick", "red").render()
    assert "following features" not in text
    assert text.endswith('the adjective "red". Remember to only use simple words!\n\nPossible story:')


def test_every_feature_has_wording():
    spec = PromptSpec("p1", "ball", "kick", "red", FEATURES)
    text = spec.render()
    for phrase in ("moral value", "unexpected", "foreshadowing", "conflict"):
        assert phrase in text
    assert spec.words == {"noun": "ball", "verb": "kick", "adjective": "red"}


def test_features_and_their_wording_come_from_the_design_files():
    """The TinyStories wording has one home: designs/tinystories/ (its template and design.yaml)."""
    import yaml

    manifest = yaml.safe_load((DESIGNS_DIR / "tinystories" / "design.yaml").read_text())
    assert FEATURES == tuple(manifest["features"]) and FEATURE_TEXT == manifest["features"]
    assert "{features}" in (DESIGNS_DIR / "tinystories" / "prompt.txt").read_text()
    with pytest.raises(ValueError, match="'sad_ending'.* not in the tinystories design"):
        PromptSpec("p1", "ball", "kick", "red", ("sad_ending",)).render()


def test_sample_prompts_from_another_design():
    design = load_design(DESIGNS_DIR / "customer_service")
    specs = sample_prompts(500, seed=2, design=design)
    assert specs == sample_prompts(500, seed=2, design=design) and specs[:5] == sample_prompts(5, seed=2, design=design)
    assert len({(p.words["product"], p.words["problem"], p.words["action"], p.features, p.topic) for p in specs}) == 500
    for p in specs:
        assert (p.noun, p.verb, p.adjective) == ("", "", "") and [s for s, _ in p.slots] == list(design.slots)
        assert p.topic in design.topics and list(p.features) == [f for f in design.features if f in p.features]
        assert p.render().endswith("Call:") and f'a {p.words["product"]} that is {p.words["problem"]}' in p.render()
    rate = sum(len(p.features) for p in specs) / (500 * len(design.features))
    assert 0.33 < rate < 0.47  # the design's own feature_prob, 0.4
    with pytest.raises(ValueError, match="distinct prompts exist in the customer_service design"):
        sample_prompts(design.capacity() + 1, seed=0, design=design)


def test_vocab_sizes_and_categories():
    vocab = load_vocab()
    assert set(vocab) == {"noun", "verb", "adjective"}
    for pos, words in vocab.items():
        assert 450 <= len(words) <= 520, (pos, len(words))
        assert len({w.word for w in words}) == len(words)
    cats = {pos: collections.Counter(w.category for w in ws) for pos, ws in vocab.items()}
    assert {"animal", "person", "body", "toy", "food", "place"} <= set(cats["noun"])
    assert {"intr", "obj", "pers"} <= set(cats["verb"])
    assert {"thing", "mood", "trait", "weather", "taste"} <= set(cats["adjective"])
    assert load_vocab() is vocab  # cached


@pytest.mark.parametrize("pos,word,form,expected", [
    ("noun", "foot", "plural", "feet"), ("noun", "mouse", "plural", "mice"),
    ("noun", "sheep", "plural", "sheep"), ("noun", "fish", "plural", "fish"),
    ("noun", "box", "plural", "boxes"), ("noun", "baby", "plural", "babies"),
    ("verb", "hang", "past", "hung"), ("verb", "run", "past", "ran"), ("verb", "hop", "ing", "hopping"),
    ("verb", "swim", "past_participle", "swum"), ("verb", "cry", "third", "cries"),
    ("verb", "drink", "past", "drank"),
])
def test_inflections(pos, word, form, expected):
    assert vocab_index()[(pos, word)].form(form) == expected


def test_articles_and_mass_nouns():
    idx = vocab_index()
    assert idx[("noun", "apple")].article == "an"
    assert idx[("noun", "unicorn")].article == "a"
    assert idx[("adjective", "old")].article == "an"
    assert idx[("noun", "milk")].mass and not idx[("noun", "ball")].mass


def test_vocab_has_no_denied_words():
    words = {w.word for ws in load_vocab().values() for w in ws}
    assert not words & {"knife", "pants", "scissors", "hunt"}


def test_sample_prompts_distinct_and_deterministic():
    a = sample_prompts(3000, seed=5)
    b = sample_prompts(3000, seed=5)
    assert a == b
    assert len({(p.noun, p.verb, p.adjective, p.features) for p in a}) == 3000
    assert [p.id for p in a[:3]] == ["p000000", "p000001", "p000002"]
    assert sample_prompts(10, seed=5) == a[:10]  # ids and prompts stable as n grows
    assert sample_prompts(50, seed=6) != a[:50]


def test_sample_prompts_feature_probability():
    none = sample_prompts(200, seed=1, feature_prob=0.0)
    assert all(p.features == () for p in none)
    every = sample_prompts(200, seed=1, feature_prob=1.0)
    assert all(p.features == FEATURES for p in every)
    half = sample_prompts(2000, seed=1)
    rate = sum(len(p.features) for p in half) / (2000 * len(FEATURES))
    assert 0.45 < rate < 0.55
    for p in half:  # features keep the canonical order
        assert list(p.features) == [f for f in FEATURES if f in p.features]


def test_sample_prompts_rejects_bad_arguments():
    with pytest.raises(ValueError):
        sample_prompts(-1, seed=0)
    with pytest.raises(ValueError):
        sample_prompts(5, seed=0, feature_prob=1.5)


def test_shipped_vocab_is_build_output():
    """The TSV must be what tools/build_vocab.py writes (skipped where its build deps are absent)."""
    pytest.importorskip("wordfreq")
    pytest.importorskip("lemminflect")
    script = Path(__file__).resolve().parents[1] / "tools" / "build_vocab.py"
    res = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
