"""The Llama variant of Karpathy's llama2.c, in the same readable style as model.py, and its interop.

What makes it Llama rather than GPT-Neo:
  - RMSNorm (no mean, no bias) before attention and MLP, and at the end;
  - rotary position embeddings (RoPE) on q and k instead of learned positions; llama2.c rotates pairs of
    adjacent dims (x[0::2], x[1::2]) by angle pos / theta^(2i/head_dim);
  - grouped-query attention: n_kv_heads <= n_heads, query head h reads kv head h // (n_heads // n_kv_heads);
    scores scaled by 1/sqrt(head_dim); no biases anywhere;
  - SwiGLU MLP: w2(silu(w1 x) * w3 x);
  - the classifier is shared with the token embedding or separate, as the checkpoint says.
Parameter names follow llama2.c's model.py (tok_embeddings, layers.i.attention.wq, ..., norm, output).

Also here: `load_llama2c` for llama2.c's legacy .bin checkpoints and `Llama2cTokenizer` for its tokenizer
.bin (SentencePiece BPE pieces with scores), encoding and decoding exactly as llama2.c's run.c does.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from tinystories_lib.lm.chunked_loss import output_and_loss
from tinystories_lib.lm.kvcache import KVCache

BOS_ID, EOS_ID = 1, 2  # llama2.c / SentencePiece convention: 0 = <unk>


@dataclass
class LlamaConfig:
    dim: int = 288
    n_layers: int = 6
    n_heads: int = 6
    n_kv_heads: int | None = None  # = n_heads when None
    vocab_size: int = 32000
    hidden_dim: int | None = None  # SwiGLU width; llama2.c's rule from dim and multiple_of when None
    context: int = 256  # max_seq_len
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    multiple_of: int = 32  # llama2.c train.py's default; stories260K used 4 (its .bin stores hidden_dim)
    shared_classifier: bool = True  # output layer tied to tok_embeddings

    def __post_init__(self):
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        if self.hidden_dim is None:
            # llama2.c: 2/3 of 4*dim (SwiGLU has three matrices), rounded up to a multiple of multiple_of.
            h = int(2 * 4 * self.dim / 3)
            self.hidden_dim = self.multiple_of * ((h + self.multiple_of - 1) // self.multiple_of)
        if self.dim % self.n_heads:
            raise ValueError(f"dim {self.dim} is not divisible by n_heads {self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads {self.n_heads} is not a multiple of n_kv_heads {self.n_kv_heads}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    # What our sampler's KVCache needs: k/v are cached un-expanded, n_kv_heads per layer.
    @property
    def layers(self) -> int:
        return self.n_layers

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads

    @property
    def heads(self) -> int:
        return self.n_heads

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> LlamaConfig:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        if _rms_norm is not None and x.dtype == torch.float32:  # one op (torch >= 2.4), the same formula
            return _rms_norm(x, self.weight.shape, self.weight, self.eps)
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


_rms_norm = getattr(F, "rms_norm", None)


def rope_tables(head_dim: int, length: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of angle pos * theta^(-2i/head_dim), (length, head_dim // 2), float32 as llama2.c."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2)[: head_dim // 2].float() / head_dim))
    angles = torch.outer(torch.arange(length).float(), inv_freq)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each adjacent pair (x[2i], x[2i+1]) of x (B, H, T, D) by the angle whose cos/sin are
    (B, 1, T, D/2): the complex product (x[2i] + j x[2i+1]) * e^(j angle_i)."""
    xe, xo = x[..., 0::2].float(), x[..., 1::2].float()
    out = torch.stack((xe * cos - xo * sin, xe * sin + xo * cos), dim=-1)
    return out.flatten(-2).type_as(x)


class Attention(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.wq = nn.Linear(cfg.dim, cfg.n_heads * cfg.head_dim, bias=False)
        self.wk = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.wv = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.wo = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.dim, bias=False)

    def forward(self, x, cos, sin, mask=None, cache: KVCache | None = None, layer: int = 0):
        B, T, _ = x.shape
        if cache is not None:
            return self._decode(x, cos, sin, mask, cache, layer)
        q = self.wq(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.wk(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.wv(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        # Grouped-query attention: each kv head serves n_heads // n_kv_heads consecutive query heads.
        rep = self.n_heads // self.n_kv_heads
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None)
        return self.wo(y.transpose(1, 2).reshape(B, T, -1))

    def _decode(self, x, cos, sin, mask, cache: KVCache, layer: int):
        """The same attention with a KV cache, in fewer ops (sampling pays per op): q, k and v from one
        matmul, q and k rotated together. Keys are cached after rotation, so they never need their
        position again."""
        B, T, _ = x.shape
        H, Hkv, D = self.n_heads, self.n_kv_heads, self.head_dim
        qkv = cache.fused_linear(("qkv", layer), x, self.wq, self.wk, self.wv, split=False)
        qk = apply_rope(qkv[..., : (H + Hkv) * D].view(B, T, H + Hkv, D).transpose(1, 2), cos, sin)
        v = qkv[..., (H + Hkv) * D :].view(B, T, Hkv, D).transpose(1, 2)
        y = cache.attend(layer, qk[:, :H], qk[:, H:], v, mask, scale=D**-0.5)
        return self.wo(y.transpose(1, 2).reshape(B, T, -1))


class FeedForward(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.w1 = nn.Linear(cfg.dim, cfg.hidden_dim, bias=False)
        self.w2 = nn.Linear(cfg.hidden_dim, cfg.dim, bias=False)
        self.w3 = nn.Linear(cfg.dim, cfg.hidden_dim, bias=False)

    def forward(self, x, cache: KVCache | None = None, layer: int = 0):
        if cache is None:
            return self.w2(F.silu(self.w1(x)) * self.w3(x))
        gate, up = cache.fused_linear(("w13", layer), x, self.w1, self.w3)  # sampling: one matmul for two
        return self.w2(F.silu(gate) * up)


class LlamaBlock(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.attention_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attention = Attention(cfg)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.feed_forward = FeedForward(cfg)

    def forward(self, x, cos, sin, mask=None, cache=None, layer=0):
        x = x + self.attention(self.attention_norm(x), cos, sin, mask, cache, layer)
        return x + self.feed_forward(self.ffn_norm(x), cache, layer)


class Llama(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(LlamaBlock(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.output = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        if cfg.shared_classifier:
            self.output.weight = self.tok_embeddings.weight
        self.apply(self._init_weights)
        cos, sin = rope_tables(cfg.head_dim, cfg.context, cfg.rope_theta)
        # Derived from the config, so not saved with the weights.
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    @staticmethod
    def _init_weights(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def _rope(self, position_ids):
        """cos/sin for positions (B, T) or (T,), shaped to broadcast over heads: (B or 1, 1, T, D/2)."""
        cos, sin = self.rope_cos[position_ids], self.rope_sin[position_ids]
        if position_ids.dim() == 1:
            cos, sin = cos[None], sin[None]
        return cos[:, None], sin[:, None]

    def forward(self, idx, targets=None, reduction: str = "mean"):
        """Full sequences from position 0; returns (logits, loss), loss None without targets."""
        B, T = idx.shape
        if T > self.cfg.context:
            raise ValueError(f"sequence of {T} tokens is longer than the context {self.cfg.context}")
        cos, sin = self._rope(torch.arange(T, device=idx.device))
        x = self.tok_embeddings(idx)
        for layer in self.layers:
            x = layer(x, cos, sin)
        return output_and_loss(self.norm(x), self.output.weight, targets, reduction)

    def forward_cached(self, idx, position_ids, key_valid, cache: KVCache):
        """Same contract as GPTNeo.forward_cached: new tokens `idx` (B, T) at `position_ids` (B, T),
        `key_valid` (B, cache.length + T) marks non-padding keys; returns last-position logits (B, vocab)."""
        T = idx.size(1)
        mask, _ = cache.masks(key_valid, T, self.output.weight.dtype)  # causal over cache slots, minus padding
        cos, sin = self._rope(position_ids)
        x = self.tok_embeddings(idx)
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, mask, cache, i)
        cache.advance(T)
        return self.output(self.norm(x[:, -1]))


# ---------------------------------------------------------------- llama2.c checkpoints

_LEGACY_HEADER = ("dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len")
_VERSIONED_MAGIC = 0x616B3432  # "ak42": llama2.c's newer export format (version 1/2), not the legacy one


def load_llama2c(path: str | Path) -> Llama:
    """A Llama from llama2.c's legacy .bin: 7 int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads,
    vocab_size, seq_len; vocab_size < 0 means an unshared classifier follows), then fp32 weights."""
    path = Path(path)
    raw = np.fromfile(path, dtype=np.int32, count=7)
    if len(raw) < 7:
        raise ValueError(f"{path} is too short for a llama2.c checkpoint")
    if raw[0] == _VERSIONED_MAGIC:
        raise ValueError(f"{path} uses llama2.c's versioned export (magic 'ak42'); only the legacy .bin "
                         "(export.py --version 0) is supported")
    h = dict(zip(_LEGACY_HEADER, (int(v) for v in raw)))
    cfg = LlamaConfig(dim=h["dim"], n_layers=h["n_layers"], n_heads=h["n_heads"], n_kv_heads=h["n_kv_heads"],
                      vocab_size=abs(h["vocab_size"]), hidden_dim=h["hidden_dim"], context=h["seq_len"],
                      shared_classifier=h["vocab_size"] > 0)
    weights = np.fromfile(path, dtype=np.float32, offset=7 * 4)
    model = Llama(cfg)
    _load_legacy_weights(model, weights)
    return model.eval()


def _legacy_layout(cfg: LlamaConfig) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) in llama2.c's legacy export order; "layers.*" stacks one tensor per layer and
    "freqs" (precomputed RoPE tables, which we recompute) is skipped."""
    L, D, H, kv, hd = cfg.n_layers, cfg.dim, cfg.hidden_dim, cfg.n_kv_heads * cfg.head_dim, cfg.head_dim
    layout = [
        ("tok_embeddings.weight", (cfg.vocab_size, D)),
        ("layers.*.attention_norm.weight", (L, D)),
        ("layers.*.attention.wq.weight", (L, D, D)),
        ("layers.*.attention.wk.weight", (L, kv, D)),
        ("layers.*.attention.wv.weight", (L, kv, D)),
        ("layers.*.attention.wo.weight", (L, D, D)),
        ("layers.*.ffn_norm.weight", (L, D)),
        ("layers.*.feed_forward.w1.weight", (L, H, D)),
        ("layers.*.feed_forward.w2.weight", (L, D, H)),
        ("layers.*.feed_forward.w3.weight", (L, H, D)),
        ("norm.weight", (D,)),
        ("freqs", (2, cfg.context, hd // 2)),  # cos then sin
    ]
    if not cfg.shared_classifier:
        layout.append(("output.weight", (cfg.vocab_size, D)))
    return layout


def _load_legacy_weights(model: Llama, flat: np.ndarray) -> None:
    layout = _legacy_layout(model.cfg)
    expected = sum(int(np.prod(shape)) for _, shape in layout)
    if flat.size != expected:
        raise ValueError(f"checkpoint holds {flat.size} floats after the header, the config implies {expected}: "
                         "not a legacy llama2.c .bin, or a truncated one")
    state, offset = {}, 0
    for name, shape in layout:
        n = int(np.prod(shape))
        t = torch.from_numpy(flat[offset : offset + n].copy()).view(shape)
        offset += n
        if name == "freqs":
            continue
        if name.startswith("layers.*"):
            state.update({name.replace("*", str(i)): t[i] for i in range(model.cfg.n_layers)})
        else:
            state[name] = t
    if model.cfg.shared_classifier:
        state["output.weight"] = state["tok_embeddings.weight"]
    model.load_state_dict(state, strict=True)


# ---------------------------------------------------------------- llama2.c tokenizer


class Llama2cTokenizer:
    """llama2.c's tokenizer .bin: int32 max_token_length, then per token float32 score, int32 length and
    the piece's UTF-8 bytes (SentencePiece's '▁' already turned into ' '). Encoding is run.c's: a dummy
    prefix space, each character looked up (else its UTF-8 bytes as <0xHH> tokens), then repeatedly merge
    the adjacent pair whose merged piece has the highest score."""

    def __init__(self, path: str | Path):
        data = Path(path).read_bytes()
        self.max_token_length = int(np.frombuffer(data, dtype=np.int32, count=1)[0])
        self.pieces: list[bytes] = []
        self.scores: list[float] = []
        pos = 4
        while pos < len(data):
            score = float(np.frombuffer(data, dtype=np.float32, count=1, offset=pos)[0])
            n = int(np.frombuffer(data, dtype=np.int32, count=1, offset=pos + 4)[0])
            self.pieces.append(data[pos + 8 : pos + 8 + n])
            self.scores.append(score)
            pos += 8 + n
        self.ids: dict[bytes, int] = {}
        for i, p in enumerate(self.pieces):
            self.ids.setdefault(p, i)
        self.byte_ids = [self.ids.get(f"<0x{b:02X}>".encode()) for b in range(256)]
        if None in self.byte_ids:
            raise ValueError(f"{path} lacks byte-fallback tokens <0x00>..<0xFF>")

    @property
    def vocab_size(self) -> int:
        return len(self.pieces)

    def encode(self, text: str, bos: bool = True, eos: bool = False) -> list[int]:
        tokens = []
        if text:
            tokens.append(self.ids[b" "])  # SentencePiece's dummy prefix
        for ch in text:
            b = ch.encode("utf-8")
            tokens.extend([self.ids[b]] if b in self.ids else [self.byte_ids[x] for x in b])
        tokens = self._merge(tokens)
        return [BOS_ID] * bos + tokens + [EOS_ID] * eos

    def _pair(self, a: int, b: int) -> int | None:
        return self.ids.get(self.pieces[a] + self.pieces[b])

    def _merge(self, tokens: list[int]) -> list[int]:
        # merged[i]: the token for pair (i, i+1) or None; only the neighbours of a merge change, so we
        # keep this list instead of re-looking-up every pair each round (run.c does; same result).
        merged = [self._pair(a, b) for a, b in zip(tokens, tokens[1:])]
        while True:
            best_i = -1
            for i, m in enumerate(merged):
                # Strictly greater: on ties the leftmost pair wins, as in run.c.
                if m is not None and (best_i < 0 or self.scores[m] > self.scores[merged[best_i]]):
                    best_i = i
            if best_i < 0:
                return tokens
            tokens[best_i : best_i + 2] = [merged[best_i]]
            del merged[best_i]
            if best_i > 0:
                merged[best_i - 1] = self._pair(tokens[best_i - 1], tokens[best_i])
            if best_i < len(merged):
                merged[best_i] = self._pair(tokens[best_i], tokens[best_i + 1])

    def piece_bytes(self, prev: int | None, token: int) -> bytes:
        """run.c's decode(prev, token): the piece, without its leading space right after BOS, and a
        <0xHH> token as its raw byte."""
        piece = self.pieces[token]
        if prev == BOS_ID and piece.startswith(b" "):
            piece = piece[1:]
        if len(piece) == 6 and piece.startswith(b"<0x") and piece.endswith(b">"):
            try:
                return bytes([int(piece[3:5], 16)])
            except ValueError:
                pass  # a piece that merely looks like a byte token
        return piece

    def decode(self, ids: list[int]) -> str:
        """Text of a token sequence: BOS/EOS print nothing (BOS still strips the next piece's space);
        bytes are joined before UTF-8 decoding so byte-fallback characters come back whole."""
        out, prev = [], None
        for t in ids:
            if t not in (BOS_ID, EOS_ID):
                out.append(self.piece_bytes(prev, t))
            prev = t
        return b"".join(out).decode("utf-8", errors="replace")


class Llama2cCodec:
    """A llama2.c tokenizer with the interface the sampler and the scorers use (`encode`, `decode`,
    `eot_id`): in llama2.c's data every story starts with BOS, so BOS is what separates stories."""

    eot_id = BOS_ID

    def __init__(self, path: str | Path):
        self.tok = Llama2cTokenizer(path)

    @property
    def vocab_size(self) -> int:
        return self.tok.vocab_size

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, bos=False)

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids)
