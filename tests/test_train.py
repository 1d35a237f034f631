import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tinystories_lib.lm.checkpoints import latest_checkpoint, load_model
from tinystories_lib.lm.model import GPTNeoConfig
from tinystories_lib.lm.train import (
    TrainConfig,
    TrainingDiverged,
    lr_at,
    read_metrics,
    train,
    what_is_learned,
)

MODEL = GPTNeoConfig(vocab_size=64, context=32, hidden=32, layers=2, heads=4, window=8)


def data(n=20000, seed=0):
    # a learnable sequence: repeating patterns with noise
    rng = np.random.default_rng(seed)
    base = np.tile(np.arange(64, dtype=np.uint16), n // 64 + 1)[:n]
    noise = rng.random(n) < 0.1
    base[noise] = rng.integers(0, 64, noise.sum())
    return base


def cfg(**kw):
    c = dict(batch_size=4, max_steps=20, lr=3e-3, min_lr=3e-4, warmup_steps=3, eval_interval=5, eval_batches=2,
             threads=1, seed=11, log_interval=1)
    c.update(kw)
    return TrainConfig(**c)


def test_lr_schedule():
    c = cfg(max_steps=100, warmup_steps=10)
    assert lr_at(0, c) == pytest.approx(3e-4) and lr_at(9, c) == pytest.approx(3e-3)
    assert lr_at(100, c) == pytest.approx(3e-4) and lr_at(55, c) == pytest.approx((3e-3 + 3e-4) / 2)


def test_loss_falls_and_artifacts_are_written(tmp_path):
    s = train(MODEL, cfg(max_steps=40), data(), data(4000, 1), tmp_path, progress=False)
    rows = read_metrics(tmp_path / "metrics.jsonl")
    vals = [r["val_loss"] for r in rows if "val_loss" in r]
    assert vals[-1] < vals[0] - 0.5
    assert {"step", "train_loss", "lr", "tokens", "tokens_per_s", "wall_s"} <= rows[0].keys()
    assert (tmp_path / "model.safetensors").exists() and json.loads((tmp_path / "config.json").read_text())["model"]["hidden"] == 32
    assert s["final_val_loss"] == pytest.approx(vals[-1])
    m = load_model(tmp_path)
    assert m.cfg.window == 8
    # finished: a second call reuses it
    assert train(MODEL, cfg(max_steps=40), data(), data(4000, 1), tmp_path, progress=False)["skipped"]


def test_checkpoints_hold_no_pickles(tmp_path):
    train(MODEL, cfg(checkpoint_steps=[5]), data(), data(4000, 1), tmp_path, progress=False)
    ck = tmp_path / "checkpoints" / "step_000005"
    assert sorted(p.name for p in ck.iterdir()) == ["model.safetensors", "optim.safetensors", "state.json"]
    load_file(str(ck / "optim.safetensors"))  # plain tensors


@pytest.mark.parametrize("cpu_bf16", [False, True])
def test_resume_is_exact(tmp_path, cpu_bf16):
    full = tmp_path / "full"
    part = tmp_path / "part"
    c = cfg(cpu_bf16=cpu_bf16)
    train(MODEL, c, data(), data(4000, 1), full, progress=False)
    out = train(MODEL, c, data(), data(4000, 1), part, progress=False, stop_after=8)
    assert out["stopped_at"] == 8 and not (part / "model.safetensors").exists()
    train(MODEL, c, data(), data(4000, 1), part, progress=False)
    a = {r["step"]: r for r in read_metrics(full / "metrics.jsonl")}
    b = {r["step"]: r for r in read_metrics(part / "metrics.jsonl")}
    assert sorted(a) == sorted(b) == list(range(1, 21))  # no step lost or logged twice
    for step in range(9, 21):
        assert b[step]["train_loss"] == a[step]["train_loss"], step
    wa, wb = load_file(str(full / "model.safetensors")), load_file(str(part / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


KILL_SCRIPT = """
import sys, numpy as np
sys.path.insert(0, {root!r})
from tests.test_train import MODEL, cfg, data
from tinystories_lib.lm.train import train
train(MODEL, cfg(max_steps=400, eval_interval=10), data(), data(4000, 1), {out!r}, progress=False)
"""


def test_resume_after_sigkill(tmp_path):
    """Kill a real training process mid-run; the rerun resumes from its last checkpoint and ends
    with the same weights as an uninterrupted run."""
    root = str(Path(__file__).resolve().parents[1])
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT.format(root=root, out=str(out))],
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    while time.time() < deadline and (latest_checkpoint(out) is None or json.loads(
            (out / "checkpoints" / "latest.json").read_text())["step"] < 20):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = json.loads((out / "checkpoints" / "latest.json").read_text())["step"]
    assert 20 <= killed_at < 400 and not (out / "model.safetensors").exists()
    c = cfg(max_steps=400, eval_interval=10)
    train(MODEL, c, data(), data(4000, 1), out, progress=False)
    ref = tmp_path / "ref"
    train(MODEL, c, data(), data(4000, 1), ref, progress=False)
    wa, wb = load_file(str(ref / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    steps = [r["step"] for r in read_metrics(out / "metrics.jsonl")]
    assert steps == sorted(set(steps)) and steps[-1] == 400


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(tmp_path):
    # A good run to step 10 (checkpointed), then resumed with an absurd learning rate: it diverges within a
    # step or two, and step 10's checkpoint stays the latest, unchanged.
    train(MODEL, cfg(max_steps=50, eval_interval=5), data(), data(4000, 1), tmp_path, progress=False, stop_after=10)
    good = latest_checkpoint(tmp_path)
    before = load_file(str(good / "model.safetensors"))
    with pytest.raises(TrainingDiverged, match="Lower train.lr"):
        train(MODEL, cfg(lr=1e30, min_lr=1e30, warmup_steps=1, max_steps=50, eval_interval=5), data(), data(4000, 1),
              tmp_path, progress=False)
    assert latest_checkpoint(tmp_path) == good
    after = load_file(str(good / "model.safetensors"))
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(torch.isfinite(t).all() for t in after.values())
    assert not (tmp_path / "model.safetensors").exists()


def test_non_finite_weights_are_never_checkpointed(tmp_path):
    from tinystories_lib.lm.checkpoints import save_checkpoint
    from tinystories_lib.lm.model import GPTNeo

    model = GPTNeo(MODEL)
    opt = torch.optim.AdamW(model.parameters())
    save_checkpoint(tmp_path, 1, model, opt, set(), 2)
    with torch.no_grad():
        model.transformer.h[0].mlp.c_fc.weight[0, 0] = float("inf")
    with pytest.raises(TrainingDiverged, match="non-finite"):
        save_checkpoint(tmp_path, 2, model, opt, set(), 2)
    assert latest_checkpoint(tmp_path).name == "step_000001"


def test_evaluate_builds_no_autograd_graph():
    from tinystories_lib.lm.model import GPTNeo
    from tinystories_lib.lm.train import Batches, evaluate

    model = GPTNeo(GPTNeoConfig(vocab_size=64, context=16, hidden=16, layers=1, heads=2)).train()
    seen = []
    model.register_forward_hook(lambda m, i, o: seen.append(torch.is_grad_enabled()))
    loss = evaluate(model, Batches(data() % 64, 16, 4, seed=0), 2, "cpu")
    assert seen == [False, False] and np.isfinite(loss) and model.training  # no grad, and mode restored


def test_cpu_bf16_trains_close_to_fp32_and_is_its_own_model(tmp_path):
    """train.cpu_bf16 (bf16 matmuls under CPU autocast) learns like fp32, within bf16's rounding, and is
    part of what a model is (a finished fp32 run is not reused for it)."""
    runs = {}
    for bf16 in (False, True):
        train(MODEL, cfg(cpu_bf16=bf16), data(), data(4000, 1), tmp_path / str(bf16), progress=False)
        runs[bf16] = read_metrics(tmp_path / str(bf16) / "metrics.jsonl")
    assert runs[True][-1]["train_loss"] != runs[False][-1]["train_loss"]  # bf16 really ran
    first, last = runs[True][0]["train_loss"], runs[True][-1]["train_loss"]
    assert last < first - 0.3
    assert abs(runs[True][-1]["val_loss"] - runs[False][-1]["val_loss"]) < 0.05
    assert what_is_learned({"train": asdict(cfg(cpu_bf16=True))}) != what_is_learned({"train": asdict(cfg())})


def test_compiled_training_matches_eager(tmp_path):
    """train.compile: the same run through torch.compile (inductor, CPU) follows the eager losses (~20 s of compiling)."""
    import shutil

    if not (shutil.which("gcc") or shutil.which("cc") or shutil.which("clang")):
        pytest.skip("torch.compile on CPU needs a C compiler (gcc/clang); none on PATH")
    eager = train(MODEL, cfg(max_steps=6, eval_interval=3), data(), data(4000, 1), tmp_path / "eager", progress=False)
    compiled = train(MODEL, cfg(max_steps=6, eval_interval=3, compile=True), data(), data(4000, 1), tmp_path / "compiled",
                     progress=False)
    a = [r["train_loss"] for r in read_metrics(tmp_path / "eager" / "metrics.jsonl")]
    b = [r["train_loss"] for r in read_metrics(tmp_path / "compiled" / "metrics.jsonl")]
    assert len(a) == len(b) == 6  # every step logged
    assert np.allclose(a, b, rtol=1e-4, atol=1e-5), (a, b)
    assert abs(eager["final_val_loss"] - compiled["final_val_loss"]) < 1e-4
    assert compiled["config"]["train"]["compile"] is True
