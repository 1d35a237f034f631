"""TinyStories-style corpus generation with any OpenAI-compatible LLM, losing nothing.

    specs = prompts.sample_prompts(1000, seed=0)
    report = generate_stories(specs, LLMConfig.from_dict(cfg), "runs/x/llm_stories.jsonl", budget_usd=5)
    print(report.summary())

Guarantees:
* The output is append-only JSONL, one `Story` per line, flushed line by line (fsynced in the
  background, `llm.jsonl`). On start the ids already written (and already rejected) are skipped, and a
  torn last line left by a kill is cut off, so kill the process at any moment, run again, and every
  prompt id ends up exactly once.
* Each story is validated (`llm.story_checks`: not cut off at the token cap, a reasoning model's
  `<think>` block dropped, the prompt's three words in some inflection, length, refusals and chatty
  meta-text, exact and near duplicates). Invalid stories go to a rejects JSONL with
  their reason: kept, but out of the corpus. Requests that fail after retries are counted by reason and retried next run.
* `tinystories_lib.llm.batch.generate_stories_batch` does the same through the Batch API at the batch
  discount; the batch id is recorded next to the output so a killed run resumes polling instead of
  paying twice.

Specs are `tinystories_lib.stories.prompts.PromptSpec`s or anything with the same attributes: `id`, `noun`,
`verb`, `adjective`, `features`, `render()` (the generation prompt) and optionally `words`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from tinystories_lib.llm.client import LLMConfig, run_async
from tinystories_lib.llm.jsonl import read_jsonl_records
from tinystories_lib.llm.process_shards import generate_sharded
from tinystories_lib.llm.runner import GenerationReport, agenerate_stories
from tinystories_lib.llm.story_checks import StoryValidator
from tinystories_lib.stories.records import Story


def generate_stories(
    specs: Sequence,
    config: LLMConfig,
    out_path: str | Path,
    *,
    budget_usd: float | None = None,
    progress: bool = True,
    with_summary: bool = False,
    validator: StoryValidator | None = None,
    rejects_path: str | Path | None = None,
    retry_rejected: bool = False,
    processes: int = 1,
) -> GenerationReport:
    """Generate one story per spec with `config`'s model into the append-only JSONL `out_path`.

    Resumable and exactly-once: ids already in `out_path` (or in the rejects file, unless
    `retry_rejected`) are skipped, so rerunning after a kill finishes the job. Invalid stories go to
    `rejects_path` (default `<out>.rejects.jsonl`) with their reason. `budget_usd` caps the spend;
    `with_summary` adds a one-sentence summary per story (TinyStories-Instruct). `processes` > 1 shares
    the requests among that many client processes (see `process_shards.generate_sharded`), for endpoints fast
    enough that one event loop's CPU limits the rate. Works in scripts and in Jupyter."""
    if processes > 1:
        return generate_sharded(
            specs, config, out_path, processes, budget_usd=budget_usd, progress=progress,
            with_summary=with_summary, validator=validator, rejects_path=rejects_path, retry_rejected=retry_rejected,
        )
    return run_async(
        agenerate_stories(
            specs, config, out_path, budget_usd=budget_usd, progress=progress, with_summary=with_summary,
            validator=validator, rejects_path=rejects_path, retry_rejected=retry_rejected,
        )
    )


def iter_stories(path: str | Path) -> Iterable[Story]:
    """Stories of a generation output file (tolerates a torn last line)."""
    for rec in read_jsonl_records(path):
        yield Story.from_dict(rec)
