"""Corpus statistics for notebook 01: how long, how varied, how repetitive a story collection is."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import numpy as np

from .records import Story

_WORD = re.compile(r"[A-Za-z']+")


def words(text: str) -> list[str]:
    return _WORD.findall(text)


def corpus_stats(stories: Sequence[Story], top_openings: int = 8) -> dict:
    """Lengths, opening variety, feature coverage, distinct n-grams and duplicate rate."""
    n = len(stories)
    toks = [words(s.text) for s in stories]
    lengths = [len(t) for t in toks]
    openings = Counter(" ".join(t[:3]) for t in toks)
    bigrams, trigrams = Counter(), Counter()
    for t in toks:
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
        "lengths": lengths,
    }


def stats_table(stats: dict[str, dict]) -> str:
    """A markdown table with one column per source."""
    rows = [("stories", "{:,}", "stories"), ("mean length (words)", "{:.0f}", "words_mean"),
            ("vocabulary (distinct words)", "{:,}", "vocabulary"), ("distinct bigrams / bigrams", "{:.3f}", "distinct_2"),
            ("distinct trigrams / trigrams", "{:.3f}", "distinct_3"), ('share opening "Once upon a time"', "{:.1%}", "once_upon_a_time"),
            ("exact duplicate rate", "{:.2%}", "exact_duplicate_rate")]
    head = "| | " + " | ".join(stats) + " |\n|---|" + "---:|" * len(stats) + "\n"
    body = "".join(f"| {name} | " + " | ".join(fmt.format(s[key]) for s in stats.values()) + " |\n"
                   for name, fmt, key in rows)
    return head + body
