"""Sampling: greedy, temperature, top-k, top-p, batched over prompts of different lengths, with a KV cache.

Prompts are left-padded to a common length; each row gets its own position ids (starting at 0 at its
first real token) and padding is masked out of attention, so a batched completion equals the same prompt
completed alone. Every prompt starts with `<|endoftext|>`, the token the model saw before every story.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .model import GPTNeo, KVCache
from .tokenizer import Codec


@dataclass
class SamplingConfig:
    max_new_tokens: int = 200
    temperature: float = 0.8  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1.0 = off
    stop_at_eot: bool = True
    seed: int = 0


def _top_p_threshold(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Per row, the smallest probability kept by nucleus sampling: tokens are kept in order of probability
    until their mass reaches top_p (the top token always stays). Sorting values alone (numpy on CPU) is
    several times cheaper than torch.sort with indices, which dominated sampling time."""
    if probs.device.type == "cpu":
        desc = torch.from_numpy(-np.sort(-probs.numpy(), axis=-1))
    else:
        desc = torch.sort(probs, dim=-1, descending=True).values
    n_before = (desc.cumsum(-1) < top_p).sum(-1, keepdim=True).clamp(max=probs.size(-1) - 1)
    return desc.gather(-1, n_before).to(probs.device)


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Mask (to -inf) everything outside the top-k and outside the smallest nucleus of mass top_p."""
    if top_k and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        probs = logits.float().softmax(-1)
        logits = logits.masked_fill(probs < _top_p_threshold(probs, top_p), float("-inf"))
    return logits


def sample_next(logits: torch.Tensor, cfg: SamplingConfig, gen: torch.Generator) -> torch.Tensor:
    """One token per row: argmax when greedy, else a draw from the filtered distribution by inverse CDF
    (a uniform number against the cumulative sum; cheaper than torch.multinomial on CPU)."""
    if cfg.temperature == 0:
        return logits.argmax(-1)
    probs = filter_logits(logits.float() / cfg.temperature, cfg.top_k, cfg.top_p).softmax(-1)
    cdf = probs.cumsum(-1)
    u = torch.rand(probs.size(0), 1, generator=gen, device=probs.device) * cdf[:, -1:]
    # right=True skips zero-probability tokens; the clamp guards u * total rounding up to the total.
    tok = torch.searchsorted(cdf, u, right=True).squeeze(-1)
    last_allowed = probs.size(-1) - 1 - (probs.flip(-1) > 0).to(torch.int8).argmax(-1)
    return torch.minimum(tok, last_allowed)


@torch.no_grad()
def generate(model, prompts: list[list[int]], cfg: SamplingConfig, eot_id: int | None = None) -> list[list[int]]:
    """Continue each prompt (a list of token ids); returns only the new tokens, cut at end-of-text.
    `model` is any model with `cfg.context` and `forward_cached` (GPT-Neo, or the Llama variant)."""
    if not prompts:
        return []
    if any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token (start it with <|endoftext|>)")
    device = next(model.parameters()).device
    ctx = model.cfg.context
    prompts = [p[-(ctx - 1) :] for p in prompts]  # leave room for at least one new token
    B, T = len(prompts), max(len(p) for p in prompts)
    max_new = min(cfg.max_new_tokens, ctx - T)
    pad = [T - len(p) for p in prompts]
    idx = torch.zeros((B, T), dtype=torch.long)
    for b, p in enumerate(prompts):
        idx[b, pad[b] :] = torch.tensor(p)
    pad_t = torch.tensor(pad)
    pos = (torch.arange(T)[None, :] - pad_t[:, None]).clamp(min=0)
    key_valid = torch.zeros((B, T + max_new), dtype=torch.bool)
    key_valid[:, :T] = torch.arange(T)[None, :] >= pad_t[:, None]
    key_valid[:, T:] = True
    idx, pos, key_valid, pad_t = idx.to(device), pos.to(device), key_valid.to(device), pad_t.to(device)

    dtype = next(model.parameters()).dtype
    cache = KVCache(model.cfg, B, T + max_new, device, dtype)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    out = torch.zeros((B, max_new), dtype=torch.long, device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    lengths = torch.full((B,), max_new, dtype=torch.long, device=device)
    logits = model.forward_cached(idx, pos, key_valid[:, :T], cache)
    next_pos = pos[:, -1] + 1
    for t in range(max_new):
        tok = sample_next(logits, cfg, gen)
        out[:, t] = tok
        if cfg.stop_at_eot and eot_id is not None:
            newly = (tok == eot_id) & ~done
            lengths[newly] = t
            done |= newly
            if bool(done.all()):
                break
        if t + 1 == max_new:
            break
        logits = model.forward_cached(tok[:, None], next_pos[:, None], key_valid[:, : cache.length + 1], cache)
        next_pos = next_pos + 1
    out, lengths = out.cpu(), lengths.cpu()
    return [out[b, : int(lengths[b])].tolist() for b in range(B)]


def complete(model: GPTNeo, codec: Codec, beginnings: list[str], cfg: SamplingConfig, batch_size: int = 64) -> list[str]:
    """Complete story beginnings (text in, text out: only the generated continuation)."""
    prompts = [[codec.eot_id, *codec.encode(b)] for b in beginnings]
    texts = []
    for i in range(0, len(prompts), batch_size):
        chunk_cfg = SamplingConfig(**{**cfg.__dict__, "seed": cfg.seed + i})
        for ids in generate(model, prompts[i : i + batch_size], chunk_cfg, codec.eot_id):
            texts.append(codec.decode(ids))
    return texts
