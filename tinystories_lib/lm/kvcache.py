"""The KV cache for sampling, and attention over it.

Sampling feeds a model the prompt once and then one token at a time. `KVCache` keeps every layer's keys
and values, so each step computes q, k, v for the new tokens only and attends over what is stored. The
models' `forward_cached` (GPT-Neo in lm/model.py, the Llama variant in lm/interop/llama.py) use it; their
plain `forward` does not. Everything here is for decoding speed on CPU, where a step at batch 50 is a few
dozen small ops and their fixed costs dominate (BENCHMARKS.md, section 2):
  - a decode step's attention is two matmuls over a cache laid out for them (`cached_attention`), not SDPA;
  - small heads (head_dim < 8) store keys and values transposed, so those matmuls read contiguous rows;
  - on CPU a short cache is read over at least `min_decode_keys` slots, the unwritten ones masked out,
    because ATen multiplies matrices of fewer than 400 products in a plain loop instead of calling BLAS;
  - weights derived for sampling (GPT-Neo's fused q/k/v projection, the transposed output layer) are made
    once per generation (`derived`).
None of this changes the result: a cached decode gives the same logits as the full forward on the same
tokens (tests/test_model.py, tests/test_sample.py, tests/test_llama.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_ATEN_SMALL_BMM = 400  # ATen's CPU bmm loops in plain C++ below this many products per matrix


class KVCache:
    """Preallocated keys and values for every layer, for any config with `layers`, `heads`, `kv_heads`
    and `head_dim` (GPT-Neo and the Llama variant). Keys and values are (batch, kv_heads, max_len,
    head_dim), except when heads are small (head_dim < 8, the 1M model's 4): both are then stored
    transposed, (batch, kv_heads, head_dim, max_len), so that a decode step's two matmuls run over
    contiguous rows of the cache. At larger head sizes writing a transposed column costs more than it
    saves."""

    def __init__(self, cfg, batch: int, max_len: int, device, dtype):
        self.transposed = cfg.head_dim < 8
        shape = (batch, cfg.kv_heads) + ((cfg.head_dim, max_len) if self.transposed else (max_len, cfg.head_dim))
        # Zeros, not empty: a decode step may read (masked) slots past `length`, which must be finite.
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.layers)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.layers)]
        self.capacity = max_len
        self.length = 0  # tokens already stored; the model's forward_cached advances it
        # A decode step's matmuls multiply (group x D) by (D x L) and (D x L) by (L x group) for each batch
        # item and head. On CPU, ATen multiplies matrices with fewer than 400 products in a plain loop,
        # much slower than its BLAS path, so short caches are read over at least this many slots, the
        # unwritten ones masked out.
        group = cfg.heads // cfg.kv_heads
        self.min_decode_keys = -(-_ATEN_SMALL_BMM // (cfg.head_dim * group)) if torch.device(device).type == "cpu" else 0
        self._derived: dict = {}

    def attended(self, n_new: int) -> int:
        """How many cache slots the step storing `n_new` tokens attends over: those written so far, or
        for one new token (decoding) at least `min_decode_keys` while the cache has room (the extra slots
        are after the new token, so the causal mask hides them)."""
        end = self.length + n_new
        return end if n_new > 1 else min(self.capacity, max(end, self.min_decode_keys))

    def derived(self, key, make):
        """A weight derived for sampling (fused q/k/v, a transposed lm_head), made once per generation:
        the model's weights do not change while its cache is in use."""
        if key not in self._derived:
            self._derived[key] = make()
        return self._derived[key]

    def fused_linear(self, key, x, *linears: torch.nn.Linear, split: bool = True):
        """The outputs of several bias-free linear layers on the same x, as one matmul with their weights
        concatenated (once per generation, under `key`): one call instead of three for q, k and v. With
        `split=False`, the concatenated output itself (the caller slices it)."""
        out = F.linear(x, self.derived(key, lambda: torch.cat([lin.weight for lin in linears])))
        return out.split([lin.out_features for lin in linears], dim=-1) if split else out

    def output_logits(self, h: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """The output layer on the last hidden states h (B, hidden): h @ weight^T, with weight^T made
        contiguous once per generation, which beats F.linear at decode batch sizes on CPU."""
        return h @ self.derived("lm_head_t", lambda: weight.t().contiguous())

    def masks(self, key_valid: torch.Tensor, n_new: int, dtype, window: int | None = None):
        """Additive attention masks (B, 1, n_new, attended(n_new)) for the `n_new` tokens stored after
        `length`: (causal, local), local None without `window`. `key_valid` (B, length + n_new) marks the
        real (non-padding) tokens. Causal is over cache slots, not position ids (left-padded rows share
        slots); local also hides keys `window` or more slots back, as GPT-Neo's local layers do."""
        t0, L = self.length, self.attended(n_new)
        q_pos = torch.arange(t0, t0 + n_new, device=key_valid.device)
        k_pos = torch.arange(L, device=key_valid.device)
        key_valid = F.pad(key_valid, (0, L - key_valid.size(1)))  # slots not written yet: after q, masked
        d = q_pos[:, None] - k_pos[None, :]
        causal = (d >= 0)[None, None] & key_valid[:, None, None, :]
        # A row whose every key is masked (all padding so far) would give NaN; let it see itself.
        diag = (d == 0)[None, None]
        local = None if window is None else decode_mask((causal & (d < window)[None, None]) | diag, dtype)
        return decode_mask(causal | diag, dtype), local

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Store k, v (B, kv_heads, T, D) after the cached tokens; return the keys of the first
        `attended(T)` slots as a (B, kv_heads, D, L) view, and their values as (B, kv_heads, L, D), or as
        (B, kv_heads, D, L) when `transposed` (cached_attention's `values_transposed`)."""
        t0, T = self.length, k.size(2)
        L = self.attended(T)
        if self.transposed:
            self.k[layer][..., t0 : t0 + T] = k.transpose(-1, -2)
            self.v[layer][..., t0 : t0 + T] = v.transpose(-1, -2)
            return self.k[layer][..., :L], self.v[layer][..., :L]
        self.k[layer][:, :, t0 : t0 + T] = k
        self.v[layer][:, :, t0 : t0 + T] = v
        return self.k[layer][:, :, :L].transpose(-1, -2), self.v[layer][:, :, :L]

    def advance(self, n: int) -> None:
        """Count the `n` tokens a forward step just stored (the models' `forward_cached` call this last)."""
        self.length += n

    def attend(self, layer: int, q, k, v, mask, scale: float) -> torch.Tensor:
        """Store this step's k, v (B, kv_heads, T, D) in `layer`, then attend q (B, heads, T, D) over the
        attended slots with the additive `mask` from `masks`; returns (B, heads, T, D)."""
        kt, v = self.update(layer, k, v)
        return cached_attention(q, kt, v, mask, scale, values_transposed=self.transposed)


def cached_attention(q, kt, v, mask, scale: float, values_transposed: bool = False):
    """Attention of q (B, H, T, D) over cached keys kt (B, Hkv, D, L) and values v (B, Hkv, L, D), or
    (B, Hkv, D, L) if `values_transposed`; each key/value head serves H // Hkv consecutive query heads
    (grouped-query attention when Hkv < H). `mask` is additive (0 or -inf), broadcastable to (B, H, T, L).
    One new token (decoding) takes two matmuls, cheaper than SDPA on CPU for a single query; longer
    inputs (the prompt) go through SDPA."""
    B, H, T, D = q.shape
    Hkv = kt.size(1)
    if T == 1:
        s = torch.matmul(q.reshape(B, Hkv, H // Hkv, D), kt)  # (B, Hkv, group, L): no repeat of keys
        if scale != 1.0:
            s = s * scale
        s = (s.view(B, H, 1, -1) + mask).softmax(-1).view(B, Hkv, H // Hkv, -1)
        if values_transposed:  # (B, Hkv, D, L) @ (B, Hkv, L, group) -> (B, Hkv, D, group)
            return torch.matmul(v, s.transpose(-1, -2)).transpose(-1, -2).reshape(B, H, 1, D)
        return torch.matmul(s, v).view(B, H, 1, D)
    if values_transposed:
        v = v.transpose(-1, -2)
    k = kt.transpose(-1, -2)
    if Hkv != H:
        k, v = k.repeat_interleave(H // Hkv, dim=1), v.repeat_interleave(H // Hkv, dim=1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)


def decode_mask(allowed: torch.Tensor, dtype) -> torch.Tensor:
    """Boolean `allowed` -> additive mask (0 where allowed, -inf elsewhere), as cached_attention wants."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(~allowed, float("-inf"))
