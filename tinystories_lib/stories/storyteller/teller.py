"""The Storyteller: one story per prompt, with the facts of its world for exact probes.

:meth:`Storyteller.tell` seeds a per-story RNG from the storyteller's seed and the prompt, so a story
depends on nothing but those (not on which other stories are written, nor in what order), casts the
world (:mod:`.world`), writes its paragraphs (:mod:`.plot`) through a writer (:mod:`.templates`), and
returns a :class:`Story` whose ``facts`` record the cast, the props, the plot and the text each
feature produced.
"""

from __future__ import annotations

import random

from tinystories_lib.stories.prompts import PromptSpec, sample_prompts
from tinystories_lib.stories.records import Story
from tinystories_lib.stories.storyteller.plot import join_paragraphs, pad, paragraphs, regroup
from tinystories_lib.stories.storyteller.templates import PLOTS, Writer
from tinystories_lib.stories.storyteller.world import Person, World


class Storyteller:
    """Writes one story per prompt. Deterministic: the same (seed, spec.id, spec) gives the same story.

    ``Story.facts`` keys: ``characters`` (dicts with name, gender, pronoun, object_pronoun,
    possessive, role, kind; the hero first, then friend, parent, visitor if any, animal), ``hero``,
    ``object`` and ``object_phrase`` ("the kite"), ``place``, ``animal``, ``animal_name``, ``food``,
    ``plot``, ``noun_role`` (the part the prompt noun plays), ``helper`` ("her mom"),
    ``verb_forms`` (the verb phrase in each form), ``ending`` ("good"/"bad"), ``ending_template``,
    ``opening`` (template id), ``moral``, ``twist``, ``foreshadowing`` ({kind, setup, payoff}) when
    asked for, and ``feature_text`` (the exact text each feature produced, plus the ending).
    """

    source = "storyteller"

    def __init__(self, seed: int = 0):
        self.seed = seed

    def tell(self, spec: PromptSpec) -> Story:
        rng = random.Random(f"{self.seed}:{spec.id}:{spec.noun}:{spec.verb}:{spec.adjective}")
        world = World(spec, rng)
        ctx = world.context()
        w = Writer(world, ctx, rng)
        facts: dict = {}
        paras = paragraphs(world, w, facts)
        pad(paras, w, rng)
        text = join_paragraphs(regroup(paras, rng))
        facts.update(self._facts(world, ctx))
        summary = w.fill(rng.choice(PLOTS[world.plot][f"summary_{facts['ending']}"]))
        return Story(id=spec.id, text=text, source=self.source, prompt=spec.render(),
                     words=spec.words, features=list(spec.features), summary=summary, facts=facts)

    @staticmethod
    def _facts(world: World, ctx: dict[str, str]) -> dict:
        chars = [world.hero.fact(), world.friend.fact()]
        chars[1]["relation"] = world.frel
        parent = world.parent.fact()
        parent["name"] = ctx["Par"]
        parent["mention"] = f"{ctx['his']} {world.par_word}"
        chars.append(parent)
        if world.visitor is not None:
            chars.append(world.visitor.fact())
        animal = Person(f"the {world.animal}", "it", "none", "animal", world.animal).fact()
        chars.append(animal)
        return {
            "characters": chars,
            "hero": world.hero.name,
            "object": world.obj,
            "object_phrase": ctx["the_obj"],
            "place": world.place,
            "animal": world.animal,
            "animal_name": world.animal_name,
            "food": world.food,
            "plot": world.plot,
            "noun_role": world.noun_role,
            "helper": ctx["w"],
            "verb_forms": {k: ctx[k] for k in ("do", "does", "did", "done", "doing")},
        }

    def generate(self, n: int, seed: int = 0, progress: bool = False) -> list[Story]:
        """`n` stories from `n` distinct prompts drawn with `seed` (see :func:`sample_prompts`)."""
        specs = sample_prompts(n, seed)
        if progress:
            from tinystories_lib.progress import bar

            specs = bar(iterable=specs, desc="storyteller", unit="story")
        return [self.tell(s) for s in specs]


def tell_stories(n: int, seed: int = 0, progress: bool = False) -> list[Story]:
    """`n` storyteller stories for prompts sampled with `seed` (the storyteller uses the same seed)."""
    return Storyteller(seed).generate(n, seed=seed, progress=progress)
