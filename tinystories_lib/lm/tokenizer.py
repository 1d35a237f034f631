"""Tokenizers and token shards.

Two kinds, one interface (`Codec`):
  - a byte-level BPE trained with Hugging Face `tokenizers` on the corpus (vocab size a parameter);
  - the paper's choice, GPT-Neo's (= GPT-2's) BPE restricted to its top-k tokens on the corpus: model ids
    are remapped to a compact range, with the map saved beside the model so decoding stays exact.
Stories are written to uint16 shards (`train.bin`, `val.bin`), each story followed by `<|endoftext|>`, so
a model learns where stories start and end; sampling starts from that token.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from tinystories_lib.locks import temp_path
from tinystories_lib.stories.records import EOT


class Codec:
    """Text <-> model ids. `id_map` (model id -> base tokenizer id) is set for top-k tokenizers."""

    def __init__(self, tokenizer: Tokenizer, id_map: np.ndarray | None = None):
        self.tok = tokenizer
        self.id_map = id_map
        base_eot = tokenizer.token_to_id(EOT)
        if base_eot is None:
            raise ValueError(f"tokenizer has no {EOT} token")
        if id_map is None:
            self.vocab_size = tokenizer.get_vocab_size()
            self.eot_id = base_eot
            self._to_model = None
        else:
            self.vocab_size = len(id_map)
            self._to_model = np.full(tokenizer.get_vocab_size(), -1, dtype=np.int64)
            self._to_model[id_map] = np.arange(len(id_map))
            self.eot_id = int(self._to_model[base_eot])
            self._byte_ids = _byte_token_ids(tokenizer)

    # -- encoding
    def _map(self, ids: list[int]) -> list[int]:
        if self._to_model is None:
            return ids
        mapped = self._to_model[np.asarray(ids, dtype=np.int64)]
        if mapped.size == 0 or mapped.min() >= 0:  # every token among the top k: one numpy gather
            return mapped.tolist()
        out = []
        for i, m in zip(ids, mapped.tolist()):
            if m >= 0:
                out.append(m)
            else:  # a token outside the top k: spell it with byte tokens, which are always kept
                out.extend(int(self._to_model[b]) for b in self._byte_ids_of(i))
        return out

    def _byte_ids_of(self, base_id: int) -> list[int]:
        return [self._byte_ids[ch] for ch in self.tok.id_to_token(base_id)]

    def encode(self, text: str) -> list[int]:
        return self._map(self.tok.encode(text).ids)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        # encode_batch_fast: the same ids without the character offsets (tokenizers >= 0.20)
        encode = getattr(self.tok, "encode_batch_fast", self.tok.encode_batch)
        return [self._map(e.ids) for e in encode(texts)]

    def decode(self, ids: Iterable[int]) -> str:
        ids = [int(i) for i in ids]
        if self.id_map is not None:
            ids = [int(self.id_map[i]) for i in ids]
        return self.tok.decode(ids, skip_special_tokens=False)

    # -- persistence
    def save(self, directory: str | Path) -> None:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        _atomic_write_text(d / "tokenizer.json", self.tok.to_str())
        if self.id_map is not None:
            _atomic_write_text(d / "token_map.json", json.dumps({"model_to_base": self.id_map.tolist()}))

    @classmethod
    def load(cls, directory: str | Path) -> Codec:
        """The tokenizer files of `directory`, checked against what the directory records of them: the
        sha256 (`tokenizer_sha256`) and vocabulary size in a model's config.json or a token stage's
        artifact.json. A tokenizer that is not the model's decodes its ids into fluent-looking nonsense."""
        d = Path(directory)
        path = d / "tokenizer.json"
        if not path.exists():
            raise FileNotFoundError(f"no tokenizer.json in {d}: train one (notebook 02) or copy it beside the model")
        record, sha, vocab = _recorded_tokenizer(d)
        fix = (f"copy tokenizer.json (and token_map.json) of the token shards it was trained on ({sha[1]}, under "
               f"runs/<profile>/) into {d}" if sha and sha[1] else f"delete {d} and run its stage again")
        if sha and tokenizer_sha256(d) != sha[0]:
            raise ValueError(f"{path} is not the tokenizer {record} records (sha256 {tokenizer_sha256(d)[:12]}, "
                             f"recorded {sha[0][:12]}): {fix}")
        try:
            id_map = None
            if (d / "token_map.json").exists():
                id_map = np.array(json.loads((d / "token_map.json").read_text())["model_to_base"], dtype=np.int64)
            codec = cls(Tokenizer.from_file(str(path)), id_map)
        except Exception as e:  # a truncated or foreign file: tokenizers' own errors name no file
            raise ValueError(f"{path} is not a readable tokenizer ({type(e).__name__}: {e}): {fix}") from None
        if vocab is not None and codec.vocab_size != vocab:
            raise ValueError(f"{path} has {codec.vocab_size} tokens but {record} says {vocab}: {fix}")
        return codec


TOKENIZER_FILES = ("tokenizer.json", "token_map.json")


def tokenizer_sha256(directory: str | Path) -> str:
    """One hash of the tokenizer files in `directory`: what a token stage and a model record of their
    tokenizer, and `Codec.load` checks."""
    h = hashlib.sha256()
    for name in TOKENIZER_FILES:
        if (Path(directory) / name).exists():
            h.update(name.encode() + b"\0" + (Path(directory) / name).read_bytes())
    return h.hexdigest()


def _recorded_tokenizer(d: Path) -> tuple[str, tuple[str, str | None] | None, int | None]:
    """(the file that records it, (sha256, the token shards' key it came from) or None, vocabulary size or
    None) for a model directory (config.json) or a token stage (artifact.json); nothing for others."""
    for name, vocab_of in (("config.json", lambda c: (c.get("model") or {}).get("vocab_size")),
                           ("artifact.json", lambda c: c.get("vocab_size"))):
        if (d / name).exists():
            try:
                c = json.loads((d / name).read_text())
            except ValueError:
                continue  # a damaged record is reported by whatever reads it for its own purpose
            sha = c.get("tokenizer_sha256")
            return str(d / name), (sha, c.get("shards")) if sha else None, vocab_of(c)
    return "", None, None


def _byte_token_ids(tok: Tokenizer) -> dict[str, int]:
    """Map each byte-level character (GPT-2's 256 printable stand-ins for bytes) to its token id."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    ids = {ch: tok.token_to_id(ch) for ch in alphabet}
    missing = [ch for ch, i in ids.items() if i is None]
    if missing:
        raise ValueError(f"tokenizer lacks {len(missing)} byte-level tokens; it is not a byte-level BPE")
    return ids


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = temp_path(path)
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def train_bpe(texts: Iterable[str], vocab_size: int) -> Codec:
    """Train a byte-level BPE (GPT-2 style pre-tokenization) with `<|endoftext|>` as id 0. `texts` may be
    any iterable: `tokenizers` reads it in small batches, holding its word counts, not the texts."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return Codec(tok)


def load_gpt2(directory: str | Path) -> Tokenizer:
    """GPT-2/GPT-Neo BPE from `vocab.json` + `merges.txt` (the files GPT-Neo ships)."""
    d = Path(directory)
    for name in ("vocab.json", "merges.txt"):
        if not (d / name).exists():
            raise FileNotFoundError(f"{d / name} not found: the GPT-2/GPT-Neo tokenizer needs vocab.json and merges.txt")
    bpe = models.BPE.from_file(str(d / "vocab.json"), str(d / "merges.txt"))
    tok = Tokenizer(bpe)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([EOT])  # already in GPT-2's vocab as id 50256; this marks it special
    return tok


GPT_NEO_REPO = "EleutherAI/gpt-neo-125M"  # the tokenizer of the paper's models (GPT-2's BPE)


def fetch_gpt_neo_files(repo_id: str = GPT_NEO_REPO, cache_dir: str | Path | None = None) -> Path:
    """Download GPT-Neo's `vocab.json` and `merges.txt` from the hub (or take them from the hub cache) and
    return their directory, for `load_gpt2`. Offline, the error says how to point at local copies."""
    tried = f"huggingface_hub.hf_hub_download({repo_id!r}, 'vocab.json' / 'merges.txt')"
    instead = ("Set tokenizer.gpt2_files to a directory holding vocab.json and merges.txt (from the "
               f"{repo_id} repository), or use tokenizer.kind: bpe.")
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as e:
        raise RuntimeError(f"huggingface_hub is not installed (pip install huggingface_hub), so {tried} could "
                           f"not run. {instead}") from e
    try:
        paths = [hf_hub_download(repo_id, name, cache_dir=str(cache_dir) if cache_dir else None)
                 for name in ("vocab.json", "merges.txt")]
    except Exception as e:  # offline, DNS, HTTP errors, HF_HUB_OFFLINE with a cold cache
        raise RuntimeError(f"Could not get GPT-Neo's tokenizer: {tried} failed with {type(e).__name__}: {e}. "
                           f"Are you offline? {instead}") from e
    return Path(paths[0]).parent


def top_k_codec(base: Tokenizer, texts: Iterable[str], k: int) -> Codec:
    """The paper's tokenizer: keep the k most frequent base tokens on `texts` (plus all 256 byte tokens
    and `<|endoftext|>`, so every text still encodes, rare tokens spelled in bytes). `texts` is read in
    batches of 1024 (any iterable)."""
    counts = np.zeros(base.get_vocab_size(), dtype=np.int64)
    encode = getattr(base, "encode_batch_fast", base.encode_batch)
    for batch in _chunks(texts, 1024):
        ids = [i for e in encode(batch) for i in e.ids]
        counts += np.bincount(np.asarray(ids, dtype=np.int64), minlength=len(counts))[: len(counts)]
    always = set(_byte_token_ids(base).values()) | {base.token_to_id(EOT)}
    if k < len(always):
        raise ValueError(f"k={k} is smaller than the {len(always)} byte and special tokens that must be kept")
    order = [int(i) for i in np.argsort(-counts, kind="stable") if int(i) not in always]
    keep = sorted(always | set(order[: k - len(always)]))
    return Codec(base, np.array(keep, dtype=np.int64))


# ---------------------------------------------------------------- shards


def _chunks(texts: Iterable[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for t in texts:
        chunk.append(t)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def write_shard(codec: Codec, texts: Iterable[str], path: str | Path, progress: bool = False, total: int | None = None) -> int:
    """Tokenize `texts` (batched; `tokenizers` runs batches in parallel) into a uint16 file, each story
    followed by `<|endoftext|>`. Written to a temporary name and renamed, so a shard is whole or absent.
    `texts` may be any iterable: one batch of 2048 stories and its ids are held at a time."""
    if codec.vocab_size > 65536:
        raise ValueError(f"vocab of {codec.vocab_size} does not fit uint16 shards")
    path = Path(path)
    tmp = temp_path(path)
    n_tokens = 0
    bar = None
    if progress:
        from tinystories_lib.progress import bar as progress_bar

        bar = progress_bar(total=total, desc=f"tokenizing {path.name}", unit="story")
    with open(tmp, "wb") as f:
        for chunk in _chunks(texts, 2048):
            flat: list[int] = []
            for seq in codec.encode_batch(chunk):
                flat.extend(seq)
                flat.append(codec.eot_id)
            f.write(np.array(flat, dtype=np.uint16).tobytes())
            n_tokens += len(flat)
            if bar:
                bar.update(len(chunk))
    if bar:
        bar.close()
    tmp.replace(path)
    return n_tokens


def read_shard(path: str | Path) -> np.ndarray:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"token shard {path} not found: run the tokenization stage (notebook 02) first")
    return np.memmap(path, dtype=np.uint16, mode="r")
