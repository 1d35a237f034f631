"""Offline measures of generated stories, and the tables built from grades.

These are NOT the paper's GPT-4 grades. The paper asks GPT-4 to score grammar, creativity, consistency and
plot; nothing offline can do that. What this module measures instead is narrow and stated exactly:
- novelty: how little of a completion is copied from the training set (1 - best Rouge-2 precision
  against any training story, found with `NgramIndex`);
- entity_consistency: whether a completion keeps the names (and pronoun gender) the beginning set up;
- completes_sentence: whether a completion closes the sentence the beginning left open;
- non_repetition: 1 - the share of repeated 4-grams (catches degenerate loops);
- distinct_2: share of distinct word bigrams (lexical variety).
`OfflineGrader` turns these into `Grade` records scored 0..10 so they can sit beside the judge's tables.

Text is split into word tokens: lowercased, with each punctuation mark a token of its own.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from array import array
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np

from .grading import AGE_GROUPS, LLM_DIMENSIONS, Completion, Grade

_TOKEN_RE = re.compile(r"\w+(?:['’]\w+)*|[^\w\s]")


def tokens(text: str, lower: bool = True) -> list[str]:
    """Word tokens; punctuation marks are split off as tokens of their own ("bed." -> "bed", ".")."""
    toks = _TOKEN_RE.findall(text.replace("’", "'"))
    return [t.lower() for t in toks] if lower else toks


def _ngrams(toks: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(toks[i : i + n]) for i in range(len(toks) - n + 1)]


# --- variety and looping -------------------------------------------------------------------------


def distinct_n(texts: str | Iterable[str], n: int) -> float:
    """Unique n-grams / total n-grams, pooled over `texts` (n-grams never span two texts). 0.0 when there
    are no n-grams."""
    if isinstance(texts, str):
        texts = [texts]
    grams = [g for t in texts for g in _ngrams(tokens(t), n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def repetition_rate(text: str, n: int = 4) -> float:
    """Share of the text's n-grams (default 4) that repeat an earlier one: 0 for text that never loops,
    near 1 for "the dog ran and the dog ran and ...". 0.0 for texts shorter than n tokens."""
    grams = _ngrams(tokens(text), n)
    return (len(grams) - len(set(grams))) / len(grams) if grams else 0.0


# --- overlap with a reference --------------------------------------------------------------------


def rouge2_precision(candidate: str, reference: str) -> float:
    """Share of the candidate's bigrams (with counts, each clipped to its count in the reference) that
    occur in the reference. 0.0 when the candidate has no bigrams."""
    cand = Counter(_ngrams(tokens(candidate), 2))
    total = sum(cand.values())
    if not total:
        return 0.0
    ref = Counter(_ngrams(tokens(reference), 2))
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
    cand = tokens(candidate)
    return lcs_length(cand, tokens(reference)) / len(cand) if cand else 0.0


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

    Building tokenises every story once (the slow part: about 15 s for 100k stories of 120 words on one
    CPU core) and then makes two chunked passes over the token array, so peak memory is a small multiple
    of the posting lists' size rather than of all (bigram, story) pairs.
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
            ids.extend(self.vocab.setdefault(t, len(self.vocab)) for t in tokens(text))
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
        ids = np.array([self.vocab.get(t, -1) for t in tokens(text)], dtype=np.int64)
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
            # A query has ~100 bigrams: a dense (query first word x vocab) table of query bigram positions
            # answers each story bigram with two gathers, 1.7x faster than searchsorted over ~1M keys.
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


# --- names and pronouns ---------------------------------------------------------------------------

# Capitalised words that open sentences rather than name anyone: pronouns, function words, adverbs, and
# the words children's stories most often start a sentence or a line of speech with ("Come", "Big").
_STARTERS = set(
    """a an the this that these those some any every each all no not i me my mine you your we us our they
    them their he him his she her it its and but or so then when while because if after before once one two
    three first next last finally soon later suddenly yesterday today tomorrow tonight now there here yes oh
    wow hello hi hey bye goodbye please thank thanks okay ok look let let's what where why how who which
    can could will would should may might must do does did don't is was are were be have has had as at in
    on of to for with from by up down out into over under about just also very too only even still again
    everyone everybody someone somebody nobody nothing something everything inside outside together maybe
    sometimes always never come go run stop wait help look see listen watch hurry try sorry sure great good
    bad big little small tiny happy sad yay hooray snow rain wind sun night morning""".split()
)
# Also not names: family roles ("Mom" is a role; bringing in Mom renames no one), days and holidays.
_NOT_NAMES = _STARTERS | set(
    """mom mommy mum mummy mother dad daddy father mama papa grandma granny grandpa grandmother
    grandfather nana monday tuesday wednesday thursday friday saturday sunday christmas halloween
    easter""".split()
)
_SENTENCE_OPENERS = {".", "!", "?", '"', "“", ":", "…"}
_FEMALE = {"she", "her", "hers", "herself"}
_MALE = {"he", "him", "his", "himself"}


def _base_name(tok: str) -> str:
    return tok[:-2] if tok.endswith("'s") else tok


def _is_capitalised(word: str) -> bool:
    return word[:1].isupper() and word[:1].isalpha() and not word.isupper()


def common_words(stories: Iterable[str]) -> set[str]:
    """Lowercase words that the stories write in lower case more often than capitalised in mid-sentence:
    "guess", "sun", "riding" are, "lily" and "max" are not. Lets `entity_report` see that a capitalised
    word opening a sentence is most likely not a name."""
    lower: Counter[str] = Counter()
    capital_mid: Counter[str] = Counter()
    for text in stories:
        prev = None
        for tok in tokens(text, lower=False):
            if tok.islower():
                lower[tok] += 1
            elif _is_capitalised(tok) and prev is not None and prev not in _SENTENCE_OPENERS:
                capital_mid[_base_name(tok).lower()] += 1
            prev = tok
    return {w for w, n in lower.items() if n > capital_mid[w]}


def _names(toks: list[str], prev: str | None, lower_seen: set[str]) -> list[str]:
    """Capitalised words that look like names. A capitalised word at the start of a sentence is ambiguous
    ("Suddenly", "Lily"), so there it counts only if it is not in `lower_seen` (words known in lower case).
    Contractions ("I'm", "Don't") never count."""
    found = []
    for tok in toks:
        base = _base_name(tok)
        at_start = prev is None or prev in _SENTENCE_OPENERS
        if (_is_capitalised(base) and "'" not in base and base.lower() not in _NOT_NAMES
                and not (at_start and base.lower() in lower_seen)):
            found.append(base)
        prev = tok
    return found


def _gender_counts(toks: list[str]) -> tuple[int, int]:
    low = [t.lower() for t in toks]
    return sum(t in _FEMALE for t in low), sum(t in _MALE for t in low)


@dataclass
class EntityReport:
    """What `entity_consistency` saw. `score` is None when there was nothing to check."""

    names_beginning: list[str]
    names_kept: list[str]
    names_new: list[str]
    gender: str | None
    pronouns_agree: int
    pronouns_total: int
    score: float | None


def entity_report(beginning: str, completion: str, known_words: set[str] | None = None) -> EntityReport:
    """Prompt-entity consistency, in two parts, each 0..1, averaged over the parts that apply:

    - names: of the distinct names the completion uses, the share that the beginning introduced
      (kept / (kept + new)). Applies when the beginning has names and the completion uses any.
    - pronouns: when the beginning has at most one name and all its gendered pronouns are of one gender
      (she/her or he/him), the share of the completion's gendered pronouns of that gender. Applies when
      the completion uses any.

    Limits: names are found by capitalisation with a stop list, so an unusual capitalised word at a
    sentence start can pass for a name; a new character the story legitimately brings in counts as a
    conflict; pronouns are not resolved to people, which is why the pronoun part is skipped when the
    beginning has two or more names. It checks surface consistency only, not whether the story makes sense.
    `known_words` (e.g. `NgramIndex.common_words`) makes name finding better: a capitalised word opening a
    sentence is not taken for a name when it is a common lowercase word of the corpus.
    """
    b_toks, c_toks = tokens(beginning, lower=False), tokens(completion, lower=False)
    lower_seen = {t for t in b_toks + c_toks if t.islower()} | (known_words or set())
    b_names = list(dict.fromkeys(_names(b_toks, None, lower_seen)))
    c_names = list(dict.fromkeys(_names(c_toks, b_toks[-1] if b_toks else None, lower_seen)))
    kept = [n for n in c_names if n in b_names]
    new = [n for n in c_names if n not in b_names]
    parts = []
    if b_names and c_names:
        parts.append(len(kept) / len(c_names))

    bf, bm = _gender_counts(b_toks)
    gender = "female" if bf and not bm else "male" if bm and not bf else None
    cf, cm = _gender_counts(c_toks)
    agree = cf if gender == "female" else cm if gender == "male" else 0
    if gender and len(b_names) <= 1 and cf + cm:
        parts.append(agree / (cf + cm))

    score = sum(parts) / len(parts) if parts else None
    return EntityReport(b_names, kept, new, gender, agree, cf + cm, score)


def entity_consistency(beginning: str, completion: str, known_words: set[str] | None = None) -> float:
    """0..1: how well the completion keeps the beginning's names and pronoun gender (see `entity_report`
    for exactly what is measured). 1.0 when there is nothing to contradict."""
    score = entity_report(beginning, completion, known_words).score
    return 1.0 if score is None else score


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
    toks = tokens(completion, lower=False)
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


# --- the offline grader --------------------------------------------------------------------------


class OfflineGrader:
    """Offline stand-ins for grading, NOT the paper's GPT-4 grades: they measure copying, name and pronoun
    consistency, sentence closure, looping and lexical variety, never grammar, creativity or plot as a
    reader would judge them. Use them to run the pipeline with no judge, or beside the judge's tables.

    Each score is 10 x a raw value in 0..1, so tables can sit beside the judge's out-of-10 ones; the raw
    values and what each was computed from are kept in `Grade.extra`. A dimension that does not apply to
    a completion is left out of its scores (the reason is in `extra["not_scored"]`), so means count only
    completions that were measured:
    - novelty: 1 - best Rouge-2 precision against the training set (needs `train_index`);
    - entity_consistency: see `entity_report` (left out when there is nothing to check);
    - completes_sentence: 10 or 0 (left out when the beginning ends at a sentence boundary);
    - non_repetition: 1 - `repetition_rate`;
    - distinct_2: `distinct_n` of the completion alone, n=2.
    """

    name = "offline-metrics (not GPT-4)"
    is_llm = False
    DIMENSIONS = ("novelty", "entity_consistency", "completes_sentence", "non_repetition", "distinct_2")

    def __init__(self, train_index: NgramIndex | None = None, max_sentence_words: int = 30):
        self.train_index = train_index
        self.max_sentence_words = max_sentence_words

    def grade(self, completions: Sequence[Completion]) -> list[Grade]:
        return [self._grade_one(c) for c in completions]

    def _grade_one(self, c: Completion) -> Grade:
        grade = Grade(model=c.model, prompt_id=c.prompt_id, completion_key=c.key, grader=self.name,
                      step=c.step, sample_index=c.sample_index)
        try:
            raw, details, not_scored = self._measure(c)
        except Exception as e:  # a failed grade is recorded, never dropped
            grade.status, grade.reason = "failed", f"{type(e).__name__}: {e}"
            return grade
        grade.scores = {d: 10.0 * v for d, v in raw.items()}
        grade.extra = {"raw": raw, "details": details, "not_scored": not_scored,
                       "scale": "score = 10 x raw value in 0..1; offline metrics, not GPT-4"}
        return grade

    def _measure(self, c: Completion) -> tuple[dict, dict, dict]:
        raw: dict[str, float] = {}
        details: dict = {}
        not_scored: dict[str, str] = {}
        if self.train_index is None:
            not_scored["novelty"] = "no training index given"
        else:
            found = self.train_index.search(c.completion, k=1)
            if found.n_bigrams == 0:
                not_scored["novelty"] = "completion has no bigrams"
            else:
                best = found.hits[0] if found.hits else (None, 0.0)
                raw["novelty"] = 1.0 - best[1]
                details.update(nearest_story=best[0], rouge2_precision=best[1], novelty_exact=found.exact)

        known = self.train_index.common_words if self.train_index is not None else None
        report = entity_report(c.beginning, c.completion, known)
        details["entities"] = {"beginning": report.names_beginning, "kept": report.names_kept,
                               "new": report.names_new, "gender": report.gender}
        if report.score is None:
            not_scored["entity_consistency"] = "no names or gendered pronouns to check"
        else:
            raw["entity_consistency"] = report.score

        if ends_mid_sentence(c.beginning):
            raw["completes_sentence"] = float(completes_sentence(c.beginning, c.completion,
                                                                 self.max_sentence_words))
        else:
            not_scored["completes_sentence"] = "beginning ends at a sentence boundary"

        raw["non_repetition"] = 1.0 - repetition_rate(c.completion)
        raw["distinct_2"] = distinct_n([c.completion], 2)
        return raw, details, not_scored


# --- aggregation ---------------------------------------------------------------------------------


def _t_within(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with integer df, by the finite series in cos(theta), theta =
    atan(t / sqrt(df)) (exact for every integer df; odd and even df have different series)."""
    theta = math.atan(t / math.sqrt(df))
    c2 = math.cos(theta) ** 2
    if df % 2:
        total, term = 0.0, 1.0
        if df > 1:
            total = 1.0
            for k in range(1, (df - 3) // 2 + 1):
                term *= (2 * k) / (2 * k + 1) * c2
                total += term
        return 2 / math.pi * (theta + math.sin(theta) * math.cos(theta) * total)
    total, term = 1.0, 1.0
    for k in range(1, (df - 2) // 2 + 1):
        term *= (2 * k - 1) / (2 * k) * c2
        total += term
    return math.sin(theta) * total


def _normal_quantile(p: float) -> float:
    lo, hi = -40.0, 40.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if 0.5 * (1 + math.erf(mid / math.sqrt(2))) < p else (lo, mid)
    return (lo + hi) / 2


def t_critical(df: int, confidence: float = 0.95) -> float:
    """Two-sided critical value of Student's t: P(|T| <= t) = confidence (df=1, 0.95 -> 12.706). No scipy:
    bisection on the exact series for df <= 1000; above that the Cornish-Fisher expansion around the
    normal quantile, whose error there is far below the third decimal."""
    if df < 1:
        raise ValueError(f"df must be >= 1, got {df}")
    if df > 1000:
        z = _normal_quantile(0.5 + confidence / 2)
        return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
    lo, hi = 0.0, 1.0
    while _t_within(hi, df) < confidence:
        lo, hi = hi, hi * 2
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_within(mid, df) < confidence else (lo, mid)
    return (lo + hi) / 2


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> dict:
    """Mean, sample std and the half-width `ci` of the t confidence interval. Undefined values are NaN
    (mean for n = 0; std and ci for n = 1: one value has no spread), which plots skip and tables show
    as "–"."""
    n, nan = len(values), float("nan")
    mean = sum(values) / n if n else nan
    if n < 2:
        return {"mean": mean, "std": nan, "ci": nan, "ci_low": nan, "ci_high": nan, "n": n}
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_critical(n - 1, confidence) * std / math.sqrt(n)
    return {"mean": mean, "std": std, "ci": half, "ci_low": mean - half, "ci_high": mean + half, "n": n}


def _groups(grades: Iterable[Grade]) -> dict[tuple, list[Grade]]:
    """Grades by (model, grader, step), in order of first appearance."""
    groups: dict[tuple, list[Grade]] = defaultdict(list)
    for g in grades:
        groups[(g.model, g.grader, g.step)].append(g)
    return groups


def _dimensions(grades: Sequence[Grade]) -> list[str]:
    """Every scored dimension, the paper's four first in its order, then the offline ones."""
    seen = list(dict.fromkeys(d for g in grades if g.status == "ok" for d in g.scores))
    known = list(LLM_DIMENSIONS) + list(OfflineGrader.DIMENSIONS)
    return sorted(seen, key=lambda d: known.index(d) if d in known else len(known) + seen.index(d))


def aggregate(grades: Iterable[Grade]) -> list[dict]:
    """One row per (model, grader, step) and dimension the grader scores anywhere: mean, std, ci95 (the
    half-width of the 95% t interval), ci_low, ci_high, n (grades holding that dimension; 0 gives a NaN
    mean), n_failed (failed grades of the group). A grader none of whose grades succeeded still gets a
    row per group, with dimension None, so its failures are counted."""
    grades = list(grades)
    graders = dict.fromkeys(g.grader for g in grades)
    dims_of = {name: _dimensions([g for g in grades if g.grader == name]) or [None] for name in graders}
    rows = []
    for (model, grader, step), group in _groups(grades).items():
        ok = [g for g in group if g.status == "ok"]
        for dim in dims_of[grader]:
            stats = mean_ci([float(g.scores[dim]) for g in ok if dim in g.scores], 0.95)
            stats["ci95"] = stats.pop("ci")
            rows.append({"model": model, "grader": grader, "step": step, "dimension": dim, **stats,
                         "n_failed": len(group) - len(ok)})
    return rows


def age_table(grades: Iterable[Grade]) -> str:
    """The judge's guesses of the student's age group, as a markdown table of shares per model."""
    rows = age_distribution(grades)
    if not rows:
        return "_no age groups: this grader does not guess ages (only the LLM judge does)_"
    head = "| model | n | " + " | ".join(f"{a}: {AGE_GROUPS[a]}" for a in AGE_GROUPS) + " |\n"
    head += "|---|---:|" + "---:|" * len(AGE_GROUPS) + "\n"
    return head + "".join(f"| {r['model']} | {r['n']} | " + " | ".join(f"{r['shares'].get(a, 0):.0%}" for a in AGE_GROUPS)
                          + " |\n" for r in rows)


def age_distribution(grades: Iterable[Grade]) -> list[dict]:
    """Per (model, grader, step): how many successful grades carry an age group, and the count and share
    of each group (A..F, the paper's "3 or under" .. "13-16")."""
    rows = []
    for (model, grader, step), group in _groups(grades).items():
        ages = [g.age_group for g in group if g.status == "ok" and g.age_group]
        if not ages:
            continue
        counts = Counter(ages)
        letters = list(AGE_GROUPS) + sorted(set(counts) - set(AGE_GROUPS))
        rows.append({"model": model, "grader": grader, "step": step, "n": len(ages),
                     "counts": {a: counts[a] for a in letters},
                     "shares": {a: counts[a] / len(ages) for a in letters}})
    return rows


def _cell(row: dict | None, n_group: int, digits: int) -> str:
    if row is None or math.isnan(row["mean"]):
        return "–"
    text = f"{row['mean']:.{digits}f}"
    if not math.isnan(row["ci95"]):
        text += f" ± {row['ci95']:.{digits}f}"
    return text if row["n"] == n_group else f"{text} (n={row['n']})"


def grades_table(grades: Iterable[Grade], digits: int = 2) -> str:
    """A markdown table shaped like the paper's: a row per model (and step and grader), a column per
    dimension holding "mean ± half-width of the 95% CI" ("(n=...)" when fewer grades than the row's n
    hold that dimension). The grader column is always shown, so offline scores are never mistaken for
    the judge's."""
    grades = list(grades)
    rows = aggregate(grades)
    dims = _dimensions(grades)
    header = ["model", "step", "grader", *dims, "n", "failed"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (model, grader, step), group in _groups(grades).items():
        mine = {r["dimension"]: r for r in rows if (r["model"], r["grader"], r["step"]) == (model, grader, step)}
        n_ok = sum(g.status == "ok" for g in group)
        cells = [model, "final" if step is None else str(step), grader]
        cells += [_cell(mine.get(d), n_ok, digits) for d in dims]
        cells += [str(n_ok), str(len(group) - n_ok)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\nmean ± half-width of the 95% t confidence interval\n"


# --- grade logs ----------------------------------------------------------------------------------


def append_grades_jsonl(path: str | Path, grades: Iterable[Grade]) -> int:
    """Append grades to a JSONL log (created if missing). Returns how many were written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [g.to_json() + "\n" for g in grades]
    with open(path, "a+b") as f:
        f.seek(0, 2)
        if f.tell():  # a run killed mid-line left no newline: start ours on a fresh line
            f.seek(-1, 2)
            if f.read(1) != b"\n":
                f.write(b"\n")
        f.write("".join(lines).encode("utf-8"))
    return len(lines)


def read_grades_jsonl(path: str | Path) -> list[Grade]:
    """All grades in a JSONL log ([] if it does not exist). A line that is not valid JSON (a write cut
    short) is skipped with a warning."""
    path = Path(path)
    if not path.exists():
        return []
    grades, bad = [], 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                grades.append(Grade.from_dict(json.loads(line)))
            except (json.JSONDecodeError, TypeError):
                bad += 1
    if bad:
        warnings.warn(f"{path}: skipped {bad} unreadable line(s)", stacklevel=2)
    return grades
