"""Notebook 07's stages: the held-out instruction combination, the offline checks, the notebook itself."""

from __future__ import annotations

import json
import math

import pytest

from tinystories_lib import instruct_eval as ie
from tinystories_lib import params as params_mod
from tinystories_lib.grading import Completion, Grade
from tinystories_lib.instruct import EOT, parse_record
from tinystories_lib.records import Story, write_jsonl
from tinystories_lib.runs import Run
from tinystories_lib.storyteller import generate_stories
from tinystories_lib.tokenizer import Codec, read_shard

PAIR = ("summary", "words")
# The tiny profile's instruct section (params/tiny.yaml may carry the same values).
TINY_INSTRUCT = {"instruct.hidden": 32, "instruct.layers": 2, "instruct.heads": 2, "instruct.max_steps": 20,
                 "instruct.n_eval": 6, "instruct.max_records": 500, "instruct.max_new_tokens": 40}


@pytest.fixture(scope="module")
def stories() -> list[Story]:
    return generate_stories(120, seed=5)


def _run_with_corpus(tmp_path, stories: list[Story], overrides: dict | None = None) -> Run:
    """A tiny-profile run whose corpus stage is already done with `stories` (no storyteller run)."""
    run = Run(params_mod.load("tiny", {"tokenizer.vocab_size": 300, **(overrides or {})}), runs_root=tmp_path / "runs",
              figures_root=tmp_path / "figs")
    d = run.stage_dir("corpus", run.params.section_hash("data"))
    write_jsonl(stories[:90], d / "train.jsonl")
    write_jsonl(stories[90:], d / "val.jsonl")
    run.mark_done(d, {"n_train": 90, "n_val": len(stories) - 90})
    return run


# ---------------------------------------------------------------- the held-out combination


def test_training_records_never_show_the_held_out_pair(stories):
    records = [ie.training_record(s, 7, PAIR) for s in stories]
    shown = [ie.record_fields(r) for r in records]
    assert not any(set(PAIR) <= f for f in shown)
    # every other combination is shown, so "in-distribution" means seen in training
    assert {ie.combo_name(f) for f in shown} == {ie.combo_name(c) for c in ie.allowed_combos(ie.TRAIN_FIELDS, PAIR)}
    assert all(r.endswith(s.text.strip()) and EOT not in r for r, s in zip(records, stories))
    assert records == [ie.training_record(s, 7, PAIR) for s in stories]  # deterministic per story
    sentences = [(parse_record(r)["random_sentence"], s) for r, s in zip(records, stories)]
    assert any(x for x, _ in sentences)  # the published records' fourth field, drawn from the story itself
    assert all(" ".join(s.text.split()).find(x) >= 0 for x, s in sentences if x)


def test_instruct_tokens_shards_hold_no_record_with_the_pair(tmp_path, stories):
    run = _run_with_corpus(tmp_path, stories)
    out = ie.instruct_tokens(run, progress=False)
    meta = Run.artifact(out)
    assert meta["held_out_cooccurrences"] == 0 and meta["vocab_size"] == 300
    codec = Codec.load(out)
    assert [codec.decode([i]) for i in codec.encode("Words:")] == ["Words:"]  # field labels are whole tokens
    text = codec.decode(read_shard(out / "train.bin"))
    records = [r for r in text.split(EOT) if r.strip()]
    assert len(records) == 90
    assert not any(set(PAIR) <= ie.record_fields(r) for r in records)
    assert ie.instruct_tokens(run, progress=False) == out  # reused


def test_evaluation_prompts_ask_for_the_held_out_pair_out_of_distribution(tmp_path, stories):
    run = _run_with_corpus(tmp_path, stories, {"instruct.n_eval": 5})
    sets = ie.evaluation_sets(run)
    by_cond = ie.sets_summary(sets)
    assert sum(by_cond[ie.IN_DIST].values()) == 5 and sum(by_cond[ie.OOD].values()) == 5
    assert set(by_cond[ie.OOD]) == {"summary+words", "summary+features+words"}
    for s in sets:
        assert s.prompt.endswith("Story:") and s.prompt.count("Story:") == 1
        assert ie.record_fields(s.prompt + " \n\n" + s.reference) == set(s.combo)
        assert (set(PAIR) <= set(s.combo)) == (s.condition == ie.OOD)
    assert len({s.story_id for s in sets}) == len(sets)  # one story per prompt
    val_ids = {s.id for s in stories[90:]}
    assert {s.story_id for s in sets} <= val_ids  # instructions from stories never trained on


def test_held_out_pair_is_validated(tmp_path, stories):
    with pytest.raises(ValueError, match="held_out_pair"):  # stops when the profile loads, before any work
        _run_with_corpus(tmp_path, stories, {"instruct.held_out_pair": ["summary", "plot"]})


# ---------------------------------------------------------------- offline checks


def test_words_count_in_any_inflection():
    text = "Tom ran to the boxes. The mice tagged along, and everyone was happier."
    used = ie.words_used(text, {"verb": "run", "noun": "box", "adjective": "happy"})
    assert used == {"run": True, "box": True, "happy": True}
    assert ie.words_used(text, {"noun": "mouse", "verb": "tag", "adjective": "red"}) == \
        {"mouse": True, "tag": True, "red": False}
    assert ie.words_used("She smiled at the sunny sky.", {"0": "smile"}) == {"smile": True}  # role unknown


def test_dialogue_and_feature_cues():
    talk = 'Lily said, "Let us play!" They played all day and were happy.'
    quiet = "Lily played all day. Suddenly it rained. She cried and her kite was lost. She was sad."
    assert ie.features_honoured(talk, ["dialogue"]) == {"dialogue": True}
    assert ie.features_honoured(quiet, ["dialogue", "plot_twist", "bad_ending"]) == \
        {"dialogue": False, "plot_twist": True, "bad_ending": True}
    assert ie.features_honoured(talk, ["bad_ending", "foreshadowing"]) == {"bad_ending": False}  # no cue: left out
    assert "foreshadowing" in ie.UNCHECKED_FEATURES


def test_summary_overlap_counts_content_words_and_names():
    summary = "Lily loses her red kite in the park."
    assert ie.summary_overlap("Lily had a red kite. She flew it at the park.", summary) == pytest.approx(4 / 5)
    assert ie.summary_overlap("Tom ate a green apple at home.", summary) == 0.0
    assert math.isnan(ie.summary_overlap("anything", "It is the one."))


def test_stem_meets_inflections():
    assert len({ie.stem(w) for w in ("like", "likes", "liked", "liking")}) == 1
    assert ie.stem("planned") == ie.stem("plans") and ie.stem("puppies") == ie.stem("puppy")


def _sets_and_completions() -> tuple[list[ie.InstructionSet], list[Completion]]:
    story = Story(id="v1", text='Tom ran home. "Hi!" said Tom.', source="t", summary="Tom runs home.",
                  words={"verb": "run", "noun": "home", "adjective": "fast"}, features=["dialogue"])
    other = Story(id="v2", text="Sue ate a big cake. She was sad.", source="t", summary="Sue eats cake.",
                  words={"verb": "eat", "noun": "cake", "adjective": "big"}, features=["bad_ending"])
    sets = (ie.instruction_sets([story, other], 2, 0, ("features", "words"), ie.IN_DIST)
            + ie.instruction_sets([story, other], 2, 0, ("summary", "words"), ie.OOD))
    texts = {"v1": story.text, "v2": "Sue ate the cake."}
    comps = [Completion("m", s.id, s.prompt, texts[s.story_id]) for s in sets]
    return sets, comps


def test_grades_per_condition_with_reference_and_mismatched_rows():
    sets, comps = _sets_and_completions()
    grades = ie.grade_all(comps, sets)
    rows = {(r["condition"], r["dimension"]): r for r in ie.by_condition(grades)}
    assert set(c for c, _ in rows) == set(ie.CONDITIONS)
    assert rows[(ie.REFERENCE, "words_used")]["mean"] > rows[(ie.MISMATCHED, "words_used")]["mean"]
    assert rows[(ie.OOD, "summary_overlap")]["n"] == 2 and (ie.OOD, "features_honoured") not in rows
    table = ie.conditions_table(ie.by_condition(grades))
    assert "| out-of-distribution |" in table and "±" in table
    assert "[in-distribution: features+words]" in ie.examples(comps, sets, n=2)


def test_judge_grades_pass_instructions_and_tag_conditions():
    sets, comps = _sets_and_completions()

    class FakeJudge:
        def grade(self, completions, *, instructions=None):
            assert all(c.beginning == "" for c in completions)
            assert all(instructions[c.prompt_id].startswith(("Summary:", "Words:", "Features:")) for c in completions)
            return [Grade(c.model, c.prompt_id, c.key, "fake", {"instruction_following": 5.0}) for c in completions]

    grades = ie.judge_grades(None, comps, sets, judge=FakeJudge())
    assert {g.extra["condition"] for g in grades} == {ie.IN_DIST, ie.OOD}
    assert {r["dimension"] for r in ie.by_condition(grades)} == {"instruction_following"}


def test_cue_calibration_on_storyteller_stories(stories):
    rows = {r["feature"]: r for r in ie.cue_calibration(stories)}
    assert rows["dialogue"]["hit_rate"] == 1.0 and rows["dialogue"]["false_alarm_rate"] == 0.0
    assert all(r["hit_rate"] > r["false_alarm_rate"] for r in rows.values())


def test_instruction_bars_draw_a_bar_per_condition_and_check():
    from tinystories_lib import plots

    rows = [{"condition": c, "dimension": d, "mean": 0.5, "ci95": 0.1, "n": 4}
            for c in (ie.IN_DIST, ie.OOD) for d in ie.DIMENSIONS]
    fig = plots.instruction_bars(rows)
    assert len(fig.axes[0].patches) == 6
    plots.plt.close(fig)


# ---------------------------------------------------------------- the notebook


@pytest.mark.slow
def test_notebook_07_runs_on_the_tiny_profile(tmp_path):
    from tinystories_lib.reproduce import reproduce

    # a smaller corpus than the tiny profile's keeps this test fast; the notebook is the same
    reproduce("tiny", only=["07"], overrides={**TINY_INSTRUCT, "data.n_stories": 400}, runs_root=tmp_path / "runs",
              figures_root=tmp_path / "figs", log_output=False)
    assert (tmp_path / "figs" / "tiny" / "instruction_following.png").stat().st_size > 0
    manifest = json.loads((tmp_path / "figs" / "tiny" / "manifest.json").read_text())
    assert "TinyStories-Instruct" in manifest["figures"]["instruction_following"]["reproduces"]
