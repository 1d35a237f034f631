"""Corpus statistics for notebook 01: how long, how varied, how repetitive a story collection is.

`corpus_stats` measures one collection (lengths, openings, distinct n-grams, feature shares, duplicate
rates, how much of the prompt vocabulary it uses); `stats_table` sets several side by side. Words are
`stories.words.words`, so lengths and vocabulary count the same words as every other check.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from tinystories_lib.stories.records import Story
from tinystories_lib.stories.words import base_word, words


def vocab_coverage(stories: Sequence[Story], design=None) -> dict[str, float]:
    """Share of the prompt vocabulary used at least once, per slot: the paper's nouns, verbs and adjectives
    (any inflection) for the TinyStories design (the default), else each slot of `design`'s word list (a
    `prompts.Design`; a word counts with a regular ending, -s, -es, -d, -ed, -ing; a phrase where it appears)."""
    from tinystories_lib.stories.prompts import TINYSTORIES_DIGEST, load_vocab

    seen = {base_word(w) for s in stories for w in words(s.text)}  # "the dog's bone" uses "dog"
    if design is None or design.digest == TINYSTORIES_DIGEST:
        return {pos: sum(1 for w in entries if w.word in seen or any(f in seen for _, f in w.forms))
                / max(1, len(entries)) for pos, entries in load_vocab().items()}
    seen |= {w.lower() for s in stories for w in words(s.text)}
    phrases = [w for ws in design.words for w in ws if len(words(w)) > 1]
    text = " ".join(s.text.lower() for s in stories) if phrases else ""

    def used(w: str) -> bool:
        ws = words(w)
        if len(ws) > 1:
            return w.lower() in text
        w = ws[0].lower() if ws else ""
        return any(f in seen for f in (w, w + "s", w + "es", w + "d", w + "ed", w + "ing")) if w else False

    return {slot: sum(map(used, ws)) / max(1, len(ws)) for slot, ws in zip(design.slots, design.words)}


def near_duplicate_rate(stories: Sequence[Story], threshold: float = 0.8, sample: int = 3000) -> float | None:
    """Share of stories (in the first `sample`) whose MinHash word-3-gram Jaccard with an earlier one is at
    least `threshold`; None when datasketch is not installed."""
    from tinystories_lib.stories.cleaning import clean

    try:
        _, report = clean(list(stories[:sample]), min_chars=0, max_chars=10**9, near_dup_threshold=threshold)
    except ImportError:
        return None
    return (report.get("near_duplicate", 0) + report.get("exact_duplicate", 0)) / max(1, report["input"])


def corpus_stats(stories: Sequence[Story], top_openings: int = 8, sample: int = 2000, design=None) -> dict:
    """Lengths, opening variety, feature coverage, vocabulary use (of `design`'s word list: `vocab_coverage`)
    and duplicate rates; distinct n-grams and near-duplicates on the first `sample` stories, so sources of
    different sizes compare fairly."""
    n = len(stories)
    toks = [words(s.text, lower=False) for s in stories]  # as written: openings keep their capitals
    lengths = [len(t) for t in toks]
    openings = Counter(" ".join(t[:3]) for t in toks)
    bigrams, trigrams = Counter(), Counter()
    for t in toks[:sample]:  # distinct-n falls as a corpus grows: compare sources on equal-size samples
        low = [w.lower() for w in t]
        bigrams.update(zip(low, low[1:]))
        trigrams.update(zip(low, low[1:], low[2:]))
    features = Counter(f for s in stories for f in s.features)
    exact = n - len({s.text for s in stories})
    return {
        "stories": n,
        "words_total": int(sum(lengths)),
        "words_mean": float(np.mean(lengths)) if n else 0.0,
        "words_p5_p95": [int(np.percentile(lengths, 5)), int(np.percentile(lengths, 95))] if n else [0, 0],
        "vocabulary": len({w.lower() for t in toks for w in t}),
        "distinct_2": len(bigrams) / max(1, sum(bigrams.values())),
        "distinct_3": len(trigrams) / max(1, sum(trigrams.values())),
        "top_openings": [(o, c / n) for o, c in openings.most_common(top_openings)],
        "once_upon_a_time": sum(1 for s in stories if s.text.lower().startswith("once upon a time")) / max(1, n),
        "feature_share": {f: c / n for f, c in sorted(features.items())},
        "exact_duplicate_rate": exact / max(1, n),
        "near_duplicate_rate": near_duplicate_rate(stories, sample=sample),
        "vocab_coverage": vocab_coverage(stories, design),
        "lengths": lengths,
    }


def stats_table(stats: dict[str, dict]) -> str:
    """A markdown table with one column per source."""
    rows = [("stories", "{:,}", "stories"), ("mean length (words)", "{:.0f}", "words_mean"),
            ("vocabulary (distinct words)", "{:,}", "vocabulary"), ("distinct bigrams / bigrams (2,000 stories)", "{:.3f}", "distinct_2"),
            ("distinct trigrams / trigrams (2,000 stories)", "{:.3f}", "distinct_3"), ('share opening "Once upon a time"', "{:.1%}", "once_upon_a_time"),
            ("exact duplicate rate", "{:.2%}", "exact_duplicate_rate"),
            ("near-duplicate rate (MinHash, Jaccard >= 0.8, 2,000 stories)", "{:.2%}", "near_duplicate_rate")]

    def cell(s, key, fmt):
        return "n/a" if s.get(key) is None else fmt.format(s[key])

    head = "| | " + " | ".join(stats) + " |\n|---|" + "---:|" * len(stats) + "\n"
    body = "".join(f"| {name} | " + " | ".join(cell(s, key, fmt) for s in stats.values()) + " |\n"
                   for name, fmt, key in rows)
    slots = list(dict.fromkeys(k for s in stats.values() for k in s["vocab_coverage"]))
    for pos in slots:  # the paper's nouns, verbs and adjectives, or a design's own slots
        body += f"| prompt vocabulary used: {pos}s | " + " | ".join(
            f"{s['vocab_coverage'].get(pos, 0):.1%}" for s in stats.values()) + " |\n"
    return head + body
