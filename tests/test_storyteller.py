"""The offline storyteller: prompt words, features, grammar, consistency, variety."""

from __future__ import annotations

import itertools
import random
import re

import pytest

from tinystories_lib.stories.prompts import FEATURES, PromptSpec, sample_prompts, vocab_index
from tinystories_lib.stories.records import Story
from tinystories_lib.stories.storyteller import MAX_WORDS, MIN_WORDS, Storyteller, lexicon, tell_stories
from tinystories_lib.stories.storyteller.templates import PLOTS, SLOTS, Context
from tinystories_lib.stories.storyteller.world import World

N_BIG = 100_000  # the floor: at least 100,000 distinct stories from different prompts (~20 s)


@pytest.fixture(scope="module")
def stories() -> list[Story]:
    return Storyteller(seed=0).generate(3000, seed=42)


@pytest.fixture(scope="module")
def many() -> list[Story]:
    return tell_stories(N_BIG, seed=1)


def _has_word(text: str, forms: set[str]) -> bool:
    return any(re.search(rf"\b{re.escape(f)}\b", text) for f in forms if f)


def test_paper_example_prompt_story():
    spec = PromptSpec("p000000", "foot", "hang", "cute", ("dialogue",))
    story = Storyteller(seed=0).tell(spec)
    assert story.prompt == spec.render()
    assert story.source == "storyteller"
    assert story.words == {"noun": "foot", "verb": "hang", "adjective": "cute"}
    assert story.features == ["dialogue"]
    assert '"' in story.text
    assert _has_word(story.text, {"foot", "feet"})
    assert _has_word(story.text, {"hang", "hangs", "hung", "hanging"})
    assert _has_word(story.text, {"cute"})


def test_story_uses_the_three_words_in_some_inflection(stories):
    idx = vocab_index()
    for s in stories:
        noun, verb = idx[("noun", s.words["noun"])], idx[("verb", s.words["verb"])]
        assert _has_word(s.text, {noun.word, noun.form("plural")}), (s.words, s.text)
        verb_forms = {verb.word} | {verb.form(k) for k in ("third", "past", "past_participle", "ing")}
        assert _has_word(s.text, verb_forms), (s.words, s.text)
        assert _has_word(s.text, {s.words["adjective"]}), (s.words, s.text)


def test_irregular_forms_appear_where_grammar_needs_them():
    st = Storyteller(seed=3)
    texts = [st.tell(PromptSpec(f"p{i}", "foot", "hang", "cute", ("moral_value",))).text for i in range(60)]
    assert any(re.search(r"\bhung\b", t) for t in texts)
    assert not any(re.search(r"\bhanged\b|\bfoots\b", t) for t in texts)


def test_features_are_honoured_exactly_when_asked(stories):
    for s in stories:
        feats, facts, text = set(s.features), s.facts, s.text
        ft = facts["feature_text"]
        assert ('"' in text) == ("dialogue" in feats), s.text
        assert (facts["ending"] == "bad") == ("bad_ending" in feats)
        plot = facts["plot"]
        assert facts["ending_template"].startswith(f"{plot}.{facts['ending']}/")
        assert ft["ending"] in text
        for f in ("moral_value", "plot_twist", "conflict"):
            assert (f in ft) == (f in feats), (f, s.features)
            if f in feats:
                assert ft[f] in text
        if "moral_value" in feats:
            assert facts["moral"] in text
        else:
            assert "moral" not in text and "learned that" not in text
        if "foreshadowing" in feats:
            fs = facts["foreshadowing"]
            assert 0 <= text.index(fs["setup"]) < text.index(fs["payoff"])
        else:
            assert "foreshadowing" not in facts


def test_bad_endings_differ_from_good_ones(stories):
    bad = {s.facts["feature_text"]["ending"] for s in stories if s.facts["ending"] == "bad"}
    good = {s.facts["feature_text"]["ending"] for s in stories if s.facts["ending"] == "good"}
    assert bad and good and not bad & good


def test_facts_describe_the_cast(stories):
    for s in stories[:500]:
        chars = s.facts["characters"]
        hero = chars[0]
        assert hero["role"] == "hero" and hero["name"] == s.facts["hero"]
        assert hero["pronoun"] in ("he", "she")
        assert hero["gender"] in ("girl", "boy", "male", "female")
        assert text_count(s.text, hero["name"]) >= 3
        roles = {c["role"] for c in chars}
        assert {"hero", "friend", "parent", "animal"} <= roles
        assert s.facts["animal"] in s.text
        names = [c["name"] for c in chars if c["role"] in ("hero", "friend")]
        assert len(set(names)) == len(names)
        assert s.summary and s.summary[0].isupper() and s.summary.endswith(".")


def text_count(text: str, word: str) -> int:
    return len(re.findall(rf"\b{re.escape(word)}\b", text))


def test_hero_pronouns_are_consistent(stories):
    """Where no other character shares the other gender, the other gender's pronouns never appear."""
    other = {"he": r"\b(he|him|his|himself)\b", "she": r"\b(she|her|hers|herself)\b"}
    checked = 0
    for s in stories:
        hero = s.facts["characters"][0]
        opposite = "she" if hero["pronoun"] == "he" else "he"
        if any(c["pronoun"] == opposite for c in s.facts["characters"][1:]):
            continue
        checked += 1
        assert not re.search(other[opposite], s.text, flags=re.IGNORECASE), s.text
        assert re.search(other[hero["pronoun"]], s.text, flags=re.IGNORECASE)
    assert checked > 100


def test_length_paragraphs_and_clean_text(stories):
    for s in stories:
        n = len(s.text.split())
        assert MIN_WORDS <= n <= MAX_WORDS, (n, s.text)
        assert s.text.count("\n") >= 2  # three paragraphs or more
        assert not re.search(r"[{}\[\]]", s.text), s.text
        assert "  " not in s.text and " ." not in s.text and ".." not in s.text
        assert not re.search(r"\. +[a-z]", s.text), s.text  # sentences start with a capital
        assert s.text.count('"') % 2 == 0


def test_articles_agree(stories):
    idx = vocab_index()
    for s in stories:
        for art, word in re.findall(r"\b(a|an) ([a-z]+)", s.text):
            w = idx.get(("noun", word)) or idx.get(("adjective", word))
            if w is not None:
                assert w.article == art, (art, word, s.text)


def test_every_template_renders():
    """Each template, in each wording, fills from a context that has every key a story can have."""
    ctx = Context()
    for i, noun in enumerate(["ball", "foot", "tree", "sun", "farmer", "park", "wall", "cake", "wing"]):
        world = World(PromptSpec(f"p{i}", noun, "hang", "cute", FEATURES), random.Random(i))
        ctx.update(world.context())
    ctx["moral"] = "it is good to share"
    n = 0
    for slot in SLOTS.values():
        for _, parts in slot.plain + slot.quoted:
            choices = [p if isinstance(p, tuple) else (p,) for p in parts]
            for combo in itertools.islice(itertools.product(*choices), 50):
                out = "".join(combo).format_map(ctx)
                assert "{" not in out and "}" not in out
                n += 1
    assert n > 500


def test_lexicon_is_the_word_lists_of_the_data_file():
    """The public accessor: read once, lists in the file's order as tuples, classes as sets, read-only pairs."""
    lex = lexicon()
    assert lexicon() is lex
    assert lex.settings[0] == "park" and isinstance(lex.settings, tuple) and len(set(lex.settings)) == len(lex.settings)
    assert isinstance(lex.water_animals, frozenset) and "fish" in lex.water_animals
    assert lex.parents["mom"] == "she" and lex.siblings["brother"] == "boy"
    with pytest.raises(TypeError):
        lex.parents["mom"] = "he"  # type: ignore[index]
    idx = vocab_index()
    assert all(("noun", w) in idx for w in lex.settings + lex.default_foods + lex.pets)


def test_stories_use_the_data_files(stories):
    """Every plot the world can choose has its beats in plots.yaml, and what stories say comes from the lists."""
    assert set(PLOTS) == {s.facts["plot"] for s in stories} == {"lost", "want", "help", "broken", "scared",
                                                              "gift", "share"}
    lex = lexicon()
    names = set(lex.girls) | set(lex.boys) | set(lex.pet_names)
    assert all(s.facts["hero"] in names for s in stories)
    assert all(s.facts["place"] in lex.settings or s.facts["place"] == s.words["noun"] for s in stories)


def test_data_files_ship_with_the_package():
    """pyproject's package-data covers every data file, so an installed wheel has them."""
    tomllib = pytest.importorskip("tomllib")
    from pathlib import Path

    import tinystories_lib.stories.storyteller as st

    root = Path(__file__).resolve().parents[1]
    globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    pkg = Path(st.__file__).parent
    files = sorted(p.relative_to(pkg) for p in (pkg / "data").iterdir())
    assert {f.name for f in files} == {"words.yaml", "templates.yaml", "plots.yaml", "foreshadowing.yaml"}
    assert all(any(f.match(g) for g in globs[st.__name__]) for f in files)


def test_deterministic_per_seed_and_id():
    spec = sample_prompts(1, seed=9)[0]
    a, b = Storyteller(seed=4).tell(spec), Storyteller(seed=4).tell(spec)
    assert a == b
    assert Storyteller(seed=5).tell(spec).text != a.text
    assert tell_stories(5, seed=2) == tell_stories(5, seed=2)


def test_generate_with_progress_bar():
    out = Storyteller().generate(3, seed=0, progress=True)
    assert [s.id for s in out] == ["p000000", "p000001", "p000002"]


def test_distinct_stories_at_scale(many):
    assert len(many) == N_BIG
    assert len({s.prompt for s in many}) == N_BIG  # every story from its own prompt
    assert len({s.text for s in many}) == N_BIG  # and no two alike


def test_opening_variety(many):
    once = sum(s.text.startswith("Once upon a time") for s in many) / len(many)
    assert once <= 0.2
    firsts = {" ".join(s.text.split()[:3]) for s in many}
    assert len(firsts) > 500
    assert len({s.facts["opening"] for s in many}) >= 15
    plots = {s.facts["plot"] for s in many}
    assert len(plots) == 7


# A reader's cue words, written without looking at the storyteller's templates: each feature must show in
# the text when asked for, and be much rarer when not.
_SAD = re.compile(r"\b(sad|sadly|cry|cried|crying|tears?|never|lost|broken?|hurt|scared|alone|gone|no one|not|"
                  r"nobody|too late|upset|lonely|missed)\b", re.I)
_MORAL = re.compile(r"\b(learn\w*|moral|lesson|remember\w*|knew that)\b", re.I)
_TWIST = re.compile(r"\b(surpris\w*|sudden\w*|turned out|all along|instead|unexpected\w*|expected)\b", re.I)


def _last_sentences(text: str, k: int = 3) -> str:
    return " ".join(re.split(r"(?<=[.!?])\s+", text.strip())[-k:])


def _rates(stories, feature, found) -> tuple[float, float]:
    asked = [found(s.text) for s in stories if feature in s.features]
    not_asked = [found(s.text) for s in stories if feature not in s.features]
    return sum(asked) / len(asked), sum(not_asked) / len(not_asked)


def test_features_read_as_asked_by_independent_cues(stories):
    hit, false = _rates(stories, "bad_ending", lambda t: bool(_SAD.search(_last_sentences(t))))
    assert hit >= 0.97 and false <= 0.3, (hit, false)  # a bad ending ends on something sad
    hit, false = _rates(stories, "moral_value", lambda t: bool(_MORAL.search(t)))
    assert hit >= 0.98 and false <= 0.3, (hit, false)
    hit, false = _rates(stories, "plot_twist", lambda t: bool(_TWIST.search(t)))
    assert hit >= 0.95 and false <= 0.25, (hit, false)
