"""The smoke pipeline: every notebook through papermill on the tiny profile, then a re-run that reuses."""

import json
import os
import shutil
from pathlib import Path

import nbformat
import pytest

from tinystories_lib.params import ParamsError
from tinystories_lib.reproduce import notebooks, reproduce, select

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow

EXPECTED_FIGURES = {
    "corpus_overview",  # 01
    "loss_curves",  # 02
    "loss_heatmap", "sweep_loss_curves", "loss_vs_compute", "heads_effect",  # 03
    "grades", "grades_heatmaps", "grades_over_training", "probe_accuracy",  # 04
    "rouge_histograms", "manipulation_check",  # 05
    "attention_maps", "head_scores", "neuron_selectivity",  # 06
    "instruction_following",  # 07
    "data_quality",  # 08
}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    os.environ["OPENAI_API_KEY"] = "sk-test-SECRET-must-not-leak-42"
    try:
        result = reproduce("tiny", runs_root=root / "runs", figures_root=root / "figures", log_output=False)
    finally:
        os.environ.pop("OPENAI_API_KEY")
    return root, result


def test_every_notebook_runs_and_writes_its_figures(tiny_run):
    root, result = tiny_run
    figs = root / "figures" / "tiny"
    assert {p.stem for p in figs.glob("*.png")} >= EXPECTED_FIGURES
    manifest = json.loads((figs / "manifest.json").read_text())
    assert manifest["profile"] == "tiny" and manifest["git_commit"]
    for name in EXPECTED_FIGURES:
        entry = manifest["figures"][name]
        assert entry["caption"] and entry["reproduces"] and entry["params_hash"] == manifest["params_hash"]
        assert (figs / entry["file"]).stat().st_size > 5000  # a real plot, not an empty canvas
    for name, entry in manifest["figures"].items():  # every figure with its data beside it
        data = json.loads((figs / entry["data_file"]).read_text())
        assert data["figure"] == name and data["values"] and data["reproduces"] == entry["reproduces"]
    # the paper's claims, checked on that data, printed at the end and kept in the manifest
    claims = {c["id"]: c for c in manifest["claims"]}
    assert set(claims) == {"fig4-width", "fig4-depth", "fig4-main", "emergence-order", "depth-consistency",
                           "instruct-follows", "not-copying", "heads", "quality-degraded", "quality-filter"} and claims == {c["id"]: c for c in result["claims"]}
    assert all(c["this_run"] for c in claims.values())  # measured, or why not (the toy models write little)
    assert all(claims[k]["holds"] is not None for k in ("fig4-width", "fig4-depth", "fig4-main", "heads"))
    assert set(manifest["notebooks"]) == {nb.stem for nb in notebooks()}
    assert all(v["seconds"] > 0 for v in manifest["notebooks"].values())


def test_executed_notebooks_have_outputs_and_no_errors(tiny_run):
    root, _ = tiny_run
    executed = sorted((root / "runs" / "tiny" / "notebooks").glob("*.ipynb"))
    assert [p.stem for p in executed] == [nb.stem for nb in notebooks()]
    for path in executed:
        nb = nbformat.read(path, as_version=4)
        outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
        assert outputs, path
        assert not [o for o in outputs if o.get("output_type") == "error"], path
        injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
        assert injected and 'profile = "tiny"' in injected[0].source


def test_samples_are_shown(tiny_run):
    root, _ = tiny_run
    nb = nbformat.read(root / "runs" / "tiny" / "notebooks" / "02_training.ipynb", as_version=4)
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "[from scratch]" in text


def test_the_api_key_appears_nowhere(tiny_run):
    root, _ = tiny_run
    for path in root.rglob("*"):
        if path.is_file() and path.suffix in (".ipynb", ".json", ".jsonl", ".txt", ".md", ".yaml"):
            assert "sk-test-SECRET" not in path.read_text(errors="ignore"), path


def test_rerun_reuses_artifacts(tiny_run):
    root, _ = tiny_run
    stamps = {p: p.stat().st_mtime_ns for p in (root / "runs" / "tiny").glob("*/*/artifact.json")}
    models = {p: p.stat().st_mtime_ns for p in (root / "runs" / "tiny" / "models").glob("*/model.safetensors")}
    assert stamps and models
    reproduce("tiny", only=["02"], runs_root=root / "runs", figures_root=root / "figures", log_output=False)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert {p: p.stat().st_mtime_ns for p in models} == models


def test_a_copied_runs_folder_reuses_every_model_in_notebook_03(tiny_run, tmp_path):
    """A teacher prepares runs/ once and copies it to the class's laptops: nothing is trained again."""
    root, _ = tiny_run
    shutil.copytree(root / "runs", tmp_path / "runs")
    summaries = {p: p.read_bytes() for p in (tmp_path / "runs" / "tiny" / "models").glob("*/summary.json")}
    assert summaries
    reproduce("tiny", only=["03"], runs_root=tmp_path / "runs", figures_root=tmp_path / "figures", log_output=False)
    after = {p: p.read_bytes() for p in (tmp_path / "runs" / "tiny" / "models").glob("*/summary.json")}
    assert after == summaries  # no model retrained, resumed or rewritten
    nb = nbformat.read(tmp_path / "runs" / "tiny" / "notebooks" / "03_emergence.ipynb", as_version=4)
    assert not [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                if o.get("output_type") == "error"]


def test_select_notebooks():
    assert [nb.stem for nb in select(["02"])] == ["02_training"]
    assert [nb.stem for nb in select(["grading", "01"])] == ["01_data_creation", "04_grading"]
    with pytest.raises(ParamsError, match="no notebook matches"):
        select(["99"])


def test_readme_lists_every_figure_with_a_preview():
    readme = (ROOT / "README.md").read_text()
    for name in EXPECTED_FIGURES:
        assert f"| `{name}.png` | <img src=\"docs/img/{name}.png\"" in readme, f"{name} has no README row with a preview"
        assert (ROOT / "docs" / "img" / f"{name}.png").exists(), f"docs/img/{name}.png missing: run tools/readme_thumbnails.py"
