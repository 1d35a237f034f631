"""Training under CPU autocast (`train.cpu_bf16`): which ops run in bf16 and which stay in fp32.

On a CPU with bf16 matrix units, autocast makes the projections, the MLP and the output layer's matmuls
cheaper. Two things are better kept in fp32, so the model asks here whether CPU autocast is on:
  - attention: SDPA's CPU kernel is slower in bf16 than in fp32 (BENCHMARKS.md, section 1), so
    `attention` casts q, k and v up and runs SDPA with autocast off;
  - the softmax of the chunked loss (lm/chunked_loss.py), which does its own casting.
`cpu_autocast_dtype` also hides that torch 2.2-2.3 spell the autocast queries differently from later ones.
Without CPU autocast (and on GPUs) `attention` is plain `F.scaled_dot_product_attention`; it is tested
against that in fp32, with autocast on and off.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tinystories_lib.lm import block_attention


def cpu_autocast_dtype() -> torch.dtype | None:
    """The dtype CPU autocast runs matmuls in, or None when it is off (torch 2.2-2.3 spell it differently)."""
    try:
        on = torch.is_autocast_enabled("cpu")  # torch >= 2.4
    except TypeError:
        on = torch.is_autocast_cpu_enabled()
    if not on:
        return None
    get = getattr(torch, "get_autocast_dtype", None)
    return get("cpu") if get is not None else torch.get_autocast_cpu_dtype()


def attention(q, k, v, mask=None, dropout_p: float = 0.0, scale: float | None = None, window: int | None = None):
    """F.scaled_dot_product_attention of q, k, v (B, H, T, D): causal when `mask` is None, else with the
    boolean or additive `mask`. Under CPU autocast it runs in fp32 (the output is then fp32). `window`
    says that `mask` is the causal local-window mask of that width: CPU training then takes
    lm/block_attention.py, which skips the keys the mask hides (as it does for causal attention)."""
    if q.device.type == "cpu" and cpu_autocast_dtype() is not None:
        with torch.autocast("cpu", enabled=False):
            return _sdpa(q.float(), k.float(), v.float(), mask, dropout_p, scale, window)
    return _sdpa(q, k, v, mask, dropout_p, scale, window)


def _sdpa(q, k, v, mask, dropout_p, scale, window=None):
    if (mask is None or window is not None) and block_attention.usable(q, dropout_p):
        return block_attention.attention(q, k, v, window if mask is not None else None, scale)
    if mask is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout_p, scale=scale)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, scale=scale)
