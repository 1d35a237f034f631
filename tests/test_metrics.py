"""Offline metrics: each on hand-made cases with known answers, the n-gram index against a brute-force scan,
and the aggregation math against a hand computation."""

from __future__ import annotations

import math
import random

import pytest

from tinystories_lib.evals.entities import common_words, entity_consistency, entity_report
from tinystories_lib.evals.grade_tables import (
    age_distribution,
    aggregate,
    append_grades_jsonl,
    grades_table,
    read_grades_jsonl,
)
from tinystories_lib.evals.grades import LLM_DIMENSIONS, Completion, Grade
from tinystories_lib.evals.intervals import mean_ci, t_critical
from tinystories_lib.evals.ngram_index import NgramIndex
from tinystories_lib.evals.offline import OfflineGrader
from tinystories_lib.evals.text_metrics import (
    completes_sentence,
    distinct_n,
    ends_mid_sentence,
    lcs_length,
    repetition_rate,
    rouge2_precision,
    rouge_l_precision,
)
from tinystories_lib.stories.words import split_words

# --- tokens, variety, looping --------------------------------------------------------------------


def test_tokens_lowercase_and_split_punctuation():
    assert split_words("Hello, Tom! Don't go.") == ["hello", ",", "tom", "!", "don't", "go", "."]
    assert split_words("Tom’s hat", lower=False) == ["Tom's", "hat"]


def test_distinct_n():
    assert distinct_n(["the cat the cat"], 2) == pytest.approx(2 / 3)  # (the cat) x2, (cat the)
    assert distinct_n("a b c", 1) == 1.0
    assert distinct_n(["a b", "a b"], 2) == 0.5  # pooled; no bigram spans two texts
    assert distinct_n(["a", ""], 2) == 0.0  # no bigrams at all


def test_repetition_rate():
    assert repetition_rate("a b c d a b c d") == pytest.approx(1 / 5)  # abcd returns once among 5
    assert repetition_rate("one two three four five") == 0.0
    assert repetition_rate("too short") == 0.0
    assert repetition_rate(" ".join(["the dog ran"] * 20)) > 0.9


# --- overlap -------------------------------------------------------------------------------------


def test_rouge2_precision_counts_and_clips():
    assert rouge2_precision("the cat sat", "the cat ran") == 0.5
    assert rouge2_precision("a b a b a b", "a b") == pytest.approx(1 / 5)  # (a b) x3 clipped to 1 of 5
    assert rouge2_precision("Lily ran.", "lily ran . then") == 1.0
    assert rouge2_precision("word", "word") == 0.0


def _lcs_dp(a, b):
    row = [0] * (len(b) + 1)
    for x in a:
        prev_diag = 0
        for j, y in enumerate(b, 1):
            prev_diag, row[j] = row[j], prev_diag + 1 if x == y else max(row[j], row[j - 1])
    return row[-1]


def test_lcs_matches_dynamic_programming():
    rng = random.Random(0)
    assert lcs_length("abcbdab", "bdcaba") == 4
    for _ in range(300):
        a = [rng.choice("abcd") for _ in range(rng.randint(0, 40))]
        b = [rng.choice("abcd") for _ in range(rng.randint(0, 90))]
        assert lcs_length(a, b) == _lcs_dp(a, b)


def test_rouge_l_precision():
    assert rouge_l_precision("a b c d", "a c d e") == 0.75
    assert rouge_l_precision("", "a") == 0.0


# --- the index against brute force --------------------------------------------------------------


def _random_corpus(rng, n, vocab_size=40):
    words = [f"w{i}" for i in range(vocab_size)]
    weights = [1 / (i + 1) for i in range(vocab_size)]  # Zipf-like: some bigrams in many stories
    return [" ".join(rng.choices(words, weights, k=rng.randint(1, 40))) for _ in range(n)]


def _queries(rng, stories, n):
    out = []
    for i in range(n):
        src = stories[rng.randrange(len(stories))].split()
        a = rng.randrange(len(src))
        piece = src[a : a + rng.randint(2, 15)]
        extra = _random_corpus(rng, 1)[0].split()[:5] + ["unseen"] * (i % 3)
        out.append(" ".join(piece + extra if i % 2 else extra + piece))
    return out + ["", "w1", "unseen words only here"]


@pytest.fixture(scope="module")
def corpus():
    """Stories, queries, and each query's Rouge-2 precisions against every story, best first."""
    rng = random.Random(1)
    stories = _random_corpus(rng, 300)
    queries = _queries(rng, stories, 150)
    brute = {q: sorted((rouge2_precision(q, s) for s in stories), reverse=True) for q in queries}
    return stories, queries, brute


def test_index_is_exact_without_caps(corpus):
    stories, queries, brute = corpus
    index = NgramIndex(stories, max_postings=None, chunk_stories=64)  # chunked build across several chunks
    for text in queries:
        for k in (1, 3):
            found = index.search(text, k, batch=16)
            assert found.exact
            assert [score for _, score in found.hits] == [s for s in brute[text][:k] if s > 0], text
            for idx, score in found.hits:  # the reported story really has that score
                assert rouge2_precision(text, stories[idx]) == score


def test_index_with_caps_reports_true_scores_and_flags_exactness(corpus):
    stories, queries, brute = corpus
    index = NgramIndex(stories, max_postings=15, max_candidates=40)
    n_exact = 0
    for text in queries:
        found = index.search(text, 2, batch=8)
        best = brute[text][:2]
        for idx, score in found.hits:
            assert rouge2_precision(text, stories[idx]) == score
        if found.hits:
            assert found.hits[0][1] <= best[0]
        if found.exact:
            n_exact += 1
            assert [s for _, s in found.hits] == [s for s in best if s > 0]
    assert 0 < n_exact < len(queries)  # the caps bite on some queries, not all


def test_index_novelty_and_save_load(corpus, tmp_path):
    stories, queries, _ = corpus
    index = NgramIndex(stories[:50])
    assert index.novelty(next(s for s in stories[:50] if len(s.split()) > 3)) == 0.0
    assert index.novelty("unseen words here") == 1.0
    assert index.novelty("") is None
    index.save(tmp_path / "index.npz")
    loaded = NgramIndex.load(tmp_path / "index.npz")
    assert len(loaded) == 50 and loaded.max_postings == index.max_postings
    assert loaded.common_words == index.common_words
    for text in queries[:30]:
        assert loaded.nearest(text, 2) == index.nearest(text, 2)


def test_index_on_sentences():
    stories = ["Once upon a time, a cat sat on a mat.", "A dog ran in the park. The dog was happy.", ""]
    index = NgramIndex(stories)
    assert index.nearest("The dog was happy and the cat sat.", k=2) == [(1, 3 / 8), (0, 1 / 8)]
    assert NgramIndex([]).nearest("a b") == []


# --- entities ------------------------------------------------------------------------------------

BEGIN_TWO = "Tom and Lily went to the park. Tom saw a red ball and"


@pytest.mark.parametrize(
    "beginning, completion, expected",
    [
        (BEGIN_TWO, " Lily kicked it.", 1.0),
        (BEGIN_TWO, " Max kicked it.", 0.0),  # a new name where the beginning had two
        (BEGIN_TWO, " Lily and Max kicked it.", 0.5),
        (BEGIN_TWO, " Lily's dog ran after it.", 1.0),  # possessive is still Lily
        ("Lily was sad. She lost her doll, so she", " cried. He was sad too.", 0.0),  # gender flips
        ("Lily was sad. She lost her doll, so she", " cried until she found it.", 1.0),
        ("Lily was sad. She lost her doll, so she", " cried. Then Lily found it and he smiled.", 0.5),
        ("Once upon a time, there was a cat.", " The cat was happy.", 1.0),  # nothing to contradict
        ("One day, Sam went out.", " Suddenly, Mom called him.", 1.0),  # starters and roles are no names
    ],
)
def test_entity_consistency(beginning, completion, expected):
    assert entity_consistency(beginning, completion) == pytest.approx(expected)


def test_common_words_tell_names_from_capitalised_words():
    corpus = ["Lily saw the sun. She said hi to Lily and guess what, the sun was warm.", "Guess who came?"]
    assert common_words(corpus) >= {"sun", "guess", "the"} and "lily" not in common_words(corpus)
    beginning, completion = "Tom had a kite. Tom", " ran. Guess what? Tom flew it."
    assert entity_report(beginning, completion).names_new == ["Guess"]  # text alone cannot tell
    assert entity_report(beginning, completion, known_words={"guess"}).names_new == []
    assert entity_report("Sam was", " happy. I'm glad, Don't go.").names_new == []  # contractions
    assert NgramIndex(iter(corpus)).common_words == common_words(corpus)  # a one-pass iterable is fine


def test_entity_report_details():
    r = entity_report(BEGIN_TWO, " Lily and Max kicked it.")
    assert (r.names_beginning, r.names_kept, r.names_new) == (["Tom", "Lily"], ["Lily"], ["Max"])
    assert entity_report("A cat sat.", " It slept.").score is None
    # Two names in the beginning: pronouns are not checked (he may be Tom).
    assert entity_report("Lily and Tom played. She laughed and", " he ran.").score is None


# --- sentence closure ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("so she went", True),
        ("She went to bed.", False),
        ('"Let\'s go!" said Tom.', False),
        ('He shouted, "Stop!"', False),
        ('At lunch, a boy said, "', True),  # an open quote
        ("She went to the pa", True),
        ("", False),
    ],
)
def test_ends_mid_sentence(text, expected):
    assert ends_mid_sentence(text) is expected


@pytest.mark.parametrize(
    "beginning, completion, expected",
    [
        ("Alice was tired so she went", " to bed. She slept.", True),
        ("She went to the pa", "rk!", True),  # finishes the word, then the sentence
        ("Ben gave the ball to", " Tom, and Tom said thanks.", True),  # a name may start the completion
        ("He had a dog and", " Once upon a time there was a cat.", False),  # restarts the story
        ("He had a dog and", " the dog ran " + "and ran " * 30 + "away.", False),  # too long to count
        ("He had a dog and", " the dog ran and ran", False),  # never ends
        ("He had a dog and", "", False),
        ('The boy said, "', 'Hello! I am Sam."', True),  # a capital is expected inside the quote
        ("The sun was hot.", " The end", True),  # no open sentence: nothing to complete
    ],
)
def test_completes_sentence(beginning, completion, expected):
    assert completes_sentence(beginning, completion) is expected


# --- the grader ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def offline_grader():
    from tinystories_lib.stories.storyteller import tell_stories

    train = [s.text for s in tell_stories(300, seed=0)]
    return train, OfflineGrader(train, [s.text for s in tell_stories(30, seed=99)])


def test_offline_grader_scores_the_papers_dimensions_and_says_it_is_not_gpt4(offline_grader):
    train, grader = offline_grader
    assert grader.name == "offline grader (not GPT-4)" and grader.is_llm is False
    assert "NOT the paper's GPT-4" in OfflineGrader.__doc__
    assert set(OfflineGrader.DIMENSIONS) == set(LLM_DIMENSIONS)
    story = train[0]
    cut = story.index(" ", len(story) // 2)
    copied = Completion("m", "p1", story[:cut], story[cut:], step=5)
    salad = Completion("m", "p2", story[:cut], " moon quietly the purple sang banana under of jump.")
    g1, g2 = grader.grade([copied, salad])
    assert (g1.grader, g1.step, g1.completion_key, g1.status) == (grader.name, 5, copied.key, "ok")
    for g in (g1, g2):
        assert set(g.scores) == set(OfflineGrader.DIMENSIONS)
        assert all(0.0 <= v <= 10.0 for v in g.scores.values())
        assert g.extra["anchors"] == grader.anchors and "novelty" in g.extra["raw"]
    assert g1.extra["raw"]["novelty"] == 0.0 and g1.scores["creativity"] == 0.0
    assert g1.extra["details"]["nearest_story"] == 0
    assert g2.extra["raw"]["novelty"] > 0.8 and g2.scores["creativity"] < 2.0  # novel, but not fluent
    assert g1.scores["grammar"] > g2.scores["grammar"] + 5
    row = grades_table([g1, g2]).splitlines()[2]
    assert row.startswith("| m | 5 | offline grader (not GPT-4) |")


def test_offline_grader_too_short_and_failure(offline_grader, monkeypatch):
    _, grader = offline_grader
    (g,) = grader.grade([Completion("m", "p", "Tom had a", " ")])
    assert g.status == "ok" and g.scores == dict.fromkeys(OfflineGrader.DIMENSIONS, 0.0) and g.extra["details"]["note"]

    def broken(text, n=4):
        raise ValueError("boom")

    monkeypatch.setattr("tinystories_lib.evals.offline.repetition_rate", broken)
    (g,) = grader.grade([Completion("m", "p", "Tom had a", " dog. Tom loved it.")])
    assert g.status == "failed" and "boom" in g.reason and g.scores == {}


def test_offline_grader_needs_held_out_calibration_stories(offline_grader):
    train, _ = offline_grader
    with pytest.raises(ValueError, match="calibration"):
        OfflineGrader(train, train[:50])  # all training stories: none held out


# --- aggregation ---------------------------------------------------------------------------------


def test_t_critical_known_values():
    for df, t in [(1, 12.7062), (2, 4.3027), (5, 2.5706), (10, 2.2281), (30, 2.0423), (100, 1.9840),
                  (1000, 1.9623), (5000, 1.9604)]:
        assert t_critical(df) == pytest.approx(t, abs=1e-4)
    assert t_critical(4, 0.99) == pytest.approx(4.6041, abs=1e-4)


def test_t_critical_against_scipy():
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 3, 7, 8, 51, 200, 999, 1001, 20000):
        for conf in (0.9, 0.95, 0.99):
            assert t_critical(df, conf) == pytest.approx(stats.t.ppf(0.5 + conf / 2, df), rel=1e-6)


def _grade(model, score, step=None, status="ok", age=None):
    scores = {"grammar": score, "plot": score - 1} if status == "ok" else {}
    return Grade(model, "p", "k", "judge", scores, age_group=age, status=status, step=step)


def test_aggregate_matches_hand_computation():
    grades = [_grade("a", 6), _grade("a", 8), _grade("a", 10), _grade("a", 0, status="failed"),
              _grade("a", 7, step=100), _grade("b", 0, status="failed")]
    rows = {(r["model"], r["step"], r["dimension"]): r for r in aggregate(grades)}
    assert len(rows) == 6  # 3 groups x the grader's 2 dimensions
    g = rows[("a", None, "grammar")]
    # mean 8, sample sd 2, se 2/sqrt(3), t(0.975, df=2) = 4.302653
    half = 4.302653 * 2 / math.sqrt(3)
    assert (g["mean"], g["n"], g["n_failed"]) == (8.0, 3, 1)
    assert g["std"] == pytest.approx(2.0) and g["ci95"] == pytest.approx(half, rel=1e-6)
    assert (g["ci_low"], g["ci_high"]) == (pytest.approx(8 - half), pytest.approx(8 + half))
    assert rows[("a", None, "plot")]["mean"] == 7.0
    single = rows[("a", 100, "grammar")]
    assert (single["mean"], single["n"]) == (7.0, 1) and math.isnan(single["ci95"])
    failed = rows[("b", None, "grammar")]  # all failed: counted, mean undefined
    assert (failed["n"], failed["n_failed"]) == (0, 1) and math.isnan(failed["mean"])
    (only_failures,) = aggregate([_grade("c", 0, status="failed")])
    assert only_failures["dimension"] is None and only_failures["n_failed"] == 1
    assert mean_ci([1.0, 2.0, 3.0], 0.99)["ci"] == pytest.approx(9.924843 / math.sqrt(3), rel=1e-6)


def test_age_distribution():
    grades = [_grade("a", 5, age="B"), _grade("a", 5, age="B"), _grade("a", 5, age="C"), _grade("a", 5)]
    (row,) = age_distribution(grades)
    assert row["n"] == 3 and row["counts"]["B"] == 2 and row["shares"]["C"] == pytest.approx(1 / 3)
    assert list(row["counts"]) == ["A", "B", "C", "D", "E", "F"]
    assert age_distribution([_grade("a", 5)]) == []


def test_grades_table_shape():
    grades = [_grade("a", 6), _grade("a", 8), _grade("a", 10), _grade("b", 5, step=3),
              _grade("c", 0, status="failed")]
    table = grades_table(grades)
    lines = table.splitlines()
    assert lines[0] == "| model | step | grader | grammar | plot | n | failed |"
    assert "| a | final | judge | 8.00 ± 4.97 | 7.00 ± 4.97 | 3 | 0 |" in lines
    assert "| b | 3 | judge | 5.00 | 4.00 | 1 | 0 |" in lines
    assert "| c | final | judge | – | – | 0 | 1 |" in lines


def test_grades_jsonl_append_and_read(tmp_path):
    path = tmp_path / "logs" / "grades.jsonl"
    assert read_grades_jsonl(path) == []
    first = [_grade("a", 6), _grade("a", 0, status="failed")]
    assert append_grades_jsonl(path, first) == 2
    with open(path, "a") as f:
        f.write('{"model": "cut sho')  # a write killed mid-line
    append_grades_jsonl(path, [_grade("b", 9, step=2)])
    with pytest.warns(UserWarning, match="skipped 1"):
        back = read_grades_jsonl(path)
    assert back == first + [_grade("b", 9, step=2)]


def test_ngram_index_dense_and_searchsorted_lookups_agree():
    from tinystories_lib.evals.ngram_index import NgramIndex
    from tinystories_lib.stories.storyteller import tell_stories

    stories = [s.text for s in tell_stories(300, seed=3)]
    index = NgramIndex(stories)
    queries = [s.text[: len(s.text) // 2] for s in tell_stories(20, seed=99)] + stories[:3]
    dense = [index.search(q, k=3) for q in queries]
    index.DENSE_TABLE_MAX = 0  # force the large-vocabulary path
    searched = [index.search(q, k=3) for q in queries]
    assert [r.hits for r in dense] == [r.hits for r in searched]
    assert all(r.hits[0][1] == 1.0 for r in searched[-3:])  # a training story finds itself


def test_evaluation_helpers_for_notebook_04():
    from tinystories_lib.evals.grades import Completion
    from tinystories_lib.stages import grading

    items = [Completion(model=m, prompt_id=p, beginning=f"Once {p}", completion=f" {m} wrote  ")
             for p in ("a", "b", "c", "d") for m in ("h16-l1", "h32-l2")]
    text = grading.completions_by_prompt(items, n_prompts=2)
    assert text.count("BEGINNING:") == 2 and "BEGINNING: Once a" in text and "Once c" not in text
    assert "      h16-l1: ...h16-l1 wrote" in text
    table = [{"model": "x", "dimension": d, "mean": 1.0} for d in ("grammar", "plot", "grammar", "")]
    assert grading.dimensions(table) == ["grammar", "plot"]
    md = grading.perplexity_table("h32-l2", {"h16-l1": 12.345, "h32-l2": 5.0})
    assert md.splitlines() == ["| model | mean perplexity under h32-l2 |", "|---|---:|", "| h16-l1 | 12.3 |",
                               "| h32-l2 | 5.0 |"]
