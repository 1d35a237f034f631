"""The corpus stage: stories from the profile's source, cleaned and split train/val.

    corpus(run)             runs/<p>/corpus/<key>/{train,val}.jsonl, keyed by the `data` section
    read_corpus(run, which) the stories of one split
    llm_stories(run)        stories written by an LLM endpoint (`data.source: llm`), paid for once
    diversity_sources(run)  the corpus beside other story sources, for notebook 01's comparison
The sources themselves (hub, local files, the storyteller, the LLM client) live in `stories/` and `llm/`
and take plain arguments; this module is where a profile chooses among them."""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from pathlib import Path

from tinystories_lib.errors import KitError
from tinystories_lib.params import _what, resolve_path
from tinystories_lib.runs import Run
from tinystories_lib.stories.records import Story, read_jsonl, write_jsonl

# ---------------------------------------------------------------- corpus



class CorpusError(KitError, RuntimeError):
    """The corpus cannot be built as the profile asks (generation unfinished, cleaning left too little)."""

def llm_config(ep):
    """An `LLMConfig` for the client layer from a profile's endpoint section."""
    from tinystories_lib.llm.client import LLMConfig

    return LLMConfig(base_url=ep.base_url, model=ep.model, api_key_env=ep.api_key_env,
                     azure_api_version=ep.azure_api_version, max_concurrency=ep.max_concurrency,
                     timeout_s=ep.timeout_s, price_per_1m_input=ep.price_per_1m_input,
                     price_per_1m_output=ep.price_per_1m_output, temperature=ep.temperature, max_tokens=ep.max_tokens,
                     http_client=ep.http_client, token_param=ep.token_param,
                     batch_max_requests=ep.batch_max_requests, batch_max_bytes=ep.batch_max_bytes,
                     batch_max_enqueued_tokens=ep.batch_max_enqueued_tokens)


def llm_stories_path(run: Run) -> Path:
    """Where the profile's LLM stories are kept. The key holds only what decides a prompt's story (the seed,
    the endpoint's model and sampling settings, summaries or not), not `n_stories` or the corpus settings:
    prompt ids are stable as `n_stories` grows, so raising it pays only for the new prompts, and changing
    `val_fraction` or `min_chars` pays for nothing."""
    d = run.params.data
    key = run.params.section_hash(extra={"llm_stories": _what(d.llm), "summaries": d.llm_summaries})
    out = run.stage_dir("llm_stories", key) / "stories.jsonl"
    # Runs before this key was introduced stored the file under the whole data section's key: move it
    # here instead of paying for its stories again.
    legacy = run.root / "llm_stories" / run.params.section_hash("data")
    if not out.exists() and (legacy / "stories.jsonl").exists():
        for f in legacy.iterdir():
            os.replace(f, out.parent / f.name)
        print(f"note: moved the LLM stories of {legacy} to {out.parent} (stories are now keyed by endpoint)")
    return out


def llm_stories(run: Run, progress: bool = True):
    """Stories written by an LLM from the paper's prompts, into an append-only JSONL keyed by prompt id:
    interrupt it at any point and run again to finish, nothing lost or duplicated. Returns (path, report,
    the prompt ids of this profile: the file may hold more, from a run with a larger `n_stories`)."""
    from tinystories_lib.llm.batch import generate_stories_batch
    from tinystories_lib.llm.generate import generate_stories
    from tinystories_lib.llm.runner import estimate_remaining_cost
    from tinystories_lib.stories.prompts import sample_prompts

    d = run.params.data
    specs = sample_prompts(d.n_stories, seed=run.params.seed)
    cfg = llm_config(d.llm)
    out = llm_stories_path(run)
    todo, done, est = estimate_remaining_cost(specs, cfg, out, with_summary=d.llm_summaries, batch=d.llm.batch_api)
    print(f"{len(specs):,} stories with {cfg.model}: {done:,} already done, {todo:,} to generate, estimated cost "
          f"${est:,.2f}" + (f" (budget ${d.llm.budget_usd:,.2f})" if d.llm.budget_usd is not None else ""), flush=True)
    if d.llm.batch_api:
        report = generate_stories_batch(specs, cfg, out, budget_usd=d.llm.budget_usd, with_summary=d.llm_summaries)
    else:
        report = generate_stories(specs, cfg, out, budget_usd=d.llm.budget_usd, with_summary=d.llm_summaries,
                                  progress=progress, processes=d.llm.processes)
    return out, report, {s.id for s in specs}


def _source_stories(run: Run, progress: bool) -> list[Story]:
    d = run.params.data
    limit = d.n_stories or None
    if d.source == "storyteller":
        from tinystories_lib.stories.storyteller import tell_stories

        return tell_stories(d.n_stories, seed=run.params.seed, progress=progress)
    if d.source == "llm":
        out, report, ids = llm_stories(run, progress)
        print(report.summary(), flush=True)
        if report.status != "complete":
            raise CorpusError(f"story generation is {report.status}: {report.summary()}\n"
                               "Nothing is lost: run this cell (or the command) again to resume where it stopped.")
        return [s for s in read_jsonl(out) if s.id in ids]
    from tinystories_lib.stories.loading import load_corpus

    return load_corpus(d.source, paths=[resolve_path(p) for p in d.paths], hub_name=d.hub_name,
                       hub_split=d.hub_split, hub_data_files=d.hub_data_files, hub_revision=d.hub_revision,
                       limit=limit, txt_separator=d.txt_separator)


def _validation_stories(run: Run) -> list[Story] | None:
    """The separate validation source (`data.val_source` files or hub), or None for a held-out split."""
    from tinystories_lib.stories.loading import load_corpus

    d = run.params.data
    limit = d.val_limit or None
    if d.val_source == "files":
        return load_corpus("files", paths=[resolve_path(p) for p in d.val_paths], limit=limit,
                           txt_separator=d.txt_separator)
    if d.val_source == "hub":
        return load_corpus("hub", hub_name=d.hub_name, hub_split="train" if d.val_hub_data_files else d.val_hub_split,
                           hub_data_files=d.val_hub_data_files, hub_revision=d.hub_revision, limit=limit)
    return None


def corpus(run: Run, progress: bool = True) -> Path:
    """Stories from the profile's source, cleaned (mojibake, lengths, fragments, duplicates: `data.*`) and
    split train/val, or with validation stories from their own source (`data.val_source`)."""
    out = run.stage_dir("corpus", run.params.section_hash("data"))
    if not run.is_done(out):
        with run.building(out, "building the corpus in"):
            if not run.is_done(out):  # else the process this one waited for built it
                _build_corpus(run, out, progress)
    _record(run, out)
    return out


def _build_corpus(run: Run, out: Path, progress: bool) -> None:
    from tinystories_lib.stories.cleaning import clean, normalize_text, split

    t0 = time.perf_counter()
    stories = _source_stories(run, progress)
    d = run.params.data
    settings = dict(min_chars=d.min_chars, max_chars=d.max_chars, fix_mojibake=d.fix_mojibake,
                    gpt4_only=d.gpt4_only, drop_fragments=d.drop_fragments, near_duplicates=d.near_duplicates)
    kept, report = clean(stories, **settings)
    if len(kept) < 20:
        raise CorpusError(f"only {len(kept)} stories survived cleaning (report: {report}); "
                           "check data.source / data.paths / data.min_chars")
    extra = {}
    separate = _validation_stories(run)
    if separate is None:
        train_s, val_s = split(kept, run.params.data.val_fraction, seed=run.params.seed)
    else:
        val_s, val_report = clean(separate, **settings)
        if not val_s:
            raise CorpusError(f"no validation story survived cleaning (report: {val_report}); check data.val_*")
        held = {normalize_text(s.text) for s in val_s}
        train_s = [s for s in kept if normalize_text(s.text) not in held]  # never train on a validation story
        extra = {"val_source": run.params.data.val_source, "val_clean_report": val_report.as_dict(),
                 "train_dropped_as_in_validation": len(kept) - len(train_s)}
    write_jsonl(train_s, out / "train.jsonl")
    write_jsonl(val_s, out / "val.jsonl")
    if run.params.data.source == "hub":  # what the run read, whatever the revision was called
        from tinystories_lib.stories.hub import hub_commit

        extra["hub_commit"] = hub_commit(run.params.data.hub_name, run.params.data.hub_revision)
    run.mark_done(out, {"source": run.params.data.source, "n_loaded": len(stories), "n_train": len(train_s),
                        "n_val": len(val_s), "clean_report": report.as_dict(), "seconds": time.perf_counter() - t0,
                        "data": asdict(run.params.data), **extra})


def _record(run: Run, out: Path) -> None:
    info = Run.artifact(out)
    run.record_corpus({k: info.get(k) for k in ("source", "n_train", "n_val", "hub_commit") if k in info})


def read_corpus(run: Run, which: str = "train") -> list[Story]:
    return list(read_jsonl(corpus(run, progress=False) / f"{which}.jsonl"))


def diversity_sources(run: Run) -> dict[str, list[Story]]:
    """The corpus, and beside it (where available) LLM stories made in this run and the real TinyStories
    files of `data.compare_paths` (relative paths are from the repository root): notebook 01's comparison."""
    from tinystories_lib.params import resolve_path
    from tinystories_lib.stories.loading import load_corpus

    d = run.params.data
    sources = {f"corpus ({d.source})": read_corpus(run, "train")}
    if d.source != "llm":
        for path in sorted(run.root.glob("llm_stories/*/stories.jsonl")):
            sources[f"LLM stories ({path.parent.name})"] = list(read_jsonl(path))[: d.compare_limit]
    read = {resolve_path(p).resolve() for p in d.paths} if d.source == "files" else set()
    for p in d.compare_paths:
        path = resolve_path(p)
        if path.exists() and path.resolve() in read:
            continue  # the corpus is this file already: no comparison with itself
        if not path.exists():
            # The file's name only: a profile's relative path means nothing to the reader of the note.
            print(f"note: comparison file {path.name} is not here; skipped (download it from the hub, "
                  "roneneldan/TinyStories, and list its path in data.compare_paths)")
            continue
        sources[f"TinyStories ({path.name})"] = load_corpus("files", paths=[path], limit=d.compare_limit,
                                                            txt_separator=d.txt_separator)
    return sources
