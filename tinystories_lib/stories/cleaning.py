"""Cleaning a story collection and splitting it for training.

    normalize_text(text)          NFC, straight quotes, single spaces, at most one blank line
    repair_mojibake(text)         UTF-8 text that was decoded as cp1252 ("itâ€™s" -> "it’s"), with ftfy
    is_fragment(text)             whether a story stops mid-sentence
    clean(stories, ...)           repair and normalise, then drop what should not be trained on; a report
    Cleaner(...)                  the same, one story at a time, in bounded memory (the corpus stage's)
    DigestSet                     a set of 64-bit text digests, 8 bytes each: exact duplicates among millions
    drop_report_table(report)     that report as Markdown, with examples (notebook 01)
    NearDuplicateIndex            MinHash LSH over word 3-grams: near-copies of stories seen before
    split(stories, val_fraction)  a train/val split by id hash, stable as the corpus grows (`split_score`:
                                  one story's side, for a split written as the stories stream past)

Apart from the loaders (`stories.loading`) because it applies to stories from any source: the corpus
stage cleans and splits whatever it loaded (hub, LLM or storyteller stories), and the generation
validator (`llm.story_checks`) reuses `NearDuplicateIndex` to reject near-copies as they arrive.
`NearDuplicateIndex` needs datasketch and `repair_mojibake` ftfy (`pip install 'tinystories-lab[data]'`).

Memory: `Cleaner` holds one story at a time, the counts, the report's few examples and one 8-byte digest
per kept story (17 MB for 2.1M stories). Near-duplicate detection (`near_duplicates` > 0) holds a MinHash
sketch of every kept story instead (128 permutations: about 1.5 KB a story with the LSH tables, some
3 GB for 2.1M), so it is off by default; for millions of stories run it on a subset, or raise memory.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import unicodedata
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace

from tinystories_lib.stories.documents import require_extra
from tinystories_lib.stories.records import Story
from tinystories_lib.stories.words import SENTENCE_END, sentences, words

# ---------------------------------------------------------------------------------------------------------
# Repairing and normalising text
# ---------------------------------------------------------------------------------------------------------

_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u00a0": " "})


def normalize_text(text: str) -> str:
    """Modest normalisation: NFC, straight quotes, no trailing spaces, single spaces, <=1 blank line."""
    text = unicodedata.normalize("NFC", text).translate(_QUOTES).replace("\r\n", "\n")
    lines = [re.sub(r"[ \t]+", " ", line).strip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _cp1252_char(byte: int) -> str:
    try:
        return bytes([byte]).decode("cp1252")
    except UnicodeDecodeError:  # 0x81 0x8D 0x8F 0x90 0x9D: no cp1252 character; ftfy reads them as C1 controls
        return chr(byte)


# A closing curly quote is UTF-8 E2 80 9D; cp1252 has no character for 0x9D, so decoding drops it and leaves
# "â€" followed by something that cannot be a UTF-8 continuation byte. ftfy cannot guess the lost byte (it
# reads "â€ " as a dagger, taking the space for a lost 0xA0), so it is put back, as the C1 control ftfy's
# sloppy cp1252 maps to 0x9D, before ftfy decodes the text.
_LOST_9D = re.compile("â€(?![" + re.escape("".join(_cp1252_char(b) for b in range(0x80, 0xC0))) + "])")


def repair_mojibake(text: str) -> str:
    """The text with UTF-8-read-as-cp1252 mojibake undone ("â€œHiâ€" -> "“Hi”", "itâ€™s" -> "it’s") by ftfy's
    `fix_encoding` (only the encoding fix: no quote, HTML or line-break changes). ASCII text cannot hold
    this mojibake and is returned as it is, so ftfy is needed only for text that might."""
    if text.isascii():
        return text
    ftfy = require_extra("ftfy")
    fixed = ftfy.fix_encoding(_LOST_9D.sub("â€\x9d", text))
    return fixed if "\x9d" not in fixed else ftfy.fix_encoding(text)  # never leave a restored byte behind


def is_fragment(text: str) -> bool:
    """Whether a story stops mid-sentence (a cut-off generation): its last sentence (`words.sentences`)
    has no sentence end. A closing "The End" line counts as an end: such a story was finished on purpose."""
    parts = sentences(text)
    if not parts:
        return True
    last = parts[-1]
    return SENTENCE_END.search(last) is None and last.lower() != "the end"


_GPT4 = re.compile(r"\bgpt[-_ ]?4(?!\d)", re.IGNORECASE)


def _model_known(source: str) -> bool:
    """Whether a story's `source` names the model that wrote it, rather than a file, the hub or the storyteller."""
    return bool(source) and source != "storyteller" and not source.startswith(("file:", "hub:"))


def _by_gpt4(source: str) -> bool:
    """Whether a known source names GPT-4 ("GPT-4" in TinyStories_all_data, "gpt-4-0613", "gpt-4o", ...)."""
    return _GPT4.search(source) is not None


# ---------------------------------------------------------------------------------------------------------
# Cleaning
# ---------------------------------------------------------------------------------------------------------

# Why a story was dropped, in the order the checks run (a story is counted under the first that fails).
REASONS = {
    "not_gpt4": "not written by GPT-4 (gpt4_only)",
    "empty": "no text",
    "too_short": "shorter than min_chars",
    "too_long": "longer than max_chars",
    "fragment": "stops mid-sentence (no sentence end)",
    "exact_duplicate": "the same text as a story kept before it",
    "near_duplicate": "this similar to a story kept before it (near_duplicates)",
}
_ALWAYS = ("empty", "too_short", "too_long", "exact_duplicate")  # the checks made whatever the settings
EXCERPT = 120  # characters of a story shown in an example


@dataclass(eq=False)
class CleanReport(Mapping):
    """What `clean` did. As a mapping it is the counts: `input`, `kept` and, for each check made, how many
    stories it dropped (a check that was not asked for has no key), so `report["too_short"]` and
    `dict(report)` read as before. Beside them: up to `per_reason` examples of each drop (id and text
    excerpt, with the id of the story a duplicate repeats), how many stories had mojibake repaired with
    before/after excerpts, notes on settings that could not apply, and the settings themselves.
    `as_dict()` is all of it, JSON-ready (the corpus artifact's `clean_report`); `from_dict` reads it back."""

    counts: dict[str, int]
    examples: dict[str, list[dict]] = field(default_factory=dict)
    mojibake_repaired: int = 0
    mojibake_examples: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    settings: dict = field(default_factory=dict)

    def __getitem__(self, key: str) -> int:
        return self.counts[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.counts)

    def __len__(self) -> int:
        return len(self.counts)

    def __str__(self) -> str:
        return str(self.counts)

    def as_dict(self) -> dict:
        return {**self.counts, "examples": self.examples,
                "mojibake": {"repaired": self.mojibake_repaired, "examples": self.mojibake_examples},
                "notes": self.notes, "settings": self.settings}

    @classmethod
    def from_dict(cls, d: Mapping) -> CleanReport:
        """From `as_dict()`'s form, or from a plain dict of counts (what older corpus artifacts hold)."""
        if isinstance(d, CleanReport):
            return d
        moji = d.get("mojibake") or {}
        return cls(counts={k: v for k, v in d.items() if isinstance(v, int) and not isinstance(v, bool)},
                   examples=dict(d.get("examples") or {}), mojibake_repaired=moji.get("repaired", 0),
                   mojibake_examples=list(moji.get("examples") or []), notes=list(d.get("notes") or []),
                   settings=dict(d.get("settings") or {}))


def clean(
    stories: Iterable[Story],
    *,
    min_chars: int = 50,
    max_chars: int = 10_000,
    fix_mojibake: bool = True,
    gpt4_only: bool = False,
    drop_fragments: bool = False,
    near_duplicates: float = 0.0,
    near_dup_threshold: float | None = None,
    num_perm: int = 128,
    per_reason: int = 3,
) -> tuple[list[Story], CleanReport]:
    """Repair and normalise each story's text, then drop the stories a model should not be trained on.

    In order: with `gpt4_only`, stories whose `source` does not name GPT-4 (TinyStories_all_data mixes
    GPT-3.5 and GPT-4 stories); if no story names its model (storyteller stories, .txt files, the hub's
    text columns) nothing is dropped and the report says so. Then empty, too short and too long texts; with
    `drop_fragments`, stories that stop mid-sentence; exact duplicates; and with `near_duplicates` (a MinHash
    Jaccard in (0, 1], 0 = off; `near_dup_threshold` is its older name, None = off) near-duplicates, which
    need datasketch. Of a group of duplicates the first is kept. With `fix_mojibake`, text decoded with the
    wrong codec is repaired first (`repair_mojibake`, ftfy), so a repaired story and its clean copy count
    as duplicates. The length defaults lie well outside real TinyStories stories, so they drop only scraps
    and runaway texts; the corpus stage passes the profile's `data` settings.
    Returns (kept, report): see `CleanReport`. Inputs are not modified. The stories are held (a list in,
    a list out); `Cleaner` does the same one story at a time.
    """
    stories = list(stories)
    cleaner = Cleaner(min_chars=min_chars, max_chars=max_chars, fix_mojibake=fix_mojibake, gpt4_only=gpt4_only,
                      drop_fragments=drop_fragments, near_duplicates=near_duplicates,
                      near_dup_threshold=near_dup_threshold, num_perm=num_perm, per_reason=per_reason,
                      models_named=gpt4_only and names_models(stories))
    kept = list(cleaner.stream(stories))
    cleaner.resolve_likes((text_digest(s.text), s.id) for s in kept)
    return kept, cleaner.report


def names_models(stories: Iterable[Story]) -> bool:
    """Whether any story's `source` names the model that wrote it (what `gpt4_only` needs to select)."""
    return any(_model_known(s.source) for s in stories)


def text_digest(text: str) -> int:
    """A 63-bit digest of a text (blake2b): equal texts, equal digests; two of 2.1M distinct texts share
    one with a probability of about 1e-7."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big") >> 1


class DigestSet:
    """A set of `text_digest`s in about 8 bytes each: a sorted int64 array, and the newest digests in a
    small Python set that is merged into it whenever it holds `buffer` of them (a Python set of ints
    costs some 100 bytes an entry: 200 MB for 2.1M stories, against 17 MB here, plus the buffer's 13 MB)."""

    buffer = 1 << 17

    def __init__(self, buffer: int | None = None):
        import numpy as np

        self._np = np
        self._sorted = np.empty(0, dtype=np.int64)
        self._new: set[int] = set()
        self._buffer = buffer or self.buffer

    def __len__(self) -> int:
        return len(self._sorted) + len(self._new)

    def __contains__(self, digest: int) -> bool:
        if digest in self._new:
            return True
        a = self._sorted
        i = int(a.searchsorted(digest))
        return i < len(a) and int(a[i]) == digest

    def add(self, digest: int) -> None:
        self._new.add(digest)
        if len(self._new) >= self._buffer:
            np = self._np
            new = np.fromiter(self._new, dtype=np.int64, count=len(self._new))
            new.sort()
            self._sorted = np.insert(self._sorted, self._sorted.searchsorted(new), new)
            self._new.clear()


class Cleaner:
    """`clean`, one story at a time: `stream(stories)` yields the kept stories (repaired, normalised) as
    the stories go past, and `report` (a `CleanReport`) counts them as it goes. Memory does not grow with
    the stories but by one 8-byte digest per kept story (`DigestSet`), unless `near_duplicates` is on.

    `models_named` (with `gpt4_only`): whether any of the stories names its model, which `clean` reads
    off its list; a stream must be told (`names_models` over a first pass, or what the source is).
    An exact duplicate's example names the story it repeats (`like`) once `resolve_likes` has seen the
    kept stories again (the first of each text is not remembered by id: that would cost memory per story)."""

    def __init__(
        self,
        *,
        min_chars: int = 50,
        max_chars: int = 10_000,
        fix_mojibake: bool = True,
        gpt4_only: bool = False,
        drop_fragments: bool = False,
        near_duplicates: float = 0.0,
        near_dup_threshold: float | None = None,
        num_perm: int = 128,
        per_reason: int = 3,
        models_named: bool | None = None,
    ):
        threshold = near_duplicates or near_dup_threshold
        if threshold is not None and not 0.0 < threshold <= 1.0:
            raise ValueError(f"near_duplicates must be in (0, 1] (0 = off), got {threshold}")
        if gpt4_only and models_named is None:
            raise ValueError("gpt4_only needs models_named: whether any story names its model (names_models)")
        checks = [r for r in REASONS if r in _ALWAYS or (r == "not_gpt4" and gpt4_only)
                  or (r == "fragment" and drop_fragments) or (r == "near_duplicate" and threshold)]
        self.report = CleanReport(counts={"input": 0, "kept": 0, **{r: 0 for r in checks}},
                                  settings={"min_chars": min_chars, "max_chars": max_chars,
                                            "fix_mojibake": fix_mojibake, "gpt4_only": gpt4_only,
                                            "drop_fragments": drop_fragments, "near_duplicates": threshold or 0.0})
        self._select_gpt4 = bool(gpt4_only and models_named)
        if gpt4_only and not self._select_gpt4:
            self.report.notes.append(
                "gpt4_only: no story carries its model (storyteller, .txt or hub text); nothing dropped")
        self._min, self._max, self._fix, self._fragments = min_chars, max_chars, fix_mojibake, drop_fragments
        self._per_reason = per_reason
        self._near = NearDuplicateIndex(threshold, num_perm) if threshold else None
        self._seen = DigestSet()  # the digests of the texts that passed the checks before the duplicate ones
        self._near_dropped: dict[int, str] = {}  # digest -> id of a first text then dropped as a near-duplicate
        self._pending: dict[int, list[dict]] = {}  # digest -> the duplicate examples waiting for its id

    def stream(self, stories: Iterable[Story]) -> Iterator[Story]:
        for story in stories:
            kept = self.feed(story)
            if kept is not None:
                yield kept

    def feed(self, story: Story) -> Story | None:
        """The story as it is kept (repaired, normalised), or None if it is dropped (and counted)."""
        report = self.report
        report.counts["input"] += 1
        text = story.text
        if self._fix and (repaired := repair_mojibake(text)) != text:
            report.mojibake_repaired += 1
            if len(report.mojibake_examples) < self._per_reason:
                report.mojibake_examples.append({"id": story.id, **_before_after(text, repaired)})
            text = repaired
        text = normalize_text(text)
        reason, like = _problem(story, text, self._select_gpt4, self._min, self._max, self._fragments), None
        digest = None
        if reason is None:
            digest = text_digest(text)
            if digest in self._seen:
                reason = "exact_duplicate"
            else:
                self._seen.add(digest)
        if reason is None and self._near is not None:
            like = self._near.match(text)
            if like is None:
                self._near.add(story.id, text)
            else:
                reason = "near_duplicate"
                self._near_dropped[digest] = story.id
        if reason is not None:
            report.counts[reason] += 1
            shown = report.examples.setdefault(reason, [])
            if len(shown) < self._per_reason:
                example = {"id": story.id, "text": _excerpt(text, tail=reason == "fragment"),
                           **({"like": like} if like else {})}
                shown.append(example)
                if reason == "exact_duplicate":
                    self._pending.setdefault(digest, []).append(example)
            return None
        report.counts["kept"] += 1
        return replace(story, text=text)

    @property
    def pending_likes(self) -> int:
        """How many exact-duplicate examples still wait for the id of the story they repeat."""
        return sum(map(len, self._pending.values()))

    def resolve_likes(self, kept: Iterable[tuple[int, str]]) -> None:
        """Name the story each exact-duplicate example repeats (`like`), from (text_digest, id) of the kept
        stories (and of any the caller dropped after cleaning); stops reading once all are named."""
        for digest, sid in itertools.chain(self._near_dropped.items(), kept):
            if not self._pending:
                return
            for example in self._pending.pop(digest, ()):
                example["like"] = sid


def _problem(story: Story, text: str, select_gpt4: bool, min_chars: int, max_chars: int,
             drop_fragments: bool) -> str | None:
    """The first reason (of `REASONS`, before the duplicate checks) to drop a story, or None."""
    if select_gpt4 and not (_model_known(story.source) and _by_gpt4(story.source)):
        return "not_gpt4"
    if not text:
        return "empty"
    if len(text) < min_chars:
        return "too_short"
    if len(text) > max_chars:
        return "too_long"
    if drop_fragments and is_fragment(text):
        return "fragment"
    return None


def _excerpt(text: str, tail: bool = False, n: int = EXCERPT) -> str:
    """A story's first `n` characters (its last, for a fragment: the cut is what matters), on one line."""
    flat = " ".join(text.split())
    if len(flat) <= n:
        return flat
    return "…" + flat[-n:].lstrip() if tail else flat[:n].rstrip() + "…"


def _before_after(before: str, after: str, context: int = 40) -> dict[str, str]:
    """Excerpts of a text before and after repair, from a little before the first change."""
    at = next((i for i, (a, b) in enumerate(zip(before, after)) if a != b), min(len(before), len(after)))
    start = max(0, at - context)

    def cut(t: str) -> str:
        piece = " ".join(t[start : start + EXCERPT].split())
        return ("…" if start else "") + piece + ("…" if start + EXCERPT < len(t) else "")

    return {"before": cut(before), "after": cut(after)}


def drop_report_table(report: Mapping) -> str:
    """A clean report (a `CleanReport`, or its `as_dict()` form from a corpus artifact) as Markdown: a table
    of what each check dropped with examples, then the mojibake repairs and any notes."""
    r = CleanReport.from_dict(report)
    s = r.settings

    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("`", "'")

    why = dict(REASONS)
    if "min_chars" in s:
        why["too_short"] = f"shorter than {s['min_chars']:,} characters"
        why["too_long"] = f"longer than {s['max_chars']:,} characters"
    if s.get("near_duplicates"):
        why["near_duplicate"] = f"MinHash Jaccard >= {s['near_duplicates']} with a story kept before it"
    rows = ["| | why | stories | examples |", "|:--|:--|--:|:--|",
            f"| loaded | | {r.counts.get('input', 0):,} | |"]
    for reason in [k for k in r.counts if k not in ("input", "kept")]:
        shown = "<br>".join(f"`{e['id']}`" + (f" (like `{e['like']}`)" if e.get("like") else "")
                            + f": {cell(e['text'])}" for e in r.examples.get(reason, []))
        rows.append(f"| {reason} | {why.get(reason, '')} | {r.counts[reason]:,} | {shown} |")
    rows.append(f"| **kept** | | **{r.counts.get('kept', 0):,}** | |")
    out = "\n".join(rows)
    if s.get("fix_mojibake", True) or r.mojibake_repaired:
        out += f"\n\nMojibake (UTF-8 read as cp1252) repaired in {r.mojibake_repaired:,} stories"
        shown = [f"- `{e['id']}`: {cell(e['before'])} → {cell(e['after'])}" for e in r.mojibake_examples]
        out += ":\n\n" + "\n".join(shown) if shown else "."
    if r.notes:
        out += "\n\n" + "\n".join(f"- note: {n}" for n in r.notes)
    return out


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
        datasketch = require_extra("datasketch")
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

    def match(self, text: str) -> str | None:
        """The key of the text seen before most similar to `text`, if at least `threshold` similar; else None.
        Candidates are taken in key order, so the answer does not depend on the process's string hashing."""
        m = self._sketch(text)
        scored = [(self._sketches[k].jaccard(m), k) for k in sorted(self._lsh.query(m))]
        best = max(scored, key=lambda sk: sk[0], default=(0.0, None))
        return best[1] if best[0] >= self._threshold else None

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
    scores = [split_score(s, seed) for s in stories]
    in_val = [score < val_fraction for score in scores]
    if val_fraction > 0 and len(stories) >= 2 and not any(in_val):
        in_val[min(range(len(stories)), key=scores.__getitem__)] = True
    train = [s for s, v in zip(stories, in_val) if not v]
    val = [s for s, v in zip(stories, in_val) if v]
    return train, val


def split_score(story: Story, seed: int = 0) -> float:
    """A story's place in [0, 1) for `split`: it goes to validation when below `val_fraction`."""
    return _unit_hash(f"{seed}:{story.id}")


def _unit_hash(key: str) -> float:
    """A stable hash of `key` mapped to [0, 1) (Python's hash() is salted per process)."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64
