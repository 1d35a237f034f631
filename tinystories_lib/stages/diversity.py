"""Notebook 05's stages: the profile's sampling settings for the diversity analyses, and the models'
completions of the story beginnings and of the manipulated beginnings. The measures themselves
(`evals.memorization`, `evals.manipulation`) take plain arguments."""

from __future__ import annotations

from collections.abc import Sequence

from tinystories_lib.evals.eval_prompts import EvalPrompt
from tinystories_lib.evals.manipulation import Manipulation, follow_rates, run_manipulations
from tinystories_lib.lm.sample import SamplingConfig, complete


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
    from tinystories_lib.lm.checkpoints import load_model
    from tinystories_lib.lm.tokenizer import Codec

    return load_model(model_run.dir), Codec.load(model_run.dir)


def model_completions(run, models, prompts: Sequence[EvalPrompt]) -> dict[str, list[str]]:
    """Completions of every prompt (`completions_per_prompt` each) by every model: label -> texts.
    Every model samples with the same seed, so differences come from the models."""
    cfg = sampling_config(run)
    k = run.params.diversity.completions_per_prompt
    texts = [p.text for p in prompts for _ in range(k)]
    return {m.label: complete(*_model_and_codec(m), texts, cfg, desc=f"completing: {m.label}") for m in models}


def check_models(run, models, cases: Sequence[Manipulation]) -> tuple[dict[str, list[dict]], list[dict]]:
    """The same manipulated beginnings completed by every model (greedy, `diversity.manipulation_tokens`):
    per-case results by model label, and the `follow_rates` rows of all models."""
    cfg = manipulation_sampling(run)
    results = {m.label: run_manipulations(*_model_and_codec(m), cases, cfg) for m in models}
    return results, [row for label, res in results.items() for row in follow_rates(res, label)]
