"""`grade.prompts`: the profile chooses the evaluation set (the kit's, the paper's from the hub, or a file)."""

from __future__ import annotations

import pytest
from fake_hub import run_against_hub

from tinystories_lib.params import ParamsError
from tinystories_lib.runs import Run
from tinystories_lib.stages import grading

HUB_FILE = "- Once there was a bee who\n- |\n  Tom had a red ball. He\n"


def _run(tmp_path, **over) -> Run:
    return Run.load("tiny", over, runs_root=tmp_path / "runs", figures_root=tmp_path / "figures")


def test_the_kit_set_by_default(tmp_path):
    prompts = grading.eval_prompts(_run(tmp_path))
    assert len(prompts) == 6 and not any(p.id.startswith("paper-") for p in prompts)


def test_a_file_in_the_hubs_format_or_the_kits(tmp_path):
    hub = tmp_path / "Evaluation prompts.yaml"
    hub.write_text(HUB_FILE)
    prompts = grading.eval_prompts(_run(tmp_path, **{"grade.prompts": str(hub), "grade.n_prompts": 0}))
    assert [(p.id, p.text) for p in prompts] == [("paper-01", "Once there was a bee who"),
                                                ("paper-02", "Tom had a red ball. He")]
    kit = tmp_path / "mine.yaml"
    kit.write_text("prompts:\n  - {id: a1, text: 'Lily saw a cat. She', kind: story}\n")
    assert [p.id for p in grading.eval_prompts(_run(tmp_path, **{"grade.prompts": str(kit)}))] == ["a1"]


def test_a_missing_file_is_named_before_any_work(tmp_path):
    with pytest.raises(ParamsError, match="grade.prompts: 'nowhere.yaml' is neither kit, paper nor an existing file"):
        _run(tmp_path, **{"grade.prompts": "nowhere.yaml"})


def test_the_papers_set_through_the_hub_client(tmp_path):
    pytest.importorskip("huggingface_hub")
    files = {"datasets/roneneldan/TinyStories/resolve/main/Evaluation prompts.yaml": HUB_FILE.encode()}
    code = ("from tinystories_lib.runs import Run\nfrom tinystories_lib.stages import grading\n"
            f"run = Run.load('tiny', {{'grade.prompts': 'paper'}}, runs_root={str(tmp_path / 'runs')!r})\n"
            "print([p.id for p in grading.eval_prompts(run)])\n")
    stdout, _ = run_against_hub(files, code, tmp_path / "hf")
    assert "['paper-01', 'paper-02']" in stdout
    assert Run.load("paper").params.grade.prompts == "paper"
