"""Two small interactive tools for notebooks (ipywidgets), usable without a frontend too.

    sampler(models, codec)                 type a beginning, pick a model, temperature and top-p, and watch
                                           the story appear token by token (KV-cached sampling)
    attention_explorer(model, codec, text) pick a token, a layer and a head: the text is shaded by how
                                           much that token attends to each earlier token

Both are ordinary widgets (VBox subclasses): in Jupyter they are interactive; under papermill they are
displayed as static placeholders and the notebook still runs. Their actions are plain methods
(`Sampler.generate()`, `AttentionExplorer.render()`), so tests call them without a browser.
"""

from __future__ import annotations

import html
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import ipywidgets as W
import torch

from tinystories_lib.evals.interpret import attention_maps, token_pieces
from tinystories_lib.lm.kvcache import KVCache
from tinystories_lib.lm.model import GPTNeo
from tinystories_lib.lm.sample import SamplingConfig, sample_next
from tinystories_lib.lm.tokenizer import Codec

# ---------------------------------------------------------------- sampler


@torch.no_grad()
def stream_tokens(model: GPTNeo, prompt: list[int], max_new_tokens: int = 150, temperature: float = 0.8,
                  top_p: float = 0.9, top_k: int = 0, seed: int = 0, eot_id: int | None = None) -> Iterator[int]:
    """Sample one token at a time with the KV cache, yielding each as soon as it is drawn; stops at
    end-of-text or the context. For a single prompt it draws the same tokens as `sample.generate` with the
    same settings and seed (same filtering, same generator use)."""
    if not prompt:
        raise ValueError("the prompt needs at least one token (start it with <|endoftext|>)")
    device = next(model.parameters()).device
    prompt = prompt[-(model.cfg.context - 1):]
    T = len(prompt)
    max_new = min(max_new_tokens, model.cfg.context - T)
    cache = KVCache(model.cfg, 1, T + max_new, device, next(model.parameters()).dtype)
    valid = torch.ones((1, T + max_new), dtype=torch.bool, device=device)
    gen = torch.Generator(device=device).manual_seed(seed)
    cfg = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p)
    was = model.training
    model.eval()
    try:
        logits = model.forward_cached(torch.tensor([prompt], device=device), torch.arange(T, device=device)[None],
                                      valid[:, :T], cache)
        for t in range(max_new):
            tok = sample_next(logits, cfg, gen)
            if eot_id is not None and int(tok) == eot_id:
                return
            yield int(tok)
            if t + 1 == max_new:
                return
            pos = torch.tensor([[T + t]], device=device)
            logits = model.forward_cached(tok[:, None], pos, valid[:, : cache.length + 1], cache)
    finally:
        model.train(was)


def _model_sources(models) -> dict[str, object]:
    """label -> model directory or loaded GPTNeo, from a dict or from `stages.ModelRun`s."""
    if isinstance(models, Mapping):
        return dict(models)
    if isinstance(models, GPTNeo):
        return {"model": models}
    return {r.label: r.dir for r in models}


class Sampler(W.VBox):
    """Beginning, model, temperature, top-p, length and a Generate button; the story streams into `output`."""

    def __init__(self, models, codec: Codec, beginning: str = "Once upon a time, there was a little girl named",
                 temperature: float = 0.7, top_p: float = 0.9, max_new_tokens: int = 150):
        self.codec = codec
        self.sources = _model_sources(models)
        if not self.sources:
            raise ValueError("sampler needs at least one model")
        self._loaded: dict[str, GPTNeo] = {}
        self._seed = 0  # advanced on every click, so clicking again gives a new story
        self.text = W.Textarea(value=beginning, description="Beginning", layout=W.Layout(width="100%", height="70px"))
        self.model = W.Dropdown(options=list(self.sources), description="Model")
        self.temperature = W.FloatSlider(value=temperature, min=0.0, max=1.5, step=0.05, description="Temperature")
        self.top_p = W.FloatSlider(value=top_p, min=0.05, max=1.0, step=0.05, description="Top-p")
        self.length = W.IntSlider(value=max_new_tokens, min=10, max=500, step=10, description="Max tokens")
        self.button = W.Button(description="Generate", button_style="primary")
        self.output = W.Output(layout=W.Layout(border="1px solid #ddd", padding="4px"))
        self.button.on_click(lambda _b: self.generate())
        super().__init__([self.text, W.HBox([self.model, self.button]),
                          W.HBox([self.temperature, self.top_p, self.length]), self.output])

    def load(self, label: str) -> GPTNeo:
        if label not in self._loaded:
            src = self.sources[label]
            if isinstance(src, GPTNeo):
                self._loaded[label] = src
            else:
                from tinystories_lib.lm.checkpoints import load_model

                self._loaded[label] = load_model(Path(src))
        return self._loaded[label]

    def generate(self) -> str:
        """Sample a continuation of the beginning with the current settings, streaming it into `output`;
        returns the continuation."""
        model = self.load(self.model.value)
        prompt = [self.codec.eot_id, *self.codec.encode(self.text.value)]
        self.output.outputs = ()
        self.output.append_stdout(self.text.value)
        self.button.disabled = True  # one story at a time
        ids, shown = [], ""
        try:
            for tok in stream_tokens(model, prompt, self.length.value, self.temperature.value, self.top_p.value,
                                     seed=self._seed, eot_id=self.codec.eot_id):
                ids.append(tok)
                text = self.codec.decode(ids)  # the whole continuation: a character split over tokens stays intact
                if not text.endswith("\ufffd"):  # wait for the rest of a split character
                    self._show(text[len(shown):])
                    shown = text
            text = self.codec.decode(ids)
            self._show(text[len(shown):])
        finally:
            self.button.disabled = False
            self._seed += 1
        return text

    def _show(self, text: str) -> None:
        if text:
            self.output.append_stdout(text)

    @property
    def shown_text(self) -> str:
        """Everything the output area shows (the beginning and the streamed continuation)."""
        return "".join(o.get("text", "") for o in self.output.outputs)


def sampler(models: Mapping[str, object] | Sequence, codec: Codec, **kw) -> Sampler:
    """A story sampler over `models` ({label: model dir or GPTNeo} or `stages.ModelRun`s)."""
    return Sampler(models, codec, **kw)


# ---------------------------------------------------------------- attention explorer


class AttentionExplorer(W.VBox):
    """Pick a token, a layer and a head (or the mean of the heads); `view` shades each earlier token by the
    attention the picked token gives it and lists the top five."""

    def __init__(self, model: GPTNeo, codec: Codec, text: str):
        ids = [codec.eot_id, *codec.encode(text)][: model.cfg.context]
        self.pieces = ["<|endoftext|>", *token_pieces(codec, ids[1:])]
        self.maps = attention_maps(model, ids)  # (layers, heads, T, T), computed once
        L, H, T, _ = self.maps.shape
        kinds = ["local" if b.attn.attention.local else "global" for b in model.transformer.h]
        self.token = W.IntSlider(value=T - 1, min=0, max=T - 1, description="Token", continuous_update=False)
        self.layer = W.Dropdown(options=[(f"layer {i} ({k})", i) for i, k in enumerate(kinds)], description="Layer")
        self.head = W.Dropdown(options=[("mean of heads", -1)] + [(f"head {h}", h) for h in range(H)],
                               value=0, description="Head")
        self.view = W.HTML()
        for w in (self.token, self.layer, self.head):
            w.observe(lambda _c: self.render(), names="value")
        super().__init__([W.HBox([self.token, self.layer, self.head]), self.view])
        self.render()

    def weights(self) -> torch.Tensor:
        """The attention row of the picked token at the picked layer and head: (T,)."""
        m = self.maps[self.layer.value]
        m = m.mean(0) if self.head.value < 0 else m[self.head.value]
        return m[self.token.value]

    def _span(self, i: int, w: torch.Tensor, peak: float) -> str:
        """Token i: framed if picked, shaded by its weight if earlier, grey if later (it cannot be seen)."""
        text = html.escape(self.pieces[i]).replace("\n", "&#8629;<br>")
        t = self.token.value
        if i == t:
            return f'<span style="outline:2px solid #d62728" title="picked">{text}</span>'
        if i > t:
            return f'<span style="color:#bbb">{text}</span>'
        alpha = float(w[i]) / peak
        return f'<span style="background:rgba(31,119,180,{alpha:.2f})" title="{float(w[i]):.3f}">{text}</span>'

    def render(self) -> str:
        w = self.weights()
        t = self.token.value
        peak = float(w.max()) or 1.0
        spans = "".join(self._span(i, w, peak) for i in range(len(self.pieces)))
        top = torch.topk(w, min(5, t + 1))
        listing = ", ".join(f"{html.escape(repr(self.pieces[int(i)]))} {float(v):.2f}"
                            for v, i in zip(top.values, top.indices))
        picked = html.escape(repr(self.pieces[t]))
        self.view.value = (f"<div style='font-family:monospace;line-height:1.7'>{spans}</div>"
                           f"<div><b>token {t} {picked}</b> attends most to: {listing}</div>")
        return self.view.value


def attention_explorer(model: GPTNeo, codec: Codec, text: str) -> AttentionExplorer:
    """Explore the attention of `model` over `text` (cut to the model's context)."""
    return AttentionExplorer(model, codec, text)
