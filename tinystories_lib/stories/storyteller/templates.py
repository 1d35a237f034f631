"""The storyteller's templates and the writer that fills them.

A template is a sentence or a few with two kinds of holes: ``[a|b|c]``, a choice of wording made at
each use, and ``{key}``, a value from the story's :class:`Context` (a key with a capital first letter,
``{He}``, gets the capitalised value). Templates are grouped into named *slots*, one per beat of a
story ("opening", "lost.problem", "fs.whistle.setup"); the texts come from the data files
(``data/templates.yaml``, ``data/plots.yaml``, ``data/foreshadowing.yaml``), read once at import, and
are split here into parts once, so that writing a story only picks and joins.

Templates that contain a double quote are speech. A :class:`Writer` uses them only when the story
asks for dialogue, so the feature shows in the text exactly when the prompt asks for it. The writer
also records which template each slot used ("opening/3"), for ``Story.facts``.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from functools import cache
from types import MappingProxyType

from tinystories_lib.stories.storyteller.lexicon import data_file

_ALT = re.compile(r"\[([^\[\]]*)\]")


def compile_template(text: str) -> tuple:
    """Split a template into literal strings and tuples of alternatives."""
    parts: list = []
    pos = 0
    for m in _ALT.finditer(text):
        if m.start() > pos:
            parts.append(text[pos:m.start()])
        parts.append(tuple(m.group(1).split("|")))
        pos = m.end()
    if pos < len(text):
        parts.append(text[pos:])
    return tuple(parts)


@cache
def _compile_cached(text: str) -> tuple:
    return compile_template(text)


@dataclass(frozen=True)
class Slot:
    """A named list of templates, split by whether they contain speech; each keeps its list index."""

    name: str
    plain: tuple[tuple[int, tuple], ...]
    quoted: tuple[tuple[int, tuple], ...]

    @classmethod
    def of(cls, name: str, texts: list[str] | tuple[str, ...]) -> Slot:
        plain = tuple((i, compile_template(t)) for i, t in enumerate(texts) if '"' not in t)
        quoted = tuple((i, compile_template(t)) for i, t in enumerate(texts) if '"' in t)
        return cls(name, plain, quoted)


class Context(dict):
    """Template values; {He}, {The_obj}, {At_place} are made on first use from {he}, {the_obj}..."""

    def __missing__(self, key: str) -> str:
        value = self[key[0].lower() + key[1:]] if key[0].isupper() else None
        if value is None:
            raise KeyError(key)
        cap = value[:1].upper() + value[1:]
        self[key] = cap
        return cap


# ------------------------------------------------------------------------------ the data files

def _texts(where: str, value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(t, str) for t in value):
        raise ValueError(f"storyteller {where}: expected a non-empty list of templates")
    return tuple(value)


# the beats every plot needs (plus "attempt", or "attempt_good" and "attempt_bad")
_PLOT_BEATS = ("talk", "problem", "twist_good", "twist_bad", "good", "bad", "moral_good", "moral_bad",
               "summary_good", "summary_bad")


def _load_plots() -> dict[str, dict[str, tuple[str, ...]]]:
    plots = {}
    for plot, beats in data_file("plots").items():
        if not isinstance(beats, dict):
            raise ValueError(f"storyteller plots.yaml: {plot} must map beats to templates")
        missing = [b for b in _PLOT_BEATS if b not in beats]
        if "attempt" not in beats and not {"attempt_good", "attempt_bad"} <= set(beats):
            missing.append("attempt")
        if missing:
            raise ValueError(f"storyteller plots.yaml: {plot} lacks {missing}")
        plots[plot] = {beat: _texts(f"plots.yaml {plot}.{beat}", t) for beat, t in beats.items()}
    return plots


def _load_foreshadowing() -> dict[str, dict[str, tuple[str, ...]]]:
    out = {}
    for kind, parts in data_file("foreshadowing").items():
        if not isinstance(parts, dict) or set(parts) != {"setup", "good", "bad"}:
            raise ValueError(f"storyteller foreshadowing.yaml: {kind} needs setup, good and bad")
        out[kind] = {k: _texts(f"foreshadowing.yaml {kind}.{k}", v) for k, v in parts.items()}
    return out


def _build_slots(templates: dict, plots: dict, foreshadow: dict) -> dict[str, Slot]:
    texts = {name: _texts(f"templates.yaml slots.{name}", t) for name, t in templates["slots"].items()}
    # the "conflict" slot: a fight over the object or over what to do (ids count across both)
    texts["conflict"] = texts["conflict_object"] + texts.pop("conflict_other")
    dialogue = _texts("templates.yaml dialogue", templates["dialogue"])
    for kind, parts in foreshadow.items():
        for part, t in parts.items():
            texts[f"fs.{kind}.{part}"] = t
    for plot, beats in plots.items():
        for beat, t in beats.items():
            if beat == "talk":
                texts[f"{plot}.talk"] = t + dialogue  # a plot's own lines first, then lines for any plot
            elif not beat.startswith(("moral", "summary")):
                texts[f"{plot}.{beat}"] = t
    return {name: Slot.of(name, t) for name, t in texts.items()}


_TEMPLATES = data_file("templates")
PLOTS: dict[str, dict[str, tuple[str, ...]]] = _load_plots()
"""Each plot's beats: templates by beat name, and its morals ("moral_good") and summaries ("summary_bad")."""
_FORESHADOW = _load_foreshadowing()
FORESHADOW_KINDS: tuple[str, ...] = tuple(_FORESHADOW)  # the order a story's choice is drawn from
SLOTS: dict[str, Slot] = _build_slots(_TEMPLATES, PLOTS, _FORESHADOW)
PADDING: tuple[str, ...] = _texts("templates.yaml padding", _TEMPLATES["padding"])
BODY_PLURAL_SPECIAL = MappingProxyType(dict(_TEMPLATES["body_plural_special"]))
TASTE_OBJECT: str = _TEMPLATES["taste_object"]


# ------------------------------------------------------------------------------ writing

class Writer:
    """Fills slots for one story and keeps track of which template each slot used. `world` is the
    story's `world.World` (its features decide, e.g., whether speech gets quotes)."""

    def __init__(self, world, ctx: dict[str, str], rng: random.Random):
        self.world, self.ctx, self.rng = world, ctx, rng
        self.quotes = "dialogue" in world.features
        self.used: dict[str, str] = {}

    def say(self, slot: str, quote: bool | None = None) -> str:
        """A sentence from `slot`. quote=True forces speech, False forbids it, None lets chance pick."""
        s = SLOTS[slot]
        rng = self.rng
        if not self.quotes or quote is False or not s.quoted:
            pool = s.plain
        elif quote or not s.plain or rng.random() < 0.4:
            pool = s.quoted
        else:
            pool = s.plain
        i, parts = pool[rng.randrange(len(pool))]
        self.used[slot] = f"{slot}/{i}"
        text = "".join(p if p.__class__ is str else p[rng.randrange(len(p))] for p in parts)
        return text.format_map(self.ctx)

    def fill(self, text: str) -> str:
        """One template given as text (not from a slot), filled the same way."""
        parts = _compile_cached(text)
        rng = self.rng
        return "".join(p if p.__class__ is str else p[rng.randrange(len(p))] for p in parts).format_map(self.ctx)
