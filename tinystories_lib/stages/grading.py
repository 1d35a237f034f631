"""Notebook 04's stages: complete the evaluation prompts with every model, then grade the completions.

Completions are cached per model and protocol (runs/<p>/completions/), so changing the judge does not
re-sample, and re-running costs nothing. The judge is the profile's choice: the paper's LLM judge on any
OpenAI-compatible endpoint, or offline metrics that say plainly they are not GPT-4.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import yaml

from tinystories_lib.evals.eval_prompts import (
    EvalPrompt,
    fetch_paper_eval_yaml,
    load_eval_prompts,
    load_paper_eval_yaml,
)
from tinystories_lib.evals.grades import Completion, Grade, Grader
from tinystories_lib.lm.checkpoints import list_checkpoints, load_model
from tinystories_lib.lm.sample import SamplingConfig, complete
from tinystories_lib.params import resolve_path
from tinystories_lib.runs import Run
from tinystories_lib.stages.corpus import read_corpus
from tinystories_lib.stages.models import ModelRun, grid
from tinystories_lib.stages.shards import codec


def prompt_set(choice: str) -> list[EvalPrompt]:
    """The evaluation set a profile names in `grade.prompts`: "kit", "paper" (the hub's file, cached by
    huggingface_hub) or a YAML file, in the kit's format (`prompts:`) or the hub's (a list of beginnings)."""
    if choice == "kit":
        return load_eval_prompts()
    path = fetch_paper_eval_yaml() if choice == "paper" else resolve_path(choice)
    with open(path, encoding="utf-8") as f:
        kit_format = isinstance(yaml.safe_load(f), dict)
    return load_eval_prompts(path) if kit_format else load_paper_eval_yaml(path)


def eval_prompts(run: Run) -> list[EvalPrompt]:
    """The profile's evaluation set (`grade.prompts`), cut to `grade.n_prompts` with every kind represented."""
    prompts = prompt_set(run.params.grade.prompts)
    n = run.params.grade.n_prompts
    if not n or n >= len(prompts):
        return prompts
    by_kind: dict[str, list[EvalPrompt]] = {}
    for p in prompts:
        by_kind.setdefault(p.kind, []).append(p)
    chosen: list[EvalPrompt] = []
    while len(chosen) < n:  # round-robin over kinds, in file order
        for kind in list(by_kind):
            if by_kind[kind] and len(chosen) < n:
                chosen.append(by_kind[kind].pop(0))
    return chosen


def sampling_config(run: Run, seed_offset: int = 0) -> SamplingConfig:
    g = run.params.grade
    return SamplingConfig(max_new_tokens=g.max_new_tokens, temperature=g.temperature,
                          top_p=run.params.sample.top_p if g.temperature > 0 else 1.0,
                          seed=run.params.seed + seed_offset)


def _completions_key(run: Run, prompts: list[EvalPrompt]) -> str:
    """What decides a completion: the sampling and the prompts (not the judge, nor the reference list)."""
    c = sampling_config(run)
    return run.params.section_hash(extra={"prompts": [(p.id, p.text) for p in prompts],
                                          "per_prompt": run.params.grade.completions_per_prompt,
                                          "sampling": [c.max_new_tokens, c.temperature, c.top_k, c.top_p, c.seed]})


def _complete_with(run: Run, model, label: str, step: int | None, prompts: list[EvalPrompt],
                   path: Path, cdc=None) -> list[Completion]:
    if path.exists():
        return [Completion(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]
    cdc = cdc or codec(run)
    k = run.params.grade.completions_per_prompt
    beginnings = [p.text for p in prompts for _ in range(k)]
    texts = complete(model, cdc, beginnings, sampling_config(run),
                     desc=f"completing: {label}" + (f" step {step}" if step is not None else ""))
    out = [Completion(model=label, prompt_id=prompts[i // k].id, beginning=beginnings[i], completion=t,
                      step=step, sample_index=i % k) for i, t in enumerate(texts)]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(asdict(c)) + "\n" for c in out))
    tmp.replace(path)
    return out


def completions(run: Run, models: list[ModelRun], prompts: list[EvalPrompt]) -> list[Completion]:
    """Final-model completions of every prompt, for every model (cached)."""
    key = _completions_key(run, prompts)
    out_dir = run.stage_dir("completions", key)
    result = []
    for m in models:
        model = load_model(m.dir)
        result += _complete_with(run, model, m.label, None, prompts, out_dir / f"{m.dir.name}.jsonl")
    return result


def reference_completions(run: Run, prompts: list[EvalPrompt]) -> list[Completion]:
    """The published models of `grade.reference_models` complete the same prompts with the same sampling,
    each with its own tokenizer (cached like the profile's models); absent ones are skipped with a note."""
    from tinystories_lib.stages.references import available

    out_dir = run.stage_dir("completions", _completions_key(run, prompts))
    result = []
    for _, ref in available(run.params.grade.reference_models):
        path = out_dir / f"reference-{ref.label}.jsonl"
        result += _complete_with(run, ref.model, ref.label, None, prompts, path, ref.codec)
    return result


def completions_over_training(run: Run, m: ModelRun, prompts: list[EvalPrompt]) -> list[Completion]:
    """Completions by each kept checkpoint of one model, to follow abilities emerging over training."""
    key = _completions_key(run, prompts)
    out_dir = run.stage_dir("completions", key)
    result = []
    for step, weights in list_checkpoints(m.dir):
        model = load_model(m.dir, weights=weights)
        result += _complete_with(run, model, m.label, step, prompts, out_dir / f"{m.dir.name}-step{step}.jsonl")
    return result


def make_grader(run: Run, judge: str | None = None) -> Grader:
    """The profile's grader (`grade.judge`), or the one named by `judge` ("llm" or "offline")."""
    g = run.params.grade
    if (judge or g.judge) == "llm":
        from tinystories_lib.evals.judge import LLMJudge
        from tinystories_lib.stages.corpus import llm_config

        return LLMJudge(llm_config(g.llm), cache_path=run.root / "judge_cache.jsonl", budget_usd=g.llm.budget_usd,
                        repeats=g.judge_repeats)
    from tinystories_lib.evals.offline import OfflineGrader
    from tinystories_lib.stages.references import available

    # Trained on the training stories, its 0..10 anchors calibrated on held-out validation stories; grammar
    # under the first published model of `grade.reference_models` that is there, else a word trigram.
    reference = next((ref for _, ref in available(g.reference_models)), None)
    return OfflineGrader([s.text for s in read_corpus(run, "train")],
                         [s.text for s in read_corpus(run, "val")[:300]], reference=reference)


def grade(run: Run, grader: Grader, items: list[Completion]) -> list[Grade]:
    """Grade completions; through the Batch API when the profile asks for it (LLM judge only)."""
    if grader.is_llm and run.params.grade.llm.batch_api:
        return grader.grade_batch(items)
    return grader.grade(items)


def judge_summary(grader: Grader, grades: list[Grade]) -> dict:
    """Who judged `grades` and how reliably (LLM judge): the model asked for, the snapshots the server said
    answered and the temperatures of the grades (cached ones included, so a run that asked nothing still
    says), the judgments per completion, failed grades by error (`permanently_failed`: failed
    `max_attempts` times, not asked again), and the repeats' per-dimension agreement
    (`grade_tables.judge_agreement`; [] with one judgment each). Shown by `grade_tables.judge_report`."""
    from tinystories_lib.evals.grade_tables import failure_reasons, judge_agreement

    mine = [g for g in grades if g.grader == grader.name]
    snapshots = dict.fromkeys(s for g in mine if (s := g.extra.get("judge_snapshot")))
    if not snapshots and getattr(grader, "snapshot", None):
        snapshots[grader.snapshot] = None
    temperatures = dict.fromkeys(g.extra["temperature"] for g in mine if "temperature" in g.extra)
    config = getattr(grader, "config", None)
    failed = [g for g in mine if g.status != "ok"]
    return {"grader": grader.name, "model": config.model if config is not None else grader.name,
            "snapshots": list(snapshots), "temperatures": list(temperatures) or [getattr(grader, "temperature", None)],
            "repeats": getattr(grader, "repeats", 1), "max_attempts": getattr(grader, "max_attempts", None),
            "n": len(mine), "failed": len(failed), "permanently_failed": sum(bool(g.extra.get("permanent")) for g in failed),
            "failures": failure_reasons(failed), "agreement": judge_agreement(mine)}


def dimensions(table: list[dict]) -> list[str]:
    """The graded dimensions of an `aggregate` table, in the order they first appear."""
    return list(dict.fromkeys(r["dimension"] for r in table if r.get("dimension")))


def completions_by_prompt(items: list[Completion], n_prompts: int = 3, width: int = 160) -> str:
    """The first `n_prompts` beginnings, each with every model's completion under it (one line each)."""
    by_prompt: dict[str, list[Completion]] = {}
    for c in items:
        by_prompt.setdefault(c.prompt_id, []).append(c)
    lines = []
    for group in list(by_prompt.values())[:n_prompts]:
        lines.append(f"BEGINNING: {group[0].beginning}")
        lines += [f"  {c.model:>12}: ...{c.completion.strip()[:width]}" for c in group]
        lines.append("")
    return "\n".join(lines)


def perplexity_table(largest: str, ppl: dict[str, float]) -> str:
    """`perplexity_under_largest`'s result as a markdown table."""
    return (f"| model | mean perplexity under {largest} |\n|---|---:|\n"
            + "".join(f"| {m} | {v:.1f} |\n" for m, v in ppl.items()))


def grade_grids(table: list[dict], sweep_runs: list[ModelRun]) -> tuple[list[int], list[int], dict[str, np.ndarray]]:
    """Per dimension, the mean grade of each sweep model placed on the hidden size x layers grid."""
    dims = dimensions([r for r in table if r.get("step") is None])
    grids, layers, hidden = {}, [], []
    for dim in dims:
        means = {r["model"]: r["mean"] for r in table if r["dimension"] == dim and r.get("step") is None}
        layers, hidden, grids[dim] = grid(sweep_runs, value=lambda r, m=means: m.get(r.label, float("nan")))
    return layers, hidden, grids


def grade_grid_rows(table: list[dict], sweep_runs: list[ModelRun]) -> list[dict]:
    """The final grades of the sweep's models with their shape: the data of the grades-over-the-grid figure."""
    shape = {r.label: (r.hidden, r.layers) for r in sweep_runs}
    return [{**row, "hidden": shape[row["model"]][0], "layers": shape[row["model"]][1]}
            for row in table if row.get("step") is None and row["model"] in shape]


def grades_over_training(run: Run, grader: Grader, models: list[ModelRun], prompts: list[EvalPrompt]):
    """Grade every kept checkpoint of each model. Returns {dimension: {model: [(step, mean), ...]}}."""
    from tinystories_lib.evals.grade_tables import aggregate

    series: dict[str, dict[str, list]] = {}
    for m in models:
        for row in aggregate(grade(run, grader, completions_over_training(run, m, prompts))):
            series.setdefault(row["dimension"], {}).setdefault(m.label, []).append((row["step"], row["mean"]))
    return series


def emergence_models(models: list[ModelRun], main: ModelRun, n: int = 2) -> list[ModelRun]:
    """Models whose training is graded step by step: the deepest sweep models of each width, and main."""
    deepest = max(m.layers for m in models)
    chosen = sorted((m for m in models if m.layers == deepest and m is not main), key=lambda m: m.hidden)
    return chosen[-n:] + [main]


def probe_accuracies(run: Run, models: list[ModelRun]) -> list[dict]:
    """Exact context-tracking probes (names, objects, places, pronouns) cut from held-out stories, from
    storyteller facts where a story has them and from the entities found in its text otherwise; per model
    and probe kind: accuracy, number of probes, chance level, and the model's size."""
    from tinystories_lib.evals.probes import build_probes, probe_accuracy, score_probes

    probe_set = build_probes(read_corpus(run, "val"), run.params.grade.n_probes, seed=run.params.seed)
    if not probe_set:
        return []  # no story with a name or object to track: the notebook says so
    chance: dict[str, list[float]] = {}
    for p in probe_set:
        chance.setdefault(p.kind, []).append(1 / len(p.candidates))
    cdc, rows = codec(run), []
    for m in models:
        for kind, (acc, n) in probe_accuracy(score_probes(load_model(m.dir), cdc, probe_set)).items():
            rows.append({"model": m.label, "params": m.summary["params"], "kind": kind, "accuracy": acc, "n": n,
                         "chance": float(np.mean(chance.get(kind, [p for v in chance.values() for p in v])))})
    return rows


def hand_probe_table(run: Run, models: list[ModelRun], max_new_tokens: int = 20) -> str:
    """The paper's hand-written probes and our knowledge/reasoning/context probes, completed greedily by
    every model, as a markdown table."""
    from tinystories_lib.evals.eval_prompts import load_paper_probes
    from tinystories_lib.evals.probes import probe_completions, probe_table

    prompts = load_paper_probes() + [p for p in load_eval_prompts() if p.kind != "story"][:9]
    cdc = codec(run)
    return probe_table(probe_completions({m.label: (load_model(m.dir), cdc) for m in models}, prompts, max_new_tokens))


def perplexity_under_largest(models: list[ModelRun], cdc, items: list[Completion]) -> tuple[str, dict[str, float]]:
    """Mean perplexity of each model's completions under the largest model of the run (a fluency measure
    that needs no judge: lower means the big model finds the text likely)."""
    from tinystories_lib.evals.probes import perplexity_of_completions

    largest = max(models, key=lambda m: m.summary["params"])
    ppl = perplexity_of_completions(load_model(largest.dir), cdc, items)
    by_model: dict[str, list[float]] = {}
    for c, v in zip(items, ppl):
        if np.isfinite(v):
            by_model.setdefault(c.model, []).append(v)
    return largest.label, {k: float(np.mean(v)) for k, v in by_model.items()}
