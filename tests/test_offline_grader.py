"""The offline grader's four dimensions (grammar, consistency, creativity, plot) on real TinyStories: each
must score intact held-out endings clearly above endings broken in the way the dimension is about. And the
word trigram model under its grammar score, on hand-made text with known answers."""

from __future__ import annotations

import random
import statistics

import numpy as np
import pytest
from conftest import shared_path

from tinystories_lib.evals.entities import entity_report, text_facts
from tinystories_lib.evals.grades import LLM_DIMENSIONS, Completion
from tinystories_lib.evals.manipulation import mentions, swap_word
from tinystories_lib.evals.offline import OfflineGrader, shuffle_within_sentences, split_story
from tinystories_lib.evals.word_lm import UNK, WordTrigramLM
from tinystories_lib.stories.words import sentences, split_words

SAMPLE = "data/tinystories_sample/tinystories_v1_sample_2500.txt"
HEAD = "data/tinystories_v1_train_head/tinystories_v1_train_head_1096.txt"
N_CALIBRATION, N_TEST = 300, 120

# --- the word trigram model ------------------------------------------------------------------------

TEXTS = ["The cat sat on the mat. The cat was happy.", "The dog sat on the rug. The dog was sad.",
         "A cat and a dog played. They were happy."]


def test_lm_probabilities_sum_to_one_for_every_history():
    lm = WordTrigramLM(TEXTS)
    for history in ([], ["the"], ["the", "cat"], ["sat", "on"], ["never", "seen"], ["cat", "zebra"]):
        d = lm.distribution(history)
        assert d.sum() == pytest.approx(1.0, abs=1e-9) and (d[1:] > 0).all() and d[0] == 0.0


def test_lm_unseen_words_get_the_unknown_mass():
    lm = WordTrigramLM(TEXTS)  # words seen once ("mat", "rug", "played") are <unk> too
    assert "mat" not in lm.vocab and "cat" in lm.vocab
    for history in (["the"], ["the", "cat"], []):
        unk = lm.prob(history, UNK)
        assert unk > 0 and lm.prob(history, "zebra") == unk == lm.prob(history, "mat")
    assert lm.prob(["the", "cat"], "sat") > lm.prob(["the", "cat"], "dog")  # seen continuations win
    lp = lm.logprobs("The cat", " sat on the zebra.")
    assert len(lp) == len(split_words(" sat on the zebra.")) and (lp < 0).all()
    assert lm.mean_logprob("The cat", "") is None


def test_lm_is_deterministic():
    a, b = WordTrigramLM(TEXTS), WordTrigramLM(list(TEXTS))
    assert a.vocab == b.vocab and np.array_equal(a.tri_keys, b.tri_keys)
    assert np.array_equal(a.logprobs("The dog", " was happy."), b.logprobs("The dog", " was happy."))


def test_story_halves_and_shuffled_sentences():
    story = "Tom had a red ball. He threw it high up in the air. The ball went over the big fence. Tom was sad."
    beginning, ending = split_story(story, min_words=3)
    assert beginning + ending == story and beginning.endswith(".") and ending.startswith(" ")
    assert split_story("One short sentence only.") is None
    shuffled = shuffle_within_sentences(ending, random.Random(0))
    assert sorted(split_words(shuffled)) == sorted(split_words(ending))
    assert [s[-1] for s in sentences(shuffled)] == [s[-1] for s in sentences(ending)]  # end marks stay


# --- the grader on real stories --------------------------------------------------------------------


@pytest.fixture(scope="module")
def real():
    """The 2,500-story sample as training stories; the held-out V1 head (mojibake repaired) as
    calibration (the first 300) and test stories (others, never the calibration ones)."""
    from tinystories_lib.stories.cleaning import clean
    from tinystories_lib.stories.loading import load_txt

    train = [s.text for s in load_txt(shared_path(SAMPLE))]
    head, _ = clean(load_txt(shared_path(HEAD)), min_chars=0, max_chars=10**9)
    held_out = [s.text for s in head]
    calibration, test = held_out[:N_CALIBRATION], held_out[N_CALIBRATION:]
    assert not set(calibration) & set(test) and not set(held_out) & set(train)
    grader = OfflineGrader(train, calibration)
    pairs = [p for p in map(split_story, test) if p is not None][:N_TEST]
    assert len(pairs) == N_TEST
    return {"train": train, "grader": grader, "pairs": pairs, "intact": _grade(grader, pairs),
            "calibration": calibration}


def _grade(grader, pairs):
    grades = grader.grade([Completion("heldout", str(i), b, e) for i, (b, e) in enumerate(pairs)])
    assert all(g.status == "ok" for g in grades)
    return grades


def _assert_separates(dim, intact, broken, margin, share=0.8):
    """Intact above broken on `dim`: by `margin` in the mean, and in at least `share` of the pairs."""
    pairs = [(a.scores[dim], b.scores[dim]) for a, b in zip(intact, broken) if dim in a.scores and dim in b.scores]
    assert len(pairs) >= 0.9 * len(intact)
    mean_a, mean_b = statistics.mean(a for a, _ in pairs), statistics.mean(b for _, b in pairs)
    above = sum(a > b for a, b in pairs) / len(pairs)
    assert mean_a - mean_b >= margin and above >= share, (dim, mean_a, mean_b, above)


def test_real_grades_are_the_papers_dimensions_on_the_0_10_scale(real):
    grader, intact = real["grader"], real["intact"]
    assert set(grader.DIMENSIONS) == set(LLM_DIMENSIONS) and not grader.is_llm and "GPT-4" in grader.name
    a = grader.anchors
    assert a["grammar_logprob"]["hi"] > a["grammar_logprob"]["lo"] and a["topic_cosine"]["hi"] > a["topic_cosine"]["lo"]
    for g in intact:
        assert set(g.scores) <= set(LLM_DIMENSIONS) and {"grammar", "creativity", "plot"} <= set(g.scores)
        assert all(0.0 <= v <= 10.0 for v in g.scores.values()) and g.extra["anchors"] == a
    # real continuations sit near the top of the calibrated scales
    assert statistics.mean(g.scores["grammar"] for g in intact) > 8


def test_grammar_intact_above_shuffled_words(real):
    rng = random.Random(1)
    broken = _grade(real["grader"], [(b, shuffle_within_sentences(e, rng)) for b, e in real["pairs"]])
    _assert_separates("grammar", real["intact"], broken, margin=5.0, share=0.95)


NAMES = ["Lily", "Tom", "Ben", "Sue", "Max", "Mia", "Tim", "Anna", "Sam", "Lucy", "Jack", "Sara", "Bob", "Emma"]
OBJECTS = ["ball", "kite", "car", "doll", "book", "hat", "cake", "boat", "balloon", "box", "shoe", "drum"]


def test_consistency_intact_above_swapped_names_and_objects(real):
    """The ending's names (those the beginning set up) swapped for names the story never uses, and its
    main object (`text_facts`) for another; only endings the swap changed are compared."""
    grader, rng = real["grader"], random.Random(2)
    known = grader.train_index.common_words
    kept, swapped = [], []
    for i, (b, e) in enumerate(real["pairs"]):
        story, new = b + e, e
        for name in entity_report(b, "", known).names_beginning:
            new = swap_word(new, name, rng.choice([n for n in NAMES if not mentions(story, n)]))
        obj = text_facts(story, known)["object"]
        if obj and mentions(b, obj):
            new = swap_word(new, obj, rng.choice([o for o in OBJECTS if not mentions(story, o)]))
        if new != e:
            kept.append(real["intact"][i])
            swapped.append((b, new))
    assert len(kept) >= N_TEST // 2
    _assert_separates("consistency", kept, _grade(grader, swapped), margin=2.0)


def test_consistency_intact_above_another_storys_ending(real):
    pairs = real["pairs"]
    broken = _grade(real["grader"], [(b, pairs[(i + 7) % len(pairs)][1]) for i, (b, _) in enumerate(pairs)])
    _assert_separates("consistency", real["intact"], broken, margin=4.0, share=0.9)


def test_creativity_intact_above_copied_training_text(real):
    """A training story's second half after its own first half: copied, so not creative."""
    copied = [p for p in map(split_story, real["train"][: 2 * N_TEST]) if p is not None][:N_TEST]
    broken = _grade(real["grader"], copied)
    assert max(g.extra["raw"]["rouge2_precision"] for g in broken) == 1.0
    _assert_separates("creativity", real["intact"], broken, margin=4.0, share=0.95)


def test_plot_intact_above_truncated_and_repeated(real):
    """The ending cut after its first sentence, and that sentence said again until it is as long."""
    def looped(ending):
        first = sentences(ending)[0]
        out = first
        while len(out) < len(ending):
            out += " " + first
        return " " + out

    broken = _grade(real["grader"], [(b, looped(e)) for b, e in real["pairs"]])
    _assert_separates("plot", real["intact"], broken, margin=3.0, share=0.95)
    _assert_separates("creativity", real["intact"], broken, margin=3.0)  # a loop is not creative either


def test_grammar_under_a_published_model_intact_above_shuffled_words(real):
    """With stories260K (a published TinyStories model) as the grammar model: the same separation, on its
    own anchors, and the grader says which model it used."""
    from tinystories_lib.stages.references import load_reference

    ref = load_reference(str(shared_path("models/stories260K/stories260K.bin")))
    grader = OfflineGrader(real["train"], real["calibration"][:120], reference=ref)
    assert "stories260K" in grader.anchors["grammar_logprob"]["model"]
    pairs = real["pairs"][:80]
    intact = _grade(grader, pairs)
    rng = random.Random(2)
    broken = _grade(grader, [(b, shuffle_within_sentences(e, rng)) for b, e in pairs])
    _assert_separates("grammar", intact, broken, margin=5.0, share=0.95)
    assert "stories260K" in intact[0].extra["details"]["grammar_model"]


def test_creativity_intact_above_the_same_ending_in_commoner_words(real):
    """Half the words of the ending whose stems are not among the corpus's commonest content words
    swapped for one of the commonest ("play", "happy", "tree", ...): less specific, so less creative."""
    from collections import Counter

    from tinystories_lib.stories.words import STOP_WORDS, base_word, stem, words

    grader, rng = real["grader"], random.Random(3)
    generic = grader.topics.generic
    counts = Counter(w for t in real["train"][:500] for w in words(t) if w not in STOP_WORDS and stem(w) in generic)
    plain = [w for w, _ in counts.most_common(30)]

    def generic_words(ending):
        for w in dict.fromkeys(base_word(w) for w in words(ending)):
            if len(w) > 1 and "'" not in w and w not in STOP_WORDS and stem(w) not in generic and rng.random() < 0.5:
                ending = swap_word(ending, w, rng.choice(plain))
        return ending

    broken = _grade(grader, [(b, generic_words(e)) for b, e in real["pairs"]])
    share = [(a.extra["raw"]["specific_share"], b.extra["raw"]["specific_share"]) for a, b in zip(real["intact"], broken)]
    assert statistics.mean(b for _, b in share) < 0.6 * statistics.mean(a for a, _ in share)
    _assert_separates("creativity", real["intact"], broken, margin=1.5)
