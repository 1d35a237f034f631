import pytest
import torch

from tinystories_lib.lm.model import GPTNeo, GPTNeoConfig
from tinystories_lib.lm.sample import SamplingConfig, filter_logits, generate


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = GPTNeo(GPTNeoConfig(vocab_size=50, hidden=32, layers=3, heads=4, context=64, window=8)).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(20)  # peaky logits, so greedy paths differ between prompts
    return m


def reference_greedy(m, prompt, n):
    ids = list(prompt)
    for _ in range(n):
        logits, _ = m(torch.tensor([ids]))
        ids.append(int(logits[0, -1].argmax()))
    return ids[len(prompt):]


def test_batched_cached_greedy_equals_full_forward(model):
    prompts = [[1, 2, 3], list(range(4, 14)), [7]]
    out = generate(model, prompts, SamplingConfig(max_new_tokens=30, temperature=0))
    for p, o in zip(prompts, out):
        assert o == reference_greedy(model, p, 30)  # 40 tokens > window 8: local masks in the cache path too


def test_small_heads_cache_layout_equals_full_forward():
    """head_dim < 8 stores keys and values transposed in the cache; decoding must not notice."""
    torch.manual_seed(1)
    m = GPTNeo(GPTNeoConfig(vocab_size=50, hidden=32, layers=2, heads=8, context=64, window=8)).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(20)
    prompts = [[1, 2, 3], list(range(4, 14))]
    out = generate(m, prompts, SamplingConfig(max_new_tokens=30, temperature=0))
    assert m.cfg.head_dim == 4
    for p, o in zip(prompts, out):
        assert o == reference_greedy(m, p, 30)


def test_decode_over_padded_cache_slots_equals_exact_slots():
    """On CPU a decode step over a short cache reads at least `min_decode_keys` slots (ATen's BLAS path
    for small matrices), the unwritten ones masked: the logits equal those over the exact slots."""
    from tinystories_lib.lm.kvcache import KVCache

    torch.manual_seed(2)
    m = GPTNeo(GPTNeoConfig(vocab_size=50, hidden=32, layers=2, heads=8, context=256, window=8)).double().eval()
    idx = torch.tensor([[0, 0, 5, 6, 7], [1, 2, 3, 4, 5]])
    pos = (torch.arange(5)[None] - torch.tensor([[2], [0]])).clamp(min=0)
    valid = torch.tensor([[False, False, True, True, True], [True] * 5])
    caches = [KVCache(m.cfg, 2, 200, "cpu", torch.float64) for _ in range(2)]
    caches[1].min_decode_keys = 0
    assert caches[0].min_decode_keys == 100  # head_dim 4: 400 / 4
    with torch.no_grad():
        logits = [m.forward_cached(idx, pos, valid, c) for c in caches]
        for step in range(12):
            assert caches[0].attended(1) == 100 and caches[1].attended(1) == 5 + step + 1
            tok = logits[0].argmax(-1, keepdim=True)
            valid = torch.cat([valid, torch.ones(2, 1, dtype=torch.bool)], 1)
            p = pos[:, -1:] + 1 + step
            logits = [m.forward_cached(tok, p, valid, c) for c in caches]
            torch.testing.assert_close(logits[0], logits[1], rtol=0, atol=1e-12)


def test_batch_equals_alone_when_sampling(model):
    prompts = [[1, 2, 3], [5, 6]]
    cfg = SamplingConfig(max_new_tokens=20, temperature=1.0, top_p=0.9, seed=3)
    together = generate(model, prompts, cfg)
    assert all(len(o) == 20 for o in together)
    again = generate(model, prompts, cfg)
    assert together == again  # seeded


def test_stops_at_end_of_text(model):
    first = generate(model, [[1, 2, 3]], SamplingConfig(max_new_tokens=10, temperature=0))[0]
    eot = first[4]
    cut = generate(model, [[1, 2, 3]], SamplingConfig(max_new_tokens=10, temperature=0), eot_id=eot)[0]
    assert cut == first[: first.index(eot)]


def test_respects_the_context(model):
    out = generate(model, [list(range(1, 50)) * 2], SamplingConfig(max_new_tokens=100, temperature=0))[0]
    assert len(out) == 1  # prompt cropped to context - 1, room for one token


def test_top_k_and_top_p_filtering():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    k2 = filter_logits(logits, top_k=2)
    assert torch.isinf(k2[0, 2:]).all() and torch.isfinite(k2[0, :2]).all()
    p = filter_logits(logits, top_p=0.7)  # 0.5 + 0.3 reaches 0.7: keep two
    assert torch.isfinite(p[0, :2]).all() and torch.isinf(p[0, 2:]).all()
    p1 = filter_logits(logits, top_p=0.1)  # the top token always stays
    assert torch.isfinite(p1[0, 0]) and torch.isinf(p1[0, 1:]).all()


def test_sampling_never_draws_a_filtered_token():
    from tinystories_lib.lm.sample import sample_next

    logits = torch.full((4, 50), -30.0)
    logits[:, 0] = float("-inf")  # first and last tokens are never allowed
    logits[:, 49] = float("-inf")
    logits[:, 10:13] = torch.tensor([3.0, 2.0, 1.0])
    gen = torch.Generator().manual_seed(0)
    draws = torch.cat([sample_next(logits, SamplingConfig(temperature=1.0, top_p=0.9), gen) for _ in range(300)])
    assert set(draws.tolist()) <= {10, 11, 12}
    counts = torch.bincount(draws, minlength=50)[10:13].float() / len(draws)
    assert counts[0] > counts[1] > counts[2] * 0.5  # follows the distribution's order


def test_sampler_draws_follow_the_nucleus_distribution():
    from tinystories_lib.lm.sample import sample_next

    probs = torch.tensor([0.4, 0.3, 0.2, 0.06, 0.04] + [0.0] * 295)
    logits = torch.log(probs).expand(20000, -1).contiguous()
    draws = sample_next(logits, SamplingConfig(temperature=1.0, top_p=0.85), torch.Generator().manual_seed(1))
    freq = torch.bincount(draws, minlength=300).float() / len(draws)
    expected = torch.tensor([0.4, 0.3, 0.2]) / 0.9  # 0.4 + 0.3 < 0.85 <= 0.9: three tokens, renormalised
    assert freq[3:].sum() == 0 and torch.allclose(freq[:3], expected, atol=0.015)


def test_redraws_that_run_out_fall_back_to_the_masked_distribution():
    """A nucleus holding little mass (top_p 0.04: two tokens, 0.05, over a flat tail): most rows exhaust their redraws and
    draw from the masked distribution; every draw is still in the nucleus, in its proportions."""
    from tinystories_lib.lm.sample import sample_next

    probs = torch.tensor([0.03, 0.02] + [0.95 / 998] * 998)
    logits = torch.log(probs).expand(6000, -1).contiguous()
    draws = sample_next(logits, SamplingConfig(temperature=1.0, top_p=0.04), torch.Generator().manual_seed(2))
    assert draws.max() <= 1
    assert abs((draws == 0).float().mean() - 0.6) < 0.03


def test_complete_with_a_progress_bar_gives_the_same_texts(monkeypatch, capsys):
    from tinystories_lib.lm.sample import complete
    from tinystories_lib.lm.tokenizer import train_bpe

    monkeypatch.setenv("TINYSTORIES_PROGRESS", "text")
    codec = train_bpe(["Tom had a red ball. Sue had a cat."] * 20, 280)
    torch.manual_seed(0)
    model = GPTNeo(GPTNeoConfig(vocab_size=codec.vocab_size, context=32, hidden=16, layers=1, heads=2)).eval()
    cfg = SamplingConfig(max_new_tokens=5, temperature=1.0, seed=3)
    beginnings = ["Tom had", "Sue", "A cat"] * 3
    plain = complete(model, codec, beginnings, cfg, batch_size=4)
    capsys.readouterr()
    shown = complete(model, codec, beginnings, cfg, batch_size=4, desc="completing: m")
    assert shown == plain
    out = capsys.readouterr().out
    assert "completing: m" in out and "9/9" in out
    with pytest.raises(ValueError, match="top_p must be in"):
        SamplingConfig(top_p=0)
