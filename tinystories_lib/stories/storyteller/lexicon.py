"""The storyteller's data files, and its word lists as one public, read-only object.

The word lists (names, animals, places, objects, foods, adjectives, and the word classes the engine
tests membership in) live in ``data/words.yaml`` and the templates in ``data/templates.yaml``,
``data/plots.yaml`` and ``data/foreshadowing.yaml``, so that they can be read and edited as text,
apart from the engine. Each file is parsed once per process (:func:`data_file`).

:func:`lexicon` is the public way in for code outside the storyteller, such as the exact probes,
which draw distractor places from the same settings the stories use. Lists keep the file's order
(the stories of a seed depend on it) and come as tuples; word classes come as frozensets; pairs
(a parent's word and its pronoun) as read-only mappings.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from types import MappingProxyType

import yaml

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when installed: the same data, parsed faster


@lru_cache(maxsize=8)  # four data files
def data_file(name: str) -> dict:
    """The parsed YAML file ``data/<name>.yaml`` of this package (parsed once; do not modify it)."""
    text = resources.files(__package__).joinpath(f"data/{name}.yaml").read_text(encoding="utf-8")
    data = yaml.load(text, Loader=_Loader)
    if not isinstance(data, dict):
        raise ValueError(f"storyteller data file {name}.yaml: expected a mapping at the top")
    return data


@dataclass(frozen=True)
class Lexicon:
    """The storyteller's named word lists (``data/words.yaml``; see the comments there).

    Tuples are lists it draws from, in order; frozensets are classes it tests words against;
    mappings pair a word with a pronoun or a gender.
    """

    girls: tuple[str, ...]            # children's names, by gender
    boys: tuple[str, ...]
    pet_names: tuple[str, ...]        # names of pets and of animal heroes
    parents: Mapping[str, str]        # parent word -> pronoun ("mom" -> "she")
    siblings: Mapping[str, str]       # "sister" -> "girl", "brother" -> "boy"
    visitor_gender: Mapping[str, str]  # visitor word -> pronoun, where the word fixes it
    visitor_adjs: tuple[str, ...]
    animal_heroes: tuple[str, ...]
    pets: tuple[str, ...]
    birds: tuple[str, ...]
    furry: tuple[str, ...]
    water_animals: frozenset[str]
    bugs: frozenset[str]
    bird_parts: frozenset[str]
    fur_parts: frozenset[str]
    bumpable: frozenset[str]          # body parts one can bump and rub
    wiggly: frozenset[str]            # body parts that wiggle
    in_places: frozenset[str]         # places that take "in" (on_places "on", the rest "at")
    on_places: frozenset[str]
    settings: tuple[str, ...]         # where a story happens when the prompt's noun is not a place
    fixtures: frozenset[str]          # house fixtures: places in a story, never carried objects
    unique_nature: frozenset[str]     # "the sun", never "a sun"
    default_objects: tuple[str, ...]
    no_break: frozenset[str]          # object categories a "broken" plot cannot break
    default_foods: tuple[str, ...]
    drinks: tuple[str, ...]
    look_adjs: tuple[str, ...]
    trait_adjs: tuple[str, ...]
    weather_adjs: tuple[str, ...]
    taste_adjs: tuple[str, ...]
    ages: tuple[str, ...]
    givers: tuple[str, ...]


def _as(kind: str, key: str, value: object):
    if kind.startswith("tuple") or kind.startswith("frozenset"):
        if not isinstance(value, list) or not all(isinstance(w, str) for w in value) or not value:
            raise ValueError(f"storyteller words.yaml: {key} must be a non-empty list of words")
        return tuple(value) if kind.startswith("tuple") else frozenset(value)
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ValueError(f"storyteller words.yaml: {key} must map words to words")
    return MappingProxyType(dict(value))


@lru_cache(maxsize=1)
def lexicon() -> Lexicon:
    """The storyteller's word lists, loaded once from ``data/words.yaml``.

    >>> "park" in lexicon().settings
    True
    """
    data = data_file("words")
    fields = {f.name: str(f.type) for f in dataclasses.fields(Lexicon)}
    if set(data) != set(fields):
        raise ValueError(f"storyteller words.yaml: missing {sorted(set(fields) - set(data))}, "
                         f"unknown {sorted(set(data) - set(fields))}")
    return Lexicon(**{k: _as(t, k, data[k]) for k, t in fields.items()})
