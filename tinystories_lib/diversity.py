"""Notebook 05: are the models creative, or do they copy their training stories? (the paper's Section 4)

Two measurements, each stated exactly:

- Memorization. Each completion (the generated text only, never the beginning) is matched with the
  training story that shares most of its word bigrams (`NgramIndex`, Rouge-2 precision); against that story
  we also report Rouge-L precision (longest common subsequence / completion length). A completion copied
  from a story scores near 1 on both; a new story made of common phrases scores lower. Because children's
  stories share many phrases, the scale only means something next to a baseline: chunks of training stories,
  as long as the completions, matched against the REST of the training set (`self_similarity_baseline`).
  Completions far above that baseline are copying more than the corpus copies from itself.
- The manipulation check. A validation story is cut right before its hero's name (or its object) is
  mentioned a second time, and in that beginning the word is swapped, every occurrence, for another child's
  name of the same gender (another object) from the training stories. A model that composes from its prompt
  goes on with the new word; one that reproduces stories it has seen has no reason to. The old word is not
  in the manipulated prompt at all, so a completion naming it got it from training associations, not from
  the context. `follows_manipulation` is the test per completion, `follow_rates` the rates per kind.

Limits: the nearest story is found by Rouge-2, so its Rouge-L is not the maximum over the corpus; searches
score at most `max_candidates` stories (rarest shared bigrams first) and say when the result is approximate.
Swaps are whole-word: plurals ("kites") and irregular forms are left alone, and "a/an" is fixed only right
before the new word.
"""

from __future__ import annotations

import math
import random
import re
import statistics
import textwrap
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from .eval_prompts import EvalPrompt, load_eval_prompts
from .metrics import NgramIndex, entity_report, mean_ci, rouge_l_precision, tokens
from .records import SENTENCE_END, Story
from .sample import SamplingConfig, complete

# ---------------------------------------------------------------- completions


def beginnings(n: int) -> list[EvalPrompt]:
    """The first `n` beginnings of the shipped evaluation set, general stories before probes (a probe asks
    for a short answer, which says little about copying). n = 0: all of them."""
    prompts = load_eval_prompts()
    ordered = [p for p in prompts if p.kind == "story"] + [p for p in prompts if p.kind != "story"]
    return ordered[:n] if n else ordered


def sampling_config(run) -> SamplingConfig:
    """Sampling for the memorization completions (`diversity.*`)."""
    d = run.params.diversity
    return SamplingConfig(max_new_tokens=d.max_new_tokens, temperature=d.temperature, top_p=d.top_p,
                          seed=run.params.seed)


def manipulation_sampling(run) -> SamplingConfig:
    """Greedy decoding for the manipulation check: the model's single most likely continuation."""
    return SamplingConfig(max_new_tokens=run.params.diversity.manipulation_tokens, temperature=0.0)


def _model_and_codec(model_run):
    """A trained model and the tokenizer it was trained with (each model directory keeps its own copy)."""
    from .tokenizer import Codec
    from .train import load_model

    return load_model(model_run.dir), Codec.load(model_run.dir)


def model_completions(run, models, prompts: Sequence[EvalPrompt]) -> dict[str, list[str]]:
    """Completions of every prompt (`completions_per_prompt` each) by every model: label -> texts.
    Every model samples with the same seed, so differences come from the models."""
    cfg = sampling_config(run)
    k = run.params.diversity.completions_per_prompt
    texts = [p.text for p in prompts for _ in range(k)]
    return {m.label: complete(*_model_and_codec(m), texts, cfg, desc=f"completing: {m.label}") for m in models}


def typical_length(completions: dict[str, list[str]]) -> int:
    """Median completion length in words: the baseline's chunks are cut to it, because Rouge precision of a
    short text against a large corpus is higher by chance than that of a long one."""
    counts = [len(t.split()) for texts in completions.values() for t in texts]
    return max(5, int(statistics.median(counts))) if counts else 50


# ---------------------------------------------------------------- memorization


def _score(text: str, index: NgramIndex, train_texts: Sequence[str], skip: int | None = None) -> dict:
    """Nearest training story of `text` (other than `skip`) and the Rouge precisions against it."""
    found = index.search(text, k=1 if skip is None else 2)  # k=2: the skipped story may take first place
    if found.n_bigrams == 0:  # nothing to measure (an empty or one-word completion): left out of means
        return {"story": None, "rouge2": math.nan, "rougeL": math.nan, "exact": found.exact, "n_bigrams": 0}
    hit = next((h for h in found.hits if h[0] != skip), None)
    if hit is None:  # no training story shares a single bigram
        return {"story": None, "rouge2": 0.0, "rougeL": 0.0, "exact": found.exact, "n_bigrams": found.n_bigrams}
    story, r2 = hit
    return {"story": story, "rouge2": r2, "rougeL": rouge_l_precision(text, train_texts[story]),
            "exact": found.exact, "n_bigrams": found.n_bigrams}


def _check_index(index: NgramIndex, train_texts: Sequence[str]) -> None:
    if len(index) != len(train_texts):
        raise ValueError(f"the index holds {len(index)} stories but train_texts has {len(train_texts)}: "
                         "build the index from the same list, in the same order")


def memorization_scores(completions: Sequence[str], index: NgramIndex, train_texts: Sequence[str]) -> list[dict]:
    """Per completion: `story` (index of the training story sharing most bigrams, found with `index`),
    `rouge2` (Rouge-2 precision against it), `rougeL` (Rouge-L precision against the same story), `exact`
    (whether the search proved that story the best) and `n_bigrams`. A completion without bigrams gets NaN
    scores and is left out of means; one sharing no bigram with any story gets 0 and `story` None."""
    _check_index(index, train_texts)
    return [_score(text, index, train_texts) for text in completions]


def _chunk(text: str, words: int | None) -> str:
    """`words` words of a story, starting after its first sentence (where a completion would start), moved
    earlier when the story is too short. The whole story when `words` is None."""
    ws = text.split()
    if words is None or len(ws) <= words:
        return text
    first_end = next((i + 1 for i, w in enumerate(ws) if w.rstrip("\"'”’").endswith((".", "!", "?"))), 0)
    start = min(first_end, len(ws) - words)
    return " ".join(ws[start : start + words])


def self_similarity_baseline(train_texts: Sequence[str], n: int, seed: int, index: NgramIndex | None = None,
                             words: int | None = None) -> list[dict]:
    """The training set against itself: `n` training stories drawn with `seed` (cut to `words` words when
    given, to match the completions' length), each scored like a completion against the training set with
    its own story excluded. Rows are those of `memorization_scores` plus `source`, the story scored.
    `index` must be built from `train_texts` (it is built here when None)."""
    index = index if index is not None else NgramIndex(train_texts)
    _check_index(index, train_texts)
    picks = random.Random(seed).sample(range(len(train_texts)), min(n, len(train_texts)))
    return [{**_score(_chunk(train_texts[i], words), index, train_texts, skip=i), "source": i} for i in picks]


def score_models(completions: dict[str, list[str]], index: NgramIndex,
                 train_texts: Sequence[str]) -> dict[str, list[dict]]:
    """`memorization_scores` of every model's completions, each row tagged with its `model`."""
    return {label: [{**s, "model": label} for s in memorization_scores(texts, index, train_texts)]
            for label, texts in completions.items()}


def pooled(scores: dict[str, list[dict]], completions: dict[str, list[str]]) -> tuple[list[dict], list[str]]:
    """All models' score rows and completions as two parallel lists (for `closest_pairs`)."""
    rows = [s for label in scores for s in scores[label]]
    texts = [t for label in scores for t in completions[label]]
    return rows, texts


def _finite(rows: Sequence[dict], key: str) -> list[float]:
    return [r[key] for r in rows if not math.isnan(r[key])]


def _mean_cell(values: list[float]) -> str:
    s = mean_ci(values)
    if math.isnan(s["mean"]):
        return "–"
    return f"{s['mean']:.3f}" + ("" if math.isnan(s["ci"]) else f" ± {s['ci']:.3f}")


def means_table(scores: dict[str, list[dict]], baseline: Sequence[dict], copy_threshold: float = 0.9) -> str:
    """Markdown: per model and for the baseline, the mean Rouge-2 and Rouge-L precision against the nearest
    training story (± half-width of the 95% t interval), the share of near-copies (Rouge-2 >=
    `copy_threshold`) and the share of searches proved exact."""
    header = (f"| model | n | Rouge-2 precision | Rouge-L precision | Rouge-2 ≥ {copy_threshold} | exact search |\n"
              "|---|---:|---:|---:|---:|---:|")
    lines = [header]
    for label, rows in [*scores.items(), ("training set vs itself (baseline)", list(baseline))]:
        r2 = _finite(rows, "rouge2")
        scored = [r for r in rows if not math.isnan(r["rouge2"])]
        copies = f"{sum(v >= copy_threshold for v in r2) / len(r2):.0%}" if r2 else "–"
        exact = f"{sum(r['exact'] for r in scored) / len(scored):.0%}" if scored else "–"
        lines.append(f"| {label} | {len(r2)} | {_mean_cell(r2)} | {_mean_cell(_finite(rows, 'rougeL'))} | "
                     f"{copies} | {exact} |")
    return "\n".join(lines) + "\n\nmean ± half-width of the 95% t confidence interval\n"


# ---------------------------------------------------------------- closest pairs


def _word_key(word: str) -> str:
    return "".join(tokens(word))


def aligned_excerpt(completion: str, story: str) -> str:
    """The passage of `story`, as many words long as `completion`, sharing most adjacent word pairs with
    it: where the completion may have been copied from (display only)."""
    cw, sw = completion.split(), story.split()
    if len(sw) <= len(cw) or len(cw) < 2:
        return story
    pairs = {(_word_key(a), _word_key(b)) for a, b in zip(cw, cw[1:])}
    keys = [_word_key(w) for w in sw]
    hit = np.array([(a, b) in pairs for a, b in zip(keys, keys[1:])], dtype=int)
    sums = np.convolve(hit, np.ones(len(cw) - 1, dtype=int), mode="valid")  # shared pairs per window
    start = int(np.argmax(sums))
    text = " ".join(sw[start : start + len(cw)])
    return ("... " if start else "") + text + (" ..." if start + len(cw) < len(sw) else "")


def closest_pairs(scores: Sequence[dict], completions: Sequence[str], train_texts: Sequence[str],
                  k: int) -> list[dict]:
    """The `k` completions with the highest Rouge-2 precision (Rouge-L breaks ties), each with its nearest
    training story: the score row plus `completion`, `story_text` and `excerpt` (`aligned_excerpt`)."""
    ranked = sorted((i for i, s in enumerate(scores) if s["story"] is not None and not math.isnan(s["rouge2"])),
                    key=lambda i: (-scores[i]["rouge2"], -scores[i]["rougeL"]))
    out = []
    for i in ranked[:k]:
        story = train_texts[scores[i]["story"]]
        out.append({**scores[i], "completion": completions[i], "story_text": story,
                    "excerpt": aligned_excerpt(completions[i], story)})
    return out


def side_by_side(left: str, right: str, width: int = 52, titles: tuple[str, str] = ("", "")) -> str:
    """Two texts wrapped into columns of `width` characters, for printing."""
    cols = [textwrap.wrap(" ".join(t.split()), width) or [""] for t in (left, right)]
    rows = [(titles[0], titles[1]), ("-" * width, "-" * width)] if any(titles) else []
    rows += [(cols[0][i] if i < len(cols[0]) else "", cols[1][i] if i < len(cols[1]) else "")
             for i in range(max(map(len, cols)))]
    return "\n".join(f"{a:<{width}} | {b}".rstrip() for a, b in rows)


def format_pair(pair: dict, width: int = 52) -> str:
    """One closest pair, a header line then the completion beside the matching training passage."""
    head = (f"{pair.get('model', 'model')}: Rouge-2 {pair['rouge2']:.2f}, Rouge-L {pair['rougeL']:.2f}, "
            f"nearest training story #{pair['story']}")
    body = side_by_side(pair["completion"], pair["excerpt"], width, ("completion", "closest training passage"))
    return f"{head}\n{body}\n"


# ---------------------------------------------------------------- the manipulation check

KINDS = ("name", "object")
_GENDERS = ("boy", "girl")  # children only: their names are proper names, and pronouns stay right
_NAME_RE = re.compile(r"[A-Z][a-z]+")


@dataclass
class Manipulation:
    """One beginning before and after the swap of `old` for `new` (kind "name" or "object")."""

    kind: str
    old: str
    new: str
    original: str
    manipulated: str
    story_id: str = ""


def _pattern(word: str) -> re.Pattern:
    # A lowercase word (an object) matches in any case, "Kite" at a sentence start too; a name matches
    # only capitalised, so the name "Rose" is not confused with the flower.
    return re.compile(rf"\b{re.escape(word)}\b", re.IGNORECASE if word.islower() else 0)


def mentions(text: str, word: str) -> bool:
    """Whether `word` occurs in `text` as a whole word (any case for lowercase words)."""
    return _pattern(word).search(text) is not None


def _fix_articles(text: str, word: str) -> str:
    """'a' or 'an' right before `word`, whichever its first letter calls for."""
    article = "an" if word[:1].lower() in "aeiou" else "a"

    def repl(m: re.Match) -> str:
        a = article.capitalize() if m.group(1)[0].isupper() else article
        return f"{a}{m.group(2)}{m.group(3)}"

    return re.sub(rf"\b(an|a)(\s+)({re.escape(word)})\b", repl, text, flags=re.IGNORECASE)


def swap_word(text: str, old: str, new: str) -> str:
    """`text` with every whole-word occurrence of `old` replaced by `new` (possessives too: "Tom's" ->
    "Ben's"), keeping a capital first letter where `old` had one, and "a/an" before it fixed."""

    def repl(m: re.Match) -> str:
        return new[:1].upper() + new[1:] if m.group(0)[:1].isupper() else new

    return _fix_articles(_pattern(old).sub(repl, text), new)


def follows_manipulation(completion: str, new_word: str, old_word: str) -> bool:
    """True when the completion uses the swapped-in word and never the word it replaced."""
    return mentions(completion, new_word) and not mentions(completion, old_word)


def word_pool(stories: Sequence[Story]) -> dict[str, list[str]]:
    """Replacement words from storyteller facts: children's names by gender ("boy", "girl") and objects
    ("object"), sorted. Names that are also a noun of the corpus (an object, food, animal or place:
    "Cookie", "Honey") are left out, since the follow check could not tell the two apart."""
    facts = [s.facts for s in stories if s.facts]
    nouns = {f.get(key) for f in facts for key in ("object", "food", "animal", "place")}
    names: dict[str, set[str]] = {g: set() for g in _GENDERS}
    for f in facts:
        for ch in f.get("characters", []):
            name = ch.get("name", "")
            if ch.get("gender") in names and _NAME_RE.fullmatch(name) and name.lower() not in nouns:
                names[ch["gender"]].add(name)
    objects = {f["object"] for f in facts if f.get("object")}
    return {**{g: sorted(v) for g, v in names.items()}, "object": sorted(objects)}


def _target(beginning: str, facts: dict | None, kind: str) -> tuple[str, str] | None:
    """(word to swap, pool key for its replacement), or None when the beginning has no such word."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if facts is None:  # plain text: only names can be found (by capitalisation); gender unknown
        names = entity_report(beginning, "").names_beginning if kind == "name" else []
        return (names[0], "any") if names else None
    if kind == "name":
        hero = facts["characters"][0] if facts.get("characters") else {}
        word, key = hero.get("name", ""), hero.get("gender")
        ok = key in _GENDERS
    else:
        word, key, ok = facts.get("object") or "", "object", True
    return (word, key) if ok and word and mentions(beginning, word) else None


def manipulate(beginning: str, facts: dict | None, kind: str, rng: random.Random,
               pool: dict[str, list[str]]) -> Manipulation | None:
    """Swap the hero's name (kind "name", for another name of the same gender) or the object (kind
    "object") in `beginning`, every occurrence. The replacement comes from `pool` (`word_pool`) and is
    neither in the beginning nor one of the story's characters, object, animal or place, so a completion
    can only use it by following the prompt. With `facts` None the first name found by capitalisation is
    swapped (objects need facts). None when there is nothing to swap or no replacement is left."""
    target = _target(beginning, facts, kind)
    if target is None:
        return None
    old, key = target
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
    found = [m.start() for m in _pattern(word).finditer(text)]
    ends = [m.end() for m in SENTENCE_END.finditer(text)]
    limit = ends[max_sentences - 1] if len(ends) >= max_sentences else len(text)
    if len(found) < 2 or found[1] >= limit:
        return None
    return text[: found[1]].rstrip()


def manipulation_cases(stories: Sequence[Story], n: int, pool: dict[str, list[str]], seed: int,
                       kinds: Sequence[str] = KINDS) -> list[Manipulation]:
    """Up to `n` manipulated beginnings per kind, from `stories` (validation stories with storyteller
    facts) taken in an order shuffled with `seed`; each story gives at most one case per kind."""
    rng = random.Random(seed)
    order = [s for s in stories if s.facts]
    rng.shuffle(order)
    cases = []
    for kind in kinds:
        found = 0
        for s in order:
            if found == n:
                break
            target = _target(s.text, s.facts, kind)
            start = story_beginning(s.text, target[0]) if target else None
            case = manipulate(start, s.facts, kind, rng, pool) if start else None
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


def check_models(run, models, cases: Sequence[Manipulation]) -> tuple[dict[str, list[dict]], list[dict]]:
    """The same manipulated beginnings completed by every model (greedy, `diversity.manipulation_tokens`):
    per-case results by model label, and the `follow_rates` rows of all models."""
    cfg = manipulation_sampling(run)
    results = {m.label: run_manipulations(*_model_and_codec(m), cases, cfg) for m in models}
    return results, [row for label, res in results.items() for row in follow_rates(res, label)]


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
