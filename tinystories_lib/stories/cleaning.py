"""Cleaning a story collection and splitting it for training.

    normalize_text(text)          NFC, straight quotes, single spaces, at most one blank line
    clean(stories)                normalise, drop empty / too short / too long / duplicate stories
    NearDuplicateIndex            MinHash LSH over word 3-grams: near-copies of stories seen before
    split(stories, val_fraction)  a train/val split by id hash, stable as the corpus grows

Apart from the loaders (`stories.loading`) because it applies to stories from any source: the corpus
stage cleans and splits whatever it loaded (hub, LLM or storyteller stories), and the generation
validator (`llm.story_checks`) reuses `NearDuplicateIndex` to reject near-copies as they arrive.
`NearDuplicateIndex` needs datasketch (`pip install 'tinystories-lab[data]'`).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
import zlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import replace

from tinystories_lib.stories.loading import _require
from tinystories_lib.stories.records import Story
from tinystories_lib.stories.words import words

# ---------------------------------------------------------------------------------------------------------
# Cleaning and splitting
# ---------------------------------------------------------------------------------------------------------

_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u00a0": " "})


def normalize_text(text: str) -> str:
    """Modest normalisation: NFC, straight quotes, no trailing spaces, single spaces, <=1 blank line."""
    text = unicodedata.normalize("NFC", text).translate(_QUOTES).replace("\r\n", "\n")
    lines = [re.sub(r"[ \t]+", " ", line).strip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def clean(
    stories: Iterable[Story],
    min_chars: int = 50,
    max_chars: int = 10_000,
    near_dup_threshold: float | None = None,
    num_perm: int = 128,
) -> tuple[list[Story], dict[str, int]]:
    """Normalise text and drop empty, too short, too long, duplicate and (optionally) near-duplicate stories.

    The first of a group of duplicates is kept. Near-duplicates (MinHash LSH over word 3-grams, estimated
    Jaccard >= `near_dup_threshold`, needs datasketch) are skipped when the threshold is None.
    The defaults lie well outside the lengths of real TinyStories stories, so they drop only fragments
    and runaway texts.
    Returns (kept, report); report counts input, kept and each reason for dropping.
    """
    report = Counter({k: 0 for k in ("input", "empty", "too_short", "too_long", "exact_duplicate")})
    near = NearDuplicateIndex(near_dup_threshold, num_perm) if near_dup_threshold is not None else None
    if near is not None:
        report["near_duplicate"] = 0
    seen: set[str] = set()
    kept = []
    for story in stories:
        report["input"] += 1
        text = normalize_text(story.text)
        reason = _length_problem(text, min_chars, max_chars)
        if reason is None:
            digest = hashlib.sha1(text.encode("utf-8")).hexdigest()
            if digest in seen:
                reason = "exact_duplicate"
            seen.add(digest)
        if reason is None and near is not None and near.seen_similar(story.id, text):
            reason = "near_duplicate"
        if reason is not None:
            report[reason] += 1
            continue
        kept.append(replace(story, text=text))
    report["kept"] = len(kept)
    return kept, dict(report)


def _length_problem(text: str, min_chars: int, max_chars: int) -> str | None:
    if not text:
        return "empty"
    if len(text) < min_chars:
        return "too_short"
    if len(text) > max_chars:
        return "too_long"
    return None


# Odd 64-bit multipliers (from splitmix64 and the golden ratio) for mixing word hashes into shingle hashes.
_MIX = (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB)


class NearDuplicateIndex:
    """MinHash LSH over word 3-grams (datasketch). LSH candidates are confirmed with the MinHash Jaccard
    estimate, so the threshold means what it says. The random permutations are drawn once and shared by
    every sketch, and the sketch made by `similar` is reused by `add` for the same text (checking, then
    keeping, a story is the common pattern), which halves the cost.

    A shingle's hash is built from its words' hashes (crc32, remembered per word: a story corpus reuses a
    few thousand words) by a multiply-xor mix in numpy, so no shingle string is ever built."""

    def __init__(self, threshold: float, num_perm: int = 128):
        datasketch = _require("datasketch")
        self._minhash = datasketch.MinHash
        template = datasketch.MinHash(num_perm=num_perm)
        self._perms, self._scheme = template.permutations, template.scheme
        self._lsh = datasketch.MinHashLSH(threshold=threshold, num_perm=num_perm)
        self._threshold, self._num_perm = threshold, num_perm
        self._sketches: dict[str, object] = {}
        self._last: tuple[str, object] | None = None
        self._word_hashes: dict[str, int] = {}

    def _sketch(self, text: str):
        if self._last is not None and self._last[0] == text:
            return self._last[1]
        # hashfunc=int: the values handed over are already 32-bit shingle hashes; MinHash's own
        # permutations supply the randomness.
        m = self._minhash(num_perm=self._num_perm, permutations=self._perms, scheme=self._scheme, hashfunc=int)
        m.update_batch(self._shingle_hashes(text).tolist())
        self._last = (text, m)
        return m

    def _shingle_hashes(self, text: str, n: int = 3):
        """32-bit hashes of the text's word n-grams (lower case, numbers counted as words), with repeats."""
        import numpy as np

        toks = words(text, digits=True)
        if len(toks) < n:  # one shingle: the whole (short) text
            return np.array([zlib.crc32(" ".join(toks).encode("utf-8"))], dtype=np.uint64)
        table = self._word_hashes
        if len(table) > 1_000_000:  # bounded, for corpora with unbounded vocabularies (ids, numbers)
            table.clear()
        h = np.fromiter(
            (table[w] if w in table else table.setdefault(w, zlib.crc32(w.encode("utf-8"))) for w in toks),
            dtype=np.uint64, count=len(toks),
        )
        mix = np.array(_MIX, dtype=np.uint64)
        mixed = h[: len(h) - n + 1] * mix[0]
        for i in range(1, n):  # position-dependent multipliers: "a b c" and "c b a" differ
            mixed ^= h[i : len(h) - n + 1 + i] * mix[i]
        return mixed >> np.uint64(32)  # the well-mixed high half

    def similar(self, text: str) -> bool:
        m = self._sketch(text)
        return any(self._sketches[k].jaccard(m) >= self._threshold for k in self._lsh.query(m))

    def add(self, key: str, text: str) -> None:
        key = key if key not in self._sketches else f"{key}#{len(self._sketches)}"
        m = self._sketch(text)
        self._lsh.insert(key, m)
        self._sketches[key] = m

    def seen_similar(self, key: str, text: str) -> bool:
        """Whether `text` is close to one seen before; if not, remember it."""
        if self.similar(text):
            return True
        self.add(key, text)
        return False


def split(stories: Iterable[Story], val_fraction: float, seed: int = 0) -> tuple[list[Story], list[Story]]:
    """Deterministic train/val split by hashing (seed, story id).

    Each story's side depends only on its own id, so adding stories never moves existing ones between
    train and val (a shuffle-and-cut would). The val share is therefore approximate. If the hash puts no
    story in val although val_fraction > 0 and there are at least two stories, the story with the lowest
    hash goes to val, so tiny corpora still get a validation set.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    stories = list(stories)
    scores = [_unit_hash(f"{seed}:{s.id}") for s in stories]
    in_val = [score < val_fraction for score in scores]
    if val_fraction > 0 and len(stories) >= 2 and not any(in_val):
        in_val[min(range(len(stories)), key=scores.__getitem__)] = True
    train = [s for s, v in zip(stories, in_val) if not v]
    val = [s for s, v in zip(stories, in_val) if v]
    return train, val


def _unit_hash(key: str) -> float:
    """A stable hash of `key` mapped to [0, 1) (Python's hash() is salted per process)."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64
