"""Where a profile's artifacts live, and how a stage knows it can reuse them.

    runs/<profile>/<stage>/<key>/   one directory per stage and parameter hash; `artifact.json` is written
                                    last, so a directory without it is an unfinished stage (recomputed or
                                    resumed), and a changed parameter gets a new key (recomputed); one
                                    process at a time builds it (`Run.building`, `.lock` inside it).
    runs/<profile>/notebooks/       executed notebooks
    figures/<profile>/              figures and `manifest.json` (how each was made)
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

from tinystories_lib import params as params_mod
from tinystories_lib.locks import exclusive, stage_wait_s, temp_path
from tinystories_lib.params import REPO_ROOT, Params


def git_commit() -> str:
    """The commit the code ran at, with '+dirty' when the tree has uncommitted changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                              text=True, timeout=10)
        if head.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def atomic_write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    tmp.replace(path)


def resolve_source(params: Params) -> Params:
    """`data.source: auto` made concrete: real TinyStories from the hub where it can be reached; else real
    stories from `data.paths` where those files exist (validation from `data.val_paths` where they exist);
    else the offline storyteller stand-in. Said in one line, and done before any key is computed, so runs
    on different data never share an artifact."""
    d = params.data
    if d.source != "auto":
        return params
    from tinystories_lib.stories.hub import hub_reachable

    if hub_reachable():
        val = "hub" if d.val_source == "split" and d.val_hub_data_files else d.val_source
        return dataclasses.replace(params, data=dataclasses.replace(d, source="hub", val_source=val))
    def all_there(paths: list[str]) -> bool:
        return bool(paths) and all(params_mod.resolve_path(p).exists() for p in paths)

    if all_there(d.paths):
        val_files = all_there(d.val_paths)
        print("note: the Hugging Face hub cannot be reached, so this run reads real TinyStories from local files "
              f"({', '.join(Path(p).name for p in d.paths)}"
              + (f"; validation {', '.join(Path(p).name for p in d.val_paths)}" if val_files else "")
              + ") (data.source: auto)", flush=True)
        return dataclasses.replace(params, data=dataclasses.replace(
            d, source="files", val_source="files" if val_files else "split"))
    print("note: the Hugging Face hub cannot be reached and no local TinyStories file is there (data.paths), so "
          "this run uses the offline storyteller stand-in, not real TinyStories; every figure and the manifest "
          "say so (data.source: auto)", flush=True)
    return dataclasses.replace(params, data=dataclasses.replace(d, source="storyteller", val_source="split"))


def data_label(params: Params) -> str:
    """What the data of a run is, in a few words, for figures, captions and the manifest."""
    d = params.data
    if d.source == "storyteller":
        return f"storyteller stand-in ({d.n_stories:,} synthetic stories, not TinyStories)"
    if d.source == "llm":
        return f"LLM-written stories ({d.llm.model}, {d.n_stories:,} prompts)"
    first = f"first {d.n_stories:,} of " if d.n_stories else ""
    if d.source == "hub":
        what = d.hub_name + (f" {d.hub_data_files}" if d.hub_data_files else f" ({d.hub_split})")
        label = f"real TinyStories: {first}{what}" + (f" @ {d.hub_revision}" if d.hub_revision else "")
    else:
        at_most = f" (at most {d.n_stories:,} stories)" if d.n_stories else ""
        label = "real stories from files: " + ", ".join(Path(p).name for p in d.paths) + at_most
    if d.val_source == "files":
        label += "; validation " + ", ".join(Path(p).name for p in d.val_paths)
    elif d.val_source == "hub":
        label += "; validation " + (d.val_hub_data_files or d.val_hub_split)
    return label


class Run:
    """A profile's parameters plus the places its artifacts and figures go."""

    def __init__(self, params: Params, runs_root: str | Path | None = None, figures_root: str | Path | None = None):
        self.params = params = resolve_source(params)
        self.root = Path(runs_root or os.environ.get("TINYSTORIES_RUNS", REPO_ROOT / "runs")) / params.profile
        self.figures = Path(figures_root or os.environ.get("TINYSTORIES_FIGURES", REPO_ROOT / "figures")) / params.profile
        self.started = time.perf_counter()
        self.notebook = os.environ.get("TINYSTORIES_NOTEBOOK", "interactive")

    @classmethod
    def load(cls, profile: str = "smoke", overrides: dict | None = None, **kw) -> Run:
        return cls(params_mod.load(profile, overrides), **kw)

    def stage_dir(self, stage: str, key: str) -> Path:
        d = self.root / stage / key
        d.mkdir(parents=True, exist_ok=True)
        return d

    @staticmethod
    def building(d: Path, what: str):
        """The stage's lock on `d` (locks.exclusive), waiting a while for another process building it: the
        caller checks `is_done` again inside, since that process has usually just finished it."""
        return exclusive(d, what, wait_s=stage_wait_s())

    @staticmethod
    def is_done(d: Path) -> bool:
        return (d / "artifact.json").exists()

    @staticmethod
    def mark_done(d: Path, info: dict) -> None:
        atomic_write_json(d / "artifact.json", {"finished": datetime.now(timezone.utc).isoformat(), **info})

    @staticmethod
    def artifact(d: Path) -> dict:
        return json.loads((d / "artifact.json").read_text())

    # -- figures
    def _manifest(self) -> tuple[Path, dict]:
        path = self.figures / "manifest.json"
        return path, json.loads(path.read_text()) if path.exists() else {"profile": self.params.profile, "figures": {}}

    def record_figure(self, name: str, file: Path | None, caption: str, paper_ref: str,
                      data_file: Path | None = None) -> None:
        """List figure `name` in the manifest; with `file` None, drop it from the manifest (a figure with
        nothing plotted is not written, and an earlier entry for it would claim what this run did not show)."""
        path, manifest = self._manifest()
        if file is None:
            if manifest.get("figures", {}).pop(name, None) is not None:
                atomic_write_json(path, manifest)
            return
        manifest.setdefault("profile", self.params.profile)
        manifest.setdefault("figures", {})
        manifest["data"] = data_label(self.params)
        manifest["params_hash"] = self.params.hash()
        manifest["git_commit"] = git_commit()
        manifest["figures"][name] = {
            "file": file.name,
            "data_file": data_file.name if data_file else None,
            "caption": caption,
            "reproduces": paper_ref,
            "data": data_label(self.params),
            "notebook": self.notebook,
            "params_hash": self.params.hash(),
            "git_commit": manifest["git_commit"],
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "seconds_since_notebook_start": round(time.perf_counter() - self.started, 1),
        }
        atomic_write_json(path, manifest)

    def record_corpus(self, info: dict) -> None:
        """What the corpus stage read (sizes, the hub commit), in the manifest beside the figures made from it."""
        path, manifest = self._manifest()
        if manifest.get("corpus") == info and manifest.get("data") == data_label(self.params):
            return  # the stage is read many times a notebook: write only what changed
        manifest["data"] = data_label(self.params)
        manifest["corpus"] = info
        atomic_write_json(path, manifest)

    def record_claims(self, claims: list[dict]) -> None:
        """The paper's claims as checked on this run's figure data (`evals.claims`), in the manifest."""
        path, manifest = self._manifest()
        manifest["claims"] = claims
        manifest["claims_checked"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        atomic_write_json(path, manifest)

    def record_notebook(self, name: str, seconds: float, executed: Path) -> None:
        path, manifest = self._manifest()
        manifest.setdefault("notebooks", {})[name] = {"seconds": round(seconds, 1), "executed": str(executed)}
        manifest["params_hash"] = self.params.hash()
        manifest["git_commit"] = git_commit()
        atomic_write_json(path, manifest)
