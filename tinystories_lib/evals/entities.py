"""Who a story is about: names found by capitalisation, and whether a completion keeps them.

`entity_report` / `entity_consistency` compare a completion with its beginning: the names it keeps or
brings in, and whether its gendered pronouns agree with a single named character. `common_words` learns
from a corpus which capitalised words are only sentence openers ("Suddenly"), so they are not taken for
names. The offline grader (`evals.offline`) scores part of its consistency with it and the manipulation
check (`evals.manipulation`) finds the name to swap with it; the stop lists (`_STARTERS`) are shared
with `evals.text_metrics`, which asks whether a completion restarts instead of finishing a sentence.

`text_entities` / `text_facts` read what a plain story (no storyteller facts) is about from its own text:
names, the gender or kind the text gives them, and the prompt vocabulary's nouns it uses with a
determiner (objects, places, animals, people). `text_facts` shapes them like `Story.facts`, so the
probes (`evals.probes`), the manipulation check and the entity heads (`evals.interpret`) run on real
TinyStories with the rules they use on storyteller stories; storyteller facts stay the exact source
wherever they exist.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from tinystories_lib.stories.words import base_word, capitalised, sentences, split_words, word_spans, words

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
_FAMILY = {"mom", "mommy", "mum", "mummy", "mother", "dad", "daddy", "father", "mama", "papa", "grandma",
           "granny", "grandpa", "grandmother", "grandfather", "nana"}
# Also not names: family roles ("Mom" is a role; bringing in Mom renames no one), days and holidays.
_NOT_NAMES = _STARTERS | _FAMILY | set(
    "monday tuesday wednesday thursday friday saturday sunday christmas halloween easter".split())
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


# --- entities found in the text itself ------------------------------------------------------------

_TITLES = {"mr", "mrs", "ms", "miss", "sir", "dr", "lady", "king", "queen", "prince", "princess", "uncle", "aunt"}
_GIRL_WORDS = {"girl", "sister", "daughter", "lady", "woman", "princess", "queen", "mom", "mommy", "mother"}
_BOY_WORDS = {"boy", "brother", "son", "man", "prince", "king", "dad", "daddy", "father"}
_DETERMINERS = {"the", "a", "an", "his", "her", "its", "their", "my", "your", "our"}
OBJECT_CATEGORIES = ("toy", "thing", "vehicle", "clothes", "food")  # what counts as "the object" of a story
GENDER_PRONOUNS = {"girl": ("she", "her", "her"), "boy": ("he", "him", "his")}  # subject, object, possessive


@functools.lru_cache(maxsize=1)
def noun_categories() -> dict[str, str]:
    """Noun -> category for the prompt vocabulary's nouns; the storyteller's settings count as places."""
    from tinystories_lib.stories.prompts import vocab_index
    from tinystories_lib.stories.storyteller import lexicon

    cats = {w: entry.category for (pos, w), entry in vocab_index().items() if pos == "noun"}
    cats.update({w: "person" for w in _FAMILY})
    cats.update({w: "place" for w in lexicon().settings})
    return cats


@dataclass
class TextEntities:
    """What a story's text shows it is about. `names` and every list of `nouns` (category -> nouns) are
    ordered by mentions, most first (ties: first mentioned first); `kinds` gives a name the gender
    ("girl", "boy") or kind ("animal") the text tells; `mentions` counts every name and noun."""

    names: list[str]
    kinds: dict[str, str]
    nouns: dict[str, list[str]]
    mentions: Counter = field(default_factory=Counter)


def _kind_word(word: str) -> str | None:
    if word in _GIRL_WORDS:
        return "girl"
    if word in _BOY_WORDS:
        return "boy"
    return "animal" if noun_categories().get(word) == "animal" else None


def _kind_in(ws) -> str | None:
    """The kind of the first of `ws` that tells one ("a smart cat" -> "animal")."""
    return next((k for k in map(_kind_word, ws) if k), None)


def _name_kinds(text: str, spans: list[tuple[int, int, str]], names: set[str]) -> dict[str, str]:
    """The kind ("girl", "boy", "animal") the text gives a name where it introduces it: "a little girl
    named Lily", "Whiskers, a gentle dog", "Tom was a happy boy", "a silly cow. His name was Fluffy",
    "Meet Spot. He is a happy bear"."""
    low = [w.lower() for _, _, w in spans]
    kinds: dict[str, str] = {}

    def gap(j: int) -> str:  # the text between word j and word j + 1
        return text[spans[j][1] : spans[j + 1][0]]

    def is_a(j: int) -> bool:  # "was a", "is an": a copula then an article at word j
        return low[j : j + 1] in (["was"], ["is"]) and low[j + 1 : j + 2] in (["a"], ["an"])

    for i, (_, _, w) in enumerate(spans):
        name = base_word(w)
        if name not in names or name in kinds:
            continue
        kind = None
        if i >= 2 and low[i - 1] in ("named", "called"):
            kind = _kind_word(low[i - 2])
        if kind is None and i + 1 < len(spans) and "," in gap(i) and low[i + 1] in ("a", "an"):
            kind = _kind_in(low[i + 2 : i + 5])
        if kind is None and is_a(i + 1):
            kind = _kind_in(low[i + 3 : i + 6])
        if kind is None and i >= 3 and low[i - 2] == "name" and low[i - 1] in ("was", "is"):
            kind = _kind_in(reversed(low[max(0, i - 13) : i - 3]))
        if kind is None:
            nxt = next((j + 1 for j in range(i, min(len(spans) - 1, i + 20)) if any(c in ".!?" for c in gap(j))), None)
            if nxt is not None and low[nxt] in ("he", "she", "it") and is_a(nxt + 1):
                kind = _kind_in(low[nxt + 3 : nxt + 6])
        if kind:
            kinds[name] = kind
    return kinds


def _pronoun_genders(text: str, names: set[str]) -> dict[str, str]:
    """A name's gender from the pronouns of the sentences where it is the only character named (and of
    the next one, when that names no one): clearly more she/her than he/him/his, or the other way round."""
    people = {w for w, c in noun_categories().items() if c == "person"}
    counts: dict[str, list[int]] = {}
    sents = [({base_word(w) for w in words(t, lower=False)}, words(t)) for t in sentences(text)]
    for i, (cased, low) in enumerate(sents):
        here = cased & names
        if len(here) != 1 or people & {base_word(w) for w in low}:
            continue
        toks = list(low)
        if i + 1 < len(sents) and not sents[i + 1][0] & names and not people & set(sents[i + 1][1]):
            toks += sents[i + 1][1]
        f, m = _gender_counts(toks)
        c = counts.setdefault(next(iter(here)), [0, 0])
        c[0] += f
        c[1] += m
    return {n: "girl" if f > 2 * m else "boy" for n, (f, m) in counts.items()
            if max(f, m) >= 2 and (f > 2 * m or m > 2 * f)}


def _determiner_within_three(text: str, spans: list[tuple[int, int, str]], i: int) -> bool:
    """Whether word i has a determiner among the three words before it, with only words, spaces, commas
    and hyphens between ("the kite", "a big, red kite", "his toy car")."""
    for j in range(i - 1, max(-1, i - 4), -1):
        gap = text[spans[j][1] : spans[i][0]]
        if not all(ch.isalpha() or ch in " ,-'’" for ch in gap):
            return False
        if spans[j][2] in _DETERMINERS:
            return True
    return False


def text_entities(text: str, known_words: set[str] | None = None, min_mentions: int = 2) -> TextEntities:
    """Names (capitalised words that are not sentence openers, common words, roles or titles, nor ever
    after an article: see `entity_report`; `known_words`, e.g. `common_words` of the corpus, tells more
    openers apart), mentioned at least `min_mentions` times (an exclamation like "Yuck!" is rarely repeated, a character
    is), and the prompt vocabulary's nouns the text uses with a determiner (family words like "Mom" count
    as used anywhere). A plain story's answer to who and what it is about, without a tagger."""
    toks = split_words(text, lower=False)
    lower_seen = {t for t in toks if t.islower()} | (known_words or set())
    found = {n for n in _names(toks, None, lower_seen) if n.lower() not in _TITLES}
    cased = word_spans(text, lower=False)
    mentions: Counter[str] = Counter()
    first: dict[str, int] = {}
    after_article = set()  # "the Earth", "The End", "a Bear": a capitalised noun, not a name
    for i, (_, _, w) in enumerate(cased):
        if (name := base_word(w)) in found:
            mentions[name] += 1
            first.setdefault(name, i)
            if i and cased[i - 1][2].lower() in ("the", "a", "an"):
                after_article.add(name)
    found = {n for n in found if mentions[n] >= min_mentions and n not in after_article}
    kinds = _name_kinds(text, cased, found)
    kinds.update({n: g for n, g in _pronoun_genders(text, found).items() if n not in kinds})
    cats, used = noun_categories(), set()
    spans = word_spans(text)
    for i, (_, _, w) in enumerate(spans):
        noun = base_word(w)
        if noun not in cats or (noun.capitalize() in found and not cased[i][2].islower()):
            continue  # a capitalised "Rose" the text uses as a name is the name
        mentions[noun] += 1
        first.setdefault(noun, i)
        if noun not in used and (noun in _FAMILY or _determiner_within_three(text, spans, i)):
            used.add(noun)
    order = sorted(first, key=lambda x: (-mentions[x], first[x]))
    nouns: dict[str, list[str]] = {}
    for noun in order:
        if noun in used:
            nouns.setdefault(cats[noun], []).append(noun)
    return TextEntities([n for n in order if n in found], kinds, nouns, mentions)


def text_facts(text: str, known_words: set[str] | None = None) -> dict:
    """`text_entities` shaped like storyteller facts, with `"found_in_text": True`: "characters" are the
    names (the most mentioned first, as "hero"; the others "friend"; pronouns where the gender is known)
    and then the people and animals the text mentions; "object" is its most mentioned object noun,
    "place", "animal" and "food" the most mentioned of each (None when there is none), "animal_name" the
    first name the text gives an animal."""
    e = text_entities(text, known_words)
    chars = []
    for i, name in enumerate(e.names):
        kind = e.kinds.get(name, "")
        c = {"name": name, "gender": kind if kind in GENDER_PRONOUNS else "none" if kind == "animal" else "unknown",
             "role": "hero" if i == 0 else "friend", "kind": kind}
        if kind in GENDER_PRONOUNS:
            c.update(zip(("pronoun", "object_pronoun", "possessive"), GENDER_PRONOUNS[kind]))
        chars.append(c)
    for cat, role in (("person", "person"), ("animal", "animal")):
        chars += [{"name": n, "gender": "unknown", "role": role, "kind": n} for n in e.nouns.get(cat, [])]
    objects = sorted((n for c in OBJECT_CATEGORIES for n in e.nouns.get(c, [])),
                     key=lambda n: -e.mentions[n])  # stable: ties stay in order of categories, then first use
    obj = objects[0] if objects else None
    food = next((n for n in e.nouns.get("food", []) if n != obj), None)
    return {"found_in_text": True, "characters": chars, "hero": e.names[0] if e.names else None, "object": obj,
            "place": next(iter(e.nouns.get("place", [])), None), "animal": next(iter(e.nouns.get("animal", [])), None),
            "food": food, "animal_name": next((n for n in e.names if e.kinds.get(n) == "animal"), None)}


def known_words_of(texts: Iterable[str], limit: int = 5000) -> set[str]:
    """`common_words` of the first `limit` texts: enough to tell sentence openers from names."""
    return common_words(t for _, t in zip(range(limit), texts))
