"""The training entry point under torchrun: 2 CPU processes (gloo) against 1 process with the same
global batch. Each rank takes its slice of the same global batch, so the curves agree up to the order
of floating-point sums; we require 1e-4 (observed differences are ~1e-6)."""

import subprocess
import sys
from pathlib import Path

import pytest

from tinystories_lib.lm.train import read_metrics

pytestmark = pytest.mark.slow

SCRIPT = """
import sys
sys.path.insert(0, {root!r})
from tests.test_train import MODEL, cfg, data
from tinystories_lib.lm.train import train
train(MODEL, cfg(batch_size={batch}, max_steps=12, eval_interval=4), data(), data(4000, 1), {out!r}, progress=False)
"""


def _run(tmp_path, nproc, batch, name):
    root = str(Path(__file__).resolve().parents[1])
    out = tmp_path / name
    script = tmp_path / f"{name}.py"
    script.write_text(SCRIPT.format(root=root, batch=batch, out=str(out)))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", str(script)]
    if nproc == 1:
        cmd = [sys.executable, str(script)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return read_metrics(out / "metrics.jsonl")


def test_two_process_ddp_matches_one_process_with_the_same_global_batch(tmp_path):
    one = _run(tmp_path, 1, 8, "single")
    two = _run(tmp_path, 2, 4, "ddp")
    assert [r["step"] for r in one] == [r["step"] for r in two] == list(range(1, 13))
    for a, b in zip(one, two):
        assert abs(a["train_loss"] - b["train_loss"]) < 1e-4, (a, b)
        assert a["tokens"] == b["tokens"]
        if "val_loss" in a:
            assert abs(a["val_loss"] - b["val_loss"]) < 1e-4


def test_torchrun_cli_train_builds_data_once_and_trains(tmp_path):
    """The documented launch: `torchrun --nproc_per_node=2 -m tinystories_lib.cli train --profile ...`."""
    root = Path(__file__).resolve().parents[1]
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(root),
           "TINYSTORIES_RUNS": str(tmp_path / "runs"), "TINYSTORIES_PROGRESS": "text"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "tinystories_lib.cli", "train", "--profile", "tiny", "--set", "train.max_steps=6",
           "--set", "train.eval_interval=3"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("trained main-h32-l2") == 1  # rank 0 reports
    (model_dir,) = (tmp_path / "runs" / "tiny" / "models").iterdir()
    assert (model_dir / "model.safetensors").exists() and (model_dir / "tokenizer.json").exists()
    assert [r["step"] for r in read_metrics(model_dir / "metrics.jsonl")][-1] == 6
    assert len(list((tmp_path / "runs" / "tiny" / "corpus").iterdir())) == 1
