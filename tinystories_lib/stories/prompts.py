"""The paper's prompts: a noun, a verb and an adjective from a child's vocabulary, plus story features.

Eldan & Li (2023, sec. 2) made TinyStories diverse by asking GPT-3.5/4 for a story that must use
three random words from ~1,500 basic words and a random subset of story features. The vocabulary
ships as ``data/vocab.tsv`` (built by ``tools/build_vocab.py``, which documents every rule), and
:meth:`PromptSpec.render` reproduces the published prompt wording exactly.
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

VOCAB_PATH = Path(__file__).resolve().parent / "data" / "vocab.tsv"
POS = ("noun", "verb", "adjective")

FEATURES: tuple[str, ...] = ("dialogue", "bad_ending", "moral_value", "plot_twist", "foreshadowing", "conflict")

# How each feature reads inside the prompt. The first two are the paper's published wording;
# the rest follow the same voice.
FEATURE_TEXT: dict[str, str] = {
    "dialogue": "the story should contain at least one dialogue",
    "bad_ending": "the story has a bad ending",
    "moral_value": "the story has a moral value",
    "plot_twist": "something unexpected happens in the story",
    "foreshadowing": "the narrative uses foreshadowing",
    "conflict": "the story has some form of conflict",
}

PROMPT_HEAD = (
    "Write a short story (3-5 paragraphs) which only uses very simple words that a 3 year old "
    "child would understand."
)
PROMPT_TAIL = "Remember to only use simple words!\n\nPossible story:"


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
    """The feature list as the prompt says it, e.g. 'the story has a bad ending, ...'."""
    return ", ".join(FEATURE_TEXT[f] for f in features)


@dataclass(frozen=True)
class PromptSpec:
    """One prompt: three words and an ordered subset of :data:`FEATURES`."""

    id: str
    noun: str
    verb: str
    adjective: str
    features: tuple[str, ...] = ()

    @property
    def words(self) -> dict[str, str]:
        return {"noun": self.noun, "verb": self.verb, "adjective": self.adjective}

    def render(self) -> str:
        """The prompt in the paper's exact wording, ending with 'Possible story:'."""
        parts = [
            PROMPT_HEAD,
            f'The story should use the verb "{self.verb}", the noun "{self.noun}" and the adjective '
            f'"{self.adjective}".',
        ]
        if self.features:
            parts.append(f"The story has the following features: {render_features(self.features)}.")
        parts.append(PROMPT_TAIL)
        return " ".join(parts)


def sample_prompts(n: int, seed: int, feature_prob: float = 0.5) -> list[PromptSpec]:
    """`n` prompts with distinct (noun, verb, adjective, features), deterministic for `seed`.

    Each word is drawn uniformly from its part of speech and each feature is included
    independently with probability `feature_prob`. Ids run "p000000", "p000001", ... in draw
    order, so a prompt keeps its id when `n` grows for the same seed.
    """
    if n < 0:
        raise ValueError("n must be >= 0")
    if not 0.0 <= feature_prob <= 1.0:
        raise ValueError("feature_prob must be in [0, 1]")
    vocab = load_vocab()
    nouns, verbs, adjs = ([w.word for w in vocab[p]] for p in POS)
    n_feature_sets = 1 if feature_prob in (0.0, 1.0) else 2 ** len(FEATURES)
    capacity = len(nouns) * len(verbs) * len(adjs) * n_feature_sets
    if n > capacity:
        raise ValueError(f"only {capacity} distinct prompts exist, asked for {n}")
    rng = random.Random(seed)
    seen: set[tuple] = set()
    out: list[PromptSpec] = []
    while len(out) < n:
        noun, verb, adj = rng.choice(nouns), rng.choice(verbs), rng.choice(adjs)
        feats = tuple(f for f in FEATURES if rng.random() < feature_prob)
        key = (noun, verb, adj, feats)
        if key in seen:
            continue
        seen.add(key)
        out.append(PromptSpec(f"p{len(out):06d}", noun, verb, adj, feats))
    return out
