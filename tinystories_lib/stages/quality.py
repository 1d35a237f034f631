"""Notebook 08's stages: does data quality matter? The phi-1 experiment at the profile's scale.

    split_stories(run)      the clean training stories: the annotator's held-out set | the rest (the base)
    quality_filter(run)     runs/<p>/quality/<key>/: the noisy pool (pool.jsonl) and what was done to each
                            story, the annotated sample (labels.jsonl), the classifier (classifier.joblib),
                            every pool story's P(good) (scores.jsonl), the kept stories (filtered.jsonl);
                            artifact.json: held-out precision, recall and accuracy, threshold, kept share
    corpora(run)            runs/<p>/quality_tokens/<corpus>-<key>/: one token shard directory per corpus,
                            each cut to `quality.train_tokens` tokens of the profile's tokenizer, all with
                            one validation text (the first `quality.val_stories` validation stories)
    train_corpora(run)      one model per corpus, same shape and budget (`stages.models.train_model`)
    figure_data(models)     the rows the figure and the claim checks read
The corpora: the clean stories; the storyteller stand-in (real corpora only); the pool unfiltered and
filtered by the classifier; the degraded controls of the clean stories (`stories.variants`: sentences
shuffled, typos, fewer unique stories repeated); GPT-4 against GPT-3.5 stories where the stories carry
their model (TinyStories_all_data's `source`).
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinystories_lib.lm.scoring import text_bytes
from tinystories_lib.lm.tokenizer import TOKENIZER_FILES, Codec, tokenizer_sha256, write_shard
from tinystories_lib.locks import temp_path
from tinystories_lib.params import ModelParams, _what
from tinystories_lib.runs import Run
from tinystories_lib.stages.corpus import read_corpus
from tinystories_lib.stages.models import ModelRun, reused_line, sweep_slots, train_in_parallel, train_model
from tinystories_lib.stages.shards import shards
from tinystories_lib.stories import variants
from tinystories_lib.stories.records import Story, read_jsonl, write_jsonl

# What a filter artifact depends on, of the `quality` section (the model's shape and budget do not).
FILTER_FIELDS = ("pool_noise", "typo_rate", "annotator_stories", "n_annotated", "label_threshold", "test_fraction",
                 "classifier", "keep_threshold")
CORPUS_FIELDS = FILTER_FIELDS + ("train_tokens", "val_stories", "unique_fraction", "storyteller")
VERSION = 1  # of what this module writes: a change that alters an artifact raises it

# Roles, for the figure and the claim checks (`evals.claims`).
CLEAN, STANDIN, UNFILTERED, FILTERED, CONTROL, SOURCE = ("clean", "stand-in", "unfiltered", "filtered", "control",
                                                         "source")


@dataclass
class CorpusSpec:
    name: str
    role: str
    stories: list[Story]
    note: str = ""


_REPEAT = re.compile(r"#r\d+$")  # the suffix of a repeated story's id (`variants.repeated`)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


def _fields(run: Run, names) -> dict:
    return {k: getattr(run.params.quality, k) for k in names}


def split_stories(run: Run) -> tuple[list[Story], list[Story]]:
    """(held out for the offline annotator, the base of every corpus): the training split in an order
    drawn from the seed, its first `quality.annotator_stories` set apart."""
    stories = read_corpus(run, "train")
    random.Random(f"{run.params.seed}:quality").shuffle(stories)
    n = run.params.quality.annotator_stories
    if len(stories) < n + 50:
        raise ValueError(f"quality.annotator_stories={n} leaves {len(stories) - n} of the corpus's {len(stories)} "
                         "training stories for the corpora; lower it or use a larger corpus")
    return stories[:n], stories[n:]


# ---------------------------------------------------------------- the annotator and the filter


def _annotator_identity(run: Run) -> dict:
    g = run.params.grade
    if g.judge == "llm":
        return {"judge": "llm", "llm": _what(g.llm), "repeats": g.judge_repeats}
    return {"judge": "offline", "grammar": "word trigram"}


def filter_key(run: Run) -> str:
    return run.params.section_hash("data", extra={"quality_filter": _fields(run, FILTER_FIELDS),
                                                  "annotator": _annotator_identity(run), "version": VERSION})


def make_annotator(run: Run, held_out: list[Story]):
    """The profile's grader (`grade.judge`) as annotator. Offline: the offline grader built from the held-out
    stories only (their first three quarters for its word trigram and nearest-story index, the rest for
    its calibration), so no annotated story is one it has read, which would make it look copied."""
    if run.params.grade.judge == "llm":
        from tinystories_lib.stages.grading import make_grader

        return make_grader(run, "llm")
    from tinystories_lib.evals.offline import OfflineGrader

    texts = [s.text for s in held_out]
    cut = max(1, len(texts) * 3 // 4)
    return OfflineGrader(texts[:cut], texts[cut:], seed=run.params.seed)


def quality_filter(run: Run, progress: bool = True) -> Path:
    """Annotate a sample of the noisy pool, train the classifier on its labels, score and filter the pool."""
    out = run.stage_dir("quality", filter_key(run))
    if not run.is_done(out):
        with run.building(out, "building the quality filter in"):
            if not run.is_done(out):
                _build_filter(run, out, progress)
    return out


def _build_filter(run: Run, out: Path, progress: bool) -> None:
    import joblib

    from tinystories_lib.evals import quality as Q
    from tinystories_lib.stages.grading import grade

    t0 = time.perf_counter()
    q, seed = run.params.quality, run.params.seed
    held_out, base = split_stories(run)
    pool, truth = variants.noisy_pool(base, q.pool_noise, q.typo_rate, seed)
    rng = np.random.default_rng([seed, 8])
    sample = sorted(rng.choice(len(pool), size=min(q.n_annotated, len(pool)), replace=False).tolist())
    grader = make_annotator(run, held_out)
    if progress:
        print(f"annotating {len(sample)} of {len(pool):,} pool stories with the {grader.name}", flush=True)
    scores = Q.annotate(grader, [pool[i].text for i in sample], [pool[i].id for i in sample],
                        grade=lambda items: grade(run, grader, items))
    labelled = [(i, s) for i, s in zip(sample, scores) if s is not None]
    labels = [int(s >= q.label_threshold) for _, s in labelled]
    identity = {"annotator": grader.name, "annotator_is_llm": bool(grader.is_llm), "n_pool": len(pool),
                "n_annotated": len(sample), "n_labelled": len(labelled), "label_threshold": q.label_threshold,
                "good_share": float(np.mean(labels)) if labels else None, "classifier": q.classifier,
                "keep_threshold": q.keep_threshold, "pool_noise": q.pool_noise}
    write_jsonl(pool, out / "pool.jsonl")
    if len(set(labels)) < 2:  # nothing to learn: say why, and the filtered corpus is left out
        why = (f"the {grader.name} labelled {'every' if labels else 'no'} annotated story "
               f"{'good' if labels and labels[0] else 'bad' if labels else '(every grade failed)'} at "
               f"quality.label_threshold={q.label_threshold:g} ({len(labelled)} of {len(sample)} graded): no "
               "classifier can be trained; move the threshold or annotate more stories")
        _write_lines(out / "labels.jsonl", [{"id": pool[i].id, "score": s, "label": lab, "degraded": truth[i]}
                                            for (i, s), lab in zip(labelled, labels)])
        run.mark_done(out, {**identity, "skipped": why, "seconds": time.perf_counter() - t0})
        return
    split = Q.train_test_split(len(labelled), q.test_fraction, seed, labels)
    texts = [pool[i].text for i, _ in labelled]
    clf = Q.QualityClassifier(q.classifier, seed).fit([texts[j] for j in split.train],
                                                      [labels[j] for j in split.train], [s.text for s in pool])
    p_good = clf.score([s.text for s in pool])
    kept = p_good >= q.keep_threshold

    def metrics(idx):
        return Q.classification_metrics([labels[j] for j in idx], [kept[labelled[j][0]] for j in idx])

    test_part = set(split.test)
    _write_lines(out / "labels.jsonl", [
        {"id": pool[i].id, "score": s, "label": labels[j], "part": "test" if j in test_part else "train",
         "degraded": truth[i], "p_good": float(p_good[i])} for j, (i, s) in enumerate(labelled)])
    _write_lines(out / "scores.jsonl", [{"id": s.id, "degraded": t, "p_good": float(p)}
                                        for s, t, p in zip(pool, truth, p_good)])
    write_jsonl([s for s, k in zip(pool, kept) if k], out / "filtered.jsonl")
    tmp = temp_path(out / "classifier.joblib")
    joblib.dump(clf, tmp)
    tmp.replace(out / "classifier.joblib")
    by_truth = {}
    for kind in (None, variants.SHUFFLED, variants.TYPOS):
        mine = [k for k, t in zip(kept, truth) if t == kind]
        scored = [s for i, s in labelled if truth[i] == kind]
        by_truth[kind or "clean"] = {"n": len(mine), "kept": int(sum(mine)),
                                     "kept_share": float(np.mean(mine)) if mine else None,
                                     "annotated": len(scored), "mean_grade": float(np.mean(scored)) if scored else None,
                                     "labelled_good": float(np.mean([s >= q.label_threshold for s in scored]))
                                     if scored else None}
    run.mark_done(out, {
        **identity, "features": {"hashed": "word 1-2-grams of the story; words of its first and last sentences",
                                 "dense": list(Q.DENSE)},
        "n_kept": int(kept.sum()), "kept_fraction": float(kept.mean()),
        "test": metrics(split.test), "train": metrics(split.train), "by_truth": by_truth,
        "seconds": time.perf_counter() - t0})


def _write_lines(path: Path, rows: list[dict]) -> None:
    tmp = temp_path(path)
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(path)


# ---------------------------------------------------------------- the corpora


def _source_groups(stories: list[Story]) -> dict[str, list[Story]]:
    """GPT-4 and GPT-3.5 stories, where stories carry the model that wrote them (TinyStories_all_data)."""
    from tinystories_lib.stories.cleaning import _by_gpt4, _model_known

    known = [s for s in stories if _model_known(s.source)]
    return {"GPT-4 stories": [s for s in known if _by_gpt4(s.source)],
            "GPT-3.5 stories": [s for s in known if not _by_gpt4(s.source) and "3.5" in s.source]}


def source_note(run: Run, stories: list[Story] | None = None) -> str | None:
    """Why GPT-4 and GPT-3.5 stories are not compared in this run, or None when they are."""
    groups = _source_groups(stories if stories is not None else split_stories(run)[1])
    if all(groups.values()):
        return None
    if not any(groups.values()):
        return ("GPT-4 against GPT-3.5: skipped, no story of this corpus names the model that wrote it (only "
                "TinyStories_all_data's JSON files carry `source`: list them in data.paths)")
    why = " (data.gpt4_only dropped them)" if run.params.data.gpt4_only else ""
    return f"GPT-4 against GPT-3.5: skipped, the corpus has no {' and no '.join(k for k, v in groups.items() if not v)}{why}"


def corpus_specs(run: Run, progress: bool = True, encoded: dict | None = None) -> list[CorpusSpec]:
    """Every corpus of the comparison, its stories in the order they are cut to the budget (`encoded`:
    see `_cut`)."""
    q, seed = run.params.quality, run.params.seed
    fdir = quality_filter(run, progress)
    _, base = split_stories(run)
    pool = list(read_jsonl(fdir / "pool.jsonl"))
    filtered = None if Run.artifact(fdir).get("skipped") else list(read_jsonl(fdir / "filtered.jsonl"))
    # The controls degrade the very stories the clean corpus is cut from (and a few more: a shuffled
    # story can take a token or two fewer).
    clean = _within_budget(base, run, encoded)
    more = base[: len(clean) + 50]
    specs = [CorpusSpec("clean", CLEAN, base)]
    if q.storyteller and run.params.data.source != "storyteller":
        from tinystories_lib.stories.storyteller import tell_stories

        n = max(20, round(len(clean) * 1.3))
        specs.append(CorpusSpec("storyteller stand-in", STANDIN, tell_stories(n, seed=seed)))
    specs.append(CorpusSpec("unfiltered pool", UNFILTERED, pool))
    if filtered is not None:
        specs.append(CorpusSpec("filtered pool", FILTERED, filtered))
    specs += [CorpusSpec("shuffled sentences", CONTROL, variants.shuffled_sentences(more, seed)),
              CorpusSpec("typos", CONTROL, variants.with_typos(more, q.typo_rate, seed)),
              CorpusSpec("repeated stories", CONTROL, variants.repeated(clean, q.unique_fraction, seed))]
    groups = _source_groups(base)
    if all(groups.values()):
        specs += [CorpusSpec(name, SOURCE, group) for name, group in groups.items()]
    return specs


def _within_budget(stories: list[Story], run: Run, encoded: dict | None = None) -> list[Story]:
    """The first stories holding the token budget (the repeated control repeats fewer of exactly these)."""
    codec = Codec.load(shards(run, progress=False))
    _, used = _cut(codec, stories, run.params.quality.train_tokens, encoded)
    return stories[:used]


def corpora_key(run: Run) -> str:
    return run.params.section_hash("data", "tokenizer", extra={"corpora": _fields(run, CORPUS_FIELDS),
                                                               "filter": filter_key(run), "version": VERSION})


def corpora(run: Run, progress: bool = True) -> dict[str, Path]:
    """One token shard directory per corpus (`corpus_specs`), made once per key."""
    key = corpora_key(run)
    index = run.stage_dir("quality_tokens", f"index-{key}")
    if not run.is_done(index):
        with run.building(index, "cutting the quality corpora in"):
            if not run.is_done(index):
                _build_corpora(run, index, key, progress)
    return {name: run.root / "quality_tokens" / d for name, d in Run.artifact(index)["corpora"].items()}


def _build_corpora(run: Run, index: Path, key: str, progress: bool) -> None:
    t0 = time.perf_counter()
    q = run.params.quality
    src = shards(run, progress)
    codec = Codec.load(src)
    val = read_corpus(run, "val")[: q.val_stories or None]
    val_texts = [s.text for s in val]
    write_shard(codec, val_texts, index / "val.bin")
    val_bytes = text_bytes(val_texts)
    made, encoded = {}, {}
    for spec in corpus_specs(run, progress, encoded):
        d = run.stage_dir("quality_tokens", f"{_slug(spec.name)}-{key}")
        for name in TOKENIZER_FILES:
            if (src / name).exists():
                shutil.copy(src / name, d / name)
        shutil.copy(index / "val.bin", d / "val.bin")
        ids, used = _cut(codec, spec.stories, q.train_tokens, encoded)
        tmp = temp_path(d / "train.bin")
        ids.tofile(tmp)
        tmp.replace(d / "train.bin")
        unique = len({_REPEAT.sub("", s.id) for s in spec.stories[:used]})
        short = len(ids) < q.train_tokens
        note = spec.note or (f"{spec.name} holds {len(ids):,} tokens, fewer than quality.train_tokens "
                             f"({q.train_tokens:,}): its model sees them more often" if short else "")
        run.mark_done(d, {"corpus": spec.name, "role": spec.role, "vocab_size": codec.vocab_size,
                          "train_tokens": int(len(ids)), "val_tokens": int((index / "val.bin").stat().st_size // 2),
                          "val_bytes": val_bytes, "val_stories": len(val), "tokenizer_sha256": tokenizer_sha256(d),
                          "n_stories": used, "unique_stories": unique, "short": short, "note": note,
                          "tokens_from": run.artifact(src)["tokenizer_sha256"][:12]})
        made[spec.name] = d.name
    run.mark_done(index, {"corpora": made, "val_stories": len(val), "val_bytes": val_bytes,
                          "seconds": time.perf_counter() - t0})


def _cut(codec: Codec, stories: list[Story], budget: int, encoded: dict | None = None) -> tuple[np.ndarray, int]:
    """The stories' tokens, each story followed by the separator as in the token stage, cut to `budget`;
    and how many stories that took. `encoded` (text -> ids) saves encoding a text twice: most corpora
    share most of their stories."""
    encoded = {} if encoded is None else encoded
    parts, n, used = [], 0, 0
    for start in range(0, len(stories), 256):
        chunk = [s.text for s in stories[start:start + 256]]
        todo = list(dict.fromkeys(t for t in chunk if t not in encoded))
        for t, ids in zip(todo, codec.encode_batch(todo)):
            encoded[t] = np.asarray([*ids, codec.eot_id], dtype=np.uint16)
        for t in chunk:
            parts.append(encoded[t])
            n += len(parts[-1])
            used += 1
            if n >= budget:
                return np.concatenate(parts)[:budget], used
    return (np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint16)), used


# ---------------------------------------------------------------- the models


def model_params(run: Run) -> ModelParams:
    q = run.params.quality
    return ModelParams(hidden=q.hidden, layers=q.layers, heads=q.heads, context=q.context, window=q.window)


def describe_model(run: Run) -> str:
    """The shape every corpus is trained on, at the corpora's vocabulary (`lm.model.describe`)."""
    from tinystories_lib.lm.model import describe
    from tinystories_lib.stages.models import model_config

    vocab = Run.artifact(next(iter(corpora(run, progress=False).values())))["vocab_size"]
    return describe(model_config(run, model_params(run), vocab))


def _training_run(run: Run) -> Run:
    """The run with `quality`'s batch and evaluation cadence in its `train` section, for train_model."""
    q, p = run.params.quality, run.params
    train = dataclasses.replace(p.train, batch_size=q.batch_size, grad_accum=1, eval_interval=q.eval_interval,
                                eval_batches=q.eval_batches, checkpoint_steps=[])
    return Run(dataclasses.replace(p, train=train), runs_root=run.root.parent, figures_root=run.figures.parent)


def train_corpora(run: Run, progress: bool = True) -> dict[str, ModelRun]:
    """The same model, from the same initialisation, trained on each corpus for the same number of tokens."""
    dirs = corpora(run, progress)
    q, trun = run.params.quality, _training_run(run)
    names = list(dirs)
    labels = [f"quality-{_slug(name)}" for name in names]
    kws = [dict(max_steps=q.max_steps, lr=q.lr, min_lr=q.lr / 10, checkpoint_steps=[], shards_dir=dirs[name])
           for name in names]
    slots = sweep_slots(q.jobs, run.params.train.device)
    if len(slots) > 1 and len(names) > 1:
        return dict(zip(names, train_in_parallel(trun, [model_params(run)] * len(names), labels, kws, slots,
                                                  progress)))
    out = {}
    for i, (name, label, kw) in enumerate(zip(names, labels, kws), 1):
        out[name] = train_model(trun, model_params(run), progress=progress, label=label,
                                desc=f"[{i}/{len(names)}] {name}", **kw)
    if progress:
        print(reused_line(list(out.values())), flush=True)
    return out


def figure_data(run: Run, models: dict[str, ModelRun]) -> dict:
    """What the figure is drawn from and the claims read: per corpus its role, final bits per byte over
    the whole validation text, and the curve (tokens seen, bits per byte estimated on `eval_batches`)."""
    dirs = corpora(run, progress=False)
    rows = []
    for name, m in models.items():
        meta = Run.artifact(dirs[name])
        rows.append({"corpus": name, "role": meta["role"], "val_bpb": m.val_bpb, "val_loss": m.val_loss,
                     "train_tokens": meta["train_tokens"], "tokens_seen": m.summary["train_tokens"],
                     "n_stories": meta["n_stories"], "unique_stories": meta["unique_stories"],
                     "short": meta["short"], "model": m.label,
                     "curve": [[r["tokens"], r["val_bpb"]] for r in m.metrics if "val_bpb" in r]})
    f = Run.artifact(quality_filter(run, progress=False))
    return {"corpora": rows, "validation": {"stories": Run.artifact(next(iter(dirs.values())))["val_stories"]},
            "filter": {k: f.get(k) for k in ("annotator", "classifier", "label_threshold", "keep_threshold",
                                             "kept_fraction", "test", "by_truth", "skipped")},
            "model": dataclasses.asdict(model_params(run)), "steps": run.params.quality.max_steps}


def corpora_table(run: Run) -> str:
    """Markdown: each corpus as cut to the budget, before any model is trained on it."""
    lines = ["| corpus | role | tokens | stories (unique) | note |", "|---|---|---:|---:|---|"]
    for name, d in corpora(run, progress=False).items():
        m = Run.artifact(d)
        lines.append(f"| {name} | {m['role']} | {m['train_tokens']:,} | {m['n_stories']:,} ({m['unique_stories']:,}) "
                     f"| {m['note']} |")
    return "\n".join(lines)


def results_table(data: dict) -> str:
    """Markdown: one row per corpus, best first."""
    lines = ["| corpus | role | validation bits per byte | tokens (unique) | stories (unique) |",
             "|---|---|---:|---:|---:|"]
    for r in sorted(data["corpora"], key=lambda r: r["val_bpb"] if r["val_bpb"] is not None else float("inf")):
        bpb = f"{r['val_bpb']:.3f}" if r["val_bpb"] is not None else "-"
        lines.append(f"| {r['corpus']} | {r['role']} | {bpb} | {r['train_tokens']:,} | "
                     f"{r['n_stories']:,} ({r['unique_stories']:,}) |")
    return "\n".join(lines)


def filter_table(info: dict) -> str:
    """Markdown: the classifier against the held-out labels, and what it kept of each kind of pool story."""
    def f(x):
        return f"{x:.2f}" if x is not None else "-"

    if info.get("skipped"):
        return f"No filter in this run: {info['skipped']}."
    t = info["test"]

    lines = [f"Annotator: {info['annotator']}; a story is good at a mean grade of {info['label_threshold']:g} or "
             f"more ({f(info['good_share'])} of {info['n_labelled']} labelled). Classifier: {info['classifier']}, "
             f"keeps P(good) >= {info['keep_threshold']:g}.", "",
             "| held-out labels | precision | recall | accuracy | F1 | n |", "|---|---:|---:|---:|---:|---:|",
             f"| good = kept | {f(t['precision'])} | {f(t['recall'])} | {f(t['accuracy'])} | {f(t['f1'])} | {t['n']} |",
             "", "| pool stories | n | mean grade (annotated) | labelled good | kept by the classifier |",
             "|---|---:|---:|---:|---:|"]
    for kind, b in info["by_truth"].items():
        lines.append(f"| {kind} | {b['n']:,} | {f(b['mean_grade'])} | {f(b['labelled_good'])} | {f(b['kept_share'])} |")
    lines.append(f"| all | {info['n_pool']:,} | | | {f(info['kept_fraction'])} ({info['n_kept']:,}) |")
    return "\n".join(lines)
