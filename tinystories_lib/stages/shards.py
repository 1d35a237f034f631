"""The token stage: the profile's tokenizer and the corpus as uint16 token shards.

    shards(run)   runs/<p>/tokens/<key>/: tokenizer.json (+ token_map.json for GPT-Neo's top-k), train.bin,
                  val.bin; keyed by the `data` and `tokenizer` sections; `artifact.json` records the
                  tokenizer's hash, which `Codec.load` checks
    codec(run)    the tokenizer of those shards
`tokenizer.kind: bpe` trains a byte-level BPE on the training split; `gpt-neo-top-k` keeps the GPT-Neo
tokenizer's most frequent tokens, as the paper did."""

from __future__ import annotations

import time
from pathlib import Path

from tinystories_lib.lm.scoring import text_bytes
from tinystories_lib.lm.tokenizer import (
    Codec,
    fetch_gpt_neo_files,
    load_gpt2,
    tokenizer_sha256,
    top_k_codec,
    train_bpe,
    write_shard,
)
from tinystories_lib.params import resolve_path
from tinystories_lib.runs import Run
from tinystories_lib.stages.corpus import corpus
from tinystories_lib.stories.records import read_jsonl


def shards(run: Run, progress: bool = True) -> Path:
    """Tokenizer trained (or restricted) on the training split, and train/val token shards."""
    cdir = corpus(run, progress)
    out = run.stage_dir("tokens", run.params.section_hash("data", "tokenizer"))
    if not run.is_done(out):
        with run.building(out, "tokenizing into"):
            if not run.is_done(out):  # else the process this one waited for built it
                _build_shards(run, cdir, out, progress)
    return out


def _build_shards(run: Run, cdir: Path, out: Path, progress: bool) -> None:
    t0 = time.perf_counter()
    tp = run.params.tokenizer
    train_texts = [s.text for s in read_jsonl(cdir / "train.jsonl")]
    val_texts = [s.text for s in read_jsonl(cdir / "val.jsonl")]
    if tp.kind == "bpe":
        codec = train_bpe(train_texts, tp.vocab_size)
    else:
        files = resolve_path(tp.gpt2_files) if tp.gpt2_files else fetch_gpt_neo_files()  # None: from the hub
        codec = top_k_codec(load_gpt2(files), train_texts, tp.vocab_size)
    codec.save(out)
    n_train = write_shard(codec, train_texts, out / "train.bin", progress, len(train_texts))
    n_val = write_shard(codec, val_texts, out / "val.bin", progress, len(val_texts))
    run.mark_done(out, {"vocab_size": codec.vocab_size, "train_tokens": n_train, "val_tokens": n_val,
                        "val_bytes": text_bytes(val_texts), "tokenizer_sha256": tokenizer_sha256(out),
                        "tokens_per_story": n_train / max(1, len(train_texts)), "seconds": time.perf_counter() - t0})


def codec(run: Run) -> Codec:
    return Codec.load(shards(run, progress=False))
