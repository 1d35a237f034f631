"""The paper's Section 7 (interpretability) for attention heads, measured rather than only pictured.

Attention heads. The paper shows attention maps of small models and finds two kinds of heads: ones that
attend by distance (to the last few tokens) and ones that attend by meaning (to the names and the object
a story is about). Here every head gets numbers pooled over the queries of validation stories (`head_scores`):
  - `distance_score`: attention mass on the last `recent` tokens (the query token included), over queries
    at positions >= `recent` (earlier ones have nothing else to look at); uniform attention gives ~0.06
    on a 256-token story;
  - `entity_score`: attention mass on *distant* entity tokens (words of character names, the pet's name and
    the story object from `Story.facts`, or read from the text of a story without them; at least `recent`
    tokens back), over the queries right before an
    entity word, where recalling who or what the story is about is what predicts the next token;
    `entity_chance` is what uniform attention over the visible keys would give there, and `entity_lift` =
    score / chance. Near and far keys are disjoint, so attending to the previous token never counts here;
  - `start_score`: mass on the start token (<|endoftext|>), where many heads park attention they do not use.
Verdicts (`classify`): "distance" when distance_score >= DISTANCE_MIN (30% of the mass on 3 tokens, about
5x the uniform share), "entity" when entity_lift >= ENTITY_LIFT_MIN (entities get twice their uniform
share), "mixed" when both hold, "other" when neither (diffuse heads, start-token heads). The thresholds are
round numbers picked by judgment (there are no labelled heads to fit them on); the tables show the raw
numbers beside the verdict.

Stories as tokens. `story_tokens` / `prepare` cut a story to the model's context and label each token
with the word it belongs to (`stories.words`), its word class (name, pronoun, story noun, function word,
punctuation, other) and whether it names an entity. The MLP-neuron analysis (`evals.neurons`) reads the
same labels, so one tokenisation serves both.

Limits: entity tokens and word classes come from storyteller facts where a story has them, and otherwise
from facts read from its text (`entities.text_facts`: the names it repeats, the people and animals it
mentions, its most mentioned object), rules rather than a tagger; classes are word lists. A head with no
entity query in view gets NaN entity numbers, never a hidden distance score: its verdict then rests on
distance alone.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from tinystories_lib.evals.entities import known_words_of, text_facts
from tinystories_lib.lm.model import GPTNeo
from tinystories_lib.lm.tokenizer import Codec
from tinystories_lib.stories.records import Story
from tinystories_lib.stories.words import base_word, word_spans, words

RECENT = 3  # tokens counted as "recent" by the distance score (the query itself included)
DISTANCE_MIN = 0.3  # a distance head puts at least 30% of its mass on the last RECENT tokens
ENTITY_LIFT_MIN = 2.0  # an entity head gives distant entity tokens at least twice their uniform share
DOMINANT = 0.6  # a neuron "has a role" when at least this share of its top contexts has one word class

PRONOUNS = frozenset("he she it they him her them his hers its their theirs i me my we us our you your".split())
FUNCTION_WORDS = frozenset(
    "the a an and or but so to of in on at with for from by up into out over under then when than that this "
    "there was were is are be been am do did does had has have not no very too all as if just".split())
CLASSES = ("name", "pronoun", "story noun", "function word", "punctuation", "other")
ROLES = CLASSES[:-1]  # "other" (any word outside the lists) is a catch-all, not a role


# ---------------------------------------------------------------- attention


@contextlib.contextmanager
def _eval_mode(model: torch.nn.Module):
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


@contextlib.contextmanager
def _one_thread():
    """Run the per-story passes on one CPU thread: they are too small to split, and on a shared or busy CPU
    handing each small op between threads costs far more than the op (see BENCHMARKS.md)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _as_batch(ids) -> torch.Tensor:
    idx = torch.as_tensor(ids, dtype=torch.long)
    return idx[None] if idx.dim() == 1 else idx


def allowed_keys(T: int, local: bool, window: int) -> torch.Tensor:
    """(T, T) boolean: which keys each query may see (causal; local layers also within the window)."""
    i = torch.arange(T)
    d = i[:, None] - i[None, :]
    return (d >= 0) & (d < window) if local else d >= 0


class _Enough(Exception):
    """Raised by a hook once it has what it needs, so the rest of the forward pass is skipped."""


def _run_until(model: GPTNeo, ids, modules: list[torch.nn.Module]) -> list[torch.Tensor]:
    """The first positional input of each module in `modules` (in forward order) for one sequence."""
    got = []

    def grab(_m, args):
        got.append(args[0])
        if len(got) == len(modules):
            raise _Enough

    hooks = [m.register_forward_pre_hook(grab) for m in modules]
    try:
        with _eval_mode(model):
            model(_as_batch(ids).to(next(model.parameters()).device))
    except _Enough:
        pass
    finally:
        for h in hooks:
            h.remove()
    return got


@torch.no_grad()
def attention_maps(model: GPTNeo, ids) -> torch.Tensor:
    """Attention probabilities of every head for one sequence: (layers, heads, T, T), rows summing to 1.

    The model runs unchanged; a pre-hook catches the (layer-normed) input of each attention module, and
    q/k are recomputed from it the way SelfAttention does: no 1/sqrt(d) scaling, causal mask, and the
    window on local layers."""
    if _as_batch(ids).size(0) != 1:
        raise ValueError("attention_maps takes one sequence")
    attns = [b.attn.attention for b in model.transformer.h]
    return torch.stack([_head_probs(a, x)[0] for a, x in zip(attns, _run_until(model, ids, attns))])


def _head_probs(attn, x: torch.Tensor) -> torch.Tensor:
    B, T, C = x.shape
    H = attn.heads
    q = attn.q_proj(x).view(B, T, H, C // H).transpose(1, 2).float()
    k = attn.k_proj(x).view(B, T, H, C // H).transpose(1, 2).float()
    scores = q @ k.transpose(-1, -2)  # GPT-Neo: unscaled
    mask = allowed_keys(T, attn.local, attn.window).to(x.device)
    return scores.masked_fill(~mask, float("-inf")).softmax(-1).cpu()


# ---------------------------------------------------------------- stories as tokens


@dataclass
class StoryTokens:
    """A story as the model sees it (start token first, cut to the context) with what each token is."""

    story_id: str
    ids: list[int]
    pieces: list[str]  # the text of each token
    words: list[str]  # the lowercased word a token belongs to ("" for the start token, spaces, punctuation;
    # a possessive's "'s" is a word of its own, so "Tom" in "Tom's" is still the name)
    classes: list[str]  # word class of each token ("start" for the start token)
    entity: np.ndarray  # bool: the token is part of a character name, the pet's name or the story object

    @property
    def text(self) -> str:
        """The story text the tokens cover (without the start token)."""
        return "".join(self.pieces[1:])


def token_pieces(codec: Codec, ids: list[int]) -> list[str]:
    """The text of each token; decoded one by one, or by prefixes where a character spans tokens."""
    pieces = [codec.decode([i]) for i in ids]
    if "".join(pieces) == codec.decode(ids):
        return pieces
    out, prev = [], ""
    for n in range(1, len(ids) + 1):
        text = codec.decode(ids[:n])
        out.append(text[len(prev):])
        prev = text
    return out


def _token_words(pieces: list[str]) -> list[str]:
    """The (lowercased) word each token overlaps, "" when it holds no letters. A possessive "'s" counts
    as a word of its own: the BPE gives it its own token, and the name before it stays the name."""
    text = "".join(pieces)
    word_of_char = [-1] * len(text)
    found: list[str] = []
    for start, end, word in word_spans(text):
        base = base_word(word)
        for a, b, w in ((start, start + len(base), base), (start + len(base), end, word[len(base):])):
            if a < b:
                word_of_char[a:b] = [len(found)] * (b - a)
                found.append(w)
    out, pos = [], 0
    for p in pieces:
        hit = next((w for w in word_of_char[pos:pos + len(p)] if w >= 0), -1)
        out.append(found[hit] if hit >= 0 else "")
        pos += len(p)
    return out


def _fact_words(phrases) -> set[str]:
    return {base_word(w) for p in phrases if p for w in words(str(p))} - FUNCTION_WORDS


def _facts(story: Story, known_words: set[str] | None = None) -> dict:
    """The story's storyteller facts, or facts read from its text (`entities.text_facts`)."""
    return story.facts or text_facts(story.text, known_words)


def entity_words(story: Story, known_words: set[str] | None = None, facts: dict | None = None) -> set[str]:
    """Words naming the story's entities: every character (names, "grandpa", "dog"), the pet's name and
    the object; from `facts`, by default the story's own or those read from its text."""
    f = facts if facts is not None else _facts(story, known_words)
    return _fact_words([c.get("name") for c in f.get("characters", [])] + [f.get("animal_name"), f.get("object")])


def _class_words(story: Story, known_words: set[str] | None = None,
                 facts: dict | None = None) -> tuple[set[str], set[str]]:
    """(proper names, other story nouns) of a story, from its facts (see `entity_words`)."""
    f = facts if facts is not None else _facts(story, known_words)
    chars = f.get("characters", [])
    names = _fact_words([c.get("name") for c in chars if c.get("role") in ("hero", "friend", "visitor")]
                        + [f.get("animal_name")])
    nouns = _fact_words([c.get("name") for c in chars if c.get("role") not in ("hero", "friend", "visitor")]
                        + [f.get(k) for k in ("object", "place", "animal", "food")]) - names
    return names, nouns


def word_class(word: str, names: set[str], nouns: set[str]) -> str:
    if not word:
        return "punctuation"
    if word in names:
        return "name"
    if word in PRONOUNS:
        return "pronoun"
    if word in nouns:
        return "story noun"
    return "function word" if word in FUNCTION_WORDS else "other"


def story_tokens(codec: Codec, story: Story, max_len: int, known_words: set[str] | None = None) -> StoryTokens:
    """`story` cut to `max_len` tokens with the start token, each token labelled (see `StoryTokens`);
    `known_words` helps read names from a story without facts (`entities.text_entities`)."""
    ids = codec.encode(story.text)[: max_len - 1]
    pieces = token_pieces(codec, ids)
    token_words = _token_words(pieces)
    facts = _facts(story, known_words)
    names, nouns = _class_words(story, facts=facts)
    ents = entity_words(story, facts=facts)
    return StoryTokens(story.id, [codec.eot_id, *ids], ["<|endoftext|>", *pieces], ["", *token_words],
                       ["start", *(word_class(w, names, nouns) for w in token_words)],
                       np.array([False, *(w in ents for w in token_words)]))


def prepare(codec: Codec, stories: Sequence[Story | StoryTokens], max_len: int) -> list[StoryTokens]:
    """Stories as `StoryTokens` (already prepared ones pass through, cut to `max_len`), so several models
    can share the tokenisation work. Stories without facts are read with the common words of all of them
    (`entities.known_words_of`), which tell sentence openers from names."""
    plain = [s.text for s in stories if isinstance(s, Story) and not s.facts]
    known = known_words_of(plain) if plain else None
    out = []
    for s in stories:
        if isinstance(s, StoryTokens):
            n = min(len(s.ids), max_len)
            s = StoryTokens(s.story_id, s.ids[:n], s.pieces[:n], s.words[:n], s.classes[:n], s.entity[:n])
        else:
            s = story_tokens(codec, s, max_len, known)
        if len(s.ids) > 1:
            out.append(s)
    return out


# ---------------------------------------------------------------- head scores


def _entity_queries(entity: np.ndarray) -> np.ndarray:
    """Positions right before an entity word starts: where recalling a name or the object pays."""
    nxt = np.zeros_like(entity)
    nxt[:-1] = entity[1:] & ~entity[:-1]
    return np.flatnonzero(nxt)


class _HeadTotals:
    """Sums over queries, per head, from which the scores are averages."""

    def __init__(self, model: GPTNeo, recent: int):
        L, H = model.cfg.layers, model.cfg.heads
        self.window = model.cfg.window
        self.local = [b.attn.attention.local for b in model.transformer.h]
        self.recent = recent
        self.dist, self.start, self.ent = np.zeros((L, H)), np.zeros((L, H)), np.zeros((L, H))
        self.chance, self.n_ent, self.n_dist = np.zeros(L), np.zeros(L), 0

    def add(self, maps: torch.Tensor, entity: np.ndarray) -> None:
        """One story: `maps` (L, H, T, T), `entity` (T,) marks entity tokens."""
        T, r = maps.size(-1), self.recent
        if T <= r:
            return
        for o in range(r):  # the o-th diagonal below the main one: attention to the token o back
            self.dist += maps.diagonal(-o, dim1=-2, dim2=-1)[..., r - o:].sum(-1).double().numpy()
        self.start += maps[..., r:, 0].sum(-1).double().numpy()
        self.n_dist += T - r
        qs = torch.as_tensor(_entity_queries(entity))
        if len(qs) == 0:
            return
        back = qs[:, None] - torch.arange(T)[None, :]  # (queries, keys): how far back each key is
        for layer, local in enumerate(self.local):
            seen = (back >= 0) & (back < self.window) if local else back >= 0
            far_ent = seen & (back >= r) & torch.as_tensor(entity)[None, :]
            q = far_ent.any(-1)
            if q.any():
                self.ent[layer] += (maps[layer][:, qs[q]] * far_ent[q]).sum((-1, -2)).double().numpy()
                self.chance[layer] += (far_ent[q].sum(-1) / seen[q].sum(-1)).sum().item()
                self.n_ent[layer] += int(q.sum())

    def rows(self, distance_min: float, entity_lift_min: float) -> list[dict]:
        with np.errstate(invalid="ignore", divide="ignore"):  # no entity query in view: NaN, not an error
            ent = self.ent / self.n_ent[:, None]
            chance = self.chance / self.n_ent
        n = max(1, self.n_dist)
        rows = []
        for (layer, h), e in np.ndenumerate(ent):
            row = {"layer": layer, "head": h, "attention": "local" if self.local[layer] else "global",
                   "distance_score": float(self.dist[layer, h] / n), "entity_score": float(e),
                   "entity_chance": float(chance[layer]), "entity_lift": float(e / chance[layer]),
                   "start_score": float(self.start[layer, h] / n)}
            row["verdict"] = classify(row, distance_min, entity_lift_min)
            rows.append(row)
        return rows


def head_scores(model: GPTNeo, codec: Codec, stories: Sequence[Story | StoryTokens], recent: int = RECENT,
                distance_min: float = DISTANCE_MIN, entity_lift_min: float = ENTITY_LIFT_MIN) -> list[dict]:
    """Per head: distance, entity and start-token scores pooled over the stories' queries (see the module
    docstring), and its verdict. Entity numbers are NaN when no story has an entity query in the head's
    view; the distance score and a "distance" verdict stand regardless."""
    totals = _HeadTotals(model, recent)
    with _one_thread():
        for st in prepare(codec, stories, model.cfg.context):
            totals.add(attention_maps(model, st.ids), st.entity)
    return totals.rows(distance_min, entity_lift_min)


def classify(score: dict, distance_min: float = DISTANCE_MIN, entity_lift_min: float = ENTITY_LIFT_MIN) -> str:
    """A head's verdict: distance, entity, mixed (both criteria) or other (neither); see the module docstring."""
    distance = score["distance_score"] >= distance_min
    entity = bool(np.isfinite(score["entity_lift"]) and score["entity_lift"] >= entity_lift_min)
    if distance and entity:
        return "mixed"
    return "distance" if distance else "entity" if entity else "other"


def head_table(scores: dict[str, list[dict]]) -> str:
    """Markdown: one row per head of every model, with its verdict."""
    lines = ["| model | layer | head | attention | distance | entity (lift) | start token | verdict |",
             "|---|---:|---:|---|---:|---:|---:|---|"]
    for label, rows in scores.items():
        for r in rows:
            entity = (f"{r['entity_score']:.2f} ({r['entity_lift']:.1f}x)" if np.isfinite(r["entity_lift"])
                      else "– (no entity query)")
            lines.append(f"| {label} | {r['layer']} | {r['head']} | {r['attention']} | {r['distance_score']:.2f} | "
                         f"{entity} | {r['start_score']:.2f} | {r['verdict']} |")
    return "\n".join(lines)


def verdict_counts(scores: dict[str, list[dict]]) -> str:
    """One line per model: how many heads got each verdict."""
    out = []
    for label, rows in scores.items():
        c = Counter(r["verdict"] for r in rows)
        out.append(f"{label}: " + ", ".join(f"{c[v]} {v}" for v in ("distance", "entity", "mixed", "other")))
    return "\n".join(out)


def verdicts(scores: dict[str, list[dict]]) -> dict[str, dict[tuple[int, int], str]]:
    """label -> {(layer, head): verdict}, for figure titles."""
    return {label: {(r["layer"], r["head"]): r["verdict"] for r in rows} for label, rows in scores.items()}


def example_story(tokens: Sequence[StoryTokens]) -> StoryTokens:
    """The first story that names an entity (the attention maps are drawn on it)."""
    return next((st for st in tokens if st.entity.any()), tokens[0])


def shallow_and_deep(results: Sequence) -> tuple:
    """The 1-layer (fewest layers) and the deepest model of a sweep, the widest of each depth."""
    def widest(layers):
        return max((r for r in results if r.layers == layers), key=lambda r: r.hidden)

    return widest(min(r.layers for r in results)), widest(max(r.layers for r in results))
