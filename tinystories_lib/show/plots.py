"""Every figure the notebooks write, in one style. Each is saved with a caption that names the paper's
figure it reproduces, and recorded in `figures/<profile>/manifest.json`; a figure with nothing plotted is
neither written nor recorded (`save` says why instead), so the manifest never claims an empty figure."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

from tinystories_lib.runs import atomic_write_json, data_label

if not matplotlib.get_backend().lower().startswith(("module://", "nbagg", "widget", "ipympl")):
    matplotlib.use("Agg")  # headless (papermill, CI) unless a notebook backend is active

STYLE = {
    "figure.dpi": 110,
    "savefig.dpi": 130,
    "savefig.bbox": "tight",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "font.size": 10,
    "axes.titlesize": 11,
}
plt.rcParams.update(STYLE)


class SavedFigure(str):
    """The path of a saved figure; a notebook shows it as a line saying where it went and what it is."""

    caption = ""

    def _repr_markdown_(self) -> str:
        return f"*Saved `{self}`*: {self.caption}"

    def __repr__(self) -> str:
        return f"saved {str(self)}: {self.caption}"


class NotSaved:
    """What `save` returns for a figure with nothing plotted: false in a test, and in a notebook one line
    saying which figure was left out and why."""

    def __init__(self, name: str, why: str):
        self.name, self.why = name, why

    def __bool__(self) -> bool:
        return False

    def __str__(self) -> str:
        return f"not saved {self.name}.png: nothing to plot ({self.why})"

    __repr__ = __str__

    def _repr_markdown_(self) -> str:
        return f"*Not saved `{self.name}.png`*: nothing to plot ({self.why})."


def _finite_rows(xy) -> bool:
    """Whether an (n, 2) array of points has a point with both coordinates finite (masked ones are not)."""
    a = np.ma.filled(np.ma.asarray(xy, dtype=float), np.nan).reshape(-1, 2)
    return bool(np.isfinite(a).all(axis=1).any())


def _plotted(ax) -> bool:
    """Whether `ax` shows data: a line in data coordinates (not an axhline/axvline reference line), a
    scatter point, segment or mesh value, a bar or patch, or an image cell, with finite coordinates."""
    from matplotlib.collections import LineCollection, PathCollection

    if any(line.get_transform() is ax.transData and _finite_rows(line.get_xydata()) for line in ax.get_lines()):
        return True
    for coll in ax.collections:
        if isinstance(coll, PathCollection):
            pts = coll.get_offsets()
        elif isinstance(coll, LineCollection):
            pts = np.concatenate([np.asarray(seg, dtype=float).reshape(-1, 2) for seg in coll.get_segments()] or
                                 [np.zeros((0, 2))])
        elif coll.get_array() is not None:
            if np.ma.masked_invalid(np.ma.asarray(coll.get_array(), dtype=float)).count():
                return True
            continue
        else:
            pts = np.concatenate([p.vertices for p in coll.get_paths()] or [np.zeros((0, 2))])
        if _finite_rows(pts):
            return True
    if any(_finite_rows(patch.get_verts()) for patch in ax.patches):
        return True
    return any(np.ma.masked_invalid(np.ma.asarray(im.get_array(), dtype=float)).count() for im in ax.images)


def has_data(fig) -> bool:
    """Whether any visible axes of `fig` other than a colorbar shows data (see `_plotted`)."""
    return fig is not None and any(
        _plotted(ax) for ax in fig.axes
        if ax.get_visible() and ax.get_label() != "<colorbar>" and getattr(ax, "_colorbar", None) is None)


def save(run, fig, name: str, caption: str, reproduces: str, *, data,
         why: str = "the analysis gave no data") -> SavedFigure | NotSaved:
    """Write `fig` to figures/<profile>/<name>.png, its data named in a footer, and the numbers it was drawn
    from (`data`, anything JSON can hold: rows, grids, per-model lists) to <name>.json beside it, so its
    shape can be checked (`evals.claims`) and re-plotted; both are listed in the manifest with the caption.
    A figure with nothing plotted (`has_data`), or `fig` None, is not written: an earlier file of that
    name, its data and its manifest entry are removed, the figure is closed (a notebook does not show it
    either), and the `NotSaved` returned says so with `why`."""
    if not has_data(fig):
        if fig is not None:
            plt.close(fig)
        (run.figures / f"{name}.png").unlink(missing_ok=True)
        (run.figures / f"{name}.json").unlink(missing_ok=True)
        run.record_figure(name, None, caption, reproduces)
        return NotSaved(name, why)
    # The data a figure was made from is on the figure itself: a stand-in's figure never passes for real.
    # Below the axes' labels: the tight bounding box of the saved file grows to hold it.
    fig.text(0.995, -0.01, f"data: {data_label(run.params)}", ha="right", va="top", fontsize=6.5, color="0.35")
    run.figures.mkdir(parents=True, exist_ok=True)
    path = run.figures / f"{name}.png"
    tmp = run.figures / f".{name}.tmp.png"
    fig.savefig(tmp)
    tmp.replace(path)
    data_path = run.figures / f"{name}.json"
    atomic_write_json(data_path, {"figure": name, "reproduces": reproduces, "data": data_label(run.params),
                                  "values": _plain(data)})
    run.record_figure(name, path, caption, reproduces, data_file=data_path)
    saved = SavedFigure(path)
    saved.caption = f"{caption} (reproduces: {reproduces})"
    return saved


def _plain(obj):
    """`obj` with numpy scalars and arrays as Python numbers and lists, tuples as lists, NaN as None (JSON
    has no NaN), so a figure's data file reads back the same in any language."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if hasattr(obj, "detach"):  # a torch tensor
        obj = obj.detach().cpu().numpy()
    if isinstance(obj, np.ndarray):
        return _plain(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _plain(dataclasses.asdict(obj))
    if isinstance(obj, Path):
        return str(obj)
    return obj


def loss_curves(curves: dict[str, list[dict]], title: str = "Training and validation loss"):
    """Train (thin) and validation (markers) loss against tokens seen, one colour per model."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, (label, rows) in enumerate(curves.items()):
        color = f"C{i % 10}"
        tr = [(r["tokens"], r["train_loss"]) for r in rows if "train_loss" in r]
        va = [(r["tokens"], r["val_loss"]) for r in rows if "val_loss" in r]
        if tr:
            ax.plot(*zip(*tr), color=color, alpha=0.45, lw=1, label=f"{label} train")
        if va:
            ax.plot(*zip(*va), color=color, marker="o", ms=3.5, lw=1.6, label=f"{label} validation")
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("cross-entropy loss (nats/token)")
    ax.set_title(title)
    ax.legend(fontsize=8, ncol=2 if len(curves) > 3 else 1)
    # Models that share a tokenizer share one nats-to-bits-per-byte factor: then the right axis reads
    # the same curves in bits per byte of validation text, comparable with other runs and published models.
    factors = {round(r["val_bpb"] / r["val_loss"], 9) for rows in curves.values() for r in rows
               if r.get("val_bpb") and r.get("val_loss")}
    if len(factors) == 1:
        k = factors.pop()
        ax.secondary_yaxis("right", functions=(lambda x: x * k, lambda y: y / k)).set_ylabel(
            "validation bits per byte")
    return fig


def _grid(ax, values: np.ndarray, rows: Sequence, cols: Sequence, row_label: str, col_label: str, fmt: str,
          cmap: str):
    """One annotated grid: a cell per (row, col) model with its value printed in a readable colour."""
    values = np.asarray(values, dtype=float)
    im = ax.imshow(values, cmap=cmap, aspect="auto", origin="lower")
    ax.set_xticks(range(len(cols)), [str(c) for c in cols])
    ax.set_yticks(range(len(rows)), [str(r) for r in rows])
    ax.set_xlabel(col_label)
    ax.set_ylabel(row_label)
    ax.grid(False)
    finite = values[np.isfinite(values)]
    mid = (finite.min() + finite.max()) / 2 if finite.size else 0
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            v = values[i, j]
            dark = (v > mid) if cmap.endswith("_r") else (v < mid)
            ax.text(j, i, fmt.format(v) if np.isfinite(v) else "–", ha="center", va="center", fontsize=9,
                    color="white" if dark else "black")
    return im


def heatmap(values: np.ndarray, rows: Sequence, cols: Sequence, title: str, row_label: str, col_label: str,
            cbar_label: str, fmt: str = "{:.2f}", cmap: str = "viridis_r"):
    """A grid like the paper's Figure 4: one cell per (rows x cols) model, the value printed in it."""
    fig, ax = plt.subplots(figsize=(1.1 * len(cols) + 2.2, 0.8 * len(rows) + 1.6))
    im = _grid(ax, values, rows, cols, row_label, col_label, fmt, cmap)
    fig.colorbar(im, ax=ax, label=cbar_label)
    ax.set_title(title)
    return fig


def heatmaps(grids: dict[str, np.ndarray], rows: Sequence, cols: Sequence, title: str, row_label: str,
             col_label: str, fmt: str = "{:.1f}", cmap: str = "viridis"):
    """One heatmap panel per dimension (the paper's Figure 4 shows one per grade), a shared layout."""
    n = len(grids)
    fig, axes = plt.subplots(1, n, figsize=(0.9 * len(cols) * n + 1.5 * n, 0.75 * len(rows) + 1.8), squeeze=False)
    for ax, (dim, values) in zip(axes[0], grids.items()):
        fig.colorbar(_grid(ax, values, rows, cols, row_label, col_label, fmt, cmap), ax=ax, fraction=0.046)
        ax.set_title(dim)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def grade_bars(table: list[dict], dimensions: Sequence[str], title: str, ylabel: str = "score (out of 10)"):
    """Grouped bars: one group per model, one bar per dimension, 95% confidence intervals as error bars.
    `table` rows: {"model", "dimension", "mean", "ci95", "n"}."""
    models = list(dict.fromkeys(r["model"] for r in table))
    width = 0.8 / max(1, len(dimensions))
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(models) + 2), 4.2))
    x = np.arange(len(models))
    for k, dim in enumerate(dimensions):
        rows = {r["model"]: r for r in table if r["dimension"] == dim}
        means = [rows[m]["mean"] if m in rows else np.nan for m in models]
        errs = [rows[m].get("ci95", 0) if m in rows else 0 for m in models]
        ax.bar(x + (k - (len(dimensions) - 1) / 2) * width, means, width, yerr=errs, capsize=2,
               label=dim, color=f"C{k}")
    ax.set_xticks(x, models, rotation=20, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 10.5)
    ax.set_title(title)
    ax.legend(fontsize=8, ncol=min(5, len(dimensions)), loc="upper left")
    return fig


def loss_vs_compute(curves: dict[str, list[tuple[float, float]]], title: str = "Validation loss against training compute"):
    """Each model's validation loss against the FLOPs spent so far, and the compute frontier: the lowest
    loss any model reached for a given budget (which model size is best depends on the budget)."""
    fig, ax = plt.subplots(figsize=(7, 4.4))
    points = []
    for i, (label, pts) in enumerate(curves.items()):
        if pts:
            ax.plot(*zip(*pts), marker="o", ms=3, lw=1.2, alpha=0.8, label=label, color=f"C{i % 10}")
            points += pts
    points.sort()
    frontier, best = [], float("inf")
    for flops, loss in points:
        if loss < best:
            best = loss
            frontier.append((flops, loss))
    if frontier:
        ax.step(*zip(*frontier), where="post", color="black", lw=2, ls="--", label="frontier")
    ax.set_xscale("log")
    ax.set_xlabel("training compute (FLOPs, 6N + attention per token)")
    ax.set_ylabel("validation loss (nats/token)")
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2)
    return fig


def probe_accuracy(rows: list[dict], title: str = "Exact context-tracking probes"):
    """Accuracy of each probe kind against model size (parameters), chance level dotted."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    kinds = list(dict.fromkeys(r["kind"] for r in rows))
    for i, kind in enumerate(kinds):
        # the grid as lines; the longer-trained main model as a star (it may share a size with a grid cell)
        grid_rows = [r for r in rows if r["kind"] == kind and not r["model"].startswith("main")]
        main_rows = [r for r in rows if r["kind"] == kind and r["model"].startswith("main")]
        color = "black" if kind == "overall" else f"C{i % 10}"
        if grid_rows:
            pts = sorted((r["params"], r["accuracy"]) for r in grid_rows)
            ax.plot(*zip(*pts), marker="o", ms=4, label=kind, color=color, lw=2.2 if kind == "overall" else 1.2)
        for r in main_rows:
            ax.plot(r["params"], r["accuracy"], marker="*", ms=11, color=color, ls="none",
                    label=None if grid_rows else kind)
        chance = next(r["chance"] for r in rows if r["kind"] == kind)
        ax.axhline(chance, color=color, ls=":", lw=0.8)
    ax.set_xscale("log")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("parameters")
    ax.set_ylabel("accuracy (answer ranked first)")
    ax.set_title(title + " (dotted: chance; star: main model)")
    ax.legend(fontsize=8)
    return fig


def heads_effect(rows: list[tuple[int, float]], shape: str):
    """Final validation loss against the number of attention heads at a fixed width and depth."""
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    heads, losses = zip(*sorted(rows))
    ax.plot(heads, losses, marker="o")
    ax.set_xscale("log", base=2)
    ax.set_xticks(heads, [str(h) for h in heads])
    ax.set_xlabel("attention heads")
    ax.set_ylabel("final validation loss (nats/token)")
    ax.set_title(f"Number of heads at fixed shape {shape}")
    return fig


def over_steps_grid(series: dict[str, dict[str, list[tuple[int, float]]]], title: str, ylabel: str = "score (0-10)"):
    """One panel per dimension, one line per model, against training step."""
    n = len(series)
    cols = min(n, 3)
    rows_n = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows_n, cols, figsize=(4.6 * cols, 3.4 * rows_n), squeeze=False)
    for ax, (dim, per_model) in zip(axes.flat, series.items()):
        for i, (label, pts) in enumerate(per_model.items()):
            ax.plot(*zip(*sorted(pts)), marker="o", ms=3, label=label, color=f"C{i % 10}")
        ax.set_title(dim)
        ax.set_xlabel("training step")
        ax.set_ylabel(ylabel)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return fig



def corpus_overview(stats: dict[str, dict]):
    """Per source: story lengths, the most common openings, prompt-feature coverage and the share of the
    prompt vocabulary used. `stats` maps a source label to `stats.corpus_stats` output."""
    fig, axes = plt.subplots(1, 4, figsize=(20, 4.2))
    for i, (src, st) in enumerate(stats.items()):
        axes[0].hist(st["lengths"], bins=40, alpha=0.5, label=src, color=f"C{i}", density=True)
    axes[0].set_xlabel("story length (words)")
    axes[0].set_ylabel("density")
    axes[0].set_title("Story lengths")
    axes[0].legend(fontsize=8)
    ax, labels, offset = axes[1], [], 0
    for i, (src, st) in enumerate(stats.items()):
        ops = st["top_openings"][:5]
        ax.barh(np.arange(len(ops)) + offset, [s for _, s in ops], color=f"C{i}", label=src)
        labels += [f'"{o}"' for o, _ in ops]
        offset += len(ops)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("share of stories")
    ax.set_title("Most common openings (first 3 words)")
    _grouped(axes[2], {src: st["feature_share"] for src, st in stats.items()}, "Prompt features")
    _grouped(axes[3], {src: st["vocab_coverage"] for src, st in stats.items()}, "Prompt vocabulary used")
    fig.tight_layout()
    return fig


def _grouped(ax, data: dict[str, dict[str, float]], title: str):
    names = sorted({k for d in data.values() for k in d})
    if not names:
        ax.text(0.5, 0.5, "no data for these sources", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(title)
        return
    w = 0.8 / len(data)
    for i, (src, d) in enumerate(data.items()):
        ax.bar(np.arange(len(names)) + i * w, [d.get(k, 0) for k in names], w, label=src, color=f"C{i}")
    ax.set_xticks(np.arange(len(names)) + w * (len(data) - 1) / 2, names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("share")
    ax.set_ylim(0, 1.05)
    ax.set_title(title)


# ---- diversity (notebook 05)


def rouge_histograms(scores: dict[str, list[dict]], baseline: list[dict], key: str = "rouge2",
                     metric: str = "Rouge-2 precision", title: str | None = None):
    """One panel per model: the histogram of `key` over its completions (each against its nearest training
    story), with the training set's own scores against the rest of it drawn behind in grey. `scores` maps a
    model label to `evals.memorization.memorization_scores` rows; NaN scores (no bigrams) are left out."""
    def finite(rows):
        return [r[key] for r in rows if not np.isnan(r[key])]

    cols = min(4, max(1, len(scores)))
    nrows = -(-len(scores) // cols) or 1
    fig, axes = plt.subplots(nrows, cols, figsize=(3.3 * cols, 2.6 * nrows + 0.6), sharex=True, squeeze=False)
    bins = np.linspace(0, 1, 21)
    base = finite(baseline)
    for ax, (i, (label, rows)) in zip(axes.flat, enumerate(scores.items())):
        vals = finite(rows)
        if base:
            ax.hist(base, bins=bins, density=True, color="0.6", alpha=0.45, label="train vs itself")
            ax.axvline(np.mean(base), color="0.35", ls="--", lw=1)
        if vals:
            ax.hist(vals, bins=bins, density=True, histtype="step", lw=1.8, color=f"C{i % 10}", label=label)
            ax.axvline(np.mean(vals), color=f"C{i % 10}", lw=1)
        ax.set_title(f"{label} (n={len(vals)})", fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
    for ax in axes.flat[len(scores):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel(metric)
    for ax in axes[:, 0]:
        ax.set_ylabel("density")
    fig.suptitle(title or f"{metric} of completions against their nearest training story (lines: means)")
    fig.tight_layout()
    return fig


def manipulation_bars(rows: list[dict], title: str = "Manipulation check: does the model follow a swapped word?"):
    """Per model, one bar per swapped kind (name, object): the share of completions that use the new word
    and never the old one. A black tick marks how often the unchanged beginning's completion names the
    original word, the most the bar can reach. `rows`: `diversity.follow_rates` output."""
    models = list(dict.fromkeys(r["model"] for r in rows))
    kinds = list(dict.fromkeys(r["kind"] for r in rows))
    width = 0.8 / max(1, len(kinds))
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(models) + 2), 4.2))
    x = np.arange(len(models))
    for k, kind in enumerate(kinds):
        by_model = {r["model"]: r for r in rows if r["kind"] == kind}
        pos = x + (k - (len(kinds) - 1) / 2) * width
        ax.bar(pos, [by_model[m]["follows"] if m in by_model else np.nan for m in models], width,
               color=f"C{k}", label=f"{kind} swapped: follows")
        ax.scatter(pos, [by_model[m]["original_mentions"] if m in by_model else np.nan for m in models],
                   marker="_", s=300, color="black", zorder=3,
                   label="names the original word when nothing is swapped" if k == 0 else None)
    ax.set_xticks(x, models, rotation=20, ha="right")
    ax.set_ylabel("share of completions")
    ax.set_ylim(0, 1.05)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left")
    return fig


# ---- interpretability (notebook 06)

VERDICT_COLORS = {"distance": "C0", "entity": "C3", "mixed": "C4", "other": "0.6"}


def _evenly_spaced(n: int, k: int) -> list[int]:
    """k indices spread evenly over range(n) (all of them when n <= k)."""
    return list(range(n)) if n <= k else sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


def attention_maps(models: dict[str, tuple], verdicts: dict[str, dict] | None = None, max_heads: int = 8,
                   max_layers: int = 6, title: str = "Attention of every head on a validation story"):
    """A grid of attention maps: one row per layer of each model, one column per head; a panel's row i is
    what token i attends to. `models` maps a label to (maps (layers, heads, T, T), token strings);
    `verdicts` (label -> {(layer, head): verdict}) are added to the titles. Wide models show their first
    `max_heads` heads, deep ones `max_layers` layers spread over the depth."""
    from matplotlib.colors import PowerNorm

    rows = [(label, layer) for label, (maps, _) in models.items() for layer in _evenly_spaced(len(maps), max_layers)]
    ncols = min(max_heads, max(len(m[0]) for m, _ in models.values()))
    fig, axes = plt.subplots(len(rows), ncols, figsize=(2.3 * ncols + 0.8, 2.3 * len(rows) + 0.6), squeeze=False)
    norm = PowerNorm(0.5, vmin=0, vmax=1)  # square-root scale: weak but structured attention stays visible
    for r, (label, layer) in enumerate(rows):
        maps, tokens = models[label]
        labels = [t.replace("\n", "\\n") for t in tokens]
        for h in range(ncols):
            ax = axes[r, h]
            ax.grid(False)
            if h >= maps.shape[1]:
                ax.axis("off")
                continue
            im = ax.imshow(np.asarray(maps[layer, h]), cmap="Blues", norm=norm, interpolation="nearest")
            verdict = (verdicts or {}).get(label, {}).get((layer, h))
            color = "black" if verdict in (None, "other") else VERDICT_COLORS[verdict]
            ax.set_title(f"{label} L{layer} H{h}" + (f"\n{verdict}" if verdict else ""), fontsize=8, color=color)
            ax.set_xticks([])
            ax.set_yticks([])
            if h == 0:
                ax.set_yticks(range(len(labels)), labels, fontsize=4.5)
            if r == len(rows) - 1:
                ax.set_xticks(range(len(labels)), labels, fontsize=4.5, rotation=90)
    fig.colorbar(im, ax=axes, shrink=0.5, label="attention weight (square-root scale)")
    fig.suptitle(title)
    return fig


def head_scores(scores: dict[str, list[dict]], distance_min: float, entity_lift_min: float,
                title: str = "What each attention head attends to"):
    """One panel per model, one point per head: attention mass on the last few tokens (x) against the
    attention on earlier names/objects relative to uniform attention (y); dashed lines are the verdict
    thresholds. `scores`: label -> `interpret.head_scores` output."""
    n = len(scores)
    ncols = min(5, n)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 3.0 * nrows + 0.6), squeeze=False,
                             sharex=True, sharey=True)
    top = max([entity_lift_min * 1.5] + [r["entity_lift"] * 1.1 for rows in scores.values() for r in rows
                                         if np.isfinite(r["entity_lift"])])
    def lift(r):  # a head with no entity query in view (NaN lift) is drawn at 0, hollow: its distance shows
        return r["entity_lift"] if np.isfinite(r["entity_lift"]) else 0.0

    for ax, (label, rows) in zip(axes.flat, scores.items()):
        for verdict, color in VERDICT_COLORS.items():
            for finite in (True, False):
                pts = [(r["distance_score"], lift(r)) for r in rows
                       if r["verdict"] == verdict and bool(np.isfinite(r["entity_lift"])) == finite]
                if pts:
                    ax.scatter(*zip(*pts), s=22, zorder=3, label=verdict if finite else None,
                               **({"color": color} if finite else {"facecolors": "none", "edgecolors": color,
                                                                   "clip_on": False}))
        if len(rows) <= 32:
            for r in rows:
                ax.annotate(f"{r['layer']}.{r['head']}", (r["distance_score"], lift(r)), fontsize=6,
                            xytext=(2, 2), textcoords="offset points")
        ax.axvline(distance_min, ls="--", color="0.4", lw=0.8)
        ax.axhline(entity_lift_min, ls="--", color="0.4", lw=0.8)
        ax.axhline(1.0, ls=":", color="0.6", lw=0.8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, top)
        ax.set_title(label, fontsize=9)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("mass on the last tokens")
    for ax in axes[:, 0]:
        ax.set_ylabel("entity attention / uniform")
    handles = [plt.Line2D([], [], marker="o", ls="", color=c, label=v) for v, c in VERDICT_COLORS.items()]
    if any(not np.isfinite(r["entity_lift"]) for rows in scores.values() for r in rows):
        handles.append(plt.Line2D([], [], marker="o", ls="", markerfacecolor="none", color="0.3",
                                  label="no entity query (drawn at 0)"))
    fig.legend(handles=handles, loc="upper right", fontsize=8, ncol=len(handles))
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return fig


def neuron_selectivity(results: dict[str, dict[str, dict]],
                       title: str = "Do a neuron's top-activating tokens share a word or a role?"):
    """Per analysed layer, trained model vs the same model at random initialisation vs chance: mean
    agreement of the top contexts on the word and on the word class, and the share of neurons whose top
    contexts are mostly one class other than the catch-all "other" (stacked by class).
    `results`: layer label -> `evals.neurons.neuron_selectivity` output."""
    layers = list(results)
    kinds = list(dict.fromkeys(k for r in results.values() for k in r))
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.4), gridspec_kw={"width_ratios": [1, 1, 1.6]})
    width = 0.8 / len(kinds)
    x = np.arange(len(layers))
    for ax, metric, name in ((axes[0], "word_agreement", "same word"), (axes[1], "class_agreement", "same word class")):
        for i, kind in enumerate(kinds):
            ax.bar(x + (i - (len(kinds) - 1) / 2) * width, [results[lay][kind][metric] for lay in layers], width,
                   color=f"C{i}", label=kind)
        ax.set_xticks(x, layers)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("mean share of top contexts")
        ax.set_title(f"Top contexts on the {name}", fontsize=10)
        ax.legend(fontsize=8)
    ax = axes[2]
    bars = [(f"{lay}\n{kind}", results[lay][kind]["roles"]) for lay in layers for kind in kinds]
    classes = list(dict.fromkeys(c for _, d in bars for c in d))
    bottom = np.zeros(len(bars))
    for j, c in enumerate(classes):
        vals = np.array([d.get(c, 0.0) for _, d in bars])
        ax.bar(range(len(bars)), vals, bottom=bottom, color=f"C{j}", label=c)
        bottom += vals
    ax.set_xticks(range(len(bars)), [b for b, _ in bars], fontsize=7)
    ax.set_ylabel("share of neurons")
    ax.set_ylim(0, max(0.05, 1.2 * bottom.max()))
    ax.set_title("Neurons with a role: top contexts mostly one class", fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


# ---- instruct (notebook 07)

# The two yardsticks are grey so the model's two conditions stand out.
_INSTRUCT_COLORS = {"in-distribution": "C0", "out-of-distribution": "C1", "reference stories": "0.55",
                    "mismatched instructions": "0.8"}


def instruction_bars(rows: list[dict], title: str = "Instruction following, in and out of distribution"):
    """Grouped bars: one group per check (words used, features honoured, summary overlap), one bar per
    condition, 95% confidence intervals as error bars and n above each bar; shares in [0, 1]. `rows`:
    {"condition", "dimension", "mean", "ci95", "n"} (`evals.instruct_checks.by_condition`). Missing cells stay empty."""
    conditions = list(dict.fromkeys(r["condition"] for r in rows))
    dims = list(dict.fromkeys(r["dimension"] for r in rows))
    cell = {(r["condition"], r["dimension"]): r for r in rows}
    width = 0.8 / max(1, len(conditions))
    fig, ax = plt.subplots(figsize=(max(6.5, 2.2 * len(dims) + 1.5), 4.4))
    x = np.arange(len(dims))
    for k, cond in enumerate(conditions):
        got = [cell.get((cond, d)) for d in dims]
        means = [r["mean"] if r else np.nan for r in got]
        errs = [r["ci95"] if r and np.isfinite(r["ci95"]) else 0 for r in got]
        pos = x + (k - (len(conditions) - 1) / 2) * width
        ax.bar(pos, means, width, yerr=errs, capsize=2, label=cond, color=_INSTRUCT_COLORS.get(cond, f"C{k}"))
        for px, r, err in zip(pos, got, errs):
            if r and np.isfinite(r["mean"]):
                ax.text(px, r["mean"] + err + 0.01, f"n={r['n']}", ha="center", va="bottom", fontsize=6)
    ax.set_xticks(x, [d.replace("_", " ") for d in dims])
    ax.set_ylabel("share (0-1)")
    ax.set_ylim(0, 1.1)
    ax.set_title(title)
    ax.legend(fontsize=8, ncol=min(4, len(conditions)), loc="upper center", bbox_to_anchor=(0.5, -0.1))
    return fig


# Notebook 08's roles (`stages.quality`): the clean corpus black, degraded controls dashed.
_QUALITY_STYLE = {"clean": {"color": "black", "lw": 2.2}, "control": {"ls": "--"}, "stand-in": {"ls": ":"}}


def quality_curves(rows: list[dict], title: str = "The same model on corpora of different quality"):
    """Validation bits per byte against tokens seen, one curve per corpus (`stages.quality.figure_data`
    rows: {"corpus", "role", "curve": [[tokens, bpb], ...], "val_bpb"}); the legend gives each corpus's
    final bits per byte over the whole validation text, best first."""
    fig, ax = plt.subplots(figsize=(7.5, 4.4))
    order = sorted(rows, key=lambda r: r["val_bpb"] if r.get("val_bpb") is not None else np.inf)
    k = 0
    for r in order:
        pts = [p for p in r.get("curve", []) if p[1] is not None]
        if not pts:
            continue
        style = dict(_QUALITY_STYLE.get(r["role"], {}))
        if "color" not in style:
            style["color"], k = f"C{k % 10}", k + 1
        final = f" ({r['val_bpb']:.3f})" if r.get("val_bpb") is not None else ""
        ax.plot(*zip(*pts), marker="o", ms=3, lw=style.pop("lw", 1.5), label=f"{r['corpus']}{final}", **style)
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("validation bits per byte")
    ax.set_title(title)
    ax.legend(fontsize=7.5, title="corpus (final bits per byte)", title_fontsize=7.5)
    return fig
