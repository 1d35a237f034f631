"""The offline storyteller: a procedural writer of short children's stories from the paper's prompts.

With no network and no LLM, this is what the smoke pipeline and every workshop trains tiny models
on: a labelled stand-in for real TinyStories (``Story.source == "storyteller"``). It is built to show
the paper's emergence order: grammar (inflections, agreement, a/an, pronouns that fit their
referents), then consistency (a small story world whose names, pronouns, objects and places are
reused across paragraphs), then creativity (a prompt's three words and its features steer the plot,
with many templates per slot).

How a story is made:

1. ``world.World`` casts the story from the prompt and a per-story RNG: a hero (child or animal,
   with name, gender, pronouns), a friend or sibling, a parent, sometimes a visitor, an animal, an
   object, a place, a food. The prompt noun fills the role its category suits (a toy becomes the
   object, a place the setting, a person a visitor, a body part an accident).
2. A plot (lost, want, help, broken, scared, gift, share) supplies the problem, the attempt and a
   good or bad ending; the features add beats (dialogue, conflict, a twist, a foreshadowing setup
   and its payoff, a moral). ``plot`` assembles the paragraphs.
3. Each beat picks a template from its slot (``templates``); ``[a|b]`` inside a template is a free
   choice of wording. Templates that contain quotation marks are used only when "dialogue" is asked
   for, so every feature is visible in the text exactly when the prompt asks for it.

``Story.facts`` records the cast (names, genders, pronouns, roles), the object, place, animal, plot,
ending and the text each feature produced, for exact probes of context tracking (``teller``).

The engine is code; the words and sentences are data, in ``data/*.yaml`` next to this file: the
word lists (``words.yaml``, read through :func:`lexicon`), the templates outside the plots
(``templates.yaml``), the plots (``plots.yaml``) and the foreshadowing pairs (``foreshadowing.yaml``).
Each is read once per process.
"""

from tinystories_lib.stories.storyteller.lexicon import Lexicon, lexicon
from tinystories_lib.stories.storyteller.plot import MAX_WORDS, MIN_WORDS
from tinystories_lib.stories.storyteller.teller import Storyteller, tell_stories

__all__ = ["MAX_WORDS", "MIN_WORDS", "Lexicon", "Storyteller", "tell_stories", "lexicon"]
