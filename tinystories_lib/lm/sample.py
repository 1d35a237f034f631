"""Sampling: greedy, temperature, top-k, top-p, batched over prompts of different lengths, with a KV cache.

Prompts are left-padded to a common length; each row gets its own position ids (starting at 0 at its
first real token) and padding is masked out of attention, so a batched completion equals the same prompt
completed alone. Every prompt starts with `<|endoftext|>`, the token the model saw before every story.

`filter_logits` is the plain definition of what top-k and top-p keep; `sample_next` draws from exactly
that distribution through lm/fast_top_p.py, and the models' `forward_cached` reuse keys and values through
lm/kvcache.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tinystories_lib.lm import fast_top_p
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


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Mask (to -inf) everything outside the top-k and outside the smallest nucleus of mass top_p.

    The readable reference for what sampling keeps: sort, running sum, mask. A token stays in the
    nucleus while the mass of the more probable tokens before it is still short of top_p, so the top token
    always stays; every token as probable as the last one kept stays too (ties at the edge of the top-k
    likewise). `sample_next` keeps exactly these tokens, the fast way (lm/fast_top_p.py)."""
    if top_k and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        probs = logits.float().softmax(-1)
        desc = probs.sort(dim=-1, descending=True).values
        mass_before = F.pad(desc.cumsum(-1)[..., :-1], (1, 0))  # of the tokens before each one in desc
        n_kept = (mass_before < top_p).sum(-1, keepdim=True)
        smallest_kept = desc.gather(-1, n_kept - 1)
        logits = logits.masked_fill(probs < smallest_kept, float("-inf"))
    return logits


def sample_next(logits: torch.Tensor, cfg: SamplingConfig, gen: torch.Generator) -> torch.Tensor:
    """One token per row: argmax when greedy, else a draw from softmax(filter_logits(logits / temperature,
    top_k, top_p)). The draw is `fast_top_p.sample`'s: the same distribution, found without masking the
    vocabulary or sorting all of it (lm/fast_top_p.py says how and why)."""
    if cfg.temperature == 0:
        return logits.argmax(-1)
    logits = logits.float()
    if cfg.temperature != 1.0:
        logits = logits / cfg.temperature
    if cfg.top_k and cfg.top_k < logits.size(-1):
        logits = filter_logits(logits, cfg.top_k)
    return fast_top_p.sample(logits.softmax(-1), cfg.top_p, gen)


def decoding_cache(model, batch: int, length: int, device, dtype, compiled: bool = False):
    """(cache, decode) for a generation of `length` tokens: `decode(tok, pos, key_valid)` is one decode
    step, `key_valid` (batch, cache.capacity) marking the real tokens. Eager: a `KVCache` of `length`
    slots; compiled: lm/compiled_decode.py's step over a `StaticKVCache` of `static_capacity(length)`."""
    if not compiled:
        cache = KVCache(model.cfg, batch, length, device, dtype)
        return cache, lambda tok, pos, valid: model.forward_cached(tok, pos, valid[:, : cache.length + 1], cache)
    from tinystories_lib.lm.compiled_decode import StaticKVCache, decode_step, static_capacity

    cache = StaticKVCache(model.cfg, batch, static_capacity(length, model.cfg.context), device, dtype)
    return cache, lambda tok, pos, valid: decode_step(model, tok, pos, valid, cache)


@torch.no_grad()
def generate(model, prompts: list[list[int]], cfg: SamplingConfig, eot_id: int | None = None,
             compiled: bool = False) -> list[list[int]]:
    """Continue each prompt (a list of token ids); returns only the new tokens, cut at end-of-text.
    `model` is any model with `cfg.context` and `forward_cached` (GPT-Neo, or the Llama variant).
    `compiled` decodes with lm/compiled_decode.py's compiled step (the same tokens; faster at small
    batches once compiled; at large ones about as fast, since it attends over every slot of its cache)."""
    if not prompts:
        return []
    keep_freed_memory()  # decode steps reuse same-sized buffers (lm/allocator.py)
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
    cache, decode = decoding_cache(model, B, T + max_new, device, dtype, compiled)
    key_valid = F.pad(key_valid, (0, cache.capacity - key_valid.size(1)), value=True)
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
        logits = decode(tok[:, None], next_pos[:, None], key_valid)
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
