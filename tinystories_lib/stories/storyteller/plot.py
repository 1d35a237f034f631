"""Plot assembly: a story's paragraphs, beat by beat, from its world and a writer.

A story has four movements. The introduction says who, what and where (the opening first, then the
object, the animal and sometimes the friend, in any order); the setup starts the day (where they go,
what they see, what the hero wants); the middle brings the plot's problem and the hero's attempt,
with the twist and the foreshadowing payoff when asked for; the ending is the plot's good or bad end,
with the moral inside it or on its own line. Each feature the prompt asks for adds its beat and
nothing else does, and the text each feature produced is recorded for ``Story.facts``.
:func:`regroup` then varies the paragraph breaks, so that a break's position does not give away the
beat, and :func:`pad` lengthens a short story with small, harmless sentences.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from tinystories_lib.stories.storyteller.lexicon import lexicon
from tinystories_lib.stories.storyteller.templates import (
    BODY_PLURAL_SPECIAL,
    FORESHADOW_KINDS,
    PADDING,
    PLOTS,
    SLOTS,
    TASTE_OBJECT,
    Writer,
)
from tinystories_lib.stories.storyteller.world import World

LEX = lexicon()
_PART_OF_ANIMAL = LEX.bird_parts | LEX.fur_parts  # a wing or a tail: the accident is the animal's
MIN_WORDS, MAX_WORDS = 100, 350  # words in a story: short ones are padded to MIN_WORDS; MAX_WORDS is the cap it is held to


@dataclass
class _Plan:
    """Decisions the paragraph writers share: features asked for, ending, foreshadowing."""

    feats: set[str]
    plot: str
    ending: str                  # "good" or "bad"
    fs_key: str | None           # which foreshadowing pair, if any
    fs_early: bool               # set it up in the first paragraph (else the second)
    friend_early: bool           # introduce the friend in the first paragraph
    ft: dict[str, str]           # the text each feature produced, for Story.facts


def paragraphs(world: World, w: Writer, facts: dict) -> list[list[str]]:
    """The story as paragraphs of sentences, beat by beat."""
    rng = w.rng
    feats = world.features
    plan = _Plan(feats=feats, plot=world.plot, ending="bad" if world.bad else "good",
                 fs_key=rng.choice(FORESHADOW_KINDS) if "foreshadowing" in feats else None,
                 fs_early=rng.random() < 0.5, friend_early=rng.random() < 0.5, ft={})
    paras = [_intro(world, w, plan, facts), _setup(world, w, plan), _middle(world, w, plan, facts)]
    paras.extend(_ending(world, w, plan, facts))
    facts["feature_text"] = plan.ft
    return paras


def _friend_slot(world: World) -> str:
    return f"friend.{'sibling' if world.frel != 'friend' else 'friend'}"


def _intro(world: World, w: Writer, plan: _Plan, facts: dict) -> list[str]:
    """Paragraph 1 -- who, what, where. The opening comes first; the other introductions in any order."""
    rng = w.rng
    adj_kind = world.adj.category
    p1 = [w.say("opening")]
    facts["opening"] = w.used["opening"]
    if adj_kind == "weather" or rng.random() < 0.25:
        p1.append(w.say("weather"))
    blocks = [[w.say("object")]]
    if adj_kind == "thing" and rng.random() < 0.5:
        blocks[0].append(w.say("object_adj"))
    # the animal is always introduced: plots, twists and "pers" verbs may lean on it
    animal_slot = "pet" if world.animal in LEX.pets and rng.random() < 0.5 else "animal"
    blocks.append([w.say(animal_slot)])
    facts["animal_intro"] = w.used[animal_slot]
    if world.noun_role == "animal" and rng.random() < 0.5:
        blocks[-1].append(w.say("animal_plural"))
    if plan.friend_early:
        blocks.append([w.say(_friend_slot(world))])
    rng.shuffle(blocks)
    for block in blocks:
        p1.extend(block)
    if world.noun.word == world.par_word or rng.random() < 0.2:
        p1.append(w.say("parent"))
    if adj_kind == "mood":
        p1.append(w.say("mood"))
    elif adj_kind == "trait" and rng.random() < 0.3:
        p1.append(w.say("trait"))
    if plan.fs_key and plan.fs_early:
        plan.ft["foreshadowing_setup"] = w.say(f"fs.{plan.fs_key}.setup")
        p1.append(plan.ft["foreshadowing_setup"])
    return p1


def _setup(world: World, w: Writer, plan: _Plan) -> list[str]:
    """Paragraph 2 -- the day begins: where they go, what they see, what the hero wants."""
    rng = w.rng
    role, adj_kind = world.noun_role, world.adj.category
    p2 = [] if plan.friend_early else [w.say(_friend_slot(world))]
    p2.append(w.say("go_place"))
    if role == "fixture":
        p2.append(w.say("fixture"))
        if rng.random() < 0.3:
            p2.append(w.say("fixture_plural"))
    if role == "nature":
        p2.append(w.say("nature_unique" if world.noun.word in LEX.unique_nature else "nature"))
    if world.visitor is not None:
        p2.append(w.say("visitor"))
    if rng.random() < 0.6:
        p2.append(w.say("play"))
    p2.append(w.say("goal"))
    if rng.random() < 0.35:
        p2.append(w.say("verb_done"))
    if world.food != world.obj and (adj_kind == "taste" or
                                    (world.verb.category == "food" and rng.random() < 0.5)):
        p2.append(w.say("snack"))
    elif adj_kind == "taste":  # the food is the object itself
        p2.append(w.fill(TASTE_OBJECT))
    if "conflict" in plan.feats and plan.plot != "share":
        plan.ft["conflict"] = w.say("conflict")
        p2.append(plan.ft["conflict"])
    if plan.fs_key and not plan.fs_early:
        plan.ft["foreshadowing_setup"] = w.say(f"fs.{plan.fs_key}.setup")
        p2.append(plan.ft["foreshadowing_setup"])
    return p2


def _body_beats(world: World, w: Writer) -> list[str]:
    """A body-part prompt noun: a small accident to the hero, or to the animal for wings and tails."""
    part = world.noun.word
    if part in _PART_OF_ANIMAL:
        return [w.say("animal_body")]
    out = [w.say("body_bump" if part in LEX.bumpable else "body")]
    if w.rng.random() < 0.5 and part in BODY_PLURAL_SPECIAL:
        out.append(w.fill(BODY_PLURAL_SPECIAL[part]))
    elif w.rng.random() < 0.5 and part in LEX.wiggly:
        out.append(w.say("body_plural"))
    return out


def _middle(world: World, w: Writer, plan: _Plan, facts: dict) -> list[str]:
    """Paragraph 3 -- the problem and what the hero does about it; the twist and the payoff."""
    plot, ending, ft = plan.plot, plan.ending, plan.ft
    p3 = [w.say(f"{plot}.problem")]
    if plot == "share":  # chosen only with "conflict": the fight is the problem itself
        ft["conflict"] = w.say("conflict_object")
        p3.append(ft["conflict"])
    if world.noun_role == "body":
        p3.extend(_body_beats(world, w))
    attempt = f"{plot}.attempt_{ending}" if f"{plot}.attempt_{ending}" in SLOTS else f"{plot}.attempt"
    p3.append(w.say(attempt))
    if "dialogue" in plan.feats:
        ft["dialogue"] = w.say(f"{plot}.talk", quote=True)
        p3.append(ft["dialogue"])
    if "plot_twist" in plan.feats:
        ft["plot_twist"] = w.say("twist_intro") + " " + w.say(f"{plot}.twist_{ending}")
        p3.append(ft["plot_twist"])
        facts["twist"] = w.used[f"{plot}.twist_{ending}"]
    if plan.fs_key:
        ft["foreshadowing_payoff"] = w.say(f"fs.{plan.fs_key}.{ending}")
        p3.append(ft["foreshadowing_payoff"])
        facts["foreshadowing"] = {"kind": plan.fs_key, "setup": ft["foreshadowing_setup"],
                                  "payoff": ft["foreshadowing_payoff"]}
    return p3


def _ending(world: World, w: Writer, plan: _Plan, facts: dict) -> list[list[str]]:
    """Paragraph 4 -- the good or bad ending -- and the moral, inside it or on its own line."""
    rng, plot, ending = w.rng, plan.plot, plan.ending
    end = w.say(f"{plot}.{ending}")
    p4 = [end]
    facts["ending"] = ending
    facts["ending_template"] = w.used[f"{plot}.{ending}"]
    plan.ft["ending"] = end
    p4.append(w.say(f"end_verb_{ending}"))
    if "conflict" in plan.feats and plot != "share":  # the share plot's ending already settles it
        p4.append(w.say(f"conflict_{ending}"))
    if rng.random() < (0.7 if len(plan.feats) < 2 else 0.3):
        p4.append(w.say(f"closing_{ending}"))
    if "moral_value" not in plan.feats:
        return [p4]
    moral = rng.choice(PLOTS[plot][f"moral_{ending}"])
    w.ctx["moral"] = moral
    plan.ft["moral_value"] = w.say("moral")
    facts["moral"] = moral
    if rng.random() < 0.5:
        return [p4 + [plan.ft["moral_value"]]]
    return [p4, [plan.ft["moral_value"]]]


def regroup(paras: list[list[str]], rng: random.Random) -> list[list[str]]:
    """Vary the paragraph breaks (3 to 6 paragraphs) so their position is not a fixed signal."""
    r = rng.random()
    if r < 0.2:
        return [paras[0] + paras[1]] + paras[2:]
    if r < 0.5 and len(paras[2]) >= 4:
        mid = len(paras[2]) // 2
        return paras[:2] + [paras[2][:mid], paras[2][mid:]] + paras[3:]
    return paras


def join_paragraphs(paras: list[list[str]]) -> str:
    """The text: sentences joined by spaces, paragraphs by line breaks."""
    return "\n".join(" ".join(p) for p in paras if p)


def pad(paras: list[list[str]], w: Writer, rng: random.Random) -> None:
    """Add small, harmless sentences to the second paragraph until the story reaches MIN_WORDS."""
    n_words = sum(len(s.split()) for p in paras for s in p)
    extra = iter(rng.sample(PADDING, len(PADDING)))
    while n_words < MIN_WORDS:
        sentence = w.fill(next(extra))
        paras[1].append(sentence)
        n_words += len(sentence.split())
