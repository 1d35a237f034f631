"""The nearest training story of a text: an inverted index of word bigrams over the training set.

`NgramIndex(train_texts)` finds, for any text, the training stories with the highest Rouge-2 precision of
the text against them (`search`, `nearest`, `novelty`), exactly when it can prove it and approximately
(flagged) past `max_candidates`; `save` / `load` keep a built index. It tokenises with
`stories.words.split_words`, as the Rouge functions of `evals.text_metrics` do, so its scores are theirs.
The offline grader's novelty (the copying part of its creativity) and the memorization check
(`evals.memorization`) both search it; it also keeps `common_words` of the corpus for the grader's name
finding (`evals.entities`).
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np

from tinystories_lib.evals.entities import common_words
from tinystories_lib.stories.words import split_words

# --- nearest training story ----------------------------------------------------------------------


@dataclass
class NearestResult:
    """`hits`: (story index, Rouge-2 precision) best first, only stories sharing a bigram. `exact`: the
    scores are provably the true top k over the whole corpus (ties may pick a different story).
    `n_candidates`: how many stories were scored; `n_bigrams`: how many bigrams the text has (0: no
    score is defined)."""

    hits: list[tuple[int, float]]
    exact: bool
    n_candidates: int
    n_bigrams: int


class NgramIndex:
    """Finds the training stories that share most word bigrams with a text (Rouge-2 precision).

    The corpus is kept as one flat int32 array of token ids (4 bytes a token). An inverted index maps each
    bigram to the stories holding it, except bigrams held by more than `max_postings` stories ("once
    upon", "the park"): their lists would be huge and say little about which story a text came from.

    A query walks its bigrams from the rarest up, scoring the stories on their posting lists exactly, in
    batches. After each batch it knows a bound: a story not yet scored holds none of the bigrams walked so
    far, so it can match at most the bigrams left. Once the k-th best score reaches that bound the answer
    is exact and the walk stops; it also stops after `max_candidates` stories, and then `exact` is False.

    Building tokenises every story once (the slow part, see BENCHMARKS.md) and then makes two chunked
    passes over the token array, so peak memory is a small multiple of the posting lists' size rather than
    of all (bigram, story) pairs.
    """

    def __init__(
        self,
        stories: Iterable[str] | None = None,
        max_postings: int | None = 20_000,
        max_candidates: int = 20_000,
        chunk_stories: int = 50_000,
        case_sample: int = 20_000,
    ):
        self.max_postings = max_postings
        self.max_candidates = max_candidates
        self.vocab: dict[str, int] = {}
        stories = [] if stories is None else stories if isinstance(stories, Sequence) else list(stories)
        self._encode(stories)
        self._build_postings(chunk_stories)
        # Kept with the index so the grader can tell names from capitalised common words (see
        # `common_words`); a sample of the corpus is plenty for that.
        self.common_words = common_words(islice(stories, case_sample))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    # building

    def _encode(self, stories: Iterable[str]) -> None:
        ids, offsets = array("i"), array("q", [0])
        for text in stories:
            ids.extend(self.vocab.setdefault(t, len(self.vocab)) for t in split_words(text))
            offsets.append(len(ids))
        self.tokens = np.frombuffer(ids, dtype=np.int32).copy() if ids else np.zeros(0, np.int32)
        self.offsets = np.frombuffer(offsets, dtype=np.int64).copy()

    DENSE_TABLE_MAX = 1 << 22  # entries of _overlaps' lookup table (16 MiB); larger vocabularies search

    def _bigram_keys(self, toks: np.ndarray) -> np.ndarray:
        return toks[:-1].astype(np.int64) * len(self.vocab) + toks[1:]

    def _story_bigrams(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        """Distinct (bigram key, story) pairs of stories lo..hi-1, sorted by key then story."""
        start, end = self.offsets[lo], self.offsets[hi]
        if end - start < 2:
            return np.zeros(0, np.int64), np.zeros(0, np.int32)
        keys = self._bigram_keys(self.tokens[start:end])
        owner = np.repeat(np.arange(lo, hi, dtype=np.int32), np.diff(self.offsets[lo : hi + 1]))
        same_story = owner[:-1] == owner[1:]  # a bigram must not join the end of one story to the next
        keys, owner = keys[same_story], owner[:-1][same_story]
        order = np.lexsort((owner, keys))
        keys, owner = keys[order], owner[order]
        first = np.ones(len(keys), bool)
        first[1:] = (keys[1:] != keys[:-1]) | (owner[1:] != owner[:-1])
        return keys[first], owner[first]

    def _build_postings(self, chunk: int) -> None:
        n = len(self)
        # Pass 1: document frequency of every bigram.
        parts_k, parts_c = [], []
        for lo in range(0, n, chunk):
            k, c = np.unique(self._story_bigrams(lo, min(n, lo + chunk))[0], return_counts=True)
            parts_k.append(k)
            parts_c.append(c)
        if parts_k:
            self.keys, inv = np.unique(np.concatenate(parts_k), return_inverse=True)
            self.df = np.bincount(inv.ravel(), weights=np.concatenate(parts_c)).astype(np.int64)
        else:
            self.keys, self.df = np.zeros(0, np.int64), np.zeros(0, np.int64)
        kept = self.df if self.max_postings is None else np.where(self.df <= self.max_postings, self.df, 0)
        self.starts = np.concatenate([[0], np.cumsum(kept)]).astype(np.int64)
        # Pass 2: posting lists of the bigrams under the cap. Chunks come in story order and a stable sort
        # by key keeps that order, so each list is sorted by story.
        parts_k, parts_s = [], []
        for lo in range(0, n, chunk):
            k, s = self._story_bigrams(lo, min(n, lo + chunk))
            keep = kept[np.searchsorted(self.keys, k)] > 0
            parts_k.append(k[keep])
            parts_s.append(s[keep])
        if parts_k:
            k, s = np.concatenate(parts_k), np.concatenate(parts_s)
            self.postings = s[np.argsort(k, kind="stable")].astype(np.int32)
        else:
            self.postings = np.zeros(0, np.int32)

    # querying

    def _query(self, text: str) -> tuple[np.ndarray, np.ndarray, int]:
        """The text's distinct in-vocabulary bigram keys (sorted), their counts, and its total number of
        bigrams (unknown words still count in the total: they can never match)."""
        ids = np.array([self.vocab.get(t, -1) for t in split_words(text)], dtype=np.int64)
        total = max(len(ids) - 1, 0)
        if total == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), 0
        known = (ids[:-1] >= 0) & (ids[1:] >= 0)
        keys, counts = np.unique(self._bigram_keys(ids)[known], return_counts=True)
        return keys, counts, total

    def _overlaps(self, stories: np.ndarray, qkeys: np.ndarray, qcounts: np.ndarray) -> np.ndarray:
        """Exact clipped bigram overlap of each story with the query, all stories at once."""
        starts, lens = self.offsets[stories], np.diff(self.offsets)[stories]
        within = np.arange(lens.sum()) - np.repeat(np.cumsum(lens) - lens, lens)
        toks = self.tokens[np.repeat(starts, lens) + within]
        owner = np.repeat(np.arange(len(stories)), lens)
        V, q = len(self.vocab), len(qkeys)
        firsts, row_of = np.unique(qkeys // V, return_inverse=True)
        if (len(firsts) + 1) * V <= self.DENSE_TABLE_MAX:
            # A query has few bigrams: a dense (query first word x vocab) table of query bigram positions
            # answers each story bigram with two gathers, cheaper than a searchsorted over all the keys.
            first_row = np.full(V, -1, np.int64)  # -1 picks the table's last row: all -1 (no such bigram)
            first_row[firsts] = np.arange(len(firsts))
            table = np.full((len(firsts) + 1, V), -1, np.int32)
            table[row_of, qkeys % V] = np.arange(q)
            pos = table[first_row[toks[:-1]], toks[1:]]
            hit = (owner[:-1] == owner[1:]) & (pos >= 0)
        else:  # a large vocabulary: the table would cost more than it saves
            keys = self._bigram_keys(toks)
            pos = np.minimum(np.searchsorted(qkeys, keys), q - 1)
            hit = (owner[:-1] == owner[1:]) & (qkeys[pos] == keys)
        # Count each (story, query bigram) cell, clip it to the query's count, sum per story.
        cells, counts = np.unique(owner[:-1][hit] * q + pos[hit], return_counts=True)
        clipped = np.minimum(counts, qcounts[cells % q])
        return np.bincount(cells // q, weights=clipped, minlength=len(stories)).astype(np.int64)

    def search(self, text: str, k: int = 1, batch: int = 4096) -> NearestResult:
        """The k training stories with the highest Rouge-2 precision of `text` against them."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        qkeys, qcounts, total = self._query(text)
        pos, df = self._lookup(qkeys)
        bound = int(qcounts[df > 0].sum())  # the most an unscored story can still match
        walk = [i for i in np.argsort(df, kind="stable") if df[i] > 0 and self._has_postings(pos[i])]
        scored: dict[int, int] = {}
        pending: list[np.ndarray] = []
        for n_walked, i in enumerate(walk, 1):
            pending.append(self.postings[self.starts[pos[i]] : self.starts[pos[i] + 1]])
            bound -= int(qcounts[i])
            if sum(map(len, pending)) < batch and n_walked < len(walk):
                continue  # fill the batch first: one vectorised scoring pass is cheaper than many
            seen = np.fromiter(scored, np.int64, len(scored))
            fresh = np.setdiff1d(np.concatenate(pending), seen)
            pending = []
            scored.update(zip(fresh.tolist(), self._overlaps(fresh, qkeys, qcounts).tolist()))
            if self._settled(scored, k, bound) or len(scored) >= self.max_candidates:
                break
        best = sorted((-o, s) for s, o in scored.items())[:k]
        hits = [(s, -o / total) for o, s in best]
        return NearestResult(hits, self._settled(scored, k, bound), len(scored), total)

    def _lookup(self, qkeys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Position of each query key in `self.keys` and its document frequency (0: in no story)."""
        if not len(self.keys):
            return np.zeros(len(qkeys), np.int64), np.zeros(len(qkeys), np.int64)
        pos = np.minimum(np.searchsorted(self.keys, qkeys), len(self.keys) - 1)
        return pos, np.where(self.keys[pos] == qkeys, self.df[pos], 0)

    def _has_postings(self, key_pos: int) -> bool:
        return self.starts[key_pos + 1] > self.starts[key_pos]

    @staticmethod
    def _settled(scored: dict[int, int], k: int, bound: int) -> bool:
        """No unscored story can beat the k-th best score so far."""
        if bound <= 0:
            return True
        top = sorted(scored.values(), reverse=True)[:k]
        return len(top) == k and top[-1] >= bound

    def nearest(self, text: str, k: int = 1) -> list[tuple[int, float]]:
        """[(story index, Rouge-2 precision)] of the k closest training stories, best first; only stories
        sharing at least one bigram appear. See `search` for whether the answer is provably exact."""
        return self.search(text, k).hits

    def novelty(self, text: str) -> float | None:
        """1 - the best Rouge-2 precision against any training story; None for text with no bigrams."""
        found = self.search(text, 1)
        if found.n_bigrams == 0:
            return None
        return 1.0 - (found.hits[0][1] if found.hits else 0.0)

    # persistence

    def save(self, path: str | Path) -> None:
        words = np.array(sorted(self.vocab, key=self.vocab.get), dtype=str)
        cap = -1 if self.max_postings is None else self.max_postings
        np.savez(path, tokens=self.tokens, offsets=self.offsets, keys=self.keys, df=self.df,
                 starts=self.starts, postings=self.postings, words=words,
                 common=np.array(sorted(self.common_words), dtype=str),
                 limits=np.array([cap, self.max_candidates]))

    @classmethod
    def load(cls, path: str | Path) -> NgramIndex:
        with np.load(path, allow_pickle=False) as z:
            cap, max_candidates = (int(x) for x in z["limits"])
            index = cls(max_postings=None if cap < 0 else cap, max_candidates=max_candidates)
            index.vocab = {w: i for i, w in enumerate(z["words"].tolist())}
            index.common_words = set(z["common"].tolist())
            for name in ("tokens", "offsets", "keys", "df", "starts", "postings"):
                setattr(index, name, z[name])
        return index
