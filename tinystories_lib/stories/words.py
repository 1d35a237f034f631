"""Words: the one place that says what a word, a sentence end and a word's inflections are.

    split_words(text)   words and punctuation marks, in order ("Tom's bed." -> "tom's", "bed", ".")
    words(text)         the words alone (letters and inner apostrophes), for counting and matching
    SENTENCE_END        where a sentence ends: . ! or ? with its closing quote
    stem(word)          a light suffix stripper, for matching "likes" with "liked"
    word_forms(word)    a word's inflections (rules, a table of irregulars, the prompt vocabulary's own)
    uses_word(...)      whether a text uses a word in some form (uses_phrase for "ice cream")

Every module that splits text into words (grading, generation checks, probes, diversity,
interpretability, corpus statistics) calls these, so "a word" means the same thing everywhere.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterable

log = logging.getLogger(__name__)

# A word: letters/digits with inner apostrophes ("don't", "Tom's"); any other non-space is a mark.
_TOKEN_RE = re.compile(r"\w+(?:['’]\w+)*|[^\w\s]")
_WORD_RE = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)*")

# Where a sentence of a story ends: . ! or ? with its closing quote, before a space or the end.
SENTENCE_END = re.compile(r"[.!?][\"'”’]?(?=\s|$)")


def _plain_apostrophes(text: str) -> str:
    return text.replace("’", "'")


def split_words(text: str, lower: bool = True) -> list[str]:
    """Words and punctuation marks, each a token of its own ("bed." -> "bed", ".")."""
    toks = _TOKEN_RE.findall(_plain_apostrophes(text))
    return [t.lower() for t in toks] if lower else toks


def words(text: str, lower: bool = True) -> list[str]:
    """The words of a text (letters with inner apostrophes; no digits, no marks)."""
    found = _WORD_RE.findall(_plain_apostrophes(text))
    return [w.lower() for w in found] if lower else found


def base_word(word: str) -> str:
    """A word without its possessive ("Tom's" -> "Tom")."""
    return word[:-2] if word.lower().endswith("'s") else word


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
        from .prompts import vocab_index

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
    """Whether the words of `phrase` appear in order, next to each other, in `text_words`."""
    p = words(phrase)
    return " ".join(p) in " ".join(text_words) if p else False
