import pytest
import torch
import torch.nn.functional as F

from tinystories_lib.lm import chunked_loss
from tinystories_lib.lm.model import NAMED_CONFIGS, GPTNeo, GPTNeoConfig, describe, named_config


def tiny(**kw):
    cfg = dict(vocab_size=97, context=48, hidden=32, layers=2, heads=4, window=8)
    cfg.update(kw)
    torch.manual_seed(0)
    return GPTNeo(GPTNeoConfig(**cfg)).eval()


def test_shapes_loss_and_tied_embeddings():
    m = tiny()
    x = torch.randint(0, 97, (3, 20))
    logits, _ = m(x)
    assert logits.shape == (3, 20, 97)
    logits, loss = m(x, x)
    assert logits is None and loss.ndim == 0  # the CPU mean loss never builds the logits
    with torch.autocast("cpu", dtype=torch.bfloat16):  # CPU autocast: the chunked loss, bf16 matmuls
        logits, loss = m(x, x)
    assert logits is None and loss.dtype == torch.float32
    assert m.lm_head.weight is m.transformer.wte.weight
    assert m.cfg.attention_types == ["global", "local"]


def test_local_layer_ignores_tokens_beyond_the_window():
    # one local layer: position t must not depend on tokens at t - window or earlier
    m = tiny(layers=1, attention_types=["local"])
    x = torch.randint(0, 97, (1, 30))
    y = x.clone()
    y[0, :5] = (y[0, :5] + 1) % 97  # change tokens 0..4
    a, _ = m(x)
    b, _ = m(y)
    # position 12 sees positions 5..12 (window 8): unchanged; position 11 sees 4..11: changed
    assert torch.allclose(a[0, 12:], b[0, 12:], atol=1e-6)
    assert not torch.allclose(a[0, 11], b[0, 11], atol=1e-6)


def test_global_layer_sees_everything_and_is_causal():
    m = tiny(layers=1, attention_types=["global"])
    x = torch.randint(0, 97, (1, 30))
    y = x.clone()
    y[0, 0] = (y[0, 0] + 1) % 97
    a, _ = m(x)
    b, _ = m(y)
    assert not torch.allclose(a[0, -1], b[0, -1], atol=1e-6)
    z = x.clone()
    z[0, -1] = (z[0, -1] + 1) % 97
    c, _ = m(z)
    assert torch.allclose(a[0, :-1], c[0, :-1], atol=1e-6)


def test_attention_scores_are_not_scaled():
    # GPT-Neo does not divide q.k by sqrt(head_dim): check against an explicit computation
    m = tiny(layers=1, attention_types=["global"], heads=2)
    att = m.transformer.h[0].attn.attention
    x = torch.randn(1, 5, 32)
    q = att.q_proj(x).view(1, 5, 2, 16).transpose(1, 2)
    k = att.k_proj(x).view(1, 5, 2, 16).transpose(1, 2)
    v = att.v_proj(x).view(1, 5, 2, 16).transpose(1, 2)
    s = q @ k.transpose(-1, -2)
    s = s.masked_fill(~torch.ones(5, 5, dtype=torch.bool).tril(), float("-inf"))
    ref = att.out_proj((s.softmax(-1) @ v).transpose(1, 2).reshape(1, 5, 32))
    assert torch.allclose(att(x), ref, atol=1e-5)


def test_named_configs_match_the_published_family():
    assert NAMED_CONFIGS["33M"] == (768, 4) and NAMED_CONFIGS["1M"] == (64, 8)
    cfg = named_config("8M")
    assert (cfg.hidden, cfg.layers, cfg.heads, cfg.context, cfg.window) == (256, 8, 16, 512, 256)
    assert "M params" in describe(cfg)
    # describe counts exactly what the model allocates
    small = GPTNeoConfig(vocab_size=50, context=16, hidden=8, layers=2, heads=2)
    assert f"({GPTNeo(small).num_params(non_embedding=False):,})" in describe(small)


def test_bad_config_is_rejected():
    import pytest

    with pytest.raises(ValueError, match="not divisible"):
        GPTNeoConfig(hidden=30, heads=4)


@pytest.mark.parametrize("chunk", [7, 64, 10_000])  # several chunks with a ragged last one; one chunk
def test_chunked_cross_entropy_equals_the_plain_loss_and_gradients(monkeypatch, chunk):
    monkeypatch.setattr(chunked_loss, "_chunk_rows", lambda vocab, hidden: chunk)
    torch.manual_seed(0)
    x = torch.randn(3, 20, 32, dtype=torch.float64)
    w = torch.randn(97, 32, dtype=torch.float64) * 0.3
    y = torch.randint(0, 97, (3, 20))
    y[0, :5] = -1  # ignored positions
    grads = []
    for plain in (True, False):
        xx, ww = x.clone().requires_grad_(), w.clone().requires_grad_()
        if plain:
            loss = F.cross_entropy(F.linear(xx, ww).view(-1, 97), y.view(-1), ignore_index=-1)
        else:
            logits, loss = chunked_loss.output_and_loss(xx, ww, y)
            assert logits is None
        (loss * 3).backward()  # a scale on the loss reaches the gradients made in the forward pass
        grads.append((loss.detach(), xx.grad, ww.grad))
    (l1, gx1, gw1), (l2, gx2, gw2) = grads
    assert torch.allclose(l1, l2, atol=1e-12) and torch.allclose(gx1, gx2, atol=1e-12)
    assert torch.allclose(gw1, gw2, atol=1e-12)
    with torch.no_grad():  # evaluation: the loss alone, same value
        assert torch.allclose(chunked_loss.output_and_loss(x, w, y)[1], l1, atol=1e-12)
    # other reductions keep the logits
    logits, per_token = chunked_loss.output_and_loss(x, w, y, reduction="none")
    assert logits.shape == (3, 20, 97) and per_token.shape == (60,)


def test_tied_embedding_gets_both_gradients_through_the_chunked_loss():
    m = tiny().train()
    x = torch.randint(0, 97, (2, 16))
    _, loss = m(x[:, :-1], x[:, 1:])
    loss.backward()
    g_chunked = m.transformer.wte.weight.grad.clone()
    m.zero_grad()
    logits, _ = m(x[:, :-1])
    F.cross_entropy(logits.reshape(-1, 97), x[:, 1:].reshape(-1)).backward()
    assert torch.allclose(g_chunked, m.transformer.wte.weight.grad, atol=1e-6)


def test_cpu_bf16_autocast_stays_close_to_fp32():
    """train.cpu_bf16: under CPU autocast the matmuls (projections, MLP, the chunked loss's three) run in
    bf16 while attention and the softmax stay fp32: loss and gradients stay within bf16's rounding."""
    torch.manual_seed(0)
    m = tiny()
    x = torch.randint(0, 97, (4, 40))

    def loss_and_grads(bf16: bool):
        m.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            _, loss = m(x, x)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in m.parameters()]

    (l32, g32), (l16, g16) = loss_and_grads(False), loss_and_grads(True)
    assert l16.dtype == torch.float32 and abs(l16 - l32) / l32 < 1e-2 and not torch.equal(l16, l32)
    for a, b in zip(g32, g16):
        assert b.dtype == torch.float32
        assert torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0) > 0.99
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # the loss-only path agrees
        assert abs(m(x, x)[1] - l16) < 1e-5


@torch.no_grad()
@pytest.mark.parametrize("heads", [4, 8])  # head_dim 8, and 4 (keys and values stored transposed)
def test_cached_decode_gives_the_full_forwards_logits(heads):
    """lm/kvcache.py against the plain forward: a prompt, then one token at a time past the local window,
    with a left-padded row; on CPU every decode step also reads padded (masked) cache slots."""
    from tinystories_lib.lm.kvcache import KVCache

    m = tiny(heads=heads).double()
    x = torch.randint(0, 97, (2, 30))
    pad = 3  # row 1 holds x[1, :27] after 3 padding slots: its positions start at its first real token
    idx = torch.cat([x[:1], torch.cat([torch.zeros(1, pad, dtype=torch.long), x[1:, : 30 - pad]], 1)])
    pos = (torch.arange(30)[None] - torch.tensor([[0], [pad]])).clamp(min=0)
    valid = torch.ones(2, 30, dtype=torch.bool)
    valid[1, :pad] = False
    full = [m(x[:1])[0][0], m(x[1:, : 30 - pad])[0][0]]
    cache = KVCache(m.cfg, 2, 30, "cpu", torch.float64)
    assert cache.min_decode_keys > 30  # so every decode step reads all 30 slots, unwritten ones masked
    got = [m.forward_cached(idx[:, :10], pos[:, :10], valid[:, :10], cache)]
    for t in range(10, 30):
        got.append(m.forward_cached(idx[:, t : t + 1], pos[:, t : t + 1], valid[:, : t + 1], cache))
    got = torch.stack(got, 1)  # (2, 21, vocab): logits after tokens 0..9, 10, ..., 29
    torch.testing.assert_close(got[0], full[0][9:], rtol=0, atol=1e-10)
    torch.testing.assert_close(got[1], full[1][9 - pad :], rtol=0, atol=1e-10)


def test_attention_is_sdpa_and_fp32_under_cpu_autocast():
    """lm/cpu_autocast.py against F.scaled_dot_product_attention, causal and with a mask."""
    from tinystories_lib.lm.cpu_autocast import attention, cpu_autocast_dtype

    torch.manual_seed(0)
    q, k, v = torch.randn(3, 2, 4, 10, 8).unbind(0)
    mask = (torch.rand(10, 10) < 0.6) | torch.eye(10, dtype=torch.bool)
    for m in (None, mask):
        plain = F.scaled_dot_product_attention(q, k, v, attn_mask=m, is_causal=m is None, scale=1.0)
        assert cpu_autocast_dtype() is None and torch.equal(attention(q, k, v, m, scale=1.0), plain)
        qb, kb, vb = q.bfloat16(), k.bfloat16(), v.bfloat16()  # what the projections give under autocast
        fp32 = F.scaled_dot_product_attention(qb.float(), kb.float(), vb.float(), attn_mask=m, is_causal=m is None)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert cpu_autocast_dtype() == torch.bfloat16
            y = attention(qb, kb, vb, m)
        assert y.dtype == torch.float32 and torch.equal(y, fp32)
