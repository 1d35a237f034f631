"""Checks of one LLM-written story before it joins the corpus: `StoryValidator`.

A reply is rejected before any story check when the server cut it off at `max_tokens` (`cut_off`) or
it is all reasoning (`reasoning_only`: `reply_problem`); a reasoning model's `<think>` block before the
story is dropped (`client.strip_reasoning`). A story is rejected (with one of `REJECT_REASONS`) when it
is empty, a refusal or chatty meta-text around the story, too short or too long, missing one of the prompt's words in every form
(`missing_words`), or an exact or near copy of a story accepted earlier. Kept apart from the request
loops (`llm.runner`, `llm.batch`, `llm.process_shards`) because all of them validate alike, and from the
client because the checks are about stories: words are `stories.words`'s, near copies
`stories.cleaning.NearDuplicateIndex`'s.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from tinystories_lib.stories.cleaning import NearDuplicateIndex
from tinystories_lib.stories.words import base_word, uses_phrase, uses_word, word_forms
from tinystories_lib.stories.words import words as text_words  # `words` names the prompt's words here


@functools.lru_cache(maxsize=16)  # a story is tokenized by the word check, the digest, then add(): once
def _tokens(text: str) -> tuple[str, ...]:
    """The text's lower-cased words, possessives dropped ("Tom's" -> "tom")."""
    return tuple(map(base_word, text_words(text)))


def missing_words(text: str, words: dict[str, str], forms: Callable[[str], set[str]] = word_forms) -> list[str]:
    """The prompt words (as "slot:word") that the text does not use in any form. A multi-word entry ("ice
    cream") must appear as that phrase, its last word in any form."""
    tokens = _tokens(text)
    token_set = set(tokens)
    missing = []
    for slot, word in words.items():
        if " " in word.strip():
            ok = uses_phrase(list(tokens), word)
        elif forms is word_forms:
            ok = uses_word(token_set, word)  # with the forms cached per word
        else:
            ok = not token_set.isdisjoint(forms(word))
        if not ok:
            missing.append(f"{slot}:{word}")
    return missing


# ------------------------------------------------------------------------------------ validation

# A model declining or talking about itself instead of writing. Only the opening counts for phrases a
# story character could say ("I'm sorry," said Tom), anywhere for phrases no character would.
_REFUSAL_START = re.compile(
    r"^\W*(?:(?:i'm|i am) sorry,? but\b|i apologi[sz]e\b|unfortunately, i\b|"
    r"i (?:cannot|can't|can not|won't|am unable to|'m unable to) "
    r"(?:write|create|generate|help|assist|fulfil|comply|provide|produce|do that|complete))",
    re.IGNORECASE,
)
_REFUSAL_ANYWHERE = re.compile(r"\b(as an ai\b|as a language model|i'm an ai|i am an ai)", re.IGNORECASE)
# Chatty wrappers around the story rather than the story itself.
_META_START = re.compile(
    r"^\W*(sure|certainly|of course|absolutely|okay|ok|alright)\b[\s!,.:]|"
    r"^\W*here('s| is| are) (a|an|the|your|my)\b|^\W*(title|story)\s*:",
    re.IGNORECASE,
)
_META_ANYWHERE = re.compile(
    r"\b(i hope you (enjoy|like)|let me know if|here is a (short )?story|here's a (short )?story)",
    re.IGNORECASE,
)
# Either kind at once: a good story (nearly all of them) is then scanned once from its start and once
# throughout, not twice each.
_SUSPECT_START = re.compile(f"(?:{_REFUSAL_START.pattern})|(?:{_META_START.pattern})", re.IGNORECASE)
_SUSPECT_ANYWHERE = re.compile(f"(?:{_REFUSAL_ANYWHERE.pattern})|(?:{_META_ANYWHERE.pattern})", re.IGNORECASE)


@dataclass
class StoryValidator:
    """Checks one generated story; remembers accepted ones for duplicate checks.

    `check` returns None for a good story, else (reason, detail) with reason one of REJECT_REASONS.
    `near_dup_threshold=None` turns the MinHash check off; `forms` maps a word to its accepted forms
    (default: `word_forms`, rule based; pass a vocabulary's own inflection table if it has one)."""

    min_words: int = 40
    max_words: int = 1500
    near_dup_threshold: float | None = 0.8
    num_perm: int = 128
    forms: Callable[[str], set[str]] = word_forms
    _exact: set = field(default_factory=set, init=False, repr=False)
    _near: NearDuplicateIndex | None = field(default=None, init=False, repr=False)

    def __post_init__(self):
        if self.near_dup_threshold is not None:
            self._near = NearDuplicateIndex(self.near_dup_threshold, self.num_perm)

    @staticmethod
    def _digest(text: str) -> str:
        return hashlib.sha1(" ".join(_tokens(text)).encode()).hexdigest()

    def check(self, text: str, words: dict[str, str] | None) -> tuple[str, str] | None:
        head = text[:300]
        if not text.strip():
            return "empty", ""
        if _SUSPECT_START.search(head) or _SUSPECT_ANYWHERE.search(text):  # one pass each; which one below
            if _REFUSAL_START.search(head) or _REFUSAL_ANYWHERE.search(text):
                return "refusal", head[:80]
            if _META_START.search(head) or _META_ANYWHERE.search(text):
                return "meta_text", head[:80]
        n = len(text.split())
        if n < self.min_words:
            return "too_short", f"{n} words < {self.min_words}"
        if n > self.max_words:
            return "too_long", f"{n} words > {self.max_words}"
        missing = missing_words(text, words or {}, self.forms)
        if missing:
            return "missing_words", ", ".join(missing)
        return self.check_duplicate(text)

    def check_duplicate(self, text: str) -> tuple[str, str] | None:
        """Only the exact and near-duplicate checks against the stories accepted so far."""
        if self._digest(text) in self._exact:
            return "exact_duplicate", ""
        if self._near is not None and self._near.similar(text):
            return "near_duplicate", f"Jaccard >= {self.near_dup_threshold}"
        return None

    def add(self, story_id: str, text: str) -> None:
        """Remember an accepted story, so later copies of it are rejected."""
        self._exact.add(self._digest(text))
        if self._near is not None:
            self._near.add(story_id, text)


def reply_problem(text: str, answer: str, finish_reason: str | None) -> tuple[str, str] | None:
    """(reason, detail) when a reply cannot be a finished text whatever it says, else None. `answer` is
    `strip_reasoning(text)`."""
    if finish_reason == "length":  # the end is missing: no check on the text could tell
        return "cut_off", "the reply stopped at the output-token cap (finish_reason=length): raise max_tokens"
    if not answer and text.strip():
        return "reasoning_only", "the reply was all reasoning, no answer after it: raise max_tokens"
    return None


# With summaries, a story whose summary reply is cut off (or all reasoning) is rejected as "summary_<reason>".
REJECT_REASONS = (
    "cut_off", "reasoning_only", "empty", "refusal", "meta_text", "too_short", "too_long", "missing_words",
    "exact_duplicate", "near_duplicate",
)
# What each reason means, for reports (notebook 01's table of rejects).
REJECT_MEANINGS = {
    "cut_off": "stopped at the output-token cap (finish_reason: length): raise max_tokens",
    "reasoning_only": "all reasoning (<think>...), no story after it: raise max_tokens",
    "empty": "no text",
    "refusal": "the model declined or spoke as an AI",
    "meta_text": "chat around the story (\"Sure! Here is...\")",
    "too_short": "fewer words than a story",
    "too_long": "more words than a short story",
    "missing_words": "does not use one of the prompt's words in any form",
    "exact_duplicate": "the same text as a story accepted before",
    "near_duplicate": "nearly the same as a story accepted before (MinHash)",
    "summary_cut_off": "its summary stopped at the token cap",
    "summary_reasoning_only": "its summary was all reasoning",
    "summary_empty": "its summary was empty",
}
