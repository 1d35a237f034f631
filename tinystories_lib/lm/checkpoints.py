"""Weights on disk: the final model and the training checkpoints of a run directory, safetensors only.

    save_model / load_model    config.json + model.safetensors (the tied output weight left out, as HF does)
    save_checkpoint            checkpoints/step_NNNNNN/ written to a temporary directory and renamed, then
                               checkpoints/latest.json points at it; non-finite weights are refused, so
                               `latest` always names good weights
    latest_checkpoint / load_checkpoint   what a resume reads (model, optimizer, RNG state)
    list_checkpoints           every kept step, ending with the final model
Nothing is unpickled on load."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from tinystories_lib.lm.model import GPTNeo, GPTNeoConfig

# ---------------------------------------------------------------- checkpoints


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def _atomic_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    tmp.replace(path)


def model_state(model: GPTNeo) -> dict[str, torch.Tensor]:
    """Weights to save: the tied `lm_head.weight` is left out, as Hugging Face does."""
    return {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if k != "lm_head.weight"}


def save_model(model: GPTNeo, directory: str | Path, extra_config: dict | None = None) -> None:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / "model.safetensors.tmp"
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
    model = GPTNeo(cfg)
    _load_weights(model, load_file(str(path)))
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


def save_checkpoint(out_dir: Path, step: int, model: GPTNeo, opt, keep: set[int], keep_last: int) -> Path:
    ckdir = out_dir / "checkpoints"
    ckdir.mkdir(parents=True, exist_ok=True)
    final = ckdir / f"step_{step:06d}"
    tmp = ckdir / f".tmp_step_{step:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    state = model_state(model)
    bad = [k for k, t in state.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:  # the last good checkpoint stays `latest`
        raise TrainingDiverged(f"weights became non-finite ({', '.join(bad[:3])}) by step {step} in {out_dir}; "
                               "not checkpointed, the last good checkpoint is kept. Lower train.lr.")
    tmp.mkdir()
    save_file(state, str(tmp / "model.safetensors"))
    tensors, groups = _optimizer_tensors(opt)
    tensors["rng.torch"] = torch.get_rng_state()
    save_file(tensors, str(tmp / "optim.safetensors"))
    (tmp / "state.json").write_text(json.dumps({"step": step, "param_groups": groups}))
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
    if not ptr.exists():
        return None
    d = out_dir / "checkpoints" / json.loads(ptr.read_text())["dir"]
    return d if (d / "state.json").exists() else None


def load_checkpoint(ck: Path, model: GPTNeo, opt) -> int:
    _load_weights(model, load_file(str(ck / "model.safetensors")))
    state = json.loads((ck / "state.json").read_text())
    tensors = load_file(str(ck / "optim.safetensors"))
    torch.set_rng_state(tensors.pop("rng.torch"))
    opt_state: dict[int, dict] = {}
    for key, val in tensors.items():
        pid, name = key.split(".", 1)
        opt_state.setdefault(int(pid), {})[name] = val
    opt.load_state_dict({"state": opt_state, "param_groups": state["param_groups"]})
    return int(state["step"])


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
