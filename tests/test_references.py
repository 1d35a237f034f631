"""Published models scored on the profile's validation text, beside the user's models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tinystories_lib.lm.scoring import bits_per_byte, shard_nll, text_bytes
from tinystories_lib.runs import Run
from tinystories_lib.stages import read_corpus, references

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
STORIES260K = SHARED / "models" / "stories260K"
SAMPLE = SHARED / "data" / "tinystories_sample" / "tinystories_v1_sample_2500.txt"
needs_shared = pytest.mark.skipif(not (STORIES260K / "stories260K.bin").exists() or not SAMPLE.exists(),
                                  reason="needs ../shared (stories260K and the TinyStories sample)")


@needs_shared
def test_stories260k_scored_on_real_validation_text(tmp_path):
    spm = pytest.importorskip("sentencepiece")
    run = Run.load("tiny", {"data.source": "files", "data.paths": [str(SAMPLE)], "data.n_stories": 600,
                            "data.val_source": "files", "data.val_paths": [str(SAMPLE)], "data.val_limit": 120,
                            "grade.reference_models": [str(STORIES260K / "stories260K.bin")]},
                   runs_root=tmp_path / "runs", figures_root=tmp_path / "figures")
    [row] = references.score_references(run, progress=False)
    # independently: SentencePiece's own tokenizer, BOS before each story, as llama2.c trains
    texts = [s.text for s in read_corpus(run, "val")]
    sp = spm.SentencePieceProcessor(model_file=str(STORIES260K / "tok512.model"))
    ids = np.asarray([t for text in texts for t in [1, *sp.encode(text)]])
    nll, _ = shard_nll(references.load_reference(row["spec"]).model, ids)
    assert row["val_bpb"] == pytest.approx(nll / np.log(2) / sum(len(t.encode()) + 1 for t in texts), rel=1e-6)
    assert 0.7 < row["val_bpb"] < 1.3  # a real TinyStories model on real TinyStories
    assert row["label"] == "stories260K" and row["params"] > 200_000
    assert references.score_references(run, progress=False) == [row]  # cached
    assert "| stories260K |" in references.references_table([row])


def test_a_hugging_face_gpt_neo_directory_is_a_reference(tmp_path):
    pytest.importorskip("transformers")
    from tinystories_lib.lm.interop.hf import to_hf
    from tinystories_lib.lm.model import GPTNeo, GPTNeoConfig
    from tinystories_lib.lm.tokenizer import train_bpe
    from tinystories_lib.stories.storyteller import tell_stories

    texts = [s.text for s in tell_stories(60, seed=2)]
    codec = train_bpe(texts, 300)
    torch.manual_seed(0)
    model = GPTNeo(GPTNeoConfig(vocab_size=codec.vocab_size, context=64, hidden=32, layers=2, heads=2, window=16))
    d = to_hf(model, tmp_path / "TinyStories-toy", codec)
    ref = references.load_reference(str(d))
    assert ref.label == "TinyStories-toy"
    stream = references.token_stream(ref.codec, texts[:5])
    assert stream[0] == ref.codec.eot_id and ref.codec.decode(list(stream[1:10])) in texts[0]
    nll, _ = shard_nll(ref.model, stream)
    assert np.isfinite(bits_per_byte(nll, text_bytes(texts[:5])))


def test_a_missing_reference_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="grade.reference_models: nowhere.bin not found"):
        references.load_reference("nowhere.bin")


def test_an_absent_reference_is_skipped_with_a_note(tmp_path, capsys):
    run = Run.load("tiny", {"data.n_stories": 300, "grade.reference_models": ["nowhere/stories15M.bin"]},
                   runs_root=tmp_path / "runs", figures_root=tmp_path / "figures")
    assert references.score_references(run) == []
    out = capsys.readouterr().out
    assert "reference model stories15M.bin skipped (not here)" in out
    assert "nowhere/" not in out  # the profile's path is not the reader's


@needs_shared
def test_stories260k_completes_and_is_graded_with_the_same_prompts(tmp_path):
    from tinystories_lib.stages import grading

    run = Run.load("tiny", {"data.n_stories": 300, "grade.n_prompts": 3,
                            "grade.reference_models": [str(STORIES260K / "stories260K.bin")]},
                   runs_root=tmp_path / "runs", figures_root=tmp_path / "figures")
    prompts = grading.eval_prompts(run)
    items = grading.reference_completions(run, prompts)
    assert [(c.model, c.prompt_id) for c in items] == [("stories260K", p.id) for p in prompts]
    assert all(c.completion.strip() for c in items)
    grades = grading.grade(run, grading.make_grader(run), items)
    assert {g.model for g in grades} == {"stories260K"} and all(g.status == "ok" for g in grades)
