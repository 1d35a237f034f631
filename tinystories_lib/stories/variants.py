"""Degraded copies of a corpus whose direction is known: controls for "does data quality matter?".

    shuffled_sentences(stories, seed)        each story's sentences in a random order (words and format kept)
    with_typos(stories, rate, seed)          letters swapped with their neighbour or dropped, at `rate` a letter
    repeated(stories, unique_fraction, seed) as many characters from fewer unique stories, each repeated
    noisy_pool(stories, fraction, ...)       a share of the stories degraded (half shuffled, half with typos),
                                             with which ones were: the pool a quality filter should clean
Each is deterministic from `seed` and, story by story, from the story's id, so a story is degraded the
same way whatever else is in the list. A degraded story keeps its `source` and gets an id of its own
(`<id>#shuffled`, `<id>#typos`, `<id>#r<k>`), so it never passes for the original.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from tinystories_lib.stories.records import Story
from tinystories_lib.stories.words import SENTENCE_END

SHUFFLED, TYPOS, REPEATED = "shuffled", "typos", "repeated"


def _rng(seed: int, kind: str, story_id: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(kind.encode()), zlib.crc32(story_id.encode())])


def _sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence (`words.sentences`' cut: after . ! ? and a closing quote), without the
    whitespace around it."""
    spans, start = [], 0
    for m in SENTENCE_END.finditer(text):
        spans.append((start, m.end()))
        start = m.end()
    spans.append((start, len(text)))
    out = []
    for a, b in spans:
        chunk = text[a:b]
        lead = len(chunk) - len(chunk.lstrip())
        if chunk.strip():
            out.append((a + lead, a + lead + len(chunk.strip())))
    return out


def shuffle_sentences(text: str, rng: np.random.Generator) -> str:
    """`text` with its sentences in another order; the whitespace between them (paragraph breaks
    included) stays where it was, so only the order changes. A one-sentence text comes back as it is."""
    spans = _sentence_spans(text)
    if len(spans) < 2:
        return text
    order = rng.permutation(len(spans))
    if len(spans) > 2:  # a shuffle that changes nothing is no control: rotate it once
        while (order == np.arange(len(spans))).all():
            order = rng.permutation(len(spans))
    else:
        order = np.array([1, 0])
    parts, last = [], 0
    for (a, b), j in zip(spans, order):
        parts.append(text[last:a])
        s, e = spans[j]
        parts.append(text[s:e])
        last = b
    parts.append(text[last:])
    return "".join(parts)


def typos(text: str, rate: float, rng: np.random.Generator) -> str:
    """`text` with about `rate` of its letters hit by a typo: half swapped with the next letter of the
    same word, half dropped. Spaces, punctuation and digits are never touched."""
    chars = list(text)
    letters = [i for i, c in enumerate(chars) if c.isalpha()]
    if not letters or rate <= 0:
        return text
    hit = np.flatnonzero(rng.random(len(letters)) < rate)
    drop = rng.random(len(hit)) < 0.5
    removed = set()
    for k, is_drop in zip(hit, drop):
        i = letters[k]
        if i in removed:
            continue
        if is_drop:
            removed.add(i)
        elif i + 1 < len(chars) and chars[i + 1].isalpha() and i + 1 not in removed:
            chars[i], chars[i + 1] = chars[i + 1], chars[i]
        else:  # the word's last letter: nothing to swap with, so drop it
            removed.add(i)
    return "".join(c for i, c in enumerate(chars) if i not in removed)


def shuffled_sentences(stories: Sequence[Story], seed: int) -> list[Story]:
    return [replace(s, id=f"{s.id}#{SHUFFLED}", text=shuffle_sentences(s.text, _rng(seed, SHUFFLED, s.id)))
            for s in stories]


def with_typos(stories: Sequence[Story], rate: float, seed: int) -> list[Story]:
    return [replace(s, id=f"{s.id}#{TYPOS}", text=typos(s.text, rate, _rng(seed, TYPOS, s.id))) for s in stories]


def repeated(stories: Sequence[Story], unique_fraction: float, seed: int) -> list[Story]:
    """As many characters as `stories` hold, from the first `unique_fraction` of them (in an order drawn
    from `seed`), each pass over them in a new order: the same budget, fewer unique stories."""
    if not 0 < unique_fraction <= 1:
        raise ValueError(f"unique_fraction must be in (0, 1], got {unique_fraction}")
    rng = random.Random(f"{seed}:{REPEATED}")
    order = list(stories)
    rng.shuffle(order)
    unique = order[: max(1, round(unique_fraction * len(order)))]
    budget = sum(len(s.text) for s in stories)
    out, n_chars, k = [], 0, 0
    while n_chars < budget:
        batch = list(unique)
        rng.shuffle(batch)
        for s in batch:
            out.append(replace(s, id=f"{s.id}#r{k}"))
            n_chars += len(s.text)
            if n_chars >= budget:
                break
        k += 1
    return out


def noisy_pool(stories: Sequence[Story], fraction: float, typo_rate: float, seed: int
               ) -> tuple[list[Story], list[str | None]]:
    """`stories` with a `fraction` of them (chosen with `seed`) degraded, alternately by shuffled sentences
    and by typos at `typo_rate`, in place; and per story what was done to it (None: untouched). Like a
    crawl that mixes good and bad text, with the truth known."""
    rng = random.Random(f"{seed}:pool")
    n_bad = round(fraction * len(stories))
    bad = rng.sample(range(len(stories)), n_bad)
    kind = {i: (SHUFFLED if j % 2 == 0 else TYPOS) for j, i in enumerate(bad)}
    out, truth = [], []
    for i, s in enumerate(stories):
        k = kind.get(i)
        if k == SHUFFLED:
            s = shuffled_sentences([s], seed)[0]
        elif k == TYPOS:
            s = with_typos([s], typo_rate, seed)[0]
        out.append(s)
        truth.append(k)
    return out, truth
