"""The stages' promises about models: one key for what is learned, reuse wherever the runs folder lies,
recovery from a kill at the end of training, and each checkpoint completed and graded once."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from tinystories_lib.lm.checkpoints import list_checkpoints, load_model
from tinystories_lib.runs import Run
from tinystories_lib.stages import grading, instruct, models, summary_table, train_model

FAST = {"data.n_stories": 400, "grade.n_prompts": 3}


def _run(root, **over) -> Run:
    return Run.load("tiny", {**FAST, **over}, runs_root=root / "runs", figures_root=root / "figures")


def test_one_schedule_rule_for_every_model():
    from tinystories_lib.params import TrainParams

    tp = TrainParams(warmup_steps=50, eval_interval=100)
    assert models.schedule(tp, 450) == {"max_steps": 450, "warmup_steps": 45, "eval_interval": 90}
    assert models.schedule(tp, 160) == {"max_steps": 160, "warmup_steps": 16, "eval_interval": 32}
    assert models.schedule(tp, 3) == {"max_steps": 3, "warmup_steps": 0, "eval_interval": 1}
    assert models.quarter_checkpoints(160) == [40, 80, 120]


def test_instruct_model_key_ignores_core_count_and_device(tmp_path, monkeypatch):
    first = instruct.train_instruct_model(_run(tmp_path), progress=False)
    assert "skipped" not in first.summary and first.dir.name.startswith("instruct-h32-l2-")
    monkeypatch.setattr(os, "cpu_count", lambda: 7)  # another machine
    again = instruct.train_instruct_model(_run(tmp_path, **{"train.device": "cpu", "train.threads": 1}),
                                          progress=False)
    assert again.dir == first.dir and again.summary.get("skipped") is True


def test_moved_runs_folder_reuses_every_finished_model(tmp_path, capsys):
    a = tmp_path / "a"
    trained = [train_model(_run(a), progress=False)] + models.sweep(_run(a), progress=False)
    before = {m.dir.name: (m.dir / "summary.json").read_bytes() for m in trained}
    shutil.move(a, tmp_path / "b")  # the teacher's runs folder, copied to another laptop
    b = tmp_path / "b"
    capsys.readouterr()
    reused = [train_model(_run(b), progress=False)] + models.sweep(_run(b), progress=True)
    out = capsys.readouterr()
    # one line for the whole study, no per-model bar or counter that looks like training
    assert out.out.strip() == f"reused {len(trained) - 1} models (h16-l1, h32-l1, h16-l2, h32-l2)", out.out
    assert "[1/" not in out.err + out.out
    assert [m.dir.name for m in reused] == [m.dir.name for m in trained]
    for m in reused:
        assert m.summary.get("skipped") is True, m.label
        assert (m.dir / "summary.json").read_bytes() == before[m.dir.name]  # never rewritten
        # Figure 4's loss is scored on the whole validation shard, the text its bits per byte are measured on
        assert m.val_loss == m.summary["val_loss_full"] != m.summary["final_val_loss"]
    assert "| main-h32-l2 |" in summary_table(reused)


def test_a_model_trained_before_whole_shard_scoring_reports_its_last_evaluation(tmp_path):
    assert models.ModelRun("old", 32, 2, 2, tmp_path, {"final_val_loss": 3.5}).val_loss == 3.5


def test_a_finished_model_is_never_overwritten_by_other_settings(tmp_path):
    m = train_model(_run(tmp_path), progress=False)
    cfg = json.loads((m.dir / "summary.json").read_text())
    cfg["config"]["train"]["lr"] = 0.5  # as if the directory held another run
    (m.dir / "summary.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="finished model trained with other settings"):
        train_model(_run(tmp_path), progress=False)


@pytest.mark.parametrize("lost", [("model.safetensors", "summary.json"), ("summary.json",)])
def test_a_kill_between_the_final_checkpoint_and_the_final_save_recovers(tmp_path, lost):
    m = train_model(_run(tmp_path), progress=False)
    final_loss, steps = m.val_loss, m.summary["steps"]
    weights = load_model(m.dir).state_dict()
    for name in lost:  # the final checkpoint was written; the process died before these
        (m.dir / name).unlink()
    again = train_model(_run(tmp_path), progress=False)
    assert again.dir == m.dir and again.summary["steps"] == steps
    assert again.val_loss == pytest.approx(final_loss, abs=1e-6)
    recovered = load_model(m.dir).state_dict()
    assert all(torch.equal(weights[k], recovered[k]) for k in weights)
    rows = [r for r in again.metrics if r["step"] == steps]
    assert len(rows) == 1  # the last step is logged once
    assert summary_table([again])  # formats: no None loss


def test_each_checkpoint_is_completed_and_graded_once(tmp_path):
    run = _run(tmp_path)
    m = train_model(run, progress=False)
    kept = list_checkpoints(m.dir)
    steps = [s for s, _ in kept]
    assert steps == sorted(set(steps)) and steps[-1] == m.summary["steps"] and {10, 20} <= set(steps)
    assert kept[-1][1] == m.dir / "model.safetensors"  # the final model stands for its step
    prompts = grading.eval_prompts(run)
    items = grading.completions_over_training(run, m, prompts)
    assert sorted((c.step, c.prompt_id) for c in items) == sorted((s, p.id) for s in steps for p in prompts)
    series = grading.grades_over_training(run, grading.make_grader(run), [m], prompts)
    for per_model in series.values():
        assert [s for s, _ in per_model[m.label]] == steps


def _txt(path, texts):
    path.write_text("".join(t + "\n<|endoftext|>\n" for t in texts))
    return path


def test_validation_from_its_own_file_never_in_training(tmp_path):
    from tinystories_lib.stages import read_corpus
    from tinystories_lib.stories.prompts import sample_prompts
    from tinystories_lib.stories.storyteller import Storyteller

    teller = Storyteller(seed=3)
    texts = [teller.tell(spec).text for spec in sample_prompts(60, seed=3)]
    train_file = _txt(tmp_path / "train.txt", texts[:50])
    val_file = _txt(tmp_path / "valid.txt", texts[40:])  # 10 of them also in the training file
    run = _run(tmp_path, **{"data.source": "files", "data.paths": [str(train_file)], "data.n_stories": 0,
                            "data.val_source": "files", "data.val_paths": [str(val_file)]})
    train, val = read_corpus(run, "train"), read_corpus(run, "val")
    assert sorted(s.text for s in val) == sorted(texts[40:])
    assert sorted(s.text for s in train) == sorted(texts[:40])
    assert Run.artifact(run.root / "corpus" / run.params.section_hash("data"))["train_dropped_as_in_validation"] == 10


def test_a_validation_source_without_files_is_a_profile_error(tmp_path):
    from tinystories_lib.params import ParamsError

    with pytest.raises(ParamsError, match="data.val_paths"):
        _run(tmp_path, **{"data.val_source": "files"})
    with pytest.raises(ParamsError, match="data.val_paths: nowhere.txt not found"):
        _run(tmp_path, **{"data.val_source": "files", "data.val_paths": ["nowhere.txt"]})


def test_a_txt_without_separators_is_named_with_the_setting_that_splits_it(tmp_path):
    from tinystories_lib.stages import read_corpus
    from tinystories_lib.stories.storyteller import tell_stories

    texts = [s.text for s in tell_stories(40, seed=5)]
    flat = tmp_path / "stories.txt"
    flat.write_text("\n\n".join(texts) + "\n")  # blank lines between stories, no <|endoftext|>
    over = {"data.source": "files", "data.paths": [str(flat)], "data.n_stories": 0}
    with pytest.raises(ValueError, match="data.txt_separator: blank_line"):
        read_corpus(_run(tmp_path, **over), "train")
    run = _run(tmp_path, **over, **{"data.txt_separator": "blank_line"})
    stories = read_corpus(run, "train") + read_corpus(run, "val")
    assert sorted(s.text for s in stories) == sorted(texts)


def test_auto_source_offline_is_the_storyteller_said_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    run = _run(tmp_path, **{"data.source": "auto", "data.hub_data_files": "TinyStoriesV2-GPT4-train.txt",
                            "data.val_hub_data_files": "TinyStoriesV2-GPT4-valid.txt"})
    assert (run.params.data.source, run.params.data.val_source) == ("storyteller", "split")
    assert "offline storyteller stand-in" in capsys.readouterr().out
    from tinystories_lib.runs import data_label

    assert "not TinyStories" in data_label(run.params)
    assert run.params.data == _run(tmp_path, **{"data.source": "storyteller", "data.hub_data_files":
                                                 "TinyStoriesV2-GPT4-train.txt", "data.val_hub_data_files":
                                                 "TinyStoriesV2-GPT4-valid.txt"}).params.data  # one key


def test_auto_source_offline_reads_local_tinystories_files_where_they_exist(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from tinystories_lib.runs import data_label
    from tinystories_lib.stages import read_corpus
    from tinystories_lib.stories.storyteller import tell_stories

    texts = [s.text for s in tell_stories(60, seed=3)]
    train, val = tmp_path / "train.txt", tmp_path / "valid.txt"
    train.write_text("\n<|endoftext|>\n".join(texts[:50]))
    val.write_text("\n<|endoftext|>\n".join(texts[50:]))
    run = _run(tmp_path, **{"data.source": "auto", "data.paths": [str(train)], "data.val_paths": [str(val)]})
    assert (run.params.data.source, run.params.data.val_source) == ("files", "files")
    out = capsys.readouterr().out
    assert "real TinyStories from local files (train.txt; validation valid.txt)" in out and str(tmp_path) not in out
    assert "real stories from files" in data_label(run.params)
    assert len(read_corpus(run, "val")) == 10
    # without the validation file: held out from the training files; without either: the storyteller
    from tinystories_lib.stages import diversity_sources

    with_compare = _run(tmp_path, **{"data.source": "auto", "data.paths": [str(train)], "data.val_paths": [str(val)],
                                     "data.compare_paths": [str(train), str(val)]})
    assert list(diversity_sources(with_compare)) == ["corpus (files)", "TinyStories (valid.txt)"]  # not itself
    capsys.readouterr()
    absent = _run(tmp_path, **{"data.source": "auto", "data.paths": [str(train)], "data.val_paths": [str(val)],
                               "data.compare_paths": [str(tmp_path / "team" / "TinyStories-valid.txt")]})
    assert list(diversity_sources(absent)) == ["corpus (files)"]
    note = capsys.readouterr().out
    assert "comparison file TinyStories-valid.txt is not here" in note and "team" not in note
    run = _run(tmp_path, **{"data.source": "auto", "data.paths": [str(train)], "data.val_paths": [str(tmp_path / "x")]})
    assert (run.params.data.source, run.params.data.val_source) == ("files", "split")
    run = _run(tmp_path, **{"data.source": "auto", "data.paths": [str(tmp_path / "missing.txt")]})
    assert run.params.data.source == "storyteller"


def test_auto_source_online_reads_real_tinystories_from_the_hub(tmp_path):
    pytest.importorskip("datasets")
    from fake_hub import FakeHub, run_python, tinystories_files

    from tinystories_lib.stories.storyteller import tell_stories

    texts = [s.text for s in tell_stories(200, seed=8)]
    code = ("from tinystories_lib.runs import Run, data_label\nfrom tinystories_lib import stages\n"
            "run = Run.load('tiny', {'data.source': 'auto', 'data.hub_data_files': 'TinyStoriesV2-GPT4-train.txt', "
            "'data.val_hub_data_files': 'TinyStoriesV2-GPT4-valid.txt', 'data.n_stories': 150}, "
            f"runs_root={str(tmp_path / 'runs')!r}, figures_root={str(tmp_path / 'figures')!r})\n"
            "print(run.params.data.source, run.params.data.val_source)\nprint(data_label(run.params))\n"
            "print(len(stages.read_corpus(run, 'train')), len(stages.read_corpus(run, 'val')))\n"
            "print(run.artifact(stages.corpus(run))['hub_commit'])\n")
    with FakeHub(tinystories_files(texts[:160], texts[160:])) as hub:
        out = run_python(code, hub, tmp_path / "hf")
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "hub hub" and lines[1].startswith("real TinyStories: first 150 of roneneldan/TinyStories")
    n_train, n_val = map(int, lines[2].split())
    assert n_val == 40 and 140 <= n_train <= 150
    assert len(lines[3]) == 40  # the commit the run read, in the manifest too
    manifest = json.loads((tmp_path / "figures" / "tiny" / "manifest.json").read_text())
    assert manifest["corpus"]["hub_commit"] == lines[3] and manifest["data"] == lines[1]


def test_every_saved_figure_names_its_data(tmp_path):
    import matplotlib.pyplot as plt

    from tinystories_lib.show import plots

    run = _run(tmp_path)
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    plots.save(run, fig, "line", "a line", "no figure", data={"x": [0, 1], "y": [1, 0]})
    assert any("data: storyteller stand-in" in t.get_text() for t in fig.texts)
    manifest = json.loads((run.figures / "manifest.json").read_text())
    assert "storyteller stand-in" in manifest["data"] and "not TinyStories" in manifest["figures"]["line"]["data"]


def test_completions_are_not_sampled_again_for_another_judge_or_reference_list(tmp_path):
    run = _run(tmp_path)
    m = train_model(run, progress=False)
    prompts = grading.eval_prompts(run)
    first = grading.completions(run, [m], prompts)
    files = {p: p.stat().st_mtime_ns for p in (run.root / "completions").rglob("*.jsonl")}
    other = _run(tmp_path, **{"grade.judge": "llm", "grade.reference_models": ["x.bin"], "grade.n_probes": 5})
    assert grading.completions(other, [m], prompts) == first
    assert {p: p.stat().st_mtime_ns for p in (run.root / "completions").rglob("*.jsonl")} == files
    hotter = _run(tmp_path, **{"grade.temperature": 0.9})
    grading.completions(hotter, [m], prompts)
    assert len(list((run.root / "completions").rglob("*.jsonl"))) == 2 * len(files)  # sampling changed: new ones


@pytest.mark.slow
def test_reproduce_decides_auto_once_for_every_notebook(tmp_path, monkeypatch):
    import nbformat

    from tinystories_lib.reproduce import reproduce

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    reproduce("tiny", only=["01"], overrides={"data.source": "auto", "data.n_stories": 300},
              runs_root=tmp_path / "runs", figures_root=tmp_path / "figures", log_output=False)
    nb = nbformat.read(tmp_path / "runs" / "tiny" / "notebooks" / "01_data_creation.ipynb", as_version=4)
    injected = next(c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", []))
    assert '"data.source": "storyteller"' in injected.source and '"data.val_source": "split"' in injected.source
