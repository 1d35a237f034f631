import json
from pathlib import Path

import numpy as np
import pytest

from tinystories_lib import params
from tinystories_lib.runs import Run
from tinystories_lib.show import plots
from tinystories_lib.stories.corpus_stats import corpus_stats, stats_table
from tinystories_lib.stories.records import Story


def stories():
    texts = ["Once upon a time, Lily saw a cat.", "Once upon a time, Tom ran fast.", "Tom ran fast and fell.",
             "Tom ran fast and fell."]
    return [Story(id=str(i), text=t, source="test", features=["dialogue"] if i % 2 else []) for i, t in enumerate(texts)]


def test_corpus_stats_counts():
    s = corpus_stats(stories())
    assert s["stories"] == 4 and s["words_total"] == 8 + 7 + 5 + 5
    assert s["once_upon_a_time"] == 0.5 and s["exact_duplicate_rate"] == 0.25
    assert s["top_openings"][0] == ("Once upon a", 0.5)
    assert s["feature_share"] == {"dialogue": 0.5}
    assert "| stories | 4 |" in stats_table({"test": s})


def test_figures_are_saved_with_a_manifest_entry(tmp_path):
    run = Run(params.load("tiny"), runs_root=tmp_path / "runs", figures_root=tmp_path / "figures")
    fig = plots.heatmap(np.array([[1.0, 2.0], [3.0, np.nan]]), [1, 2], [16, 32], "t", "layers", "hidden", "loss")
    path = plots.save(run, fig, "hm", caption="a caption", reproduces="Figure 4",
                      data={"layers": [1, 2], "hidden": [16, 32], "loss": np.array([[1.0, 2.0], [3.0, np.nan]])})
    assert Path(path).exists() and Path(path).stat().st_size > 5000 and "Figure 4" in repr(path)
    entry = json.loads((run.figures / "manifest.json").read_text())["figures"]["hm"]
    assert entry["caption"] == "a caption" and entry["reproduces"] == "Figure 4"
    assert entry["params_hash"] == run.params.hash() and entry["git_commit"]
    rows = [{"model": "a", "dimension": "x", "mean": 5.0, "ci95": 1.0, "n": 3},
            {"model": "b", "dimension": "x", "mean": 6.0, "ci95": 0.5, "n": 3}]
    plots.save(run, plots.grade_bars(rows, ["x"], "g"), "bars", "c", "r", data=rows)
    plots.save(run, plots.loss_curves({"m": [{"tokens": 1, "train_loss": 3.0}, {"tokens": 2, "val_loss": 2.0}]}), "lc", "c", "r", data=[])
    assert set(json.loads((run.figures / "manifest.json").read_text())["figures"]) == {"hm", "bars", "lc"}


def test_corpus_overview_side_by_side(tmp_path):
    s = corpus_stats(stories())
    assert set(s["vocab_coverage"]) == {"noun", "verb", "adjective"} and s["near_duplicate_rate"] == 0.25
    fig = plots.corpus_overview({"a": s, "b": corpus_stats(stories()[:2])})
    fig.savefig(tmp_path / "o.png")
    assert (tmp_path / "o.png").stat().st_size > 10000


def test_a_figure_is_written_with_its_data_beside_it(tmp_path):
    run = Run(params.load("tiny"), runs_root=tmp_path / "runs", figures_root=tmp_path / "figures")
    grid = np.array([[1.0, 2.0], [3.0, np.nan]])
    fig = plots.heatmap(grid, [1, 2], [16, 32], "t", "layers", "hidden", "loss")
    plots.save(run, fig, "hm", "c", "Figure 4", data={"layers": [1, 2], "hidden": (16, 32), "loss": grid,
                                                     "best": np.float32(1.0)})
    written = json.loads((run.figures / "hm.json").read_text())  # strict JSON: NaN became null
    assert written["values"] == {"layers": [1, 2], "hidden": [16, 32], "loss": [[1.0, 2.0], [3.0, None]], "best": 1.0}
    assert written["reproduces"] == "Figure 4" and "storyteller" in written["data"]
    assert json.loads((run.figures / "manifest.json").read_text())["figures"]["hm"]["data_file"] == "hm.json"
    assert not plots.save(run, None, "hm", "c", "Figure 4", data={})  # nothing to plot: data goes too
    assert not (run.figures / "hm.json").exists()
    with pytest.raises(TypeError):
        plots.save(run, plots.heatmap(grid, [1, 2], [16, 32], "t", "l", "h", "v"), "hm", "c", "Figure 4")
