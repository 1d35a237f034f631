"""Fast temperature / top-p sampling: draws distributed as those from `sample.filter_logits`, with less work.

The plain way to sample with top-p (sample.filter_logits, then a draw from the softmax of what it keeps)
sorts every row of the vocabulary, writes its running sum, masks the tail and takes a second softmax. At
decode batch sizes on CPU that is a large share of a small model's step (BENCHMARKS.md, section 2), so
`sample.sample_next` draws with `sample` here instead:
  - `nucleus_threshold`, the smallest probability the nucleus keeps, comes from a values-only sort
    (numpy's, on CPU), and when every row's nucleus lies within its 64 largest values (a trained model,
    mostly) only those are sorted. Its running sum and comparison are the plain filter's, so it keeps
    exactly the tokens `sample.filter_logits` keeps.
  - The vocabulary is never masked: `sample` draws from the whole softmax and redraws the rows whose
    token falls below the threshold. An accepted draw is distributed exactly as a draw from the
    renormalised nucleus, and each try is accepted with probability >= top_p; rows still unlucky after
    MAX_REDRAWS tries (only when the nucleus holds little mass) draw from their masked distribution.
  - Each draw is an inverse CDF read on two levels (`block_cdf`, `first_above`): running sums over
    blocks of BLOCK values, then a running sum inside one block, instead of a running sum over the row.
Tested against the plain path (tests/test_fast_top_p.py): the same kept tokens on random logits with ties,
with and without top-k, at top_p from tiny to 1; draws only from those tokens, in their proportions.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

TOP = 64  # how many of a row's largest values the threshold first looks in
BLOCK = 128  # values per block of the two-level running sum
MAX_REDRAWS = 16


def sample(probs: torch.Tensor, top_p: float, gen: torch.Generator) -> torch.Tensor:
    """One index per row of probs (B, V), drawn from the nucleus of mass top_p (1.0: from all of probs),
    renormalised: the distribution of a draw from softmax(sample.filter_logits(logits, top_p=top_p))."""
    blocks = block_cdf(probs)
    tok = draw(probs, blocks, gen)
    if top_p >= 1.0:
        return tok.squeeze(-1)
    threshold = nucleus_threshold(probs, top_p)
    for _ in range(MAX_REDRAWS):
        low = probs.gather(-1, tok) < threshold
        if not bool(low.any()):
            return tok.squeeze(-1)
        tok = torch.where(low, draw(probs, blocks, gen), tok)
    rows = (probs.gather(-1, tok) < threshold).squeeze(-1).nonzero().squeeze(-1)
    p = probs[rows]
    kept = p * (p >= threshold[rows])
    tok[rows] = draw(kept, block_cdf(kept), gen)
    return tok.squeeze(-1)


# ---------------------------------------------------------------- the nucleus threshold


def nucleus_threshold(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Per row (B, 1), the smallest probability nucleus sampling keeps (0 < top_p < 1): tokens are kept
    in order of probability while the mass of those before them is short of top_p, so the top token
    always stays, and so does every token tied with the last one kept."""
    if probs.device.type != "cpu":
        return threshold_from_descending(torch.sort(probs, dim=-1, descending=True).values, top_p)
    pn = probs.numpy()
    in_top = threshold_in_top(pn, top_p)
    if in_top is not None:
        return in_top
    return threshold_from_descending(torch.from_numpy(np.sort(pn, axis=-1)).flip(-1), top_p)


def threshold_in_top(pn: np.ndarray, top_p: float, k: int = TOP) -> torch.Tensor | None:
    """`nucleus_threshold` from the k largest values of each row of pn (B, V) alone, or None when some
    row's nucleus may not lie within them. The running sum over those k values is the first k entries of
    the one over the whole sorted row, so the threshold found is the same."""
    V = pn.shape[-1]
    if V <= 4 * k or not bool((pn.max(-1) * k >= top_p).all()):  # else some row's top k hold < top_p
        return None
    top = torch.from_numpy(np.sort(np.partition(pn, V - k, axis=-1)[:, V - k :], axis=-1)).flip(-1)
    n = n_kept(top, top_p)
    if not bool((n < k).all()):  # a row keeps all k: its nucleus may go on past them
        return None
    return top.gather(-1, n - 1)


def n_kept(desc: torch.Tensor, top_p: float) -> torch.Tensor:
    """How many of each row's values, sorted descending, the nucleus keeps (B, 1): those whose mass
    before them is below top_p. The same sums and comparison as `sample.filter_logits`."""
    mass_before = F.pad(desc.cumsum(-1)[..., :-1], (1, 0))
    return (mass_before < top_p).sum(-1, keepdim=True)


def threshold_from_descending(desc: torch.Tensor, top_p: float) -> torch.Tensor:
    return desc.gather(-1, n_kept(desc, top_p) - 1)


# ---------------------------------------------------------------- the two-level inverse CDF


def block_cdf(values: torch.Tensor) -> torch.Tensor:
    """Running sums (B, n_blocks) over consecutive blocks of BLOCK values of each row (the last block may
    be shorter): with `first_above`, an inverse CDF that reads a row instead of writing its cumsum."""
    B, V = values.shape
    full = V // BLOCK * BLOCK
    sums = values[:, :full].reshape(B, -1, BLOCK).sum(-1)
    if full < V:
        sums = torch.cat([sums, values[:, full:].sum(-1, keepdim=True)], dim=1)
    return sums.cumsum(-1)


def first_above(values: torch.Tensor, blocks: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per row (B, 1), the first index whose running sum of nonnegative `values` exceeds x (B, 1), i.e.
    searchsorted(values.cumsum(-1), x, right=True) for x below the row's total: the block first (from
    `block_cdf`), then a running sum inside that block only. The index found holds a nonzero value even
    where the two levels round differently (x is clamped inside the block)."""
    V = values.size(-1)
    b = torch.searchsorted(blocks, x, right=True).clamp_(max=blocks.size(-1) - 1)
    before = torch.where(b > 0, blocks.gather(-1, (b - 1).clamp(min=0)), torch.zeros_like(x))
    cols = b * BLOCK + torch.arange(BLOCK, device=values.device)
    inside = values.gather(-1, cols.clamp(max=V - 1)).masked_fill_(cols >= V, 0).cumsum(-1)
    last = inside[:, -1:]
    r = torch.minimum(x - before, torch.where(last > 0, torch.nextafter(last, torch.zeros_like(last)), last))
    return (b * BLOCK + torch.searchsorted(inside, r, right=True)).clamp_(max=V - 1)


def draw(probs: torch.Tensor, blocks: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One index per row (B, 1) with probability proportional to `probs` (inverse CDF on two levels).
    u * total lies strictly below the total, so the index found has nonzero probability."""
    total = blocks[:, -1:]
    u = torch.rand(probs.size(0), 1, generator=gen, device=probs.device, dtype=probs.dtype) * total
    return first_above(probs, blocks, torch.minimum(u, torch.nextafter(total, torch.zeros_like(total))))
