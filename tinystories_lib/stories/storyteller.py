"""The offline storyteller: a procedural writer of short children's stories from the paper's prompts.

With no network and no LLM, this is what the smoke pipeline and every workshop trains tiny models
on, so it is built to show the paper's emergence order: grammar (inflections, agreement, a/an,
pronouns that fit their referents), then consistency (a small story world whose names, pronouns,
objects and places are reused across paragraphs), then creativity (a prompt's three words and its
features steer the plot, with many templates per slot).

How a story is made:

1. :func:`_build_world` casts the story from the prompt and a per-story RNG: a hero (child or
   animal, with name, gender, pronouns), a friend or sibling, a parent, sometimes a visitor, an
   animal, an object, a place, a food. The prompt noun fills the role its category suits
   (a toy becomes the object, a place the setting, a person a visitor, a body part an accident).
2. A plot (lost, want, help, broken, scared, gift, share) supplies the problem, the attempt and a
   good or bad ending; the features add beats (dialogue, conflict, a twist, a foreshadowing
   setup and its payoff, a moral).
3. Each beat picks a template from its slot; ``[a|b]`` inside a template is a free choice of
   wording. Templates that contain quotation marks are used only when "dialogue" is asked for,
   so every feature is visible in the text exactly when the prompt asks for it.

``Story.facts`` records the cast (names, genders, pronouns, roles), the object, place, animal,
plot, ending and the text each feature produced, for exact probes of context tracking.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from functools import cache

from tinystories_lib.stories.prompts import PromptSpec, Word, sample_prompts, vocab_index
from tinystories_lib.stories.records import Story

# --------------------------------------------------------------------------------------------
# Template engine: "[a|b|c]" is a choice made per use; "{key}" is filled from the story context.
# A key written with a capital first letter ({He}, {The_obj}) gets the capitalised value.
# --------------------------------------------------------------------------------------------
_ALT = re.compile(r"\[([^\[\]]*)\]")


def _compile(text: str) -> tuple:
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


@dataclass(frozen=True)
class Slot:
    """A named list of templates, split by whether they contain speech."""

    name: str
    plain: tuple[tuple[int, tuple], ...]
    quoted: tuple[tuple[int, tuple], ...]

    @classmethod
    def of(cls, name: str, texts: list[str]) -> Slot:
        plain = tuple((i, _compile(t)) for i, t in enumerate(texts) if '"' not in t)
        quoted = tuple((i, _compile(t)) for i, t in enumerate(texts) if '"' in t)
        return cls(name, plain, quoted)


# --------------------------------------------------------------------------------------------
# The cast: names, relatives, pronouns.
# --------------------------------------------------------------------------------------------
GIRLS = """Lily Mia Sue Anna Amy Emma Lucy Sara Zoe Ella Maya Rose Kate Jane Molly Daisy Ruby Lila Nina
    Tina Ivy Grace Chloe Hannah Jenny Kim Lisa Mary Nora Olive Penny Rosie Sophie Tara Wendy Alice
    Bella Clara Dora Eva Gina Holly Iris Julia Katie Leah Megan Polly Susie Jill Beth Lulu""".split()
BOYS = """Tom Tim Ben Max Sam Jack Leo Joe Bob Jake Luke Mark Nick Paul Pete Ryan Toby Timmy Billy
    Danny Eddie Finn Gus Harry Jim Kevin Matt Ned Oscar Owen Roy Ted Tony Will Zack Adam Alex
    Charlie Dan Eli Fred George Henry Jay Kyle Liam Noah Ollie Sid Bert""".split()
PET_NAMES = """Spot Buddy Fluffy Coco Patch Whiskers Pip Bubbles Snowy Rex Lucky Sunny Peanut Cookie
    Ginger Shadow Button Fuzzy Bongo Momo Biscuit Pepper Socks Dot Bean Ziggy Nibbles Honey""".split()

PRONOUNS = {
    "he": ("he", "him", "his", "himself"),
    "she": ("she", "her", "her", "herself"),
    "it": ("it", "it", "its", "itself"),
}
# the parent and the friend's relation; a prompt noun that names one of these fills that role
PARENTS = {"mom": "she", "mommy": "she", "grandma": "she", "aunt": "she",
           "dad": "he", "daddy": "he", "grandpa": "he", "uncle": "he"}
SIBLINGS = {"sister": "girl", "brother": "boy"}
# visitors whose word fixes their gender
VISITOR_GENDER = {"king": "he", "prince": "he", "man": "he", "boy": "he", "wizard": "he",
                  "knight": "he", "mailman": "he", "queen": "she", "princess": "she", "woman": "she",
                  "lady": "she", "girl": "she", "fairy": "she", "witch": "she"}
ANIMAL_HEROES = """bunny puppy kitten bear mouse duck frog fox pig lamb squirrel owl cat dog bird
    monkey elephant turtle lion tiger horse cow goat hen rabbit pony penguin panda""".split()
PETS = "puppy kitten dog cat bunny bird fish hamster turtle duck".split()
BIRDS = "bird duck owl parrot hen chicken robin sparrow goose swan eagle penguin crow pigeon".split()
FURRY = "puppy kitten dog cat bunny rabbit bear fox mouse squirrel monkey lion tiger horse".split()
WATER_ANIMALS = {"fish", "goldfish", "whale", "dolphin", "shark", "octopus", "jellyfish", "crab", "seal",
                 "starfish", "frog", "toad", "duck", "swan", "goose", "turtle", "otter", "beaver"}
BUGS = {"ant", "bee", "bug", "beetle", "butterfly", "moth", "spider", "worm", "snail", "caterpillar",
        "mosquito", "ladybug", "firefly", "fly"}
BIRD_PARTS = {"wing", "beak", "feather"}
FUR_PARTS = {"paw", "fur", "tail"}

# places take "in", "on" or "at"; settings used when the prompt's noun is not a place
IN_PLACES = {"park", "garden", "forest", "jungle", "desert", "field", "meadow", "yard", "village",
             "town", "city", "kitchen", "bedroom", "bathroom", "basement", "attic", "classroom",
             "room", "garage", "house", "barn", "tower", "castle", "palace", "cave", "pool"}
ON_PLACES = {"road", "street", "bridge", "island", "farm", "hill", "mountain"}
SETTINGS = ["park", "garden", "forest", "beach", "farm", "yard", "playground", "meadow", "field",
            "village", "zoo", "pond", "hill", "lake"]
DEFAULT_OBJECTS = ["ball", "kite", "doll", "teddy", "truck", "boat", "balloon", "drum", "train",
                   "puzzle", "robot", "book", "blanket", "hat", "bike", "bucket", "shovel", "car",
                   "wagon", "whistle", "bell", "box", "crayon", "scarf", "card", "marble"]
DEFAULT_FOODS = ["cookie", "cake", "apple", "sandwich", "banana", "pie", "muffin", "cupcake",
                 "pancake", "orange", "pear", "carrot", "soup", "candy"]
DRINKS = ["milk", "juice", "water", "lemonade", "tea", "cocoa"]
# things in a house that nobody carries around: they are places in a story, not objects
FIXTURES = {"wall", "roof", "step", "door", "window", "gate", "fence", "bed", "chair", "table", "sofa",
            "couch", "rug", "carpet", "cupboard", "shelf", "drawer", "oven", "stove", "fridge", "sink",
            "tub", "bath", "bench", "ladder"}
UNIQUE_NATURE = {"sun", "moon", "sky", "sea", "ocean", "wind", "rain", "snow", "sunshine", "ice",
                 "light", "fire", "dirt", "mud", "sand", "grass"}
LOOK_ADJS = ["red", "blue", "shiny", "little", "new", "big", "green", "yellow", "soft", "pretty",
             "round", "old", "bright", "pink", "purple", "small"]
TRAIT_ADJS = ["kind", "happy", "curious", "little", "brave", "sweet", "playful", "friendly",
              "cheerful", "smart", "gentle", "silly"]
WEATHER_ADJS = ["sunny", "warm", "windy", "bright", "cloudy", "cold", "rainy"]
TASTE_ADJS = ["yummy", "sweet", "tasty", "warm", "big", "fresh"]
AGES = ["three", "four", "five", "six"]
GIVERS = ["grandma", "grandpa", "aunt", "uncle"]
# a prompt verb in one of these frames has "to"-objects that are alive: talk to the puppy
ANIMATE_PREPS = {"to", "from"}

NO_BREAK = {"food", "clothes"}  # objects a "broken" plot cannot break


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
    w = vocab_index().get(("noun", word))
    if w is not None and not w.mass:
        return w.form("plural")
    return word + ("es" if word.endswith(("s", "sh", "ch", "x")) else "s")


# --------------------------------------------------------------------------------------------
# Templates. Keys: hero {h} {he} {him} {his} {hself} {kid} {a_kdesc} {age}; friend {f} {fhe} {fhim}
# {fhis} {fkid} {frel}; parent {par} {phe} {phim} {phis}; helper {w} {whe} {whim} {whis}; giver
# {giver}; animal {an} {a} {a_an} {ans} {ahe} {ahis}; object {obj} {the_obj} {a_obj} {a_adj_obj}
# {objs}; place {place} {at_place} {to_place}; food {food} {a_food} {the_food} {a_tfood};
# verb {do} {does} {did} {done} {doing}; adjectives {adj} {a_weather} {weather}; {day}.
# --------------------------------------------------------------------------------------------
OPENINGS = [
    "Once upon a time, there was {a_kdesc} named {h}.",
    "Once upon a time, in a [little|small|quiet] [town|village], there lived {a_kdesc} called {h}.",
    "Once upon a time, {a_kdesc} named {h} lived in a [little|small|cozy] house [near the woods|by the sea|on a hill|with a red door].",
    "There was once {a_kdesc} named {h}.",
    "Once there was {a_kdesc} called {h}, who was {age} years old.",
    "{H} was {a_kdesc} who lived [near|close to] {the_place}.",
    "{H} was {a_kdesc}. {He} was {age} years old and [loved to play|liked to laugh|had a big smile].",
    "In a [little|small|cozy] house [near the woods|by the sea|on a hill|at the end of the street], there lived {a_kdesc} named {h}.",
    "Not long ago, there was {a_kdesc} named {h}.",
    "Long ago, in a [land|place] [far away|full of flowers|with tall trees], there lived {a_kdesc} named {h}.",
    "This is a story about {a_kdesc} named {h}.",
    "Meet {h}. {He} is {a_kdesc}, and {he} is {age} years old.",
    "Meet {h}, {a_kdesc}. {He} {does} [every day|every morning|whenever {he} can].",
    "{H} was {age} years old. {He} was {a_kdesc} with a [big|happy|sunny] smile.",
    "One [morning|day|afternoon], {a_kdesc} named {h} woke up [early|with a big smile|feeling ready to play].",
    "[Every day|Every morning], {a_kdesc} named {h} [got up early|ran outside|looked out of the window].",
    "Today was a big day for {h}, {a_kdesc} who was {age} years old.",
    "{H} was {a_kdesc} who [loved the outdoors|liked to try new things|was always busy].",
    "There once lived {a_kdesc}. {His} name was {h}.",
    "In a [busy|small|pretty] town, there was {a_kdesc}. {His} name was {h}.",
    "[Have you ever met|Do you know] {a_kdesc} named {h}? {He} [was|is] {age} years old.",
    "{H} was not like other {kids}. {He} was {a_kdesc} who [always asked questions|loved to explore|liked to sing].",
]
# The share of openings that start "Once upon a time" (3 of 21) keeps it near 14%.

WEATHER = [
    "It was {a_weather} day.",
    "The day was {weather}, and the [birds|bees] were busy.",
    "Outside, it was {weather}.",
    "It was {a_weather} [morning|day|afternoon], [just right for playing|and the sky was big].",
]
OBJECT_INTRO = [
    "{H} had {a_adj_obj}.",
    "{H} had {a_adj_obj} that {he} [loved very much|took everywhere|kept by {his} bed].",
    "{His} favorite thing was {a_adj_obj}.",
    "{He} loved {his} {adj_obj} more than anything.",
    "One day, {his} {par} gave {him} {a_adj_obj}.",
    "{H} [found|got] {a_adj_obj} [one day|on {his} birthday|from {his} {par}].",
]
OBJECT_ADJ = [
    "{The_obj} was {adj}, and {h} [loved it|was proud of it].",
    "Everyone said that {his} {obj} was {adj}.",
]
MOOD = [
    "That [morning|day], {h} felt {adj}.",
    "{H} felt {adj} [that day|all morning|when {he} woke up].",
    "[Today|That day], {h} was {adj}.",
]
TRAIT = [
    "{H} was {a_adj} {kid}, and everyone knew it.",
    "Everyone said {h} was {a_adj} {kid}.",
]
PET_INTRO = ["{H} had a pet {an} named {aname}.", "{H} had a [little|small] pet {an}."]
ANIMAL_INTRO = [
    "A little {an} lived {a_home}, not far from {his} house.",
    "Not far from {his} house, there was {a_an} that {h} liked to watch.",
    "{H} liked to visit {a_an} that lived {a_home}.",
]
ANIMAL_PLURAL = [
    "{He} [liked|loved] all {ans}, but this {an} was {his} favorite.",
    "{He} had seen many {ans}, but this {an} was [special|the best].",
]
FIXTURE = [
    "{H} liked to sit [by|next to|near] the {fix} [and think|and read|with {f}].",
    "In {his} house, there was {a_adj_fix}. {H} liked it very much.",
    "{H} looked [behind|under|near] the {fix}.",
    "{H} ran past the {fix} [as fast as {he} could|with a big smile].",
]
FIXTURE_PLURAL = [
    "The house had two {fixes}, and {h} liked the [big|old|red] one best.",
    "{H} had seen many {fixes}, but this one was [special|very old].",
]
PARENT_INTRO = [
    "{H} lived with {his} {par} in a [little|small|cozy] house.",
    "{H} loved {his} {par} very much.",
    "{His} {par} [liked to read to|always had time for|made the best pancakes for] {him}.",
]
FRIEND_INTRO = {
    "friend": [
        "{H} had a [good|best] friend named {f}.",
        "{His} best friend was {f}, {a_fkid} who lived [next door|down the street|nearby].",
        "{H} [often|always] played with {his} friend {f}.",
    ],
    "sibling": [
        "{H} had {a_frel} named {f}.",
        "{H} lived with {his} {par} and {his} {frel}, {f}.",
        "{His} {frel} {f} [liked to follow {him} everywhere|was a little older|was always nearby].",
    ],
}
GO_PLACE = [
    "One day, {h} and {f} went {to_place}.",
    "[One day|One morning|That afternoon], {h} took {the_obj} {to_place}.",
    "{H} and {f} [ran|walked|skipped] {to_place} [together|to play].",
    "{His} {par} took {him} and {f} {to_place}.",
    "[After lunch|In the morning|One afternoon], {h} and {f} played {at_place}.",
]
NATURE = [
    "{At_place}, {h} saw {a_nat}.",
    "{H} looked at {the_nat}. It was [so pretty|very big|a nice thing to see].",
    "There was {a_nat} {at_place}, and {h} stopped to look at it.",
]
NATURE_UNIQUE = [
    "{H} looked at the {nat} for a long time.",
    "{H} [liked|loved] the {nat} {at_place}.",
    "{H} told {f} about the {nat}.",
]
VISITOR = [
    "{At_place}, {h} met {a_visitor}.",
    "Soon, {a_visitor} came [by|along|over to say hello].",
    "{H} saw {a_visitor} [sitting on a bench|standing by the gate|walking by].",
]
GOAL = [
    "{H} wanted to {do}.",
    "More than anything, {h} wanted to {do}.",
    "{H} [really|very much] wanted to {do} [that day|today|there].",
    "{H} had a plan. {He} wanted to {do}.",
    "{H} liked to {do}, and today {he} wanted to [try again|do it all day].",
    '"I want to {do}!" said {h}.',
    '"Can we {do}?" {h} asked. "[Yes|Sure|Okay]," said {f}.',
    '"Let\'s {do}!" {h} said to {f}.',
    '"Watch me {do}!" said {h}. "I can do it!"',
]
PLAY = [
    "They [ran|hopped|skipped] around and [laughed|played] [for a long time|all morning|in the sun].",
    "{H} and {f} [played tag|played hide and seek|looked for pretty stones] {at_place}.",
    "{H} showed {f} {his} {obj}, and they played with it [together|for a while].",
    "They [sang a song|told funny stories|counted the birds] and had lots of fun.",
    "{At_place}, there were [tall trees|many flowers|lots of birds], and {h} [liked it a lot|was very happy].",
    "{H} [ran|jumped|spun] around until {he} was [tired|out of breath|dizzy].",
]
CLOSING_GOOD = [
    "That night, {h} went to bed with a [big|happy] smile.",
    "It was a [good|happy|wonderful] day for {h}.",
    "{H} hugged {his} {par} and said thank you.",
    "When {he} got home, {h} told {his} {par} all about it.",
]
CLOSING_BAD = [
    "That night, {h} went to bed [sad|with tears on {his} cheeks].",
    "It was a [bad|sad|long] day for {h}.",
    "When {he} got home, {h} did not want to talk to anyone.",
]
VERB_DONE = [
    "{H} had never {done} before.",
    "{H} had {done} [once|many times] before, and {he} [loved it|wanted to do it again].",
    "{H} spent [the morning|a long time|the whole day] {doing}.",
    "{H} was {doing} when {f} [came over|called {his} name|waved at {him}].",
]
SNACK = [
    "{His} {par} gave {him} {a_tfood} for a snack.",
    "{H} [had|ate] {a_tfood} [before {he} left|for a snack|with {f}].",
    "{The_food} was {tadj}, and {h} [ate it all up|shared some with {f}].",
]
# body parts one can bump and rub; the rest only get sentences that suit any part
BUMPABLE = {"foot", "hand", "head", "nose", "knee", "toe", "finger", "arm", "leg", "elbow", "chin",
            "cheek", "back", "shoulder", "thumb", "ear", "neck", "face", "belly", "tummy", "lip"}
BODY_BUMP = [
    "{H} tripped and bumped {his} {body}. [It hurt a little.|{He} rubbed it.|Ouch!]",
    "Something tickled {his} {body}, and {h} laughed.",
    "{H} looked at {his} {body}. It [was dirty|had some mud on it|felt funny].",
    "{H} [fell|slipped] and hurt {his} {body}. {He} rubbed it until it felt better.",
]
BODY = [
    "{His} {body} felt [funny|strange|a little sore].",
    "{H} thought about {his} {body} and [smiled|giggled].",
    "{H} showed {his} {body} to {f}, and they laughed.",
]
BODY_PLURAL = [  # only for parts that wiggle
    "{H} wiggled {his} {bodies}.",
    "{He} [looked at|held up] {his} {bodies}.",
    "{He} [washed|dried] {his} {bodies}.",
]
BODY_PLURAL_SPECIAL = {
    "tooth": "{He} brushed {his} {bodies} [and smiled|until they were clean].",
    "eye": "{He} [closed|rubbed] {his} {bodies}.",
    "knee": "{He} bent {his} {bodies} and jumped.",
    "cheek": "{His} {bodies} went pink.",
}
WIGGLY = {"foot", "toe", "finger", "hand", "ear", "arm", "leg", "paw", "wing", "thumb"}
ANIMAL_BODY = [
    "{A} had a hurt {body}, so it could not [play|move well].",
    "{H} saw that the {an} had something stuck in its {body}.",
    "The {an} [shook|wiggled|licked] its {body}.",
]
# lines that fit any plot; each plot adds its own "talk"
DIALOGUE = [
    '"Look at {the_obj}!" said {h}. "It is so [nice|fun|pretty]!"',
    '"I am [so happy|glad] you are here," {h} said to {f}.',
    '{F} [smiled|laughed] and said, "You are a good friend, {h}."',
]
# a fight over the object (the "share" plot's own fight) or over what to do
CONFLICT_OBJECT = [
    "{F} grabbed {the_obj}, and {h} pulled it back. They [argued|fought] and [yelled|shouted] at each other.",
    "{F} took {the_obj} without asking. {H} [got very angry|stomped {his} feet], and they began to fight.",
    '"Give me {the_obj}!" said {f}. "No, it is mine!" said {h}. They [pulled|tugged] and [argued|yelled].',
    '"It is my turn!" shouted {f}. "No, it is my {obj}!" shouted {h}. Neither of them would let go.',
]
CONFLICT = CONFLICT_OBJECT + [
    "But {f} wanted {the_obj} too. {F} grabbed it, and {h} pulled it back. They [argued|fought] and [yelled|shouted] at each other.",
    "But {f} did not want to {do}. {F} wanted to play a different game. {H} and {f} [argued|fought] and would not look at each other.",
    "Then {f} said that {h} was doing it all wrong. {H} got angry, and they had a big fight.",
    '"That is not how you do it," said {f}. "Yes, it is!" said {h}. They [argued|fought] and [stomped their feet|crossed their arms].',
    '"You can\'t {do}," said {f}. "You are too [little|slow]!" {H} felt hurt, and [they started to fight|{he} shouted back].',
]
CONFLICT_GOOD = [
    "Later, {h} and {f} said sorry to each other and were friends again.",
    "In the end, {h} and {f} [hugged|shook hands] and said sorry. It was better to be friends.",
    '"I am sorry," said {h}. "Me too," said {f}. They hugged and were friends again.',
]
CONFLICT_BAD = [
    "{F} went home angry, and {h} was left all alone.",
    "{H} and {f} did not play together [for a long time|after that].",
    '"I don\'t want to play with you anymore!" said {f}, and {fhe} went home.',
]
TWIST_INTRO = [
    "But then, something [unexpected|surprising] happened.",
    "Suddenly, something [strange|surprising] happened.",
    "Then something [no one expected|very surprising] happened.",
    "Then, all of a sudden, something [odd|funny|strange] happened.",
    "But what happened next was a big surprise.",
]
FORESHADOW = {
    # setup early, payoff just before the ending; payoffs split by how the story ends
    "whistle": (
        ["Before {h} left, {his} {giver} gave {him} a small whistle. \"Keep it with you,\" said {his} {giver}. \"One day it may help.\"",
         "That morning, {his} {giver} gave {him} a little whistle to keep in {his} pocket, just in case."],
        ["Then {h} remembered the whistle from {his} {giver}. {He} blew it as hard as {he} could, and {w} heard it and came [running|right away]."],
        ["{H} remembered the whistle from {his} {giver}, but {he} had left it at home."],
    ),
    "clouds": (
        ["[Far away|Over the hills], some dark clouds were [slowly coming closer|growing bigger].",
         "{H} saw a few dark clouds in the sky, but {he} did not think about them."],
        ["Just then, the dark clouds came, and it began to rain. But {h} had [a big umbrella|a warm coat], so {he} stayed dry."],
        ["Just then, the dark clouds came, and big drops of rain began to fall. Soon {h} was wet and cold."],
    ),
    "warning": (
        ["{His} {par} told {him} to be careful with {the_obj}.",
         "\"Be careful with {the_obj},\" said {his} {par}. \"Don't let it [fall|get lost].\""],
        ["{H} remembered what {his} {par} had said, so {he} held {the_obj} [tight|with care]."],
        ["{H} forgot what {his} {par} had said. {He} was not careful at all."],
    ),
    "lace": (
        ["One of {his} shoelaces was [loose|untied], but {h} did not stop to tie it."],
        ["{H} remembered {his} loose shoelace. {He} stopped and tied it, so {he} did not trip."],
        ["Then {h} tripped over {his} loose shoelace and fell down [hard|with a bump]."],
    ),
    "branch": (
        ["Near the path stood an old tree with a long, thin branch.",
         "{H} saw an old tree with a thin branch that [moved in the wind|went creak, creak]."],
        ["{H} did not climb the thin branch, because it looked weak. A moment later, it fell down by itself!"],
        ["{H} climbed onto the thin branch. Crack! The branch broke, and {h} fell to the ground."],
    ),
    "light": (
        ["{H} put a little flashlight in {his} [bag|pocket], just in case."],
        ["It was getting dark, so {h} took out {his} little flashlight. Now {he} could see the way."],
        ["It got dark, and when {h} tried {his} little flashlight, nothing happened. It was broken."],
    ),
}
ENDING_VERB_GOOD = [
    "Then {h} {did} [happily|all afternoon|again and again].",
    "After that, {h} {did} [every day|whenever {he} could].",
    "{H} and {f} {did} together until it was time to go home.",
]
ENDING_VERB_BAD = [
    "{H} did not want to {do} anymore.",
    "After that day, {h} never wanted to {do} again.",
]
MORAL_FORMS = [
    "The moral of the story is that {moral}.",
    "{H} learned that {moral}.",
    "From that day on, {h} knew that {moral}.",
    '"Remember," said {his} {par}, "{moral}."',
]

# Each plot: problem, attempt, twist (leads to a good or bad end), endings, morals, summaries.
PLOTS: dict[str, dict[str, list[str]]] = {
    "lost": {
        "talk": [
            '"Where is my {obj}?" {h} asked. "Let\'s look [together|everywhere]," said {f}.',
            '"Did you see my {obj}?" {h} asked {f}. "No, but I will help you look," said {f}.',
            '"Don\'t worry," said {f}. "We will find it."',
        ],
        "problem": [
            "But one [day|morning], {h} could not find {his} {obj}. {He} looked everywhere, but it was gone.",
            "When {h} [got home|woke up the next day], {his} {obj} was gone! {H} felt very sad.",
            "{H} put {the_obj} down to play, and when {he} looked back, it was not there.",
        ],
        "attempt": [
            "{H} looked under the bed and behind the door. {He} looked {at_place} too.",
            "{H} and {f} looked high and low. They looked under the [bench|tree|table] and behind the [fence|house|bushes].",
            "{He} asked {w} for help. {W} helped {him} look [everywhere|all around].",
            '"Where is my {obj}?" {h} cried. "We will find it," said {w}.',
        ],
        "twist_good": [
            "The {an} had taken {the_obj} to play with! It had been hiding it [under a bush|in its bed|behind the shed] all along.",
            "{The_obj} had been in {his} [bag|pocket|coat] the whole time!",
            "{F} had hidden {the_obj} as a joke, and now {fhe} gave it back with a big smile.",
        ],
        "twist_bad": [
            "The {an} had taken {the_obj}! It ran away with it, [fast|far], into the woods.",
            "{F} had taken {the_obj} home by mistake, and now it was lost on the way.",
        ],
        "good": [
            "At last, {h} found {the_obj}. {He} hugged it and smiled [a big smile|from ear to ear].",
            "{H} was so happy to have {his} {obj} back. {He} said thank you to {w}.",
            "Finally, there it was! {H} picked up {the_obj} and held it tight.",
        ],
        "bad": [
            "{H} never found {his} {obj} again. {He} cried [all the way home|for a long time].",
            "It got dark, and {h} had to go home without {his} {obj}. It was lost for good.",
            "{The_obj} was never seen again. {H} was sad for a long, long time.",
        ],
        "moral_good": ["it is good to ask for help when you need it",
                       "you should never give up when you look for something"],
        "moral_bad": ["we must take good care of the things we love",
                      "you should always put your things in a safe place"],
        "summary_good": ["{H} loses {his} {obj} and finds it again with help from {w}."],
        "summary_bad": ["{H} loses {his} {obj} and never finds it."],
    },
    "want": {
        "talk": [
            '"I can do it!" said {h}. "I know you can," said {f}.',
            '"What should we do now?" asked {f}. "Let\'s [think|try again|ask for help]," said {h}.',
            '"Don\'t give up," said {f}. "You can do it!"',
        ],
        "problem": [
            "But it was not easy. Every time {h} tried, it did not work.",
            "But {his} {par} said, \"Not now, {h}. It is too [late|cold|dark].\"",
            "But {his} {par} said it was too [late|cold|dark] to {do}.",
            "But {h} was too small, and {he} could not do it alone.",
            "But then it started to rain, and {h} had to stay inside.",
        ],
        "attempt": [
            "{H} tried again and again. {He} did not give up.",
            "{H} asked {w} for help. {W} showed {him} what to do.",
            "{H} sat down and thought hard. Then {he} had an idea.",
            '"Please help me," {h} said to {w}. "I will try my best," said {w}.',
        ],
        "twist_good": [
            "{His} {par} came with a big surprise. {Phe} had {a_obj} just for {h}!",
            "The rain stopped, and a big rainbow came out over {the_place}!",
            "The {an} came over and showed {h} how to do it!",
        ],
        "twist_bad": [
            "{The_obj} started to [roll|slide] away, and {h} could not stop it.",
            "The {an} came running and knocked {the_obj} over!",
        ],
        "good": [
            "At last, {h} did it! {He} felt so proud, and {w} clapped.",
            "With a little help, {h} could do it. {He} smiled and laughed.",
            "In the end, {h} and {f} had the best day ever.",
        ],
        "bad": [
            "{H} fell down and hurt {his} knee. {He} cried, and the fun day was over.",
            "{The_obj} fell and broke into many pieces. {H} could not fix it.",
            "It was too late. {H} had to go home, and {he} never got to try.",
        ],
        "moral_good": ["good things come to those who wait", "it is good to keep trying"],
        "moral_bad": ["you should listen to your mom and dad", "being careful is very important"],
        "summary_good": ["{H} wants to {do}, and with some help {he} does."],
        "summary_bad": ["{H} wants to {do}, but it all goes wrong."],
    },
    "help": {
        "talk": [
            '"Poor little {an}," said {h}. "We have to help it."',
            '"Be careful," said {f}. "It looks scared."',
            '"What should we do?" asked {f}. "Let\'s be [gentle|quiet|slow]," said {h}.',
        ],
        "problem": [
            "Then {h} heard a sad sound. The {an} was stuck {a_stuck} and could not get out.",
            "[Near|By] {the_place}, {h} saw the {an}. It was lost and looked very scared.",
            "The {an} was hurt and could not move. It [cried|made a small, sad sound].",
        ],
        "attempt": [
            "{H} wanted to help. {He} walked up to the {an} [slowly|very slowly] so it would not run away.",
            "{H} and {f} tried to help the {an}. They were very gentle.",
            "{H} ran to get {w}. Together they went back to the {an}.",
            '"Don\'t be scared, little {an}," {h} said softly. "I will help you."',
        ],
        "twist_good": [
            "The {an} was not lost at all. It was looking for its baby, and its baby was right there!",
            "The {an} could talk! \"Thank you,\" it said. \"You are very kind.\"",
        ],
        "twist_bad": [
            "The {an} was not scared at all. It jumped up and ran off with {the_obj}!",
            "The {an} was not stuck. It had only been playing, and now it bit {h}'s finger.",
        ],
        "good": [
            "{H} helped the {an}, and it was free. It looked so happy.",
            "The {an} was safe at last. It came back to see {h} every day.",
            "With {w}'s help, the {an} was safe. {H} felt warm inside.",
        ],
        "bad": [
            "But the {an} ran away, and {h} never saw it again.",
            "{H} could not help the {an} in time. {He} went home feeling very sad.",
            "The {an} got scared and went away into the dark. {H} cried and cried.",
        ],
        "moral_good": ["being kind to others makes everyone happy", "we should always help those in need"],
        "moral_bad": ["some animals are happier when we leave them alone",
                      "we should ask a grown-up before we try to help a wild animal"],
        "summary_good": ["{H} helps {a_an} that is in trouble."],
        "summary_bad": ["{H} tries to help {a_an}, but it does not work out."],
    },
    "broken": {
        "talk": [
            '"Oh no!" said {h}. "What will {Par} say?"',
            '"It was an accident," {h} said. "I did not mean to."',
            '"Can we fix it?" {h} asked {w}. "Let\'s try," said {w}.',
        ],
        "problem": [
            "One day, {h} played too hard, and {the_obj} broke!",
            "Oh no! {H} dropped {the_obj}, and it broke into two pieces.",
            "{H} was not careful, and {the_obj} fell and broke.",
        ],
        # telling the truth leads to the good ending, hiding it to the bad one
        "attempt_good": [
            "{H} took {the_obj} to {w}. {He} told the truth about what had happened.",
            '"I broke it," {h} said [in a small voice|with tears in {his} eyes]. "I am sorry."',
            "{H} was scared, but {he} went to {w} and told the truth.",
        ],
        "attempt_bad": [
            "{H} was scared. {He} did not want {his} {par} to know, so {he} hid {the_obj} [under the bed|in a box].",
            "{H} hid the pieces [under the bed|behind a chair] and did not tell anyone.",
        ],
        "twist_good": [
            "{The_obj} was not really broken at all. Only one small part had come off!",
            "{His} {par} smiled and showed {him} that {phe} had one just like it, from when {phe} was little.",
        ],
        "twist_bad": [
            "The {an} found the pieces and ran off with one of them.",
            "{His} {par} had already found the pieces, and {phe} was not happy that {h} had hidden them.",
        ],
        "good": [
            "{W} helped {him} fix it. Soon {the_obj} was as good as new.",
            "Together they glued the pieces back. {H} was happy again.",
            "{His} {par} hugged {him} and said it was okay. They fixed it together.",
        ],
        "bad": [
            "{The_obj} could not be fixed. {H} had to throw it away, and {he} felt very sad.",
            "{His} {par} was sad that {h} had not told the truth. There was no more play that day.",
            "No one could fix {the_obj}. It stayed broken for good.",
        ],
        "moral_good": ["it is always best to tell the truth", "mistakes can be fixed if you are honest"],
        "moral_bad": ["hiding the truth only makes things worse", "we should be careful with our things"],
        "summary_good": ["{H} breaks {his} {obj}, tells the truth, and gets help to fix it."],
        "summary_bad": ["{H} breaks {his} {obj}, and it cannot be fixed."],
    },
    "scared": {
        "talk": [
            '"I am scared," {h} whispered. "Me too," said {f}.',
            '"What was that?" asked {f}. "I don\'t know," said {h}.',
            '"Stay close to me," {h} said to {f}.',
        ],
        "problem": [
            "Suddenly, {h} heard a loud noise. Bang! {He} was very scared.",
            "Then {h} saw a big, dark shadow move behind the [tree|bush|fence]. {He} froze.",
            "That night, {h} heard a strange sound [outside the window|under the bed|in the garden]. Scratch, scratch!",
        ],
        "attempt": [
            "{H} wanted to run away, but {he} took a deep breath.",
            "{H} held {the_obj} tight and went to look, one small step at a time.",
            "{H} called for {w}. {W} came and held {his} hand.",
            '"Who is there?" {h} asked in a small voice.',
        ],
        "twist_good": [
            "It was only the {an}! It was playing [with a box|in the leaves|with a ball of string].",
            "It was {f}, playing a funny game of hide and seek!",
        ],
        "twist_bad": [
            "It was a big, angry goose, and it chased {h} all the way home!",
            "It was a bee, and it was not happy to see {h}.",
        ],
        "good": [
            "{H} laughed. There was nothing to be scared of after all.",
            "{H} was not scared anymore. {He} felt brave and happy.",
            "{H} smiled, and {he} and the {an} became good friends.",
        ],
        "bad": [
            "{H} ran away so fast that {he} fell into the mud. {He} went home dirty and sad.",
            "{H} was too scared to ever go back {to_place}.",
            "{H} ran and dropped {the_obj}. When {he} came back, it was gone.",
        ],
        "moral_good": ["things are not always as scary as they seem", "being brave can help you find the truth"],
        "moral_bad": ["running away does not make a fear go away", "it is good to stay calm when you are scared"],
        "summary_good": ["{H} is scared by a strange noise, but it turns out to be nothing bad."],
        "summary_bad": ["{H} gets scared and runs away, and things go wrong."],
    },
    "gift": {  # {rec}: who gets the gift, the parent or the friend
        "talk": [
            '"I hope this makes {rec_voc} happy," said {h}.',
            '"This will be the best surprise," {h} said with a smile.',
            '"Can I help?" asked {f}. "Yes, you can hold the paper," said {h}.',
        ],
        "problem": [
            "It was {rec}'s birthday soon, and {h} wanted to give {rec_him} something special.",
            "{H} wanted to make a gift for {rec}. {He} thought {the_obj} would make {rec_him} happy.",
            "{H} wanted to surprise {rec} with {the_obj}, but {he} had to keep it a secret.",
        ],
        "attempt": [
            "{H} worked hard all day. {He} wrapped {the_obj} in pretty paper with a bow.",
            "{He} hid the gift [under the bed|in the closet|behind a chair] so no one would see it.",
            "{He} asked {w} to help {him} make a card to go with it.",
            '"Shh! Don\'t tell," {h} whispered to {w}. "It is a surprise!"',
        ],
        "twist_good": [
            "{Rec} had made a gift for {h} too! They laughed and laughed.",
            "The {an} wanted to help, and it brought a pretty flower to go with the gift.",
        ],
        "twist_bad": [
            "The {an} found the gift and tore the paper into little bits!",
            "{Rec} found the gift before {h} was ready, and the surprise was spoiled.",
        ],
        "good": [
            "When {h} gave the gift, {rec} smiled and gave {him} a big hug.",
            "{Rec} loved the gift. It was the best surprise ever.",
            "{H} gave the gift to {rec}. Everyone was happy, and {h} felt warm inside.",
        ],
        "bad": [
            "On the way, {h} dropped the gift in a big puddle. It was ruined.",
            "When {h} opened the box, the gift was broken. {He} cried.",
            "The surprise was spoiled, and {h} felt very sad.",
        ],
        "moral_good": ["a gift made with love is the best gift of all", "giving makes you as happy as getting"],
        "moral_bad": ["things do not always go as we plan", "we should keep our things safe"],
        "summary_good": ["{H} makes a special surprise for {rec}, and it makes {rec_him} happy."],
        "summary_bad": ["{H} plans a surprise for {rec}, but it gets spoiled."],
    },
    "share": {
        "talk": [
            '"Please, can I have a turn?" asked {f}.',
            '"It is not fair!" cried {f}.',
            '"But it is mine," said {h}.',
        ],
        "problem": [
            "{F} saw {the_obj} and wanted to play with it. But {h} did not want to share.",
            "{F} asked, \"Can I have a turn?\" But {h} said no and held {the_obj} close.",
            "{F} wanted a turn with {the_obj}, but {h} held it close and said no.",
        ],
        "attempt": [
            "{F} was sad and sat down [alone|on the grass]. {H} saw {fhis} sad face.",
            "{H} thought about how {f} felt. {He} did not like to see {fhim} sad.",
            "{W} came over and said that playing together is more fun.",
            '"It is more fun if we play together," said {w}.',
        ],
        "twist_good": [
            "{F} had {a_obj} too, just like {h}'s! Now they had two to play with.",
            "{F} did not want to take {the_obj}. {Fhe} only wanted to play with {h}.",
        ],
        "twist_bad": [
            "While they pulled, the {an} ran off with {the_obj}!",
            "{F} let go, and {the_obj} flew into the pond.",
        ],
        "good": [
            "{H} gave {f} a turn. They played together and had lots of fun.",
            "{H} and {f} shared {the_obj}, and it was more fun than playing alone.",
            "{H} said sorry and shared. Now they were best friends.",
        ],
        "bad": [
            "They pulled so hard that {the_obj} broke. Now no one could play with it.",
            "{F} went home sad, and {h} had no one to play with.",
            "{The_obj} was lost, and neither of them could play with it anymore.",
        ],
        "moral_good": ["sharing makes everyone happy", "playing together is more fun than playing alone"],
        "moral_bad": ["if you do not share, you can lose a friend", "fighting over toys only brings trouble"],
        "summary_good": ["{H} and {f} fight over {a_obj}, then learn to share."],
        "summary_bad": ["{H} and {f} fight over {a_obj} until it is lost to both."],
    },
}

SLOTS: dict[str, Slot] = {}


def _register(name: str, texts: list[str]) -> None:
    SLOTS[name] = Slot.of(name, texts)


def _build_slots() -> None:
    for name, texts in [("opening", OPENINGS), ("weather", WEATHER), ("object", OBJECT_INTRO),
                        ("object_adj", OBJECT_ADJ), ("mood", MOOD), ("trait", TRAIT),
                        ("animal", ANIMAL_INTRO), ("fixture", FIXTURE), ("parent", PARENT_INTRO), ("fixture_plural", FIXTURE_PLURAL), ("pet", PET_INTRO), ("animal_plural", ANIMAL_PLURAL),
                        ("go_place", GO_PLACE), ("nature", NATURE), ("nature_unique", NATURE_UNIQUE),
                        ("visitor", VISITOR), ("play", PLAY), ("closing_good", CLOSING_GOOD),
                        ("closing_bad", CLOSING_BAD), ("goal", GOAL), ("verb_done", VERB_DONE),
                        ("snack", SNACK), ("body", BODY), ("body_bump", BODY_BUMP), ("body_plural", BODY_PLURAL),
                        ("animal_body", ANIMAL_BODY), ("conflict", CONFLICT), ("conflict_object", CONFLICT_OBJECT),
                        ("conflict_good", CONFLICT_GOOD), ("conflict_bad", CONFLICT_BAD),
                        ("twist_intro", TWIST_INTRO), ("end_verb_good", ENDING_VERB_GOOD),
                        ("end_verb_bad", ENDING_VERB_BAD), ("moral", MORAL_FORMS)]:
        _register(name, texts)
    for rel, texts in FRIEND_INTRO.items():
        _register(f"friend.{rel}", texts)
    for key, (setup, good, bad) in FORESHADOW.items():
        _register(f"fs.{key}.setup", setup)
        _register(f"fs.{key}.good", good)
        _register(f"fs.{key}.bad", bad)
    for plot, beats in PLOTS.items():
        for beat, texts in beats.items():
            if beat == "talk":
                _register(f"{plot}.talk", texts + DIALOGUE)
            elif not beat.startswith(("moral", "summary")):
                _register(f"{plot}.{beat}", texts)


_build_slots()


# --------------------------------------------------------------------------------------------
# The story world
# --------------------------------------------------------------------------------------------
@dataclass
class Person:
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
    if animal in WATER_ANIMALS:
        return rng.choice(("in the pond", "in the lake", "by the river")), "in an old net"
    if animal in BIRDS:
        return rng.choice(("in a tall tree", "in a nest by the window", "on the roof")), "in a bush"
    if animal in BUGS:
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
    pool = GIRLS if gender == "girl" else BOYS
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


class _World:
    """Everything one story is about, decided before any sentence is written."""

    def __init__(self, spec: PromptSpec, rng: random.Random):
        idx = vocab_index()
        self.rng = rng
        self.noun = idx.get(("noun", spec.noun)) or Word(spec.noun, "noun", "thing")
        self.verb = idx.get(("verb", spec.verb)) or Word(spec.verb, "verb", "intr")
        self.adj = idx.get(("adjective", spec.adjective)) or Word(spec.adjective, "adjective", "thing")
        self.features = set(spec.features)
        n = self.noun.word
        self.noun_role = "fixture" if n in FIXTURES else NOUN_ROLES.get(self.noun.category, "object")
        self.taken: set[str] = set()  # names in use, so every name has one owner
        hero_animal = self._cast_hero()
        self._cast_family(hero_animal)
        self._cast_others(hero_animal)
        self._props()
        self.plot = self._choose_plot()
        self.bad = "bad_ending" in self.features

    def _pet_name(self) -> str:
        name = self.rng.choice([p for p in PET_NAMES if p not in self.taken])
        self.taken.add(name)
        return name

    def _cast_hero(self) -> str:
        """A child, or sometimes an animal (an animal prompt noun may be the hero). Returns its kind."""
        rng, n = self.rng, self.noun.word
        if self.noun.category == "animal" and n in ANIMAL_HEROES and rng.random() < 0.35:
            hero_animal = n
        elif rng.random() < 0.22:
            hero_animal = rng.choice(ANIMAL_HEROES)
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
        par = n if n in PARENTS else rng.choice(("mom", "mom", "dad", "dad", "grandma", "grandpa"))
        self.par_word = par
        self.parent = _gendered("", PARENTS[par], "parent", par)
        if n in SIBLINGS:
            self.frel, fgender = n, SIBLINGS[n]
        elif n == "friend":
            self.frel, fgender = "friend", None
        else:
            self.frel = rng.choice(("friend", "friend", "friend", "sister", "brother"))
            fgender = SIBLINGS.get(self.frel)
        if hero_animal and self.frel == "friend":  # an animal's friend is another animal
            kind = rng.choice([a for a in ANIMAL_HEROES if a != hero_animal])
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
        elif n in BIRD_PARTS:
            self.animal = rng.choice(BIRDS)
        elif n in FUR_PARTS:
            self.animal = rng.choice(FURRY)
        else:
            self.animal = rng.choice([p for p in PETS if p != hero_animal])
        self.animal_name = self._pet_name()
        self.visitor: Person | None = None
        if cat == "person" and n not in PARENTS and n not in SIBLINGS and n != "friend":
            pron = VISITOR_GENDER.get(n) or rng.choice(("he", "she"))
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
            self.obj = rng.choice(DEFAULT_OBJECTS)
            self.obj_mass = False
            self.obj_cat = "toy"  # every default object is a toy or a carried thing
        self.place = n if cat == "place" else rng.choice(SETTINGS)
        self.food = n if cat == "food" else rng.choice(DEFAULT_FOODS)
        self.drink = n if n in DRINKS else rng.choice(DRINKS)
        self.giver = rng.choice([g for g in GIVERS if g != self.par_word])

    def _choose_plot(self) -> str:
        rng = self.rng
        if "conflict" in self.features and rng.random() < 0.35:
            return "share"
        options = ["lost", "want", "help", "scared", "gift", "want", "help"]
        if self.obj_cat not in NO_BREAK and not self.obj_mass:
            options.append("broken")
        return rng.choice(options)

    # -- the context every template is filled from -----------------------------------------
    def context(self) -> _Context:
        rng = self.rng
        h, f, par = self.hero, self.friend, self.parent
        he, him, his, hself = PRONOUNS[h.pronoun]
        fhe, fhim, fhis, _ = PRONOUNS[f.pronoun]
        phe, phim, phis, _ = PRONOUNS[par.pronoun]
        adj = self.adj
        a_kind = adj.category
        look = adj.word if a_kind == "thing" else rng.choice(LOOK_ADJS)
        trait = adj.word if a_kind == "trait" else rng.choice(TRAIT_ADJS)
        weather = adj.word if a_kind == "weather" else rng.choice(WEATHER_ADJS)
        tadj = adj.word if a_kind == "taste" else rng.choice(TASTE_ADJS)
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
        prep = "in" if self.place in IN_PLACES else "on" if self.place in ON_PLACES else "at"
        the_animal = f"the {self.animal}"
        home, stuck = _animal_home(self.animal, rng)
        helper = self.visitor if self.helper_is_visitor else par
        w_name = helper.name if helper is not par else f"{his} {self.par_word}"
        whe, whim, whis, _ = PRONOUNS[helper.pronoun]
        ctx = {
            "h": h.name, "he": he, "him": him, "his": his, "hself": hself, "kid": kid,
            "kids": "animals" if h.kind not in ("girl", "boy") else "kids",
            "a_kdesc": _a(kdesc), "age": rng.choice(AGES),
            "f": f.name, "fhe": fhe, "fhim": fhim, "fhis": fhis, "fkid": f.kind,
            "a_fkid": _a(f.kind), "frel": self.frel, "a_frel": _a(f"little {self.frel}")
            if self.frel in SIBLINGS and rng.random() < 0.5 else _a(self.frel),
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
            vadj = rng.choice(("kind", "friendly", "old", "nice", "tall", "happy"))
            ctx["a_visitor"] = _a(f"{vadj} {n.word}")
        return _Context(ctx)


class _Context(dict):
    """Template values; {He}, {The_obj}, {At_place} are made on first use from {he}, {the_obj}..."""

    def __missing__(self, key: str) -> str:
        value = self[key[0].lower() + key[1:]] if key[0].isupper() else None
        if value is None:
            raise KeyError(key)
        cap = value[:1].upper() + value[1:]
        self[key] = cap
        return cap


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------
class _Writer:
    """Fills slots for one story and keeps track of which template each feature used."""

    def __init__(self, world: _World, ctx: dict[str, str], rng: random.Random):
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
        parts = _compile_cached(text)
        rng = self.rng
        return "".join(p if p.__class__ is str else p[rng.randrange(len(p))] for p in parts).format_map(self.ctx)


@cache
def _compile_cached(text: str) -> tuple:
    return _compile(text)


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


def _paragraphs(world: _World, w: _Writer, facts: dict) -> list[list[str]]:
    """The story as paragraphs of sentences, beat by beat."""
    rng = w.rng
    feats = world.features
    plan = _Plan(feats=feats, plot=world.plot, ending="bad" if world.bad else "good",
                 fs_key=rng.choice(tuple(FORESHADOW)) if "foreshadowing" in feats else None,
                 fs_early=rng.random() < 0.5, friend_early=rng.random() < 0.5, ft={})
    paras = [_intro(world, w, plan, facts), _setup(world, w, plan), _middle(world, w, plan, facts)]
    paras.extend(_ending(world, w, plan, facts))
    facts["feature_text"] = plan.ft
    return paras


def _friend_slot(world: _World) -> str:
    return f"friend.{'sibling' if world.frel != 'friend' else 'friend'}"


def _intro(world: _World, w: _Writer, plan: _Plan, facts: dict) -> list[str]:
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
    animal_slot = "pet" if world.animal in PETS and rng.random() < 0.5 else "animal"
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


def _setup(world: _World, w: _Writer, plan: _Plan) -> list[str]:
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
        p2.append(w.say("nature_unique" if world.noun.word in UNIQUE_NATURE else "nature"))
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
        p2.append(w.fill("{The_obj} was {tadj}, and {h} [could not wait|wanted to share it]."))
    if "conflict" in plan.feats and plan.plot != "share":
        plan.ft["conflict"] = w.say("conflict")
        p2.append(plan.ft["conflict"])
    if plan.fs_key and not plan.fs_early:
        plan.ft["foreshadowing_setup"] = w.say(f"fs.{plan.fs_key}.setup")
        p2.append(plan.ft["foreshadowing_setup"])
    return p2


def _body_beats(world: _World, w: _Writer) -> list[str]:
    """A body-part prompt noun: a small accident to the hero, or to the animal for wings and tails."""
    part = world.noun.word
    if part in BIRD_PARTS | FUR_PARTS:
        return [w.say("animal_body")]
    out = [w.say("body_bump" if part in BUMPABLE else "body")]
    if w.rng.random() < 0.5 and part in BODY_PLURAL_SPECIAL:
        out.append(w.fill(BODY_PLURAL_SPECIAL[part]))
    elif w.rng.random() < 0.5 and part in WIGGLY:
        out.append(w.say("body_plural"))
    return out


def _middle(world: _World, w: _Writer, plan: _Plan, facts: dict) -> list[str]:
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


def _ending(world: _World, w: _Writer, plan: _Plan, facts: dict) -> list[list[str]]:
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


def _regroup(paras: list[list[str]], rng: random.Random) -> list[list[str]]:
    """Vary the paragraph breaks (3 to 6 paragraphs) so their position is not a fixed signal."""
    r = rng.random()
    if r < 0.2:
        return [paras[0] + paras[1]] + paras[2:]
    if r < 0.5 and len(paras[2]) >= 4:
        mid = len(paras[2]) // 2
        return paras[:2] + [paras[2][:mid], paras[2][mid:]] + paras[3:]
    return paras


def _text(paras: list[list[str]]) -> str:
    return "\n".join(" ".join(p) for p in paras if p)


MIN_WORDS, MAX_WORDS = 100, 350
PADDING = [
    "The birds sang in the trees.",
    "{H} smiled and looked around.",
    "It was a nice day to be outside.",
    "{H} took a deep breath and looked at {the_obj}.",
    "{F} came too, because {fhe} did not want to miss the fun.",
    "They walked and talked and laughed.",
    "The {an} watched them with its little eyes.",
    "{H} held {the_obj} close.",
]


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
        world = _World(spec, rng)
        ctx = world.context()
        w = _Writer(world, ctx, rng)
        facts: dict = {}
        paras = _paragraphs(world, w, facts)
        self._pad(paras, w, rng)
        text = _text(_regroup(paras, rng))
        facts.update(self._facts(world, ctx))
        summary = w.fill(rng.choice(PLOTS[world.plot][f"summary_{facts['ending']}"]))
        return Story(id=spec.id, text=text, source=self.source, prompt=spec.render(),
                     words=spec.words, features=list(spec.features), summary=summary, facts=facts)

    @staticmethod
    def _pad(paras: list[list[str]], w: _Writer, rng: random.Random) -> None:
        """Add small, harmless sentences to the middle until the story reaches MIN_WORDS."""
        n_words = sum(len(s.split()) for p in paras for s in p)
        extra = iter(rng.sample(PADDING, len(PADDING)))
        while n_words < MIN_WORDS:
            sentence = w.fill(next(extra))
            paras[1].append(sentence)
            n_words += len(sentence.split())

    @staticmethod
    def _facts(world: _World, ctx: dict[str, str]) -> dict:
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


def generate_stories(n: int, seed: int = 0, progress: bool = False) -> list[Story]:
    """`n` storyteller stories for prompts sampled with `seed` (the storyteller uses the same seed)."""
    return Storyteller(seed).generate(n, seed=seed, progress=progress)
