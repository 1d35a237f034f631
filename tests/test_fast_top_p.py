"""lm/fast_top_p.py against the plain path, sample.filter_logits: the same kept tokens, and draws that come
only from them, in their renormalised proportions."""

import pytest
import torch

from tinystories_lib.lm import fast_top_p
from tinystories_lib.lm.sample import SamplingConfig, filter_logits, sample_next


def make_logits(kind: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(sum(map(ord, kind)))
    if kind == "flat":  # nuclei of hundreds of tokens: the full sort
        return torch.randn(16, 3000, generator=g) * 0.5
    if kind == "peaked":  # nuclei within the 64 largest values: the partial sort
        return torch.randn(16, 3000, generator=g) * 12
    if kind == "ties":  # a few distinct values, so the nucleus edge falls inside a run of equal ones
        return torch.randint(0, 6, (16, 1000), generator=g).float()
    if kind == "peaked ties":  # 20 tokens a row of 4 distinct values over a low tail
        x = torch.randn(16, 3000, generator=g) * 0.5 - 8
        top = torch.rand(16, 3000, generator=g).argsort(-1)[:, :20]
        return x.scatter(-1, top, torch.randint(0, 4, (16, 20), generator=g).float())
    if kind == "forbidden":  # tokens already at -inf (a mask from elsewhere), and values that underflow
        x = torch.randn(16, 500, generator=g) * 30
        x[:, ::7] = float("-inf")
        return x
    assert kind == "tiny vocab"
    return torch.randn(16, 7, generator=g) * 2


KINDS = ["flat", "peaked", "ties", "peaked ties", "forbidden", "tiny vocab"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("top_k", [0, 5, 200])
def test_fast_threshold_keeps_exactly_the_plain_filters_tokens(kind, top_k):
    logits = make_logits(kind)
    probs = filter_logits(logits, top_k).softmax(-1)  # what sample_next hands fast_top_p
    for top_p in (1e-6, 0.3, 0.9, 0.999, 1 - 1e-9):
        plain = filter_logits(logits, top_k, top_p)
        plain_kept = torch.isfinite(plain) & (probs > 0)
        fast_kept = (probs >= fast_top_p.nucleus_threshold(probs, top_p)) & (probs > 0)
        assert torch.equal(fast_kept, plain_kept), (kind, top_k, top_p)
        # the same filtered distribution, and ties at the edge are all in or all out
        fast = probs * fast_kept
        assert (fast / fast.sum(-1, keepdim=True) - plain.softmax(-1)).abs().max() <= 1e-6
        edge = probs.masked_fill(~fast_kept, float("inf")).amin(-1, keepdim=True)
        assert ((probs == edge) <= fast_kept).all()


@pytest.mark.parametrize("kind", ["peaked", "peaked ties"])
def test_partial_sort_gives_the_full_sorts_threshold(kind):
    probs = make_logits(kind).softmax(-1)
    for top_p in (0.3, 0.9):
        in_top = fast_top_p.threshold_in_top(probs.numpy(), top_p)
        assert in_top is not None  # these nuclei fit in the top 64: the partial sort is what ran above
        full = fast_top_p.threshold_from_descending(probs.sort(-1, descending=True).values, top_p)
        assert torch.equal(in_top, full)
    assert fast_top_p.threshold_in_top(make_logits("flat").softmax(-1).numpy(), 0.9) is None


@pytest.mark.parametrize("temperature, top_k, top_p", [
    (1.0, 0, 0.9), (0.7, 0, 0.95), (1.0, 8, 0.7), (1.3, 0, 0.2), (1.0, 0, 1.0), (1.3, 5, 1.0),
])
def test_draws_come_from_the_plain_kept_set_in_its_proportions(temperature, top_k, top_p):
    g = torch.Generator().manual_seed(7)
    row = torch.randint(-8, 4, (300,), generator=g).float() * 0.5  # ties everywhere, the edge included
    N = 20_000
    cfg = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p)
    draws = sample_next(row.expand(N, -1).contiguous(), cfg, torch.Generator().manual_seed(1))
    expected = filter_logits(row[None] / temperature, top_k, top_p).softmax(-1)[0]
    assert (expected[draws] > 0).all()  # never a token the plain filter drops
    freq = torch.bincount(draws, minlength=300).double() / N
    sigma = (expected.double() * (1 - expected.double()) / N).sqrt()
    assert ((freq - expected.double()).abs() <= 5 * sigma + 1e-4).all()


@pytest.mark.parametrize("V", [7, 128, 300, 3000])
def test_two_level_inverse_cdf_equals_searchsorted_over_cumsum(V):
    torch.manual_seed(V)
    values = torch.rand(64, V, dtype=torch.float64) * (torch.rand(64, V) < 0.7)  # zeros inside rows too
    total = values.sum(-1, keepdim=True)
    for x in (torch.rand(64, 1, dtype=torch.float64) * total, torch.zeros(64, 1, dtype=torch.float64),
              -torch.ones(64, 1, dtype=torch.float64)):  # anywhere below the row's total
        expected = torch.searchsorted(values.cumsum(-1), x, right=True).clamp(max=V - 1)
        assert torch.equal(fast_top_p.first_above(values, fast_top_p.block_cdf(values), x), expected)
    # float32 near the top of the mass: whatever the rounding, the index found holds a nonzero value
    v32 = values.float()
    x = torch.nextafter(v32.sum(-1, keepdim=True), torch.zeros(64, 1))
    picked = fast_top_p.first_above(v32, fast_top_p.block_cdf(v32), x)
    assert (v32.gather(-1, picked) > 0).all()
