"""Interactive tools and readable tables for notebooks (ipywidgets and HTML), usable without a frontend too.

    sampler(models, codec)                  type a beginning, pick a model, temperature and top-p, and watch
                                            the story appear token by token (KV-cached sampling)
    attention_explorer(models, codec, text) click a token, pick a model, a layer and a head: every earlier
                                            token is shaded by how much the clicked one attends to it
    table / markdown_table                  an HTML table (escaped, long ones cut with a count); plain text
                                            in headless logs
    contexts_table, completions_table       notebook 06's neuron contexts, notebook 04's completions

The tools are ordinary widgets (VBox subclasses): in Jupyter they are interactive; under papermill they are
a one-line placeholder and the notebook still runs. Their actions are plain methods (`Sampler.generate()`,
`AttentionExplorer.render()`), so tests call them without a browser.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import ipywidgets as W
import torch

from tinystories_lib.evals.interpret import attention_maps, token_pieces
from tinystories_lib.lm.model import GPTNeo
from tinystories_lib.lm.sample import SamplingConfig, decoding_cache, sample_next
from tinystories_lib.lm.tokenizer import Codec

LABELS = {"description_width": "initial"}  # labels take the width they need ("Temperature" was cut)

# ---------------------------------------------------------------- models


def _model_sources(models) -> dict[str, object]:
    """label -> model directory or loaded GPTNeo, from a dict, one GPTNeo or `stages.ModelRun`s."""
    if isinstance(models, Mapping):
        return dict(models)
    if isinstance(models, GPTNeo):
        return {"model": models}
    return {r.label: r.dir for r in models}


class _Models:
    """Loads the picked model once, on first use (a sweep has many; most are never picked)."""

    def _init_models(self, models):
        self.sources = _model_sources(models)
        if not self.sources:
            raise ValueError(f"{type(self).__name__} needs at least one model")
        self._loaded: dict[str, GPTNeo] = {}

    def load(self, label: str) -> GPTNeo:
        if label not in self._loaded:
            src = self.sources[label]
            if not isinstance(src, GPTNeo):
                from tinystories_lib.lm.checkpoints import load_model

                src = load_model(Path(src))
            self._loaded[label] = src
        return self._loaded[label]

    def __repr__(self):  # what an executed notebook shows instead of the widget
        return f"<{type(self).__name__}: interactive, open this notebook in JupyterLab and run it>"


# ---------------------------------------------------------------- sampler


@torch.no_grad()
def stream_tokens(model: GPTNeo, prompt: list[int], max_new_tokens: int = 150, temperature: float = 0.8,
                  top_p: float = 0.9, top_k: int = 0, seed: int = 0, eot_id: int | None = None,
                  compiled: bool = False) -> Iterator[int]:
    """Sample one token at a time with the KV cache, yielding each as soon as it is drawn; stops at
    end-of-text or the context. For a single prompt it draws the same tokens as `sample.generate` with the
    same settings and seed (same filtering, same generator use). `compiled` decodes with
    lm/compiled_decode.py's step (the same tokens; several times faster at batch 1 once compiled)."""
    if not prompt:
        raise ValueError("the prompt needs at least one token (start it with <|endoftext|>)")
    device = next(model.parameters()).device
    prompt = prompt[-(model.cfg.context - 1):]
    T = len(prompt)
    max_new = min(max_new_tokens, model.cfg.context - T)
    cache, decode = decoding_cache(model, 1, T + max_new, device, next(model.parameters()).dtype, compiled)
    valid = torch.ones((1, cache.capacity), dtype=torch.bool, device=device)
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
            logits = decode(tok[:, None], pos, valid)
    finally:
        model.train(was)


class Sampler(_Models, W.VBox):
    """Beginning, model, temperature, top-p, length and a Generate button; the story streams into `output`."""

    def __init__(self, models, codec: Codec, beginning: str = "Once upon a time, there was a little girl named",
                 temperature: float = 0.7, top_p: float = 0.9, max_new_tokens: int = 150, compiled: bool = False):
        self.codec = codec
        self.compiled = compiled  # lm/compiled_decode.py: the first story compiles the step (seconds), later ones are faster
        self._init_models(models)
        self._seed = 0  # advanced on every click, so clicking again gives a new story
        self.text = W.Textarea(value=beginning, description="Beginning", style=LABELS,
                               layout=W.Layout(width="100%", height="70px"))
        self.model = W.Dropdown(options=list(self.sources), description="Model", style=LABELS)
        self.temperature = W.FloatSlider(value=temperature, min=0.0, max=1.5, step=0.05, description="Temperature",
                                         style=LABELS)
        self.top_p = W.FloatSlider(value=top_p, min=0.05, max=1.0, step=0.05, description="Top-p", style=LABELS)
        self.length = W.IntSlider(value=max_new_tokens, min=10, max=500, step=10, description="Max tokens",
                                  style=LABELS)
        self.button = W.Button(description="Generate", button_style="primary")
        self.output = W.Output(layout=W.Layout(border="1px solid #ddd", padding="4px"))
        self.output.add_class("ts-sampler-output")  # a stable handle for the browser test
        self.button.on_click(lambda _b: self.generate())
        wrap = W.Layout(flex_flow="row wrap")
        super().__init__([self.text, W.HBox([self.model, self.button], layout=wrap),
                          W.HBox([self.temperature, self.top_p, self.length], layout=wrap), self.output])

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
                                     seed=self._seed, eot_id=self.codec.eot_id, compiled=self.compiled):
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

HOW_TO_READ = (
    "<b>Click a token</b> (or move the slider): each earlier token is shaded by the attention the clicked one "
    "gives it at this layer and head (darker = more); later tokens are grey, it cannot see them.<br>"
    "A <i>distance</i> head shades the last few tokens; an <i>entity</i> head shades earlier names and objects "
    "wherever they are. <i>Mean of heads</i> shows what the layer reads as a whole.")


class AttentionExplorer(_Models, W.VBox):
    """The story as a row of clickable tokens, shaded by the attention the picked token gives each earlier
    one; model, layer and head (or the mean of the heads) are dropdowns, and any text can be typed in.
    `view` names the picked token and the five it attends to most."""

    def __init__(self, models, codec: Codec, text: str, model: str | None = None, max_tokens: int = 200):
        self.codec, self.max_tokens = codec, max_tokens  # two widgets per token: keep the page light
        self._init_models(models)
        self._quiet = False  # set while the controls are rebuilt, so one change renders once
        self.model = W.Dropdown(options=list(self.sources), value=model or next(iter(self.sources)),
                                description="Model", style=LABELS)
        self.layer = W.Dropdown(description="Layer", style=LABELS)
        self.head = W.Dropdown(description="Head", style=LABELS)
        self.token = W.IntSlider(description="Token", continuous_update=False, style=LABELS,
                                 layout=W.Layout(width="100%"))
        self.tokens = W.Box(layout=W.Layout(display="flex", flex_flow="row wrap", align_items="center",
                                            padding="4px", border="1px solid #ddd"))
        self.view = W.HTML()
        # four layouts shared by every token (a space before it or not, picked or not), not one per token:
        # an executed notebook keeps every widget's state
        self._layouts = {(space, picked): W.Layout(width="auto", height="24px", padding="0 2px",
                                                   margin="1px 0 1px 0.45em" if space else "1px 0",
                                                   border="2px solid #d62728" if picked else "2px solid transparent")
                         for space in (False, True) for picked in (False, True)}
        self.tokens.add_class("ts-attention-tokens")  # stable handles for the browser test
        self.view.add_class("ts-attention-view")
        self.text = W.Textarea(value=text, placeholder="Type a story", layout=W.Layout(width="100%", height="80px"))
        self.use_text = W.Button(description="Explore this text")
        own = W.Accordion([W.VBox([self.text, self.use_text])], titles=("Your own text",), selected_index=None)
        self.model.observe(lambda _c: self._set_model(), names="value")
        for w in (self.token, self.layer, self.head):
            w.observe(lambda _c: self._quiet or self.render(), names="value")
        self.use_text.on_click(lambda _b: self.set_text(self.text.value))
        super().__init__([W.HTML(f"<div style='line-height:1.4'>{HOW_TO_READ}</div>"), W.HBox([self.model, self.layer, self.head],
                                                       layout=W.Layout(flex_flow="row wrap")),
                          self.token, self.tokens, self.view, own])
        self.set_text(text, render=False)
        self._set_model()

    def set_text(self, text: str, render: bool = True) -> None:
        """Explore `text` (cut to the model's context and `max_tokens`)."""
        self._text = text
        n = min(self.max_tokens, self.load(self.model.value).cfg.context)
        self.ids = [self.codec.eot_id, *self.codec.encode(text)][:n]
        self.pieces = ["<|endoftext|>", *token_pieces(self.codec, self.ids[1:])]
        self._buttons = [self._token_button(i, p) for i, p in enumerate(self.pieces)]
        newline = W.Layout(width="100%", height="0px")  # a flex item that ends the row, as the newline did
        self.tokens.children = [w for b, p in zip(self._buttons, self.pieces)
                                for w in ([b, W.Box(layout=newline)] if p.endswith("\n") else [b])]
        self._quiet = True
        self.token.max = len(self.ids) - 1
        self.token.value = len(self.ids) - 1
        self._quiet = False
        if render:
            self._set_model()

    def _token_button(self, i: int, piece: str) -> W.Button:
        label = piece.strip() or {"\n": "↵"}.get(piece[:1], "␣")
        b = W.Button(description=label, tooltip=f"token {i}: {piece!r}", layout=self._layouts[piece[:1] == " ", False])
        b.on_click(lambda _b: setattr(self.token, "value", i))
        return b

    def _set_model(self) -> None:
        m = self.load(self.model.value)
        if len(self.ids) > m.cfg.context:  # a model with a shorter context than the last one
            return self.set_text(self._text)
        self.maps = attention_maps(m, self.ids)  # (layers, heads, T, T), once per model and text
        L, H, T, _ = self.maps.shape
        kinds = ["local" if b.attn.attention.local else "global" for b in m.transformer.h]
        self._quiet = True  # keep the picked layer and head where the new model has them
        layer, head = self.layer.value, self.head.value
        self.layer.options = [(f"{i} ({k})", i) for i, k in enumerate(kinds)]
        self.head.options = [("mean of heads", -1)] + [(f"head {h}", h) for h in range(H)]
        self.layer.value = layer if layer in range(L) else 0
        self.head.value = head if head in range(-1, H) else 0
        self._quiet = False
        self.render()

    def weights(self) -> torch.Tensor:
        """The attention row of the picked token at the picked layer and head: (T,)."""
        m = self.maps[self.layer.value]
        m = m.mean(0) if self.head.value < 0 else m[self.head.value]
        return m[self.token.value]

    def render(self) -> str:
        w = self.weights()
        t = self.token.value
        peak = float(w.max()) or 1.0
        for i, b in enumerate(self._buttons):  # traitlets send only what changed
            b.style.button_color = f"rgba(31,119,180,{float(w[i]) / peak:.2f})" if i <= t else "white"
            b.style.text_color = "#bbb" if i > t else ("white" if float(w[i]) > 0.6 * peak else "black")
            b.layout = self._layouts[self.pieces[i][:1] == " ", i == t]
        top = torch.topk(w, min(5, t + 1))
        listing = ", ".join(f"{html.escape(repr(self.pieces[int(i)]))} (#{int(i)}) {float(v):.2f}"
                            for v, i in zip(top.values, top.indices))
        picked = html.escape(repr(self.pieces[t]))
        self.view.value = (f"<div><span style='outline:2px solid #d62728'><b>token {t} {picked}</b></span> "
                           f"attends most to: {listing}</div>")
        return self.view.value


def attention_explorer(models, codec: Codec, text: str, **kw) -> AttentionExplorer:
    """Explore the attention over `text` of `models` (one GPTNeo, {label: model or dir} or `stages.ModelRun`s)."""
    return AttentionExplorer(models, codec, text, **kw)


# ---------------------------------------------------------------- tables


class Html(str):
    """A table cell that is HTML already; every other cell is escaped."""


class Table:
    """An HTML table for a notebook (text/plain in headless logs): the first `max_rows` rows, with a count
    of the rest. Cells: str (escaped), Html (as is), numbers (right-aligned, floats to 2 decimals)."""

    def __init__(self, header: Sequence[str], rows: Sequence[Sequence], title: str = "", max_rows: int = 20,
                 note: str = ""):
        self.header, self.rows, self.title, self.max_rows, self.note = list(header), list(rows), title, max_rows, note

    def _shown(self) -> tuple[list, str]:
        n = len(self.rows)
        count = f"{n} rows; showing {self.max_rows}" if n > self.max_rows else ""
        return self.rows[: self.max_rows], "; ".join(s for s in (count, self.note) if s)

    @staticmethod
    def _cell(v, tag="td") -> str:
        text = f"{v:.2f}" if isinstance(v, float) else str(v)
        num = isinstance(v, (int, float)) or bool(re.fullmatch(r"[-+]?\d[\d.,]*(%|x)?", text))
        wrap = "normal" if " " in text else "nowrap"  # a label such as main-h128-l4 stays on one line
        text = text if isinstance(v, Html) else html.escape(text).replace("\n", "<br>")
        align = "right" if num else "left"
        return f'<{tag} style="text-align:{align};vertical-align:top;white-space:{wrap}">{text}</{tag}>'

    def _repr_html_(self) -> str:
        rows, foot = self._shown()
        head = "".join(self._cell(h, "th") for h in self.header)
        body = "".join("<tr>" + "".join(self._cell(v) for v in r) + "</tr>" for r in rows)
        title = f"<b>{html.escape(self.title)}</b>" if self.title else ""
        foot = f'<div style="color:#666;font-size:90%">{html.escape(foot)}</div>' if foot else ""
        return (f'{title}<table style="margin-left:0;table-layout:auto"><thead><tr>{head}</tr></thead>'
                f"<tbody>{body}</tbody></table>{foot}")

    def __repr__(self) -> str:
        def plain(v):
            s = f"{v:.2f}" if isinstance(v, float) else str(v)
            if not isinstance(v, Html):
                return s
            s = s.replace("<br>", " / ").replace("<mark>", "[").replace("</mark>", "]")
            return html.unescape(re.sub(r"<[^>]+>", "", s))

        rows, foot = self._shown()
        lines = [self.title] if self.title else []
        lines += [" | ".join(self.header)] + [" | ".join(plain(v).replace("\n", " / ") for v in r) for r in rows]
        return "\n".join(lines + ([f"({foot})"] if foot else []))


def table(rows: Sequence[Mapping], **kw) -> Table:
    """A Table of dicts, one column per key of the first."""
    header = list(rows[0]) if rows else []
    return Table(header, [[r.get(k, "") for k in header] for r in rows], **kw)


def markdown_table(md: str, **kw) -> Table:
    """A Table of a pipe table written by the library's `*_table` functions (first table in `md`);
    `**bold**` and `code` keep their look, everything else is escaped."""
    def cells(line):
        return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]

    def inline(c):
        c = html.escape(c).replace("&lt;br&gt;", "<br>")
        c = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", c)
        return Html(re.sub(r"`(.+?)`", r"<code>\1</code>", c))

    lines = [ln for ln in md.splitlines() if ln.strip().startswith("|")]
    if len(lines) < 2:
        raise ValueError("no markdown table in the text")
    return Table(cells(lines[0]), [[inline(c) for c in cells(ln)] for ln in lines[2:]], **kw)


def _mark(ctx: dict) -> Html:
    token = ctx["token"] if ctx["token"].strip() else ctx["token"].replace("\n", "↵").replace(" ", "␣")
    return Html(f"…{html.escape(ctx['left'])}<mark>{html.escape(token)}</mark>{html.escape(ctx['right'])}…")


def contexts_table(neurons: Sequence[Mapping], title: str = "", **kw) -> Table:
    """`evals.neurons.top_activating_contexts` as a table: a neuron per row, its top contexts with the
    activating token highlighted (the Markdown version broke where a token was glued to a word)."""
    rows = [[n["neuron"], n["max_activation"], Html("<br>".join(_mark(c) for c in n["contexts"]))] for n in neurons]
    return Table(["neuron", "max act.", "top contexts (activating token highlighted)"], rows, title=title, **kw)


def collapse_repeats(text: str, max_words: int = 80) -> str:
    """A completion made readable: a sentence repeated back to back is kept once with a count, and the
    rest is cut at a word after `max_words` words with the number left out."""
    out: list[list] = []
    for s in re.split(r"(?<=[.!?])\s+", text.strip()):
        if out and s == out[-1][0]:
            out[-1][1] += 1
        else:
            out.append([s, 1])
    text = " ".join(s if n == 1 else f"{s} [×{n}]" for s, n in out)
    words = text.split()
    return text if len(words) <= max_words else " ".join(words[:max_words]) + f" … [+{len(words) - max_words} words]"


def completions_table(items: Sequence, n_prompts: int = 3, max_words: int = 80, **kw) -> Table:
    """The first `n_prompts` beginnings, each with every model's first completion (`evals.grades.Completion`)."""
    by_prompt: dict[str, dict[str, object]] = {}
    for c in items:
        by_prompt.setdefault(c.prompt_id, {}).setdefault(c.model, c)  # the first sample of each model
    rows = []
    for group in list(by_prompt.values())[:n_prompts]:
        for i, c in enumerate(group.values()):
            beginning = ("…" + c.beginning[-200:] if len(c.beginning) > 200 else c.beginning) if i == 0 else "″"
            rows.append([c.model, beginning, collapse_repeats(c.completion, max_words)])
    note = f"first completion of each model; repeated sentences counted [×n], cut after {max_words} words"
    return Table(["model", "beginning", "completion"], rows, max_rows=kw.pop("max_rows", len(rows)), note=note, **kw)
