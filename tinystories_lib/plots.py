"""Every figure the notebooks write, in one style. Each is saved with a caption that names the paper's
figure it reproduces, and recorded in `figures/<profile>/manifest.json`."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

if not matplotlib.get_backend().lower().startswith(("module://", "nbagg", "widget", "ipympl")):
    matplotlib.use("Agg")  # headless (papermill, CI) unless a notebook backend is active
import matplotlib.pyplot as plt
import numpy as np

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


def save(run, fig, name: str, caption: str, reproduces: str) -> SavedFigure:
    """Write `fig` to figures/<profile>/<name>.png with its caption in the manifest; returns the path."""
    run.figures.mkdir(parents=True, exist_ok=True)
    path = run.figures / f"{name}.png"
    tmp = run.figures / f".{name}.tmp.png"
    fig.savefig(tmp)
    tmp.replace(path)
    run.record_figure(name, path, caption, reproduces)
    saved = SavedFigure(path)
    saved.caption = f"{caption} (reproduces: {reproduces})"
    return saved


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
    return fig


def heatmap(values: np.ndarray, rows: Sequence, cols: Sequence, title: str, row_label: str, col_label: str,
            cbar_label: str, fmt: str = "{:.2f}", cmap: str = "viridis_r"):
    """A grid like the paper's Figure 4: one cell per (rows x cols) model, the value printed in it."""
    values = np.asarray(values, dtype=float)
    fig, ax = plt.subplots(figsize=(1.1 * len(cols) + 2.2, 0.8 * len(rows) + 1.6))
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
            text = fmt.format(v) if np.isfinite(v) else "–"
            dark = (v > mid) if cmap.endswith("_r") else (v < mid)
            ax.text(j, i, text, ha="center", va="center", fontsize=9, color="white" if dark else "black")
    fig.colorbar(im, ax=ax, label=cbar_label)
    ax.set_title(title)
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


def over_steps(series: dict[str, list[tuple[int, float]]], title: str, ylabel: str, xlabel: str = "training step"):
    """One line per dimension (or model) against training step."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for i, (label, pts) in enumerate(series.items()):
        if pts:
            ax.plot(*zip(*sorted(pts)), marker="o", ms=3.5, label=label, color=f"C{i % 10}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
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
