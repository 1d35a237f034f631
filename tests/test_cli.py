"""The `tinystories` command end to end on the tiny profile: train (builds corpus and tokens), reuse, sample."""

import os
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


def _cli(args, tmp_path, code=None):
    """The real command in a fresh interpreter (or `code` driving tinystories_lib.cli.main), offline."""
    env = {**os.environ, "TINYSTORIES_RUNS": str(tmp_path / "runs"), "TINYSTORIES_FIGURES": str(tmp_path / "figures"),
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    cmd = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "tinystories_lib.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def test_an_expected_failure_is_one_message_without_a_traceback(tmp_path):
    """A hub that cannot be reached (HubError, a RuntimeError) once escaped as a traceback."""
    args = ["train", "--profile", "tiny", "--set", "data.source=hub", "--set", "data.hub_name=nobody/nothing"]
    out = _cli(args, tmp_path)
    assert out.returncode == 1, out.stderr
    assert out.stderr.startswith("error: could not load dataset 'nobody/nothing'") and "Traceback" not in out.stderr
    assert "--debug" in out.stderr
    debug = _cli(["--debug", *args], tmp_path)
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "HubUnavailableError" in debug.stderr


def test_a_failing_notebook_names_its_error_and_its_executed_copy(tmp_path):
    """`reproduce` on a corpus that cleaning empties: papermill's error once escaped as two tracebacks."""
    short = tmp_path / "short.txt"
    short.write_text("Hi.<|endoftext|>\nYo.<|endoftext|>\n")
    out = _cli(["reproduce", "--profile", "tiny", "--only", "01", "--set", "data.source=files",
                "--set", f"data.paths=[{short}]"], tmp_path)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert "error: notebook 01_data_creation stopped at cell" in out.stderr
    assert "only 0 stories survived cleaning" in out.stderr
    assert str(tmp_path / "runs" / "tiny" / "notebooks" / "01_data_creation.ipynb") in out.stderr


def test_a_corpus_that_cleaning_empties_is_one_message(tmp_path):
    """`train` on such a corpus: the stage's RuntimeError once escaped the CLI as a traceback."""
    short = tmp_path / "short.txt"
    short.write_text("Hi.<|endoftext|>\nYo.<|endoftext|>\n")
    out = _cli(["train", "--profile", "tiny", "--set", "data.source=files", "--set", f"data.paths=[{short}]"],
               tmp_path)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.startswith("error: only 0 stories survived cleaning")


_RAISING = """import sys
from tinystories_lib import cli, errors, locks

def fail(a):
    raise {error}

cli.cmd_params_check = fail
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.parametrize("error, expected", [
    ("locks.ArtifactBusy('process 7 is already training into runs/x; wait for it to finish')", True),
    ("errors.KitError('the corpus is empty; check data.paths')", True),
    ("ZeroDivisionError('a bug')", False),
])
def test_kit_errors_are_messages_and_bugs_keep_their_traceback(tmp_path, error, expected):
    out = _cli(["params", "check", "tiny"], tmp_path, _RAISING.format(error=error))
    assert out.returncode == 1
    message = error.split("'")[1]
    if expected:
        assert out.stderr.splitlines()[0] == f"error: {message}" and "Traceback" not in out.stderr
        debug = _cli(["--debug", "params", "check", "tiny"], tmp_path, _RAISING.format(error=error))
        assert debug.returncode == 1 and "Traceback" in debug.stderr
    else:
        assert "Traceback" in out.stderr and f"ZeroDivisionError: {message}" in out.stderr
