"""Notebook 07's stages: TinyStories-Instruct, and the paper's out-of-distribution instruction test.

    instruct_tokens(run)          corpus stories as Instruct records, BPE, shards   runs/<p>/instruct_tokens/<key>/
    train_instruct_model(run)     a GPT-Neo trained on those records                runs/<p>/models/instruct-<key>/
    evaluation_sets(run)          instruction headers taken from validation stories
    complete_sets(run, m, sets)   the model writes a story after each header (cached)
    grade_all(completions, sets)  exact offline checks, per condition, beside a ceiling and a chance level

Out-of-distribution test: two instruction fields (`instruct.held_out_pair`, by default summary and words)
never appear together in a training record; evaluation then asks for them together. Every other
combination of summary, features and words is "in-distribution".

What the offline checks measure, each a share in [0, 1] (they are not the paper's GPT-4 judge):
  words_used         share of the `Words:` that appear in the story, in any inflection;
  features_honoured  share of the requested features whose textual cue appears (`FEATURE_CUES`); the
                     cues are heuristics, so `cue_calibration` measures them on reference stories, and
                     foreshadowing has no cue: it is listed as not checked, never scored;
  summary_overlap    share of the summary's content words (names included) that appear in the story.
Two extra conditions make the numbers readable: "reference stories" grades the validation stories the
instructions came from (what a story that follows them scores) and "mismatched instructions" grades the
model's stories against another prompt's instructions (what ignoring the instructions scores).
"""

from __future__ import annotations

import itertools
import json
import os
import random
import re
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from . import pipeline
from .grading import Completion, Grade
from .instruct import EOT, FEATURE_NAMES, INSTRUCTION_FIELDS, format_record, parse_record, pick_sentence
from .metrics import mean_ci, tokens
from .params import ModelParams, Params
from .prompts import vocab_index
from .records import Story
from .runs import Run
from .sample import SamplingConfig, complete
from .tokenizer import Codec, read_shard, train_bpe, write_shard
from .train import TrainConfig, train

FIELDS = ("summary", "features", "words")  # the instruction fields a story can supply, in display order
# Training records may also show "Random sentence:" (a sentence of the story), as the published records do;
# instructions asked of the model use FIELDS only.
TRAIN_FIELDS = (*FIELDS, "sentence")
# Whole tokens for the field labels: a small vocabulary would otherwise spell them in pieces, and a prompt
# ending at the single token "Story:" is an exact prefix of how the training records were tokenized.
HEADER_TOKENS = [f"{label}:" for label, _ in INSTRUCTION_FIELDS] + ["Story:"]
STORY_HEADER = "Story:"
FORMAT_VERSION = 3  # bump when the record format or field choice changes: the tokens are rebuilt

IN_DIST, OOD = "in-distribution", "out-of-distribution"
REFERENCE, MISMATCHED = "reference stories", "mismatched instructions"
CONDITIONS = (IN_DIST, OOD, REFERENCE, MISMATCHED)
DIMENSIONS = ("words_used", "features_honoured", "summary_overlap")
GRADER = "instruct-offline"


# ---------------------------------------------------------------- which fields a record shows


def held_out_pair(p: Params) -> tuple[str, str]:
    """The two fields never shown together in training (checked by the profile schema)."""
    return tuple(p.instruct.held_out_pair)


def combo_name(combo: Sequence[str]) -> str:
    return "+".join(f for f in TRAIN_FIELDS if f in combo) or "none"


def story_fields(story: Story) -> tuple[str, ...]:
    """The instruction fields this story can supply."""
    have = {"summary": bool(story.summary), "features": bool(story.features), "words": bool(story.words)}
    return tuple(f for f in FIELDS if have[f])


def _subsets(fields: Sequence[str]) -> list[tuple[str, ...]]:
    return [c for k in range(1, len(fields) + 1) for c in itertools.combinations(fields, k)]


def is_held_out(combo: Sequence[str], pair: Sequence[str]) -> bool:
    return set(pair) <= set(combo)


def allowed_combos(available: Sequence[str], pair: Sequence[str]) -> list[tuple[str, ...]]:
    """Non-empty field combinations a training record may show: all but those holding the pair."""
    return [c for c in _subsets(available) if not is_held_out(c, pair)]


def ood_combos(pair: Sequence[str]) -> list[tuple[str, ...]]:
    """The combinations never seen in training: every one that holds the held-out pair."""
    return [c for c in _subsets(FIELDS) if is_held_out(c, pair)]


def restrict(story: Story, combo: Sequence[str]) -> Story:
    """The story with only the instruction fields in `combo` (so `format_record` shows exactly those)."""
    return replace(story, summary=story.summary if "summary" in combo else None,
                   features=list(story.features) if "features" in combo else [],
                   words=dict(story.words) if "words" in combo and story.words else None)


def record_fields(record: str) -> set[str]:
    """The instruction fields a formatted record shows (parsed back, so tests check the text itself)."""
    parsed = parse_record(record)
    return {f for f in FIELDS if parsed[f]} | ({"sentence"} if parsed["random_sentence"] else set())


def training_record(story: Story, seed: int, pair: Sequence[str]) -> str:
    """One Instruct record (without `<|endoftext|>`; the shard writer adds it) showing a random allowed
    combination of the story's fields in random order. The rng is per story, so records are reproducible."""
    rng = random.Random(f"{seed}:{story.id}")
    sentence = pick_sentence(story.text, rng)
    combos = allowed_combos(story_fields(story) + (("sentence",) if sentence else ()), pair)
    combo = rng.choice(combos) if combos else ()
    return _strip_eot(format_record(restrict(story, combo), rng, all_fields=True,
                                    random_sentence=sentence if "sentence" in combo else None))


def _strip_eot(record: str) -> str:
    return record.rsplit(EOT, 1)[0].rstrip("\n")


# ---------------------------------------------------------------- tokens and model


def instruct_codec(records: Sequence[str], vocab_size: int) -> Codec:
    """A byte-level BPE on the records, with each field label one token; `vocab_size` in all."""
    base = train_bpe(records, vocab_size - len(HEADER_TOKENS))
    base.tok.add_tokens(HEADER_TOKENS)
    return Codec(base.tok)


def _tokens_key(run: Run) -> str:
    return run.params.section_hash("data", "tokenizer", extra={
        "instruct_format": FORMAT_VERSION, "held_out_pair": sorted(held_out_pair(run.params)),
        "max_records": run.params.instruct.max_records})


def _require_fields(stories: Sequence[Story]) -> None:
    if not any(story_fields(s) for s in stories):
        raise ValueError("no story in the corpus has a summary, features or words, so there are no instructions "
                         "to follow: use data.source storyteller, or the hub's roneneldan/TinyStoriesInstruct")


def instruct_tokens(run: Run, progress: bool = True) -> Path:
    """Every corpus story as an Instruct record (held-out pair never together), a byte-level BPE of
    `tokenizer.vocab_size` trained on the training records (whatever `tokenizer.kind` says: the field labels
    must be tokens of their own), and train/val shards. Reused when done."""
    pair = held_out_pair(run.params)
    out = run.stage_dir("instruct_tokens", _tokens_key(run))
    if run.is_done(out):
        return out
    t0 = time.perf_counter()
    pipeline.corpus(run, progress)
    train_s, val_s = pipeline.read_corpus(run, "train"), pipeline.read_corpus(run, "val")
    train_s = train_s[: run.params.instruct.max_records or None]
    _require_fields(train_s)
    seed = run.params.seed
    # validation records follow the training rule too: validation loss measures the training distribution
    train_r = [training_record(s, seed, pair) for s in train_s]
    val_r = [training_record(s, seed, pair) for s in val_s]
    shown = [record_fields(r) for r in train_r]
    codec = instruct_codec(train_r, run.params.tokenizer.vocab_size)
    codec.save(out)
    n_train = write_shard(codec, train_r, out / "train.bin", progress, len(train_r))
    n_val = write_shard(codec, val_r, out / "val.bin", progress, len(val_r))
    run.mark_done(out, {
        "vocab_size": codec.vocab_size, "train_tokens": n_train, "val_tokens": n_val,
        "n_train_records": len(train_r), "held_out_pair": list(pair),
        "combos": dict(Counter(combo_name(f) for f in shown).most_common()),
        "held_out_cooccurrences": sum(is_held_out(f, pair) for f in shown),  # 0 by construction; recorded as proof
        "seconds": time.perf_counter() - t0})
    return out


def example_records(run: Run, n: int = 2) -> list[str]:
    """The first `n` training records, exactly as they were tokenized."""
    pair = held_out_pair(run.params)
    return [training_record(s, run.params.seed, pair) for s in pipeline.read_corpus(run, "train")[:n]]


def instruct_model_params(p: Params) -> ModelParams:
    """The instruct model's shape (`instruct.*`) at the main model's context and window."""
    return ModelParams(hidden=p.instruct.hidden, layers=p.instruct.layers, heads=p.instruct.heads,
                       context=p.model.context, window=p.model.window, dropout=p.model.dropout)


def train_instruct_model(run: Run, progress: bool = True) -> pipeline.ModelRun:
    """Train (or reuse, or resume) the instruct model with the profile's `train.*` settings for
    `instruct.max_steps` steps."""
    p = run.params
    tdir = instruct_tokens(run, progress)  # checks the instruct section first
    mp = instruct_model_params(p)
    mcfg = pipeline.model_config(run, mp, Run.artifact(tdir)["vocab_size"])
    steps = p.instruct.max_steps
    tcfg = TrainConfig.from_params(p.train, p.seed, max_steps=steps, checkpoint_steps=[],
                                   warmup_steps=min(p.train.warmup_steps, steps // 5),
                                   eval_interval=min(p.train.eval_interval, steps))
    if tcfg.threads == 0:
        tcfg.threads = os.cpu_count() or 1
    label = f"instruct-h{mp.hidden}-l{mp.layers}"
    key = p.section_hash("data", "tokenizer", extra={"tokens": tdir.name, "model": mcfg.to_dict(), "train": asdict(tcfg)})
    out = run.stage_dir("models", f"instruct-{key}")
    if not (out / "tokenizer.json").exists():
        shutil.copy(tdir / "tokenizer.json", out / "tokenizer.json")  # a model directory samples on its own
    summary = train(mcfg, tcfg, read_shard(tdir / "train.bin"), read_shard(tdir / "val.bin"), out,
                    progress=progress, desc=label, extra_config={"label": label, "tokens_dir": str(tdir)})
    return pipeline.ModelRun(label, mp.hidden, mp.layers, mp.heads, out, summary)


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


def _split(n: int, k: int) -> list[int]:
    return [n // k + (i < n % k) for i in range(k)]


def evaluation_sets(run: Run) -> list[InstructionSet]:
    """`instruct.n_eval` prompts per condition, spread evenly over the condition's combinations, each
    from a different validation story (never seen in training)."""
    p = run.params
    pair = held_out_pair(p)
    remaining = pipeline.read_corpus(run, "val")
    sets: list[InstructionSet] = []
    for condition, combos in ((IN_DIST, allowed_combos(FIELDS, pair)), (OOD, ood_combos(pair))):
        for combo, n in zip(combos, _split(p.instruct.n_eval, len(combos))):
            chosen = instruction_sets(remaining, n, p.seed, combo, condition)
            used = {s.story_id for s in chosen}
            remaining = [s for s in remaining if s.id not in used]
            sets += chosen
    if not sets:
        raise ValueError("no validation story has the instruction fields; see instruct_tokens")
    return sets


def sets_summary(sets: Sequence[InstructionSet]) -> dict[str, dict[str, int]]:
    """{condition: {combination: number of prompts}}."""
    out: dict[str, dict[str, int]] = {}
    for s in sets:
        row = out.setdefault(s.condition, {})
        row[combo_name(s.combo)] = row.get(combo_name(s.combo), 0) + 1
    return out


# ---------------------------------------------------------------- completions


def sampling_config(p: Params) -> SamplingConfig:
    t = p.instruct.temperature
    return SamplingConfig(max_new_tokens=p.instruct.max_new_tokens, temperature=t,
                          top_p=p.sample.top_p if t > 0 else 1.0, seed=p.seed)


def complete_sets(run: Run, m: pipeline.ModelRun, sets: Sequence[InstructionSet]) -> list[Completion]:
    """The model's story for each prompt, cached per model and prompt list."""
    from .train import load_model

    key = run.params.section_hash("instruct", "sample", extra=[s.id for s in sets])
    path = run.stage_dir("instruct_completions", key) / f"{m.dir.name}.jsonl"
    if path.exists():
        return [Completion(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]
    model, codec, cfg = load_model(m.dir), Codec.load(m.dir), sampling_config(run.params)
    texts: dict[str, str] = {}
    # one batch per combination: a batch's room for new tokens is set by its longest prompt
    for combo in dict.fromkeys(s.combo for s in sets):
        group = [s for s in sets if s.combo == combo]
        room = model.cfg.context - 1 - max(len(codec.encode(s.prompt)) for s in group)
        if room < min(cfg.max_new_tokens, 64):
            print(f"note: {combo_name(combo)} prompts leave {max(room, 0)} of the model's {model.cfg.context} "
                  "context positions for the story; its checks see only that much")
        texts.update(zip((s.id for s in group), complete(model, codec, [s.prompt for s in group], cfg,
                                                              desc=f"instructed: {combo_name(combo)}")))
    out = [Completion(model=m.label, prompt_id=s.id, beginning=s.prompt, completion=texts[s.id].strip())
           for s in sets]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(asdict(c)) + "\n" for c in out))
    tmp.replace(path)
    return out


# ---------------------------------------------------------------- offline checks

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


def _rule_forms(w: str, pos: str | None) -> set[str]:
    """Regular inflections by part of speech (all of them when the part of speech is unknown)."""
    y = w[:-1] + "i" if w.endswith("y") else w  # puppy -> puppies, cry -> cried, happy -> happier
    e = w[:-1] if w.endswith("e") else w  # smile -> smiling, nice -> nicer
    by_pos = {"noun": {w + "s", w + "es", y + "es"},
              "verb": {w + "s", w + "es", y + "es", e + "ed", y + "ed", e + "ing", w + "ing"},
              "adjective": {e + "er", e + "est", y + "er", y + "est"}}
    return {w}.union(*([by_pos[pos]] if pos in by_pos else by_pos.values()))


def word_forms(word: str, pos: str | None = None) -> set[str]:
    """The word and its inflections: regular ones by rule, and the shipped vocabulary's (irregular ones
    too: "ran", "mice") when the word is there."""
    w = word.lower()
    forms = _rule_forms(w, pos)
    entries = vocab_index()
    for p in ([pos] if pos else ["noun", "verb", "adjective"]):
        entry = entries.get((p, w))
        if entry is not None:
            forms |= {f.lower() for _, f in entry.forms}
    return forms


def words_used(text: str, words: dict[str, str]) -> dict[str, bool]:
    """Per requested word: does the text use it in some inflection (or share its stem)?"""
    toks = set(tokens(text))
    stems = {stem(t) for t in toks}
    return {w: bool(toks & word_forms(w, role if role in ("noun", "verb", "adjective") else None))
            or stem(w) in stems for role, w in words.items()}


def _last_sentences(text: str, k: int = 3) -> str:
    return " ".join(re.split(r'(?<=[.!?"”])\s+', text.strip())[-k:])


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


def features_honoured(text: str, features: Sequence[str]) -> dict[str, bool]:
    """Per requested feature that has a cue: is the cue in the text? Features without a cue are left out."""
    return {f: FEATURE_CUES[f](text) for f in features if f in FEATURE_CUES}


_STOPWORDS = frozenset(
    "a an the and or but so if then than that this these those to of in on at by for with from up down out "
    "into over under about after before when while because as is are was were be been being it its it's "
    "he she they them his her their him we you i me my our your not no all some one very too can could will "
    "would do does did has have had get gets got go goes went there here what who which how just also".split())


def content_words(text: str) -> set[str]:
    """Stems of the words that carry a summary's content: not stopwords, not punctuation, not one letter."""
    return {stem(t) for t in tokens(text) if t.isalpha() and len(t) > 1 and t not in _STOPWORDS}


def summary_overlap(text: str, summary: str) -> float:
    """Share of the summary's content words (names included) that the text uses."""
    wanted = content_words(summary)
    if not wanted:
        return float("nan")
    have = {stem(t) for t in tokens(text)}
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
    """How far each feature cue can be trusted: on stories whose features are known (the corpus), the
    share of stories WITH the feature where the cue fires (hit rate) and WITHOUT it (false alarms)."""
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


# ---------------------------------------------------------------- optional LLM judge


def judge_grades(run: Run, completions: Sequence[Completion], sets: Sequence[InstructionSet], judge=None) -> list[Grade]:
    """The paper's GPT-Eval with the instructions shown (`judge.LLMJudge`, grade.judge: llm): grammar,
    creativity, consistency, plot and instruction_following out of 10, each grade tagged with its
    condition. The story has no given beginning here, so the judge sees an empty one before `***`."""
    if judge is None:
        from .judge import LLMJudge

        g = run.params.grade
        judge = LLMJudge(pipeline.llm_config(g.llm), cache_path=run.root / "judge_cache.jsonl",
                         budget_usd=g.llm.budget_usd)
    by_id = {s.id: s for s in sets}
    bare = [replace(c, beginning="") for c in completions]
    grades = judge.grade(bare, instructions={s.id: s.instructions for s in sets})
    for gr in grades:
        s = by_id[gr.prompt_id]
        gr.extra.update(condition=s.condition, combo=combo_name(s.combo))
    return grades

