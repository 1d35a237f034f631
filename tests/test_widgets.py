from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("ipywidgets")

from tinystories_lib.lm.checkpoints import save_model  # noqa: E402
from tinystories_lib.lm.model import GPTNeo, GPTNeoConfig  # noqa: E402
from tinystories_lib.lm.sample import SamplingConfig, generate  # noqa: E402
from tinystories_lib.lm.tokenizer import train_bpe  # noqa: E402
from tinystories_lib.show import widgets  # noqa: E402
from tinystories_lib.stories.storyteller import tell_stories  # noqa: E402


@pytest.fixture(scope="module")
def codec():
    return train_bpe([s.text for s in tell_stories(8, seed=4)], 300)


@pytest.fixture(scope="module")
def model(codec):
    torch.manual_seed(0)
    m = GPTNeo(GPTNeoConfig(vocab_size=codec.vocab_size, hidden=32, layers=2, heads=4, context=48, window=8))
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(3)  # peaky logits: varied tokens, few accidental end-of-text draws
    return m.eval()


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_stream_tokens_equals_generate(model, temperature):
    prompt = list(range(1, 31))
    cfg = SamplingConfig(max_new_tokens=40, temperature=temperature, top_p=0.9, seed=3, stop_at_eot=False)
    expected = generate(model, [prompt], cfg)[0]  # 30 + 40 > context 48: both stop at the context
    got = list(widgets.stream_tokens(model, prompt, 40, temperature, 0.9, seed=3))
    assert got == expected and len(got) == 48 - len(prompt)


def test_sampler_streams_into_its_output(model, codec, tmp_path):
    save_model(model, tmp_path / "m")
    ui = widgets.sampler({"in memory": model, "from disk": tmp_path / "m"}, codec, beginning="Tom had a ball.",
                         max_new_tokens=20)
    assert list(ui.model.options) == ["in memory", "from disk"]
    first = ui.generate()
    assert first and ui.shown_text == "Tom had a ball." + first
    assert len(ui.output.outputs) > 2  # streamed piece by piece, not written at the end
    assert not ui.button.disabled
    ui.model.value = "from disk"
    ui.button.click()  # the button runs the same callback
    assert ui.shown_text.startswith("Tom had a ball.") and len(ui.shown_text) > len("Tom had a ball.")


def test_sampler_accepts_model_runs(model, codec, tmp_path):
    save_model(model, tmp_path / "m")
    ui = widgets.sampler([SimpleNamespace(label="h32-l2", dir=tmp_path / "m")], codec)
    assert ui.model.value == "h32-l2" and isinstance(ui.load("h32-l2"), GPTNeo)


def test_attention_explorer(model, codec):
    text = "Lily saw a cat. The cat was happy, and Lily smiled at it."
    ui = widgets.attention_explorer(model, codec, text)
    T = ui.maps.shape[-1]
    assert ui.pieces[0] == "<|endoftext|>" and "".join(ui.pieces[1:]) == text and T == len(ui.pieces)
    assert "attends most to" in ui.view.value
    ui.token.value, ui.layer.value, ui.head.value = 5, 1, 2
    assert torch.equal(ui.weights(), ui.maps[1, 2, 5])
    html = ui.view.value
    assert "token 5" in html and "outline" in html  # the picked token is framed
    ui.head.value = -1
    assert torch.allclose(ui.weights(), ui.maps[1, :, 5].mean(0)) and ui.view.value != html
