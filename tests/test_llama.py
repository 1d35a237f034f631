"""The Llama variant: llama2.c checkpoints and tokenizer, and that it plugs into our sampler."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from tinystories_lib.lm.interop.llama import (
    BOS_ID,
    Llama,
    Llama2cTokenizer,
    LlamaConfig,
    _legacy_layout,
    apply_rope,
    load_llama2c,
    rope_tables,
)
from tinystories_lib.lm.kvcache import KVCache
from tinystories_lib.lm.sample import SamplingConfig, generate

GREEDY = SamplingConfig(max_new_tokens=200, temperature=0, stop_at_eot=False)
TEXTS = ["Once upon a time, there was a little girl named Lily.", "Tom said: \"Hi, Sue!\" 123",
         "café naïve — “quotes” 😀 日本", "Hello\nworld"]


@functools.lru_cache(maxsize=1)
def _load(d: Path):
    return load_llama2c(d / "stories260K.bin"), Llama2cTokenizer(d / "tok512.bin"), d


@functools.lru_cache(maxsize=1)
def _greedy(d: Path) -> list[int]:
    return generate(_load(d)[0], [[BOS_ID]], GREEDY)[0]


@pytest.fixture
def stories260k(shared):
    """(model, tokenizer, directory), loaded once per session; skips when ../shared is absent."""
    return _load(shared("models/stories260K/stories260K.bin").parent)


@pytest.fixture
def greedy_from_bos(stories260k):
    return _greedy(stories260k[2])


def test_stories260k_config(stories260k):
    model, tok, _ = stories260k
    c = model.cfg
    assert (c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size, c.context) == (
        64, 172, 5, 8, 4, 512, 512)
    assert c.shared_classifier and model.output.weight is model.tok_embeddings.weight
    assert tok.vocab_size == 512 and tok.max_token_length == 7


def test_greedy_200_matches_llama2c(stories260k, greedy_from_bos):
    """run.c -t 0 -n 200 runs 200 forwards (positions 0..199, BOS fed at 0) and prints the piece of each
    of the 200 sampled tokens, the first without its leading space; the file is that text (run.c's final
    newline aside, which llama2.c's test strips)."""
    _, tok, d = stories260k
    expected = (d / "stories260K_expected_greedy_200tok.txt").read_bytes()
    assert len(greedy_from_bos) == 200
    assert tok.decode([BOS_ID, *greedy_from_bos]).encode("utf-8") == expected


def test_batched_greedy_is_identical(stories260k, greedy_from_bos):
    model, tok, _ = stories260k
    n = 60
    outs = generate(model, [[BOS_ID]] * 3, SamplingConfig(max_new_tokens=n, temperature=0, stop_at_eot=False))
    assert outs == [greedy_from_bos[:n]] * 3
    # Different lengths (left padding, per-row RoPE positions): each row equals its prompt run alone.
    prompts = [[BOS_ID], tok.encode("Once upon a time, a cat"), tok.encode("Tom")]
    cfg = SamplingConfig(max_new_tokens=20, temperature=0, stop_at_eot=False)
    batched = generate(model, prompts, cfg)
    assert batched == [generate(model, [p], cfg)[0] for p in prompts]


def test_plain_forward_agrees_with_cached(stories260k, greedy_from_bos):
    model, _, _ = stories260k
    seq = torch.tensor([[BOS_ID, *greedy_from_bos[:99]]])
    with torch.no_grad():
        logits, _ = model(seq[:, :-1])
        _, loss = model(seq[:, :-1], targets=seq[:, 1:])
    assert torch.equal(logits[0].argmax(-1), seq[0, 1:])
    assert 0 < loss.item() < 2  # its own greedy text is easy for it


def _tiny_cfg(**kw) -> LlamaConfig:
    return LlamaConfig(**{**dict(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=50, context=64,
                                 multiple_of=16, shared_classifier=False), **kw})


@torch.no_grad()
@pytest.mark.parametrize("n_heads, n_kv_heads", [(4, 2), (8, 4)])  # head_dim 8, and 4 (transposed cache)
def test_cached_forward_equals_full_forward(n_heads, n_kv_heads):
    torch.manual_seed(0)
    model = Llama(_tiny_cfg(n_heads=n_heads, n_kv_heads=n_kv_heads)).eval()
    idx = torch.randint(0, 50, (2, 30))
    full, _ = model(idx)
    cache = KVCache(model.cfg, 2, 30, "cpu", torch.float32)
    valid = torch.ones(2, 30, dtype=torch.bool)
    out = [model.forward_cached(idx[:, :10], torch.arange(10).expand(2, 10), valid[:, :10], cache)]
    for t in range(10, 30):
        out.append(model.forward_cached(idx[:, t : t + 1], torch.full((2, 1), t), valid[:, : t + 1], cache))
    cached = torch.stack(out[1:], 1)
    assert (out[0] - full[:, 9]).abs().max() < 1e-5
    assert (cached - full[:, 10:]).abs().max() < 1e-5


def test_rope_rotates_adjacent_pairs():
    cos, sin = rope_tables(head_dim=4, length=8, theta=10000.0)
    x = torch.tensor([1.0, 0.0, 1.0, 0.0]).view(1, 1, 1, 4)
    y = apply_rope(x, cos[3].view(1, 1, 1, 2), sin[3].view(1, 1, 1, 2)).flatten()
    slow = 3 / 10000 ** (2 / 4)  # pair 1 turns at theta^(-2/head_dim) per position
    assert torch.allclose(y, torch.tensor([math.cos(3), math.sin(3), math.cos(slow), math.sin(slow)]))


def test_hidden_dim_rule():
    assert LlamaConfig(dim=64, n_heads=8, multiple_of=4).hidden_dim == 172  # stories260K
    assert LlamaConfig(dim=288, n_heads=6, multiple_of=32).hidden_dim == 768  # stories15M


def _write_legacy(model: Llama, path) -> None:
    """llama2.c's legacy export, written independently of the loader's layout table."""
    c = model.cfg
    sd = {k: v.numpy() for k, v in model.state_dict().items()}
    vocab = c.vocab_size if c.shared_classifier else -c.vocab_size
    parts = [np.array([c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, vocab, c.context], np.int32),
             sd["tok_embeddings.weight"]]
    for name in ["attention_norm", "attention.wq", "attention.wk", "attention.wv", "attention.wo", "ffn_norm",
                 "feed_forward.w1", "feed_forward.w2", "feed_forward.w3"]:
        parts += [sd[f"layers.{i}.{name}.weight"] for i in range(c.n_layers)]
    parts.append(sd["norm.weight"])
    parts += [np.zeros(c.context * c.head_dim // 2, np.float32)] * 2  # freq_cis_real, freq_cis_imag
    if not c.shared_classifier:
        parts.append(sd["output.weight"])
    with open(path, "wb") as f:
        for p in parts:
            f.write(np.ascontiguousarray(p).tobytes())


@pytest.mark.parametrize("shared", [False, True])
def test_legacy_bin_round_trip(tmp_path, shared):
    torch.manual_seed(1)
    model = Llama(_tiny_cfg(shared_classifier=shared))
    for p in model.parameters():  # norms random too, so a misplaced tensor shows
        torch.nn.init.normal_(p)
    _write_legacy(model, tmp_path / "m.bin")
    back = load_llama2c(tmp_path / "m.bin")
    assert back.cfg.shared_classifier == shared and back.cfg.hidden_dim == model.cfg.hidden_dim
    for k, v in model.state_dict().items():
        assert torch.equal(v, back.state_dict()[k]), k
    with open(tmp_path / "m.bin", "r+b") as f:
        f.truncate(1000)
    with pytest.raises(ValueError, match="truncated"):
        load_llama2c(tmp_path / "m.bin")


def test_legacy_layout_size_matches_stories260k(stories260k):
    model, _, d = stories260k
    floats = sum(int(np.prod(s)) for _, s in _legacy_layout(model.cfg))
    assert 28 + 4 * floats == (d / "stories260K.bin").stat().st_size


def test_tokenizer_encode_decode(stories260k):
    _, tok, _ = stories260k
    ids = tok.encode("Once upon a time")
    assert ids[0] == BOS_ID and tok.decode(ids) == "Once upon a time"
    assert tok.encode("", bos=True, eos=True) == [1, 2]
    for text in TEXTS:  # multi-byte characters outside the vocab come back whole through byte tokens
        assert tok.decode(tok.encode(text)) == text
    emoji = tok.encode("😀", bos=False)
    assert [tok.pieces[i] for i in emoji[1:]] == [b"<0xF0>", b"<0x9F>", b"<0x98>", b"<0x80>"]
    # run.c strips a piece's leading space only right after BOS.
    the = tok.ids[b" the"]
    assert tok.piece_bytes(BOS_ID, the) == b"the" and tok.piece_bytes(5, the) == b" the"


def test_tokenizer_agrees_with_sentencepiece(stories260k):
    spm = pytest.importorskip("sentencepiece")
    _, tok, d = stories260k
    sp = spm.SentencePieceProcessor(model_file=str(d / "tok512.model"))
    assert [tok.pieces[i] for i in range(sp.vocab_size()) if i > 2] == [
        sp.id_to_piece(i).replace("▁", " ").encode() for i in range(3, sp.vocab_size())]
    # SentencePiece also collapses repeated whitespace (remove_extra_whitespaces); these texts have none.
    for text in TEXTS:
        ids = tok.encode(text)
        assert ids == [BOS_ID, *sp.encode(text)]
        assert tok.decode(ids) == sp.decode(ids[1:])
