"""Text measures on word tokens: variety, looping, overlap with a reference, finishing a sentence.

    distinct_n, repetition_rate            lexical variety and degenerate loops
    rouge2_precision, rouge_l_precision    overlap of a candidate with one reference (via lcs_length)
    ends_mid_sentence, completes_sentence  a beginning leaves a sentence open; a completion closes it

Pure functions of strings, tokenised by `stories.words.split_words` (lowercased words, each punctuation
mark a token of its own), shared by the offline grader (`evals.offline`), the memorization check
(`evals.memorization`) and the training-set search (`evals.ngram_index`), which all need the same tokens.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from tinystories_lib.evals.entities import _STARTERS
from tinystories_lib.stories.words import split_words


def _ngrams(toks: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(toks[i : i + n]) for i in range(len(toks) - n + 1)]


# --- variety and looping -------------------------------------------------------------------------


def distinct_n(texts: str | Iterable[str], n: int) -> float:
    """Unique n-grams / total n-grams, pooled over `texts` (n-grams never span two texts). 0.0 when there
    are no n-grams."""
    if isinstance(texts, str):
        texts = [texts]
    grams = [g for t in texts for g in _ngrams(split_words(t), n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def repetition_rate(text: str, n: int = 4) -> float:
    """Share of the text's n-grams (default 4) that repeat an earlier one: 0 for text that never loops,
    near 1 for "the dog ran and the dog ran and ...". 0.0 for texts shorter than n tokens."""
    grams = _ngrams(split_words(text), n)
    return (len(grams) - len(set(grams))) / len(grams) if grams else 0.0


# --- overlap with a reference --------------------------------------------------------------------


def rouge2_precision(candidate: str, reference: str) -> float:
    """Share of the candidate's bigrams (with counts, each clipped to its count in the reference) that
    occur in the reference. 0.0 when the candidate has no bigrams."""
    cand = Counter(_ngrams(split_words(candidate), 2))
    total = sum(cand.values())
    if not total:
        return 0.0
    ref = Counter(_ngrams(split_words(reference), 2))
    return sum(min(c, ref[g]) for g, c in cand.items()) / total


def lcs_length(a: Sequence, b: Sequence) -> int:
    """Length of the longest common subsequence, bit-parallel: one big-int update per item of `a`,
    so it costs O(len(a) * len(b) / 64) word operations instead of a Python double loop."""
    if not a or not b:
        return 0
    match: dict = {}
    for j, item in enumerate(b):
        match[item] = match.get(item, 0) | (1 << j)
    mask = (1 << len(b)) - 1
    v = mask  # zero bits of v mark the columns where the LCS has grown
    for item in a:
        u = v & match.get(item, 0)
        v = ((v + u) | (v - u)) & mask
    return len(b) - bin(v).count("1")


def rouge_l_precision(candidate: str, reference: str) -> float:
    """LCS of the two token sequences / the candidate's length. 0.0 for an empty candidate."""
    cand = split_words(candidate)
    return lcs_length(cand, split_words(reference)) / len(cand) if cand else 0.0


# --- closing the open sentence -------------------------------------------------------------------

_TERMINAL = set(".!?…")
_CLOSERS = "\"'”’)]"


def ends_mid_sentence(text: str) -> bool:
    """Whether the text stops inside a sentence (no . ! ? at the end, closing quotes aside, or an open
    quotation mark). False for empty text."""
    t = text.rstrip()
    if not t:
        return False
    if t.endswith("“") or (t.endswith('"') and t.count('"') % 2 == 1):
        return True  # an opening quote: the quoted speech is still to come
    return t.rstrip(_CLOSERS)[-1:] not in _TERMINAL


def completes_sentence(beginning: str, completion: str, max_words: int = 30) -> bool:
    """When the beginning ends mid-sentence: does the completion carry on that sentence (it does not
    restart with a capitalised sentence opener such as "Once" or "The") and end it with . ! or ? within
    `max_words` words? True when the beginning has no open sentence (nothing to complete)."""
    if not ends_mid_sentence(beginning):
        return True
    toks = split_words(completion, lower=False)
    if not toks:
        return False
    b = beginning.rstrip()
    expects_capital = b.endswith((":", "“")) or (b.endswith('"') and b.count('"') % 2 == 1)
    first = toks[0]
    if first[:1].isupper() and first.lower() in _STARTERS and first != "I" and not expects_capital:
        return False  # "Once upon a time..." starts a new story instead of finishing this one
    words = 0
    for tok in toks:
        if tok in _TERMINAL:
            return words <= max_words
        words += tok[:1].isalnum()
    return False
