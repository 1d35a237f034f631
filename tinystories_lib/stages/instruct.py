"""Notebook 07's stages: TinyStories-Instruct, and the paper's out-of-distribution instruction test.

    instruct_tokens(run)          corpus stories as Instruct records, BPE, shards   runs/<p>/instruct_tokens/<key>/
    train_instruct_model(run)     a GPT-Neo trained on those records     runs/<p>/models/instruct-h..-l..-<key>/
    evaluation_sets(run)          instruction headers taken from validation stories
    complete_sets(run, m, sets)   the model writes a story after each header (cached)
    grade_all(completions, sets)  exact offline checks, per condition, beside a ceiling and a chance level

Out-of-distribution test: two instruction fields (`instruct.held_out_pair`, by default summary and words)
never appear together in a training record; evaluation then asks for them together. Every other
combination of summary, features and words is "in-distribution".

Plain stories (a TinyStories .txt) carry no fields: the fields a story lacks are derived from its text
(`instruct_checks.with_derived_fields`: Words it uses, Features whose cues fire) and a summary is never
made up. Only the fields some training story supplies are trained and evaluated (`field_plan`); a
held-out pair with an unavailable field falls back to two available ones, and the notebook says so.

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

import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from tinystories_lib.evals.grades import Completion, Grade
from tinystories_lib.evals.instruct_checks import (
    IN_DIST,
    OOD,
    InstructionSet,
    instruction_sets,
    with_derived_fields,
)
from tinystories_lib.lm.sample import SamplingConfig, complete
from tinystories_lib.lm.scoring import text_bytes
from tinystories_lib.lm.tokenizer import Codec, tokenizer_sha256, train_bpe, write_shard
from tinystories_lib.params import ModelParams, Params, _what
from tinystories_lib.runs import Run
from tinystories_lib.stages import models
from tinystories_lib.stages.corpus import corpus, llm_config, read_corpus
from tinystories_lib.stories.instruct_format import (
    FIELDS,
    FORMAT_VERSION,
    HEADER_TOKENS,
    allowed_combos,
    choose_pair,
    combo_name,
    is_held_out,
    ood_combos,
    record_fields,
    story_fields,
    training_record,
)
from tinystories_lib.stories.records import Story

# ---------------------------------------------------------------- which fields a record shows


def held_out_pair(p: Params) -> tuple[str, str]:
    """The two fields the profile asks to hold out (checked by the profile schema); `field_plan` says which
    pair a corpus really holds out."""
    return tuple(p.instruct.held_out_pair)


@dataclass(frozen=True)
class FieldPlan:
    """Which instruction fields a corpus supplies and which pair of them is held out."""

    available: tuple[str, ...]  # fields of FIELDS that some training story supplies, carried or derived
    pair: tuple[str, str]  # the held-out pair: the profile's, or two available fields when it names a missing one
    asked: tuple[str, str]  # the profile's instruct.held_out_pair
    notes: tuple[str, ...]  # one line per departure from the profile (the notebook prints them)


def _filled(stories: Sequence[Story], seed: int) -> tuple[list[Story], Counter]:
    out, derived = [], Counter()
    for s in stories:
        filled, fields = with_derived_fields(s, seed)
        out.append(filled)
        derived.update(fields)
    return out, derived


def _stories(run: Run, which: str) -> list[Story]:
    """The corpus split notebook 07 uses (training: at most `instruct.max_records`), with summaries from the
    `data.llm` endpoint for the stories that have none when `instruct.summaries: llm`."""
    stories = read_corpus(run, which)
    if which == "train":
        stories = stories[: run.params.instruct.max_records or None]
    if run.params.instruct.summaries != "llm" or all(s.summary for s in stories):
        return stories
    from tinystories_lib.llm.summaries import summarize_stories

    d = run.params.data
    path = run.stage_dir("summaries", run.params.section_hash("data", extra=_what(d.llm))) / "summaries.jsonl"
    summaries, report = summarize_stories([s for s in stories if not s.summary], llm_config(d.llm), path,
                                          budget_usd=d.llm.budget_usd)
    print(f"summaries ({which}): {len(summaries):,} of {len(stories):,} stories, {report['written']:,} written now, "
          f"{report['failed']:,} failed, {report['not_attempted']:,} over budget, ${report['cost_usd']:.4f}")
    return [s if s.summary or s.id not in summaries else replace(s, summary=summaries[s.id]) for s in stories]


def _train_stories(run: Run) -> list[Story]:
    return _stories(run, "train")


def field_plan(run: Run, train: Sequence[Story] | None = None) -> FieldPlan:
    """The fields the training stories supply once filled (`train`: already filled; read and filled when
    None) and the held-out pair among them. Raises ValueError when fewer than two fields exist."""
    if train is None:
        train, _ = _filled(_train_stories(run), run.params.seed)
    available = tuple(f for f in FIELDS if any(f in story_fields(s) for s in train))
    asked = held_out_pair(run.params)
    notes = [f"{f}: not available (no training story has one"
             f"{'; instruct.summaries: llm asks an endpoint for them' if f == 'summary' else ''})"
             f"; records and prompts use {' and '.join(available) or 'no field'}"
             for f in FIELDS if f not in available]
    pair, note = choose_pair(available, asked)
    notes += [note] if note else []
    return FieldPlan(available=available, pair=pair, asked=asked, notes=tuple(notes))


# ---------------------------------------------------------------- tokens and model


def instruct_codec(records: Sequence[str], vocab_size: int) -> Codec:
    """A byte-level BPE on the records, with each field label one token; `vocab_size` in all."""
    base = train_bpe(records, vocab_size - len(HEADER_TOKENS))
    base.tok.add_tokens(HEADER_TOKENS)
    return Codec(base.tok)


def _tokens_key(run: Run) -> str:
    # The Instruct shards always train their own BPE: of the tokenizer section only its size matters.
    return run.params.section_hash("data", extra={
        "vocab_size": run.params.tokenizer.vocab_size,
        "instruct_format": FORMAT_VERSION, "held_out_pair": sorted(held_out_pair(run.params)),
        "summaries": _what(run.params.data.llm) if run.params.instruct.summaries == "llm" else None,
        "max_records": run.params.instruct.max_records})


def instruct_tokens(run: Run, progress: bool = True) -> Path:
    """Every corpus story as an Instruct record (fields it lacks derived from its text, the held-out pair
    of `field_plan` never together), a byte-level BPE of `tokenizer.vocab_size` trained on the training
    records (whatever `tokenizer.kind` says: the field labels must be tokens of their own), and train/val
    shards. The artifact records the plan and how many stories had each field derived. Reused when done."""
    out = run.stage_dir("instruct_tokens", _tokens_key(run))
    if not run.is_done(out):
        with run.building(out, "tokenizing Instruct records into"):
            if not run.is_done(out):  # else the process this one waited for built it
                _build_instruct_tokens(run, out, progress)
    return out


def _build_instruct_tokens(run: Run, out: Path, progress: bool) -> None:
    t0 = time.perf_counter()
    corpus(run, progress)
    seed = run.params.seed
    train_s, derived = _filled(_train_stories(run), seed)
    val_s, val_derived = _filled(_stories(run, "val"), seed)
    plan = field_plan(run, train_s)
    pair = plan.pair
    # validation records follow the training rule too: validation loss measures the training distribution
    train_r = [training_record(s, seed, pair) for s in train_s]
    val_r = [training_record(s, seed, pair) for s in val_s]
    shown = [record_fields(r) for r in train_r]
    codec = instruct_codec(train_r, run.params.tokenizer.vocab_size)
    codec.save(out)
    n_train = write_shard(codec, train_r, out / "train.bin", progress, len(train_r))
    n_val = write_shard(codec, val_r, out / "val.bin", progress, len(val_r))
    run.mark_done(out, {
        "vocab_size": codec.vocab_size, "train_tokens": n_train, "val_tokens": n_val, "val_bytes": text_bytes(val_r),
        "n_train_records": len(train_r), "n_val_records": len(val_r),
        "available_fields": list(plan.available), "held_out_pair": list(pair), "held_out_pair_asked": list(plan.asked),
        "derived_fields": {"train": dict(derived), "val": dict(val_derived)}, "notes": list(plan.notes),
        "combos": dict(Counter(combo_name(f) for f in shown).most_common()),
        "held_out_cooccurrences": sum(is_held_out(f, pair) for f in shown),  # 0 by construction; recorded as proof
        "tokenizer_sha256": tokenizer_sha256(out), "seconds": time.perf_counter() - t0})


def describe_fields(meta: dict) -> str:
    """What the Instruct records hold, from the `instruct_tokens` artifact: the fields, which were derived
    from the stories' text, the held-out pair and any departure from the profile, a line each."""
    n = meta["n_train_records"]
    derived = {f: k for f in FIELDS if (k := meta.get("derived_fields", {}).get("train", {}).get(f))}
    lines = [f"instruction fields: {', '.join(meta['available_fields'])}"]
    lines += [f"{f} derived from the story text in {k:,} of {n:,} training records"
              + (" (heuristic cues, see the calibration below)" if f == "features" else " (words the story uses)")
              for f, k in derived.items()]
    lines += list(meta.get("notes", []))
    lines.append(f"held out: {' + '.join(meta['held_out_pair'])}; records showing it: {meta['held_out_cooccurrences']}")
    return "\n".join(lines)


def example_records(run: Run, n: int = 2) -> list[str]:
    """The first `n` training records, exactly as they were tokenized."""
    seed = run.params.seed
    pair = field_plan(run).pair
    train, _ = _filled(_train_stories(run)[:n], seed)
    return [training_record(s, seed, pair) for s in train]


def instruct_model_params(p: Params) -> ModelParams:
    """The instruct model's shape (`instruct.*`) at the main model's context and window."""
    return ModelParams(hidden=p.instruct.hidden, layers=p.instruct.layers, heads=p.instruct.heads,
                       context=p.model.context, window=p.model.window, dropout=p.model.dropout)


def train_instruct_model(run: Run, progress: bool = True) -> models.ModelRun:
    """Train (or reuse, or resume) the instruct model on the Instruct shards: `train_model` with the
    instruct shape and `instruct.max_steps`, the rest of `train.*` as for the main model."""
    p = run.params
    shards_dir = instruct_tokens(run, progress)  # checks the instruct section first
    mp = instruct_model_params(p)
    return models.train_model(run, mp, progress=progress, label=f"instruct-h{mp.hidden}-l{mp.layers}",
                              max_steps=p.instruct.max_steps, checkpoint_steps=[], shards_dir=shards_dir)


def _split(n: int, k: int) -> list[int]:
    return [n // k + (i < n % k) for i in range(k)]


def evaluation_sets(run: Run) -> list[InstructionSet]:
    """`instruct.n_eval` prompts per condition, spread evenly over the condition's combinations of the
    available fields (`field_plan`), each from a different validation story (never seen in training), its
    missing fields derived as in training. A combination no validation story can supply is left out with
    a note; the list is empty when nothing can be asked."""
    p = run.params
    plan = field_plan(run)
    remaining, _ = _filled(_stories(run, "val"), p.seed)
    sets: list[InstructionSet] = []
    conditions = ((IN_DIST, allowed_combos(plan.available, plan.pair)), (OOD, ood_combos(plan.pair, plan.available)))
    for condition, combos in conditions:
        for combo, n in zip(combos, _split(p.instruct.n_eval, len(combos))):
            chosen = instruction_sets(remaining, n, p.seed, combo, condition)
            if n and not chosen:
                print(f"note: no validation story supplies {combo_name(combo)}: {condition} leaves it out")
            used = {s.story_id for s in chosen}
            remaining = [s for s in remaining if s.id not in used]
            sets += chosen
    return sets


# ---------------------------------------------------------------- completions


def sampling_config(p: Params) -> SamplingConfig:
    t = p.instruct.temperature
    return SamplingConfig(max_new_tokens=p.instruct.max_new_tokens, temperature=t,
                          top_p=p.sample.top_p if t > 0 else 1.0, seed=p.seed)


def complete_sets(run: Run, m: models.ModelRun, sets: Sequence[InstructionSet]) -> list[Completion]:
    """The model's story for each prompt, cached per model and prompt list."""
    from tinystories_lib.lm.checkpoints import load_model

    if not sets:
        return []
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


# ---------------------------------------------------------------- optional LLM judge


def judge_grades(run: Run, completions: Sequence[Completion], sets: Sequence[InstructionSet], judge=None) -> list[Grade]:
    """The paper's GPT-Eval with the instructions shown (`judge.LLMJudge`, grade.judge: llm): grammar,
    creativity, consistency, plot and instruction_following out of 10, each grade tagged with its
    condition. The story has no given beginning here, so the judge sees an empty one before `***`."""
    if judge is None:  # the profile's judge, as notebook 04's (its repeats, cache and budget included)
        from tinystories_lib.stages.grading import make_grader

        judge = make_grader(run, "llm")
    by_id = {s.id: s for s in sets}
    bare = [replace(c, beginning="") for c in completions]
    grades = judge.grade(bare, instructions={s.id: s.instructions for s in sets})
    for gr in grades:
        s = by_id[gr.prompt_id]
        gr.extra.update(condition=s.condition, combo=combo_name(s.combo))
    return grades
