"""The paper's Section 7 for MLP neurons: which tokens make a neuron fire, and whether neurons have roles.

The paper lists the tokens that most activate a neuron and finds neurons with a role (e.g. one that fires
on the protagonist's name). `top_activating_contexts` shows the top contexts of a neuron (one per story, so
a name repeated in one story cannot fill the list); `neuron_selectivity` scores every neuron of a layer by
how much its top-k activating tokens agree, by word and by word class (`evals.interpret.word_class`), for
the trained model, the same architecture at random initialisation (`random_like`) and chance (k random
tokens). A neuron "has a role" when at least DOMINANT of its top tokens share one class other than the
catch-all "other"; a role neuron can agree on the class without agreeing on the word (different names from
different stories). `selectivity_table` and `contexts_markdown` print the results.

Kept apart from the attention heads (`evals.interpret`, whose `StoryTokens` and hooks it reuses) because
it scans activations, not attention maps, and caches one scan per model for both entry points.

Limits: storyteller text is templated, so some neurons fire on a template's fixed spot ("The moral of the
story"), which raises word agreement more than it would on real TinyStories; a neuron's top contexts are
its maxima and say nothing about the rest of its range.
"""

from __future__ import annotations

import html
import weakref
from collections import Counter
from collections.abc import Sequence

import numpy as np
import torch

from tinystories_lib.evals.interpret import DOMINANT, ROLES, StoryTokens, _one_thread, _run_until, prepare
from tinystories_lib.lm.model import GPTNeo
from tinystories_lib.lm.tokenizer import Codec
from tinystories_lib.stories.records import Story

# ---------------------------------------------------------------- neurons


@torch.no_grad()
def mlp_activations(model: GPTNeo, ids, layer: int) -> torch.Tensor:
    """(T, intermediate): the MLP hidden units of `layer` after GELU (the input of c_proj)."""
    return _run_until(model, ids, [model.transformer.h[layer].mlp.c_proj])[0][0].float().cpu()


# Per model, story maxima of every layer, keyed by the stories and the parameters' version counters
# (which change on any in-place update), so the contexts and the selectivity of a model share one scan.
_SCANS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@torch.no_grad()
def _story_maxima(model: GPTNeo, tokens: list[StoryTokens], layer: int) -> tuple[np.ndarray, np.ndarray]:
    """Per story and neuron of `layer`, the largest activation and its position. The start token is left
    out: it is the same in every story, so it would say nothing about the story."""
    key = (tuple(hash(tuple(st.ids)) for st in tokens), tuple(p._version for p in model.parameters()))
    cached = _SCANS.setdefault(model, {})
    if key not in cached:
        mlps = [b.mlp.c_proj for b in model.transformer.h]
        per_layer = [([], []) for _ in mlps]
        with _one_thread():
            for st in tokens:
                for (vals, pos), act in zip(per_layer, _run_until(model, st.ids, mlps)):
                    v, p = act[0, 1:].float().max(0)
                    vals.append(v.cpu().numpy())
                    pos.append(p.cpu().numpy() + 1)
        cached.clear()  # one story set per model is plenty; keeps memory flat
        cached[key] = [(np.stack(v), np.stack(p)) for v, p in per_layer]
    return cached[key][layer]


def _context(st: StoryTokens, p: int, before: int, after: int) -> dict:
    def clean(pieces):
        return "".join(pieces).replace("\n", " / ")

    return {"story": st.story_id, "position": p, "token": st.pieces[p], "word": st.words[p],
            "word_class": st.classes[p], "left": clean(st.pieces[max(1, p - before):p]),
            "right": clean(st.pieces[p + 1:p + 1 + after])}


def _top_stories(vals: np.ndarray, neuron: int, k: int) -> np.ndarray:
    # stable sort on the negated value: ties keep story order, so the answer is deterministic
    return np.argsort(-vals[:, neuron], kind="stable")[:k]


def top_activating_contexts(model: GPTNeo, codec: Codec, stories: Sequence[Story | StoryTokens], layer: int,
                            n_neurons: int = 8, k: int = 5, before: int = 8, after: int = 3) -> list[dict]:
    """The `n_neurons` neurons of `layer` with the highest activation anywhere in the stories, each with
    its top `k` contexts (the best position of each of the k best stories): {neuron, max_activation,
    contexts: [{story, position, activation, token, word, word_class, left, right}]}."""
    tokens = prepare(codec, stories, model.cfg.context)
    vals, pos = _story_maxima(model, tokens, layer)
    best = np.argsort(-vals.max(0), kind="stable")[:n_neurons]
    out = []
    for n in best:
        ctxs = []
        for s in _top_stories(vals, n, k):
            ctxs.append({**_context(tokens[s], int(pos[s, n]), before, after), "activation": float(vals[s, n])})
        out.append({"neuron": int(n), "max_activation": float(vals[:, n].max()), "contexts": ctxs})
    return out


def format_context(ctx: dict, mark: str = "[{}]") -> str:
    return f"…{ctx['left']}{mark.format(ctx['token'])}{ctx['right']}…"


def contexts_markdown(neurons: list[dict], title: str = "") -> str:
    """Markdown table: a neuron per row, its top contexts with the activating token in bold. The bold is
    HTML, not `**`: Markdown's emphasis breaks on a token glued to a word ("the**`dog`**s")."""
    lines = [f"**{html.escape(title)}**\n" if title else "",
             "| neuron | max act. | top contexts (activating token in bold) |", "|---:|---:|---|"]
    for nr in neurons:
        ctx = "<br>".join(
            "…" + html.escape(c["left"]) + f"<b><code>{html.escape(c['token'])}</code></b>" + html.escape(c["right"]) + "…"
            for c in nr["contexts"]).replace("|", "&#124;")
        lines.append(f"| {nr['neuron']} | {nr['max_activation']:.2f} | {ctx} |")
    return "\n".join(lines)


def random_like(model: GPTNeo, seed: int = 0) -> GPTNeo:
    """The same architecture at its initialisation: the baseline that shows what training added."""
    with torch.random.fork_rng(devices=[]):  # leave the caller's random state alone
        torch.manual_seed(seed)
        return GPTNeo(model.cfg).eval()


def _agreement(words: list[str], classes: list[str], dominant: float) -> dict:
    k = len(words)
    (top_class, n_class), = Counter(classes).most_common(1)
    return {"word_agreement": Counter(words).most_common(1)[0][1] / k, "class_agreement": n_class / k,
            "dominant_class": top_class if n_class / k >= dominant else None}


def _summary(per_neuron: list[dict]) -> dict:
    dom = Counter(r["dominant_class"] for r in per_neuron if r["dominant_class"] in ROLES)
    n = len(per_neuron)
    return {"neurons": n,
            "word_agreement": float(np.mean([r["word_agreement"] for r in per_neuron])),
            "class_agreement": float(np.mean([r["class_agreement"] for r in per_neuron])),
            "with_role": sum(dom.values()) / n,
            "roles": {c: dom[c] / n for c in ROLES}}


def _neuron_agreements(model: GPTNeo, tokens: list[StoryTokens], layer: int, k: int, dominant: float) -> list[dict]:
    vals, pos = _story_maxima(model, tokens, layer)
    out = []
    for n in range(vals.shape[1]):
        tops = [(tokens[s], int(pos[s, n])) for s in _top_stories(vals, n, k)]
        out.append(_agreement([st.words[p] or st.pieces[p].strip() for st, p in tops],
                              [st.classes[p] for st, p in tops], dominant))
    return out


def _chance_agreements(tokens: list[StoryTokens], k: int, dominant: float, n: int, seed: int) -> list[dict]:
    """What k random tokens from k random stories agree on: the floor any neuron is compared with."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        picks = [tokens[s] for s in rng.choice(len(tokens), size=min(k, len(tokens)), replace=False)]
        tops = [(st, int(rng.integers(1, len(st.ids)))) for st in picks]
        out.append(_agreement([st.words[p] or st.pieces[p].strip() for st, p in tops],
                              [st.classes[p] for st, p in tops], dominant))
    return out


def neuron_selectivity(model: GPTNeo, codec: Codec, stories: Sequence[Story | StoryTokens], layer: int,
                       k: int = 20, dominant: float = DOMINANT, seed: int = 0,
                       baseline: GPTNeo | None = None) -> dict[str, dict]:
    """How much the top-k activating tokens of every neuron of `layer` agree, for the trained model,
    the same architecture at random initialisation, and chance (random tokens). Each entry: neurons,
    word_agreement and class_agreement (mean share of the modal word / class), with_role (share of
    neurons whose top tokens are >= `dominant` one class other than "other") and roles (that share per
    class).
    `baseline` is the random-init model (`random_like(model, seed)` when None)."""
    tokens = prepare(codec, stories, model.cfg.context)
    if len(tokens) < 2:
        raise ValueError("neuron_selectivity needs at least two stories")
    k = min(k, len(tokens))
    trained = _neuron_agreements(model, tokens, layer, k, dominant)
    baseline = baseline if baseline is not None else random_like(model, seed)
    untrained = _neuron_agreements(baseline, tokens, layer, k, dominant)
    chance = _chance_agreements(tokens, k, dominant, len(trained), seed)
    return {"trained": _summary(trained), "random init": _summary(untrained), "chance": _summary(chance)}


def selectivity_table(results: dict[str, dict[str, dict]]) -> str:
    """Markdown: per layer and model, the agreement scores and the neurons with a role."""
    lines = ["| layer | model | neurons | word agreement | class agreement | neurons with a role | top roles |",
             "|---|---|---:|---:|---:|---:|---|"]
    for layer, res in results.items():
        for kind, s in res.items():
            roles = ", ".join(f"{c} {v:.0%}" for c, v in sorted(s["roles"].items(), key=lambda x: -x[1]) if v)
            lines.append(f"| {layer} | {kind} | {s['neurons']} | {s['word_agreement']:.2f} | "
                         f"{s['class_agreement']:.2f} | {s['with_role']:.0%} | {roles or '-'} |")
    return "\n".join(lines)
