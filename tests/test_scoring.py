"""Bits per byte: the kit's figure against independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tinystories_lib.lm.checkpoints import load_model
from tinystories_lib.lm.model import GPTNeo, GPTNeoConfig
from tinystories_lib.lm.scoring import bits_per_byte, shard_nll, text_bytes
from tinystories_lib.lm.tokenizer import read_shard
from tinystories_lib.runs import Run
from tinystories_lib.stages import read_corpus, shards, summary_table, train_model


def test_text_bytes_counts_utf8_and_one_separator_per_story():
    assert text_bytes(["héllo", "a"]) == (6 + 1) + (1 + 1)
    assert bits_per_byte(math.log(2) * 10, 5) == pytest.approx(2.0)


@pytest.mark.parametrize("n_tokens", [64 * 5 + 1, 64 * 5 + 20])  # whole windows only; a shorter last window
def test_shard_nll_equals_transformers_over_the_same_windows(tmp_path, n_tokens):
    transformers = pytest.importorskip("transformers")
    from tinystories_lib.lm.interop.hf import to_hf

    torch.manual_seed(0)
    model = GPTNeo(GPTNeoConfig(vocab_size=97, context=64, hidden=32, layers=2, heads=2, window=16)).eval()
    data = np.random.default_rng(0).integers(0, 97, n_tokens).astype(np.uint16)
    total, n = shard_nll(model, data, batch_size=2)
    hf = transformers.GPTNeoForCausalLM.from_pretrained(to_hf(model, tmp_path / "hf")).eval()
    expected, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, n_tokens - 1, 64):  # every token but the first, predicted once
            ids = torch.from_numpy(data[start:start + 65].astype(np.int64))[None]
            logits = hf(input_ids=ids[:, :-1]).logits[0]
            expected += -torch.log_softmax(logits.double(), -1).gather(1, ids[0, 1:, None]).sum().item()
            count += ids.shape[1] - 1
    assert n == count == n_tokens - 1
    assert total == pytest.approx(expected, rel=1e-5)


def test_trained_models_report_bits_per_byte_of_their_validation_text(tmp_path):
    run = Run.load("tiny", {"data.n_stories": 400}, runs_root=tmp_path / "runs", figures_root=tmp_path / "figures")
    m = train_model(run, progress=False)
    val_text_bytes = sum(len(s.text.encode()) + 1 for s in read_corpus(run, "val"))  # from the stories themselves
    nll, n = shard_nll(load_model(m.dir), read_shard(shards(run) / "val.bin"))
    assert m.val_bpb == pytest.approx(nll / math.log(2) / val_text_bytes, rel=1e-6)
    assert m.summary["val_loss_full"] == pytest.approx(nll / n, rel=1e-6)
    evals = [r for r in m.metrics if "val_loss" in r]
    assert evals and all(r["val_bpb"] > 0 for r in evals)
    assert f"| {m.val_bpb:.3f} |" in summary_table([m])


def test_loss_curves_read_in_bits_per_byte_on_the_right(tmp_path):
    from tinystories_lib.show import plots

    run = Run.load("tiny", {"data.n_stories": 400}, runs_root=tmp_path / "runs", figures_root=tmp_path / "figures")
    m = train_model(run, progress=False)
    fig = plots.loss_curves({m.label: m.metrics})
    labels = [a.get_ylabel() for a in fig.axes[0].child_axes]
    assert labels == ["validation bits per byte"]
    no_bpb = [{k: v for k, v in r.items() if k != "val_bpb"} for r in m.metrics]
    assert not plots.loss_curves({m.label: no_bpb}).axes[0].child_axes  # unknown factor: no right axis
