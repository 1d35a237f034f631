"""Sampling throughput: our batched KV-cache sampler vs transformers' generate, and stories260K batching.

Part 1, GPT-Neo 1M and 8M (random weights, vocab 10k): 50 prompts of 10-20 tokens, 200 new tokens each,
top-p 0.9, temperature 1, no stop at end-of-text (eot_id=None: every row makes 200 tokens), through
`sample.generate`. Baseline: the same weights written by `hf.to_hf`, loaded with
GPTNeoForCausalLM.from_pretrained, `generate(do_sample=True, top_p=0.9, top_k=0, temperature=1,
max_new_tokens=200, min_new_tokens=200)` on the same prompts left-padded with an attention mask.

Part 2, llama2.c's stories260K (skipped if the file is absent): greedy and temperature-1 sampling of 200
tokens from BOS at batch 1, 8, 32, 64, 128, aggregate tokens/s. Baselines: our own sampler at batch 1, and
llama2.c's `run.c` (from ../shared/baselines/llama2c, where it and a C compiler are present) compiled
here and run on the same checkpoint in the same run: `-Ofast -fopenmp -march=native` with 2 OpenMP
threads (its fast build) against our batched sampler (aim: 2x in aggregate tokens/s), and `-O3` on one
thread against our batch 1 through the compiled decode step, `generate(..., compiled=True)` (aim: 1/3:
what one user feels in the sampler widget; its first call, which compiles, is timed apart). run.c's own
"achieved tok/s" is used (its timer starts after the first token), the median of 11 runs of 200 tokens.

Both GPT-Neo sizes are also timed through the compiled decode step (`generate(..., compiled=True)`; its
first call, which compiles, is timed apart), and 1M at batch 1 compiled against eager (what the sampler
widget does); `--quick` leaves the compiled rows out.

tokens/s counts generated tokens only (prefill time included in the wall time).

    python bench/bench_sample.py [--quick] [--threads 2]
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch
from common import Row, Timer, parse_args, print_table, start

from tinystories_lib.lm.interop.hf import to_hf
from tinystories_lib.lm.interop.llama import BOS_ID, Llama2cTokenizer, load_llama2c
from tinystories_lib.lm.model import GPTNeo, named_config
from tinystories_lib.lm.sample import SamplingConfig, generate

VOCAB = 10_000
SHARED = Path(__file__).resolve().parents[2] / "shared"
STORIES260K = SHARED / "models" / "stories260K"
RUN_C = SHARED / "baselines" / "llama2c" / "run.c"
RUN_C_BUILDS = {"fast": (["-Ofast", "-fopenmp", "-march=native"], 2), "plain": (["-O3"], 1)}  # flags, threads


def hf_generate(hf, prompts: list[list[int]], new: int, seed: int) -> int:
    """transformers' generate on left-padded prompts; returns the number of new tokens made."""
    T = max(map(len, prompts))
    ids = torch.zeros((len(prompts), T), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for b, p in enumerate(prompts):
        ids[b, T - len(p):] = torch.tensor(p)
        mask[b, T - len(p):] = 1
    torch.manual_seed(seed)
    out = hf.generate(input_ids=ids, attention_mask=mask, do_sample=True, top_p=0.9, top_k=0, temperature=1.0,
                      max_new_tokens=new, min_new_tokens=new, pad_token_id=0)
    return (out.shape[1] - T) * len(prompts)


def ours_generate(model, prompts: list[list[int]], cfg: SamplingConfig, compiled: bool = False) -> int:
    return sum(map(len, generate(model, prompts, cfg, eot_id=None, compiled=compiled)))


def gpt_neo_part(args, rows: list[Row]) -> None:
    from transformers import GPTNeoForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # min_new_tokens without an eos id warns once per call
    n_prompts, new = (16, 50) if args.quick else (50, 200)
    rng = np.random.default_rng(0)
    prompts = [rng.integers(1, VOCAB, rng.integers(10, 21)).tolist() for _ in range(n_prompts)]
    cfg = SamplingConfig(max_new_tokens=new, temperature=1.0, top_p=0.9, stop_at_eot=False, seed=0)
    warm = SamplingConfig(max_new_tokens=4, temperature=1.0, top_p=0.9, stop_at_eot=False)
    for name in ["1M"] if args.quick else ["1M", "8M"]:
        torch.manual_seed(0)
        model = GPTNeo(named_config(name, vocab_size=VOCAB)).eval()
        with tempfile.TemporaryDirectory() as d:
            hf = GPTNeoForCausalLM.from_pretrained(to_hf(model, d)).eval()
        ours_generate(model, prompts[:4], warm)
        hf_generate(hf, prompts[:4], 4, 0)
        with Timer() as t_ours:
            n_ours = ours_generate(model, prompts, cfg)
        with Timer() as t_hf:
            n_hf = hf_generate(hf, prompts, new, 0)
        assert n_ours == n_hf == n_prompts * new, (n_ours, n_hf)
        print(f"   {name}: ours {t_ours.s:.2f} s, HF generate {t_hf.s:.2f} s, for {n_prompts} x {new} tokens", flush=True)
        what = f"GPT-Neo {name}, {n_prompts} prompts x {new} tokens, top-p 0.9"
        hf_name = "transformers generate, same weights (measured here)"
        rows.append(Row(what, n_ours / t_ours.s, n_hf / t_hf.s, "tokens/s", hf_name, target=10.0))
        if args.quick:
            continue
        # The compiled decode step (lm/compiled_decode.py) on the same prompts: its first call compiles.
        with Timer() as t_first:
            ours_generate(model, prompts, cfg, compiled=True)
        with Timer() as t_comp:
            n_comp = ours_generate(model, prompts, cfg, compiled=True)
        print(f"   {name} compiled decode: first call (compile) {t_first.s:.1f} s, then {t_comp.s:.2f} s", flush=True)
        rows.append(Row(what + ", compiled decode", n_comp / t_comp.s, n_hf / t_hf.s, "tokens/s", hf_name, target=10.0))
        rows.append(Row(what + ", compiled decode", n_comp / t_comp.s, n_ours / t_ours.s, "tokens/s",
                        "our eager sampler, same prompts (measured here)"))
        if name == "1M":  # one prompt, as in the sampler widget
            one = prompts[:1]
            ours_generate(model, one, cfg, compiled=True)  # compiles batch 1
            with Timer() as t_eager1:
                n1 = ours_generate(model, one, cfg)
            with Timer() as t_comp1:
                ours_generate(model, one, cfg, compiled=True)
            rows.append(Row(f"GPT-Neo {name}, 1 prompt x {new} tokens, top-p 0.9, compiled decode", n1 / t_comp1.s,
                            n1 / t_eager1.s, "tokens/s", "our eager sampler, same prompt (measured here)"))


def run_c_rates(new: int, runs: int = 11) -> dict[str, float] | str:
    """run.c's tokens/s on stories260K per build (`RUN_C_BUILDS`), or why it was not measured."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if not RUN_C.exists() or cc is None:
        return f"{RUN_C} not found" if cc else "no C compiler"
    rates = {}
    with tempfile.TemporaryDirectory() as d:
        for name, (flags, threads) in RUN_C_BUILDS.items():
            exe = Path(d) / f"run-{name}"
            built = subprocess.run([cc, *flags, "-o", str(exe), str(RUN_C), "-lm"], capture_output=True, text=True)
            if built.returncode != 0:
                return f"run.c did not compile ({' '.join(flags)}): {built.stderr.strip()[:200]}"
            env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
            got = []
            for _ in range(runs):
                out = subprocess.run([str(exe), str(STORIES260K / "stories260K.bin"), "-z", str(STORIES260K / "tok512.bin"),
                                      "-t", "0", "-n", str(new)], capture_output=True, text=True, env=env, timeout=60)
                m = re.search(r"achieved tok/s: ([0-9.]+)", out.stderr)
                if out.returncode != 0 or not m:
                    return f"run.c failed: {out.stderr.strip()[:200]}"
                got.append(float(m.group(1)))
            rates[name] = statistics.median(got)
            print(f"   run.c {' '.join(flags)}, {threads} thread(s): median {rates[name]:,.0f} tokens/s "
                  f"(min {min(got):,.0f}, max {max(got):,.0f}, {runs} runs)", flush=True)
    return rates


def stories260k_part(args, rows: list[Row]) -> None:
    path = STORIES260K / "stories260K.bin"
    if not path.exists():
        print(f"   SKIPPED stories260K: {path} not found")
        return
    model = load_llama2c(path)
    new = 50 if args.quick else 200
    batches = [1, 8] if args.quick else [1, 8, 32, 64, 128]
    # Sanity: batch-1 greedy output is llama2.c's reference text (checked only when lengths match).
    ref = STORIES260K / "stories260K_expected_greedy_200tok.txt"
    greedy = SamplingConfig(max_new_tokens=new, temperature=0, stop_at_eot=False)
    if new == 200 and ref.exists():
        text = Llama2cTokenizer(STORIES260K / "tok512.bin").decode([BOS_ID, *generate(model, [[BOS_ID]], greedy)[0]])
        print(f"   stories260K greedy output equals llama2.c's reference: {text.encode() == ref.read_bytes()}")
    for temp in (0.0, 1.0):
        cfg = SamplingConfig(max_new_tokens=new, temperature=temp, stop_at_eot=False, seed=0)
        generate(model, [[BOS_ID]] * 2, SamplingConfig(max_new_tokens=4, temperature=temp, stop_at_eot=False))
        rate = {}
        for b in batches:
            with Timer() as t:
                n = ours_generate(model, [[BOS_ID]] * b, cfg)
            rate[b] = n / t.s
            print(f"   stories260K temp {temp:g} batch {b}: {n} tokens in {t.s:.2f} s", flush=True)
        kind = "greedy" if temp == 0 else "temperature 1"
        for b in batches:
            rows.append(Row(f"stories260K {kind}, batch {b}", rate[b], rate[1], "tokens/s",
                            "our sampler at batch 1 (measured here)"))
        if temp == 0:
            greedy_rate = rate
    # Batch 1 through the compiled decode step (lm/compiled_decode.py): compiled on the first call, timed after.
    with Timer() as t:
        first = generate(model, [[BOS_ID]], greedy, compiled=True)
    same = first == generate(model, [[BOS_ID]], greedy)
    print(f"   stories260K compiled decode: first call (compile) {t.s:.1f} s, same tokens as eager: {same}", flush=True)
    with Timer() as t:
        n = ours_generate(model, [[BOS_ID]], SamplingConfig(max_new_tokens=new, temperature=0, stop_at_eot=False),
                          compiled=True)
    compiled_rate = n / t.s
    rows.append(Row("stories260K greedy, batch 1, compiled decode", compiled_rate, greedy_rate[1], "tokens/s",
                    "our eager sampler at batch 1 (measured here)"))
    run_c = run_c_rates(new)
    if isinstance(run_c, str):
        print(f"   SKIPPED the run.c rows: {run_c}")
        return
    fast = " ".join(RUN_C_BUILDS["fast"][0])
    rows.append(Row(f"stories260K greedy, batch {batches[-1]}", greedy_rate[batches[-1]], run_c["fast"], "tokens/s",
                    f"llama2.c run.c {fast}, 2 threads, batch 1 (measured here)", target=2.0))
    rows.append(Row("stories260K greedy, batch 1, eager", greedy_rate[1], run_c["plain"], "tokens/s",
                    "llama2.c run.c -O3, 1 thread, batch 1 (measured here)"))
    rows.append(Row("stories260K greedy, batch 1, compiled decode", compiled_rate, run_c["plain"], "tokens/s",
                    "llama2.c run.c -O3, 1 thread, batch 1 (measured here)", target=1 / 3))


def main():
    args = parse_args(__doc__.splitlines()[0])
    info = start(args, "bench_sample: batched KV-cache sampling tokens/s")
    rows: list[Row] = []
    gpt_neo_part(args, rows)
    stories260k_part(args, rows)
    print_table(rows, args, info)


if __name__ == "__main__":
    main()
