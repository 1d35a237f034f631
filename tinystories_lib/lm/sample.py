"""Sampling: greedy, temperature, top-k, top-p, batched over prompts of different lengths, with a KV cache.

Prompts are left-padded to a common length; each row gets its own position ids (starting at 0 at its
first real token) and padding is masked out of attention, so a batched completion equals the same prompt
completed alone. Every prompt starts with `<|endoftext|>`, the token the model saw before every story.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from tinystories_lib.lm.allocator import keep_freed_memory
from tinystories_lib.lm.kvcache import KVCache
from tinystories_lib.lm.model import GPTNeo
from tinystories_lib.lm.tokenizer import Codec


@dataclass
class SamplingConfig:
    max_new_tokens: int = 200
    temperature: float = 0.8  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1.0 = off
    stop_at_eot: bool = True
    seed: int = 0

    def __post_init__(self):
        problems = [f"{name} {why}, got {value}" for name, value, ok, why in (
            ("max_new_tokens", self.max_new_tokens, self.max_new_tokens >= 1, "must be at least 1"),
            ("temperature", self.temperature, self.temperature >= 0, "must be >= 0 (0 = greedy)"),
            ("top_k", self.top_k, self.top_k >= 0, "must be >= 0 (0 = off)"),
            ("top_p", self.top_p, 0 < self.top_p <= 1, "must be in (0, 1] (1 = off)"),
        ) if not ok]
        if problems:
            raise ValueError("sampling: " + "; ".join(problems))


def _top_p_threshold(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Per row (B, 1), the smallest probability kept by nucleus sampling: tokens are kept in order of
    probability until their mass reaches top_p (the top token always stays). Only values are sorted
    (numpy's SIMD sort on CPU), several times cheaper than torch.sort with indices; when every row's
    nucleus fits in its 64 largest values (a trained model, mostly), only those are sorted."""
    V, k = probs.size(-1), 64
    if probs.device.type != "cpu":
        return _threshold_from_sorted(torch.sort(probs, dim=-1).values, top_p)
    pn = probs.numpy()
    if V > 4 * k and bool((probs.amax(-1) * k >= top_p).all()):  # else no row's nucleus fits in k
        top = torch.from_numpy(np.sort(np.partition(pn, V - k, axis=-1)[:, V - k :], axis=-1))
        n_dropped = _n_dropped(top, top_p)
        if bool((n_dropped > 0).all()):  # a dropped value inside the top k: the threshold is in it
            return top.gather(-1, n_dropped)
    return _threshold_from_sorted(torch.from_numpy(np.sort(pn, axis=-1)), top_p)


def _n_dropped(asc: torch.Tensor, top_p: float) -> torch.Tensor:
    """How many of the ascending values are dropped: value i goes while the mass above it (the values
    after it) still reaches top_p, i.e. while cumsum[i] <= total - top_p. At most all but the last."""
    blocks = _block_cdf(asc)
    return _first_above(asc, blocks, blocks[:, -1:] - top_p)


def _threshold_from_sorted(asc: torch.Tensor, top_p: float) -> torch.Tensor:
    return asc.gather(-1, _n_dropped(asc, top_p))


BLOCK = 128  # values per block of the two-level running sum


def _block_cdf(values: torch.Tensor) -> torch.Tensor:
    """Running sums (B, n_blocks) over consecutive blocks of BLOCK values of each row (the last block may
    be shorter): with `_first_above`, an inverse CDF that reads a row instead of writing its cumsum."""
    B, V = values.shape
    full = V // BLOCK * BLOCK
    sums = values[:, :full].reshape(B, -1, BLOCK).sum(-1)
    if full < V:
        sums = torch.cat([sums, values[:, full:].sum(-1, keepdim=True)], dim=1)
    return sums.cumsum(-1)


def _first_above(values: torch.Tensor, blocks: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per row (B, 1), the first index whose running sum of nonnegative `values` exceeds x (B, 1), i.e.
    searchsorted(values.cumsum(-1), x, right=True) for x below the row's total: the block first (from
    `_block_cdf`), then a running sum inside that block only. The index found holds a nonzero value even
    where the two levels round differently (x is clamped inside the block)."""
    V = values.size(-1)
    b = torch.searchsorted(blocks, x, right=True).clamp_(max=blocks.size(-1) - 1)
    before = torch.where(b > 0, blocks.gather(-1, (b - 1).clamp(min=0)), torch.zeros_like(x))
    cols = b * BLOCK + torch.arange(BLOCK, device=values.device)
    inside = values.gather(-1, cols.clamp(max=V - 1)).masked_fill_(cols >= V, 0).cumsum(-1)
    last = inside[:, -1:]
    r = torch.minimum(x - before, torch.where(last > 0, torch.nextafter(last, torch.zeros_like(last)), last))
    return (b * BLOCK + torch.searchsorted(inside, r, right=True)).clamp_(max=V - 1)


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Mask (to -inf) everything outside the top-k and outside the smallest nucleus of mass top_p."""
    if top_k and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        probs = logits.float().softmax(-1)
        logits = logits.masked_fill(probs < _top_p_threshold(probs, top_p), float("-inf"))
    return logits


MAX_REDRAWS = 16


def _draw(probs: torch.Tensor, blocks: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One index per row (B, 1) with probability proportional to `probs` (inverse CDF on two levels).
    u * total lies strictly below the total, so the index found has nonzero probability."""
    total = blocks[:, -1:]
    u = torch.rand(probs.size(0), 1, generator=gen, device=probs.device, dtype=probs.dtype) * total
    return _first_above(probs, blocks, torch.minimum(u, torch.nextafter(total, torch.zeros_like(total))))


def sample_next(logits: torch.Tensor, cfg: SamplingConfig, gen: torch.Generator) -> torch.Tensor:
    """One token per row: argmax when greedy, else a draw from the filtered distribution.

    Top-p without touching the vocabulary twice: draw from the whole softmax and redraw the rows whose
    token falls below the nucleus threshold. Accepted draws are distributed exactly as draws from the
    renormalised nucleus, and each try is accepted with probability >= top_p. Rows still unlucky after
    MAX_REDRAWS tries (only when the nucleus holds little mass) draw from their masked distribution."""
    if cfg.temperature == 0:
        return logits.argmax(-1)
    logits = logits.float()
    if cfg.temperature != 1.0:
        logits = logits / cfg.temperature
    if cfg.top_k and cfg.top_k < logits.size(-1):
        logits = filter_logits(logits, cfg.top_k)
    probs = logits.softmax(-1)
    blocks = _block_cdf(probs)
    tok = _draw(probs, blocks, gen)
    if cfg.top_p >= 1.0:
        return tok.squeeze(-1)
    threshold = _top_p_threshold(probs, cfg.top_p)
    for _ in range(MAX_REDRAWS):
        low = probs.gather(-1, tok) < threshold
        if not bool(low.any()):
            return tok.squeeze(-1)
        tok = torch.where(low, _draw(probs, blocks, gen), tok)
    rows = (probs.gather(-1, tok) < threshold).squeeze(-1).nonzero().squeeze(-1)
    p = probs[rows]
    kept = p * (p >= threshold[rows])
    tok[rows] = _draw(kept, _block_cdf(kept), gen)
    return tok.squeeze(-1)


@torch.no_grad()
def generate(model, prompts: list[list[int]], cfg: SamplingConfig, eot_id: int | None = None) -> list[list[int]]:
    """Continue each prompt (a list of token ids); returns only the new tokens, cut at end-of-text.
    `model` is any model with `cfg.context` and `forward_cached` (GPT-Neo, or the Llama variant)."""
    if not prompts:
        return []
    keep_freed_memory()  # decode steps reuse same-sized buffers: +24% for 1M on CPU (see perf.py)
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


def complete(model: GPTNeo, codec: Codec, beginnings: list[str], cfg: SamplingConfig, batch_size: int = 64,
             desc: str | None = None) -> list[str]:
    """Complete story beginnings (text in, text out: only the generated continuation). With `desc`, a
    progress bar counts the completions (the notebooks' long sampling cells)."""
    prompts = [[codec.eot_id, *codec.encode(b)] for b in beginnings]
    texts = []
    bar = None
    if desc is not None:
        from tinystories_lib.progress import bar as progress_bar

        bar = progress_bar(total=len(prompts), desc=desc, unit="story")
    try:
        for i in range(0, len(prompts), batch_size):
            chunk_cfg = SamplingConfig(**{**cfg.__dict__, "seed": cfg.seed + i})
            for ids in generate(model, prompts[i : i + batch_size], chunk_cfg, codec.eot_id):
                texts.append(codec.decode(ids))
            if bar is not None:
                bar.update(min(batch_size, len(prompts) - i))
    finally:
        if bar is not None:
            bar.close()
    return texts
