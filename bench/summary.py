"""Every aim of one `make bench` run in one table: the rows with a target from each benchmark's --json.

    python bench/summary.py build/bench/*.json

A benchmark that skipped (no GPU, no run.c, no stories260K) wrote no file or fewer rows; it says so in its
own output above, and here each file is listed with its date and load so the figures can be read together.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from common import Row, _fmt


def main(paths: list[str]) -> int:
    if not paths:
        print("bench/summary.py: no result files given (each benchmark writes one with --json PATH)")
        return 2
    aims, missing = [], []
    print("\n== every aim of this run\n")
    for path in paths:
        f = Path(path)
        if not f.exists():
            missing.append(path)
            continue
        data = json.loads(f.read_text())
        info = data.get("info", {})
        print(f"   {f.name}: {info.get('date', '?')}, load at start {info.get('loadavg', '?')}, "
              f"small_op_us {info.get('small_op_us', '-')}")
        fields = Row.__dataclass_fields__
        for r in data.get("rows", []):
            row = Row(**{k: v for k, v in r.items() if k in fields})
            if row.target is not None:
                aims.append((f.stem, row))
    print("\n| benchmark | aim | ours | baseline | unit | ours / baseline | target | met? | baseline is |")
    print("|---|---|---:|---:|---|---:|---:|---|---|")
    for name, r in aims:
        print(f"| {name} | {r.what} | {_fmt(r.ours)} | {_fmt(r.baseline)} | {r.unit} | {r.ratio:.2f}x | "
              f"{r.target_text} | {r.met} | {r.baseline_name} |")
    met = sum(r.met == "yes" for _, r in aims)
    print(f"\n{met} of {len(aims)} aims met" + (f"; no result file: {', '.join(missing)}" if missing else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
