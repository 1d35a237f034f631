"""A compiled decode step for sampling at small batch sizes (`generate(..., compiled=True)`).

At batch 1 a decode step of a small model is a hundred-odd tiny ops, and on CPU each costs a few
microseconds of dispatch whatever its size; the arithmetic is negligible. `torch.compile` (inductor, with
its C++ wrapper, so the step is one call into generated code) turns those ops into a few fused kernels.
One compiled graph must serve every position, so the step cannot depend on Python numbers that change
from token to token. `StaticKVCache` is the KV cache for that: its decode steps write at a slot held in a
tensor and attend over every slot of the cache (the unwritten ones masked out), so the shapes never change.

The model code is the plain one: the compiled function is the model's own `forward_cached` over this
cache, so GPT-Neo's local layers, unscaled scores and the Llama variant's grouped heads come for free.
What it costs: a compile per model shape, batch size and cache capacity on first use (tens of seconds on a
small CPU; inductor keeps the result on disk, so a later process takes a few), and attention over every
slot of the cache at every step. `static_capacity` rounds a generation's length up to a power of two, so
few capacities ever compile and at most half the slots are wasted. A cached decode gives the same tokens as the
eager one (tests/test_compiled_decode.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tinystories_lib.lm.kvcache import KVCache, cached_attention, decode_mask

MIN_CAPACITY = 32


def static_capacity(length: int, context: int) -> int:
    """The slots a `StaticKVCache` holds for a generation of `length` tokens (prompt and new ones): the
    smallest power of two that fits them (at least MIN_CAPACITY), at most the model's context. Powers of two
    keep the compiled shapes few (each capacity compiles once), while attending over at most twice the
    slots in use, not the whole context."""
    if not 0 < length <= context:
        raise ValueError(f"a generation of {length} tokens does not fit a context of {context}")
    return min(context, max(MIN_CAPACITY, 1 << (length - 1).bit_length()))


class StaticKVCache(KVCache):
    """`KVCache` over a fixed `capacity` of slots whose one-token steps take their slot from the tensor
    `slot`, not from `length`: the prompt (several tokens) is stored as in `KVCache`, then every decode step
    writes at `slot`, attends over all `capacity` slots and advances `slot` in place."""

    def __init__(self, cfg, batch: int, capacity: int, device, dtype):
        super().__init__(cfg, batch, capacity, device, dtype)
        self.slot = torch.zeros(1, dtype=torch.long, device=device)

    def masks(self, key_valid: torch.Tensor, n_new: int, dtype, window: int | None = None):
        """As `KVCache.masks`; for one new token, over every slot, with `key_valid` (B, capacity)."""
        if n_new != 1:
            return super().masks(key_valid, n_new, dtype, window)
        key_valid = F.pad(key_valid, (0, self.capacity - key_valid.size(1)))  # slots not written yet: masked
        d = self.slot - torch.arange(self.capacity, device=key_valid.device)  # (capacity,)
        causal = (d >= 0)[None, None, None] & key_valid[:, None, None, :]
        diag = (d == 0)[None, None, None]  # a row of padding only still sees itself (no NaN)
        local = None if window is None else decode_mask((causal & (d < window)[None, None, None]) | diag, dtype)
        return decode_mask(causal | diag, dtype), local

    def attend(self, layer: int, q, k, v, mask, scale: float) -> torch.Tensor:
        if k.size(2) != 1:
            return super().attend(layer, q, k, v, mask, scale)
        dim = 3 if self.transposed else 2
        self.k[layer].index_copy_(dim, self.slot, k.transpose(-1, -2) if self.transposed else k)
        self.v[layer].index_copy_(dim, self.slot, v.transpose(-1, -2) if self.transposed else v)
        kt = self.k[layer] if self.transposed else self.k[layer].transpose(-1, -2)
        return cached_attention(q, kt, self.v[layer], mask, scale, values_transposed=self.transposed)

    def advance(self, n: int) -> None:
        if n == 1:
            self.slot += 1  # in place: a compiled step mutates its input, no Python number changes
        else:
            super().advance(n)
            self.slot.fill_(self.length)


def _step(model, idx, position_ids, key_valid, cache: StaticKVCache):
    return model.forward_cached(idx, position_ids, key_valid, cache)


_compiled = None


def decode_step(model, idx, position_ids, key_valid, cache: StaticKVCache) -> torch.Tensor:
    """`model.forward_cached` compiled (once per process; each model shape and batch size compiles on its
    first call). Inductor needs a C++ compiler on CPU: without one this says so, instead of its traceback."""
    global _compiled
    if _compiled is None:
        _compiled = torch.compile(_step, fullgraph=True, dynamic=False, options={"cpp_wrapper": True})
    try:
        return _compiled(model, idx, position_ids, key_valid, cache)
    except torch._dynamo.exc.BackendCompilerFailed as e:
        raise RuntimeError(f"compiled decoding could not compile its step ({type(e.__cause__ or e).__name__}): "
                           "torch.compile needs a working C++ compiler (g++, or the one $CXX names). "
                           "Install one, or sample with compiled=False (the same tokens, slower at batch 1).") from e
