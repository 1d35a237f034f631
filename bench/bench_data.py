"""Data preparation throughput: storyteller stories/s and pretokenization tokens/s.

1. `storyteller.tell_stories(n, seed)` for n = 10k stories (2k with --quick): stories/s (and words/s).
   Baseline: the next stage of the pipeline on the same stories, `tokenizer.write_shard` (stories/s),
   measured in this run: it says which of the two stages bounds data preparation.
2. `tokenizer.write_shard` (batched `encode_batch` in chunks of 2048, uint16 shard) against a plain
   per-story `codec.encode` loop writing the same shard, same texts, same codec (a byte-level BPE trained
   here by `train_bpe`, vocab 10k, on the first 2k stories). Both shards must be byte-identical.

    python bench/bench_data.py [--quick]
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from common import Row, Timer, parse_args, print_table, start

from tinystories_lib.lm.tokenizer import train_bpe, write_shard
from tinystories_lib.stories.storyteller import tell_stories


def encode_loop(codec, texts: list[str], path: Path) -> int:
    """The obvious way: encode each story, append end-of-text, write one uint16 array."""
    ids: list[int] = []
    for text in texts:
        ids.extend(codec.encode(text))
        ids.append(codec.eot_id)
    np.array(ids, dtype=np.uint16).tofile(path)
    return len(ids)


def main():
    args = parse_args(__doc__.splitlines()[0])
    info = start(args, "bench_data: storyteller stories/s, write_shard tokens/s", torch_threads=False)
    n = 2_000 if args.quick else 10_000
    tell_stories(50, seed=1)  # warm-up: vocabulary tables, template caches
    with Timer() as t_story:
        stories = tell_stories(n, seed=0)
    texts = [s.text for s in stories]
    words = sum(len(t.split()) for t in texts)
    print(f"   storyteller: {n} stories ({words / n:.0f} words each) in {t_story.s:.2f} s")

    with Timer() as t:
        codec = train_bpe(texts[:2000], 10_000)
    print(f"   train_bpe on 2000 stories: vocab {codec.vocab_size} in {t.s:.1f} s")
    with tempfile.TemporaryDirectory() as d:
        write_shard(codec, texts[:100], Path(d) / "warm.bin")
        with Timer() as t_shard:
            n_tok = write_shard(codec, texts, Path(d) / "shard.bin")
        with Timer() as t_loop:
            n_loop = encode_loop(codec, texts, Path(d) / "loop.bin")
        same = (Path(d) / "shard.bin").read_bytes() == (Path(d) / "loop.bin").read_bytes()
    print(f"   write_shard: {n_tok} tokens in {t_shard.s:.2f} s; per-story loop: {n_loop} tokens in {t_loop.s:.2f} s; "
          f"identical shards: {same}")

    rows = [
        Row(f"storyteller, {n} stories", n / t_story.s, n / t_shard.s, "stories/s",
            "write_shard on the same stories (next stage, measured here)",
            note=f"{words / t_story.s:,.0f} words/s"),
        Row(f"write_shard, {n} stories", n_tok / t_shard.s, n_loop / t_loop.s, "tokens/s",
            "per-story codec.encode loop, same texts (measured here)"),
    ]
    print_table(rows, args, info)


if __name__ == "__main__":
    main()
