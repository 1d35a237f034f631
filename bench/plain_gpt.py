"""The baseline a user would write: a plain nanoGPT-style decoder of the same dims, no tricks.

What someone copies from nanoGPT (or writes from the "Attention is all you need" picture) to train a
TinyStories-sized model in PyTorch: token + learned position embeddings, pre-LayerNorm blocks of causal
self-attention (one `nn.Linear` for q, k and v, `F.scaled_dot_product_attention(is_causal=True)` with its
default 1/sqrt(head_dim) scale) and a GELU MLP, a final LayerNorm, an output layer tied to the embedding,
and `F.cross_entropy` over the full logits. Every layer is global: GPT-Neo's local-window layers and
unscaled scores are the kit's semantics, not what a user copying nanoGPT gets, and plain causal SDPA is
the fastest thing PyTorch offers such a user. Same hidden size, layers, heads, MLP width (4x), vocabulary
and context as the kit's config, so the same parameter count up to the biases.

Used by bench/bench_train.py only.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class CausalSelfAttention(nn.Module):
    def __init__(self, hidden: int, heads: int):
        super().__init__()
        self.heads = heads
        self.c_attn = nn.Linear(hidden, 3 * hidden)
        self.c_proj = nn.Linear(hidden, hidden)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.heads, C // self.heads).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class MLP(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.c_fc = nn.Linear(hidden, 4 * hidden)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * hidden, hidden)

    def forward(self, x):
        return self.c_proj(self.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, hidden: int, heads: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(hidden)
        self.attn = CausalSelfAttention(hidden, heads)
        self.ln_2 = nn.LayerNorm(hidden)
        self.mlp = MLP(hidden)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class PlainGPT(nn.Module):
    """`PlainGPT(vocab, context, hidden, layers, heads)`; `model(idx, targets) -> (logits, loss)`."""

    def __init__(self, vocab_size: int, context: int, hidden: int, layers: int, heads: int):
        super().__init__()
        self.wte = nn.Embedding(vocab_size, hidden)
        self.wpe = nn.Embedding(context, hidden)
        self.h = nn.ModuleList(Block(hidden, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(hidden)
        self.lm_head = nn.Linear(hidden, vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # tied, as in nanoGPT
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    @classmethod
    def like(cls, cfg) -> PlainGPT:
        """The same dims as a kit GPTNeoConfig."""
        return cls(cfg.vocab_size, cfg.context, cfg.hidden, cfg.layers, cfg.heads)

    def forward(self, idx, targets=None):
        B, T = idx.shape
        x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))
        for block in self.h:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        return logits, loss
