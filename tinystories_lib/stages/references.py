"""Published models beside the profile's own (`grade.reference_models`), scored on the same text.

    load_reference(spec)     a llama2.c checkpoint (.bin, its tokenizer .bin beside it) or a Hugging Face
                             GPT-Neo directory or hub id (roneneldan/TinyStories-1M ...)
    score_references(run)    bits per byte of each on the profile's validation stories, cached in
                             runs/<p>/references/<key>/scores.json
Bits per byte compare across tokenizers, so a published model's number sits beside the user's in the
same table (notebook 03); notebook 04 completes and grades them with the same prompts and grader.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinystories_lib.lm.scoring import bits_per_byte, shard_nll, text_bytes
from tinystories_lib.lm.train import pick_device
from tinystories_lib.params import resolve_path
from tinystories_lib.runs import Run, atomic_write_json
from tinystories_lib.stages.corpus import read_corpus


@dataclass
class Reference:
    label: str
    model: object  # GPTNeo or Llama: forward(idx) -> (logits, None), cfg.context
    codec: object  # encode(text), decode(ids), eot_id

    @property
    def params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def _llama2c_tokenizer(path: Path) -> Path:
    found = sorted(path.parent.glob("tok*.bin")) + sorted(path.parent.glob("tokenizer.bin"))
    if not found:
        raise FileNotFoundError(f"no llama2.c tokenizer (tok*.bin or tokenizer.bin) beside {path}")
    return found[0]


def load_reference(spec: str) -> Reference:
    """A published model and its tokenizer from a `grade.reference_models` entry."""
    path = resolve_path(spec)
    if path.suffix == ".bin":
        from tinystories_lib.lm.interop.llama import Llama2cCodec, load_llama2c

        if not path.exists():
            raise FileNotFoundError(f"grade.reference_models: {spec} not found")
        return Reference(path.stem, load_llama2c(path), Llama2cCodec(_llama2c_tokenizer(path)))
    from tinystories_lib.lm.interop.hf import codec_from_hf, from_hf

    source = str(path) if path.exists() else spec  # a local directory, else a hub id
    return Reference(Path(spec).name, from_hf(source), codec_from_hf(source))


def available(specs: list[str]) -> Iterator[tuple[str, Reference]]:
    """(entry, model) for each `grade.reference_models` entry that can be had here; one that cannot (a file
    absent, the hub unreachable) is skipped with a note, not an error."""
    for spec in specs:
        try:
            yield spec, load_reference(spec)
        except (FileNotFoundError, RuntimeError) as e:
            # The model's name, not the profile's path to it: that path means nothing to the reader.
            why = "not here" if isinstance(e, FileNotFoundError) else "could not be loaded or downloaded"
            print(f"note: reference model {Path(spec).name} skipped ({why}); download it (llama2.c's "
                  "stories260K, or roneneldan/TinyStories-1M from the hub) and list it in grade.reference_models")


def token_stream(codec, texts: list[str]) -> np.ndarray:
    """The stories as one token stream, each after the codec's separator, as the models were trained."""
    ids: list[int] = []
    for t in texts:
        ids += [codec.eot_id, *codec.encode(t)]
    return np.asarray(ids, dtype=np.int64)


def score_references(run: Run, progress: bool = True) -> list[dict]:
    """Bits per byte of each reference model that can be had here (`available`) on the profile's
    validation stories; cached once every model was scored."""
    specs = run.params.grade.reference_models
    if not specs:
        return []
    out = run.stage_dir("references", run.params.section_hash("data", extra=specs)) / "scores.json"
    if out.exists():
        return json.loads(out.read_text())
    texts = [s.text for s in read_corpus(run, "val")]
    n_bytes = text_bytes(texts)
    device = pick_device(run.params.train.device)
    rows = []
    for spec, ref in available(specs):
        t0 = time.perf_counter()
        nll, n = shard_nll(ref.model.to(device), token_stream(ref.codec, texts))
        rows.append({"label": ref.label, "spec": spec, "params": ref.params, "val_bpb": bits_per_byte(nll, n_bytes),
                     "val_loss_per_token": nll / n, "val_tokens": n, "seconds": time.perf_counter() - t0})
        if progress:
            print(f"{ref.label}: {rows[-1]['val_bpb']:.3f} bits per byte on {len(texts):,} validation stories")
    if len(rows) == len(specs):  # a model missing here may be there next time
        atomic_write_json(out, rows)
    return rows


def references_table(rows: list[dict]) -> str:
    """The reference models' scores as Markdown rows matching `summary_table`'s columns."""
    lines = ["| reference model | params | bits per byte |", "|---|---:|---:|"]
    lines += [f"| {r['label']} | {r['params'] / 1e6:.3f}M | {r['val_bpb']:.3f} |" for r in rows]
    return "\n".join(lines)
