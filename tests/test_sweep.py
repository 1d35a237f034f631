"""The sweep as parallel jobs: one process per slot, the same artifacts as a sequential run."""

import os

import pytest

from tinystories_lib import stages
from tinystories_lib.runs import Run


def test_slots_split_cpu_cores_or_take_one_gpu_each():
    cores = os.cpu_count() or 1
    assert stages.sweep_slots(1, "cpu") == [("cpu", cores)]
    assert stages.sweep_slots(0, "cpu") == [("cpu", cores)]  # no GPU: one at a time
    assert stages.sweep_slots(2, "cpu") == [("cpu", max(1, cores // 2))] * 2


@pytest.mark.slow
def test_parallel_sweep_writes_the_artifacts_a_sequential_sweep_reuses(tmp_path):
    over = {"sweep.jobs": 2, "sweep.max_steps": 8, "sweep.hidden": [16, 32], "sweep.layers": [1]}
    run = Run.load("tiny", over, runs_root=tmp_path / "runs", figures_root=tmp_path / "figures")
    parallel = stages.sweep(run, progress=False)
    assert [r.label for r in parallel] == ["h16-l1", "h32-l1"]
    for r in parallel:
        assert (r.dir / "model.safetensors").exists() and r.summary["steps"] == 8
    mtimes = {r.label: (r.dir / "model.safetensors").stat().st_mtime_ns for r in parallel}
    # One at a time now, as on a machine with one device: every model is found and reused, not retrained.
    again = stages.sweep(Run.load("tiny", {**over, "sweep.jobs": 1}, runs_root=tmp_path / "runs",
                                    figures_root=tmp_path / "figures"), progress=False)
    assert [r.dir for r in again] == [r.dir for r in parallel]
    assert {r.label: (r.dir / "model.safetensors").stat().st_mtime_ns for r in again} == mtimes
    assert [r.val_loss for r in again] == [r.val_loss for r in parallel]


@pytest.mark.slow
def test_a_sweep_shape_trained_longer_is_its_own_model_and_reused(tmp_path):
    over = {"sweep.max_steps": 6, "sweep.hidden": [16], "sweep.layers": [1]}
    run = Run.load("tiny", over, runs_root=tmp_path / "runs", figures_root=tmp_path / "figures")
    (short,) = stages.sweep(run, progress=False)
    assert stages.trained_longer(run, short, 6) is short  # the sweep's own budget: nothing to train
    longer = stages.trained_longer(run, short, 12, progress=False)
    assert longer.label == "h16-l1-12steps" and longer.dir != short.dir and longer.summary["steps"] == 12
    assert (longer.hidden, longer.layers, longer.heads) == (short.hidden, short.layers, short.heads)
    mtime = (longer.dir / "model.safetensors").stat().st_mtime_ns
    again = stages.trained_longer(run, short, 12, progress=False)
    assert again.dir == longer.dir and (again.dir / "model.safetensors").stat().st_mtime_ns == mtime
