import math
import re
import types

import pytest
import torch
import torch.nn as nn

from tinystories_lib.evals.eval_prompts import EvalPrompt
from tinystories_lib.evals.grades import Completion
from tinystories_lib.evals.probes import (
    PROBE_KINDS,
    PRONOUN_SETS,
    _next_word,
    _Pools,
    _pronoun_slot,
    _window,
    _windows,
    _word_set,
    _word_spans,
    build_probes,
    perplexity,
    perplexity_of_completions,
    probe_accuracy,
    probe_completions,
    probe_table,
    score_probes,
)
from tinystories_lib.lm.model import GPTNeo, GPTNeoConfig
from tinystories_lib.lm.tokenizer import train_bpe
from tinystories_lib.stories.storyteller import lexicon, tell_stories


@pytest.fixture(scope="module")
def stories():
    return tell_stories(300, seed=11)


@pytest.fixture(scope="module")
def codec(stories):
    return train_bpe([s.text for s in stories[:200]], 400)


@pytest.fixture(scope="module")
def probes(stories):
    return build_probes(stories[:200], 200, seed=0)


def tiny_model(codec, context=48):
    torch.manual_seed(0)
    cfg = GPTNeoConfig(vocab_size=codec.vocab_size, context=context, hidden=32, layers=2, heads=4, window=16)
    return GPTNeo(cfg).eval()


def logprob_unbatched(model, ctx, tgt):
    """Reference: one sequence, cropped from the left, no padding."""
    ids = (ctx + tgt)[-model.cfg.context:]
    with torch.no_grad():
        lp = torch.log_softmax(model(torch.tensor([ids]))[0][0].float(), -1)
    n = len(ids)
    return [lp[n - len(tgt) - 1 + i, t].item() for i, t in enumerate(tgt)]


# ------------------------------------------------------------------ building


def test_oracle_probes_are_determined_by_the_story(stories, probes):
    by_id = {s.id: s for s in stories}
    kinds = {p.kind for p in probes}
    assert len(probes) == 200 and kinds == set(PROBE_KINDS)
    assert len({p.id for p in probes}) == len(probes)
    for p in probes:
        story = by_id[p.story_id]
        hero = story.facts["characters"][0]
        flags = re.I if p.kind == "pronoun" else 0
        # the cut is exact: prefix + answer is the story's own text, at a word boundary
        assert story.text.startswith(p.prefix + p.answer)
        assert not story.text[len(p.prefix) + len(p.answer):][:1].isalnum()
        assert p.prefix == "" or not p.prefix[-1].isalnum()
        # the answer was said before, candidates are distinct and include it
        assert re.search(rf"\b{re.escape(p.answer)}\b", p.prefix, flags), p
        assert p.answer in p.candidates and len(set(p.candidates)) == len(p.candidates) >= 3
        if p.kind in ("object", "place"):  # distractors never occur in the story, so cannot be meant
            assert all(not re.search(rf"\b{c}\b", story.text, re.I) for c in p.candidates if c != p.answer)
        if p.kind == "name":
            other = re.search(r"(\w+) and $", p.prefix).group(1)
            assert other != p.answer and other in p.candidates
        if p.kind == "object":
            assert p.answer == story.facts["object"].split()[-1]
        if p.kind == "place":
            assert p.answer == story.facts["place"] and p.prefix.endswith("the ")
        if p.kind == "pronoun":
            assert p.answer.lower() == {"subject": hero["pronoun"], "object": hero["object_pronoun"],
                                        "possessive": hero["possessive"]}[p.detail]
            assert [c.lower() for c in p.candidates] == list(PRONOUN_SETS[p.detail])


def test_build_is_deterministic_and_balanced(stories, probes):
    again = build_probes(stories[:200], 200, seed=0)
    assert [(p.id, p.candidates) for p in again] == [(p.id, p.candidates) for p in probes]
    few = build_probes(stories[:200], 8, seed=0)
    assert [p.kind for p in few] == [k for k in PROBE_KINDS for _ in range(2)]
    assert build_probes(stories[:3], 1000, seed=0)  # asks for more than exist: gives what there is


def test_her_is_told_apart_as_object_or_possessive():
    girl = {"pronoun": "she", "object_pronoun": "her", "possessive": "her"}
    assert _pronoun_slot("her", " a cookie.", girl) == "object"
    assert _pronoun_slot("her", ".", girl) == "object"
    assert _pronoun_slot("Her", " mom came.", girl) == "possessive"
    assert _pronoun_slot("her", " sad face", girl) is None
    assert _pronoun_slot("his", " mom", girl) is None


def test_words_are_read_by_the_word_layer():
    """Offsets of words as stories.words reads them; a possessive mentions its owner; the next word
    after a pronoun counts only when spaces alone come between."""
    text = 'Tom\u2019s kite and Lily\'s hat.\n"Hi!" said Sue. Then she ran.'
    spans = _word_spans(text)
    assert [w for _, _, w in spans][:3] == ["Tom's", "kite", "and"]
    assert all(text[a:b].replace("\u2019", "'") == w for a, b, w in spans)
    assert {"Tom", "Lily", "Sue"} <= _word_set(text, lower=False) and "tom" in _word_set(text)
    assert _next_word("  a cookie.") == "a" and _next_word(". Then") == "" and _next_word("") == ""
    assert _window(text[: text.index("she")]) == ' said Sue. Then '  # the sentence before, and this one
    assert _Pools.of([]).places == sorted(lexicon().settings)  # distractor places: the storyteller's settings


# ------------------------------------------------------------------ scoring


def test_score_matches_unbatched_computation(codec, probes):
    model = tiny_model(codec, context=48)  # story prefixes are longer: every probe is cropped
    sample = probes[::25]
    rows = score_probes(model, codec, sample, batch_size=5)
    for p, r in zip(sample, rows):
        prefix, sep = (p.prefix[:-1], " ") if p.prefix.endswith(" ") else (p.prefix, "")
        ctx = [codec.eot_id, *codec.encode(prefix)]
        ref = {c: sum(logprob_unbatched(model, ctx, codec.encode(sep + c))) for c in p.candidates}
        assert r["logprobs"] == pytest.approx(ref, abs=1e-4)
        assert r["predicted"] == max(ref, key=ref.get)
        assert r["margin"] == pytest.approx(ref[p.answer] - max(v for c, v in ref.items() if c != p.answer), abs=1e-4)
        assert r["correct"] == (r["margin"] > 0)


class CopyModel(nn.Module):
    """Predicts each token in proportion to how often it occurred so far: uses context and nothing else."""

    def __init__(self, vocab_size, context=512):
        super().__init__()
        self.cfg = types.SimpleNamespace(context=context, vocab_size=vocab_size)
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, idx):
        counts = nn.functional.one_hot(idx, self.cfg.vocab_size).float().cumsum(1)
        return torch.log(counts + 0.01), None


def test_a_model_that_copies_from_context_beats_chance(codec, stories):
    """Object and place answers occur in the context and distractors never do, so copying alone wins
    (chance is 1/4). Names are harder for it: it picks the most frequent name, usually the hero."""
    rows = score_probes(CopyModel(codec.vocab_size), codec, build_probes(stories[200:], 80, seed=1))
    acc = probe_accuracy(rows)
    assert acc["object"][0] > 0.5 and acc["place"][0] > 0.5


def test_probe_accuracy_aggregates_by_kind():
    rows = [{"kind": "name", "correct": True}, {"kind": "name", "correct": False},
            {"kind": "pronoun", "correct": True}, {"kind": "object", "correct": False}]
    acc = probe_accuracy(rows)
    assert acc == {"name": (0.5, 2), "pronoun": (1.0, 1), "object": (0.0, 1), "overall": (0.5, 4)}
    assert probe_accuracy([]) == {}


# ------------------------------------------------------------------ hand-written probe table


def test_probe_completions_and_table(codec):
    prompts = [EvalPrompt("ct-1", "Lily had a red ball. She gave the", "context_tracking", ["ball"]),
               EvalPrompt("story-1", "Once upon a | time", "story")]
    models = {"a": (tiny_model(codec), codec), "b": (tiny_model(codec, context=64), codec)}
    rows = probe_completions(models, prompts, max_new_tokens=6)
    assert [(r["model"], r["id"]) for r in rows] == [("a", "ct-1"), ("a", "story-1"), ("b", "ct-1"), ("b", "story-1")]
    for r in rows:
        p = prompts[0] if r["id"] == "ct-1" else prompts[1]
        assert r["found"] == p.answer_found(r["completion"])
    assert rows[1]["found"] is None
    rows[0].update(completion="the ball | and\nthen a\x12 b c d e f", found=True)  # a known cell: 8 words
    table = probe_table(rows).splitlines()
    assert table[0] == "| prompt | a | b |" and len(table) == 4
    assert r"| the ball \| and then a b c ✓ |" in table[2]  # escaped, one line, printable
    assert table[2].count(" | ") == 2 and "✓" not in table[3] and "✗" not in table[3]
    assert r"Once upon a \| time" in table[3]


# ------------------------------------------------------------------ perplexity


def test_perplexity_matches_unbatched_computation(codec, stories):
    model = tiny_model(codec, context=512)
    texts = [s.text[:n] for s, n in zip(stories[:5], (40, 300, 120, 600, 10))]
    got = perplexity(model, codec, texts, batch_size=2)
    for t, g in zip(texts, got):
        lp = logprob_unbatched(model, [codec.eot_id], codec.encode(t))
        assert g == pytest.approx(math.exp(-sum(lp) / len(lp)), rel=1e-4)


def test_perplexity_of_completions_crops_the_beginning(codec, stories):
    model = tiny_model(codec, context=48)
    comps = [Completion("m", f"p{i}", s.text[:n], s.text[n:n + 30]) for i, (s, n) in
             enumerate(zip(stories[:4], (20, 200, 400, 5)))]
    comps.append(Completion("m", "empty", "Once upon a time", ""))
    got = perplexity_of_completions(model, codec, comps, batch_size=3)
    for c, g in zip(comps[:4], got):
        lp = logprob_unbatched(model, [codec.eot_id, *codec.encode(c.beginning)], codec.encode(c.completion))
        assert g == pytest.approx(math.exp(-sum(lp) / len(lp)), rel=1e-4)
    assert math.isnan(got[4])


def test_long_texts_are_scored_in_windows(codec, stories):
    for n_ctx, n, context in [(1, 200, 48), (150, 200, 48), (1, 48, 48), (47, 48, 48), (3, 100, 7)]:
        ids = list(range(n))
        wins = _windows(ids, n_ctx, context)
        scored = [t for w, k in wins for t in w[len(w) - k:]]
        assert scored == ids[n_ctx:]  # every target once, in order
        # each input fits; each scored token sees at least context/2 tokens (or all there are) before it
        assert all(len(w) <= context and len(w) - k >= min(context // 2, w[0] + len(w) - k) for w, k in wins)
        assert all(w == ids[w[0]:w[0] + len(w)] and len(w) > k for w, k in wins)
    model = tiny_model(codec, context=32)
    long = stories[0].text
    assert len(codec.encode(long)) > 100
    (ppl,) = perplexity(model, codec, [long])
    assert math.isfinite(ppl) and ppl > 1
