"""Offline checks of Instruct models: does a story do what its instructions asked?

Evaluation prompts come from validation stories (`instruction_sets`: the record header of the fields of
one combination, ending at `Story:`; the Instruct stage samples the model on them), and what the model
writes after them is graded without a judge on three dimensions (notebook 07):
- words_used: the share of the requested words the story uses in some inflection (`stories.words`);
- features_honoured: the share of requested features whose textual cue (`FEATURE_CUES`) the story shows;
  foreshadowing has no cue and is left out; `cue_calibration` measures how far each cue can be trusted;
- summary_overlap: the share of the summary's content words (names included) that the story uses.
`grade_all` grades the model's stories in and out of distribution beside two references: the stories the
instructions came from (the ceiling of the checks) and the model's stories against another prompt's
instructions (`mismatched_grades`, chance). `by_condition` and `conditions_table` sum up.

Plain stories (a TinyStories .txt) carry no instruction fields: `with_derived_fields` fills what a story
lacks from its own text, Words with `instruct_format.derived_words` and Features with `detected_features`,
the same cues that check features later, so detection and checking agree (both are heuristics). A summary
is never derived: where no story has one the Summary field is simply not available.

Kept apart from the stage (`stages.instruct`, which trains and samples) and from the record format
(`stories.instruct_format`) because these are pure functions of texts, testable without a model.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from tinystories_lib.evals.grades import Completion, Grade
from tinystories_lib.evals.intervals import mean_ci
from tinystories_lib.stories.instruct_format import (
    FEATURE_NAMES,
    FIELDS,
    STORY_HEADER,
    combo_name,
    derived_words,
    format_record,
    restrict,
    story_fields,
)
from tinystories_lib.stories.records import Story
from tinystories_lib.stories.words import content_words, sentences, stem, uses_word, words

IN_DIST, OOD = "in-distribution", "out-of-distribution"
REFERENCE, MISMATCHED = "reference stories", "mismatched instructions"
CONDITIONS = (IN_DIST, OOD, REFERENCE, MISMATCHED)
DIMENSIONS = ("words_used", "features_honoured", "summary_overlap")
GRADER = "instruct-offline"


# ---------------------------------------------------------------- evaluation sets


@dataclass
class InstructionSet:
    """The instructions of one validation story, as a prompt: a record header ending at `Story:`."""

    id: str
    story_id: str
    combo: tuple[str, ...]
    condition: str
    prompt: str
    reference: str  # the story the instructions came from
    summary: str | None = None
    features: list[str] = field(default_factory=list)
    words: dict[str, str] | None = None

    @property
    def instructions(self) -> str:
        """The instruction lines alone (what an LLM judge is shown)."""
        return self.prompt[: -len(STORY_HEADER)].strip()


def prompt_of(story: Story, combo: Sequence[str], rng: random.Random) -> str:
    """The record header for `combo`, ending with the `Story:` token: the model writes what follows."""
    record = format_record(restrict(story, combo), rng, all_fields=True)
    return record[: record.index(f"{STORY_HEADER} \n")] + STORY_HEADER


def instruction_sets(val_stories: Sequence[Story], n: int, seed: int, combo: Sequence[str],
                     condition: str = "") -> list[InstructionSet]:
    """`n` prompts showing exactly the fields `combo`, from stories that have them all (fewer if too few)."""
    combo = tuple(f for f in FIELDS if f in combo)
    name = combo_name(combo)
    pool = [s for s in val_stories if set(combo) <= set(story_fields(s))]
    random.Random(f"{seed}:{name}").shuffle(pool)
    out = []
    for s in pool[:n]:
        shown = restrict(s, combo)
        out.append(InstructionSet(
            id=f"{name}:{s.id}", story_id=s.id, combo=combo, condition=condition,
            prompt=prompt_of(s, combo, random.Random(f"{seed}:{name}:{s.id}")), reference=s.text,
            summary=shown.summary, features=shown.features, words=shown.words))
    return out


def sets_summary(sets: Sequence[InstructionSet]) -> dict[str, dict[str, int]]:
    """{condition: {combination: number of prompts}}."""
    out: dict[str, dict[str, int]] = {}
    for s in sets:
        row = out.setdefault(s.condition, {})
        row[combo_name(s.combo)] = row.get(combo_name(s.combo), 0) + 1
    return out


def words_used(text: str, words_asked: dict[str, str]) -> dict[str, bool]:
    """Per requested word: does the text use it in some inflection (or share its stem)?"""
    toks = set(words(text))
    stems = {stem(t) for t in toks}
    return {w: uses_word(toks, w) or stem(w) in stems for w in words_asked.values()}


def _last_sentences(text: str, k: int = 3) -> str:
    return " ".join(sentences(text)[-k:])


_NEGATIVE = re.compile(r"\b(sad|sadly|cried|cry|crying|lost|broke|broken|hurt|spoiled|gone|upset|angry|anymore"
                       r"|no more|never again|alone)\b")
_POSITIVE = re.compile(r"\b(happy|happily|smiled|smile|hugged|laughed|glad|friends|fun|loved|thank|safe)\b")


def _bad_ending(text: str) -> bool:
    end = _last_sentences(text).lower()
    return len(_NEGATIVE.findall(end)) > len(_POSITIVE.findall(end))


def _matches(pattern: str):
    rx = re.compile(pattern)
    return lambda text: bool(rx.search(text.lower()))


# Textual cues per feature. Dialogue is exact (a quotation mark); the others are heuristics whose hit and
# false-alarm rates `cue_calibration` measures on stories with and without the feature.
FEATURE_CUES = {
    "dialogue": _matches(r'["“”]'),
    "bad_ending": _bad_ending,  # the last three sentences hold more sad cues than happy ones
    "moral_value": _matches(r"\b(moral|lesson|learn(?:ed|t|s)?|remember)\b"),
    "plot_twist": _matches(r"\b(suddenly|surprised?|surprising(?:ly)?|unexpected(?:ly)?|all of a sudden|but then)\b"),
    "conflict": _matches(r"\b(fight|fought|argue[ds]?|arguing|shouted|yelled|angry|my turn|mine)\b"),
}
UNCHECKED_FEATURES = tuple(f for f in FEATURE_NAMES if f not in FEATURE_CUES)  # foreshadowing: no textual cue


def detected_features(text: str) -> list[str]:
    """The features whose cue fires on `text` (`FEATURE_CUES`, in their order): what a plain story's
    Features field says. Heuristic like the cues; foreshadowing, having none, is never detected."""
    return [f for f, cue in FEATURE_CUES.items() if cue(text)]


def features_known(story: Story) -> bool:
    """Whether the story says which features it has: it lists some, or it was written from a prompt (whose
    feature list may be empty). A plain story's empty list means unknown, not none."""
    return bool(story.features) or story.prompt is not None


def with_derived_fields(story: Story, seed: int) -> tuple[Story, tuple[str, ...]]:
    """The story with the fields it lacks derived from its text (words; features where unknown), and which
    fields were derived. Fields a story carries (storyteller, hub Instruct, an LLM) are kept as they are;
    a summary is never derived. Deterministic per story id and seed."""
    derived: dict = {}
    if not story.words and (w := derived_words(story, seed)):
        derived["words"] = w
    if not features_known(story) and (f := detected_features(story.text)):
        derived["features"] = f
    return (replace(story, **derived) if derived else story), tuple(k for k in FIELDS if k in derived)


def features_honoured(text: str, features: Sequence[str]) -> dict[str, bool]:
    """Per requested feature that has a cue: is the cue in the text? Features without a cue are left out."""
    return {f: FEATURE_CUES[f](text) for f in features if f in FEATURE_CUES}


def summary_overlap(text: str, summary: str) -> float:
    """Share of the summary's content words (names included) that the text uses."""
    wanted = set(content_words(summary))
    if not wanted:
        return float("nan")
    have = {stem(w) for w in words(text)}
    return len(wanted & have) / len(wanted)


def check_story(text: str, s: InstructionSet) -> tuple[dict[str, float], dict]:
    """Scores (shares in [0, 1]) for the fields `s` asks for, and the per-item details behind them."""
    scores: dict[str, float] = {}
    detail: dict = {}
    if s.words:
        used = words_used(text, s.words)
        scores["words_used"] = sum(used.values()) / len(used)
        detail["words"] = used
    if s.features:
        honoured = features_honoured(text, s.features)
        if honoured:
            scores["features_honoured"] = sum(honoured.values()) / len(honoured)
        detail["features"] = honoured
        detail["unchecked_features"] = [f for f in s.features if f not in FEATURE_CUES]
    if s.summary:
        overlap = summary_overlap(text, s.summary)
        if overlap == overlap:  # not NaN
            scores["summary_overlap"] = overlap
    return scores, detail


def _grade(model: str, text: str, key: str, s: InstructionSet, condition: str) -> Grade:
    scores, detail = check_story(text, s)
    return Grade(model=model, prompt_id=s.id, completion_key=key, grader=GRADER, scores=scores,
                 extra={"condition": condition, "combo": combo_name(s.combo), **detail})


def grade_all(completions: Sequence[Completion], sets: Sequence[InstructionSet]) -> list[Grade]:
    """Grades of the model's stories (in- and out-of-distribution), of the reference stories (the
    ceiling of the checks) and of the model's stories against another prompt's instructions (chance)."""
    by_id = {s.id: s for s in sets}
    grades = [_grade(c.model, c.completion, c.key, by_id[c.prompt_id], by_id[c.prompt_id].condition)
              for c in completions]
    grades += [_grade("reference", s.reference, s.story_id, s, REFERENCE) for s in sets]
    grades += mismatched_grades(completions, sets)
    return grades


def mismatched_grades(completions: Sequence[Completion], sets: Sequence[InstructionSet]) -> list[Grade]:
    """Each story graded against the next prompt's instructions of the same combination (cyclic): the
    score a story gets without following its own instructions."""
    by_id = {s.id: s for s in sets}
    groups: dict[tuple, list[Completion]] = {}
    for c in completions:
        groups.setdefault(by_id[c.prompt_id].combo, []).append(c)
    out = []
    for group in groups.values():
        if len(group) < 2:
            continue
        for c, other in zip(group, group[1:] + group[:1]):
            out.append(_grade(c.model, c.completion, c.key, by_id[other.prompt_id], MISMATCHED))
    return out


def by_condition(grades: Sequence[Grade]) -> list[dict]:
    """One row per (condition, dimension): mean, ci95 (half-width of the 95% t interval), ci_low,
    ci_high, n. Conditions in `CONDITIONS` order."""
    rows = []
    for cond in CONDITIONS:
        mine = [g for g in grades if g.extra.get("condition") == cond and g.status == "ok"]
        dims = list(dict.fromkeys(d for g in mine for d in g.scores))
        for dim in sorted(dims, key=lambda d: DIMENSIONS.index(d) if d in DIMENSIONS else len(DIMENSIONS)):
            stats = mean_ci([float(g.scores[dim]) for g in mine if dim in g.scores])
            stats["ci95"] = stats.pop("ci")
            rows.append({"condition": cond, "dimension": dim, **stats})
    return rows


def conditions_table(rows: Sequence[dict], digits: int = 2) -> str:
    """Markdown: a row per condition, a column per dimension, "mean ± ci95 (n)"."""
    dims = list(dict.fromkeys(r["dimension"] for r in rows))
    lines = ["| condition | " + " | ".join(dims) + " |", "|---|" + "---:|" * len(dims)]
    for cond in dict.fromkeys(r["condition"] for r in rows):
        cells = []
        for d in dims:
            r = next((r for r in rows if r["condition"] == cond and r["dimension"] == d), None)
            if r is None or r["mean"] != r["mean"]:
                cells.append("–")
                continue
            ci = f" ± {r['ci95']:.{digits}f}" if r["ci95"] == r["ci95"] else ""
            cells.append(f"{r['mean']:.{digits}f}{ci} (n={r['n']})")
        lines.append(f"| {cond} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\nshares in [0, 1]; mean ± half-width of the 95% t confidence interval\n"


def cue_calibration(stories: Sequence[Story]) -> list[dict]:
    """How far each feature cue can be trusted: on the stories whose features are known (`features_known`;
    pass them before deriving fields: detected features would agree with the cues by construction), the
    share of stories WITH the feature where the cue fires (hit rate) and WITHOUT it (false alarms).
    Empty when no story's features are known (plain stories)."""
    stories = [s for s in stories if features_known(s)]
    if not stories:
        return []
    rows = []
    for f, cue in FEATURE_CUES.items():
        fired = [(f in s.features, cue(s.text)) for s in stories]
        with_f = [hit for has, hit in fired if has]
        without = [hit for has, hit in fired if not has]
        rows.append({"feature": f, "hit_rate": sum(with_f) / len(with_f) if with_f else float("nan"),
                     "false_alarm_rate": sum(without) / len(without) if without else float("nan"),
                     "n_with": len(with_f), "n_without": len(without)})
    return rows


def calibration_table(rows: Sequence[dict]) -> str:
    """Markdown of `cue_calibration`; one line saying why when there is nothing to calibrate on."""
    if not rows:
        return ("No story says which features it has (plain stories: their features are detected by these "
                "same cues), so the cues cannot be calibrated here; `features_honoured` is a heuristic.\n")
    lines = ["| feature | cue fires: stories with it | cue fires: stories without it |", "|---|---:|---:|"]
    lines += [f"| {r['feature']} | {r['hit_rate']:.2f} (n={r['n_with']}) | {r['false_alarm_rate']:.2f} "
              f"(n={r['n_without']}) |" for r in rows]
    lines.append(f"| {', '.join(UNCHECKED_FEATURES)} | not checked offline | |")
    return "\n".join(lines) + "\n"


def examples(completions: Sequence[Completion], sets: Sequence[InstructionSet], n: int = 3) -> str:
    """A few prompts and the model's stories, one per condition first, with their scores."""
    by_id = {s.id: s for s in sets}
    picked, seen = [], set()
    for c in completions:  # one of each condition, then the rest in order
        if by_id[c.prompt_id].condition not in seen:
            seen.add(by_id[c.prompt_id].condition)
            picked.append(c)
    picked += [c for c in completions if c not in picked]
    blocks = []
    for c in picked[:n]:
        s = by_id[c.prompt_id]
        scores, _ = check_story(c.completion, s)
        shown = ", ".join(f"{k} {v:.2f}" for k, v in scores.items())
        blocks.append(f"[{s.condition}: {combo_name(s.combo)}]\n{s.prompt}\n{c.completion}\n-> {shown}")
    return "\n\n".join(blocks)
