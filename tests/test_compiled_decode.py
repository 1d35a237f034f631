"""lm/compiled_decode.py: the static cache steps like the plain KV cache, and the compiled decode draws the
same tokens as the eager one (GPT-Neo with left padding, local layers and small heads; the Llama variant
with grouped heads from a one-token prompt)."""

import os
import subprocess
import sys

import pytest
import torch

from tinystories_lib.lm.compiled_decode import StaticKVCache, static_capacity
from tinystories_lib.lm.interop.llama import Llama, LlamaConfig
from tinystories_lib.lm.kvcache import KVCache
from tinystories_lib.lm.model import GPTNeo, GPTNeoConfig
from tinystories_lib.lm.sample import SamplingConfig, generate


def _peaky(m):
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(20)  # peaky logits, so greedy paths differ between prompts
    return m.eval()


def _gpt_neo(heads=8):  # hidden 32 / 8 heads: head_dim 4, the transposed cache layout
    torch.manual_seed(0)
    return _peaky(GPTNeo(GPTNeoConfig(vocab_size=50, hidden=32, layers=2, heads=heads, context=48, window=8)))


def _llama():
    torch.manual_seed(1)
    return _peaky(Llama(LlamaConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=50, context=48,
                                    multiple_of=16, shared_classifier=False)))


@torch.no_grad()
@pytest.mark.parametrize("make, prompt_len, capacity", [(lambda: _gpt_neo(8), 5, 48), (lambda: _gpt_neo(8), 5, 36),
                                                        (lambda: _gpt_neo(2), 5, 48), (_llama, 5, 40), (_llama, 1, 48)])
def test_static_cache_steps_equal_the_kv_cache(make, prompt_len, capacity):
    """Eagerly, step by step: the static cache (slot in a tensor, every slot attended) gives the KV cache's
    logits, with a left-padded row, past the local window, from a several-token or a one-token prompt, in a
    cache of the whole context or of fewer slots."""
    m = make().double()
    B = 2
    idx = torch.randint(1, 50, (B, prompt_len))
    valid = torch.ones(B, prompt_len, dtype=torch.bool)
    if prompt_len > 2:
        valid[0, :2] = False  # row 0 is left-padded by two
    pos = (torch.arange(prompt_len)[None] - (~valid).sum(1, keepdim=True)).clamp(min=0)
    plain, static = KVCache(m.cfg, B, capacity, "cpu", torch.float64), StaticKVCache(m.cfg, B, capacity, "cpu", torch.float64)
    full_valid = torch.ones(B, capacity, dtype=torch.bool)
    full_valid[:, :prompt_len] = valid
    a = m.forward_cached(idx, pos, valid, plain)
    b = m.forward_cached(idx, pos, valid if prompt_len > 1 else full_valid, static)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
    for t in range(30):  # 35 tokens > window 8
        tok = a.argmax(-1, keepdim=True)
        p = pos[:, -1:] + 1 + t
        a = m.forward_cached(tok, p, full_valid[:, : plain.length + 1], plain)
        b = m.forward_cached(tok, p, full_valid, static)
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
    assert int(static.slot) == plain.length == prompt_len + 30


def test_static_capacity_is_a_power_of_two_within_the_context():
    assert [static_capacity(n, 512) for n in (1, 32, 33, 200, 220, 256, 257, 511, 512)] == \
        [32, 32, 64, 256, 256, 256, 512, 512, 512]
    assert static_capacity(30, 48) == 32 and static_capacity(40, 48) == 48 and static_capacity(5, 16) == 16
    for bad in (0, 49):
        with pytest.raises(ValueError, match="does not fit a context of 48"):
            static_capacity(bad, 48)


@pytest.mark.slow
def test_compiled_generate_equals_eager():
    """Compiled decoding draws the tokens eager decoding draws: greedy and top-p, left-padded prompts of a
    GPT-Neo in a cache of fewer slots than its context, and the Llama variant from a one-token prompt in
    a cache of the whole context."""
    neo = _gpt_neo(8)
    prompts = [[1, 2, 3], list(range(4, 14))]
    for cfg in (SamplingConfig(max_new_tokens=20, temperature=0),  # 10 + 20 tokens: 32 of the 48 slots
                SamplingConfig(max_new_tokens=20, temperature=1.0, top_p=0.9, seed=3)):
        assert generate(neo, prompts, cfg, compiled=True) == generate(neo, prompts, cfg)
    llama = _llama()
    cfg = SamplingConfig(max_new_tokens=40, temperature=0, stop_at_eot=False)
    out = generate(llama, [[1]], cfg, compiled=True)
    assert len(out[0]) == 40 and out == generate(llama, [[1]], cfg)


def test_no_cxx_compiler_is_said(tmp_path):
    """Without a C++ compiler inductor cannot build the step: the error says so and names the way out."""
    code = ("import torch\nfrom tinystories_lib.lm.model import GPTNeo, GPTNeoConfig\n"
            "from tinystories_lib.lm.sample import SamplingConfig, generate\n"
            "m = GPTNeo(GPTNeoConfig(vocab_size=20, hidden=16, layers=1, heads=2, context=16, window=8)).eval()\n"
            "generate(m, [[1, 2]], SamplingConfig(max_new_tokens=3, temperature=0), compiled=True)\n")
    env = {**os.environ, "CXX": str(tmp_path / "no-such-g++"), "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    assert "compiled decoding could not compile its step" in r.stderr and "compiled=False" in r.stderr, r.stderr[-2000:]
