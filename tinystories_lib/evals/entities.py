"""Who a story is about: names found by capitalisation, and whether a completion keeps them.

`entity_report` / `entity_consistency` compare a completion with its beginning: the names it keeps or
brings in, and whether its gendered pronouns agree with a single named character. `common_words` learns
from a corpus which capitalised words are only sentence openers ("Suddenly"), so they are not taken for
names. The offline grader (`evals.offline`) scores with it and the manipulation check
(`evals.manipulation`) finds the name to swap with it; the stop lists (`_STARTERS`) are shared with
`evals.text_metrics`, which asks whether a completion restarts instead of finishing a sentence.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from tinystories_lib.stories.words import base_word, capitalised, split_words

# --- names and pronouns ---------------------------------------------------------------------------

# Capitalised words that open sentences rather than name anyone: pronouns, function words, adverbs, and
# the words children's stories most often start a sentence or a line of speech with ("Come", "Big").
_STARTERS = set(
    """a an the this that these those some any every each all no not i me my mine you your we us our they
    them their he him his she her it its and but or so then when while because if after before once one two
    three first next last finally soon later suddenly yesterday today tomorrow tonight now there here yes oh
    wow hello hi hey bye goodbye please thank thanks okay ok look let let's what where why how who which
    can could will would should may might must do does did don't is was are were be have has had as at in
    on of to for with from by up down out into over under about just also very too only even still again
    everyone everybody someone somebody nobody nothing something everything inside outside together maybe
    sometimes always never come go run stop wait help look see listen watch hurry try sorry sure great good
    bad big little small tiny happy sad yay hooray snow rain wind sun night morning""".split()
)
# Also not names: family roles ("Mom" is a role; bringing in Mom renames no one), days and holidays.
_NOT_NAMES = _STARTERS | set(
    """mom mommy mum mummy mother dad daddy father mama papa grandma granny grandpa grandmother
    grandfather nana monday tuesday wednesday thursday friday saturday sunday christmas halloween
    easter""".split()
)
_SENTENCE_OPENERS = {".", "!", "?", '"', "“", ":", "…"}
_FEMALE = {"she", "her", "hers", "herself"}
_MALE = {"he", "him", "his", "himself"}


def common_words(stories: Iterable[str]) -> set[str]:
    """Lowercase words that the stories write in lower case more often than capitalised in mid-sentence:
    "guess", "sun", "riding" are, "lily" and "max" are not. Lets `entity_report` see that a capitalised
    word opening a sentence is most likely not a name."""
    lower: Counter[str] = Counter()
    capital_mid: Counter[str] = Counter()
    for text in stories:
        prev = None
        for tok in split_words(text, lower=False):
            if tok.islower():
                lower[tok] += 1
            elif capitalised(tok) and prev is not None and prev not in _SENTENCE_OPENERS:
                capital_mid[base_word(tok).lower()] += 1
            prev = tok
    return {w for w, n in lower.items() if n > capital_mid[w]}


def _names(toks: list[str], prev: str | None, lower_seen: set[str]) -> list[str]:
    """Capitalised words that look like names. A capitalised word at the start of a sentence is ambiguous
    ("Suddenly", "Lily"), so there it counts only if it is not in `lower_seen` (words known in lower case).
    Contractions ("I'm", "Don't") never count."""
    found = []
    for tok in toks:
        base = base_word(tok)
        at_start = prev is None or prev in _SENTENCE_OPENERS
        if (capitalised(base) and "'" not in base and base.lower() not in _NOT_NAMES
                and not (at_start and base.lower() in lower_seen)):
            found.append(base)
        prev = tok
    return found


def _gender_counts(toks: list[str]) -> tuple[int, int]:
    low = [t.lower() for t in toks]
    return sum(t in _FEMALE for t in low), sum(t in _MALE for t in low)


@dataclass
class EntityReport:
    """What `entity_consistency` saw. `score` is None when there was nothing to check."""

    names_beginning: list[str]
    names_kept: list[str]
    names_new: list[str]
    gender: str | None
    pronouns_agree: int
    pronouns_total: int
    score: float | None


def entity_report(beginning: str, completion: str, known_words: set[str] | None = None) -> EntityReport:
    """Prompt-entity consistency, in two parts, each 0..1, averaged over the parts that apply:

    - names: of the distinct names the completion uses, the share that the beginning introduced
      (kept / (kept + new)). Applies when the beginning has names and the completion uses any.
    - pronouns: when the beginning has at most one name and all its gendered pronouns are of one gender
      (she/her or he/him), the share of the completion's gendered pronouns of that gender. Applies when
      the completion uses any.

    Limits: names are found by capitalisation with a stop list, so an unusual capitalised word at a
    sentence start can pass for a name; a new character the story legitimately brings in counts as a
    conflict; pronouns are not resolved to people, which is why the pronoun part is skipped when the
    beginning has two or more names. It checks surface consistency only, not whether the story makes sense.
    `known_words` (e.g. `NgramIndex.common_words`) makes name finding better: a capitalised word opening a
    sentence is not taken for a name when it is a common lowercase word of the corpus.
    """
    b_toks, c_toks = split_words(beginning, lower=False), split_words(completion, lower=False)
    lower_seen = {t for t in b_toks + c_toks if t.islower()} | (known_words or set())
    b_names = list(dict.fromkeys(_names(b_toks, None, lower_seen)))
    c_names = list(dict.fromkeys(_names(c_toks, b_toks[-1] if b_toks else None, lower_seen)))
    kept = [n for n in c_names if n in b_names]
    new = [n for n in c_names if n not in b_names]
    parts = []
    if b_names and c_names:
        parts.append(len(kept) / len(c_names))

    bf, bm = _gender_counts(b_toks)
    gender = "female" if bf and not bm else "male" if bm and not bf else None
    cf, cm = _gender_counts(c_toks)
    agree = cf if gender == "female" else cm if gender == "male" else 0
    if gender and len(b_names) <= 1 and cf + cm:
        parts.append(agree / (cf + cm))

    score = sum(parts) / len(parts) if parts else None
    return EntityReport(b_names, kept, new, gender, agree, cf + cm, score)


def entity_consistency(beginning: str, completion: str, known_words: set[str] | None = None) -> float:
    """0..1: how well the completion keeps the beginning's names and pronoun gender (see `entity_report`
    for exactly what is measured). 1.0 when there is nothing to contradict."""
    score = entity_report(beginning, completion, known_words).score
    return 1.0 if score is None else score
