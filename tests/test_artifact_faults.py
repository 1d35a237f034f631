"""Faults on the artifacts of a run, with real processes and real files: two processes on one artifact,
kills and Ctrl-C at chosen steps, truncated, NaN and foreign files, damaged lines, a pathological line."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load, load_file, save_file

from tests.test_train import MODEL, cfg, data
from tinystories_lib.lm.checkpoints import latest_checkpoint, load_model
from tinystories_lib.lm.train import read_metrics, train
from tinystories_lib.runs import Run

ROOT = str(Path(__file__).resolve().parents[1])
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
TIMING = {"tokens_per_s", "wall_s", "eval_s"}  # the only fields two runs may differ in


def _python(code: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", f"import sys; sys.path.insert(0, {ROOT!r})\n{code}"],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _rows(out: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in read_metrics(out / "metrics.jsonl")]


def _same_weights(a: Path, b: Path) -> bool:
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


# ---------------------------------------------------------------- one process per artifact


TRAIN_SLOWLY = """
from tests.test_train import MODEL, cfg, data
from tinystories_lib.lm.train import train
train(MODEL, cfg(max_steps=100000, eval_interval=1000), data(), data(4000, 1), {out!r}, progress=False)
"""


def test_a_second_training_process_is_refused_naming_the_first(tmp_path):
    out = tmp_path / "run"
    first = second = _python(TRAIN_SLOWLY.format(out=str(out)))
    try:
        deadline = time.time() + 120
        while time.time() < deadline and len(read_metrics(out / "metrics.jsonl")) < 3:
            time.sleep(0.05)
        assert first.poll() is None, first.communicate()[1][-2000:]
        second = _python(TRAIN_SLOWLY.format(out=str(out)))
        _, err = second.communicate(timeout=120)
        assert second.returncode != 0 and "ArtifactBusy" in err, err[-2000:]
        assert f"process {first.pid} is already training into {out}" in err, err[-2000:]
        steps = [r["step"] for r in read_metrics(out / "metrics.jsonl")]
        assert steps == list(range(1, len(steps) + 1))  # one row a step: only the first process logs
    finally:
        for p in {first, second}:  # the second too: it would train on when refusing fails
            p.kill()
            p.communicate()


HOLD_LOCK = """
import time
from pathlib import Path
from tinystories_lib.locks import exclusive
Path({path!r}).mkdir(parents=True, exist_ok=True)  # as Run.stage_dir does before a stage locks it
with exclusive({path!r}, "building"):
    print("held", flush=True)
    time.sleep({seconds})
"""


def _stage_dir(run: Run, stage: str) -> Path:
    key = run.params.section_hash("data") if stage == "corpus" else run.params.section_hash("data", "tokenizer")
    return run.root / stage / key


def _hold(path: Path, seconds: float) -> subprocess.Popen:
    holder = _python(HOLD_LOCK.format(path=str(path), seconds=seconds))
    assert holder.stdout.readline().strip() == "held"
    return holder


@pytest.mark.parametrize("stage", ["corpus", "tokens"])
def test_a_stage_another_process_is_building_waits_then_says_who(tmp_path, stage, monkeypatch, capsys):
    from tinystories_lib import stages
    from tinystories_lib.locks import ArtifactBusy

    run = Run.load("tiny", {"data.n_stories": 200}, runs_root=tmp_path / "runs", figures_root=tmp_path / "figs")
    build = stages.corpus if stage == "corpus" else stages.shards
    holder = _hold(_stage_dir(run, stage), 60)
    try:
        monkeypatch.setenv("TINYSTORIES_LOCK_WAIT_S", "1")
        t0 = time.perf_counter()
        with pytest.raises(ArtifactBusy, match=f"process {holder.pid} is already .* {_stage_dir(run, stage)}; wait"):
            build(run, progress=False)
        assert time.perf_counter() - t0 >= 0.9  # it waited before giving up
        assert not Run.is_done(_stage_dir(run, stage))
    finally:
        holder.kill()
        holder.communicate()
    holder = _hold(_stage_dir(run, stage), 1.5)  # a process that finishes while this one waits
    monkeypatch.setenv("TINYSTORIES_LOCK_WAIT_S", "60")
    t0 = time.perf_counter()
    assert Run.is_done(build(run, progress=False))
    assert time.perf_counter() - t0 >= 1.0 and "waiting up to 60 s" in capsys.readouterr().out
    holder.communicate()


def test_temporary_files_are_this_processs_own(tmp_path):
    """A writer never renames another process's half-written file (the `.tmp` names were shared)."""
    from tinystories_lib.lm.checkpoints import save_model
    from tinystories_lib.lm.model import GPTNeo
    from tinystories_lib.lm.tokenizer import train_bpe, write_shard
    from tinystories_lib.stories.records import Story, write_jsonl

    names = ["stories.jsonl", "model.safetensors", "config.json", "train.bin", "tokenizer.json"]
    theirs = {name: tmp_path / f"{name}.tmp" for name in names}  # the names the old writers used
    for path in theirs.values():
        path.write_text("another process is writing this")
    write_jsonl([Story(id="a", text="One story.", source="test")], tmp_path / "stories.jsonl")
    save_model(GPTNeo(MODEL), tmp_path)  # model.safetensors and config.json
    codec = train_bpe(["Once upon a time there was a cat."] * 10, 300)
    codec.save(tmp_path)
    write_shard(codec, ["A cat."], tmp_path / "train.bin")
    for name, path in theirs.items():
        assert path.read_text() == "another process is writing this", name
        assert (tmp_path / name).exists()


# ---------------------------------------------------------------- interrupted runs log what an uninterrupted one does


# The training data, as a real array that sends this process `sig` while step `at` (0-based) reads the
# windows of its second micro-batch: a kill or a Ctrl-C at a chosen point of a real run.
INTERRUPT = """
import os, signal, numpy as np
signal.signal(signal.SIGINT, signal.default_int_handler)  # a shell's background job starts with SIGINT ignored
from tests.test_train import MODEL, cfg, data
from tinystories_lib.lm.train import train
c = cfg(**{kw!r})
class Signalling(np.ndarray):
    reads = 0
    def __getitem__(self, key):
        Signalling.reads += 1
        if Signalling.reads > ({at} * c.grad_accum + 1) * c.batch_size:
            os.kill(os.getpid(), {sig})
        return np.asarray(super().__getitem__(key))
train(MODEL, c, data().view(Signalling), data(4000, 1), {out!r}, progress=False)
"""


@pytest.mark.parametrize("sig, kw", [
    # a kill before the first checkpoint: the rows it logged were appended to again
    (signal.SIGKILL, dict(eval_interval=20, grad_accum=2)),
    # Ctrl-C between log rows: the next row averaged only the steps after the resume
    (signal.SIGINT, dict(log_interval=5, grad_accum=2)),
], ids=["kill-9-before-a-checkpoint", "ctrl-c-between-log-rows"])
def test_an_interrupted_run_logs_the_rows_of_an_uninterrupted_one(tmp_path, sig, kw):
    out, ref = tmp_path / "interrupted", tmp_path / "ref"
    child = _python(INTERRUPT.format(kw=kw, at=7, sig=int(sig), out=str(out)))
    _, err = child.communicate(timeout=120)
    assert child.returncode in (-sig, 128 + sig, 1), err[-2000:]
    if sig == signal.SIGKILL:
        assert latest_checkpoint(out) is None and [r["step"] for r in read_metrics(out / "metrics.jsonl")] == list(range(1, 8))
    else:
        assert "KeyboardInterrupt" in err and latest_checkpoint(out).name == "step_000007"
    train(MODEL, cfg(**kw), data(), data(4000, 1), out, progress=False)
    train(MODEL, cfg(**kw), data(), data(4000, 1), ref, progress=False)
    assert _rows(out) == _rows(ref)  # row for row: steps, train and validation losses, learning rates
    assert _same_weights(out, ref)


def test_stop_between_log_rows_resumes_the_running_loss(tmp_path):
    c = cfg(log_interval=5)
    train(MODEL, c, data(), data(4000, 1), tmp_path / "ref", progress=False)
    assert train(MODEL, c, data(), data(4000, 1), tmp_path / "part", progress=False, stop_after=7)["stopped_at"] == 7
    train(MODEL, c, data(), data(4000, 1), tmp_path / "part", progress=False)
    assert _rows(tmp_path / "part") == _rows(tmp_path / "ref")


# ---------------------------------------------------------------- damaged weights


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _nan(path: Path) -> None:
    save_file({k: torch.full_like(v, float("nan")) for k, v in load(path.read_bytes()).items()}, str(path))


@pytest.mark.parametrize("damage, says", [(_truncate, "is damaged"), (_nan, "non-finite")], ids=["truncated", "nan"])
def test_a_damaged_final_model_is_named_on_load_and_rebuilt_by_training(tmp_path, damage, says):
    out = tmp_path / "run"
    train(MODEL, cfg(), data(), data(4000, 1), out, progress=False)
    good = load((out / "model.safetensors").read_bytes())  # a copy: load_file maps the file damaged below
    damage(out / "model.safetensors")
    with pytest.raises(ValueError, match=re.escape(str(out / "model.safetensors")) + f" .*{says}.*run the training again"):
        load_model(out)
    again = train(MODEL, cfg(), data(), data(4000, 1), out, progress=False)
    assert "skipped" not in again and again["steps"] == 20  # rebuilt from the final checkpoint, not reused
    rebuilt = load_model(out).state_dict()
    assert all(torch.equal(good[k], rebuilt[k]) for k in good)
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == list(range(1, 21))


@pytest.mark.parametrize("damage", [_truncate, _nan], ids=["truncated", "nan"])
def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_kept_one(tmp_path, damage, capsys):
    c = cfg(checkpoint_steps=[5])
    ref, out = tmp_path / "ref", tmp_path / "run"
    train(MODEL, c, data(), data(4000, 1), ref, progress=False)
    train(MODEL, c, data(), data(4000, 1), out, progress=False, stop_after=15)
    assert latest_checkpoint(out).name == "step_000015"
    damage(out / "checkpoints" / "step_000015" / "model.safetensors")
    train(MODEL, c, data(), data(4000, 1), out, progress=False)
    assert f"{out / 'checkpoints' / 'step_000015' / 'model.safetensors'}" in capsys.readouterr().out
    assert _rows(out) == _rows(ref) and _same_weights(out, ref)  # resumed from step 5, nothing logged twice


# ---------------------------------------------------------------- tokenizers


def _tiny_run(root: Path) -> Run:
    over = {"data.n_stories": 200, "train.max_steps": 4, "train.warmup_steps": 1, "train.checkpoint_steps": []}
    return Run.load("tiny", over, runs_root=root / "runs", figures_root=root / "figs")


def test_a_model_refuses_a_tokenizer_that_is_not_its_own(tmp_path):
    from tinystories_lib import stages
    from tinystories_lib.lm.tokenizer import Codec, train_bpe

    m = stages.train_model(_tiny_run(tmp_path), progress=False)
    assert Codec.load(m.dir).vocab_size == load_model(m.dir).cfg.vocab_size
    other = train_bpe(["A dog ran to the park and saw a big red ball."] * 50, 400)  # same size, other merges
    other.save(m.dir)
    with pytest.raises(ValueError, match=f"{m.dir / 'tokenizer.json'} is not the tokenizer .*config.json"):
        Codec.load(m.dir)


def test_a_garbage_tokenizer_is_not_copied_into_a_new_model(tmp_path):
    from tinystories_lib import stages

    run = _tiny_run(tmp_path)
    tokens = stages.shards(run, progress=False)
    (tokens / "tokenizer.json").write_text('{"version": "1.0", "model": ')  # cut short
    with pytest.raises(ValueError, match=f"{tokens / 'tokenizer.json'}"):
        stages.train_model(run, progress=False)
    assert not list((run.root / "models").glob("*/tokenizer.json"))


# ---------------------------------------------------------------- story files


def test_a_damaged_line_in_a_stories_file_is_skipped_and_named(tmp_path, capsys):
    from tinystories_lib.stories.records import Story, read_jsonl, write_jsonl

    path = tmp_path / "stories.jsonl"
    write_jsonl([Story(id=str(i), text=f"Story {i}.", source="test") for i in range(3)], path)
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(lines[0] + '{"id": "x", "te\n' + lines[1] + '["not", "a story"]\n' + lines[2] + '{"id": "torn')
    assert [s.id for s in read_jsonl(path)] == ["0", "1", "2"]
    said = capsys.readouterr().out.strip().splitlines()
    assert said == [f"note: {path}: skipped 3 line(s) that are not story records (line 2, 4, 6)"]


# The peak memory of this process (VmHWM: ru_maxrss of a child keeps the parent's peak across fork + exec).
MEASURE = """
from tinystories_lib.stories.cleaning import clean
from tinystories_lib.stories.loading import load_corpus
kept, report = clean(load_corpus("files", paths=[{path!r}]), min_chars=20, max_chars=4000)
peak = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(len(kept), int(peak.split()[1]) // 1024)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="peak memory is read from /proc (Linux)")
def test_a_50mb_line_is_dropped_without_holding_it(tmp_path):
    path = tmp_path / "stories.txt"
    story = "Once upon a time a cat sat on a mat.\n<|endoftext|>\n"
    with open(path, "w") as f:
        f.write(story * 100 + "the cat ran " * 4_200_000 + "\n<|endoftext|>\n" + story)
    child = _python(MEASURE.format(path=str(path)))
    out, err = child.communicate(timeout=300)
    assert child.returncode == 0, err[-2000:]
    assert "skipped 1 document(s) of more than 1,048,576 characters" in out
    kept, peak_mb = map(int, out.strip().splitlines()[-1].split())
    assert kept == 1 and peak_mb < 150, out  # about 60 MB (imports included) here; 1 GB when it was read whole
