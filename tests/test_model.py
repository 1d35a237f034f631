import torch

from tinystories_lib.model import NAMED_CONFIGS, GPTNeo, GPTNeoConfig, describe, named_config


def tiny(**kw):
    cfg = dict(vocab_size=97, context=48, hidden=32, layers=2, heads=4, window=8)
    cfg.update(kw)
    torch.manual_seed(0)
    return GPTNeo(GPTNeoConfig(**cfg)).eval()


def test_shapes_loss_and_tied_embeddings():
    m = tiny()
    x = torch.randint(0, 97, (3, 20))
    logits, loss = m(x, x)
    assert logits.shape == (3, 20, 97) and loss.ndim == 0
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
