"""Training: AdamW, warmup + cosine, clipping, accumulation, evaluation, atomic checkpoints, exact resume.

A run lives in one directory:
    config.json          model + training config (what `load_model` reads)
    model.safetensors    the final weights (written when the run completes)
    metrics.jsonl        one row per log/eval step: loss, val_loss, lr, tokens, tokens/s, wall time
    summary.json         the finished run: steps, final validation loss (and bits per byte over the whole
                         validation shard), sizes, FLOPs (written last)
    checkpoints/step_NNNNNN/  model + optimizer + RNG state (lm.checkpoints); `checkpoints/latest.json` names
                         the newest.
Resume is exact: batch k is drawn from an RNG seeded by (seed, k), so the data order needs no state
beyond the step, and the optimizer and RNG states and the running loss of the next log row are in the
checkpoint; metrics.jsonl is cut back to the step resumed from, so a resumed run logs the same rows as an
uninterrupted one. A damaged checkpoint falls back to the previous kept one, a damaged final model is
rebuilt from the last checkpoint. Nothing is unpickled on load. One process at a time trains into a
directory (locks.exclusive); a second is refused, naming the first.
Under `torchrun`, the same entry point trains with DistributedDataParallel: each rank takes its slice of
the same global batch, so N processes see exactly what one process with N times the batch would.
A finished run is reused when its config says the same thing is learned (`what_is_learned`), and never
overwritten by another configuration.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from tinystories_lib.lm.checkpoints import (
    DamagedWeights,
    TrainingDiverged,
    _atomic_json,
    load_checkpoint,
    read_weights,
    resume_candidates,
    save_checkpoint,
    save_model,
)
from tinystories_lib.lm.model import GPTNeo, GPTNeoConfig
from tinystories_lib.lm.scoring import bits_per_byte, shard_nll
from tinystories_lib.locks import exclusive, temp_path
from tinystories_lib.params import TrainParams


@dataclass
class TrainConfig(TrainParams):
    """The profile's `train` section (batch_size is per process and micro-step) plus run-level settings."""

    seed: int = 1337
    log_interval: int = 10
    keep_last: int = 1  # rolling checkpoints kept besides `checkpoint_steps`

    @classmethod
    def from_params(cls, p, seed: int, **overrides) -> TrainConfig:
        d = {k: v for k, v in asdict(p).items() if k in cls.__dataclass_fields__}
        d.update(seed=seed, **overrides)
        return cls(**d)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to `lr`, then cosine decay to `min_lr` at `max_steps`."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


def pick_device(name: str = "auto") -> torch.device:
    """"auto" (CUDA, else Apple's MPS, else CPU) or a torch device name, checked to exist here."""
    if name != "auto":
        try:
            device = torch.device(name)
        except RuntimeError:
            raise ValueError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {name!r} asked for, but this torch has no usable CUDA GPU "
                             f"(torch {torch.__version__}): use auto or cpu, or install a CUDA build of torch")
        if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ValueError(f"device {name!r} asked for, but MPS is not available here: use auto or cpu")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


class Batches:
    """Random windows of a token shard; batch (step, micro) is a pure function of the seed."""

    def __init__(self, data: np.ndarray, context: int, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        if len(data) <= context + 1:
            raise ValueError(f"shard has {len(data)} tokens, fewer than one window of {context + 1}: add more data")
        self.data, self.context, self.batch_size = data, context, batch_size
        self.seed, self.rank, self.world = seed, rank, world

    def get(self, step: int, micro: int = 0, stream: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, stream, step, micro])
        starts = rng.integers(0, len(self.data) - self.context - 1, self.batch_size * self.world)
        starts = starts[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]
        win = np.stack([self.data[s : s + self.context + 1] for s in starts]).astype(np.int64)
        t = torch.from_numpy(win)
        return t[:, :-1], t[:, 1:]


# ---------------------------------------------------------------- metrics


def read_metrics(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a torn last line from a kill: everything before it is good
    return rows


def _truncate_metrics(path: Path, step: int) -> None:
    """Before training, drop rows logged after the step it starts from (0 for a fresh start): a killed run
    logged them, and this one logs them again."""
    if not path.exists():
        return
    rows = [r for r in read_metrics(path) if r["step"] <= step]
    tmp = temp_path(path)
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(path)


def what_is_learned(run_config: dict | None) -> dict | None:
    """A run's config without the settings that change only its speed (TrainParams.HOW_NOT_WHAT: threads,
    device, compile): what decides whether a finished run can be reused, and the artifact key of a model
    (stages.models.train_model)."""
    if not run_config:
        return run_config
    train = {k: v for k, v in run_config.get("train", {}).items() if k not in TrainParams.HOW_NOT_WHAT}
    # The tokenizer's hash is recorded for Codec.load to check; the shards' key already says what it is.
    return {k: v for k, v in run_config.items() if k != "tokenizer_sha256"} | {"train": train}


@torch.no_grad()
def evaluate(model, batches: Batches, n_batches: int, device, autocast=nullcontext) -> float:
    """Mean loss over `n_batches` fixed validation batches (the same every time)."""
    was_training = model.training
    model.eval()
    losses = []
    for i in range(n_batches):
        x, y = batches.get(i, stream=1)
        with autocast():
            _, loss = model(x.to(device), y.to(device))
        losses.append(loss.item())
    model.train(was_training)
    mean = float(np.mean(losses))
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        t = torch.tensor([mean], device=device)  # each rank saw its slice of the same batches
        torch.distributed.all_reduce(t)
        mean = t.item() / torch.distributed.get_world_size()
    return mean


# ---------------------------------------------------------------- the loop


def _dist_info() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")), world


def init_distributed(device_type: str = "cpu") -> tuple[int, int]:
    """Under torchrun, join the process group (NCCL on GPUs, gloo on CPUs); returns (rank, world)."""
    rank, local_rank, world = _dist_info()
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            if device_type == "cuda":  # before the first collective, or every rank syncs on GPU 0
                torch.cuda.set_device(local_rank)
            dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
            # Leave the group before the interpreter exits: a rank that exits with its group alive can
            # abort in the communication threads' teardown ("terminate called without an active exception").
            atexit.register(_leave_process_group)
    return rank, world


def _leave_process_group() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def train(
    model_cfg: GPTNeoConfig,
    cfg: TrainConfig,
    train_data: np.ndarray,
    val_data: np.ndarray,
    out_dir: str | Path,
    *,
    progress: bool = True,
    desc: str = "training",
    stop_after: int | None = None,
    extra_config: dict | None = None,
    val_bytes: int | None = None,
) -> dict:
    """Train (or resume, or skip if finished) a model in `out_dir`. Returns a summary dict.

    `stop_after` ends the run early at that step with a checkpoint, exactly as an interruption would.
    `val_bytes` (the UTF-8 bytes of the validation text, `scoring.text_bytes`) adds bits per byte: an
    estimate beside each validation loss, and the whole validation shard scored at the end."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Two processes in one directory would log every step twice and overwrite each other's checkpoints;
    # under torchrun the master holds the lock for all ranks.
    with exclusive(out_dir, "training into") if _dist_info()[0] == 0 else nullcontext():
        return _train(model_cfg, cfg, train_data, val_data, out_dir, progress=progress, desc=desc,
                      stop_after=stop_after, extra_config=extra_config, val_bytes=val_bytes)


def _train(model_cfg, cfg, train_data, val_data, out_dir: Path, *, progress, desc, stop_after, extra_config,
           val_bytes) -> dict:
    rank, local_rank, world = _dist_info()
    ddp = world > 1
    device = pick_device(cfg.device)
    if ddp:
        init_distributed(device.type)
        if device.type == "cuda":
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
    if device.type == "cpu":
        # 0: all cores, unless the launcher chose (torchrun sets OMP_NUM_THREADS for each of its processes)
        torch.set_num_threads(cfg.threads or int(os.environ.get("OMP_NUM_THREADS") or 0) or os.cpu_count() or 1)
    master = rank == 0
    summary_path = out_dir / "summary.json"
    run_config = {"model": model_cfg.to_dict(), "train": asdict(cfg), "world_size": world, **(extra_config or {})}
    if summary_path.exists() and (out_dir / "model.safetensors").exists():
        done = json.loads(summary_path.read_text())
        if what_is_learned(done.get("config")) != what_is_learned(run_config):
            # A finished model is never overwritten: a directory is meant for one configuration.
            raise ValueError(f"{out_dir} holds a finished model trained with other settings; train into another "
                             "directory, or delete this one to retrain it")
        try:
            read_weights(out_dir / "model.safetensors", "rebuilding it from the last checkpoint")
            return done | {"skipped": True}
        except DamagedWeights as e:  # the final checkpoint holds the same weights: resumed from below
            print(f"note: {e}", flush=True)

    torch.manual_seed(cfg.seed)
    model = GPTNeo(model_cfg).to(device)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    # Fused AdamW: CUDA since torch 2.0, CPU since 2.4 (the floor in pyproject is 2.2).
    fused = device.type == "cuda" or (device.type == "cpu" and torch.torch_version.TorchVersion(torch.__version__) >= "2.4")
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr, betas=(0.9, cfg.beta2), fused=fused,
    )
    start, loss_acc, n_acc = 0, 0.0, 0
    saved = json.loads((out_dir / "config.json").read_text()) if (out_dir / "config.json").exists() else {}
    # A checkpoint of another world size saw other batches: it is not this run's to resume.
    if (saved.get("model") == run_config["model"] and saved.get("train", {}).get("seed") == cfg.seed
            and saved.get("world_size", 1) == world):
        for ck in resume_candidates(out_dir):
            try:
                state = load_checkpoint(ck, model, opt)
            except DamagedWeights as e:  # it is rewritten when training reaches its step again
                print(f"note: {e}", flush=True)
                continue
            start, loss_acc, n_acc = int(state["step"]), state.get("loss_acc", 0.0), state.get("n_acc", 0)
            break
    if master:
        _truncate_metrics(out_dir / "metrics.jsonl", start)
        _atomic_json(out_dir / "config.json", run_config)

    step_model = model
    if cfg.compile:
        step_model = torch.compile(model)
    if ddp:
        from torch.nn.parallel import DistributedDataParallel

        step_model = DistributedDataParallel(step_model, device_ids=[local_rank] if device.type == "cuda" else None)
    autocast = nullcontext
    if device.type == "cuda" or (device.type == "cpu" and cfg.cpu_bf16):
        autocast = lambda: torch.autocast(device.type, dtype=torch.bfloat16)  # noqa: E731

    train_b = Batches(train_data, model_cfg.context, cfg.batch_size, cfg.seed, rank, world)
    val_b = Batches(val_data, model_cfg.context, cfg.batch_size, cfg.seed, rank, world)
    tokens_per_step = cfg.batch_size * cfg.grad_accum * model_cfg.context * world
    keep = set(cfg.checkpoint_steps)
    metrics = open(out_dir / "metrics.jsonl", "a") if master else None
    bar = None
    if progress and master:
        from tinystories_lib.progress import bar as progress_bar

        bar = progress_bar(total=cfg.max_steps, initial=start, desc=desc, unit="step", dynamic_ncols=True)

    def log(row: dict):
        if metrics:
            metrics.write(json.dumps(row) + "\n")
            metrics.flush()

    t_start = time.perf_counter()
    t_last, tokens_last = t_start, 0
    done_acc = (loss_acc, n_acc)  # the running loss at the last completed step: what an interrupt saves
    last_val, last_step_evaluated = None, None
    model.train()
    step = start
    try:
        while step < cfg.max_steps:
            lr = lr_at(step, cfg)
            for g in opt.param_groups:
                g["lr"] = lr
            for micro in range(cfg.grad_accum):
                x, y = train_b.get(step, micro)
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                sync = nullcontext()
                if ddp and micro < cfg.grad_accum - 1:
                    sync = step_model.no_sync()
                with sync, autocast():
                    _, loss = step_model(x, y)
                    (loss / cfg.grad_accum).backward()
                loss_acc += loss.item()
                n_acc += 1
            if not math.isfinite(loss_acc):
                raise TrainingDiverged(
                    f"loss became {loss_acc} at step {step} in {out_dir}; the last good checkpoint is kept. "
                    f"Lower train.lr (now {cfg.lr}), raise train.warmup_steps, or check the data."
                )
            # A finite loss can still have overflowing gradients; the norm (computed for clipping anyway)
            # catches them before they reach the weights.
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
            if not math.isfinite(norm.item()):
                raise TrainingDiverged(
                    f"gradients became {norm.item()} at step {step} in {out_dir} (loss {loss_acc / n_acc:.4g}); the "
                    f"last good checkpoint is kept. Lower train.lr (now {cfg.lr}) or set train.grad_clip.")
            opt.step()
            step += 1
            done_acc = (loss_acc, n_acc)
            opt.zero_grad(set_to_none=True)
            tokens_last += tokens_per_step
            if bar:
                bar.update(1)
            is_eval = step % cfg.eval_interval == 0 or step == cfg.max_steps
            if step % cfg.log_interval == 0 or is_eval:
                now = time.perf_counter()
                train_loss = loss_acc / n_acc
                if ddp:
                    import torch.distributed as dist

                    t = torch.tensor([train_loss], device=device)
                    dist.all_reduce(t)
                    train_loss = t.item() / world
                row = {"step": step, "train_loss": train_loss, "lr": lr, "tokens": step * tokens_per_step,
                       "tokens_per_s": tokens_last / max(now - t_last, 1e-9), "wall_s": now - t_start}
                loss_acc, n_acc, t_last, tokens_last = 0.0, 0, now, 0
                done_acc = (0.0, 0)
                if is_eval:
                    last_val = evaluate(model, val_b, cfg.eval_batches, device, autocast)
                    if not math.isfinite(last_val):  # never checkpoint weights that already diverged
                        raise TrainingDiverged(
                            f"validation loss became {last_val} at step {step} in {out_dir}; the last good "
                            f"checkpoint is kept. Lower train.lr (now {cfg.lr}) or raise train.warmup_steps.")
                    row["val_loss"], last_step_evaluated = last_val, step
                    if val_bytes:  # the same loss per byte, at the shard's bytes per token
                        row["val_bpb"] = last_val / math.log(2) * len(val_data) / val_bytes
                    row["eval_s"] = time.perf_counter() - now
                    t_last = time.perf_counter()  # evaluation time is not training throughput
                log(row)
                if bar:
                    bar.set_postfix(loss=f"{train_loss:.3f}", **({"val": f"{last_val:.3f}"} if is_eval else {}))
            save_now = is_eval or step in keep or (stop_after is not None and step >= stop_after)
            if master and save_now:
                save_checkpoint(out_dir, step, model, opt, keep, cfg.keep_last, {"loss_acc": loss_acc, "n_acc": n_acc})
            if stop_after is not None and step >= stop_after:
                if ddp:
                    barrier()  # the checkpoint is written before any rank returns
                return {"stopped_at": step, "out_dir": str(out_dir)}
    except KeyboardInterrupt:
        if master and step > start:
            save_checkpoint(out_dir, step, model, opt, keep, cfg.keep_last,
                            {"loss_acc": done_acc[0], "n_acc": done_acc[1]})
        raise
    finally:
        if bar:
            bar.close()
        if metrics:
            metrics.close()

    if last_step_evaluated != step:
        # Resumed from the final checkpoint (a kill between it and the final save): evaluate the weights
        # as the last step would have, so the summary has its loss.
        last_val = evaluate(model, val_b, cfg.eval_batches, device, autocast)
    summary = {"config": run_config, "steps": step, "final_val_loss": last_val,
               "params": model.num_params(non_embedding=False),
               "params_non_embedding": model.num_params(non_embedding=True),
               "train_tokens": step * tokens_per_step, "train_flops": model.flops_per_token() * step * tokens_per_step,
               "wall_s_this_session": time.perf_counter() - t_start}
    if val_bytes:
        nll, n = shard_nll(model, val_data, device=device)
        summary |= {"val_bpb": bits_per_byte(nll, val_bytes), "val_loss_full": nll / n, "val_bytes": val_bytes}
    if master:
        save_model(model, out_dir)
        _atomic_json(summary_path, summary)
    if ddp:
        barrier()  # no rank returns before the master has written the model
    return summary
