"""The token stage: the profile's tokenizer and the corpus as uint16 token shards.

    shards(run)   runs/<p>/tokens/<key>/: tokenizer.json (+ token_map.json for GPT-Neo's top-k), train.bin,
                  val.bin; keyed by the `data` and `tokenizer` sections; `artifact.json` records the
                  tokenizer's hash, which `Codec.load` checks
    codec(run)    the tokenizer of those shards
`tokenizer.kind: bpe` trains a byte-level BPE on the training split; `gpt-neo-top-k` keeps the GPT-Neo
tokenizer's most frequent tokens, as the paper did. Both on at most `tokenizer.train_stories` training
stories (a sample by story id; the artifact's `tokenizer_stories` says how many). The stories are read
from the corpus files as they are tokenized, a batch at a time: memory does not grow with the corpus."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

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
from tinystories_lib.stories.cleaning import split_score
from tinystories_lib.stories.records import Story, read_jsonl


def shards(run: Run, progress: bool = True) -> Path:
    """Tokenizer trained (or restricted) on the training split, and train/val token shards."""
    cdir = corpus(run, progress)
    out = run.stage_dir("tokens", _key(run, cdir))
    if not run.is_done(out):
        with run.building(out, "tokenizing into"):
            if not run.is_done(out):  # else the process this one waited for built it
                _build_shards(run, cdir, out, progress)
    return out


def _key(run: Run, cdir: Path) -> str:
    """The `data` and `tokenizer` sections, and `tokenizer.train_stories` where it makes the tokenizer a
    sample's: a training split no larger is used whole, as before the setting was, under the same key."""
    n = _sample_size(run, cdir)
    return run.params.section_hash("data", "tokenizer", extra={"train_stories": n} if n else None)


def _sample_size(run: Run, cdir: Path) -> int | None:
    """How many training stories the tokenizer is fitted on, or None for all of them."""
    want = run.params.tokenizer.train_stories
    n_train = Run.artifact(cdir).get("n_train")
    return want if want and (n_train is None or n_train > want) else None


def _sample(path: Path, n_train: int, size: int, seed: int) -> Iterator[Story]:
    """About `size` (at most) of the `n_train` stories of `path`: those whose hash of (seed, id) falls
    below size / n_train, in file order. Which stories depends on nothing else, so the sample is the same
    on every machine and a story's presence does not depend on its place in the file."""
    p, n = size / n_train, 0
    for s in read_jsonl(path):
        if split_score(s, seed + 1) < p:  # seed + 1: not the same hash as the train/val split's
            yield s
            n += 1
            if n >= size:
                return


class _Count:
    """The texts of an iterable of stories, counting them and their UTF-8 bytes (with a separator each)."""

    def __init__(self, stories: Iterator[Story]):
        self.stories, self.n, self.bytes = stories, 0, 0

    def __iter__(self) -> Iterator[str]:
        for s in self.stories:
            self.n += 1
            self.bytes += len(s.text.encode("utf-8")) + 1
            yield s.text


def _build_shards(run: Run, cdir: Path, out: Path, progress: bool) -> None:
    t0 = time.perf_counter()
    tp = run.params.tokenizer
    info = Run.artifact(cdir)
    size = _sample_size(run, cdir)
    train_file = cdir / "train.jsonl"
    fit = _Count(read_jsonl(train_file) if size is None else _sample(train_file, info["n_train"], size, run.params.seed))
    if tp.kind == "bpe":
        codec = train_bpe(fit, tp.vocab_size)
    else:
        files = resolve_path(tp.gpt2_files) if tp.gpt2_files else fetch_gpt_neo_files()  # None: from the hub
        codec = top_k_codec(load_gpt2(files), fit, tp.vocab_size)
    t_fit = time.perf_counter() - t0
    codec.save(out)
    train, val = _Count(read_jsonl(cdir / "train.jsonl")), _Count(read_jsonl(cdir / "val.jsonl"))
    n_train = write_shard(codec, train, out / "train.bin", progress, info.get("n_train"))
    n_val = write_shard(codec, val, out / "val.bin", progress, info.get("n_val"))
    run.mark_done(out, {"vocab_size": codec.vocab_size, "train_tokens": n_train, "val_tokens": n_val,
                        "val_bytes": val.bytes, "tokenizer_sha256": tokenizer_sha256(out),
                        "tokens_per_story": n_train / max(1, train.n), "tokenizer_stories": fit.n,
                        "tokenizer_seconds": t_fit, "seconds": time.perf_counter() - t0})


def codec(run: Run) -> Codec:
    return Codec.load(shards(run, progress=False))
