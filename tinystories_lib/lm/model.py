"""The paper's model family: GPT-Neo, in one readable file.

What makes it GPT-Neo (and the TinyStories checkpoints `roneneldan/TinyStories-*`) rather than GPT-2:
  - learned absolute position embeddings, LayerNorm before attention and MLP, tied input/output embeddings;
  - attention layers alternate global (full causal) and local (causal, each token sees the last `window`
    tokens including itself), starting with global;
  - attention scores are NOT divided by sqrt(head_dim); q/k/v projections have no bias, the output
    projection has one; the MLP is Linear -> GELU (tanh approximation, "gelu_new") -> Linear.
Parameter names follow Hugging Face's GPTNeoForCausalLM so checkpoints convert by name.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from tinystories_lib.lm.chunked_loss import cpu_autocast_dtype, output_and_loss
from tinystories_lib.lm.kvcache import KVCache, cached_attention, decode_mask


@dataclass
class GPTNeoConfig:
    vocab_size: int = 10000
    context: int = 512  # max sequence length (learned positions)
    hidden: int = 64
    layers: int = 8
    heads: int = 16
    window: int = 256  # local attention window
    intermediate: int | None = None  # MLP width, 4 * hidden when None
    attention_types: list[str] = field(default_factory=list)  # per layer; alternating global/local when empty
    dropout: float = 0.0
    layer_norm_eps: float = 1e-5

    def __post_init__(self):
        if not self.attention_types:
            self.attention_types = ["global" if i % 2 == 0 else "local" for i in range(self.layers)]
        if self.intermediate is None:
            self.intermediate = 4 * self.hidden
        if self.hidden % self.heads:
            raise ValueError(f"hidden size {self.hidden} is not divisible by heads {self.heads}")
        if len(self.attention_types) != self.layers:
            raise ValueError(f"attention_types has {len(self.attention_types)} entries for {self.layers} layers")

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def kv_heads(self) -> int:  # what the KV cache stores per layer (Llama's grouped attention stores fewer)
        return self.heads

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> GPTNeoConfig:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


# The published TinyStories models (hidden, layers); all use 16 heads, context 512, window 256.
NAMED_CONFIGS = {
    "1M": (64, 8),
    "3M": (128, 8),
    "8M": (256, 8),
    "28M": (512, 8),
    "33M": (768, 4),
    "1Layer-21M": (1024, 1),
    "2Layers-33M": (1024, 2),
}


def named_config(name: str, vocab_size: int = 50257, **overrides) -> GPTNeoConfig:
    hidden, layers = NAMED_CONFIGS[name]
    kw = dict(vocab_size=vocab_size, context=512, hidden=hidden, layers=layers, heads=16, window=256)
    kw.update(overrides)
    return GPTNeoConfig(**kw)


class SelfAttention(nn.Module):
    def __init__(self, cfg: GPTNeoConfig, local: bool):
        super().__init__()
        self.heads = cfg.heads
        self.local = local
        self.window = cfg.window
        self.k_proj = nn.Linear(cfg.hidden, cfg.hidden, bias=False)
        self.v_proj = nn.Linear(cfg.hidden, cfg.hidden, bias=False)
        self.q_proj = nn.Linear(cfg.hidden, cfg.hidden, bias=False)
        self.out_proj = nn.Linear(cfg.hidden, cfg.hidden, bias=True)
        self.dropout = cfg.dropout

    def forward(self, x, mask=None, cache: KVCache | None = None, layer: int = 0):
        B, T, C = x.shape
        H = self.heads
        if cache is not None:  # sampling: one fused q/k/v projection, attention over the cache
            w = cache.derived(("qkv", layer), lambda: torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight]))
            q, k, v = F.linear(x, w).view(B, T, 3, H, C // H).permute(2, 0, 3, 1, 4)
            kt, v = cache.update(layer, k, v)
            # GPT-Neo does not scale attention scores: scale=1.0.
            y = cached_attention(q, kt, v, mask, scale=1.0, values_transposed=cache.transposed)
            return self.out_proj(y.transpose(1, 2).reshape(B, T, C))
        q = self.q_proj(x).view(B, T, H, C // H).transpose(1, 2)
        k = self.k_proj(x).view(B, T, H, C // H).transpose(1, 2)
        v = self.v_proj(x).view(B, T, H, C // H).transpose(1, 2)
        p = self.dropout if self.training else 0.0
        # Under CPU autocast only the matmuls go to bf16: SDPA's CPU kernel is slower in bf16 (BENCHMARKS).
        fp32_attention = x.device.type == "cpu" and cpu_autocast_dtype() is not None
        if fp32_attention:
            q, k, v = q.float(), k.float(), v.float()
        with torch.autocast("cpu", enabled=False) if fp32_attention else nullcontext():
            # GPT-Neo does not scale attention scores: scale=1.0.
            if mask is None:
                y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=p, scale=1.0)
            else:
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, scale=1.0)
        y = y.transpose(1, 2).reshape(B, T, C)
        return F.dropout(self.out_proj(y), p, self.training)


class MLP(nn.Module):
    def __init__(self, cfg: GPTNeoConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.hidden, cfg.intermediate)
        self.c_proj = nn.Linear(cfg.intermediate, cfg.hidden)
        self.dropout = cfg.dropout

    def forward(self, x):
        x = self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))
        return F.dropout(x, self.dropout, self.training)


class Attn(nn.Module):
    """Wrapper that exists only so parameter names match Hugging Face (`attn.attention.q_proj`)."""

    def __init__(self, cfg: GPTNeoConfig, local: bool):
        super().__init__()
        self.attention = SelfAttention(cfg, local)


class Block(nn.Module):
    def __init__(self, cfg: GPTNeoConfig, local: bool):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_eps)
        self.attn = Attn(cfg, local)
        self.ln_2 = nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, mask=None, cache=None, layer=0):
        x = x + self.attn.attention(self.ln_1(x), mask, cache, layer)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, cfg: GPTNeoConfig):
        super().__init__()
        self.wte = nn.Embedding(cfg.vocab_size, cfg.hidden)
        self.wpe = nn.Embedding(cfg.context, cfg.hidden)
        self.drop = nn.Dropout(cfg.dropout)
        self.h = nn.ModuleList(Block(cfg, t == "local") for t in cfg.attention_types)
        self.ln_f = nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_eps)


class GPTNeo(nn.Module):
    def __init__(self, cfg: GPTNeoConfig):
        super().__init__()
        self.cfg = cfg
        self.transformer = Transformer(cfg)
        self.lm_head = nn.Linear(cfg.hidden, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # tied
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def num_params(self, non_embedding: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.transformer.wte.weight.numel() + self.transformer.wpe.weight.numel()
        return n

    def local_mask(self, T: int, device) -> torch.Tensor | None:
        """Boolean (T, T) mask for local layers, or None when the window covers the whole sequence."""
        if T <= self.cfg.window:
            return None
        i = torch.arange(T, device=device)
        d = i[:, None] - i[None, :]
        return (d >= 0) & (d < self.cfg.window)

    def forward(self, idx, targets=None, reduction: str = "mean"):
        """Training/evaluation forward on full sequences starting at position 0.

        Returns (logits, loss); with targets, logits are None unless needed, to save memory."""
        B, T = idx.shape
        if T > self.cfg.context:
            raise ValueError(f"sequence of {T} tokens is longer than the context {self.cfg.context}")
        pos = torch.arange(T, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        lmask = self.local_mask(T, idx.device)
        for block in self.transformer.h:
            x = block(x, lmask if block.attn.attention.local else None)
        x = self.transformer.ln_f(x)
        return output_and_loss(x, self.lm_head.weight, targets, reduction)

    def forward_cached(self, idx, position_ids, key_valid, cache: KVCache):
        """Incremental forward for sampling: `idx` (B, T) new tokens at `position_ids` (B, T);
        `key_valid` (B, cache.length + T) marks real (non-padding) tokens. Returns logits of the
        last position only, (B, vocab)."""
        B, T = idx.shape
        t0, L = cache.length, cache.attended(T)
        x = self.transformer.wte(idx) + self.transformer.wpe(position_ids)
        q_pos = torch.arange(t0, t0 + T, device=idx.device)
        k_pos = torch.arange(L, device=idx.device)
        key_valid = F.pad(key_valid, (0, L - key_valid.size(1)))  # slots not written yet: after q, masked
        d = q_pos[:, None] - k_pos[None, :]
        causal = (d >= 0)[None, None] & key_valid[:, None, None, :]
        local = causal & (d < self.cfg.window)[None, None]
        # A row whose every key is masked (all padding so far) would give NaN; let it see itself.
        diag = (d == 0)[None, None]
        causal, local = decode_mask(causal | diag, x.dtype), decode_mask(local | diag, x.dtype)
        for i, block in enumerate(self.transformer.h):
            x = block(x, local if block.attn.attention.local else causal, cache, i)
        cache.length = t0 + T
        # x @ W^T with W^T made contiguous once is ~1.4x faster than F.linear at decode batch sizes.
        return self.transformer.ln_f(x[:, -1]) @ cache.derived("lm_head_t", lambda: self.lm_head.weight.t().contiguous())

    def flops_per_token(self) -> float:
        """Training FLOPs per token (forward + backward), 6N plus attention, as in the PaLM appendix."""
        cfg = self.cfg
        n = self.num_params(non_embedding=True) + cfg.vocab_size * cfg.hidden
        attn = sum(min(cfg.context, cfg.window) if t == "local" else cfg.context for t in cfg.attention_types)
        return 6 * n + 6 * cfg.hidden * attn


def describe(cfg: GPTNeoConfig) -> str:
    """One line with the size of a config, counted without allocating the model."""
    per_layer = 4 * cfg.hidden * cfg.hidden + cfg.hidden + 2 * cfg.hidden * cfg.intermediate + cfg.intermediate + cfg.hidden + 4 * cfg.hidden
    total = cfg.layers * per_layer + cfg.vocab_size * cfg.hidden + cfg.context * cfg.hidden + 2 * cfg.hidden
    return f"GPT-Neo h{cfg.hidden} l{cfg.layers} heads{cfg.heads}: {total / 1e6:.2f}M params ({total:,})"
