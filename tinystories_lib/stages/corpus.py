"""The corpus stage: stories from the profile's source, cleaned and split train/val.

    corpus(run)             runs/<p>/corpus/<key>/{train,val}.jsonl, keyed by the `data` section
    read_corpus(run, which) the stories of one split
    llm_stories(run)        stories written by an LLM endpoint (`data.source: llm`), paid for once
    diversity_sources(run)  the corpus beside other story sources, for notebook 01's comparison
The sources themselves (hub, local files, the storyteller, the LLM client) live in `stories/` and `llm/`
and take plain arguments; this module is where a profile chooses among them. The stage streams: one story
in memory at a time from files, the storyteller or LLM stories (the hub's `load_hub` still hands a list),
written as it goes, so 2.1M stories cost about what 100k do (bench/bench_data_scale.py)."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path

from tinystories_lib.errors import KitError
from tinystories_lib.locks import temp_path
from tinystories_lib.params import _what, resolve_path
from tinystories_lib.runs import Run
from tinystories_lib.stories.records import JsonlWriter, Story, read_jsonl

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
    # `key_extra`: the data design's content (nothing for the paper's design, whose key is as before designs).
    key = run.params.section_hash(extra={"llm_stories": _what(d.llm), "summaries": d.llm_summaries,
                                         **d.key_extra()})
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
    specs = sample_prompts(d.n_stories, seed=run.params.seed, design=d.prompt_design())
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


def _source_stories(run: Run, progress: bool) -> Callable[[], Iterator[Story]]:
    """What reads the profile's stories, one at a time (never all held): called again, it reads them again
    (the gpt4_only check's first pass). LLM stories are generated (or found finished) first, once."""
    d = run.params.data
    limit = d.n_stories or None
    if d.source == "storyteller":
        from tinystories_lib.stories.prompts import sample_prompts
        from tinystories_lib.stories.storyteller import Storyteller

        def told(progress: bool = progress) -> Iterator[Story]:  # tell_stories, one story at a time
            teller, specs = Storyteller(run.params.seed), sample_prompts(d.n_stories, seed=run.params.seed)
            if progress:
                from tinystories_lib.progress import bar

                specs = bar(iterable=specs, desc="storyteller", unit="story")
            return (teller.tell(s) for s in specs)

        return told
    if d.source == "llm":
        out, report, ids = llm_stories(run, progress)
        print(report.summary(), flush=True)
        if report.status != "complete":
            raise CorpusError(f"story generation is {report.status}: {report.summary()}\n"
                               "Nothing is lost: run this cell (or the command) again to resume where it stopped.")
        return lambda: (s for s in read_jsonl(out) if s.id in ids)
    from tinystories_lib.stories.loading import iter_corpus

    return lambda: iter_corpus(d.source, paths=[resolve_path(p) for p in d.paths], hub_name=d.hub_name,
                               hub_split=d.hub_split, hub_data_files=d.hub_data_files, hub_revision=d.hub_revision,
                               limit=limit, txt_separator=d.txt_separator)


def _validation_stories(run: Run) -> Callable[[], Iterator[Story]] | None:
    """What reads the separate validation source (`data.val_source` files or hub), or None for a held-out split."""
    from tinystories_lib.stories.loading import iter_corpus

    d = run.params.data
    limit = d.val_limit or None
    if d.val_source == "files":
        return lambda: iter_corpus("files", paths=[resolve_path(p) for p in d.val_paths], limit=limit,
                                   txt_separator=d.txt_separator)
    if d.val_source == "hub":
        return lambda: iter_corpus("hub", hub_name=d.hub_name,
                                   hub_split="train" if d.val_hub_data_files else d.val_hub_split,
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
    """One pass over the stories, one at a time: cleaned (`cleaning.Cleaner`), each written to train.jsonl
    or val.jsonl as it comes (temporary names, renamed when all is written), so memory does not grow
    with the corpus but by 8 bytes a story (the exact-duplicate digests). A separate validation source
    is cleaned and written first; its digests (8 bytes a story) keep its stories out of training."""
    from tinystories_lib.stories.cleaning import Cleaner, DigestSet, names_models, split_score, text_digest

    t0 = time.perf_counter()
    d = run.params.data
    source = _source_stories(run, progress)
    settings = dict(min_chars=d.min_chars, max_chars=d.max_chars, fix_mojibake=d.fix_mojibake,
                    gpt4_only=d.gpt4_only, drop_fragments=d.drop_fragments, near_duplicates=d.near_duplicates)

    def cleaner(stories: Callable[[], Iterator[Story]], storyteller: bool = False) -> Cleaner:
        # gpt4_only selects only where some story names its model: a first pass, stopping at the first that
        # does (at once for TinyStories_all_data; all the way for .txt files, whose stories never do).
        named = d.gpt4_only and not storyteller and names_models(stories())
        return Cleaner(**settings, models_named=named)

    extra: dict = {}
    separate = _validation_stories(run)
    with JsonlWriter(out / "train.jsonl") as train_w, JsonlWriter(out / "val.jsonl") as val_w:
        held, in_val = None, {}  # the validation texts' digests; digest -> id of training stories dropped for them
        if separate is not None:
            val_cleaner, held = cleaner(separate), DigestSet()
            for s in val_cleaner.stream(separate()):
                held.add(text_digest(s.text))
                val_w.write(s)
        train_cleaner = cleaner(source, storyteller=d.source == "storyteller")
        lowest = (2.0, -1, None)  # the training story with the lowest split score: (score, line, story)
        for s in train_cleaner.stream(source()):
            if held is not None:
                if (digest := text_digest(s.text)) in held:  # never train on a validation story
                    in_val.setdefault(digest, s.id)
                    continue
                train_w.write(s)
            elif (score := split_score(s, run.params.seed)) < d.val_fraction:
                val_w.write(s)
            else:
                train_w.write(s)
                if score < lowest[0]:
                    lowest = (score, train_w.line, s)
        report = train_cleaner.report
        if report["kept"] < 20:
            raise CorpusError(f"only {report['kept']} stories survived cleaning (report: {report}); "
                               "check data.source / data.paths / data.min_chars")
        train_w.close()
        val_w.close()
        if separate is None and val_w.n == 0 and train_w.n >= 2:
            _move_line(train_w, lowest[1], val_w, lowest[2])  # as `cleaning.split`: tiny corpora get a validation set
        if separate is not None:
            if val_w.n == 0:
                raise CorpusError(f"no validation story survived cleaning (report: {val_cleaner.report}); "
                                   "check data.val_*")
            val_cleaner.resolve_likes(_digests(val_w.tmp))
            extra = {"val_source": d.val_source, "val_clean_report": val_cleaner.report.as_dict(),
                     "train_dropped_as_in_validation": report["kept"] - train_w.n}
        # An exact duplicate's example names the story it repeats: read back (val first: the smaller file)
        # only until the few examples are named.
        train_cleaner.resolve_likes(itertools.chain(
            in_val.items(), () if separate is not None else _digests(val_w.tmp), _digests(train_w.tmp)))
        train_w.commit()
        val_w.commit()
    if d.source == "hub":  # what the run read, whatever the revision was called
        from tinystories_lib.stories.hub import hub_commit

        extra["hub_commit"] = hub_commit(d.hub_name, d.hub_revision)
    run.mark_done(out, {"source": d.source, "n_loaded": report["input"], "n_train": train_w.n,
                        "n_val": val_w.n, "clean_report": report.as_dict(), "seconds": time.perf_counter() - t0,
                        "data": asdict(d), **extra})


def _digests(path: Path) -> Iterator[tuple[int, str]]:
    from tinystories_lib.stories.cleaning import text_digest

    return ((text_digest(s.text), s.id) for s in read_jsonl(path))


def _move_line(src: JsonlWriter, line: int, dst: JsonlWriter, story: Story) -> None:
    """Move line `line` of `src`'s finished temporary file (it holds `story`) to the end of `dst`'s."""
    tmp = temp_path(src.tmp)
    with open(src.tmp, encoding="utf-8") as f, open(tmp, "w", encoding="utf-8") as g:
        for i, text in enumerate(f):
            if i != line:
                g.write(text)
    tmp.replace(src.tmp)
    src.n -= 1
    with open(dst.tmp, "a", encoding="utf-8") as f:
        f.write(story.to_json() + "\n")
    dst.n += 1


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
