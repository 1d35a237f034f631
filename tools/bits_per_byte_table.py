"""The main model's bits per byte on real TinyStories validation text, trained on the storyteller stand-in
and on real stories, beside llama2.c's published stories260K: the README's table.

    python tools/bits_per_byte_table.py [--runs /tmp/bpb]    # about 15 minutes on 2 CPU cores

Uses the team's reference files in ../shared: the 2,500-story sample (training stories), the head of the V1
training split (validation text, cleaned: its mojibake repaired) and stories260K. The smoke profile's model
(h128 x 4, 450 steps) is trained twice, with the same settings; only the training stories differ.
"""

from __future__ import annotations

import argparse
import json

from tinystories_lib import stages
from tinystories_lib.runs import Run
from tinystories_lib.stages import references

SHARED = "../shared"
VALIDATION = {"data.val_source": "files", "data.val_limit": 0,
              "data.val_paths": [f"{SHARED}/data/tinystories_v1_train_head/tinystories_v1_train_head_1096.txt"],
              "grade.reference_models": [f"{SHARED}/models/stories260K/stories260K.bin"]}
TRAINED_ON = {
    "storyteller stand-in (20,000 stories)": {"data.source": "storyteller"},
    "real TinyStories (the 2,500-story sample)": {
        "data.source": "files", "data.n_stories": 0,
        "data.paths": [f"{SHARED}/data/tinystories_sample/tinystories_v1_sample_2500.txt"]},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="runs/bits_per_byte", help="where the runs' artifacts go (reused)")
    a = ap.parse_args()
    rows, run = [], None
    for name, over in TRAINED_ON.items():
        run = Run.load("smoke", {**VALIDATION, **over}, runs_root=a.runs, figures_root=f"{a.runs}/figures")
        m = stages.train_model(run, progress=False)
        rows.append({"model": f"{m.label} ({m.summary['params'] / 1e6:.2f}M)", "trained on": name,
                     "bits per byte": m.val_bpb, "nats per token": m.summary["val_loss_full"]})
    for r in references.score_references(run, progress=False):
        rows.append({"model": f"{r['label']} ({r['params'] / 1e6:.2f}M)", "trained on": "published (llama2.c)",
                     "bits per byte": r["val_bpb"], "nats per token": r["val_loss_per_token"]})
    print("| model | trained on | bits per byte | nats per token (own tokenizer) |\n|---|---|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['trained on']} | {r['bits per byte']:.2f} | {r['nats per token']:.2f} |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
