"""The story world: the cast, the props and the plot of one story, decided before any sentence is written.

:class:`World` reads the prompt's three words (through the prompt vocabulary, which knows each word's
category, inflections and article) and casts a hero (a child, or sometimes an animal), a friend or
sibling, a parent, an animal, sometimes a visitor, and picks the object, the place, a food, a drink
and the plot. The prompt noun fills the role its category suits: a toy becomes the object, a place the
setting, a person a visitor, a body part an accident. Every name in a story has one owner, so
names and pronouns can be tracked across paragraphs. :meth:`World.context` turns the world into the
values the templates are filled from ({h}, {his}, {the_obj}, {do}...), with articles and verb
forms that agree. The word lists come from :func:`lexicon`; every choice is drawn from the story's
own RNG.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from tinystories_lib.stories.prompts import PromptSpec, Word, vocab_index
from tinystories_lib.stories.storyteller.lexicon import lexicon
from tinystories_lib.stories.storyteller.templates import Context

LEX = lexicon()

PRONOUNS = {
    "he": ("he", "him", "his", "himself"),
    "she": ("she", "her", "her", "herself"),
    "it": ("it", "it", "its", "itself"),
}
# a prompt verb in one of these frames has "to"-objects that are alive: talk to the puppy
ANIMATE_PREPS = {"to", "from"}


def _article(word: str) -> str:
    """'a' or 'an' by sound; vocabulary words carry theirs, this covers the storyteller's own."""
    w = vocab_index().get(("noun", word)) or vocab_index().get(("adjective", word))
    if w is not None:
        return w.article
    if word[:3] in ("uni", "use", "eu") or word.startswith("one"):
        return "a"
    return "an" if word[:1] in "aeiou" else "a"


def _a(phrase: str) -> str:
    """'a kite', 'an old kite'."""
    return f"{_article(phrase.split(' ', 1)[0])} {phrase}"


def _plural(word: str) -> str:
    """'kites', 'mice': the vocabulary's plural where it has one, else -s or -es."""
    w = vocab_index().get(("noun", word))
    if w is not None and not w.mass:
        return w.form("plural")
    return word + ("es" if word.endswith(("s", "sh", "ch", "x")) else "s")


@dataclass
class Person:
    """A character of the story; :meth:`fact` is its entry in ``Story.facts["characters"]``."""

    name: str       # how the text names them mid-sentence: "Lily", "the farmer", "her mom"
    pronoun: str    # he / she / it
    gender: str     # girl, boy, female, male, none
    role: str       # hero, friend, parent, helper, visitor, animal, giver
    kind: str       # girl, boy, bunny, mom, farmer

    def fact(self) -> dict:
        subj, obj, poss, _ = PRONOUNS[self.pronoun]
        return {"name": self.name, "gender": self.gender, "pronoun": subj, "object_pronoun": obj,
                "possessive": poss, "role": self.role, "kind": self.kind}


def _animal_home(animal: str, rng: random.Random) -> tuple[str, str]:
    """Where an animal lives and where it could get stuck, so a fish never lives by the fence."""
    if animal in LEX.water_animals:
        return rng.choice(("in the pond", "in the lake", "by the river")), "in an old net"
    if animal in LEX.birds:
        return rng.choice(("in a tall tree", "in a nest by the window", "on the roof")), "in a bush"
    if animal in LEX.bugs:
        return rng.choice(("in the garden", "under a big leaf", "in the grass")), "in a sticky puddle"
    return (rng.choice(("by the fence", "under the old tree", "near the barn", "in the woods")),
            rng.choice(("in a bush", "up a tree", "in the mud", "under the fence")))


def _verb_phrases(verb: Word, obj_np: str, animal_np: str, food_np: str, drink_np: str) -> dict[str, str]:
    """The verb with the complement its frame needs, in every form the templates use."""
    cat = verb.category
    if cat == "obj":
        tail = " " + obj_np
    elif cat == "pers":
        tail = " " + animal_np
    elif cat == "food":
        tail = " " + food_np
    elif cat == "drink":
        tail = " " + drink_np
    elif verb.prep == "along":
        tail = " along"
    elif verb.prep:
        tail = f" {verb.prep} " + (animal_np if verb.prep in ANIMATE_PREPS else obj_np)
    else:
        tail = ""
    return {"do": verb.word + tail, "does": verb.form("third") + tail, "did": verb.form("past") + tail,
            "done": verb.form("past_participle") + tail, "doing": verb.form("ing") + tail}


def _person(rng: random.Random, role: str, taken: set[str], gender: str | None = None) -> Person:
    """A named child; names already used in this story are skipped so every name has one owner."""
    gender = gender or rng.choice(("girl", "boy"))
    pool = LEX.girls if gender == "girl" else LEX.boys
    name = rng.choice(pool)
    while name in taken:
        name = rng.choice(pool)
    taken.add(name)
    return Person(name, "she" if gender == "girl" else "he", gender, role, gender)


# which part a prompt noun plays, by its vocabulary category
NOUN_ROLES = {"toy": "object", "thing": "object", "clothes": "object", "food": "object", "vehicle": "object",
              "animal": "animal", "place": "place", "body": "body", "nature": "nature", "person": "person"}


def _gendered(name: str, pronoun: str, role: str, kind: str) -> Person:
    """An animal or adult character: gender words follow the pronoun."""
    return Person(name, pronoun, "male" if pronoun == "he" else "female", role, kind)


class World:
    """Everything one story is about, decided before any sentence is written."""

    def __init__(self, spec: PromptSpec, rng: random.Random):
        idx = vocab_index()
        self.rng = rng
        self.noun = idx.get(("noun", spec.noun)) or Word(spec.noun, "noun", "thing")
        self.verb = idx.get(("verb", spec.verb)) or Word(spec.verb, "verb", "intr")
        self.adj = idx.get(("adjective", spec.adjective)) or Word(spec.adjective, "adjective", "thing")
        self.features = set(spec.features)
        n = self.noun.word
        self.noun_role = "fixture" if n in LEX.fixtures else NOUN_ROLES.get(self.noun.category, "object")
        self.taken: set[str] = set()  # names in use, so every name has one owner
        hero_animal = self._cast_hero()
        self._cast_family(hero_animal)
        self._cast_others(hero_animal)
        self._props()
        self.plot = self._choose_plot()
        self.bad = "bad_ending" in self.features

    def _pet_name(self) -> str:
        name = self.rng.choice([p for p in LEX.pet_names if p not in self.taken])
        self.taken.add(name)
        return name

    def _cast_hero(self) -> str:
        """A child, or sometimes an animal (an animal prompt noun may be the hero). Returns its kind."""
        rng, n = self.rng, self.noun.word
        if self.noun.category == "animal" and n in LEX.animal_heroes and rng.random() < 0.35:
            hero_animal = n
        elif rng.random() < 0.22:
            hero_animal = rng.choice(LEX.animal_heroes)
        else:
            hero_animal = ""
        if hero_animal:
            self.hero = _gendered(self._pet_name(), rng.choice(("he", "she")), "hero", hero_animal)
        else:
            self.hero = _person(rng, "hero", self.taken)
        return hero_animal

    def _cast_family(self, hero_animal: str) -> None:
        """The parent and the friend or sibling; a prompt noun that names one fills that role."""
        rng, n = self.rng, self.noun.word
        par = n if n in LEX.parents else rng.choice(("mom", "mom", "dad", "dad", "grandma", "grandpa"))
        self.par_word = par
        self.parent = _gendered("", LEX.parents[par], "parent", par)
        if n in LEX.siblings:
            self.frel, fgender = n, LEX.siblings[n]
        elif n == "friend":
            self.frel, fgender = "friend", None
        else:
            self.frel = rng.choice(("friend", "friend", "friend", "sister", "brother"))
            fgender = LEX.siblings.get(self.frel)
        if hero_animal and self.frel == "friend":  # an animal's friend is another animal
            kind = rng.choice([a for a in LEX.animal_heroes if a != hero_animal])
            self.friend = _gendered(self._pet_name(), rng.choice(("he", "she")), "friend", kind)
        elif hero_animal:  # an animal's sibling is the same animal
            pron = "she" if self.frel == "sister" else "he"
            self.friend = _gendered(self._pet_name(), pron, "friend", hero_animal)
        else:
            self.friend = _person(rng, "friend", self.taken, fgender)

    def _cast_others(self, hero_animal: str) -> None:
        """The animal (the prompt's, one that has the prompt's body part, or a pet) and a visitor."""
        rng, n, cat = self.rng, self.noun.word, self.noun.category
        if cat == "animal" and hero_animal != n:
            self.animal = n
        elif n in LEX.bird_parts:
            self.animal = rng.choice(LEX.birds)
        elif n in LEX.fur_parts:
            self.animal = rng.choice(LEX.furry)
        else:
            self.animal = rng.choice([p for p in LEX.pets if p != hero_animal])
        self.animal_name = self._pet_name()
        self.visitor: Person | None = None
        if cat == "person" and n not in LEX.parents and n not in LEX.siblings and n != "friend":
            pron = LEX.visitor_gender.get(n) or rng.choice(("he", "she"))
            self.visitor = _gendered(f"the {n}", pron, "visitor", n)
        # the helper who comes when called: usually the visitor when there is one, else the parent
        self.helper_is_visitor = self.visitor is not None and rng.random() < 0.7

    def _props(self) -> None:
        """The object, the place, a food, a drink and the relative who gives a keepsake."""
        rng, n, cat = self.rng, self.noun.word, self.noun.category
        if self.noun_role == "object":
            self.obj = f"toy {n}" if cat == "vehicle" else n  # a toy ambulance can be carried
            self.obj_mass = self.noun.mass
            self.obj_cat = "toy" if cat == "vehicle" else cat
        else:
            self.obj = rng.choice(LEX.default_objects)
            self.obj_mass = False
            self.obj_cat = "toy"  # every default object is a toy or a carried thing
        self.place = n if cat == "place" else rng.choice(LEX.settings)
        self.food = n if cat == "food" else rng.choice(LEX.default_foods)
        self.drink = n if n in LEX.drinks else rng.choice(LEX.drinks)
        self.giver = rng.choice([g for g in LEX.givers if g != self.par_word])

    def _choose_plot(self) -> str:
        rng = self.rng
        if "conflict" in self.features and rng.random() < 0.35:
            return "share"
        options = ["lost", "want", "help", "scared", "gift", "want", "help"]
        if self.obj_cat not in LEX.no_break and not self.obj_mass:
            options.append("broken")
        return rng.choice(options)

    # -- the context every template is filled from -----------------------------------------
    def context(self) -> Context:
        rng = self.rng
        h, f, par = self.hero, self.friend, self.parent
        he, him, his, hself = PRONOUNS[h.pronoun]
        fhe, fhim, fhis, _ = PRONOUNS[f.pronoun]
        phe, phim, phis, _ = PRONOUNS[par.pronoun]
        adj = self.adj
        a_kind = adj.category
        look = adj.word if a_kind == "thing" else rng.choice(LEX.look_adjs)
        trait = adj.word if a_kind == "trait" else rng.choice(LEX.trait_adjs)
        weather = adj.word if a_kind == "weather" else rng.choice(LEX.weather_adjs)
        tadj = adj.word if a_kind == "taste" else rng.choice(LEX.taste_adjs)
        kid = h.kind if h.kind not in ("girl", "boy") else rng.choice((h.kind, h.kind, f"little {h.kind}"))
        kdesc = f"{trait} {kid}" if trait not in kid else kid
        obj = self.obj
        if self.obj_mass:
            a_obj, a_adj_obj = f"some {obj}", f"some {look} {obj}"
        else:
            a_obj, a_adj_obj = _a(obj), _a(f"{look} {obj}")
        food_w = vocab_index().get(("noun", self.food))
        food_mass = bool(food_w and food_w.mass)
        a_food = f"some {self.food}" if food_mass else _a(self.food)
        a_tfood = f"some {tadj} {self.food}" if food_mass else _a(f"{tadj} {self.food}")
        prep = "in" if self.place in LEX.in_places else "on" if self.place in LEX.on_places else "at"
        the_animal = f"the {self.animal}"
        home, stuck = _animal_home(self.animal, rng)
        helper = self.visitor if self.helper_is_visitor else par
        w_name = helper.name if helper is not par else f"{his} {self.par_word}"
        whe, whim, whis, _ = PRONOUNS[helper.pronoun]
        ctx = {
            "h": h.name, "he": he, "him": him, "his": his, "hself": hself, "kid": kid,
            "kids": "animals" if h.kind not in ("girl", "boy") else "kids",
            "a_kdesc": _a(kdesc), "age": rng.choice(LEX.ages),
            "f": f.name, "fhe": fhe, "fhim": fhim, "fhis": fhis, "fkid": f.kind,
            "a_fkid": _a(f.kind), "frel": self.frel, "a_frel": _a(f"little {self.frel}")
            if self.frel in LEX.siblings and rng.random() < 0.5 else _a(self.frel),
            "par": self.par_word, "phe": phe, "phim": phim, "phis": phis,
            "w": w_name, "whe": whe, "whim": whim, "whis": whis, "giver": self.giver,
            "an": self.animal, "a": the_animal, "a_an": _a(self.animal), "a_home": home, "a_stuck": stuck,
            "ans": _plural(self.animal), "aname": self.animal_name,
            "obj": obj, "the_obj": f"the {obj}", "a_obj": a_obj, "a_adj_obj": a_adj_obj,
            "adj_obj": f"{look} {obj}", "place": self.place, "the_place": f"the {self.place}",
            "at_place": f"{prep} the {self.place}", "to_place": f"to the {self.place}",
            "food": self.food, "the_food": f"the {self.food}", "a_food": a_food, "a_tfood": a_tfood,
            "tadj": tadj, "adj": adj.word, "a_adj": _a(adj.word), "weather": weather,
            "a_weather": _a(weather),
        }
        if rng.random() < 0.5:  # the gift plot's recipient
            ctx.update(rec=f"{his} {self.par_word}", rec_him=phim, rec_voc=self.par_word.capitalize())
        else:
            ctx.update(rec=f.name, rec_him=fhim, rec_voc=f.name)
        ctx.update(_verb_phrases(self.verb, f"the {obj}", the_animal, f"the {self.food}",
                                 f"the {self.drink}"))
        n = self.noun
        if self.noun_role == "nature":
            ctx["nat"] = n.word
            ctx["a_nat"] = f"some {n.word}" if n.mass else _a(n.word)
            ctx["the_nat"] = f"the {n.word}"
        elif self.noun_role == "fixture":
            ctx["fix"] = n.word
            ctx["fixes"] = n.form("plural")
            ctx["a_adj_fix"] = _a(f"{look} {n.word}")
        elif self.noun_role == "body":
            ctx["body"] = n.word
            ctx["bodies"] = n.form("plural") or n.word
        if self.visitor is not None:
            vadj = rng.choice(LEX.visitor_adjs)
            ctx["a_visitor"] = _a(f"{vadj} {n.word}")
        return Context(ctx)
