"""Run the numbered notebooks headless with papermill on a profile: `make reproduce` / `tinystories reproduce`.

Each notebook gets `profile` (and optional `overrides`) through its `parameters` cell; the executed copy
lands in runs/<profile>/notebooks/, figures in figures/<profile>/. Parameters are validated before the
first notebook starts, so a bad profile fails in a second, not after ten minutes.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

from tinystories_lib import params as params_mod
from tinystories_lib.errors import KitError
from tinystories_lib.params import REPO_ROOT
from tinystories_lib.runs import Run, data_label

NOTEBOOK_DIR = REPO_ROOT / "notebooks"


class NotebookFailed(KitError, RuntimeError):
    """A notebook stopped with an error; its executed copy holds the traceback."""


def notebooks() -> list[Path]:
    return sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))


def select(only: list[str] | None) -> list[Path]:
    """Notebooks matching `only` ("02", "02_training", "training"); all when None."""
    allnb = notebooks()
    if not only:
        return allnb
    chosen = []
    for want in only:
        hits = [nb for nb in allnb if nb.stem == want or nb.stem.startswith(f"{want}_") or want in nb.stem]
        if not hits:
            raise params_mod.ParamsError(f"no notebook matches '{want}'; available: {', '.join(nb.stem for nb in allnb)}")
        chosen += [h for h in hits if h not in chosen]
    return sorted(chosen)


_PAPERMILL_CHATTER = ("Executing Cell", "Ending Cell", "Input Notebook", "Output Notebook", "Working directory",
                      "Executing notebook with kernel")


def _stream_papermill_log() -> None:
    """Show what the notebooks print (progress lines, tables, samples) on our stdout as they run,
    without papermill's per-cell bookkeeping lines."""
    log = logging.getLogger("papermill")
    if not any(getattr(h, "_tinystories", False) for h in log.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.addFilter(lambda r: not str(r.msg).startswith(_PAPERMILL_CHATTER))
        handler.setFormatter(logging.Formatter("  %(message)s"))
        handler._tinystories = True
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def reproduce(profile: str = "smoke", only: list[str] | None = None, overrides: dict | None = None,
              runs_root: str | Path | None = None, figures_root: str | Path | None = None,
              log_output: bool = True) -> dict:
    import papermill

    if log_output:
        _stream_papermill_log()
    if profile.endswith((".yaml", ".yml")):
        profile = str(params_mod.profile_path(profile).resolve())  # notebooks run with notebooks/ as working directory
    p = params_mod.load(profile, overrides)  # validate first
    chosen = select(only)
    run = Run(p, runs_root, figures_root)
    if p.data.source == "auto":  # decided once here, so every notebook reads the same data
        overrides = {**(overrides or {}), "data.source": run.params.data.source,
                     "data.val_source": run.params.data.val_source}
    out_dir = run.root / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    env_before = {k: os.environ.get(k) for k in ("TINYSTORIES_PROGRESS", "TINYSTORIES_NOTEBOOK", "TINYSTORIES_RUNS",
                                                 "TINYSTORIES_FIGURES")}
    os.environ["TINYSTORIES_PROGRESS"] = "text"
    os.environ["TINYSTORIES_RUNS"] = str(run.root.parent)
    os.environ["TINYSTORIES_FIGURES"] = str(run.figures.parent)
    times = {}
    t_all = time.perf_counter()
    try:
        for i, nb in enumerate(chosen, 1):
            print(f"\n=== [{i}/{len(chosen)}] {nb.stem} (profile {p.profile}) ===", flush=True)
            os.environ["TINYSTORIES_NOTEBOOK"] = nb.stem
            executed = out_dir / nb.name
            t0 = time.perf_counter()
            try:
                papermill.execute_notebook(
                    str(nb), str(executed),
                    parameters={"profile": profile, "overrides": overrides or {}},
                    cwd=str(NOTEBOOK_DIR), kernel_name="python3", log_output=log_output, progress_bar=False,
                    extra_arguments=["--IPKernelApp.log_level=ERROR"],  # no transport warnings in the output
                )
            except papermill.PapermillExecutionError as e:
                raise NotebookFailed(
                    f"notebook {nb.stem} stopped at cell [{e.exec_count}] with {e.ename}: {e.evalue}\n"
                    f"Its executed copy, with the traceback, is {executed}. Fix the cause and run the same command "
                    "again: what the earlier notebooks built is reused.") from e
            times[nb.stem] = time.perf_counter() - t0
            run.record_notebook(nb.stem, times[nb.stem], executed)
            print(f"=== {nb.stem} done in {times[nb.stem]:.0f}s ===", flush=True)
    finally:
        for k, v in env_before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    total = time.perf_counter() - t_all
    figures = sorted(run.figures.glob("*.png"))
    print(f"\nDone in {total / 60:.1f} min.")
    print(f"Figures ({len(figures)}) in {run.figures}/ (captions in manifest.json):")
    for f in figures:
        print(f"  {f.name}")
    print(f"Executed notebooks in {out_dir}/")
    claims = report_claims(run)
    return {"seconds": total, "notebooks": times, "figures": [str(f) for f in figures], "executed": str(out_dir),
            "claims": claims}


def report_claims(run: Run) -> list[dict]:
    """Check the paper's claims on the figure data of `run`, print the table and keep it in the manifest."""
    from tinystories_lib.evals.claims import check_claims, claims_table

    claims = check_claims(run.figures)
    print(f"\nThe paper's claims on this run's figures (data: {data_label(run.params)}):\n")
    print(claims_table(claims))
    rows = [c.to_dict() for c in claims]
    run.record_claims(rows)
    return rows
