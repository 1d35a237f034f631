"""Words: the one place that says what a word, a sentence end and a word's inflections are.

    split_words(text)   words and punctuation marks, in order ("Tom's bed." -> "tom's", "bed", ".")
    words(text)         the words alone (letters and inner apostrophes), for counting and matching
    word_spans(text)    the same words with where each one is in the text
    base_word(word)     a word without its possessive ("Tom's" -> "Tom")
    capitalised(word)   written with a capital first letter ("Tom", not "tom", "TOM" or "I")
    find_word(text, w)  where a word or phrase occurs as whole words, for swapping or cutting at it
    SENTENCE_END        where a sentence ends: . ! or ? with its closing quote (sentences(text) splits)
    stem(word)          a light suffix stripper, for matching "likes" with "liked"
    word_forms(word)    a word's inflections (rules, a table of irregulars, the prompt vocabulary's own)
    uses_word(...)      whether a text uses a word in some form (uses_phrase for "ice cream")
    content_words(text) the stems of the words that carry a text's topic (STOP_WORDS left out)

Every module that splits text into words (grading, generation checks, probes, diversity,
interpretability, corpus statistics) calls these, so "a word" means the same thing everywhere.
Curly apostrophes count as straight ones: "Tom’s" and "Tom's" are the same word.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterable

log = logging.getLogger(__name__)

# A token: letters/digits with inner apostrophes ("don't", "Tom's"); any other non-space is a mark.
_TOKEN_RE = re.compile(r"\w+(?:['’]\w+)*|[^\w\s]")
# A word: letters with inner apostrophes; with digits, "3" and "R2D2" are words too. Underscores, which
# `\w` would take, are not letters: "snake_case" is two words.
_WORD_RE = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)*")
_WORD_DIGITS_RE = re.compile(r"[^\W_]+(?:'[^\W_]+)*")

# Where a sentence of a story ends: . ! or ? with its closing quote, before a space or the end.
SENTENCE_END = re.compile(r"[.!?][\"'”’]?(?=\s|$)")


def _plain_apostrophes(text: str) -> str:
    return text.replace("’", "'")  # one character for one: offsets into the text stay right


def split_words(text: str, lower: bool = True) -> list[str]:
    """Words and punctuation marks, each a token of its own ("bed." -> "bed", ".")."""
    toks = _TOKEN_RE.findall(_plain_apostrophes(text))
    return [t.lower() for t in toks] if lower else toks


def words(text: str, lower: bool = True, digits: bool = False) -> list[str]:
    """The words of a text: letters with inner apostrophes ("don't", "Tom's"), no marks, and no digits
    unless `digits` (for matching where a number is as good as a word: answers, duplicate checks)."""
    rx = _WORD_DIGITS_RE if digits else _WORD_RE
    # Lower-casing the text before the search rather than each word after it: faster, which counts in the
    # generation loop that checks every story as it arrives, and the same words but for the rare letter
    # whose lower case is two characters ("İ").
    return rx.findall(_plain_apostrophes(text).lower() if lower else _plain_apostrophes(text))


def word_spans(text: str, lower: bool = True, digits: bool = False) -> list[tuple[int, int, str]]:
    """`words`, each with where it is: (start, end, word), `text[start:end]` being the word as written
    (with its own apostrophe)."""
    rx = _WORD_DIGITS_RE if digits else _WORD_RE
    return [(m.start(), m.end(), m.group().lower() if lower else m.group())
            for m in rx.finditer(_plain_apostrophes(text))]


def base_word(word: str) -> str:
    """A word without its possessive ("Tom's" -> "Tom")."""
    return word[:-2] if word.endswith(("'s", "'S")) else word


def capitalised(word: str) -> bool:
    """Whether a word is written with a capital first letter and not in capitals throughout: "Tom" and
    "McGee" are, "tom", "TOM" and "I" are not. How names are told from other words without a tagger."""
    return word[:1].isupper() and word[:1].isalpha() and not word.isupper()


@functools.lru_cache(maxsize=64)  # one text is searched for many words (a swap checks every candidate)
def _indexed(text: str, fold: bool) -> tuple[tuple[tuple[int, int, str], ...], dict[str, list[int]]]:
    """The text's word spans, and where each word (or, for a possessive, its base too) is among them."""
    spans = tuple(word_spans(text, lower=fold, digits=True))
    at: dict[str, list[int]] = {}
    for i, (_, _, w) in enumerate(spans):
        at.setdefault(w, []).append(i)
        if (b := base_word(w)) != w:
            at.setdefault(b, []).append(i)
    return spans, at


def find_word(text: str, word: str) -> list[tuple[int, int]]:
    """Where `word`, or a phrase ("toy car"), occurs in `text` as whole words: (start, end) of each
    occurrence. A possessive stays outside the span ("Tom" is found in "Tom's" as "Tom"), so replacing
    the span keeps it; the words of a phrase may be apart by spaces only. A lowercase word is found in
    any case ("kite" in "Kite flew"); one with capitals only as written, so the name "Rose" is not found
    in "a red rose". Digits are part of words here ("Tom" is not found in "Tom2")."""
    fold = word.islower()
    want = words(word, lower=fold, digits=True)
    if not want:
        return []
    spans, at = _indexed(text, fold)
    n, out = len(want), []
    for last in at.get(want[-1], ()):  # where the last word is; the words before it must match exactly
        group = spans[max(0, last - n + 1) : last + 1]
        if (len(group) == n and [w for _, _, w in group[:-1]] == want[:-1]
                and all(text[a[1] : b[0]].isspace() for a, b in zip(group, group[1:]))):
            out.append((group[0][0], group[-1][0] + len(want[-1])))
    return out


def sentences(text: str) -> list[str]:
    """The sentences of a text, each with its end mark and closing quote."""
    out, start = [], 0
    for m in SENTENCE_END.finditer(text):
        out.append(text[start:m.end()].strip())
        start = m.end()
    rest = text[start:].strip()
    return [s for s in out if s] + ([rest] if rest else [])


_VOWEL = re.compile(r"[aeiouy]")


def stem(word: str) -> str:
    """A light suffix stripper for matching only: plural -s/-es/-ies, -ed, -ing, a doubled final consonant
    and a final -e go, so "likes", "liked" and "liking" all meet "like", and "planned" meets "plans"."""
    w = word.lower().removesuffix("'s")
    if len(w) <= 3:
        return w
    if w.endswith(("ies", "ied")) and len(w) > 4:
        w = w[:-3] + "y"
    elif w.endswith(("sses", "xes", "ches", "shes", "zes")):
        w = w[:-2]
    elif w.endswith("s") and not w.endswith(("ss", "us", "is")):
        w = w[:-1]
    elif w.endswith("ing") and _VOWEL.search(w[:-3]) and len(w) > 5:
        w = w[:-3]
    elif w.endswith("ed") and not w.endswith("eed") and _VOWEL.search(w[:-2]) and len(w) > 4:
        w = w[:-2]
    if len(w) > 3 and w[-1] == w[-2] and w[-1] not in "aeiouls":
        w = w[:-1]  # planned -> plann -> plan
    return w[:-1] if len(w) > 3 and w.endswith("e") else w


# Irregular forms of words likely in a child's vocabulary: base -> other forms.
_IRREGULAR_TABLE = """
be:am,is,are,was,were,been,being have:has,had do:does,did,done go:goes,went,gone see:saw,seen
eat:ate,eaten run:ran swim:swam,swum sing:sang,sung ring:rang,rung drink:drank,drunk fly:flew,flown,flies
take:took,taken give:gave,given make:made come:came find:found think:thought bring:brought
buy:bought catch:caught teach:taught fight:fought sit:sat stand:stood win:won tell:told sell:sold
hold:held feel:felt keep:kept sleep:slept sweep:swept leave:left meet:met ride:rode,ridden
write:wrote,written drive:drove,driven hide:hid,hidden bite:bit,bitten break:broke,broken
speak:spoke,spoken wake:woke,woken choose:chose,chosen freeze:froze,frozen steal:stole,stolen
fall:fell,fallen draw:drew,drawn grow:grew,grown know:knew,known throw:threw,thrown blow:blew,blown
begin:began,begun dig:dug hang:hung shake:shook,shaken build:built send:sent spend:spent lend:lent
bend:bent lose:lost shoot:shot light:lit slide:slid spin:spun stick:stuck sting:stung swing:swung
tear:tore,torn wear:wore,worn forget:forgot,forgotten get:got,gotten lay:laid pay:paid say:said
hear:heard understand:understood shine:shone feed:fed lead:led seek:sought weep:wept kneel:knelt
creep:crept leap:leapt dream:dreamt burn:burnt spill:spilt mean:meant sink:sank,sunk flee:fled
lean:leant quit:quitted,quitting rise:rose,risen shrink:shrank,shrunk squat:squatted,squatting saw:sawn
sew:sewn show:shown babysit:babysat forgive:forgave,forgiven
mouse:mice child:children foot:feet tooth:teeth goose:geese man:men woman:women person:people
ox:oxen leaf:leaves knife:knives wolf:wolves life:lives wife:wives shelf:shelves half:halves
good:better,best bad:worse,worst far:farther,further,farthest,furthest little:less,least many:more,most
much:more,most
"""
_IRREGULAR: dict[str, set[str]] = {
    base: set(rest.split(","))
    for base, rest in (entry.split(":") for entry in _IRREGULAR_TABLE.split())
}
_VOWELS = set("aeiou")


@functools.lru_cache(maxsize=1)
def _vocab_forms() -> dict[str, set[str]]:
    """Inflections listed by the prompt vocabulary (`prompts.vocab_index`), when it is installed."""
    try:
        from tinystories_lib.stories.prompts import vocab_index

        index = vocab_index()
    except Exception as e:  # the vocabulary is optional here: the rules below still apply
        log.debug("no vocabulary inflection table (%s); using rules only", type(e).__name__)
        return {}
    table: dict[str, set[str]] = {}
    for (_pos, base), entry in index.items():
        table.setdefault(base.lower(), set()).update(v.lower() for _k, v in getattr(entry, "forms", ()))
    return table


def word_forms(word: str) -> set[str]:
    """Forms a word may take in a story: the prompt vocabulary's own inflections when available, plus
    rules: plural/3rd person (s, es, ies), past (ed, d, ied), -ing, comparatives (er, est), adverbs
    (ly), doubled final consonants (run -> running) and a table of irregulars. A superset on purpose:
    a check built on it misses a word that is absent, not one that is oddly inflected."""
    w = word.lower().strip()
    forms = {w, w + "s", w + "es", w + "ed", w + "d", w + "ing", w + "er", w + "r", w + "est", w + "st", w + "ly"}
    if w.endswith("e"):
        forms |= {w[:-1] + "ing", w[:-1] + "y"}  # dance -> dancing, noise -> noisy
    if w.endswith("ie"):
        forms.add(w[:-2] + "ying")  # lie -> lying
    if w.endswith("le"):
        forms.add(w[:-2] + "ly")  # gentle -> gently
    if len(w) > 1 and w.endswith("y") and w[-2] not in _VOWELS:
        base = w[:-1]
        forms |= {base + "ies", base + "ied", base + "ier", base + "iest", base + "ily"}
    if len(w) > 2 and w[-1] not in _VOWELS | set("wxy") and w[-2] in _VOWELS and w[-3] not in _VOWELS:
        d = w + w[-1]  # stop -> stopped, sad -> sadder
        forms |= {d + "ed", d + "ing", d + "er", d + "est", d + "y"}
    if w.endswith("f"):
        forms.add(w[:-1] + "ves")
    if w.endswith("fe"):
        forms.add(w[:-2] + "ves")
    if w.endswith("c"):
        forms |= {w + "ked", w + "king"}  # picnic -> picnicking
    return forms | _IRREGULAR.get(w, set()) | _vocab_forms().get(w, set())


_cached_word_forms = functools.lru_cache(maxsize=65536)(word_forms)  # a few thousand words, asked per story


def uses_word(text_words: Iterable[str], word: str) -> bool:
    """Whether a text, given as its lower-cased `words` (possessives dropped), uses `word` in some form."""
    toks = text_words if isinstance(text_words, (set, frozenset)) else set(text_words)
    return not toks.isdisjoint(_cached_word_forms(word.lower().strip()))


def uses_phrase(text_words: list[str], phrase: str) -> bool:
    """Whether the words of `phrase` appear in order, next to each other, in `text_words` (a text's
    lower-cased `words`), its last word in any form: "ice cream" is used by "ice creams", not by "nice
    creamy"."""
    p = words(phrase)
    if not p:
        return False
    head, n = p[:-1], len(p)
    last = _cached_word_forms(p[-1])
    tw = list(text_words)
    return any(tw[i + n - 1] in last and tw[i : i + n - 1] == head for i in range(len(tw) - n + 1))


# Words that carry no topic: function words, pronouns, the commonest verbs of telling and a few fillers.
STOP_WORDS = frozenset(
    """a an the this that these those some any every each all no not nor i me my mine myself you your yours
    we us our ours they them their theirs he him his himself she her hers herself it its itself and but or so
    then than when while because if after before once as at in on of to for with from by up down out into over
    under about around through again too very just also only even still there here where what who whom whose
    which why how is am are was were be been being have has had do does did done can could will would shall
    should may might must let let's said say says go goes went going get gets got make made see saw look looked
    come came want wanted like liked know knew one two day time yes oh okay ok""".split())


def content_words(text: str) -> list[str]:
    """The stems (`stem`) of the text's words that carry its topic, in order: possessives count as their
    owner ("Lily's" -> "lily"); `STOP_WORDS`, contractions ("didn't") and one-letter words are left out."""
    return [stem(b) for b in map(base_word, words(text)) if "'" not in b and len(b) > 1 and b not in STOP_WORDS]
