"""The real-data road in CI: every notebook on real TinyStories (the shared sample as training stories,
the V1 head as a separate validation text), GPT-Neo's top-k tokenizer, an LLM judge on a local
OpenAI-compatible server, and stories260K beside the models: rc 0, no empty figure, numbers everywhere."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
import yaml
from test_pipeline import EXPECTED_FIGURES

from tests.openai_server import FakeOpenAI, judge_reply
from tinystories_lib.params import PARAMS_DIR
from tinystories_lib.reproduce import notebooks, reproduce

pytestmark = pytest.mark.slow

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
NEEDED = [SHARED / "data" / "tinystories_sample" / "tinystories_v1_sample_2500.txt",
          SHARED / "data" / "tinystories_v1_train_head" / "tinystories_v1_train_head_1096.txt",
          SHARED / "tokenizers" / "gpt2" / "vocab.json", SHARED / "models" / "stories260K" / "stories260K.bin"]


def _tiny_sizes() -> dict:
    """The tiny profile's model, training, sweep, sampling, grading and instruct settings, as overrides."""
    tiny = yaml.safe_load((PARAMS_DIR / "tiny.yaml").read_text())
    flat = {f"{section}.{key}": value for section in ("model", "train", "sweep", "sample", "grade", "instruct",
                                                                     "quality")
            for key, value in tiny.get(section, {}).items()}
    return flat | {"tokenizer.vocab_size": 512, "data.val_limit": 200}


@pytest.mark.skipif(not all(p.exists() for p in NEEDED), reason="needs ../shared (the real sample, the V1 head, "
                    "GPT-2's BPE files and stories260K)")
def test_every_notebook_on_real_tinystories(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-real-data")
    with FakeOpenAI(reply=judge_reply("plain")) as server:
        overrides = _tiny_sizes() | {"grade.judge": "llm", "grade.llm.base_url": server.base_url,
                                     "grade.llm.model": "fake-judge", "grade.n_prompts": 4}
        reproduce("real", overrides=overrides, runs_root=tmp_path / "runs", figures_root=tmp_path / "figures",
                  log_output=False)  # raises if any notebook fails
        assert server.chat_requests
    figs = tmp_path / "figures" / "real"
    manifest = json.loads((figs / "manifest.json").read_text())
    assert manifest["data"].startswith("real stories from files: tinystories_v1_sample_2500.txt")
    assert set(manifest["notebooks"]) == {nb.stem for nb in notebooks()}
    assert set(manifest["figures"]) >= EXPECTED_FIGURES  # nothing left out for want of data
    for name, entry in manifest["figures"].items():
        assert (figs / entry["file"]).stat().st_size > 5000, name
    shown = {}
    for path in sorted((tmp_path / "runs" / "real" / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
        assert not [o for o in outputs if o.get("output_type") == "error"], path.name
        shown[path.stem] = "".join(o.get("text", "") + str(o.get("data", {}).get("text/markdown", "")) for o in outputs)
    assert not any("Not saved" in text for text in shown.values())
    assert "| stories260K |" in shown["03_emergence"]  # bits per byte beside the grid
    assert "stories260K" in shown["04_grading"]  # completed and graded with the same prompts
    assert "nan" not in shown["06_interpretability"].lower().replace("nanosecond", "")
