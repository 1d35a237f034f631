"""Hugging Face interop: our GPT-Neo and transformers' GPTNeoForCausalLM compute the same function."""

from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from tinystories_lib.lm.interop import hf  # noqa: E402
from tinystories_lib.lm.model import GPTNeo, GPTNeoConfig  # noqa: E402
from tinystories_lib.lm.sample import SamplingConfig, generate  # noqa: E402
from tinystories_lib.lm.tokenizer import top_k_codec, train_bpe  # noqa: E402

TOL = 1e-4
SEQ = 40  # longer than the local window (8), so local layers really mask


def _randomize(model: torch.nn.Module, seed: int) -> None:
    """Every parameter random (LayerNorm weights and biases too), so a swapped or dropped tensor shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)


@pytest.fixture(scope="module")
def hf_model():
    cfg = transformers.GPTNeoConfig(vocab_size=100, hidden_size=32, num_layers=4, num_heads=4,
                                    max_position_embeddings=64, window_size=8,
                                    attention_types=[[["global", "local"], 2]], bos_token_id=None, eos_token_id=None)
    model = transformers.GPTNeoForCausalLM(cfg).eval()
    _randomize(model, 0)
    return model


@pytest.fixture(scope="module")
def tokens():
    return torch.randint(0, 100, (3, SEQ), generator=torch.Generator().manual_seed(1))


@torch.no_grad()
def test_hf_to_ours_same_logits(hf_model, tokens):
    ours = hf.from_hf(hf_model)
    assert ours.cfg.attention_types == ["global", "local", "global", "local"] and ours.cfg.window == 8
    diff = (ours(tokens)[0] - hf_model(tokens).logits).abs().max().item()
    assert diff <= TOL


@torch.no_grad()
def test_ours_to_hf_directory(tmp_path, tokens):
    cfg = GPTNeoConfig(vocab_size=100, context=64, hidden=32, layers=4, heads=4, window=8,
                       attention_types=["global", "global", "local", "local"])
    ours = GPTNeo(cfg).eval()
    _randomize(ours, 2)
    hf.to_hf(ours, tmp_path)
    theirs = transformers.GPTNeoForCausalLM.from_pretrained(tmp_path).eval()
    assert theirs.config.attention_layers == cfg.attention_types
    assert (ours(tokens)[0] - theirs(tokens).logits).abs().max().item() <= TOL
    back = hf.from_hf(tmp_path)  # and the directory reads back as our model, exactly
    assert back.cfg == cfg
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), back.state_dict().values()))


@torch.no_grad()
def test_pytorch_bin_with_buffers_and_lm_head(tmp_path, hf_model, tokens):
    """Older checkpoints (like the TinyStories repos) are pickled and carry mask buffers and lm_head."""
    state = dict(hf_model.state_dict())
    for i in range(4):
        state[f"transformer.h.{i}.attn.attention.bias"] = torch.ones(1, 1, 64, 64, dtype=torch.bool)
        state[f"transformer.h.{i}.attn.attention.masked_bias"] = torch.tensor(-1e9)
    state["lm_head.weight"] = state["transformer.wte.weight"].clone()
    torch.save(state, tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text(hf_model.config.to_json_string())
    ours = hf.from_hf(tmp_path)
    assert (ours(tokens)[0] - hf_model(tokens).logits).abs().max().item() <= TOL


def test_untied_lm_head_is_refused(tmp_path, hf_model):
    state = {k: v.clone() for k, v in hf_model.state_dict().items()}
    state["lm_head.weight"] = state["transformer.wte.weight"] + 1
    with pytest.raises(ValueError, match="untied"):
        hf._from_state(hf.config_from_hf(hf_model.config), state)


@torch.no_grad()
def test_batched_greedy_generate_equals_hf(hf_model):
    ours = hf.from_hf(hf_model)
    prompts = [[5, 6, 7], [1], [9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 11]]  # different lengths: left padding
    n = 30  # past the window of 8, so cached local attention must slide
    got = generate(ours, prompts, SamplingConfig(max_new_tokens=n, temperature=0))
    for p, g in zip(prompts, got):
        out = hf_model.generate(torch.tensor([p]), do_sample=False, max_new_tokens=n, min_new_tokens=n, pad_token_id=0)
        assert out[0, len(p) :].tolist() == g


def test_config_round_trip_and_hf_json():
    cfg = GPTNeoConfig(vocab_size=300, context=128, hidden=48, layers=3, heads=4, window=16, intermediate=100,
                       attention_types=["global", "global", "local"], layer_norm_eps=1e-6)
    assert hf.config_from_hf(hf.config_to_hf(cfg)) == cfg
    assert hf.config_to_hf(cfg).eos_token_id is None  # 50256 would be outside a 300-token vocab
    # A TinyStories-style config.json: compressed attention types, intermediate_size null.
    tiny = {"model_type": "gpt_neo", "vocab_size": 50257, "max_position_embeddings": 2048, "hidden_size": 64,
            "num_layers": 8, "num_heads": 16, "attention_types": [[["global", "local"], 4]], "window_size": 256,
            "intermediate_size": None, "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5}
    c = hf.config_from_hf(tiny)
    assert (c.intermediate, c.context, c.layers) == (256, 2048, 8)
    assert c.attention_types == ["global", "local"] * 4
    with pytest.raises(ValueError, match="gelu_new"):
        hf.config_from_hf({**tiny, "activation_function": "relu"})
    with pytest.raises(ValueError, match="untied"):
        hf.config_from_hf({**tiny, "tie_word_embeddings": False})


TEXTS = ["Once upon a time there was a little dog.", "The cat sat on the mat and smiled!",
         "Lily and Ben went to the park to play."] * 20


def test_tokenizer_round_trip_through_hf(tmp_path):
    codec = train_bpe(TEXTS, 300)
    model = GPTNeo(GPTNeoConfig(vocab_size=codec.vocab_size, context=32, hidden=16, layers=2, heads=2, window=8))
    hf.to_hf(model, tmp_path, codec)
    assert json.loads((tmp_path / "config.json").read_text())["eos_token_id"] == codec.eot_id
    auto = transformers.AutoTokenizer.from_pretrained(tmp_path)
    back = hf.codec_from_hf(tmp_path)
    for text in ["Once upon a time, Lily smiled.", "A dog! <|endoftext|>"]:
        assert auto.encode(text) == codec.encode(text) == back.encode(text)
    assert back.eot_id == codec.eot_id


def test_top_k_codec_is_refused(tmp_path):
    base = train_bpe(TEXTS, 300).tok
    codec = top_k_codec(base, TEXTS, 270)
    model = GPTNeo(GPTNeoConfig(vocab_size=codec.vocab_size, context=32, hidden=16, layers=2, heads=2, window=8))
    with pytest.raises(ValueError, match="top-k"):
        hf.to_hf(model, tmp_path, codec)


def test_codec_from_gpt2_vocab_and_merges(shared):
    d = shared("tokenizers/gpt2/vocab.json").parent
    codec = hf.codec_from_hf(d)
    assert codec.vocab_size == 50257 and codec.eot_id == 50256
    assert codec.decode(codec.encode("Once upon a time")) == "Once upon a time"


def test_hub_errors_are_actionable(monkeypatch, tmp_path):
    def offline(repo_id):
        raise OSError("no connection")

    monkeypatch.setattr(hf, "_download", offline)
    with pytest.raises(RuntimeError, match="hf download roneneldan/TinyStories-1M --local-dir DIR"):
        hf.from_hf("roneneldan/TinyStories-1M")
    with pytest.raises(FileNotFoundError, match="neither a local directory nor a hub id"):
        hf.from_hf(tmp_path / "missing" / "dir")
    with pytest.raises(FileNotFoundError, match="config.json"):
        hf.from_hf(tmp_path)
