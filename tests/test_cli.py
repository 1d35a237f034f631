"""The `tinystories` command end to end on the tiny profile: train (builds corpus and tokens), reuse, sample."""

import subprocess
import sys

import pytest

from tinystories_lib.cli import main

pytestmark = pytest.mark.slow


def test_train_then_sample(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TINYSTORIES_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("TINYSTORIES_PROGRESS", "text")
    assert main(["train", "--profile", "tiny", "--set", "train.max_steps=12"]) == 0
    out = capsys.readouterr().out
    assert "trained main-h32-l2" in out
    model_dir = out.split("model directory: ")[1].strip()
    assert main(["train", "--profile", "tiny", "--set", "train.max_steps=12"]) == 0
    assert "reused" in capsys.readouterr().out
    assert main(["sample", "--model", model_dir, "--prompt", "Lily went to the", "--n", "2",
                 "--max-new-tokens", "20", "--temperature", "0"]) == 0
    text = capsys.readouterr().out
    assert text.count("--- sample") == 2 and text.count("Lily went to the") == 2


def test_bad_parameter_exits_2_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TINYSTORIES_RUNS", str(tmp_path / "runs"))
    assert main(["train", "--profile", "tiny", "--set", "model.heads=3"]) == 2
    assert "model.hidden" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_missing_model_dir_is_a_clear_error(tmp_path, capsys):
    assert main(["sample", "--model", str(tmp_path), "--prompt", "x"]) == 2
    assert "config.json is missing" in capsys.readouterr().err


def test_console_entry_point_is_installed():
    out = subprocess.run([sys.executable, "-m", "tinystories_lib.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "reproduce" in out.stdout and "params" in out.stdout


@pytest.mark.parametrize("args, says", [
    (["--temperature", "-1"], "temperature must be >= 0"),
    (["--top-k", "-5"], "top_k must be >= 0"),
    (["--top-p", "0"], "top_p must be in (0, 1]"),
    (["--max-new-tokens", "0"], "max_new_tokens must be at least 1"),
    (["--n", "0"], "--n must be at least 1"),
    (["--device", "tpu"], "unknown device 'tpu'"),
])
def test_bad_sampling_options_are_clear_errors(tmp_path, capsys, args, says):
    assert main(["sample", "--model", str(tmp_path), "--prompt", "x", *args]) == 2
    assert says in capsys.readouterr().err


def test_cuda_without_cuda_is_a_clear_error(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(["sample", "--model", str(tmp_path), "--device", "cuda"]) == 2
    assert "no usable CUDA GPU" in capsys.readouterr().err


def test_cli_usage_errors_exit_2(capsys):
    assert main(["reproduce", "--only", "99"]) == 2
    assert "no notebook matches '99'" in capsys.readouterr().err
    assert main(["params", "check", "tiny", "--set", "train"]) == 2
    assert "--set expects key=value, got 'train'" in capsys.readouterr().err
