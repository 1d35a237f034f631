"""The paper's model family: GPT-Neo, in one readable file.

What makes it GPT-Neo (and the TinyStories checkpoints `roneneldan/TinyStories-*`) rather than GPT-2:
  - learned absolute position embeddings, LayerNorm before attention and MLP, tied input/output embeddings;
  - attention layers alternate global (full causal) and local (causal, each token sees the last `window`
    tokens including itself), starting with global;
  - attention scores are NOT divided by sqrt(head_dim); q/k/v projections have no bias, the output
    projection has one; the MLP is Linear -> GELU (tanh approximation, "gelu_new") -> Linear.
Parameter names follow Hugging Face's GPTNeoForCausalLM so checkpoints convert by name.

The speed tricks live in their own modules, each tested against the plain computation: lm/kvcache.py
(sampling's KV cache and attention over it, behind `cache=` and `forward_cached`), lm/chunked_loss.py
(the output layer fused with the loss) and lm/cpu_autocast.py (attention kept in fp32 under CPU autocast).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from tinystories_lib.lm.chunked_loss import output_and_loss
from tinystories_lib.lm.cpu_autocast import attention
from tinystories_lib.lm.kvcache import KVCache


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
        if cache is None:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        else:  # sampling: the three projections as one matmul
            q, k, v = cache.fused_linear(("qkv", layer), x, self.q_proj, self.k_proj, self.v_proj)
        q, k, v = (t.view(B, T, self.heads, C // self.heads).transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
        # GPT-Neo does not scale attention scores: scale=1.0.
        if cache is not None:  # sampling: store this step's k, v and attend over the cache
            y = cache.attend(layer, q, k, v, mask, scale=1.0)
            return self.out_proj(y.transpose(1, 2).reshape(B, T, C))
        p = self.dropout if self.training else 0.0
        y = attention(q, k, v, mask, dropout_p=p, scale=1.0, window=self.window if self.local else None)
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
        """Incremental forward for sampling (lm/kvcache.py): `idx` (B, T) new tokens at `position_ids`
        (B, T); `key_valid` (B, cache.length + T) marks real (non-padding) tokens. Returns logits of the
        last position only, (B, vocab)."""
        T = idx.size(1)
        x = self.transformer.wte(idx) + self.transformer.wpe(position_ids)
        causal, local = cache.masks(key_valid, T, x.dtype, window=self.cfg.window)
        for i, block in enumerate(self.transformer.h):
            x = block(x, local if block.attn.attention.local else causal, cache, i)
        cache.advance(T)
        return cache.output_logits(self.transformer.ln_f(x[:, -1]), self.lm_head.weight)

    def flops_per_token(self) -> float:
        """Training FLOPs per token (forward + backward), 6N plus attention, as in the PaLM appendix."""
        cfg = self.cfg
        n = self.num_params(non_embedding=True) + cfg.vocab_size * cfg.hidden
        attn = sum(min(cfg.context, cfg.window) if t == "local" else cfg.context for t in cfg.attention_types)
        return 6 * n + 6 * cfg.hidden * attn


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


def describe(cfg: GPTNeoConfig) -> str:
    """One line with the size of a config, counted without allocating the model."""
    per_layer = 4 * cfg.hidden * cfg.hidden + cfg.hidden + 2 * cfg.hidden * cfg.intermediate + cfg.intermediate + cfg.hidden + 4 * cfg.hidden
    total = cfg.layers * per_layer + cfg.vocab_size * cfg.hidden + cfg.context * cfg.hidden + 2 * cfg.hidden
    return f"GPT-Neo h{cfg.hidden} l{cfg.layers} heads{cfg.heads}: {total / 1e6:.2f}M params ({total:,})"
