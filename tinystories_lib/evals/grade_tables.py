"""Tables of grades, whoever graded them, and the JSONL log they are kept in.

`aggregate` turns `Grade` records (LLM judge or offline grader) into one row per (model, grader, step,
dimension) with mean, 95% interval and counts (failures counted, never dropped); `grades_table` prints
them shaped like the paper's table, always with a grader column so offline scores are never mistaken for
the judge's, and `age_table` / `age_distribution` the judge's age guesses. `judge_agreement` measures how
far an LLM judge's repeated judgments of one completion agree (`grade.judge_repeats`), `failure_reasons`
groups failed grades by their error, and `judge_report` shows both with who judged (`stages.grading.judge_summary`). `append_grades_jsonl` and
`read_grades_jsonl` keep grades across runs (a line left torn by a killed run is skipped with a
warning). Apart from the graders so that any mix of grades tabulates alike.
"""

from __future__ import annotations

import json
import math
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

from tinystories_lib.evals.grades import AGE_GROUPS, LLM_DIMENSIONS, Grade
from tinystories_lib.evals.intervals import mean_ci


def _groups(grades: Iterable[Grade]) -> dict[tuple, list[Grade]]:
    """Grades by (model, grader, step), in order of first appearance."""
    groups: dict[tuple, list[Grade]] = defaultdict(list)
    for g in grades:
        groups[(g.model, g.grader, g.step)].append(g)
    return groups


def _dimensions(grades: Sequence[Grade]) -> list[str]:
    """Every scored dimension, the paper's four first in its order (the offline grader scores the same
    four), then any others in order of first appearance."""
    seen = list(dict.fromkeys(d for g in grades if g.status == "ok" for d in g.scores))
    known = list(LLM_DIMENSIONS)
    return sorted(seen, key=lambda d: known.index(d) if d in known else len(known) + seen.index(d))


def aggregate(grades: Iterable[Grade]) -> list[dict]:
    """One row per (model, grader, step) and dimension the grader scores anywhere: mean, std, ci95 (the
    half-width of the 95% t interval), ci_low, ci_high, n (grades holding that dimension; 0 gives a NaN
    mean), n_failed (failed grades of the group). A grader none of whose grades succeeded still gets a
    row per group, with dimension None, so its failures are counted."""
    grades = list(grades)
    graders = dict.fromkeys(g.grader for g in grades)
    dims_of = {name: _dimensions([g for g in grades if g.grader == name]) or [None] for name in graders}
    rows = []
    for (model, grader, step), group in _groups(grades).items():
        ok = [g for g in group if g.status == "ok"]
        for dim in dims_of[grader]:
            stats = mean_ci([float(g.scores[dim]) for g in ok if dim in g.scores], 0.95)
            stats["ci95"] = stats.pop("ci")
            rows.append({"model": model, "grader": grader, "step": step, "dimension": dim, **stats,
                         "n_failed": len(group) - len(ok)})
    return rows


def age_table(grades: Iterable[Grade]) -> str:
    """The judge's guesses of the student's age group, as a markdown table of shares per model."""
    rows = age_distribution(grades)
    if not rows:
        return "_no age groups: this grader does not guess ages (only the LLM judge does)_"
    head = "| model | n | " + " | ".join(f"{a}: {AGE_GROUPS[a]}" for a in AGE_GROUPS) + " |\n"
    head += "|---|---:|" + "---:|" * len(AGE_GROUPS) + "\n"
    return head + "".join(f"| {r['model']} | {r['n']} | " + " | ".join(f"{r['shares'].get(a, 0):.0%}" for a in AGE_GROUPS)
                          + " |\n" for r in rows)


def age_distribution(grades: Iterable[Grade]) -> list[dict]:
    """Per (model, grader, step): how many successful grades carry an age group, and the count and share
    of each group (A..F, the paper's "3 or under" .. "13-16")."""
    rows = []
    for (model, grader, step), group in _groups(grades).items():
        ages = [g.age_group for g in group if g.status == "ok" and g.age_group]
        if not ages:
            continue
        counts = Counter(ages)
        letters = list(AGE_GROUPS) + sorted(set(counts) - set(AGE_GROUPS))
        rows.append({"model": model, "grader": grader, "step": step, "n": len(ages),
                     "counts": {a: counts[a] for a in letters},
                     "shares": {a: counts[a] / len(ages) for a in letters}})
    return rows


def _cell(row: dict | None, n_group: int, digits: int) -> str:
    if row is None or math.isnan(row["mean"]):
        return "–"
    text = f"{row['mean']:.{digits}f}"
    if not math.isnan(row["ci95"]):
        text += f" ± {row['ci95']:.{digits}f}"
    return text if row["n"] == n_group else f"{text} (n={row['n']})"


def grades_table(grades: Iterable[Grade], digits: int = 2) -> str:
    """A markdown table shaped like the paper's: a row per model (and step and grader), a column per
    dimension holding "mean ± half-width of the 95% CI" ("(n=...)" when fewer grades than the row's n
    hold that dimension). The grader column is always shown, so offline scores are never mistaken for
    the judge's."""
    grades = list(grades)
    rows = aggregate(grades)
    dims = _dimensions(grades)
    header = ["model", "step", "grader", *dims, "n", "failed"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (model, grader, step), group in _groups(grades).items():
        mine = {r["dimension"]: r for r in rows if (r["model"], r["grader"], r["step"]) == (model, grader, step)}
        n_ok = sum(g.status == "ok" for g in group)
        cells = [model, "final" if step is None else str(step), grader]
        cells += [_cell(mine.get(d), n_ok, digits) for d in dims]
        cells += [str(n_ok), str(len(group) - n_ok)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\nmean ± half-width of the 95% t confidence interval\n"


# --- grade logs ----------------------------------------------------------------------------------


def append_grades_jsonl(path: str | Path, grades: Iterable[Grade]) -> int:
    """Append grades to a JSONL log (created if missing). Returns how many were written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [g.to_json() + "\n" for g in grades]
    with open(path, "a+b") as f:
        f.seek(0, 2)
        if f.tell():  # a run killed mid-line left no newline: start ours on a fresh line
            f.seek(-1, 2)
            if f.read(1) != b"\n":
                f.write(b"\n")
        f.write("".join(lines).encode("utf-8"))
    return len(lines)


def read_grades_jsonl(path: str | Path) -> list[Grade]:
    """All grades in a JSONL log ([] if it does not exist). A line that is not valid JSON (a write cut
    short) is skipped with a warning."""
    path = Path(path)
    if not path.exists():
        return []
    grades, bad = [], 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                grades.append(Grade.from_dict(json.loads(line)))
            except (json.JSONDecodeError, TypeError):
                bad += 1
    if bad:
        warnings.warn(f"{path}: skipped {bad} unreadable line(s)", stacklevel=2)
    return grades


# --- the judge's reliability ---------------------------------------------------------------------


def judge_agreement(grades: Iterable[Grade]) -> list[dict]:
    """Per grader and dimension, over the completions judged at least twice with success
    (`extra["repeat_scores"]`): `n` such completions, `repeats` (most judgments of one), `sd` the judge's
    spread on one completion (the square root of the mean within-completion variance, n-1 each), `mean_range`
    (highest minus lowest score of a completion, averaged), `within_1` the share of completions whose
    scores all lie within 1 point, `identical` the share graded the same every time. [] without repeats."""
    per: dict[tuple[str, str], list[list[float]]] = defaultdict(list)
    for g in grades:
        reps = (g.extra.get("repeat_scores") or []) if g.status == "ok" else []
        if len(reps) < 2:
            continue
        for dim in g.scores:
            values = [float(r[dim]) for r in reps if dim in r]
            if len(values) >= 2:
                per[(g.grader, dim)].append(values)
    rows = []
    for (grader, dim), groups in per.items():
        variances = [sum((v - sum(x) / len(x)) ** 2 for v in x) / (len(x) - 1) for x in groups]
        spans = [max(x) - min(x) for x in groups]
        rows.append({"grader": grader, "dimension": dim, "n": len(groups), "repeats": max(map(len, groups)),
                     "sd": math.sqrt(sum(variances) / len(variances)), "mean_range": sum(spans) / len(spans),
                     "within_1": sum(r <= 1 for r in spans) / len(spans),
                     "identical": sum(r == 0 for r in spans) / len(spans)})
    known = list(LLM_DIMENSIONS)
    return sorted(rows, key=lambda r: (r["grader"], known.index(r["dimension"]) if r["dimension"] in known else 99))


def agreement_table(rows: Sequence[dict], digits: int = 2) -> str:
    """`judge_agreement` rows as a markdown table."""
    if not rows:
        return "_no completion was judged more than once (grade.judge_repeats: 1)_"
    head = ("| grader | dimension | completions | repeats | sd within a completion | mean range | within 1 point "
            "| identical |\n|---|---|---:|---:|---:|---:|---:|---:|\n")
    return head + "".join(
        f"| {r['grader']} | {r['dimension']} | {r['n']} | {r['repeats']} | {r['sd']:.{digits}f} | "
        f"{r['mean_range']:.{digits}f} | {r['within_1']:.0%} | {r['identical']:.0%} |\n" for r in rows)


def failure_reasons(grades: Iterable[Grade], width: int = 200) -> list[dict]:
    """Failed grades grouped by their error (cut to `width` characters), most frequent first: `count`, and
    `permanent`, how many of them failed so often that no later run asks again."""
    counts: Counter = Counter()
    permanent: Counter = Counter()
    for g in grades:
        if g.status == "ok":
            continue
        error = str(g.extra.get("error") or g.reason or "unknown")
        error = error if len(error) <= width else error[: width - 3] + "..."
        counts[error] += 1
        permanent[error] += bool(g.extra.get("permanent"))
    return [{"error": e, "count": n, "permanent": permanent[e]} for e, n in counts.most_common()]


def judge_report(summary: dict) -> str:
    """`stages.grading.judge_summary` as markdown: who judged (the model asked for and the snapshot the
    server said answered), at what temperature, how many times each, the failed grades by error, and the
    repeats' agreement."""
    snapshots = ", ".join(f"`{s}`" for s in summary["snapshots"]) or "not reported by the server"
    temps = ", ".join("server default" if t is None else f"{t:g}" for t in summary["temperatures"]) or "–"
    lines = [
        f"**Judge** `{summary['model']}`: served by {snapshots}; temperature {temps}; "
        f"each completion judged {summary['repeats']} time{'s' if summary['repeats'] > 1 else ''}.",
        "",
        f"{summary['n']} grades, {summary['failed']} failed, of which {summary['permanently_failed']} for good "
        f"(failed {summary['max_attempts']} times: not asked again; the others are retried by the next run).",
    ]
    if summary["failures"]:
        lines += ["", "| error | failed | for good |", "|---|---:|---:|"]
        lines += [f"| {f['error'].replace('|', '/')} | {f['count']} | {f['permanent']} |" for f in summary["failures"]]
    if summary["repeats"] > 1:
        lines += ["", "**Agreement of the repeated judgments**", "", agreement_table(summary["agreement"])]
    return "\n".join(lines) + "\n"


def per_grader(rows: Iterable[dict]) -> list[dict]:
    """`aggregate` rows of several graders scoring the same dimensions, each model relabelled
    "<model> · <grader>" so a table or a figure shows the graders side by side instead of overlaying them."""
    return [{**r, "model": f"{r['model']} · {r['grader']}"} for r in rows]
