"""TODO: lm.kvcache (from model)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

_ATEN_SMALL_BMM = 400  # ATen's CPU bmm loops in plain C++ below this many products per matrix


class KVCache:
    """Preallocated keys and values for every layer, for any config with `layers`, `kv_heads` and
    `head_dim` (GPT-Neo and the Llama variant). Keys and values are (batch, kv_heads, max_len, head_dim),
    except when heads are small (head_dim < 8, the 1M model's 4): both are then stored transposed,
    (batch, kv_heads, head_dim, max_len), so that a decode step's two matmuls run over contiguous rows of
    the cache (3-4x faster each on CPU at head_dim 4). At larger head sizes writing a transposed column
    costs more than it saves."""

    def __init__(self, cfg, batch: int, max_len: int, device, dtype):
        self.transposed = cfg.head_dim < 8
        shape = (batch, cfg.kv_heads) + ((cfg.head_dim, max_len) if self.transposed else (max_len, cfg.head_dim))
        # Zeros, not empty: a decode step may read (masked) slots past `length`, which must be finite.
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.layers)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.layers)]
        self.capacity = max_len
        self.length = 0  # tokens already stored
        # A decode step's matmuls multiply (group x D) by (D x L) and (D x L) by (L x group) for each batch
        # item and head. On CPU, ATen multiplies matrices with fewer than 400 products in a plain loop, up
        # to 7x slower than its BLAS path (1M, L = 99: 437 us against 61 us at L = 100), so short caches
        # are read over at least this many slots, the unwritten ones masked out.
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

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Store k, v (B, kv_heads, T, D) after the cached tokens; return the keys of the first
        `attended(T)` slots as a (B, kv_heads, D, L) view, and their values as (B, kv_heads, L, D), or as
        (B, kv_heads, D, L) when `transposed` (cached_attention's `values_transposed`). `length` advances
        in forward_cached."""
        t0, T = self.length, k.size(2)
        L = self.attended(T)
        if self.transposed:
            self.k[layer][..., t0 : t0 + T] = k.transpose(-1, -2)
            self.v[layer][..., t0 : t0 + T] = v.transpose(-1, -2)
            return self.k[layer][..., :L], self.v[layer][..., :L]
        self.k[layer][:, :, t0 : t0 + T] = k
        self.v[layer][:, :, t0 : t0 + T] = v
        return self.k[layer][:, :, :L].transpose(-1, -2), self.v[layer][:, :, :L]


def cached_attention(q, kt, v, mask, scale: float, values_transposed: bool = False):
    """Attention of q (B, H, T, D) over cached keys kt (B, Hkv, D, L) and values v (B, Hkv, L, D), or
    (B, Hkv, D, L) if `values_transposed`; each key/value head serves H // Hkv consecutive query heads
    (grouped-query attention when Hkv < H). `mask` is additive (0 or -inf), broadcastable to (B, H, T, L).
    One new token (decoding) takes two matmuls, 2-3x faster than SDPA on CPU for one query; longer inputs
    (the prompt) go through SDPA."""
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
