"""Where a profile's artifacts live, and how a stage knows it can reuse them.

    runs/<profile>/<stage>/<key>/   one directory per stage and parameter hash; `artifact.json` is written
                                    last, so a directory without it is an unfinished stage (recomputed or
                                    resumed), and a changed parameter gets a new key (recomputed).
    runs/<profile>/notebooks/       executed notebooks
    figures/<profile>/              figures and `manifest.json` (how each was made)
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

from tinystories_lib import params as params_mod
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
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    tmp.replace(path)


class Run:
    """A profile's parameters plus the places its artifacts and figures go."""

    def __init__(self, params: Params, runs_root: str | Path | None = None, figures_root: str | Path | None = None):
        self.params = params
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
    def is_done(d: Path) -> bool:
        return (d / "artifact.json").exists()

    @staticmethod
    def mark_done(d: Path, info: dict) -> None:
        atomic_write_json(d / "artifact.json", {"finished": datetime.now(timezone.utc).isoformat(), **info})

    @staticmethod
    def artifact(d: Path) -> dict:
        return json.loads((d / "artifact.json").read_text())

    # -- figures
    def record_figure(self, name: str, file: Path, caption: str, paper_ref: str) -> None:
        path = self.figures / "manifest.json"
        manifest = json.loads(path.read_text()) if path.exists() else {}
        manifest.setdefault("profile", self.params.profile)
        manifest.setdefault("figures", {})
        manifest["params_hash"] = self.params.hash()
        manifest["git_commit"] = git_commit()
        manifest["figures"][name] = {
            "file": file.name,
            "caption": caption,
            "reproduces": paper_ref,
            "notebook": self.notebook,
            "params_hash": self.params.hash(),
            "git_commit": manifest["git_commit"],
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "seconds_since_notebook_start": round(time.perf_counter() - self.started, 1),
        }
        atomic_write_json(path, manifest)

    def record_notebook(self, name: str, seconds: float, executed: Path) -> None:
        path = self.figures / "manifest.json"
        manifest = json.loads(path.read_text()) if path.exists() else {"profile": self.params.profile, "figures": {}}
        manifest.setdefault("notebooks", {})[name] = {"seconds": round(seconds, 1), "executed": str(executed)}
        manifest["params_hash"] = self.params.hash()
        manifest["git_commit"] = git_commit()
        atomic_write_json(path, manifest)
