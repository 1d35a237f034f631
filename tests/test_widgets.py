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


@pytest.mark.slow
def test_stream_tokens_compiled_equals_eager(model):
    """The sampler's compiled decode (lm/compiled_decode.py) streams the same story, up to the context."""
    prompt = list(range(1, 11))
    eager = list(widgets.stream_tokens(model, prompt, 60, 1.0, 0.9, seed=5))
    assert list(widgets.stream_tokens(model, prompt, 60, 1.0, 0.9, seed=5, compiled=True)) == eager
    assert len(eager) == 48 - len(prompt)


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


def test_attention_explorer_models_clicks_and_own_text(model, codec):
    torch.manual_seed(1)
    one_layer = GPTNeo(GPTNeoConfig(vocab_size=codec.vocab_size, hidden=32, layers=1, heads=2, context=48)).eval()
    ui = widgets.attention_explorer({"deep": model, "shallow": one_layer}, codec, "Tom had a red ball.",
                                    model="shallow")
    assert ui.maps.shape[:2] == (1, 2) and len(ui.layer.options) == 1
    ui._buttons[3].click()  # clicking a token picks it
    assert ui.token.value == 3 and "token 3 " in ui.view.value
    assert ui._buttons[3].layout is not ui._buttons[2].layout  # the picked token is framed
    ui.model.value = "deep"  # the layers and heads follow the model; the picked token stays
    assert ui.maps.shape[:2] == (2, 4) and len(ui.layer.options) == 2 and ui.token.value == 3
    ui.text.value = "Mia saw a dog.\nThe dog ran."
    ui.use_text.click()
    assert "".join(ui.pieces[1:]) == "Mia saw a dog.\nThe dog ran." and ui.token.max == len(ui.pieces) - 1
    assert len(ui.tokens.children) == len(ui.pieces) + 1  # a line break after the newline token
    assert "interactive" in repr(ui)  # what an executed notebook shows


def test_tables_escape_and_truncate():
    t = widgets.markdown_table("| model | score |\n|---|---:|\n" + "".join(f"| m<{i}> \\| x | **{i}** |\n" for i in range(30)),
                               max_rows=5)
    page = t._repr_html_()
    assert "m&lt;0&gt; | x" in page and "<b>0</b>" in page and "m&lt;5&gt;" not in page
    assert "30 rows; showing 5" in page and "30 rows; showing 5" in repr(t)
    neurons = [{"neuron": 7, "max_activation": 1.5,
                "contexts": [{"left": "the big", "token": "gest**", "right": " <dog>", "story": 0}]}]
    cell = widgets.contexts_table(neurons)._repr_html_()
    assert "the big<mark>gest**</mark> &lt;dog&gt;" in cell  # glued to its word, no Markdown to break
    assert widgets.collapse_repeats("They ran. They ran. They ran. The end.") == "They ran. [×3] The end."
    assert widgets.collapse_repeats("a b c d e", max_words=2) == "a b … [+3 words]"


def test_completions_table_one_row_per_model_and_prompt():
    items = [SimpleNamespace(model=m, prompt_id=p, beginning=f"Beginning {p}.", completion="Go. Go. Go.")
             for p in ("a", "b", "c") for m in ("h32-l1", "main") for _ in range(2)]  # two samples each
    t = widgets.completions_table(items, n_prompts=2)
    assert [r[0] for r in t.rows] == ["h32-l1", "main"] * 2 and t.rows[0][1] == "Beginning a." and t.rows[1][1] == "″"
    assert t.rows[0][2] == "Go. [×3]"
