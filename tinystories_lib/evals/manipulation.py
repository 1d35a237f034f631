"""Notebook 05, second half: do the models compose from their prompt, or replay stories they have seen?
(the paper's Section 4)

The manipulation check. A validation story is cut right before its hero's name (or its object) is
mentioned a second time (`story_beginning`), and in that beginning the word is swapped, every occurrence,
for another child's name of the same gender (another object) from the training stories (`manipulate`,
`word_pool`). A model that composes from its prompt goes on with the new word; one that reproduces stories
it has seen has no reason to. The old word is not in the manipulated prompt at all, so a completion naming
it got it from training associations, not from the context. `follows_manipulation` is the test per
completion, `follow_rates` the rates per kind, `manipulation_check` the whole check for one model.
The other half, copying from the training set, is `evals.memorization`.

Words are found as `stories.words.find_word` finds them: whole words, a name only capitalised, an object
in any case. A story without storyteller facts (real TinyStories) gets facts read from its own text
(`entities.text_facts`): its most mentioned name is the hero (its gender where the text tells it, any
child's name as replacement otherwise) and its most mentioned object noun is the object; the replacement
pool likewise comes from the names and objects of the training stories' text. Limits: swaps are
whole-word, so plurals ("kites") and irregular forms are left alone, and "a/an" is fixed only right before
the new word.
"""
from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from tinystories_lib.evals.entities import entity_report, known_words_of, noun_categories, text_facts
from tinystories_lib.evals.memorization import side_by_side
from tinystories_lib.lm.sample import SamplingConfig, complete
from tinystories_lib.stories.records import Story
from tinystories_lib.stories.words import SENTENCE_END, capitalised, find_word, word_spans, words

# ---------------------------------------------------------------- the manipulation check

SWAP_KINDS = ("name", "object")
_GENDERS = ("boy", "girl")  # children only: their names are proper names, and pronouns stay right


@dataclass
class Manipulation:
    """One beginning before and after the swap of `old` for `new` (kind "name" or "object")."""

    kind: str
    old: str
    new: str
    original: str
    manipulated: str
    story_id: str = ""


def mentions(text: str, word: str) -> bool:
    """Whether `word` occurs in `text` as a whole word: a lowercase word (an object) in any case, "Kite"
    at a sentence start too; a name only capitalised, so the name "Rose" is not confused with the flower."""
    return bool(find_word(text, word))


def _replace(text: str, spans: list[tuple[int, int]], make) -> str:
    """`text` with each (start, end) span replaced by `make(the text of the span)`."""
    out, last = [], 0
    for start, end in spans:
        out += [text[last:start], make(text[start:end])]
        last = end
    return "".join(out) + text[last:]


def _fix_articles(text: str, word: str) -> str:
    """'a' or 'an' right before `word`, whichever its first letter calls for."""
    article = "an" if word[:1].lower() in "aeiou" else "a"
    starts = {start for start, _ in find_word(text, word)}
    spans = word_spans(text, lower=False, digits=True)  # the same words `find_word` walks
    articles = [(a, b) for (a, b, w), (nxt, _, _) in zip(spans, spans[1:])
                if nxt in starts and w.lower() in ("a", "an") and text[b:nxt].isspace()]
    return _replace(text, articles, lambda a: article.capitalize() if a[0].isupper() else article)


def swap_word(text: str, old: str, new: str) -> str:
    """`text` with every whole-word occurrence of `old` replaced by `new` (possessives too: "Tom's" ->
    "Ben's"), keeping a capital first letter where `old` had one, and "a/an" before it fixed."""
    def cased(found: str) -> str:
        return new[:1].upper() + new[1:] if found[:1].isupper() else new

    return _fix_articles(_replace(text, find_word(text, old), cased), new)


def follows_manipulation(completion: str, new_word: str, old_word: str) -> bool:
    """True when the completion uses the swapped-in word and never the word it replaced."""
    return mentions(completion, new_word) and not mentions(completion, old_word)


def _plain_facts(stories: Sequence[Story], known_words: set[str] | None, limit: int) -> list[dict]:
    """Facts read from the text (`entities.text_facts`) of the first `limit` stories without facts."""
    plain = [s.text for s in stories if not s.facts][:limit]
    if not plain:
        return []
    known = known_words if known_words is not None else known_words_of(plain)
    return [text_facts(t, known) for t in plain]


def word_pool(stories: Sequence[Story], known_words: set[str] | None = None,
              max_plain: int = 5000) -> dict[str, list[str]]:
    """Replacement words: children's names by gender ("boy", "girl") and objects ("object"), sorted, from
    storyteller facts and, for stories without them, from facts read from the text of up to `max_plain`
    of them (a name read from text goes with the gender most of its stories give it, and is left out on
    a tie). Names that are also a noun of the corpus (an object, food, animal or place: "Cookie",
    "Honey"; for names read from text, any noun of the prompt vocabulary) are left out, since the follow
    check could not tell the two apart."""
    facts = [s.facts for s in stories if s.facts] + _plain_facts(stories, known_words, max_plain)
    nouns = {f.get(key) for f in facts for key in ("object", "food", "animal", "place")}
    names: dict[str, set[str]] = {g: set() for g in _GENDERS}
    read: dict[str, Counter] = {}  # names read from text: the gender most of their stories give them
    for f in facts:
        for ch in f.get("characters", []):
            name = ch.get("name", "")
            # one capitalised word without an apostrophe, the kind of name `entity_report` finds
            one_name = words(name, lower=False) == [name] and capitalised(name) and "'" not in name
            noun = name.lower() in nouns or (f.get("found_in_text") and name.lower() in noun_categories())
            if ch.get("gender") in names and one_name and not noun:
                if f.get("found_in_text"):
                    read.setdefault(name, Counter())[ch["gender"]] += 1
                else:
                    names[ch["gender"]].add(name)
    for name, genders in read.items():
        ranked = genders.most_common(2)
        if len(ranked) == 1 or ranked[0][1] > ranked[1][1]:
            names[ranked[0][0]].add(name)
    objects = {f["object"] for f in facts if f.get("object")}
    return {**{g: sorted(v) for g, v in names.items()}, "object": sorted(objects)}


def _target(beginning: str, facts: dict | None, kind: str) -> tuple[str, str] | None:
    """(word to swap, pool key for its replacement), or None when the beginning has no such word."""
    if kind not in SWAP_KINDS:
        raise ValueError(f"kind must be one of {SWAP_KINDS}, got {kind!r}")
    if facts is None:  # plain text: only names can be found (by capitalisation); gender unknown
        names = entity_report(beginning, "").names_beginning if kind == "name" else []
        return (names[0], "any") if names else None
    if kind == "name":
        hero = facts["characters"][0] if facts.get("characters") else {}
        word, key = hero.get("name", ""), hero.get("gender")
        ok = key in _GENDERS
        if facts.get("found_in_text"):  # a name of unknown gender takes any child's name; never an animal's
            ok = hero.get("role") == "hero" and hero.get("kind") != "animal"
            key = key if key in _GENDERS else "any"
    else:
        word, key, ok = facts.get("object") or "", "object", True
    return (word, key) if ok and word and mentions(beginning, word) else None


def manipulate(beginning: str, facts: dict | None, kind: str, rng: random.Random,
               pool: dict[str, list[str]]) -> Manipulation | None:
    """Swap the hero's name (kind "name", for another name of the same gender) or the object (kind
    "object") in `beginning`, every occurrence. The replacement comes from `pool` (`word_pool`) and is
    neither in the beginning nor one of the story's characters, object, animal or place, so a completion
    can only use it by following the prompt. `facts` may be read from the text (`entities.text_facts`);
    with `facts` None the first name found by capitalisation in the beginning is swapped (objects need
    facts). None when there is nothing to swap or no replacement is left."""
    target = _target(beginning, facts, kind)
    if target is None:
        return None
    old, key = target
    if key == "any":  # a name whose gender the story does not tell: the pool's gender for it, if any
        key = next((g for g in _GENDERS if old in pool.get(g, ())), "any")
    options = pool.get("boy", []) + pool.get("girl", []) if key == "any" else pool.get(key, [])
    taken = {old.lower()}
    if facts:
        taken |= {str(c.get("name", "")).lower() for c in facts.get("characters", [])}
        taken |= {str(facts.get(k, "")).lower() for k in ("object", "animal", "place", "food", "animal_name")}
    options = [w for w in options if w.lower() not in taken and not mentions(beginning, w)]
    if not options:
        return None
    new = rng.choice(options)
    return Manipulation(kind, old, new, beginning, swap_word(beginning, old, new))


def story_beginning(text: str, word: str, max_sentences: int = 6) -> str | None:
    """The story up to (not including) the second mention of `word`, so the word is known and a model
    that follows the story is about to name it again; None when there is no second mention within the
    first `max_sentences` sentences. The cut falls mid-sentence or between sentences, wherever the word is."""
    found = [start for start, _ in find_word(text, word)]
    ends = [m.end() for m in SENTENCE_END.finditer(text)]
    limit = ends[max_sentences - 1] if len(ends) >= max_sentences else len(text)
    if len(found) < 2 or found[1] >= limit:
        return None
    return text[: found[1]].rstrip()


def manipulation_cases(stories: Sequence[Story], n: int, pool: dict[str, list[str]], seed: int,
                       kinds: Sequence[str] = SWAP_KINDS, known_words: set[str] | None = None) -> list[Manipulation]:
    """Up to `n` manipulated beginnings per kind, from `stories` (validation stories) taken in an order
    shuffled with `seed`; each story gives at most one case per kind. A story's storyteller facts say
    what to swap; without them, facts read from its text (`entities.text_facts`, with `known_words`,
    by default `entities.known_words_of` the stories), read only for the stories the check reaches."""
    rng = random.Random(seed)
    order = list(stories)
    rng.shuffle(order)
    read: dict[int, dict] = {}

    def facts_of(s: Story) -> dict:
        nonlocal known_words
        if s.facts:
            return s.facts
        if id(s) not in read:
            if known_words is None:
                known_words = known_words_of(t.text for t in stories if not t.facts)
            read[id(s)] = text_facts(s.text, known_words)
        return read[id(s)]

    cases = []
    for kind in kinds:
        found = 0
        for s in order:
            if found == n:
                break
            facts = facts_of(s)
            target = _target(s.text, facts, kind)
            start = story_beginning(s.text, target[0]) if target else None
            case = manipulate(start, facts, kind, rng, pool) if start else None
            if case:
                case.story_id = s.id
                cases.append(case)
                found += 1
    return cases


def run_manipulations(model, codec, cases: Sequence[Manipulation], cfg: SamplingConfig) -> list[dict]:
    """Complete each case's original and manipulated beginning; per case its fields plus
    `completion_original`, `completion_manipulated` and the outcome: `follows` (new word, not the old),
    `keeps_old` (the old word comes back), `original_mentions` (the unchanged beginning's completion
    names the old word: how often the model names that character or object at all)."""
    texts = complete(model, codec, [c.original for c in cases] + [c.manipulated for c in cases], cfg,
                     desc="manipulation check")
    out = []
    for c, orig, manip in zip(cases, texts[: len(cases)], texts[len(cases) :]):
        out.append({**asdict(c), "completion_original": orig, "completion_manipulated": manip,
                    "follows": follows_manipulation(manip, c.new, c.old), "keeps_old": mentions(manip, c.old),
                    "original_mentions": mentions(orig, c.old)})
    return out


def follow_rates(results: Sequence[dict], label: str) -> list[dict]:
    """One row per kind: `n`, and the shares of manipulated completions that follow the swap, bring the
    old word back, or name neither (these three add up to 1), beside `original_mentions`, the share of
    unchanged beginnings whose completion names the original word (the most `follows` can reach)."""
    rows = []
    for kind in dict.fromkeys(r["kind"] for r in results):
        rs = [r for r in results if r["kind"] == kind]
        follows = sum(r["follows"] for r in rs) / len(rs)
        keeps = sum(r["keeps_old"] for r in rs) / len(rs)
        rows.append({"model": label, "kind": kind, "n": len(rs), "follows": follows, "keeps_old": keeps,
                     "neither": 1 - follows - keeps,
                     "original_mentions": sum(r["original_mentions"] for r in rs) / len(rs)})
    return rows


def manipulation_check(model, codec, stories: Sequence[Story], n: int, pool: dict[str, list[str]] | None = None,
                       cfg: SamplingConfig | None = None, seed: int = 0, label: str = "model") -> list[dict]:
    """The whole check for one model: `n` cases per kind from `stories` (replacements from `pool`, by
    default `word_pool(stories)`), completed greedily unless `cfg` says otherwise; `follow_rates` rows."""
    pool = pool if pool is not None else word_pool(stories)
    cases = manipulation_cases(stories, n, pool, seed)
    cfg = cfg or SamplingConfig(max_new_tokens=40, temperature=0.0)
    return follow_rates(run_manipulations(model, codec, cases, cfg), label)


def rates_table(rows: Sequence[dict]) -> str:
    """Markdown table of `follow_rates` rows."""
    lines = ["| model | swapped | n | follows the swap | old word back | neither | names it unswapped |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['kind']} | {r['n']} | {r['follows']:.0%} | {r['keeps_old']:.0%} | "
                     f"{r['neither']:.0%} | {r['original_mentions']:.0%} |")
    return "\n".join(lines)


def format_case(result: dict, width: int = 52) -> str:
    """One manipulated beginning and the model's completions of it before and after the swap."""
    verdict = ("follows the swap" if result["follows"] else "brings the old word back" if result["keeps_old"]
               else "names neither")
    head = (f"[{result['kind']}] {result['old']} -> {result['new']} ({verdict})\n"
            f"beginning: {' '.join(result['manipulated'].split())}")
    body = side_by_side(result["completion_original"], result["completion_manipulated"], width,
                        (f"completion, with {result['old']}", f"completion, with {result['new']}"))
    return f"{head}\n{body}\n"


def examples(results: Sequence[dict], per_kind: int = 1) -> list[dict]:
    """The first `per_kind` results of each kind, for display."""
    seen: dict[str, int] = {}
    out = []
    for r in results:
        if seen.get(r["kind"], 0) < per_kind:
            seen[r["kind"]] = seen.get(r["kind"], 0) + 1
            out.append(r)
    return out
