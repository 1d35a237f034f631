"""Notebook 05's measures on hand-made texts with known answers, and the notebook itself on the tiny profile."""

from __future__ import annotations

import json
import math
import random

import pytest

from tinystories_lib.evals import manipulation, memorization
from tinystories_lib.evals.ngram_index import NgramIndex
from tinystories_lib.evals.text_metrics import rouge2_precision
from tinystories_lib.stories.records import Story

TRAIN = [
    "Once upon a time there was a girl named Lily. She had a red ball and she loved to play in the park.",
    "Tom saw a big green frog near the pond. The frog jumped into the water and Tom laughed.",
    "The sun was hot, so Mia drank cold lemonade under the old tree with her dog Max.",
    "A small bird sang a happy song every morning on the roof of the blue house.",
]


@pytest.fixture(scope="module")
def index():
    return NgramIndex(TRAIN)


def test_an_exact_copy_scores_one_and_finds_its_story(index):
    [s] = memorization.memorization_scores([TRAIN[1]], index, TRAIN)
    assert s["story"] == 1 and s["rouge2"] == 1.0 and s["rougeL"] == 1.0 and s["exact"]


def test_a_copied_passage_scores_one_and_an_unrelated_text_near_zero(index):
    copied, unrelated = memorization.memorization_scores(
        ["the frog jumped into the water", "Purple engines whistle loudly beneath quiet mountains tonight."],
        index, TRAIN)
    assert copied["story"] == 1 and copied["rouge2"] == 1.0 and copied["rougeL"] == 1.0
    assert unrelated["rouge2"] == 0.0 and unrelated["story"] is None


def test_scores_agree_with_the_plain_rouge_definition(index):
    text = "Lily had a red ball. The frog jumped and she loved to play."
    [s] = memorization.memorization_scores([text], index, TRAIN)
    assert s["rouge2"] == pytest.approx(max(rouge2_precision(text, t) for t in TRAIN))
    assert s["rouge2"] == pytest.approx(rouge2_precision(text, TRAIN[s["story"]]))


def test_a_text_without_bigrams_is_left_out(index):
    [s] = memorization.memorization_scores(["frog"], index, TRAIN)
    assert math.isnan(s["rouge2"]) and s["n_bigrams"] == 0


def test_the_index_must_match_the_texts(index):
    with pytest.raises(ValueError, match="same list"):
        memorization.memorization_scores(["a b"], index, TRAIN[:2])


def test_baseline_excludes_self_matches():
    texts = TRAIN + [TRAIN[0].replace("red", "blue")]  # story 4 is a near copy of story 0
    rows = memorization.self_similarity_baseline(texts, n=len(texts), seed=0)
    assert sorted(r["source"] for r in rows) == list(range(len(texts)))
    assert all(r["story"] != r["source"] for r in rows)
    near = {r["source"]: r for r in rows}
    assert near[0]["story"] == 4 and near[4]["story"] == 0 and 0.8 < near[0]["rouge2"] < 1.0
    assert near[3]["rouge2"] < 0.3  # the bird story has no twin


def test_baseline_chunks_match_the_requested_length():
    long = " ".join(f"Sentence {i} is here." for i in range(40))
    chunk = memorization._chunk(long, 12)
    assert chunk.startswith("Sentence 1 is") and len(chunk.split()) == 12  # starts after the first sentence
    assert memorization._chunk(TRAIN[3], 100) == TRAIN[3]  # shorter than asked: whole
    rows = memorization.self_similarity_baseline([long, TRAIN[0]], n=2, seed=3, words=12)
    assert all(r["n_bigrams"] <= 12 + 3 for r in rows)  # 12 words plus their split-off punctuation


def test_closest_pairs_rank_by_rouge2_and_align_the_passage(index):
    comps = ["Purple engines whistle.", "the frog jumped into the water", "Mia drank cold lemonade and smiled."]
    scores = memorization.memorization_scores(comps, index, TRAIN)
    pairs = memorization.closest_pairs(scores, comps, TRAIN, k=2)
    assert [p["completion"] for p in pairs] == [comps[1], comps[2]]
    assert "frog jumped into the water" in pairs[0]["excerpt"]
    assert "frog jumped" in memorization.format_pair(pairs[0])


# --- the manipulation check ----------------------------------------------------------------------


def test_swap_is_consistent_keeps_case_and_fixes_articles():
    text = "Tom had a kite. Tom's kite was red. Kite flying made Tom happy. Tomato soup was hot."
    out = manipulation.swap_word(text, "Tom", "Ben")
    assert out == "Ben had a kite. Ben's kite was red. Kite flying made Ben happy. Tomato soup was hot."
    out = manipulation.swap_word(text, "kite", "apple")
    assert out == "Tom had an apple. Tom's apple was red. Apple flying made Tom happy. Tomato soup was hot."
    assert manipulation.swap_word("An owl saw an owl.", "owl", "cat") == "A cat saw a cat."


def test_follows_manipulation():
    assert manipulation.follows_manipulation("Ben ran home with his ball.", "Ben", "Tom")
    assert not manipulation.follows_manipulation("Tom ran home.", "Ben", "Tom")
    assert not manipulation.follows_manipulation("Ben and Tom ran.", "Ben", "Tom")  # the old name came back
    assert not manipulation.follows_manipulation("He ran home.", "Ben", "Tom")  # neither: no evidence
    assert not manipulation.follows_manipulation("Bent sticks.", "Ben", "Tom")  # whole words only
    assert manipulation.follows_manipulation("The Kite flew.", "kite", "ball")


def _story(i: int, name: str, gender: str, obj: str, friend: str) -> Story:
    text = (f"Once there was a little {gender} named {name}. {name} had a shiny {obj}. "
            f"The {obj} was new. {name} played with {friend} every day. They were happy.")
    chars = [{"name": name, "gender": gender, "role": "hero"},
             {"name": friend, "gender": "girl", "role": "friend"}]
    return Story(id=f"s{i}", text=text, source="storyteller",
                 facts={"characters": chars, "hero": name, "object": obj, "animal": "cat", "place": "park"})


STORIES = [_story(0, "Tom", "boy", "kite", "Mia"), _story(1, "Lily", "girl", "ball", "Sue"),
           _story(2, "Ben", "boy", "drum", "Amy"), _story(3, "Zoe", "girl", "apple", "Ann")]


def test_word_pool_by_gender_and_object():
    pool = manipulation.word_pool(STORIES)
    assert pool["boy"] == ["Ben", "Tom"]
    assert "Lily" in pool["girl"] and "Mia" in pool["girl"]
    assert pool["object"] == ["apple", "ball", "drum", "kite"]


def test_manipulate_swaps_every_occurrence_for_a_same_gender_name():
    pool = manipulation.word_pool(STORIES)
    s = STORIES[0]
    case = manipulation.manipulate(s.text, s.facts, "name", random.Random(0), pool)
    assert (case.old, case.new) == ("Tom", "Ben")  # the only other boy
    assert case.manipulated.count("Ben") == 3 and "Tom" not in case.manipulated
    assert case.manipulated == s.text.replace("Tom", "Ben")
    obj = manipulation.manipulate(s.text, s.facts, "object", random.Random(0), pool)
    assert obj.old == "kite" and obj.new in {"apple", "ball", "drum"}
    assert "kite" not in obj.manipulated.lower() and obj.manipulated.count(obj.new) == 2
    assert "Mia" not in {case.new, obj.new}  # never a word the story already uses
    assert manipulation.manipulate("The cat slept.", s.facts, "name", random.Random(0), pool) is None


def test_manipulate_without_facts_finds_names_by_capitalisation():
    case = manipulation.manipulate("Sam went to the park. Sam saw a dog.", None, "name", random.Random(1),
                                {"boy": ["Ben"], "girl": ["Mia"]})
    assert case.old == "Sam" and "Sam" not in case.manipulated and case.new in {"Ben", "Mia"}


def test_story_beginning_stops_before_the_second_mention():
    text = STORIES[0].text
    assert manipulation.story_beginning(text, "Tom") == "Once there was a little boy named Tom."
    assert manipulation.story_beginning(text, "kite") == "Once there was a little boy named Tom. Tom had a shiny kite. The"
    assert manipulation.story_beginning(text, "Mia") is None  # named once only
    assert manipulation.story_beginning(text, "kite", max_sentences=2) is None  # second mention too late


def test_manipulation_cases_and_rates():
    pool = manipulation.word_pool(STORIES)
    cases = manipulation.manipulation_cases(STORIES, 2, pool, seed=0)
    assert [c.kind for c in cases] == ["name", "name", "object", "object"]
    assert len({c.story_id for c in cases if c.kind == "name"}) == 2
    results = [{"kind": "name", "follows": True, "keeps_old": False, "original_mentions": True},
               {"kind": "name", "follows": False, "keeps_old": True, "original_mentions": True},
               {"kind": "object", "follows": False, "keeps_old": False, "original_mentions": False}]
    name, obj = manipulation.follow_rates(results, "m")
    assert (name["n"], name["follows"], name["keeps_old"], name["neither"]) == (2, 0.5, 0.5, 0.0)
    assert obj["neither"] == 1.0 and obj["original_mentions"] == 0.0
    assert "| m | name | 2 | 50% |" in manipulation.rates_table([name, obj])


def test_manipulation_check_runs_a_model_end_to_end():
    from tinystories_lib.lm.model import GPTNeo, GPTNeoConfig
    from tinystories_lib.lm.sample import SamplingConfig
    from tinystories_lib.lm.tokenizer import train_bpe

    codec = train_bpe([s.text for s in STORIES] * 3, 300)
    model = GPTNeo(GPTNeoConfig(vocab_size=codec.vocab_size, context=64, hidden=16, layers=1, heads=2,
                                window=16)).eval()
    rows = manipulation.manipulation_check(model, codec, STORIES, 1, cfg=SamplingConfig(max_new_tokens=5,
                                        temperature=0.0), label="untrained")
    assert [r["kind"] for r in rows] == ["name", "object"] and all(r["n"] == 1 for r in rows)


def test_means_table_lists_models_and_baseline(index):
    scores = {"m": memorization.memorization_scores(["the frog jumped into the water", "frog"], index, TRAIN)}
    table = memorization.means_table(scores, memorization.self_similarity_baseline(TRAIN, 2, 0, index=index))
    assert "| m | 1 | 1.000 |" in table and "baseline" in table


def test_plots_draw(index):
    from tinystories_lib.show import plots

    scores = {"a": memorization.memorization_scores(TRAIN[:2], index, TRAIN), "b": []}
    fig = plots.rouge_histograms(scores, memorization.self_similarity_baseline(TRAIN, 3, 0, index=index))
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 2
    rows = [{"model": "a", "kind": "name", "follows": 0.5, "original_mentions": 0.8},
            {"model": "a", "kind": "object", "follows": 0.2, "original_mentions": 0.4}]
    assert plots.manipulation_bars(rows).axes


@pytest.mark.slow
def test_notebook_05_on_the_tiny_profile(tmp_path):
    from tinystories_lib.reproduce import reproduce

    # Shrunk further than tiny: the notebook trains its models from scratch in tmp_path.
    small = {"data.n_stories": 600, "sweep.hidden": [16], "sweep.layers": [1, 2], "sweep.max_steps": 5,
             "train.max_steps": 10, "train.checkpoint_steps": [], "diversity.n_prompts": 3,
             "diversity.baseline_stories": 10, "diversity.manipulations": 3}
    reproduce("tiny", only=["05"], overrides=small, runs_root=tmp_path / "runs", figures_root=tmp_path / "figs",
              log_output=False)
    figs = tmp_path / "figs" / "tiny"
    assert (figs / "rouge_histograms.png").stat().st_size > 0
    assert (figs / "manipulation_check.png").stat().st_size > 0
    manifest = json.loads((figs / "manifest.json").read_text())
    assert "Section 4" in manifest["figures"]["rouge_histograms"]["reproduces"]
