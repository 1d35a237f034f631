"""Weights on disk: the final model and the training checkpoints of a run directory, safetensors only.

    save_model / load_model    config.json + model.safetensors (the tied output weight left out, as HF does)
    save_checkpoint            checkpoints/step_NNNNNN/ written to a temporary directory and renamed, then
                               checkpoints/latest.json points at it; non-finite weights are refused, so
                               `latest` always names good weights
    latest_checkpoint / load_checkpoint   what a resume reads (model, optimizer, RNG and logging state)
    resume_candidates          the checkpoints a resume tries, newest first (a damaged one falls back)
    list_checkpoints           every kept step, ending with the final model
Nothing is unpickled on load, and every weights file is checked as it is read (`read_weights`: readable
to its last byte, finite): a truncated or NaN-filled file is named with what to do, never sampled."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from tinystories_lib.errors import KitError
from tinystories_lib.lm.model import GPTNeo, GPTNeoConfig
from tinystories_lib.locks import temp_path

# ---------------------------------------------------------------- checkpoints


class TrainingDiverged(KitError, RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class DamagedWeights(KitError, ValueError):
    """A weights file that cannot be read whole (truncated, not safetensors) or holds NaN/inf."""


def read_weights(path: Path, fix: str = "delete it and run the step that wrote it again") -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, refused with the file named and `fix` when it is damaged:
    safetensors checks that the header covers the file to its last byte, and no weight may be NaN/inf."""
    try:
        state = load_file(str(path))
    except Exception as e:  # SafetensorError, OSError: the library's message names no file
        raise DamagedWeights(f"{path} is damaged ({e}): {fix}") from None
    if bad := _non_finite(state):
        raise DamagedWeights(f"{path} holds non-finite weights ({', '.join(bad[:3])}): {fix}")
    return state


def _non_finite(state: dict[str, torch.Tensor]) -> list[str]:
    return [k for k, t in state.items() if t.is_floating_point() and not torch.isfinite(t).all()]


def _atomic_json(path: Path, obj) -> None:
    tmp = temp_path(path)
    tmp.write_text(json.dumps(obj, indent=2))
    tmp.replace(path)


def model_state(model: GPTNeo) -> dict[str, torch.Tensor]:
    """Weights to save: the tied `lm_head.weight` is left out, as Hugging Face does."""
    return {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if k != "lm_head.weight"}


def save_model(model: GPTNeo, directory: str | Path, extra_config: dict | None = None) -> None:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(d / "model.safetensors")
    save_file(model_state(model), str(tmp), metadata={"format": "pt"})
    tmp.replace(d / "model.safetensors")
    cfg = {"model": model.cfg.to_dict(), **(extra_config or {})}
    if (d / "config.json").exists():
        cfg = json.loads((d / "config.json").read_text()) | cfg
    _atomic_json(d / "config.json", cfg)


def load_model(directory: str | Path, device: str | torch.device = "cpu", weights: str | Path | None = None) -> GPTNeo:
    """A trained model from a run directory (config.json + model.safetensors); safetensors only."""
    d = Path(directory)
    if not (d / "config.json").exists():
        raise FileNotFoundError(f"{d} is not a model directory: config.json is missing")
    cfg = GPTNeoConfig.from_dict(json.loads((d / "config.json").read_text())["model"])
    path = Path(weights) if weights else d / "model.safetensors"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: the run in {d} has not finished (resume it with the same command)")
    fix = (f"run the training again (the same command or cell): it rebuilds {path.name} from the last checkpoint, "
           f"or retrains if none is left" if path == d / "model.safetensors" else
           f"delete {path.parent} and run this again (the other checkpoints are used)")
    model = GPTNeo(cfg)
    _load_weights(model, read_weights(path, fix))
    return model.to(device).eval()


def _load_weights(model: GPTNeo, state: dict[str, torch.Tensor]) -> None:
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise ValueError(f"checkpoint does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}")


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    sd = opt.state_dict()
    tensors = {}
    for pid, st in sd["state"].items():
        for name, val in st.items():
            tensors[f"{pid}.{name}"] = val.detach().cpu() if torch.is_tensor(val) else torch.tensor(val)
    return tensors, sd["param_groups"]


def save_checkpoint(out_dir: Path, step: int, model: GPTNeo, opt, keep: set[int], keep_last: int,
                    extra: dict | None = None) -> Path:
    """`extra` (JSON) joins the step in state.json: what else a resume needs to continue exactly."""
    ckdir = out_dir / "checkpoints"
    ckdir.mkdir(parents=True, exist_ok=True)
    final = ckdir / f"step_{step:06d}"
    for stale in ckdir.glob(".tmp_step_*"):  # left by a killed process: the run's lock says none is live
        shutil.rmtree(stale, ignore_errors=True)
    tmp = ckdir / f".tmp_step_{step:06d}.{os.getpid()}"
    state = model_state(model)
    if bad := _non_finite(state):  # the last good checkpoint stays `latest`
        raise TrainingDiverged(f"weights became non-finite ({', '.join(bad[:3])}) by step {step} in {out_dir}; "
                               "not checkpointed, the last good checkpoint is kept. Lower train.lr.")
    tmp.mkdir()
    save_file(state, str(tmp / "model.safetensors"))
    tensors, groups = _optimizer_tensors(opt)
    tensors["rng.torch"] = torch.get_rng_state()
    save_file(tensors, str(tmp / "optim.safetensors"))
    (tmp / "state.json").write_text(json.dumps({"step": step, "param_groups": groups, **(extra or {})}))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    _atomic_json(ckdir / "latest.json", {"step": step, "dir": final.name})
    # Drop older rolling checkpoints; keep the ones asked for (emergence over training).
    rolling = sorted(p for p in ckdir.glob("step_*") if int(p.name[5:]) not in keep)
    for old in rolling[:-keep_last] if keep_last else rolling:
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(out_dir: Path) -> Path | None:
    ptr = out_dir / "checkpoints" / "latest.json"
    try:
        d = out_dir / "checkpoints" / json.loads(ptr.read_text())["dir"]
    except (OSError, ValueError, KeyError):  # absent, or damaged: resume_candidates still finds the others
        return None
    return d if (d / "state.json").exists() else None


def resume_candidates(out_dir: Path) -> list[Path]:
    """The checkpoint `latest.json` names, then every other kept one, newest first: a resume takes the
    first that reads whole."""
    found = sorted((p for p in (out_dir / "checkpoints").glob("step_*") if p.is_dir()), reverse=True)
    latest = latest_checkpoint(out_dir)
    return ([latest] if latest else []) + [p for p in found if p != latest]


def load_checkpoint(ck: Path, model: GPTNeo, opt) -> dict:
    """Restore `ck` into `model` and `opt` (and torch's RNG); returns its state.json (step, extras). Every
    file is read and checked first (DamagedWeights), so a damaged checkpoint changes nothing."""
    fix = "resuming from an earlier checkpoint instead"
    weights = read_weights(ck / "model.safetensors", fix)
    tensors = read_weights(ck / "optim.safetensors", fix)
    try:
        state = json.loads((ck / "state.json").read_text())
    except (OSError, ValueError) as e:
        raise DamagedWeights(f"{ck / 'state.json'} is damaged ({e}): {fix}") from None
    _load_weights(model, weights)
    torch.set_rng_state(tensors.pop("rng.torch"))
    opt_state: dict[int, dict] = {}
    for key, val in tensors.items():
        pid, name = key.split(".", 1)
        opt_state.setdefault(int(pid), {})[name] = val
    opt.load_state_dict({"state": opt_state, "param_groups": state["param_groups"]})
    return state


def list_checkpoints(out_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, weights file) of every checkpoint kept, oldest first, ending with the final model once the
    run has finished: one entry per step (the final weights stand for the checkpoint of the last step)."""
    out_dir = Path(out_dir)
    found = {int(p.name[5:]): p / "model.safetensors" for p in (out_dir / "checkpoints").glob("step_*")
             if (p / "model.safetensors").exists()}
    summary = out_dir / "summary.json"
    if summary.exists() and (out_dir / "model.safetensors").exists():
        found[int(json.loads(summary.read_text())["steps"])] = out_dir / "model.safetensors"
    return sorted(found.items())
