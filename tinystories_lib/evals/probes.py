"""Context tracking measured exactly, a table of hand-written probes, and perplexity under a model.

The paper judges context tracking by reading completions. Storyteller stories allow an exact stand-in:
`Story.facts` names the cast, the object and the place, so a story can be cut just before a word that
earlier context fixes, and the model scored on whether it prefers that word to the alternatives.

Probe kinds (`build_probes`), each cut only where the word already occurred earlier in the prefix:
  - "name": a name right after "<other name> and"; the cast's only other named character mentioned so
    far is the answer. Candidates: the story's names plus distractor names from other stories.
  - "object": the story's object after "the"/"his"/"her" (+ at most one word, "his red ___"): a definite
    mention of something already introduced. Candidates: objects of the same category from other stories.
  - "place": the story's place after "the". Candidates: places of other stories.
  - "pronoun": the hero's he/she, him/her or his/her (outside speech) where the previous and current
    sentence mention the hero by name, and no other character, the object, the food or another pronoun.
    Candidates: he/she/it/they, him/her/it/them or his/her/its/their (capitalised at a sentence start).
    Storyteller text almost only meets this for subjects and possessives.

What is exact: among the candidates only the answer fits what the story has said (distractors never
occur in the story, a name is not coordinated with itself, a pronoun must agree with the one referent in
the last two sentences), and the score is the model's own log-probability: no sampling, no judge.
Limits: "fixed by context" is decided by these rules, not by a parser, and holds among the candidates,
not over all words ("Tom and his mom" would be fine English); a definite "the park" could introduce a
new place in other text; candidates of more tokens are penalised by summing log-probabilities; object,
place and name probes reward copying from context, pronoun probes test gender agreement over a sentence
or two, not long-range coreference.

Stories without storyteller facts (real TinyStories) get the same rules on facts read from their own text
(`entities.text_facts`): the names it repeats (the most mentioned is the hero, with the pronouns its text
gives it), its most mentioned object and place nouns of the prompt vocabulary used with a determiner, and
the people and animals it mentions as the other referents a pronoun could mean. Such probes are marked
`found_in="text"`; they are as exact as their facts, which are read by rules, not given: a name the rules
miss or a gender they guess wrong makes a probe easier or unfair, never a distractor that fits.

`probe_completions`/`probe_table`: greedy completions of the hand-written probes (`EvalPrompt`s with
answers) by several models, side by side. `perplexity`/`perplexity_of_completions`: how likely a
(usually larger) model finds texts or completions, an offline stand-in for a fluency judge.
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from tinystories_lib.evals.entities import known_words_of, text_facts
from tinystories_lib.evals.eval_prompts import EvalPrompt
from tinystories_lib.evals.grades import Completion
from tinystories_lib.lm.model import GPTNeo
from tinystories_lib.lm.sample import SamplingConfig, complete
from tinystories_lib.lm.tokenizer import Codec
from tinystories_lib.stories.prompts import vocab_index
from tinystories_lib.stories.records import Story
from tinystories_lib.stories.storyteller import lexicon
from tinystories_lib.stories.words import SENTENCE_END, base_word, split_words, word_spans, words

PROBE_KINDS = ("name", "object", "place", "pronoun")
N_DISTRACTORS = 3  # per probe: 4 candidates for object/place, 5-6 for names

PRONOUN_SETS = {
    "subject": ("he", "she", "it", "they"),
    "object": ("him", "her", "it", "them"),
    "possessive": ("his", "her", "its", "their"),
}
ALL_PRONOUNS = {p for ps in PRONOUN_SETS.values() for p in ps}
# Words that follow an object "her" ("gave her a ...", "made her look") in storyteller text; any
# other word after "her" is what she owns. "sad"/"happy" fit both ("made her sad", "her sad face").
_OBJECT_FOLLOWERS = {"a", "an", "the", "and", "to", "what", "everywhere", "look", "make", "something",
                     "some", "fix", "that", "up", "down", "away", "out", "in", "on", "at", "with", "for",
                     "so", "too", "very", "how", "go", "be", "feel", "play", "come", "back"}
_AMBIGUOUS_AFTER_HER = {"sad", "happy"}


@dataclass
class Probe:
    """A story cut before a word its context fixes. `prefix` is the text up to the word (ending with
    the space before it, if any); `candidates` includes `answer`; `detail` says which rule made it
    ("and", "definite", or the pronoun's slot); `found_in` where its facts came from ("facts": the
    storyteller's, "text": read from the story by `entities.text_facts`)."""

    id: str
    kind: str
    prefix: str
    answer: str
    candidates: list[str]
    story_id: str
    detail: str = ""
    found_in: str = "facts"


# ------------------------------------------------------------------------------ text helpers
# Words are what the one word layer (`stories.words`) says they are; a possessive is a mention of its
# owner ("Tom's" mentions Tom, "the kite's string" the kite).


def _word_set(text: str, lower: bool = True) -> set[str]:
    """The words of `text`, possessives dropped ("Tom's" -> "tom"), lower-cased unless `lower` is False."""
    return {base_word(w) for w in words(text, lower=lower)}


@functools.lru_cache(maxsize=16)  # each finder reads the same story
def _word_spans(text: str) -> tuple[tuple[int, int, str], ...]:
    """(start, end, word) for each word of `text` in order (`words.word_spans`, case kept)."""
    return tuple(word_spans(text, lower=False))


def _next_word(after: str) -> str:
    """The word that follows after spaces only, lower-cased ("" when a mark or the end comes first)."""
    head = after.lstrip()
    toks = split_words(head.split(None, 1)[0]) if head else []
    return toks[0] if toks and (toks[0][0].isalnum() or toks[0][0] == "_") else ""


def _window(before: str) -> str:
    """The previous sentence plus the current one up to the cut: where a pronoun's referent is. (At a
    sentence start the last boundary is the end of `before`, so this is just the sentence before.)"""
    ends = [m.end() for m in SENTENCE_END.finditer(before)]
    return before[ends[-2]:] if len(ends) >= 2 else before


# ------------------------------------------------------------------------------ distractor pools


def _cast_names(story: Story) -> list[str]:
    """The story's named characters: hero, friend, and the pet when the text names it (for facts read
    from the text: every name it repeats)."""
    f = story.facts
    if f.get("found_in_text"):
        return [c["name"] for c in f["characters"] if c["role"] in ("hero", "friend")]
    names = [f["characters"][0]["name"], f["characters"][1]["name"]]
    if f.get("animal_name") and f["animal_name"] in _word_set(story.text, lower=False):
        names.append(f["animal_name"])
    return names


def _object_word(story: Story) -> str:
    """The object's last word ("toy bus" -> "bus": the word after "the toy"); "" when there is none."""
    parts = (story.facts.get("object") or "").split()
    return parts[-1] if parts else ""


def _object_category(word: str) -> str:
    w = vocab_index().get(("noun", word))
    if w is None:
        return "thing"
    return "toy" if w.category == "vehicle" else w.category


@dataclass
class _Pools:
    names: list[str]
    objects: dict[str, list[str]]  # category -> object words
    places: list[str]

    @classmethod
    def of(cls, stories: Sequence[Story]) -> _Pools:
        names, objects, places = set(), {}, set(lexicon().settings)
        for s in stories:
            names.update(_cast_names(s))
            if w := _object_word(s):
                objects.setdefault(_object_category(w), set()).add(w)
            if s.facts.get("place"):
                places.add(s.facts["place"])
        return cls(sorted(names), {k: sorted(v) for k, v in objects.items()}, sorted(places))


def _distractors(pool: Iterable[str], story_text: str, rng: random.Random, k: int = N_DISTRACTORS,
                 fallback: Iterable[str] = ()) -> list[str]:
    """k words the story never uses (so none of them can be the referent), from `pool` first."""
    used = _word_set(story_text)
    fresh = [w for w in pool if w.lower() not in used]
    picked = rng.sample(fresh, min(k, len(fresh)))
    if len(picked) < k:
        extra = [w for w in fallback if w.lower() not in used and w not in picked]
        picked += rng.sample(extra, min(k - len(picked), len(extra)))
    return picked


# ------------------------------------------------------------------------------ cut points
# Each finder yields (start offset of the word, answer, detail) for every place the rule allows.


def _name_cuts(story: Story):
    """A name right after "<other name> and ", where the other name is the only other one said so far."""
    text, names = story.text, _cast_names(story)
    spans = _word_spans(text)
    for answer in names:
        said: set[str] = set()  # words before the current one, possessives dropped
        for i, (start, _, w) in enumerate(spans):
            if (base_word(w) == answer and i >= 2 and spans[i - 1][2] == "and"
                    and text[spans[i - 1][1]:start] == " " and text[spans[i - 2][1]:spans[i - 1][0]] == " "):
                other = spans[i - 2][2]
                if other in names and other != answer and {n for n in names if n in said} - {other} == {answer}:
                    yield start, answer, "and"
            said.add(base_word(w))


DETERMINERS = frozenset({"the", "his", "her", "its", "their", "my", "your"})


def _after_determiner(text: str, spans: Sequence[tuple[int, int, str]], i: int,
                      determiners: frozenset[str]) -> bool:
    """Whether word i comes right after a determiner, or after a determiner and one more word
    ("the kite", "his red kite"), single spaces between."""
    def spaced(j: int) -> bool:  # one space between word j and word j + 1
        return text[spans[j][1]:spans[j + 1][0]] == " "

    if i < 1 or not spaced(i - 1):
        return False
    prev = spans[i - 1][2]
    if prev.lower() in determiners:
        return True
    return i >= 2 and prev.isalpha() and spaced(i - 2) and spans[i - 2][2].lower() in determiners


def _definite_cuts(text: str, word: str, determiners: frozenset[str]):
    """`word` after a determiner (+ at most one word), where the story has said it before."""
    spans = _word_spans(text)
    said = False
    for i, (start, _, w) in enumerate(spans):
        if base_word(w) == word:
            if said and _after_determiner(text, spans, i, determiners):
                yield start, word, "definite"
            said = True


def _object_cuts(story: Story):
    word = _object_word(story)
    return _definite_cuts(story.text, word, DETERMINERS) if word else iter(())


def _place_cuts(story: Story):
    place = story.facts.get("place")
    return _definite_cuts(story.text, place, frozenset({"the"})) if place else iter(())


def _pronoun_slot(word: str, after: str, hero: dict) -> str | None:
    """Which of the hero's pronoun slots `word` fills here, or None (not the hero's, or unclear)."""
    w = word.lower()
    subj, obj, poss = hero["pronoun"], hero["object_pronoun"], hero["possessive"]
    if w == subj:
        return "subject"
    if w == obj == poss:  # "her": object or possessive, told apart by the next word
        nxt = _next_word(after)
        if nxt in _AMBIGUOUS_AFTER_HER:
            return None
        return "object" if nxt in _OBJECT_FOLLOWERS or not nxt else "possessive"
    return "object" if w == obj else "possessive" if w == poss else None


def _others(story: Story) -> list[str]:
    """Words naming anything but the hero that a pronoun could refer to."""
    f = story.facts
    names = [c["kind"] for c in f["characters"][1:]] + [c["name"] for c in f["characters"][1:]]
    names += [f.get("animal"), f.get("food"), _object_word(story), "friend", "sister", "brother", "everyone"]
    if f.get("animal_name"):
        names.append(f["animal_name"])
    return [w.removeprefix("the ") for w in names if w]


_HERO_PRONOUNS = frozenset({"he", "she", "him", "her", "his"})


def _in_speech(before: str) -> bool:
    """Whether a quotation is open at the end of `before` (straight quotes, or curly ones)."""
    return bool(before.count('"') % 2) or before.count("“") > before.count("”")


def _pronoun_cuts(story: Story):
    chars = story.facts.get("characters") or [{}]
    text, hero = story.text, chars[0]
    if hero.get("role", "hero") != "hero" or not hero.get("pronoun"):
        return  # no hero, or one whose pronouns the text does not tell
    others = {o.lower() for o in _others(story)}
    hero_forms = {hero["pronoun"], hero["object_pronoun"], hero["possessive"]}
    said: set[str] = set()  # lower-cased words before the current one, possessives dropped
    for start, _, w in _word_spans(text):
        word = base_word(w)
        low = word.lower()
        if low in _HERO_PRONOUNS:
            before = text[:start]
            slot = _pronoun_slot(word, text[start + len(word):], hero)
            if slot is not None and not _in_speech(before):  # the hero's, and outside speech
                win = _window(before)
                win_words = _word_set(win)
                if (hero["name"] in _word_set(win, lower=False) and not win_words & others
                        and not (win_words & ALL_PRONOUNS) - hero_forms and low in said):
                    yield start, word, slot
        said.add(low)


FINDERS = {"name": _name_cuts, "object": _object_cuts, "place": _place_cuts, "pronoun": _pronoun_cuts}


def _candidates(kind: str, story: Story, answer: str, detail: str, pools: _Pools,
                rng: random.Random) -> list[str]:
    text = story.text
    if kind == "name":
        cands = _cast_names(story) + _distractors(pools.names, text, rng)
    elif kind == "object":
        same = pools.objects.get(_object_category(answer), [])
        every = [w for ws in pools.objects.values() for w in ws]
        cands = [answer] + _distractors(same, text, rng, fallback=every)
    elif kind == "place":
        cands = [answer] + _distractors(pools.places, text, rng)
    else:
        cands = list(PRONOUN_SETS[detail])
        if answer[0].isupper():
            cands = [c.capitalize() for c in cands]
    return list(dict.fromkeys(cands))  # distinct, order kept


def with_facts(stories: Sequence[Story], known_words: set[str] | None = None) -> list[Story]:
    """The stories, each with facts: its storyteller facts, or else those read from its text
    (`entities.text_facts`; `known_words` defaults to `entities.known_words_of` the plain stories)."""
    plain = [s.text for s in stories if not s.facts]
    if plain and known_words is None:
        known_words = known_words_of(plain)
    return [s if s.facts else replace(s, facts=text_facts(s.text, known_words)) for s in stories]


def build_probes(stories: Sequence[Story], n: int, seed: int = 0) -> list[Probe]:
    """Up to `n` probes from held-out stories, the kinds taken in turn and each story giving at most one
    probe of each kind. Storyteller facts where a story has them, facts read from its text otherwise
    (`with_facts`). Deterministic for a given (stories, n, seed)."""
    stories = [s for s in with_facts(stories) if s.facts.get("characters") or s.facts.get("found_in_text")]
    pools = _Pools.of(stories)
    rng = random.Random(seed)
    by_kind: dict[str, list[Probe]] = {k: [] for k in PROBE_KINDS}
    for story in stories:
        for kind in PROBE_KINDS:
            cuts = list(FINDERS[kind](story))
            if not cuts:
                continue
            start, answer, detail = rng.choice(cuts)
            cands = _candidates(kind, story, answer, detail, pools, rng)
            by_kind[kind].append(Probe(id=f"{story.id}/{kind}/{start}", kind=kind, prefix=story.text[:start],
                                       answer=answer, candidates=cands, story_id=story.id, detail=detail,
                                       found_in="text" if story.facts.get("found_in_text") else "facts"))
    for probes in by_kind.values():
        rng.shuffle(probes)
    chosen: list[Probe] = []
    while len(chosen) < n and any(by_kind.values()):
        for kind in PROBE_KINDS:
            if by_kind[kind] and len(chosen) < n:
                chosen.append(by_kind[kind].pop())
    order = {s.id: i for i, s in enumerate(stories)}
    return sorted(chosen, key=lambda p: (PROBE_KINDS.index(p.kind), order[p.story_id], p.id))


# ------------------------------------------------------------------------------ scoring


def _windows(ids: list[int], n_ctx: int, context: int) -> list[tuple[list[int], int]]:
    """Split scoring of ids[n_ctx:] into model inputs of at most `context` tokens: (input, how many of
    its last tokens to score). A sequence that fits is one input; a longer one is cropped from the left,
    and a target longer than the context is scored in steps of context/2 tokens, each with at least
    context/2 tokens before it."""
    if len(ids) <= context:
        return [(ids, len(ids) - n_ctx)] if len(ids) > n_ctx else []
    out, pos, step = [], n_ctx, max(1, context // 2)
    while pos < len(ids):
        hi = min(len(ids), max(pos + step, context))
        out.append((ids[max(0, hi - context):hi], hi - pos))
        pos = hi
    return out


@torch.no_grad()
def _target_logprobs(model: GPTNeo, pairs: Sequence[tuple[list[int], list[int]]],
                     batch_size: int) -> list[np.ndarray]:
    """For each (context ids, target ids): the log-probability of every target token given all before
    it. Inputs are sorted by length and right-padded; padding comes after every scored position, so
    under causal attention it changes nothing."""
    context = model.cfg.context
    inputs = [(i, w, k) for i, (c, t) in enumerate(pairs) for w, k in _windows(c + t, len(c), context)]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    scored: list[np.ndarray | None] = [None] * len(inputs)
    order = sorted(range(len(inputs)), key=lambda j: -len(inputs[j][1]))
    try:
        for b in range(0, len(order), batch_size):
            chunk = order[b:b + batch_size]
            width = len(inputs[chunk[0]][1])
            idx = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, j in enumerate(chunk):
                idx[row, : len(inputs[j][1])] = torch.tensor(inputs[j][1])
            logits, _ = model(idx.to(device))
            for row, j in enumerate(chunk):
                ids, k = inputs[j][1], inputs[j][2]
                n = len(ids)
                lp = torch.log_softmax(logits[row, n - k - 1 : n - 1].float(), dim=-1)
                tgt = torch.tensor(ids[n - k :], device=lp.device)
                scored[j] = lp.gather(1, tgt[:, None]).squeeze(1).cpu().numpy()
    finally:
        model.train(was_training)
    out: list[list[np.ndarray]] = [[] for _ in pairs]
    for (i, _, _), s in zip(inputs, scored):
        out[i].append(s)
    return [np.concatenate(p) if p else np.zeros(0, dtype=np.float32) for p in out]


def _probe_pairs(codec: Codec, probe: Probe) -> list[tuple[list[int], list[int]]]:
    """BPE attaches a space to the word after it (" Lily" is one token, "Lily" another), so the space
    that ends the prefix moves to the front of each candidate."""
    prefix, sep = (probe.prefix[:-1], " ") if probe.prefix.endswith(" ") else (probe.prefix, "")
    ctx = [codec.eot_id, *codec.encode(prefix)]
    return [(ctx, codec.encode(sep + c)) for c in probe.candidates]


def candidate_logprobs(model: GPTNeo, codec: Codec, probes: Sequence[Probe],
                       batch_size: int = 32) -> list[dict[str, float]]:
    """log P(candidate | <|endoftext|> + prefix), summed over the candidate's tokens, per probe."""
    pairs = [pair for p in probes for pair in _probe_pairs(codec, p)]
    lps = iter(_target_logprobs(model, pairs, batch_size))
    return [{c: float(next(lps).sum()) for c in p.candidates} for p in probes]


def score_probes(model: GPTNeo, codec: Codec, probes: Sequence[Probe], batch_size: int = 32) -> list[dict]:
    """One row per probe: the model is right when the answer has the highest log-probability of all
    candidates; `margin` is its lead over the best other candidate (negative when wrong)."""
    rows = []
    for p, lp in zip(probes, candidate_logprobs(model, codec, probes, batch_size)):
        best_other = max(v for c, v in lp.items() if c != p.answer)
        rows.append({"id": p.id, "kind": p.kind, "correct": lp[p.answer] > best_other, "answer": p.answer,
                     "predicted": max(lp, key=lp.get), "margin": lp[p.answer] - best_other,
                     "logprobs": lp})
    return rows


def probe_accuracy(rows: Iterable[dict]) -> dict[str, tuple[float, int]]:
    """{kind: (accuracy, n)} plus "overall" (over all rows, so kinds weigh by their counts)."""
    by_kind: dict[str, list[bool]] = {}
    for r in rows:
        by_kind.setdefault(r["kind"], []).append(bool(r["correct"]))
        by_kind.setdefault("overall", []).append(bool(r["correct"]))
    return {k: (sum(v) / len(v), len(v)) for k, v in by_kind.items()}


# ------------------------------------------------------------------------------ hand-written probes


def probe_completions(models: dict[str, tuple[GPTNeo, Codec]], prompts: Sequence[EvalPrompt],
                      max_new_tokens: int = 20) -> list[dict]:
    """Greedy completion of every prompt by every model; `found` is whether an answer word occurs
    (None for prompts without answers)."""
    cfg = SamplingConfig(temperature=0, max_new_tokens=max_new_tokens)
    rows = []
    for label, (model, codec) in models.items():
        texts = complete(model, codec, [p.text for p in prompts], cfg)
        rows += [{"model": label, "id": p.id, "kind": p.kind, "prompt": p.text, "completion": t,
                  "found": p.answer_found(t)} for p, t in zip(prompts, texts)]
    return rows


def _cell(text: str) -> str:
    """One line of printable text (an untrained model writes control bytes), with pipes escaped."""
    return "".join(ch if ch.isprintable() else " " for ch in text).replace("|", "\\|").strip()


def probe_table(rows: Sequence[dict], words: int = 8) -> str:
    """Markdown: one row per prompt (its last words), one column per model; each cell the completion's
    first `words` words, with ✓/✗ when the prompt has answers."""
    models = list(dict.fromkeys(r["model"] for r in rows))
    prompts = {r["id"]: r["prompt"] for r in rows}
    cells = {(r["id"], r["model"]): r for r in rows}
    lines = ["| prompt | " + " | ".join(models) + " |", "|---" * (len(models) + 1) + "|"]
    for pid, text in prompts.items():
        tail = text.split()
        shown = ("… " if len(tail) > 12 else "") + " ".join(tail[-12:])
        row = [f"{pid}: {_cell(shown)}"]
        for m in models:
            r = cells.get((pid, m))
            if r is None:
                row.append("")
                continue
            head = " ".join(_cell(r["completion"]).split()[:words])
            mark = "" if r["found"] is None else " ✓" if r["found"] else " ✗"
            row.append(head + mark)
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ perplexity


def _perplexities(model: GPTNeo, pairs: Sequence[tuple[list[int], list[int]]], batch_size: int) -> list[float]:
    """exp(mean negative log-likelihood of the target tokens); NaN for an empty target."""
    return [math.exp(-float(lp.mean())) if len(lp) else math.nan
            for lp in _target_logprobs(model, pairs, batch_size)]


def perplexity(model: GPTNeo, codec: Codec, texts: Sequence[str], batch_size: int = 16) -> list[float]:
    """Per-text perplexity of each whole text, read as a story: conditioned on <|endoftext|>."""
    return _perplexities(model, [([codec.eot_id], codec.encode(t)) for t in texts], batch_size)


def perplexity_of_completions(model: GPTNeo, codec: Codec, completions: Sequence[Completion],
                              batch_size: int = 16) -> list[float]:
    """Perplexity of each completion's tokens only, given <|endoftext|> + its beginning (tokenized
    apart, as the sampler did when it wrote the completion); long beginnings are cropped from the left."""
    pairs = [([codec.eot_id, *codec.encode(c.beginning)], codec.encode(c.completion)) for c in completions]
    return _perplexities(model, pairs, batch_size)
