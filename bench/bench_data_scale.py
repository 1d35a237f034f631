"""The data stages at scale: wall time and peak memory of the `paper` profile's corpus and token stages
from 100k to 2.1M TinyStories-like stories, against today's in-memory path measured in the same run.

The stories are the storyteller's, written once into TinyStories' own format (one .txt file per size,
stories separated by `<|endoftext|>` lines) and cached between runs (`--cache`, default a folder under the
system's temporary directory: 2.1M stories are about 1.9 GB and take about 5 minutes on 2 cores to write).
So that cleaning has something to do, 1% of the stories repeat an earlier one exactly, 0.5% use curly
apostrophes (non-ASCII: ftfy is asked), 0.1% carry mojibake (UTF-8 read as cp1252) and 0.2% are cut off
mid-sentence.

Each size runs the profile `paper` with `data.source: files` (the file above, `data.n_stories: 0`,
validation held out: `data.val_source: split`) and the tokenizer `--tokenizer` (default `bpe`, vocab 10k,
the paper profile's alternative; `gpt-neo-top-k` is the paper's own and needs GPT-2's vocab.json and
merges.txt, from `--gpt2-files` or ../shared/tokenizers/gpt2). Every step is its own Python process, whose
peak resident memory (VmHWM, read by the process itself: ru_maxrss of a child carries its parent's peak
across fork + exec) and wall time are reported:

  imports     python -c 'import tinystories_lib.stages.shards' (the floor every stage process pays)
  corpus      `stages.corpus(run)`: load, repair, normalise, drop, dedupe, split, write train/val.jsonl
  tokens      `stages.shards(run)`: tokenizer fitted on the training split, train.bin and val.bin
  baseline    the same two steps the way the stages did them before streaming (the public list APIs,
              which stay for small consumers): `load_corpus` -> `clean` -> `split` -> `write_jsonl`; then
              every text read into lists, `train_bpe` (or `top_k_codec`) on all of them, `write_shard`.
              Run at `--baseline-sizes` (default 100k,300k: at 2.1M it needs several GB); larger sizes
              get the size-linear extrapolation of the largest baseline measured, labelled so.
Where both ran, the corpus files must be byte-identical; the shards too while the tokenizer sample
(`tokenizer.train_stories`) covers the whole training split.

    python bench/bench_data_scale.py [--sizes 100k,300k,1M,2.1M] [--baseline-sizes 100k,300k] [--quick]
                                     [--tokenizer bpe|gpt-neo-top-k] [--cache DIR] [--workers 2] [--json F]
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from common import ROOT, Row, parse_args, print_table, start

CHUNK = 50_000  # stories per cached part file (the sizes are made of whole or partial parts)
GEN_VERSION = "v1"  # bump when what a part holds changes, so old caches are not reused
EOT = "<|endoftext|>"


def parse_size(s: str) -> int:
    s = s.strip().lower().replace("_", "")
    mult = 1_000_000 if s.endswith("m") else 1_000 if s.endswith("k") else 1
    return int(round(float(s.rstrip("mk")) * mult))


def label(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1e6:g}M"
    return f"{n / 1e3:g}k" if n >= 1000 else str(n)


# ---------------------------------------------------------------- the stories, cached


def _mojibake(text: str) -> str:
    return text.encode("utf-8").decode("cp1252", errors="replace")


def _part(args: tuple[Path, int]) -> Path:
    """Part `i`: CHUNK storyteller stories (seed 1000 + i), with the cleaning cases described above."""
    path, i = args
    if path.exists():
        return path
    from tinystories_lib.stories.storyteller import tell_stories

    texts = [s.text for s in tell_stories(CHUNK, seed=1000 + i)]
    for k in range(len(texts)):
        if k % 100 == 99:  # an exact copy of a story 50 before it
            texts[k] = texts[k - 50]
        elif k % 1000 == 337:
            texts[k] = _mojibake(texts[k].replace("'", "\u2019"))
        elif k % 200 == 7:
            texts[k] = texts[k].replace("'", "\u2019")
        elif k % 500 == 123:  # cut off mid-sentence
            cut = texts[k][: len(texts[k]) * 2 // 3].rstrip(" .!?\"'")
            texts[k] = cut
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for t in texts:
            f.write(f"{t}\n{EOT}\n")
    tmp.replace(path)
    return path


def stories_file(cache: Path, n: int, workers: int) -> Path:
    """A .txt file of the first `n` stories of the parts, cached."""
    parts_dir = cache / f"parts-{GEN_VERSION}"
    parts_dir.mkdir(parents=True, exist_ok=True)
    k = -(-n // CHUNK)
    paths = [parts_dir / f"part-{i:04d}.txt" for i in range(k)]
    todo = [(p, i) for i, p in enumerate(paths) if not p.exists()]
    if todo:
        t0 = time.perf_counter()
        print(f"   writing {len(todo)} part(s) of {CHUNK:,} storyteller stories into {parts_dir} "
              f"({workers} process(es))...", flush=True)
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for _ in pool.map(_part, todo):
                pass
        print(f"   ... in {time.perf_counter() - t0:.0f} s", flush=True)
    out = cache / f"stories-{GEN_VERSION}-{n}.txt"
    if out.exists():
        return out
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    left = n
    with open(tmp, "w", encoding="utf-8") as f:
        for p in paths:
            if left >= CHUNK:
                with open(p, encoding="utf-8") as src:
                    shutil.copyfileobj(src, f, 1 << 20)
                left -= CHUNK
                continue
            with open(p, encoding="utf-8") as src:  # the first `left` stories of the last part
                for line in src:
                    f.write(line)
                    if line.rstrip("\n") == EOT:
                        left -= 1
                        if left == 0:
                            break
    tmp.replace(out)
    return out


# ---------------------------------------------------------------- the steps, each in its own process

PEAK = """
def _peak_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
"""

IMPORTS = PEAK + """
import json, time
t0 = time.perf_counter()
import tinystories_lib.stages.shards  # imports the corpus stage, the tokenizer, torch (scoring)
print(json.dumps({"seconds": time.perf_counter() - t0, "peak_mb": _peak_mb()}))
"""

STAGE = PEAK + """
import json, sys, time
from tinystories_lib.runs import Run
from tinystories_lib.stages.corpus import corpus
from tinystories_lib.stages.shards import shards
which, over, runs = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
run = Run.load("paper", over, runs_root=runs, figures_root=runs + "/figures")
t0 = time.perf_counter()
out = (corpus if which == "corpus" else shards)(run, progress=False)
seconds = time.perf_counter() - t0
info = {k: v for k, v in Run.artifact(out).items() if k not in ("data", "clean_report")}
print(json.dumps({"seconds": seconds, "peak_mb": _peak_mb(), "dir": str(out), "info": info}))
"""

# The stages as they were before streaming, from the list APIs (kept for small consumers).
BASELINE = PEAK + """
import json, sys, time
from pathlib import Path
which, over, out = sys.argv[1], json.loads(sys.argv[2]), Path(sys.argv[3])
import tinystories_lib.lm.scoring  # what the stages import (torch): the same floor as theirs
t0 = time.perf_counter()
info = {}
if which == "corpus":
    from tinystories_lib.stories.cleaning import clean, split
    from tinystories_lib.stories.loading import load_corpus
    from tinystories_lib.stories.records import write_jsonl
    stories = load_corpus("files", paths=over["data.paths"])
    kept, report = clean(stories, min_chars=50, max_chars=4000, fix_mojibake=True, gpt4_only=False,
                         drop_fragments=True, near_duplicates=0.0)
    train, val = split(kept, 0.05, seed=1337)
    write_jsonl(train, out / "train.jsonl")
    write_jsonl(val, out / "val.jsonl")
    info = {"n_loaded": len(stories), "n_train": len(train), "n_val": len(val)}
else:
    from tinystories_lib.lm.tokenizer import load_gpt2, top_k_codec, train_bpe, write_shard
    from tinystories_lib.stories.records import read_jsonl
    train_texts = [s.text for s in read_jsonl(out / "train.jsonl")]
    val_texts = [s.text for s in read_jsonl(out / "val.jsonl")]
    if over["tokenizer.kind"] == "bpe":
        codec = train_bpe(train_texts, over["tokenizer.vocab_size"])
    else:
        codec = top_k_codec(load_gpt2(over["tokenizer.gpt2_files"]), train_texts, over["tokenizer.vocab_size"])
    codec.save(out)
    info = {"vocab_size": codec.vocab_size, "train_tokens": write_shard(codec, train_texts, out / "train.bin"),
            "val_tokens": write_shard(codec, val_texts, out / "val.bin")}
print(json.dumps({"seconds": time.perf_counter() - t0, "peak_mb": _peak_mb(), "info": info}))
"""


def child(code: str, *argv: str) -> dict:
    """Run `code` in a fresh interpreter; its last stdout line is JSON. Adds `wall_s` (process start and
    imports included)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=ROOT, env=env)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"step failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return {**json.loads(p.stdout.strip().splitlines()[-1]), "wall_s": wall}


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------- main


def main():
    def extra(p):
        p.add_argument("--sizes", default="100k,300k,1M,2.1M", help="story counts, e.g. 100k,300k,1M,2.1M")
        p.add_argument("--baseline-sizes", default="100k,300k",
                       help="sizes at which the in-memory path is also run ('' for none)")
        p.add_argument("--tokenizer", choices=["bpe", "gpt-neo-top-k"], default="bpe")
        p.add_argument("--vocab", type=int, default=10_000)
        p.add_argument("--train-stories", type=int, default=None,
                       help="tokenizer.train_stories (default: the profile's)")
        p.add_argument("--gpt2-files", type=Path, default=ROOT.parent / "shared" / "tokenizers" / "gpt2")
        p.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "tinystories_bench_cache",
                       help="where the generated stories are kept between runs")
        p.add_argument("--work", type=Path, default=None, help="where the stages write (default: a temp dir)")
        p.add_argument("--workers", type=int, default=2, help="processes writing the stories")

    args = parse_args(__doc__.splitlines()[0], extra)
    if args.quick:
        args.sizes, args.baseline_sizes = "20k,60k", "20k,60k"
    sizes = sorted({parse_size(s) for s in args.sizes.split(",") if s.strip()})
    base_sizes = {parse_size(s) for s in args.baseline_sizes.split(",") if s.strip()}
    info = start(args, "bench_data_scale: the data stages' time and peak memory from "
                       f"{label(sizes[0])} to {label(sizes[-1])} stories", torch_threads=False)
    over = {"data.source": "files", "data.n_stories": 0, "data.val_source": "split",
            "tokenizer.kind": args.tokenizer, "tokenizer.vocab_size": args.vocab, "tokenizer.gpt2_files": None}
    if args.tokenizer == "gpt-neo-top-k":
        if not (args.gpt2_files / "vocab.json").exists():
            sys.exit(f"--tokenizer gpt-neo-top-k needs GPT-2's vocab.json and merges.txt in {args.gpt2_files}")
        over["tokenizer.gpt2_files"] = str(args.gpt2_files.resolve())
    if args.train_stories is not None:
        over["tokenizer.train_stories"] = args.train_stories

    floor = child(IMPORTS)
    print(f"   imports alone: {floor['peak_mb']:.0f} MB peak in {floor['seconds']:.1f} s", flush=True)
    results: dict[int, dict] = {}
    for n in sizes:
        path = stories_file(args.cache, n, args.workers)
        print(f"-- {label(n)} stories: {path} ({path.stat().st_size / 1e9:.2f} GB)", flush=True)
        work = Path(tempfile.mkdtemp(prefix=f"scale-{n}-", dir=args.work))
        try:
            o = {**over, "data.paths": [str(path)]}
            r = {"corpus": child(STAGE, "corpus", json.dumps(o), str(work / "runs"))}
            r["tokens"] = child(STAGE, "tokens", json.dumps(o), str(work / "runs"))
            for step in ("corpus", "tokens"):
                x = r[step]
                print(f"   {step}: {x['seconds']:.1f} s, peak {x['peak_mb']:.0f} MB; "
                      + ", ".join(f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}"
                                  for k, v in x["info"].items() if k in (
                                      "n_loaded", "n_train", "n_val", "vocab_size", "train_tokens", "val_tokens",
                                      "tokenizer_stories")), flush=True)
            if n in base_sizes:
                bdir = work / "baseline"
                bdir.mkdir()
                bo = {**o, "data.paths": [str(path)]}
                for step in ("corpus", "tokens"):
                    r[f"baseline_{step}"] = x = child(BASELINE, step, json.dumps(bo), str(bdir))
                    print(f"   baseline {step}: {x['seconds']:.1f} s, peak {x['peak_mb']:.0f} MB", flush=True)
                cdir, tdir = Path(r["corpus"]["dir"]), Path(r["tokens"]["dir"])
                r["same_corpus"] = all(sha256(cdir / f) == sha256(bdir / f) for f in ("train.jsonl", "val.jsonl"))
                r["same_shards"] = all(sha256(tdir / f) == sha256(bdir / f) for f in ("train.bin", "val.bin"))
                print(f"   identical to the baseline: corpus files {r['same_corpus']}, shards {r['same_shards']}",
                      flush=True)
            results[n] = r
        finally:
            shutil.rmtree(work, ignore_errors=True)

    report(results, sizes, floor, args, info)


def report(results: dict[int, dict], sizes: list[int], floor: dict, args, info: dict) -> None:
    n0 = sizes[0]
    print(f"\nPer size (each step its own process; peak = VmHWM; imports alone {floor['peak_mb']:.0f} MB). Growth is "
          f"against {label(n0)} stories.\n")
    print("| stories | step | seconds | peak MB | stories growth | time growth | peak growth | baseline s | "
          "baseline MB | baseline is |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---|")
    measured = [n for n in sizes if "baseline_corpus" in results[n]]
    for n in sizes:
        r = results[n]
        for step in ("corpus", "tokens"):
            x, x0 = r[step], results[n0][step]
            if f"baseline_{step}" in r:
                b = r[f"baseline_{step}"]
                bs, bm, what = f"{b['seconds']:.1f}", f"{b['peak_mb']:,.0f}", "measured here"
            elif measured:
                m = max(measured)
                b = results[m][f"baseline_{step}"]
                # extrapolated: above the import floor, memory grows with the text held
                mb = floor["peak_mb"] + (b["peak_mb"] - floor["peak_mb"]) * n / m
                bs, bm, what = f"~{b['seconds'] * n / m:.0f}", f"~{mb:,.0f}", f"size-linear from {label(m)}"
            else:
                bs = bm = what = "-"
            print(f"| {label(n)} | {step} | {x['seconds']:.1f} | {x['peak_mb']:,.0f} | {n / n0:.1f}x | "
                  f"{x['seconds'] / x0['seconds']:.2f}x | {x['peak_mb'] / x0['peak_mb']:.2f}x | {bs} | {bm} | {what} |")
    same = {n: (results[n].get("same_corpus"), results[n].get("same_shards")) for n in measured}
    if same:
        print("\nIdentical to the in-memory path (corpus files, shards): "
              + ", ".join(f"{label(n)} {c}/{s}" for n, (c, s) in same.items()))
    rows = []
    for n in sizes:
        r = results[n]
        peak = max(r["corpus"]["peak_mb"], r["tokens"]["peak_mb"])
        secs = r["corpus"]["seconds"] + r["tokens"]["seconds"]
        if "baseline_corpus" in r:
            bpeak = max(r["baseline_corpus"]["peak_mb"], r["baseline_tokens"]["peak_mb"])
            bsecs = r["baseline_corpus"]["seconds"] + r["baseline_tokens"]["seconds"]
            name = "the in-memory stages (list APIs), measured here"
        elif measured:
            m = max(measured)
            rm = results[m]
            bpeak = floor["peak_mb"] + (max(rm["baseline_corpus"]["peak_mb"], rm["baseline_tokens"]["peak_mb"])
                                        - floor["peak_mb"]) * n / m
            bsecs = (rm["baseline_corpus"]["seconds"] + rm["baseline_tokens"]["seconds"]) * n / m
            name = f"the in-memory stages, extrapolated size-linearly from {label(m)} (not measured)"
        else:
            continue
        rows.append(Row(f"data stages, {label(n)} stories: peak memory", peak, bpeak, "MB (lower is better)", name))
        rows.append(Row(f"data stages, {label(n)} stories: wall time", secs, bsecs, "s (lower is better)", name))
    if len(sizes) > 1:
        n1 = sizes[-1]
        g = max(results[n1]["corpus"]["peak_mb"], results[n1]["tokens"]["peak_mb"]) / max(
            results[n0]["corpus"]["peak_mb"], results[n0]["tokens"]["peak_mb"])
        t = (results[n1]["corpus"]["seconds"] + results[n1]["tokens"]["seconds"]) / (
            results[n0]["corpus"]["seconds"] + results[n0]["tokens"]["seconds"])
        rows.append(Row(f"growth {label(n0)} -> {label(n1)} stories: peak memory", g, n1 / n0,
                        "x (lower is better)", "the stories' growth (what memory holding them grows by)"))
        # The aim "bounded memory": whatever the size, peak memory stays within 1.5x of the smallest run's.
        rows.append(Row(f"bounded memory, {label(n0)} -> {label(n1)} stories: peak growth", g, 1.0,
                        "x (lower is better)", "flat (no growth)", target=1.5, at_most=True))
        rows.append(Row(f"growth {label(n0)} -> {label(n1)} stories: wall time", t, n1 / n0,
                        "x", "the stories' growth (linear time)"))
    print_table(rows, args, info | {"results": {str(n): results[n] for n in sizes}, "imports": floor})


if __name__ == "__main__":
    main()
