"""The prompts an LLM writes a corpus from, and the data design they come from.

Eldan & Li (2023, sec. 2) made TinyStories diverse by asking GPT-3.5/4 for a story that must use
three random words from ~1,500 basic words and a random subset of story features. That recipe is data,
not code: a **design** is a folder (``data/designs/<name>/``) holding

    design.yaml   what the other files are, the features with their prompt wording, feature_prob
    prompt.txt    the template, with {placeholders}: one per part of speech of the word list, {features},
                  {topic}; text in [[ ... ]] is left out when a placeholder in it is empty
    words.tsv     the word list: a tab-separated file with at least the columns `word` and `pos`
    topics.txt    optional: one topic per line, one drawn per prompt (phi-1.5's recipe for diversity)

:func:`load_design` checks every file and says which one is wrong and how (`DesignError`). The paper's
design ships as ``tinystories`` (its words are the kit's vocabulary, ``data/vocab.tsv``, built by
``tools/build_vocab.py``, which documents every rule), and :meth:`PromptSpec.render` reproduces the
published prompt wording exactly; ``customer_service`` is a second, worked example.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import json
import random
import re
import string
from collections.abc import Hashable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml

from tinystories_lib.errors import KitError

DATA_DIR = Path(__file__).resolve().parent / "data"
VOCAB_PATH = DATA_DIR / "vocab.tsv"
DESIGNS_DIR = DATA_DIR / "designs"
DEFAULT_DESIGN = "tinystories"
POS = ("noun", "verb", "adjective")

# The content digest of the shipped TinyStories design. Artifact keys leave this design out (its prompts
# are those the kit made before designs were files, so earlier corpora and paid-for LLM stories keep their
# keys) and take any other design's digest; tests/test_prompts.py fails when the shipped files drift from it.
TINYSTORIES_DIGEST = "4ef928baf627a05f"

MANIFEST = "design.yaml"
_MANIFEST_KEYS = ("description", "template", "words", "topics", "feature_prob", "features")
_RESERVED = ("features", "topic")  # placeholders that are not parts of speech
_NAME = re.compile(r"[a-z][a-z0-9_]*")
_OPTIONAL = re.compile(r"\[\[(.*?)\]\]", re.DOTALL)


class DesignError(KitError, ValueError):
    """A data design that cannot make prompts: the message names the file and what to fix."""


@dataclass(frozen=True, eq=False)
class Design:
    """A data design, loaded and checked (see the module docstring). `slots` are the word list's parts of
    speech in the order it first lists them (the order words are drawn in); `words[i]` are slot i's words.
    `digest` hashes what decides a prompt (template, words, features, feature_prob, topics), not comments,
    the description or the word list's other columns."""

    name: str
    path: str
    description: str
    template: str
    slots: tuple[str, ...]
    words: tuple[tuple[str, ...], ...]
    features: tuple[str, ...]
    feature_text: tuple[str, ...]
    feature_prob: float
    topics: tuple[str, ...]
    digest: str

    def capacity(self, feature_prob: float | None = None) -> int:
        """How many distinct prompts the design can make: its word combinations x feature sets x topics."""
        prob = self.feature_prob if feature_prob is None else feature_prob
        n = (1 if prob in (0.0, 1.0) else 2 ** len(self.features)) * max(1, len(self.topics))
        for ws in self.words:
            n *= len(ws)
        return n

    def wording(self, features) -> str:
        """The features as the prompt says them, joined by ", "."""
        text = dict(zip(self.features, self.feature_text))
        unknown = [f for f in features if f not in text]
        if unknown:
            raise ValueError(f"features {unknown} are not in the {self.name} design's {self.features}")
        return ", ".join(text[f] for f in features)

    def render(self, spec) -> str:
        """`spec`'s prompt in this design's template."""
        values = {**spec.words, "features": self.wording(spec.features), "topic": getattr(spec, "topic", "")}
        missing = [s for s in self.slots if not values.get(s)]
        if missing:
            raise ValueError(f"prompt {spec.id} has no word for {missing} of the {self.name} design")

        def optional(m: re.Match) -> str:
            return m.group(1) if all(values.get(n) for n in _placeholders(m.group(1))) else ""

        return _OPTIONAL.sub(optional, self.template).format_map(values)


def _placeholders(text: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(text) if name is not None]


# ---------------------------------------------------------------- loading and checking a design


def shipped_designs() -> list[str]:
    return sorted(p.name for p in DESIGNS_DIR.iterdir() if (p / MANIFEST).is_file())


def design_path(name_or_path: str | Path, root: str | Path | None = None) -> Path:
    """A shipped design's folder by name (`tinystories`), else the path as given (relative paths are from
    `root` when one is given)."""
    s = str(name_or_path)
    if s and "/" not in s and "\\" not in s and (DESIGNS_DIR / s / MANIFEST).is_file():
        return DESIGNS_DIR / s
    p = Path(s)
    return p if p.is_absolute() or root is None else Path(root) / p


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice (PyYAML keeps the last: a feature would vanish)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, Hashable) and key in seen:
                raise DesignError(f"key '{key}' is given twice (lines {seen[key]} and {key_node.start_mark.line + 1}); "
                                  "keep one")
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def _read_text(path: Path, what: str) -> str:
    if not path.is_file():
        raise DesignError(f"{path}: {what} not found; create it or fix its name in {MANIFEST}")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DesignError(f"{path}: {what} is not UTF-8 text; save it as UTF-8") from None


def _manifest(folder: Path) -> dict:
    path = folder / MANIFEST
    if not folder.is_dir():
        raise DesignError(f"design folder {folder} not found; give a shipped design ({', '.join(shipped_designs())}) "
                          f"or a folder holding {MANIFEST}, prompt.txt and words.tsv (copy "
                          f"{DESIGNS_DIR / 'customer_service'} to start)")
    text = _read_text(path, "the design's manifest")
    try:
        data = yaml.load(text, _UniqueKeyLoader)
    except DesignError as e:
        raise DesignError(f"{path}: {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark else ""
        raise DesignError(f"{path}{where}: not valid YAML ({getattr(e, 'problem', None) or e}); fix that line") from None
    if not isinstance(data, dict):
        raise DesignError(f"{path}: must be a YAML mapping with keys {', '.join(_MANIFEST_KEYS)}")
    for k in data:
        if k not in _MANIFEST_KEYS:
            close = difflib.get_close_matches(str(k), _MANIFEST_KEYS, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise DesignError(f"{path}: unknown key '{k}'{hint}; allowed keys: {', '.join(_MANIFEST_KEYS)}")
    for k in ("description", "template", "words", "topics"):
        if data.get(k) is not None and not isinstance(data[k], str):
            raise DesignError(f"{path}: '{k}' must be a string, got {data[k]!r}")
    prob = data.get("feature_prob", 0.5)
    if isinstance(prob, bool) or not isinstance(prob, int | float) or not 0 <= prob <= 1:
        raise DesignError(f"{path}: feature_prob must be a number in [0, 1] (each feature's chance to be asked "
                          f"for), got {prob!r}")
    feats = data.get("features") or {}
    if not isinstance(feats, dict):
        raise DesignError(f"{path}: 'features' must be a mapping of a feature's name to its prompt wording, "
                          f"e.g. 'dialogue: the story should contain at least one dialogue'")
    for name, wording in feats.items():
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise DesignError(f"{path}: feature name {name!r} must be lower-case letters, digits and _ "
                              "(it is kept in every story record)")
        if not isinstance(wording, str) or not wording.strip():
            raise DesignError(f"{path}: feature '{name}' needs its prompt wording as text, got {wording!r}")
    return data


def _read_words(path: Path) -> tuple[tuple[str, ...], tuple[tuple[str, ...], ...]]:
    text = _read_text(path, "the word list")
    rows = csv.DictReader(text.splitlines(), delimiter="\t")
    if not rows.fieldnames or not {"word", "pos"} <= set(rows.fieldnames):
        raise DesignError(f"{path}: the word list needs a header line with the tab-separated columns word and pos "
                          f"(got {rows.fieldnames}); e.g. 'word<TAB>pos' then 'laptop<TAB>product'")
    by_pos: dict[str, list[str]] = {}
    seen: dict[tuple[str, str], int] = {}
    for i, row in enumerate(rows, start=2):
        word, pos = (row.get("word") or "").strip(), (row.get("pos") or "").strip()
        if not word and not pos:
            continue
        if not word or not pos:
            raise DesignError(f"{path}, line {i}: a row needs both a word and its pos (tab-separated), got {row}")
        if not _NAME.fullmatch(pos) or pos in _RESERVED:
            raise DesignError(f"{path}, line {i}: pos {pos!r} must be lower-case letters, digits and _ and not "
                              f"{' or '.join(_RESERVED)}: it is the template's placeholder {{{pos}}}")
        if (pos, word) in seen:
            raise DesignError(f"{path}, line {i}: {word!r} ({pos}) is listed twice (also line {seen[pos, word]}); "
                              "keep one")
        seen[pos, word] = i
        by_pos.setdefault(pos, []).append(word)
    if not by_pos:
        raise DesignError(f"{path}: the word list has no words; add rows 'word<TAB>pos' under its header")
    return tuple(by_pos), tuple(tuple(ws) for ws in by_pos.values())


def _read_topics(path: Path) -> tuple[str, ...]:
    topics, seen = [], {}
    for i, line in enumerate(_read_text(path, "the topics list").splitlines(), start=1):
        t = line.strip()
        if not t or t.startswith("#"):
            continue
        if t in seen:
            raise DesignError(f"{path}, line {i}: topic {t!r} is listed twice (also line {seen[t]}); keep one")
        seen[t] = i
        topics.append(t)
    if not topics:
        raise DesignError(f"{path}: the topics list is empty; write one topic per line, or drop 'topics' from "
                          f"{MANIFEST}")
    return tuple(topics)


def _check_template(path: Path, template: str, slots, features, topics, feature_prob: float) -> None:
    if not template.strip():
        raise DesignError(f"{path}: the template is empty; write the prompt with its placeholders")
    rest = _OPTIONAL.sub("", template)
    if "[[" in rest or "]]" in rest or any("[[" in m for m in _OPTIONAL.findall(template)):
        raise DesignError(f"{path}: unbalanced or nested [[ ]]: each optional part opens with [[ and closes with ]]")
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        raise DesignError(f"{path}: {e}; placeholders are {{name}}, and a literal brace is written {{{{ or }}}}") from None
    allowed = list(slots) + (["features"] if features else []) + (["topic"] if topics else [])
    used = []
    for _, name, spec, conv in parsed:
        if name is None:
            continue
        if spec or conv:
            raise DesignError(f"{path}: placeholder {{{name}{'!' + conv if conv else ''}{':' + spec if spec else ''}}} "
                              f"is not plain; write {{{name}}}")
        if name not in allowed:
            why = {"features": f"{MANIFEST} lists no features", "topic": f"{MANIFEST} names no topics file"}
            hint = f" ({why[name]})" if name in why else ""
            close = difflib.get_close_matches(name, allowed, n=1)
            hint += f" (did you mean {{{close[0]}}}?)" if close else ""
            raise DesignError(f"{path}: unknown placeholder {{{name}}}{hint}; allowed: "
                              f"{', '.join('{' + a + '}' for a in allowed)} (the word list's parts of speech, "
                              "{features} when there are features, {topic} when there are topics)")
        used.append(name)
    for name in allowed:
        if name not in used:
            what = {"features": f"the features of {MANIFEST}", "topic": "the topics list"}.get(
                name, f"the word list's part of speech '{name}'")
            raise DesignError(f"{path}: the template has no {{{name}}}, so {what} would never reach a prompt; "
                              f"add {{{name}}} to the template")
    if features and feature_prob < 1 and "features" in _placeholders(rest):
        raise DesignError(f"{path}: {{features}} is empty in a prompt drawn with no feature (feature_prob "
                          f"{feature_prob} < 1); put the sentence holding it in [[ ... ]] so it is left out then")


def load_design(folder: str | Path) -> Design:
    """The design in `folder`, every file checked; `DesignError` names the file and what to fix."""
    folder = Path(folder)
    data = _manifest(folder)
    template_path = folder / (data.get("template") or "prompt.txt")
    words_path = folder / (data.get("words") or "words.tsv")
    template = _read_text(template_path, "the prompt template")
    template = template[:-1] if template.endswith("\n") else template  # the newline editors add at the end
    slots, words = _read_words(words_path)
    feats = data.get("features") or {}
    topics = _read_topics(folder / data["topics"]) if data.get("topics") else ()
    prob = float(data.get("feature_prob", 0.5))
    _check_template(template_path, template, slots, feats, topics, prob)
    what = {"template": template, "slots": [[s, list(ws)] for s, ws in zip(slots, words)],
            "features": [[k, v.strip()] for k, v in feats.items()], "feature_prob": prob, "topics": list(topics)}
    digest = hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]
    return Design(name=folder.name, path=str(folder), description=str(data.get("description") or ""),
                  template=template, slots=slots, words=words, features=tuple(feats),
                  feature_text=tuple(v.strip() for v in feats.values()), feature_prob=prob, topics=topics,
                  digest=digest)


@lru_cache(maxsize=1)
def default_design() -> Design:
    """The shipped TinyStories design (cached: its files are part of the library)."""
    return load_design(DESIGNS_DIR / DEFAULT_DESIGN)


# The TinyStories features and their wording, from the shipped design's files (their one home).
FEATURES: tuple[str, ...] = default_design().features
FEATURE_TEXT: dict[str, str] = dict(zip(default_design().features, default_design().feature_text))


# ---------------------------------------------------------------- the TinyStories vocabulary


@dataclass(frozen=True, slots=True)
class Word:
    """One vocabulary entry with the forms and frame a story needs.

    ``category``: noun kind (animal, person, body, toy, food, clothes, thing, nature, place,
    vehicle), verb frame (intr, obj, pers, food, drink) or adjective kind (thing, mood, trait,
    weather, taste). ``forms`` holds the inflections present for the part of speech.
    """

    word: str
    pos: str
    category: str
    article: str = "a"
    mass: bool = False
    prep: str = ""
    forms: tuple[tuple[str, str], ...] = ()
    zipf: float = 0.0

    def form(self, name: str) -> str:
        """An inflection by name (plural, third, past, past_participle, ing); the base otherwise."""
        for k, v in self.forms:
            if k == name:
                return v
        return self.word


@lru_cache(maxsize=4)
def load_vocab(path: str | Path | None = None) -> dict[str, list[Word]]:
    """The vocabulary by part of speech: {"noun": [...], "verb": [...], "adjective": [...]}.

    Cached: callers share one copy, so treat the lists as read-only.
    """
    out: dict[str, list[Word]] = {p: [] for p in POS}
    with open(path or VOCAB_PATH, encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            keys = ("plural",) if row["pos"] == "noun" else ("third", "past", "past_participle", "ing")
            forms = tuple((k, row[k]) for k in keys if row[k])
            out[row["pos"]].append(Word(
                word=row["word"], pos=row["pos"], category=row["category"],
                article=row["article"] or "a", mass=row["mass"] == "1", prep=row["prep"],
                forms=forms, zipf=float(row["zipf"]),
            ))
    return out


@lru_cache(maxsize=1)
def vocab_index() -> dict[tuple[str, str], Word]:
    """(pos, word) -> Word, for looking up a prompt's words."""
    return {(w.pos, w.word): w for words in load_vocab().values() for w in words}


def render_features(features: tuple[str, ...] | list[str]) -> str:
    """The TinyStories feature list as the prompt says it, e.g. 'the story has a bad ending, ...'."""
    return default_design().wording(features)


# ---------------------------------------------------------------- prompts


@dataclass(frozen=True)
class PromptSpec:
    """One prompt: a word per slot of its design, an ordered subset of the design's features, and a topic
    where the design has topics. The TinyStories slots are fields (`noun`, `verb`, `adjective`); another
    design's are in `slots` as (pos, word). `design` None is the shipped TinyStories design; it is left out
    of comparisons (a design is compared by the prompts it renders)."""

    id: str
    noun: str = ""
    verb: str = ""
    adjective: str = ""
    features: tuple[str, ...] = ()
    topic: str = ""
    slots: tuple[tuple[str, str], ...] = ()
    design: Design | None = field(default=None, compare=False, repr=False)

    @property
    def words(self) -> dict[str, str]:
        named = {p: w for p, w in (("noun", self.noun), ("verb", self.verb), ("adjective", self.adjective)) if w}
        return named | dict(self.slots)

    def render(self) -> str:
        """The prompt in its design's wording; for TinyStories the paper's, ending with 'Possible story:'."""
        return (self.design or default_design()).render(self)


def sample_prompts(n: int, seed: int, feature_prob: float | None = None, design: Design | None = None) -> list[PromptSpec]:
    """`n` prompts with distinct (words, features, topic), deterministic for `seed`.

    Each word is drawn uniformly from its slot (in the order the word list first lists the slots), each
    feature is included independently with probability `feature_prob` (default: the design's), then one
    topic is drawn where the design has topics. Ids run "p000000", "p000001", ... in draw order, so a
    prompt keeps its id when `n` grows for the same seed. `design` None is the TinyStories design, whose
    draws are those the kit made before designs were files.
    """
    d = design or default_design()
    prob = d.feature_prob if feature_prob is None else feature_prob
    if n < 0:
        raise ValueError("n must be >= 0")
    if not 0.0 <= prob <= 1.0:
        raise ValueError("feature_prob must be in [0, 1]")
    capacity = d.capacity(prob)
    if n > capacity:
        raise ValueError(f"only {capacity} distinct prompts exist in the {d.name} design, asked for {n}")
    keep = None if design is None or design is default_design() else design
    rng = random.Random(seed)
    seen: set[tuple] = set()
    out: list[PromptSpec] = []
    while len(out) < n:
        words = tuple(rng.choice(ws) for ws in d.words)
        feats = tuple(f for f in d.features if rng.random() < prob)
        topic = rng.choice(d.topics) if d.topics else ""
        key = (words, feats, topic)
        if key in seen:
            continue
        seen.add(key)
        named = {s: w for s, w in zip(d.slots, words) if s in POS}
        others = tuple((s, w) for s, w in zip(d.slots, words) if s not in POS)
        out.append(PromptSpec(f"p{len(out):06d}", **named, features=feats, topic=topic, slots=others, design=keep))
    return out
