"""GPU training throughput and model FLOPs utilisation: the 33M config at context 512, bf16, compiled.

The step is train.py's on CUDA: bf16 autocast, loss = model(x, y), backward, loss.item(),
clip_grad_norm_(1.0), fused AdamW (decay / no-decay groups), zero_grad(set_to_none=True), with the model
under torch.compile (`--no-compile` for eager). Baselines measured in the same run, on the same device and
batches: our own model eager, and transformers' GPTNeoForCausalLM (same config, bf16 autocast, eager,
labels=x). Steps of the variants are interleaved after their warm-up (compiling happens in the warm-up).

MFU = model FLOPs per token (`GPTNeo.flops_per_token`: 6N plus attention, PaLM appendix B) x tokens/s /
the device's dense bf16 peak (a table of known devices, or --peak-tflops).

    python bench/bench_train_gpu.py [--config 33M] [--batch 64] [--steps 20] [--device auto]

`--device cpu --quick --no-compile` runs the same code on a CPU (to check the script, not to measure).
"""

from __future__ import annotations

import statistics

import numpy as np
import torch
from bench_train import make_step  # train.py's step, bf16 autocast on CUDA
from common import Row, Timer, parse_args, print_table, start

from tinystories_lib.lm.interop.hf import config_to_hf
from tinystories_lib.lm.model import GPTNeo, named_config
from tinystories_lib.lm.train import Batches

VOCAB, CONTEXT = 10_000, 512
# Dense bf16 tensor-core peaks (TFLOP/s, without sparsity) from the vendors' data sheets.
PEAK_BF16_TFLOPS = {"H200": 989.4, "H100 SXM": 989.4, "H100 80GB HBM3": 989.4, "H100 PCIe": 756.0,
                    "H100 NVL": 835.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0}


def peak_tflops(device: torch.device, override: float | None) -> tuple[float | None, str]:
    if override:
        return override, "given by --peak-tflops"
    if device.type != "cuda":
        return None, "no peak for CPUs"
    name = torch.cuda.get_device_name(device)
    for key, value in PEAK_BF16_TFLOPS.items():
        if key in name:
            return value, f"{name}: dense bf16 peak of the {key} data sheet"
    return None, f"{name}: unknown peak (pass --peak-tflops)"


def main():
    def extra(p):
        p.add_argument("--config", default="33M")
        p.add_argument("--batch", type=int, default=64)
        p.add_argument("--steps", type=int, default=20, help="timed steps of each variant")
        p.add_argument("--device", default="auto", help="auto: cuda if there is one, else skip (as `make bench` does)")
        p.add_argument("--no-compile", action="store_true")
        p.add_argument("--peak-tflops", type=float, default=None)

    args = parse_args(__doc__.splitlines()[0], extra)
    if args.device == "auto" and not torch.cuda.is_available():
        print("== bench_train_gpu: skipped, no CUDA device here (--device cpu runs it on the CPU, to check the script)")
        return
    device = torch.device("cuda" if args.device == "auto" else args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here: run on a GPU machine, or pass --device cpu to check the script")
    info = start(args, f"bench_train_gpu: {args.config} training tokens/s and MFU on {args.device}")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        print(f"   device: {torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda}")
    batch, timed, warmup = (2, 2, 2) if args.quick else (args.batch, args.steps, 5)
    data = np.random.default_rng(0).integers(0, VOCAB, 4_000_000, dtype=np.uint16)
    batches = Batches(data, CONTEXT, batch, seed=1)
    tokens = batch * CONTEXT
    cfg = named_config(args.config, vocab_size=VOCAB, context=CONTEXT)

    from transformers import GPTNeoForCausalLM

    torch.manual_seed(0)
    ours = GPTNeo(cfg).to(device)
    variants = {"ours, eager": make_step(ours, batches, False, device)}
    if not args.no_compile:
        torch.manual_seed(0)
        variants["ours, compiled"] = make_step(torch.compile(GPTNeo(cfg).to(device)), batches, False, device)
    variants["transformers, eager"] = make_step(GPTNeoForCausalLM(config_to_hf(cfg)).to(device), batches, True, device)
    for name, fn in variants.items():
        with Timer() as t:
            for i in range(warmup):
                fn(i)
        print(f"   warm-up {name}: {t.s:.1f} s ({warmup} steps, compiling included)", flush=True)
    times = {name: [] for name in variants}
    for r in range(timed):
        for name, fn in variants.items():
            with Timer() as t:
                fn(warmup + r)
            times[name].append(t.s)
    tps = {name: tokens / statistics.median(v) for name, v in times.items()}
    flops = ours.flops_per_token()
    peak, peak_note = peak_tflops(device, args.peak_tflops)
    print(f"   {cfg.hidden} hidden x {cfg.layers} layers, {ours.num_params() / 1e6:.1f}M non-embedding params, "
          f"{flops / 1e6:.0f} MFLOP per token; {tokens} tokens a step; peak: {peak_note}")
    best = "ours, compiled" if "ours, compiled" in tps else "ours, eager"
    rows = [Row(f"train step {args.config}, {name}", tps[name], tps["transformers, eager"], "tokens/s",
                f"transformers GPTNeoForCausalLM, {'bf16 autocast, ' if device.type == 'cuda' else ''}eager "
                "(measured here)") for name in tps
            if name != "transformers, eager"]
    if peak:
        for name in tps:
            mfu = flops * tps[name] / (peak * 1e12)
            print(f"   MFU {name}: {mfu:.1%}")
        rows.append(Row(f"MFU {args.config}, {best}", flops * tps[best] / (peak * 1e12) * 100, 100.0, "% of peak",
                        f"dense bf16 peak {peak:g} TFLOP/s ({peak_note})"))
    print_table(rows, args, info)


if __name__ == "__main__":
    main()
