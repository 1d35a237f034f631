"""GPT-Neo's causal and local-window attention for training on CPU, in query blocks that skip masked keys.

PyTorch's CPU flash kernel behind `F.scaled_dot_product_attention` works on key blocks of 512 tokens. At
GPT-Neo's context of 512 it therefore computes every (query, key) score and then masks away the half that
a causal layer cannot see (and the 5/8 that a local layer with window 256 cannot), in forward and again in
backward. `attention` calls the same kernel (its forward and backward ops, which keep the logsumexp) once
per block of `BLOCK` queries, with only the keys that block can see: up to its last query for a global
layer, from `window - 1` before its first query for a local one, with the mask of that (block x keys)
rectangle. So the kernel computes about 60% of the scores (global) and 55% (local) at T = 512. Why this
pays and by how much: BENCHMARKS.md, section 1.

It is the same attention as SDPA causal (global) or with the boolean local mask, to float rounding, values
and gradients (tests/test_model.py). `usable` says when the model takes it: CPU training in fp32 or fp64
without dropout, not under torch.compile, where this torch has the kernel's ops; everything else is plain
SDPA (lm/cpu_autocast.py).
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

BLOCK = 128  # queries per kernel call

_ops = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
_FWD = getattr(_ops, "default", None)
_BWD = getattr(getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None), "default", None)


def usable(q: torch.Tensor, dropout_p: float = 0.0) -> bool:
    """Whether `attention` serves this call: the kernel's ops exist, CPU, fp32/fp64, no dropout, eager."""
    if _FWD is None or _BWD is None or q.device.type != "cpu" or dropout_p:
        return False
    compiling = getattr(torch.compiler, "is_compiling", None)
    return q.dtype in (torch.float32, torch.float64) and not (compiling and compiling())


def attention(q, k, v, window: int | None = None, scale: float | None = None) -> torch.Tensor:
    """Causal attention of q, k, v (B, H, T, D), each query seeing only the last `window` keys (itself
    included) when `window` is given: SDPA with `is_causal=True`, or with that boolean mask. Differentiable."""
    T = q.size(-2)
    if window is not None and window >= T:
        window = None
    scale = 1 / math.sqrt(q.size(-1)) if scale is None else float(scale)
    return _BlockAttention.apply(q, k, v, window, scale)


@lru_cache(maxsize=64)
def _plan(T: int, window: int | None, block: int) -> tuple:
    """(query start, query end, first key, whether a mask is needed) of each block."""
    plan = []
    for s in range(0, T, block):
        e = min(T, s + block)
        ks = 0 if window is None else max(0, s - window + 1)
        square = s == 0 and (window is None or window >= e)  # a plain causal square needs no mask
        plan.append((s, e, ks, not square))
    return tuple(plan)


@lru_cache(maxsize=256)
def _mask(s: int, e: int, ks: int, window: int | None, dtype: torch.dtype) -> torch.Tensor:
    """Additive (e - s, e - ks) mask of queries s..e-1 over keys ks..e-1: 0 where seen, -inf elsewhere."""
    i = torch.arange(s, e)[:, None]
    j = torch.arange(ks, e)[None, :]
    seen = j <= i
    if window is not None:
        seen &= i - j < window
    return torch.zeros(seen.shape, dtype=dtype).masked_fill_(~seen, float("-inf"))


class _BlockAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, window, scale):
        B, H, T, D = q.shape
        out = q.new_empty(B, T, H, D)  # the layout the model reshapes to (B, T, C) without a copy
        blocks, lses = [], []
        for s, e, ks, masked in _plan(T, window, BLOCK):
            mask = _mask(s, e, ks, window, q.dtype) if masked else None
            o, lse = _FWD(q[:, :, s:e], k[:, :, ks:e], v[:, :, ks:e], 0.0, not masked, attn_mask=mask, scale=scale)
            out[:, s:e] = o.transpose(1, 2)
            blocks.append((s, e, ks, mask))
            lses.append(lse)
        out = out.transpose(1, 2)
        ctx.save_for_backward(q, k, v, out, *lses)
        ctx.blocks, ctx.scale = blocks, scale
        return out

    @staticmethod
    def backward(ctx, grad):
        q, k, v, out, *lses = ctx.saved_tensors
        B, H, T, D = q.shape
        dq = q.new_empty(B, T, H, D)
        dk, dv = q.new_zeros(B, T, H, D), q.new_zeros(B, T, H, D)
        for (s, e, ks, mask), lse in zip(ctx.blocks, lses):
            gq, gk, gv = _BWD(grad[:, :, s:e], q[:, :, s:e], k[:, :, ks:e], v[:, :, ks:e], out[:, :, s:e], lse,
                              0.0, mask is None, attn_mask=mask, scale=ctx.scale)
            dq[:, s:e] = gq.transpose(1, 2)
            dk[:, ks:e] += gk.transpose(1, 2)
            dv[:, ks:e] += gv.transpose(1, 2)
        return dq.transpose(1, 2), dk.transpose(1, 2), dv.transpose(1, 2), None, None
