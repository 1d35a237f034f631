"""Training throughput: our GPT-Neo training step vs the two models a user would otherwise train.

Configs 1M, 3M, 8M, 33M with vocab 10k, context 512, batch 8. One step is exactly train.py's: a batch
from `Batches`, loss = model(x, y), backward, loss.item(), clip_grad_norm_(1.0), fused AdamW step (decay /
no-decay groups), zero_grad(set_to_none=True). Two baselines take the same step:
  - plain: bench/plain_gpt.py, the nanoGPT-style decoder of the same dims with causal SDPA and a plain
    cross-entropy (aim: ours >= 1.5x);
  - transformers: GPTNeoForCausalLM built from `hf.config_to_hf(cfg)` (its eager attention; labels=x,
    shifted inside, same amount of work) (aim: ours >= 5x).
Where the CPU has bf16 matrix units (AMX or AVX512-BF16), our step under `train.cpu_bf16` is timed too
and compared with the plain fp32 step (what the user copying nanoGPT runs on a CPU); `--no-bf16` skips it.

Steps of all models are interleaved (ours, plain, HF, ours, ...) so that changes in machine load hit
them alike; tokens/s = tokens per step / median step time. Then: validation-loss throughput of ours
(`train.evaluate`, no grad) against our own training step, and a torch.profiler breakdown of our 1M step.

    python bench/bench_train.py [--quick] [--threads 2] [--configs 1M,3M,8M,33M] [--no-bf16]
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from contextlib import nullcontext

import numpy as np
import torch
from common import Row, Timer, cpu_has_bf16, parse_args, print_table, start
from plain_gpt import PlainGPT

from tinystories_lib.lm.interop.hf import config_to_hf
from tinystories_lib.lm.model import GPTNeo, named_config
from tinystories_lib.lm.train import Batches, evaluate

VOCAB, CONTEXT = 10_000, 512


def adamw(model: torch.nn.Module) -> torch.optim.Optimizer:
    """The optimizer exactly as train.py builds it (defaults of TrainConfig)."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                             lr=3e-3, betas=(0.9, 0.99), fused=True)


def make_step(model, batches: Batches, hf: bool, device: torch.device | None = None, cpu_bf16: bool = False):
    """train.py's step: on CUDA under bf16 autocast, as train.py runs it there; on CPU too with
    `cpu_bf16` (train.cpu_bf16)."""
    device = device or torch.device("cpu")
    opt = adamw(model)
    autocast = nullcontext
    if device.type == "cuda" or cpu_bf16:
        autocast = lambda: torch.autocast(device.type, dtype=torch.bfloat16)  # noqa: E731
    model.train()

    def step(i: int) -> float:
        x, y = (t.to(device, non_blocking=True) for t in batches.get(i))
        with autocast():
            loss = model(input_ids=x, labels=x).loss if hf else model(x, y)[1]
        loss.backward()
        value = loss.item()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return value

    return step


def interleaved(steps: dict, warmup: int, timed: int) -> dict[str, list[float]]:
    """Warm each up, then time `timed` rounds of one step of each, in turn."""
    for fn in steps.values():
        for i in range(warmup):
            fn(i)
    times = defaultdict(list)
    for r in range(timed):
        for name, fn in steps.items():
            with Timer() as t:
                fn(warmup + r)
            times[name].append(t.s)
    return times


PROFILED_HIDDEN = named_config("1M").hidden  # the profiled model's; ops on (vocab, hidden) weights are not the loss
CATEGORIES = [  # (label, test on (op name, input shapes)); first match wins
    ("lm_head matmuls (logits, d/dhidden, d/dweight)", lambda n, s: n in ("aten::mm", "aten::addmm", "aten::addmm_",
                                                                         "aten::linear") and VOCAB in s),
    # the chunked loss (lm.chunked_loss.output_and_loss): logsumexp, softmax - onehot in place, on (rows, vocab) chunks
    ("cross-entropy (softmax over the vocabulary, fwd + bwd)", lambda n, s: "log_softmax" in n or "nll_loss" in n
     or (VOCAB in s and PROFILED_HIDDEN not in s and n != "aten::copy_")),
    ("attention (SDPA flash kernel, fwd + bwd)", lambda n, s: "scaled_dot_product" in n),
    ("other matmuls (q/k/v/out proj, MLP)", lambda n, s: n in ("aten::mm", "aten::addmm", "aten::bmm")),
    ("layernorm (fwd + bwd)", lambda n, s: "layer_norm" in n),
    ("GELU (fwd + bwd)", lambda n, s: "gelu" in n),
    ("optimizer (fused AdamW)", lambda n, s: "adam" in n),
    ("grad clipping (norms, scale)", lambda n, s: "norm" in n or n == "aten::_foreach_mul_"),
    ("embeddings (fwd + bwd)", lambda n, s: "embedding" in n or "index_select" in n),
]


def profile_step(step, first: int, n: int, tokens: int) -> list[tuple[str, float]]:
    """Profile n steps; print self-CPU ms per step by category and the top ops; return the categories."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for i in range(n):
            step(first + i)
    cats = defaultdict(float)
    for ev in prof.key_averages(group_by_input_shape=True):
        if ev.self_cpu_time_total <= 0:
            continue
        dims = {d for shape in ev.input_shapes or [] if isinstance(shape, list) for d in shape if isinstance(d, int)}
        label = next((c for c, test in CATEGORIES if test(ev.key, dims)), "elementwise / copies / fills / rest")
        cats[label] += ev.self_cpu_time_total / 1000 / n
    total = sum(cats.values())
    print(f"\n   profile of our 1M step (self CPU time per step, {n} steps, {tokens} tokens each):")
    print("| where | ms / step | share |\n|---|---:|---:|")
    for label, ms in sorted(cats.items(), key=lambda kv: -kv[1]):
        print(f"| {label} | {ms:.0f} | {ms / total:.0%} |")
    print(f"| total (profiled) | {total:.0f} | 100% |")
    print("\n   top ops:")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=60))
    return sorted(cats.items(), key=lambda kv: -kv[1])


def main():
    def extra(p):
        p.add_argument("--configs", default="1M,3M,8M,33M")
        p.add_argument("--no-bf16", action="store_true", help="skip our step under train.cpu_bf16")

    args = parse_args(__doc__.splitlines()[0], extra)
    info = start(args, "bench_train: training step tokens/s, ours vs a plain SDPA decoder and transformers GPTNeoForCausalLM")
    names = ["1M"] if args.quick else args.configs.split(",")
    batch = 2 if args.quick else 8
    warmup, timed = (1, 2) if args.quick else (2, 5)
    eval_batches = 2 if args.quick else 4
    rng = np.random.default_rng(0)
    data = rng.integers(0, VOCAB, 2_000_000, dtype=np.uint16)  # throughput does not depend on the text
    train_b = Batches(data, CONTEXT, batch, seed=1)
    tokens = batch * CONTEXT
    print(f"   batch {batch} x context {CONTEXT} = {tokens} tokens/step; warm-up {warmup}, timed {timed} "
          f"interleaved steps each; eval {eval_batches} batches")

    from transformers import GPTNeoForCausalLM

    bf16 = not args.no_bf16 and cpu_has_bf16()
    print(f"   our step under train.cpu_bf16: {'timed' if bf16 else 'skipped (--no-bf16, or no AMX/AVX512-BF16)'}")
    rows = []
    for name in names:
        cfg = named_config(name, vocab_size=VOCAB)
        torch.manual_seed(0)
        ours = GPTNeo(cfg)
        plain = PlainGPT.like(cfg)
        hf = GPTNeoForCausalLM(config_to_hf(cfg))
        steps = {"ours": make_step(ours, train_b, False), "plain": make_step(plain, train_b, False),
                 "hf": make_step(hf, train_b, True)}
        if bf16:  # its own optimizer: only speed is compared
            steps["ours bf16"] = make_step(ours, train_b, False, cpu_bf16=True)
        times = interleaved(steps, warmup, timed)
        tps = {k: tokens / statistics.median(v) for k, v in times.items()}
        print(f"   {name}: step times " + ", ".join(f"{k} {[round(t, 2) for t in v]} s" for k, v in times.items()),
              flush=True)
        rows.append(Row(f"train step {name}", tps["ours"], tps["plain"], "tokens/s",
                        "plain SDPA decoder, same dims (bench/plain_gpt.py, measured here)", target=1.5))
        rows.append(Row(f"train step {name}", tps["ours"], tps["hf"], "tokens/s",
                        "transformers GPTNeoForCausalLM, same step (measured here)", target=5.0))
        if bf16:
            rows.append(Row(f"train step {name}, train.cpu_bf16", tps["ours bf16"], tps["plain"], "tokens/s",
                            "plain SDPA decoder in fp32 (measured here)", target=1.5))
            rows.append(Row(f"train step {name}, train.cpu_bf16", tps["ours bf16"], tps["hf"], "tokens/s",
                            "transformers in fp32 (measured here)", target=5.0))
        # Validation loss: train.evaluate (no grad, eval mode) on fixed batches; one batch of warm-up.
        evaluate(ours, train_b, 1, "cpu")
        with Timer() as t:
            evaluate(ours, train_b, eval_batches, "cpu")
        rows.append(Row(f"eval (val loss, no grad) {name}", eval_batches * tokens / t.s, tps["ours"], "tokens/s",
                        "our own training step (measured here)", note="forward only: ~3x expected"))
        del ours, plain, hf

    # Where the time goes: our 1M step under torch.profiler (after its own warm-up).
    cfg = named_config("1M", vocab_size=VOCAB)
    torch.manual_seed(0)
    step = make_step(GPTNeo(cfg), train_b, False)
    step(0)
    profile_step(step, 1, 1 if args.quick else 2, tokens)
    print_table(rows, args, info)


if __name__ == "__main__":
    main()
