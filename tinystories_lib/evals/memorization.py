"""Notebook 05, first half: do the models copy their training stories? (the paper's Section 4)

Memorization. Each completion (the generated text only, never the beginning) is matched with the training
story that shares most of its word bigrams (`evals.ngram_index.NgramIndex`, Rouge-2 precision); against
that story we also report Rouge-L precision (longest common subsequence / completion length).
A completion copied from a story scores near 1 on both; a new story made of common phrases scores lower.
Because children's stories share many phrases, the scale only means something next to a baseline: chunks
of training stories, as long as the completions, matched against the REST of the training set
(`self_similarity_baseline`). Completions far above that baseline are copying more than the corpus copies
from itself. `memorization_scores` / `score_models` score, `means_table` sums up, `closest_pairs` and
`format_pair` show the nearest copies side by side. The other half, the manipulation check, is
`evals.manipulation`.

Limits: the nearest story is found by Rouge-2, so its Rouge-L is not the maximum over the corpus; searches
score at most `max_candidates` stories (rarest shared bigrams first) and say when the result is approximate.
"""

from __future__ import annotations

import math
import random
import statistics
import textwrap
from collections.abc import Sequence

import numpy as np

from tinystories_lib.evals.eval_prompts import EvalPrompt, load_eval_prompts
from tinystories_lib.evals.intervals import mean_ci
from tinystories_lib.evals.ngram_index import NgramIndex
from tinystories_lib.evals.text_metrics import rouge_l_precision
from tinystories_lib.stories.words import SENTENCE_END
from tinystories_lib.stories.words import words as text_words  # `words` is a word count here

# ---------------------------------------------------------------- completions


def beginnings(n: int) -> list[EvalPrompt]:
    """The first `n` beginnings of the shipped evaluation set, general stories before probes (a probe asks
    for a short answer, which says little about copying). n = 0: all of them."""
    prompts = load_eval_prompts()
    ordered = [p for p in prompts if p.kind == "story"] + [p for p in prompts if p.kind != "story"]
    return ordered[:n] if n else ordered


def typical_length(completions: dict[str, list[str]]) -> int:
    """Median completion length in words: the baseline's chunks are cut to it, because Rouge precision of a
    short text against a large corpus is higher by chance than that of a long one."""
    counts = [len(t.split()) for texts in completions.values() for t in texts]
    return max(5, int(statistics.median(counts))) if counts else 50


# ---------------------------------------------------------------- memorization


def _score(text: str, index: NgramIndex, train_texts: Sequence[str], skip: int | None = None) -> dict:
    """Nearest training story of `text` (other than `skip`) and the Rouge precisions against it."""
    found = index.search(text, k=1 if skip is None else 2)  # k=2: the skipped story may take first place
    if found.n_bigrams == 0:  # nothing to measure (an empty or one-word completion): left out of means
        return {"story": None, "rouge2": math.nan, "rougeL": math.nan, "exact": found.exact, "n_bigrams": 0}
    hit = next((h for h in found.hits if h[0] != skip), None)
    if hit is None:  # no training story shares a single bigram
        return {"story": None, "rouge2": 0.0, "rougeL": 0.0, "exact": found.exact, "n_bigrams": found.n_bigrams}
    story, r2 = hit
    return {"story": story, "rouge2": r2, "rougeL": rouge_l_precision(text, train_texts[story]),
            "exact": found.exact, "n_bigrams": found.n_bigrams}


def _check_index(index: NgramIndex, train_texts: Sequence[str]) -> None:
    if len(index) != len(train_texts):
        raise ValueError(f"the index holds {len(index)} stories but train_texts has {len(train_texts)}: "
                         "build the index from the same list, in the same order")


def memorization_scores(completions: Sequence[str], index: NgramIndex, train_texts: Sequence[str]) -> list[dict]:
    """Per completion: `story` (index of the training story sharing most bigrams, found with `index`),
    `rouge2` (Rouge-2 precision against it), `rougeL` (Rouge-L precision against the same story), `exact`
    (whether the search proved that story the best) and `n_bigrams`. A completion without bigrams gets NaN
    scores and is left out of means; one sharing no bigram with any story gets 0 and `story` None."""
    _check_index(index, train_texts)
    return [_score(text, index, train_texts) for text in completions]


def _chunk(text: str, words: int | None) -> str:
    """`words` words of a story, starting after its first sentence (where a completion would start), moved
    earlier when the story is too short. The whole story when `words` is None."""
    ws = text.split()
    if words is None or len(ws) <= words:
        return text
    end = SENTENCE_END.search(text)
    first_end = len(text[: end.end()].split()) if end else 0
    start = min(first_end, len(ws) - words)
    return " ".join(ws[start : start + words])


def self_similarity_baseline(train_texts: Sequence[str], n: int, seed: int, index: NgramIndex | None = None,
                             words: int | None = None) -> list[dict]:
    """The training set against itself: `n` training stories drawn with `seed` (cut to `words` words when
    given, to match the completions' length), each scored like a completion against the training set with
    its own story excluded. Rows are those of `memorization_scores` plus `source`, the story scored.
    `index` must be built from `train_texts` (it is built here when None)."""
    index = index if index is not None else NgramIndex(train_texts)
    _check_index(index, train_texts)
    picks = random.Random(seed).sample(range(len(train_texts)), min(n, len(train_texts)))
    return [{**_score(_chunk(train_texts[i], words), index, train_texts, skip=i), "source": i} for i in picks]


def score_models(completions: dict[str, list[str]], index: NgramIndex,
                 train_texts: Sequence[str]) -> dict[str, list[dict]]:
    """`memorization_scores` of every model's completions, each row tagged with its `model`."""
    return {label: [{**s, "model": label} for s in memorization_scores(texts, index, train_texts)]
            for label, texts in completions.items()}


def pooled(scores: dict[str, list[dict]], completions: dict[str, list[str]]) -> tuple[list[dict], list[str]]:
    """All models' score rows and completions as two parallel lists (for `closest_pairs`)."""
    rows = [s for label in scores for s in scores[label]]
    texts = [t for label in scores for t in completions[label]]
    return rows, texts


def _finite(rows: Sequence[dict], key: str) -> list[float]:
    return [r[key] for r in rows if not math.isnan(r[key])]


def _mean_cell(values: list[float]) -> str:
    s = mean_ci(values)
    if math.isnan(s["mean"]):
        return "–"
    return f"{s['mean']:.3f}" + ("" if math.isnan(s["ci"]) else f" ± {s['ci']:.3f}")


def means_table(scores: dict[str, list[dict]], baseline: Sequence[dict], copy_threshold: float = 0.9) -> str:
    """Markdown: per model and for the baseline, the mean Rouge-2 and Rouge-L precision against the nearest
    training story (± half-width of the 95% t interval), the share of near-copies (Rouge-2 >=
    `copy_threshold`) and the share of searches proved exact."""
    header = (f"| model | n | Rouge-2 precision | Rouge-L precision | Rouge-2 ≥ {copy_threshold} | exact search |\n"
              "|---|---:|---:|---:|---:|---:|")
    lines = [header]
    for label, rows in [*scores.items(), ("training set vs itself (baseline)", list(baseline))]:
        r2 = _finite(rows, "rouge2")
        scored = [r for r in rows if not math.isnan(r["rouge2"])]
        copies = f"{sum(v >= copy_threshold for v in r2) / len(r2):.0%}" if r2 else "–"
        exact = f"{sum(r['exact'] for r in scored) / len(scored):.0%}" if scored else "–"
        lines.append(f"| {label} | {len(r2)} | {_mean_cell(r2)} | {_mean_cell(_finite(rows, 'rougeL'))} | "
                     f"{copies} | {exact} |")
    return "\n".join(lines) + "\n\nmean ± half-width of the 95% t confidence interval\n"


# ---------------------------------------------------------------- closest pairs


def _word_key(chunk: str) -> str:
    """A whitespace-separated chunk as its words, so "water." meets "water" and "Tom’s" meets "tom's"."""
    return " ".join(text_words(chunk, digits=True))


def aligned_excerpt(completion: str, story: str) -> str:
    """The passage of `story`, as many words long as `completion`, sharing most adjacent word pairs with
    it: where the completion may have been copied from (display only)."""
    cw, sw = completion.split(), story.split()
    if len(sw) <= len(cw) or len(cw) < 2:
        return story
    pairs = {(_word_key(a), _word_key(b)) for a, b in zip(cw, cw[1:])}
    keys = [_word_key(w) for w in sw]
    hit = np.array([(a, b) in pairs for a, b in zip(keys, keys[1:])], dtype=int)
    sums = np.convolve(hit, np.ones(len(cw) - 1, dtype=int), mode="valid")  # shared pairs per window
    start = int(np.argmax(sums))
    text = " ".join(sw[start : start + len(cw)])
    return ("... " if start else "") + text + (" ..." if start + len(cw) < len(sw) else "")


def closest_pairs(scores: Sequence[dict], completions: Sequence[str], train_texts: Sequence[str],
                  k: int) -> list[dict]:
    """The `k` completions with the highest Rouge-2 precision (Rouge-L breaks ties), each with its nearest
    training story: the score row plus `completion`, `story_text` and `excerpt` (`aligned_excerpt`)."""
    ranked = sorted((i for i, s in enumerate(scores) if s["story"] is not None and not math.isnan(s["rouge2"])),
                    key=lambda i: (-scores[i]["rouge2"], -scores[i]["rougeL"]))
    out = []
    for i in ranked[:k]:
        story = train_texts[scores[i]["story"]]
        out.append({**scores[i], "completion": completions[i], "story_text": story,
                    "excerpt": aligned_excerpt(completions[i], story)})
    return out


def side_by_side(left: str, right: str, width: int = 52, titles: tuple[str, str] = ("", "")) -> str:
    """Two texts wrapped into columns of `width` characters, for printing."""
    cols = [textwrap.wrap(" ".join(t.split()), width) or [""] for t in (left, right)]
    rows = [(titles[0], titles[1]), ("-" * width, "-" * width)] if any(titles) else []
    rows += [(cols[0][i] if i < len(cols[0]) else "", cols[1][i] if i < len(cols[1]) else "")
             for i in range(max(map(len, cols)))]
    return "\n".join(f"{a:<{width}} | {b}".rstrip() for a, b in rows)


def format_pair(pair: dict, width: int = 52) -> str:
    """One closest pair, a header line then the completion beside the matching training passage."""
    head = (f"{pair.get('model', 'model')}: Rouge-2 {pair['rouge2']:.2f}, Rouge-L {pair['rougeL']:.2f}, "
            f"nearest training story #{pair['story']}")
    body = side_by_side(pair["completion"], pair["excerpt"], width, ("completion", "closest training passage"))
    return f"{head}\n{body}\n"
