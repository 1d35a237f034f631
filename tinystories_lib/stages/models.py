"""Models: one `train_model` for every model a notebook trains, and the studies built on it.

    train_model(run)       the main model (`model.*`, `train.*`)           runs/<p>/models/main-h..-l..-<key>/
    sweep(run)             the hidden size x layers grid (`sweep.*`)       runs/<p>/models/h..-l..-<key>/
    heads_study(run)       attention heads at one shape (`sweep.heads_study*`)
    stages.instruct        the Instruct model, on its own token shards (train_model with `shards_dir`)
A model's directory is keyed by what is learned: the token shards it reads (by their key), its shape and
the training settings that change the weights; never a path, a thread count or a device. So a finished
model is reused from wherever the runs folder lies, by a sequential or a parallel sweep alike, and an
interrupted one resumes from its last checkpoint.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from tinystories_lib.lm.model import GPTNeoConfig
from tinystories_lib.lm.sample import SamplingConfig
from tinystories_lib.lm.tokenizer import TOKENIZER_FILES, Codec, read_shard, tokenizer_sha256
from tinystories_lib.lm.train import (
    TrainConfig,
    barrier,
    init_distributed,
    pick_device,
    read_metrics,
    train,
    what_is_learned,
)
from tinystories_lib.locks import temp_path
from tinystories_lib.params import ModelParams, TrainParams
from tinystories_lib.runs import Run
from tinystories_lib.stages.shards import shards


@dataclass
class ModelRun:
    label: str
    hidden: int
    layers: int
    heads: int
    dir: Path
    summary: dict

    @property
    def metrics(self) -> list[dict]:
        return read_metrics(self.dir / "metrics.jsonl")

    @property
    def val_loss(self) -> float:
        """Validation loss in nats per token over the whole validation shard, the text `val_bpb` is measured
        on; the last in-training evaluation (`train.eval_batches` batches) where the whole shard was not
        scored (no byte count in the shards, or a model trained before it was kept)."""
        return self.summary.get("val_loss_full", self.summary["final_val_loss"])

    @property
    def val_bpb(self) -> float | None:
        """Bits per byte over the whole validation shard (None for a model trained before it was kept)."""
        return self.summary.get("val_bpb")


def model_config(run: Run, mp: ModelParams, vocab_size: int) -> GPTNeoConfig:
    return GPTNeoConfig(vocab_size=vocab_size, context=mp.context, hidden=mp.hidden, layers=mp.layers,
                        heads=mp.heads, window=mp.window, dropout=mp.dropout)


def schedule(train_params: TrainParams, max_steps: int) -> dict:
    """The warm-up and evaluation cadence for a run of `max_steps`, the same rule for every model: the
    profile's `train.warmup_steps` and `train.eval_interval`, shortened for short runs so that warm-up is
    at most a tenth of training and a loss curve has at least five validation points."""
    return {"max_steps": max_steps,
            "warmup_steps": min(train_params.warmup_steps, max_steps // 10),
            "eval_interval": max(1, min(train_params.eval_interval, max_steps // 5))}


def quarter_checkpoints(max_steps: int) -> list[int]:
    """Checkpoints at 1/4, 1/2 and 3/4 of training, for grading abilities as they emerge."""
    return sorted({max(1, max_steps * q // 4) for q in (1, 2, 3)})


def train_model(run: Run, mp: ModelParams | None = None, progress: bool = True, label: str | None = None,
                *, max_steps: int | None = None, lr: float | None = None, min_lr: float | None = None,
                checkpoint_steps: list[int] | None = None, shards_dir: Path | None = None,
                stop_after: int | None = None, threads: int | None = None, desc: str | None = None) -> ModelRun:
    """Train one model, or reuse it when finished, or resume it when interrupted.

    Defaults are the main model's: shape `model.*`, the profile's shards, and `train.*` (`max_steps`,
    `lr`, `min_lr`, `checkpoint_steps`); studies pass their own. `shards_dir` is a token shard directory
    made by a stage (default: `shards(run)`); `threads` pins the torch threads of a parallel job (speed only)."""
    p = run.params
    mp = mp or p.model
    rank, world = init_distributed(pick_device(p.train.device).type)
    if shards_dir is None:
        if rank == 0:  # under torchrun, one process builds the data; the others wait for it
            shards(run, progress)
        barrier()
        shards_dir = shards(run, progress=False)
    meta = Run.artifact(shards_dir)
    mcfg = model_config(run, mp, meta["vocab_size"])
    steps = max_steps or p.train.max_steps
    overrides = schedule(p.train, steps)
    overrides["lr"] = p.train.lr if lr is None else lr
    overrides["min_lr"] = p.train.min_lr if min_lr is None else min_lr
    overrides["checkpoint_steps"] = [s for s in (p.train.checkpoint_steps if checkpoint_steps is None
                                                 else checkpoint_steps) if s < steps]
    if threads:
        overrides["threads"] = threads
    tcfg = TrainConfig.from_params(p.train, p.seed, **overrides)
    label = label or f"main-h{mp.hidden}-l{mp.layers}"
    # The shards by their key, not their path; the world size, since N processes train on N times the batch.
    identity = {"label": label, "shards": shards_dir.name}
    key_extra = {"world_size": world} if world > 1 else {}
    key = p.section_hash(extra=what_is_learned({"model": mcfg.to_dict(), "train": asdict(tcfg), **identity,
                                                **key_extra}))
    out = run.stage_dir("models", f"{label}-{key}")
    Codec.load(shards_dir)  # readable and the one the shards were made with, before a model depends on it
    for name in TOKENIZER_FILES:  # a model directory is self-contained for sampling
        src, dst = shards_dir / name, out / name
        if rank == 0 and src.exists() and (not dst.exists() or dst.read_bytes() != src.read_bytes()):
            tmp = temp_path(dst)
            shutil.copy(src, tmp)
            tmp.replace(dst)
    # The tokenizer's hash is recorded in config.json (Codec.load checks it), not keyed: the shards' key is.
    summary = train(mcfg, tcfg, read_shard(shards_dir / "train.bin"), read_shard(shards_dir / "val.bin"), out,
                    progress=progress, desc=desc or label, stop_after=stop_after,
                    extra_config={**identity, "tokenizer_sha256": tokenizer_sha256(shards_dir)},
                    val_bytes=meta.get("val_bytes"))
    return ModelRun(label, mp.hidden, mp.layers, mp.heads, out, summary)


def sweep_params(run: Run) -> list[ModelParams]:
    s, m = run.params.sweep, run.params.model
    return [ModelParams(hidden=h, layers=n, heads=s.heads, context=m.context, window=m.window, dropout=m.dropout)
            for n in s.layers for h in s.hidden]


def _sweep_label(run: Run, mp: ModelParams) -> str:
    base = f"h{mp.hidden}-l{mp.layers}"
    return base if mp.heads == run.params.sweep.heads else f"{base}-a{mp.heads}"


def sweep_lr(run: Run, hidden: int) -> float:
    """The learning rate of a sweep model of width `hidden`: its `sweep.lr_per_hidden` entry, else `sweep.lr`."""
    s = run.params.sweep
    return dict(zip(s.hidden, s.lr_per_hidden)).get(hidden, s.lr)


def _train_sweep_models(run: Run, shapes: list[ModelParams], progress: bool) -> list[ModelRun]:
    """Every model of a study with the sweep's training budget (its width's learning rate); a model
    trained before (by this or another study, same label and parameters) is reused. Checkpoints at 1/4,
    1/2 and 3/4 of training let notebook 04 grade abilities as they emerge. `sweep.jobs` trains several
    at once."""
    s = run.params.sweep
    kws = [dict(max_steps=s.max_steps, lr=sweep_lr(run, mp.hidden), min_lr=sweep_lr(run, mp.hidden) / 10,
                checkpoint_steps=quarter_checkpoints(s.max_steps)) for mp in shapes]
    labels = [_sweep_label(run, mp) for mp in shapes]
    slots = sweep_slots(s.jobs, run.params.train.device)
    if len(slots) > 1 and len(shapes) > 1:
        return train_in_parallel(run, shapes, labels, kws, slots, progress)
    results = []
    for i, (mp, label, kw) in enumerate(zip(shapes, labels, kws)):
        # The count rides on the progress bar of a model that trains; a reused one shows nothing here.
        results.append(train_model(run, mp, progress=progress, label=label, desc=f"[{i + 1}/{len(shapes)}] {label}",
                                   **kw))
    if progress:
        print(reused_line(results), flush=True)
    return results


def reused_line(results: list[ModelRun]) -> str:
    """One line for the models a study found finished, instead of a full progress bar each."""
    reused = [r.label for r in results if r.summary.get("skipped")]
    if not reused:
        return f"trained {len(results)} model{'s' * (len(results) != 1)}"
    shown = ", ".join(reused[:4]) + (f", ... ({len(reused) - 4} more)" if len(reused) > 4 else "")
    trained = len(results) - len(reused)
    return f"reused {len(reused)} model{'s' * (len(reused) != 1)} ({shown})" + (f"; trained {trained}" if trained else "")


def sweep_slots(jobs: int, device: str = "auto") -> list[tuple[str, int]]:
    """(device, torch threads) for each parallel job: one per CUDA device for jobs=0 (or the first `jobs`
    devices), else `jobs` CPU jobs sharing the cores. One slot means: train one model at a time here."""
    import torch

    n_gpu = torch.cuda.device_count() if device in ("auto", "cuda") else 0
    if n_gpu:
        n = n_gpu if jobs == 0 else min(jobs, n_gpu)
        return [(f"cuda:{i}", 0) for i in range(n)]
    n = max(1, jobs)
    return [("cpu", max(1, (os.cpu_count() or 1) // n))] * n


def train_in_parallel(run: Run, shapes, labels, kws, slots, progress: bool) -> list[ModelRun]:
    """Train the models in len(slots) worker processes (spawned: safe with CUDA), each pinned to its slot;
    completed models are reused exactly as in a sequential run, since the artifact keys are the same."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    shards(run, progress)  # build the data once, before the workers look for it
    ctx = multiprocessing.get_context("spawn")
    if progress:
        print(f"training {len(shapes)} models, {len(slots)} at a time on {', '.join(d for d, _ in slots)}", flush=True)
    results: dict[str, ModelRun] = {}
    with ctx.Manager() as manager, ProcessPoolExecutor(len(slots), mp_context=ctx) as pool:
        free = manager.Queue()
        for slot in slots:
            free.put(slot)
        futures = {pool.submit(_sweep_job, run.params, str(run.root.parent), str(run.figures.parent), mp, label, kw,
                               free): label for mp, label, kw in zip(shapes, labels, kws)}
        for n_done, fut in enumerate(as_completed(futures), 1):
            r = fut.result()  # a failed job raises here, with its traceback
            results[r.label] = r
            if progress and not r.summary.get("skipped"):
                print(f"[{n_done}/{len(shapes)}] {r.label}: val loss {r.val_loss:.3f}", flush=True)
    if progress:
        print(reused_line(list(results.values())), flush=True)
    return [results[label] for label in labels]


def _sweep_job(params, runs_root: str, figures_root: str, mp: ModelParams, label: str, kw: dict, free) -> ModelRun:
    """One sweep model in a worker process, on a slot taken from `free` and given back afterwards."""
    device, threads = free.get()
    try:
        import torch

        if device.startswith("cuda"):
            torch.cuda.set_device(device)  # "auto"/"cuda" now means this device; the artifact key is unchanged
        run = Run(params, runs_root=runs_root, figures_root=figures_root)
        return train_model(run, mp, progress=False, label=label, threads=threads or None, **kw)
    finally:
        free.put((device, threads))


def sweep(run: Run, progress: bool = True) -> list[ModelRun]:
    """Train every cell of the hidden size x layers grid (completed cells are reused)."""
    return _train_sweep_models(run, sweep_params(run), progress)


def heads_study(run: Run, progress: bool = True) -> list[ModelRun]:
    """The number of attention heads at one fixed width and depth (`sweep.heads_study*`)."""
    s, m = run.params.sweep, run.params.model
    hidden, layers = s.heads_study_shape
    shapes = [ModelParams(hidden=hidden, layers=layers, heads=h, context=m.context, window=m.window, dropout=m.dropout)
              for h in s.heads_study]
    return _train_sweep_models(run, shapes, progress)


def trained_longer(run: Run, model: ModelRun, max_steps: int, progress: bool = True) -> ModelRun:
    """A sweep model's shape trained for `max_steps` instead of `sweep.max_steps`, at its width's learning
    rate (labelled with its steps; reused when finished): for a study that needs the shape further trained."""
    if max_steps == run.params.sweep.max_steps:
        return model
    mp = ModelParams(hidden=model.hidden, layers=model.layers, heads=model.heads, context=run.params.model.context,
                     window=run.params.model.window, dropout=run.params.model.dropout)
    lr = sweep_lr(run, model.hidden)
    label = f"{_sweep_label(run, mp)}-{max_steps}steps"
    result = train_model(run, mp, progress=progress, label=label, max_steps=max_steps, lr=lr, min_lr=lr / 10,
                         checkpoint_steps=[])
    if progress:
        print(reused_line([result]), flush=True)
    return result


def compute_curves(results: list[ModelRun]) -> dict[str, list[tuple[float, float]]]:
    """(training FLOPs, validation loss) along each model's run, for the loss-vs-compute figure."""
    curves = {}
    for r in results:
        per_token = r.summary["train_flops"] / max(1, r.summary["train_tokens"])
        curves[r.label] = [(m["tokens"] * per_token, m["val_loss"]) for m in r.metrics if "val_loss" in m]
    return curves


def grid(results: list[ModelRun], value=lambda r: r.val_loss) -> tuple[list[int], list[int], np.ndarray]:
    """(layers, hidden sizes, values[layers, hidden]) for a heatmap."""
    hs = sorted({r.hidden for r in results})
    ls = sorted({r.layers for r in results})
    vals = np.full((len(ls), len(hs)), np.nan)
    for r in results:
        vals[ls.index(r.layers), hs.index(r.hidden)] = value(r)
    return ls, hs, vals


def model_rows(results: list[ModelRun], main: ModelRun | None = None) -> list[dict]:
    """One row per model (shape, size, tokens, final validation loss and bits per byte), the grid's
    models with role "grid" and `main` with role "main": the data of the Figure 4 loss figures."""
    return [{"model": r.label, "role": role, "hidden": r.hidden, "layers": r.layers, "heads": r.heads,
             "params": r.summary["params"], "params_non_embedding": r.summary["params_non_embedding"],
             "train_tokens": r.summary["train_tokens"], "val_loss": r.val_loss, "val_bpb": r.val_bpb}
            for role, rs in (("grid", results), ("main", [main] if main else [])) for r in rs]


def summary_table(results: list[ModelRun]) -> str:
    lines = ["| model | params | non-embedding | train tokens | final val loss | val bits per byte |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in results:
        s = r.summary
        lines.append(f"| {r.label} | {s['params'] / 1e6:.3f}M | {s['params_non_embedding'] / 1e6:.3f}M | "
                     f"{s['train_tokens'] / 1e6:.2f}M | {r.val_loss:.3f} | "
                     + (f"{r.val_bpb:.3f} |" if r.val_bpb is not None else "- |"))
    return "\n".join(lines)


def sampling(run: Run) -> SamplingConfig:
    """The profile's sampling settings (`sample.*`) for showing stories."""
    S = run.params.sample
    return SamplingConfig(max_new_tokens=S.max_new_tokens, temperature=S.temperature, top_k=S.top_k,
                          top_p=S.top_p, seed=run.params.seed)


def best(results: list[ModelRun]) -> ModelRun:
    """The model with the lowest final validation loss."""
    return min(results, key=lambda r: r.val_loss)
