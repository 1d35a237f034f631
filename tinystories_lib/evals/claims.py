"""The paper's claims, checked on the data of this run's figures.

Every figure is written with its numbers beside it (`figures/<profile>/<name>.json`, by `show.plots.save`);
each check here reads one of those files and says what this run measured and whether the paper's finding
holds in it. A check whose figure was not written (that notebook did not run, or had no data) is reported
as not measured, with the reason; a claim that does not hold is reported as such. `make reproduce` prints
the table at the end and keeps it in the manifest (`claims`).

    check_claims(figures_dir) -> [Claim]        claims_table(claims) -> markdown
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

# The step at which a grade "reaches its plateau": the first step from which it stays at or above this
# share of its final value (interpolated between kept checkpoints).
PLATEAU_SHARE = 0.9


@dataclass
class Claim:
    id: str
    claim: str         # what is checked, in a line
    paper: str         # what the paper found
    figure: str        # the figure whose data the check reads
    this_run: str = ""  # what this run measured (or why nothing was)
    holds: bool | None = None  # None: not measured

    @property
    def verdict(self) -> str:
        return {True: "yes", False: "**no**", None: "not measured"}[self.holds]

    def to_dict(self) -> dict:
        return {**asdict(self), "verdict": self.verdict}


class NotMeasured(Exception):
    """The figure's data does not allow the check (missing models, dimensions, conditions)."""


def _fmt(x: float) -> str:
    return f"{x:.2f}" if x is not None and math.isfinite(x) else "n/a"


# ------------------------------------------------------------------ Figure 4: the loss grid


def _grid_models(values: dict) -> tuple[list[dict], dict | None]:
    models = [m for m in values.get("models", []) if m.get("val_loss") is not None]
    grid = [m for m in models if m.get("role", "grid") == "grid"]
    main = next((m for m in models if m.get("role") == "main"), None)
    if len({m["hidden"] for m in grid}) < 2 or len({m["layers"] for m in grid}) < 2:
        raise NotMeasured("the grid needs at least two widths and two depths")
    return grid, main


def _chain(models: list[dict], key: str) -> tuple[str, bool]:
    """`a > b > c` of the validation losses ordered by `key`, and whether each is below the one before."""
    ordered = sorted(models, key=lambda m: m[key])
    losses = [m["val_loss"] for m in ordered]
    text = " > ".join(f"{m[key]}: {_fmt(m['val_loss'])}" for m in ordered)
    return text, all(b < a for a, b in zip(losses, losses[1:]))


def loss_falls_with_width(values: dict) -> tuple[str, bool]:
    grid, _ = _grid_models(values)
    parts, ok = [], True
    for layers in sorted({m["layers"] for m in grid}):
        text, falls = _chain([m for m in grid if m["layers"] == layers], "hidden")
        parts.append(f"{layers} layers, by width {text}" + ("" if falls else " (not monotone)"))
        ok &= falls
    return "; ".join(parts), ok


def deeper_is_better_at_widest(values: dict) -> tuple[str, bool]:
    grid, _ = _grid_models(values)
    widest = max(m["hidden"] for m in grid)
    text, falls = _chain([m for m in grid if m["hidden"] == widest], "layers")
    return f"hidden {widest}, by layers {text}", falls


def main_beats_smaller(values: dict) -> tuple[str, bool]:
    grid, main = _grid_models(values)
    if main is None:
        raise NotMeasured("the main model is not in the figure's data")
    smaller = [m for m in grid if m["params"] < main["params"]]
    if not smaller:
        raise NotMeasured("no grid model is smaller than the main model")
    best = min(smaller, key=lambda m: m["val_loss"])
    bpb = f" ({_fmt(main.get('val_bpb'))} against {_fmt(best.get('val_bpb'))} bits per byte)" \
        if main.get("val_bpb") is not None and best.get("val_bpb") is not None else ""
    return (f"{main['model']} {_fmt(main['val_loss'])} against the best of {len(smaller)} smaller grid models "
            f"({best['model']}) {_fmt(best['val_loss'])}{bpb}"), all(main["val_loss"] < m["val_loss"] for m in smaller)


# ------------------------------------------------------------------ emergence over training


def plateau_step(points: list[tuple[float, float]], share: float = PLATEAU_SHARE) -> float:
    """The step from which a grade stays at or above `share` of its final value: after the last kept
    checkpoint below that level, interpolated linearly up to the next one; the first step when it never
    falls below."""
    points = sorted(points)
    target = share * points[-1][1]
    below = [i for i, (_, v) in enumerate(points) if v < target]
    if not below:
        return float(points[0][0])
    i = below[-1]
    (s0, v0), (s1, v1) = points[i], points[i + 1]
    return s0 + (s1 - s0) * (target - v0) / (v1 - v0)


EMERGENCE_ORDER = ("grammar", "consistency", "creativity")


def grammar_consistency_creativity(values: dict) -> tuple[str, bool]:
    series, main = values.get("series", {}), values.get("main")
    steps = {}
    for dim in EMERGENCE_ORDER:
        points = [tuple(p) for p in series.get(dim, {}).get(main, []) if p[1] is not None]
        if len(points) < 3:
            raise NotMeasured(f"{dim} of {main} has {len(points)} graded checkpoints (3 needed)")
        if points[-1][1] <= 0:
            raise NotMeasured(f"{dim} of {main} ends training at 0: nothing emerged to time")
        steps[dim] = (plateau_step(points), points[-1][1])
    g, c, k = (steps[d][0] for d in EMERGENCE_ORDER)
    text = ", ".join(f"{d} at step {steps[d][0]:.0f} (final {_fmt(steps[d][1])})" for d in EMERGENCE_ORDER)
    return f"{main}: {int(PLATEAU_SHARE * 100)}% of final value reached: {text}", g <= c <= k and g < k


def depth_helps_consistency_more(values: dict) -> tuple[str, bool]:
    rows = [r for r in values.get("models", []) if r.get("mean") is not None]
    gains = {}
    for dim in ("grammar", "consistency"):
        mine = [r for r in rows if r["dimension"] == dim]
        per_width = []
        for hidden in sorted({r["hidden"] for r in mine}):
            col = sorted((r for r in mine if r["hidden"] == hidden), key=lambda r: r["layers"])
            if len(col) >= 2:
                per_width.append(col[-1]["mean"] - col[0]["mean"])
        if not per_width:
            raise NotMeasured(f"no width of the grid has {dim} graded at two depths")
        gains[dim] = sum(per_width) / len(per_width)
    return (f"deepest minus shallowest, mean over widths: consistency {gains['consistency']:+.2f}, "
            f"grammar {gains['grammar']:+.2f} (points out of 10)"), gains["consistency"] > gains["grammar"]


# ------------------------------------------------------------------ Instruct, diversity, heads


def instructions_are_followed(values: dict) -> tuple[str, bool]:
    from tinystories_lib.evals.instruct_checks import IN_DIST, MISMATCHED, OOD

    rows = [r for r in values.get("rows", []) if r.get("mean") is not None]

    def means(cond):  # dimension -> mean share, for one condition
        return {r["dimension"]: r["mean"] for r in rows if r["condition"] == cond}

    base = means(MISMATCHED)
    if not base:
        raise NotMeasured("no mismatched-instructions row to compare with")
    parts, ok = [], True
    for cond in (IN_DIST, OOD):
        mine = means(cond)
        dims = [d for d in mine if d in base]
        if not dims:
            raise NotMeasured(f"no {cond} grades")
        a = sum(mine[d] for d in dims) / len(dims)
        b = sum(base[d] for d in dims) / len(dims)
        parts.append(f"{cond} {a:.2f} against mismatched {b:.2f}")
        ok &= a > b
    return "mean share over the checks: " + "; ".join(parts), ok


def not_copying(values: dict) -> tuple[str, bool]:
    def mean(rows):  # memorization rows ({"rouge2": ...}; None where a text had no word pair)
        xs = [r["rouge2"] for r in rows if r.get("rouge2") is not None]
        return sum(xs) / len(xs) if xs else None

    base = mean(values.get("baseline", []))
    models = {label: mean(v) for label, v in values.get("models", {}).items()}
    models = {k: v for k, v in models.items() if v is not None}
    if base is None or not models:
        raise NotMeasured("no Rouge-2 scores of completions or of the baseline")
    worst = max(models, key=models.get)
    return (f"highest model mean {worst} {models[worst]:.2f}, training set against itself {base:.2f} "
            f"({len(models)} models)"), all(v < base for v in models.values())


def _verdicts(rows: list[dict]) -> dict[str, int]:
    counts = {"distance": 0, "entity": 0, "mixed": 0, "other": 0}
    for r in rows:
        counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
    return counts


def heads_by_distance_and_entity(values: dict) -> tuple[str, bool]:
    models, one, rnd = values.get("models", {}), values.get("one_layer"), values.get("random_init")
    if one not in models or rnd not in models:
        raise NotMeasured("the 1-layer model or its random-init baseline was not scored")
    a, b = _verdicts(models[one]), _verdicts(models[rnd])
    has = a["distance"] + a["mixed"] > 0 and a["entity"] + a["mixed"] > 0
    none = b["distance"] + b["mixed"] + b["entity"] == 0
    return f"{one}: {_counts(a)}; random init: {_counts(b)}", has and none


def _counts(c: dict[str, int]) -> str:
    return ", ".join(f"{c[k]} {k}" for k in ("distance", "entity", "mixed", "other"))


# ------------------------------------------------------------------ data quality (notebook 08)


def _quality_rows(values: dict) -> dict[str, list[dict]]:
    by_role: dict[str, list[dict]] = {}
    for r in values.get("corpora", []):
        if r.get("val_bpb") is not None:
            by_role.setdefault(r["role"], []).append(r)
    return by_role


def degraded_below_clean(values: dict) -> tuple[str, bool]:
    rows = _quality_rows(values)
    if not rows.get("clean") or not rows.get("control"):
        raise NotMeasured("no clean corpus or no degraded control was trained")
    clean = rows["clean"][0]
    worse = [r for r in rows["control"] if r["val_bpb"] > clean["val_bpb"]]
    text = (f"clean {clean['val_bpb']:.3f} bits per byte; "
            + ", ".join(f"{r['corpus']} {r['val_bpb']:.3f}" for r in rows["control"]))
    return text, len(worse) == len(rows["control"])


def filtered_beats_unfiltered(values: dict) -> tuple[str, bool]:
    rows = _quality_rows(values)
    skipped = values.get("filter", {}).get("skipped")
    if skipped:
        raise NotMeasured(f"no filter: {skipped}")
    if not rows.get("filtered") or not rows.get("unfiltered"):
        raise NotMeasured("the filtered or the unfiltered pool was not trained on")
    f, u = rows["filtered"][0], rows["unfiltered"][0]
    kept = values.get("filter", {}).get("kept_fraction")
    share = f" (the filter kept {kept:.0%} of the pool)" if kept is not None else ""
    return f"filtered {f['val_bpb']:.3f} against unfiltered {u['val_bpb']:.3f} bits per byte{share}", \
        f["val_bpb"] < u["val_bpb"]


# ------------------------------------------------------------------ the table

_Check = Callable[[dict], tuple[str, bool]]
CHECKS: list[tuple[Claim, _Check]] = [
    (Claim("fig4-width", "at each depth, validation loss falls as width grows",
           "loss falls with hidden size at every depth (Figure 4)", "loss_heatmap"), loss_falls_with_width),
    (Claim("fig4-depth", "at the widest width, deeper is better",
           "more layers lower the loss at a given width (Figure 4)", "loss_heatmap"), deeper_is_better_at_widest),
    (Claim("fig4-main", "the main model beats every smaller grid model",
           "the largest models reach the lowest loss (Figure 4)", "loss_heatmap"), main_beats_smaller),
    (Claim("emergence-order", "grammar plateaus before consistency, consistency before creativity",
           "grammar emerges first, then consistency, creativity last (Sections 3 and 5)",
           "grades_over_training"), grammar_consistency_creativity),
    (Claim("depth-consistency", "depth raises consistency more than grammar",
           "depth matters more for consistency than for grammar (Figure 4)", "grades_heatmaps"),
     depth_helps_consistency_more),
    (Claim("instruct-follows", "the Instruct model honours instructions more than mismatched ones, in and out "
           "of distribution", "instructions are followed, also for unseen combinations (Section 2.1)",
           "instruction_following"), instructions_are_followed),
    (Claim("not-copying", "completions' Rouge-2 against the nearest training story stays below the training "
           "set's own self-similarity", "the model is not copying (Section 4)", "rouge_histograms"), not_copying),
    (Claim("heads", "the 1-layer model has distance heads and entity heads; its random init has neither",
           "heads attend by distance or by meaning (Section 7.1)", "head_scores"), heads_by_distance_and_entity),
    (Claim("quality-degraded", "at the same token budget, every degraded control (shuffled sentences, typos, "
           "repeated stories) scores worse on the validation text than the clean corpus",
           "data quality matters for small models (TinyStories' premise; phi-1, Textbooks Are All You Need)",
           "data_quality"), degraded_below_clean),
    (Claim("quality-filter", "at the same token budget, the pool filtered by the classifier beats the same pool "
           "unfiltered", "filtering by a classifier of annotated quality pays (phi-1)", "data_quality"),
     filtered_beats_unfiltered),
]


def check_claims(figures_dir: str | Path) -> list[Claim]:
    """Every claim of `CHECKS` on the figure data in `figures_dir`; one never stops the others."""
    figures_dir = Path(figures_dir)
    out = []
    for template, check in CHECKS:
        claim = replace(template)
        path = figures_dir / f"{claim.figure}.json"
        if not path.exists():
            claim.this_run = f"{claim.figure}.png was not written in this run (its notebook did not run or had no data)"
        else:
            try:
                _check(claim, check, json.loads(path.read_text())["values"], path.name)
            except json.JSONDecodeError as e:
                claim.this_run = f"{path.name} could not be read for this check ({type(e).__name__}: {e})"
        out.append(claim)
    return out


def check_figure(figure: str, values: dict) -> list[Claim]:
    """The claims read from one figure's data (`values`, as given to `show.plots.save`): for a notebook to
    say beside its figure what `make reproduce` will print."""
    out = []
    for template, check in CHECKS:
        if template.figure == figure:
            out.append(_check(replace(template), check, values, f"{figure}.json"))
    return out


def _check(claim: Claim, check: _Check, values: dict, source: str) -> Claim:
    try:
        claim.this_run, holds = check(values)
        claim.holds = bool(holds)
    except NotMeasured as e:
        claim.this_run = str(e)
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as e:
        claim.this_run = f"{source} could not be read for this check ({type(e).__name__}: {e})"
    return claim


def claims_table(claims: list[Claim]) -> str:
    lines = ["| claim | paper | this run | holds? |", "|---|---|---|---|"]
    lines += [f"| {c.claim} | {c.paper} | {c.this_run} | {c.verdict} |" for c in claims]
    held = sum(c.holds is True for c in claims)
    measured = sum(c.holds is not None for c in claims)
    return "\n".join(lines) + f"\n\n{held} of {measured} measured claims hold ({len(claims)} checked).\n"
