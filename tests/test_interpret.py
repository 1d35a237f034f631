import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tinystories_lib.evals import interpret, neurons
from tinystories_lib.lm.model import GPTNeo, GPTNeoConfig
from tinystories_lib.lm.tokenizer import train_bpe
from tinystories_lib.stories.storyteller import tell_stories


@pytest.fixture(scope="module")
def stories():
    return tell_stories(12, seed=3)


@pytest.fixture(scope="module")
def codec(stories):
    return train_bpe([s.text for s in stories], 300)


def random_model(vocab: int, layers: int = 2, heads: int = 4, context: int = 64, window: int = 8, scale: float = 3.0):
    torch.manual_seed(0)
    m = GPTNeo(GPTNeoConfig(vocab_size=vocab, hidden=32, layers=layers, heads=heads, context=context,
                            window=window)).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(scale)  # peaky attention, so a wrong mask or scale would show
    return m


def manual_forward(m: GPTNeo, ids: list[int]):
    """The model's forward written out, returning (per-layer attention probabilities, logits)."""
    T = len(ids)
    x = m.transformer.wte(torch.tensor(ids)) + m.transformer.wpe(torch.arange(T))
    d = torch.arange(T)[:, None] - torch.arange(T)[None, :]
    probs = []
    for b in m.transformer.h:
        a = b.attn.attention
        h = b.ln_1(x)
        q, k, v = (p(h).view(T, a.heads, -1).transpose(0, 1) for p in (a.q_proj, a.k_proj, a.v_proj))
        ok = (d >= 0) & (d < m.cfg.window) if a.local else d >= 0
        w = (q @ k.transpose(-1, -2)).masked_fill(~ok, float("-inf")).softmax(-1)
        probs.append(w)
        x = x + a.out_proj((w @ v).transpose(0, 1).reshape(T, -1))
        x = x + b.mlp(b.ln_2(x))
    return torch.stack(probs), m.lm_head(m.transformer.ln_f(x))


@torch.no_grad()
def test_attention_maps_match_manual_recompute(codec):
    m = random_model(codec.vocab_size, layers=3)  # global, local, global
    ids = torch.randint(0, codec.vocab_size, (40,), generator=torch.Generator().manual_seed(1)).tolist()  # 40 > window 8
    maps = interpret.attention_maps(m, ids)
    ref, logits = manual_forward(m, ids)
    assert torch.allclose(logits, m(torch.tensor([ids]))[0][0], atol=1e-4)  # the reference is the model
    assert maps.shape == (3, 4, 40, 40)
    assert torch.allclose(maps, ref, atol=1e-5)
    assert torch.allclose(maps.sum(-1), torch.ones(3, 4, 40), atol=1e-5)
    d = torch.arange(40)[:, None] - torch.arange(40)[None, :]
    assert (maps[:, :, d < 0] == 0).all()  # nothing from the future
    assert (maps[1][:, d >= 8] == 0).all()  # the local layer sees only its window
    assert (maps[0][:, d >= 8] > 0).any()  # global layers see past it


def test_story_tokens_mark_names_and_classes(codec, stories):
    s = stories[0]
    st = interpret.story_tokens(codec, s, 4096)
    assert st.ids[0] == codec.eot_id and "".join(st.pieces[1:]) == s.text
    hero = s.facts["hero"].lower()
    hero_pos = [i for i, w in enumerate(st.words) if w == hero]
    assert hero_pos and all(st.entity[i] and st.classes[i] == "name" for i in hero_pos)
    assert {st.classes[i] for i, w in enumerate(st.words) if w in ("he", "she")} <= {"pronoun"}
    assert st.classes[0] == "start" and not st.entity[0]
    assert len(interpret.prepare(codec, [s], 16)[0].ids) == 16


def synthetic_maps(st, recent: int) -> torch.Tensor:
    """Head 0: previous token; head 1: far entity tokens when any, else the start token; head 2: uniform."""
    T = len(st.ids)
    maps = torch.zeros(1, 3, T, T)
    for t in range(T):
        maps[0, 0, t, max(0, t - 1)] = 1
        far = [j for j in range(1, t - recent + 1) if st.entity[j]]
        for j in far or [0]:
            maps[0, 1, t, j] = 1 / len(far or [0])
        maps[0, 2, t, : t + 1] = 1 / (t + 1)
    return maps


def test_head_scores_on_synthetic_attention(codec, stories, monkeypatch):
    tokens = interpret.prepare(codec, stories[:4], 64)
    by_ids = {tuple(st.ids): synthetic_maps(st, 3) for st in tokens}
    monkeypatch.setattr(interpret, "attention_maps", lambda _m, ids: by_ids[tuple(ids)])
    m = GPTNeo(GPTNeoConfig(vocab_size=codec.vocab_size, hidden=24, layers=1, heads=3, context=64, window=64))
    rows = interpret.head_scores(m, codec, tokens)
    prev, ent, uniform = rows
    assert prev["distance_score"] == pytest.approx(1.0) and prev["verdict"] == "distance"
    assert prev["entity_score"] == 0
    assert ent["entity_score"] == pytest.approx(1.0) and ent["entity_lift"] > 2 and ent["verdict"] == "entity"
    assert uniform["entity_lift"] == pytest.approx(1.0)  # uniform attention is the chance level by definition
    assert uniform["distance_score"] < 0.3 and uniform["verdict"] == "other"
    assert all(np.isfinite(r["entity_chance"]) and 0 < r["entity_chance"] < 1 for r in rows)


def test_classify_thresholds():
    def verdict(dist, lift):
        return interpret.classify({"distance_score": dist, "entity_lift": lift}, 0.3, 2.0)

    assert verdict(0.5, 1.0) == "distance"
    assert verdict(0.1, 2.5) == "entity"
    assert verdict(0.4, 3.0) == "mixed"
    assert verdict(0.1, 1.0) == "other"
    assert verdict(0.1, float("nan")) == "other"


def test_head_scores_on_a_real_model(codec, stories):
    m = random_model(codec.vocab_size, window=32, scale=1.0)  # a window wide enough for far entities
    rows = interpret.head_scores(m, codec, stories[:3])
    assert len(rows) == 2 * 4 and {r["attention"] for r in rows} == {"global", "local"}
    for r in rows:
        assert 0 <= r["distance_score"] <= 1 and 0 <= r["start_score"] <= 1
        assert r["entity_lift"] == pytest.approx(1.0, abs=0.3)  # a near-uniform random model is near chance
    assert "verdict" in interpret.head_table({"m": rows})


@torch.no_grad()
def test_mlp_activations_are_the_gelu_hidden_units(codec):
    m = random_model(codec.vocab_size, scale=1.0)
    ids = [codec.eot_id, *codec.encode("Tom saw a big red ball.")]
    seen = []
    hook = m.transformer.h[1].mlp.c_fc.register_forward_hook(lambda _m, _a, out: seen.append(out))
    m(torch.tensor([ids]))
    hook.remove()
    expected = F.gelu(seen[0][0], approximate="tanh")
    assert torch.allclose(neurons.mlp_activations(m, ids, 1), expected)


def test_top_activating_contexts_deterministic(codec, stories):
    m = random_model(codec.vocab_size, scale=2.0)
    a = neurons.top_activating_contexts(m, codec, stories, layer=1, n_neurons=4, k=3)
    b = neurons.top_activating_contexts(copy.deepcopy(m), codec, stories, layer=1, n_neurons=4, k=3)  # a fresh scan
    assert a == b and len(a) == 4
    assert [n["max_activation"] for n in a] == sorted((n["max_activation"] for n in a), reverse=True)
    tokens = interpret.prepare(codec, stories, m.cfg.context)
    by_id = {st.story_id: st for st in tokens}
    for n in a:
        acts = [c["activation"] for c in n["contexts"]]
        assert len(acts) == 3 and acts == sorted(acts, reverse=True) and acts[0] == n["max_activation"]
        assert len({c["story"] for c in n["contexts"]}) == 3  # one context per story
        for c in n["contexts"]:
            st = by_id[c["story"]]
            assert st.pieces[c["position"]] == c["token"] and c["position"] >= 1
            act = neurons.mlp_activations(m, st.ids, 1)[c["position"], n["neuron"]]
            assert float(act) == pytest.approx(c["activation"], abs=1e-5)
    md = neurons.contexts_markdown(a)
    assert "<b><code>" in md and "**`" not in md  # HTML bold holds when the token is glued to a word
    glued = neurons.contexts_markdown([{"neuron": 1, "max_activation": 2.0,
                                        "contexts": [{"left": "the*dog|", "token": "s", "right": " <ran>"}]}])
    assert "the*dog&#124;<b><code>s</code></b> &lt;ran&gt;" in glued


def test_scan_cache_follows_parameter_updates(codec, stories):
    m = random_model(codec.vocab_size, scale=2.0)
    before = neurons.top_activating_contexts(m, codec, stories[:3], layer=0, n_neurons=2, k=1)
    with torch.no_grad():
        m.transformer.h[0].mlp.c_fc.bias.add_(1.0)  # in place: the parameter's version changes
    after = neurons.top_activating_contexts(m, codec, stories[:3], layer=0, n_neurons=2, k=1)
    assert before != after


def test_neuron_selectivity_trained_vs_random(codec, stories):
    m = random_model(codec.vocab_size, scale=2.0)  # stands in for a trained model
    res = neurons.neuron_selectivity(m, codec, stories, layer=1, k=5, seed=1)
    assert set(res) == {"trained", "random init", "chance"}
    for s in res.values():
        assert s["neurons"] == m.cfg.intermediate
        assert 0 < s["word_agreement"] <= 1 and 0 < s["class_agreement"] <= 1
        assert 0 <= s["with_role"] <= 1 and sum(s["roles"].values()) == pytest.approx(s["with_role"])
    again = neurons.neuron_selectivity(m, codec, stories, layer=1, k=5, seed=1)
    assert again == res
    assert "random init" in neurons.selectivity_table({"layer 1": res})


def test_random_like_keeps_global_rng():
    m = GPTNeo(GPTNeoConfig(vocab_size=20, hidden=8, layers=1, heads=2, context=8))
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    r = neurons.random_like(m, seed=9)
    assert torch.equal(torch.rand(3), expected) and r.cfg == m.cfg


def test_shallow_and_deep():
    from types import SimpleNamespace as R

    runs = [R(hidden=h, layers=n) for n in (1, 2, 4) for h in (16, 32)]
    shallow, deep = interpret.shallow_and_deep(runs)
    assert (shallow.layers, shallow.hidden, deep.layers, deep.hidden) == (1, 32, 4, 32)


@pytest.mark.slow
def test_notebook_06_on_tiny(tmp_path):
    pytest.importorskip("papermill")
    from tinystories_lib.reproduce import reproduce

    reproduce("tiny", only=["06"], runs_root=tmp_path / "runs", figures_root=tmp_path / "figs", log_output=False)
    for name in ("attention_maps", "head_scores", "neuron_selectivity"):
        assert (tmp_path / "figs" / "tiny" / f"{name}.png").stat().st_size > 0
