"""Notebook 07's stages: the held-out instruction combination, the offline checks, fields derived from plain
stories, the notebook itself (on storyteller stories and on plain .txt stories)."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest

from tinystories_lib import params as params_mod
from tinystories_lib.evals import instruct_checks
from tinystories_lib.evals.grades import Completion, Grade
from tinystories_lib.lm.tokenizer import Codec, read_shard
from tinystories_lib.runs import Run
from tinystories_lib.stages import instruct
from tinystories_lib.stories import instruct_format, words
from tinystories_lib.stories.instruct_format import parse_record
from tinystories_lib.stories.prompts import vocab_index
from tinystories_lib.stories.records import EOT, Story, write_jsonl
from tinystories_lib.stories.storyteller import tell_stories

SAMPLE = "data/tinystories_sample/tinystories_v1_sample_2500.txt"  # under ../shared, when present

PAIR = ("summary", "words")
# The tiny profile's instruct section (params/tiny.yaml may carry the same values).
TINY_INSTRUCT = {"instruct.hidden": 32, "instruct.layers": 2, "instruct.heads": 2, "instruct.max_steps": 20,
                 "instruct.n_eval": 6, "instruct.max_records": 500, "instruct.max_new_tokens": 40}


@pytest.fixture(scope="module")
def stories() -> list[Story]:
    return tell_stories(120, seed=5)


@pytest.fixture(scope="module")
def plain(stories) -> list[Story]:
    """The storyteller stories as a plain .txt gives them: text only, no prompt, words, features or summary."""
    return [Story(id=s.id, text=s.text, source="file:plain.txt") for s in stories]


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
    records = [instruct_format.training_record(s, 7, PAIR) for s in stories]
    shown = [instruct_format.record_fields(r) for r in records]
    assert not any(set(PAIR) <= f for f in shown)
    # every other combination is shown, so "in-distribution" means seen in training
    assert {instruct_format.combo_name(f) for f in shown} == {instruct_format.combo_name(c) for c in instruct_format.allowed_combos(instruct_format.TRAIN_FIELDS, PAIR)}
    assert all(r.endswith(s.text.strip()) and EOT not in r for r, s in zip(records, stories))
    assert records == [instruct_format.training_record(s, 7, PAIR) for s in stories]  # deterministic per story
    sentences = [(parse_record(r)["random_sentence"], s) for r, s in zip(records, stories)]
    assert any(x for x, _ in sentences)  # the published records' fourth field, drawn from the story itself
    assert all(" ".join(s.text.split()).find(x) >= 0 for x, s in sentences if x)


def test_instruct_tokens_shards_hold_no_record_with_the_pair(tmp_path, stories):
    run = _run_with_corpus(tmp_path, stories)
    out = instruct.instruct_tokens(run, progress=False)
    meta = Run.artifact(out)
    assert meta["held_out_cooccurrences"] == 0 and meta["vocab_size"] == 300
    codec = Codec.load(out)
    assert [codec.decode([i]) for i in codec.encode("Words:")] == ["Words:"]  # field labels are whole tokens
    text = codec.decode(read_shard(out / "train.bin"))
    records = [r for r in text.split(EOT) if r.strip()]
    assert len(records) == 90
    assert not any(set(PAIR) <= instruct_format.record_fields(r) for r in records)
    assert instruct.instruct_tokens(run, progress=False) == out  # reused


def test_evaluation_prompts_ask_for_the_held_out_pair_out_of_distribution(tmp_path, stories):
    run = _run_with_corpus(tmp_path, stories, {"instruct.n_eval": 5})
    sets = instruct.evaluation_sets(run)
    by_cond = instruct_checks.sets_summary(sets)
    assert sum(by_cond[instruct_checks.IN_DIST].values()) == 5 and sum(by_cond[instruct_checks.OOD].values()) == 5
    assert set(by_cond[instruct_checks.OOD]) == {"summary+words", "summary+features+words"}
    for s in sets:
        assert s.prompt.endswith("Story:") and s.prompt.count("Story:") == 1
        assert instruct_format.record_fields(s.prompt + " \n\n" + s.reference) == set(s.combo)
        assert (set(PAIR) <= set(s.combo)) == (s.condition == instruct_checks.OOD)
    assert len({s.story_id for s in sets}) == len(sets)  # one story per prompt
    val_ids = {s.id for s in stories[90:]}
    assert {s.story_id for s in sets} <= val_ids  # instructions from stories never trained on


def test_held_out_pair_is_validated(tmp_path, stories):
    with pytest.raises(ValueError, match="held_out_pair"):  # stops when the profile loads, before any work
        _run_with_corpus(tmp_path, stories, {"instruct.held_out_pair": ["summary", "plot"]})


# ---------------------------------------------------------------- offline checks


def test_words_count_in_any_inflection():
    text = "Tom ran to the boxes. The mice tagged along, and everyone was happier."
    used = instruct_checks.words_used(text, {"verb": "run", "noun": "box", "adjective": "happy"})
    assert used == {"run": True, "box": True, "happy": True}
    assert instruct_checks.words_used(text, {"noun": "mouse", "verb": "tag", "adjective": "red"}) == \
        {"mouse": True, "tag": True, "red": False}
    assert instruct_checks.words_used("She smiled at the sunny sky.", {"0": "smile"}) == {"smile": True}  # role unknown


def test_dialogue_and_feature_cues():
    talk = 'Lily said, "Let us play!" They played all day and were happy.'
    quiet = "Lily played all day. Suddenly it rained. She cried and her kite was lost. She was sad."
    assert instruct_checks.features_honoured(talk, ["dialogue"]) == {"dialogue": True}
    assert instruct_checks.features_honoured(quiet, ["dialogue", "plot_twist", "bad_ending"]) == \
        {"dialogue": False, "plot_twist": True, "bad_ending": True}
    assert instruct_checks.features_honoured(talk, ["bad_ending", "foreshadowing"]) == {"bad_ending": False}  # no cue: left out
    assert "foreshadowing" in instruct_checks.UNCHECKED_FEATURES


def test_summary_overlap_counts_content_words_and_names():
    summary = "Lily loses her red kite in the park."
    assert instruct_checks.summary_overlap("Lily had a red kite. She flew it at the park.", summary) == pytest.approx(4 / 5)
    assert instruct_checks.summary_overlap("Tom ate a green apple at home.", summary) == 0.0
    assert math.isnan(instruct_checks.summary_overlap("anything", "It is the one."))


def test_stem_meets_inflections():
    assert len({words.stem(w) for w in ("like", "likes", "liked", "liking")}) == 1
    assert words.stem("planned") == words.stem("plans") and words.stem("puppies") == words.stem("puppy")


def _sets_and_completions() -> tuple[list[instruct_checks.InstructionSet], list[Completion]]:
    story = Story(id="v1", text='Tom ran home. "Hi!" said Tom.', source="t", summary="Tom runs home.",
                  words={"verb": "run", "noun": "home", "adjective": "fast"}, features=["dialogue"])
    other = Story(id="v2", text="Sue ate a big cake. She was sad.", source="t", summary="Sue eats cake.",
                  words={"verb": "eat", "noun": "cake", "adjective": "big"}, features=["bad_ending"])
    sets = (instruct_checks.instruction_sets([story, other], 2, 0, ("features", "words"), instruct_checks.IN_DIST)
            + instruct_checks.instruction_sets([story, other], 2, 0, ("summary", "words"), instruct_checks.OOD))
    texts = {"v1": story.text, "v2": "Sue ate the cake."}
    comps = [Completion("m", s.id, s.prompt, texts[s.story_id]) for s in sets]
    return sets, comps


def test_grades_per_condition_with_reference_and_mismatched_rows():
    sets, comps = _sets_and_completions()
    grades = instruct_checks.grade_all(comps, sets)
    rows = {(r["condition"], r["dimension"]): r for r in instruct_checks.by_condition(grades)}
    assert set(c for c, _ in rows) == set(instruct_checks.CONDITIONS)
    assert rows[(instruct_checks.REFERENCE, "words_used")]["mean"] > rows[(instruct_checks.MISMATCHED, "words_used")]["mean"]
    assert rows[(instruct_checks.OOD, "summary_overlap")]["n"] == 2 and (instruct_checks.OOD, "features_honoured") not in rows
    table = instruct_checks.conditions_table(instruct_checks.by_condition(grades))
    assert "| out-of-distribution |" in table and "±" in table
    assert "[in-distribution: features+words]" in instruct_checks.examples(comps, sets, n=2)


def test_judge_grades_pass_instructions_and_tag_conditions():
    sets, comps = _sets_and_completions()

    class FakeJudge:
        def grade(self, completions, *, instructions=None):
            assert all(c.beginning == "" for c in completions)
            assert all(instructions[c.prompt_id].startswith(("Summary:", "Words:", "Features:")) for c in completions)
            return [Grade(c.model, c.prompt_id, c.key, "fake", {"instruction_following": 5.0}) for c in completions]

    grades = instruct.judge_grades(None, comps, sets, judge=FakeJudge())
    assert {g.extra["condition"] for g in grades} == {instruct_checks.IN_DIST, instruct_checks.OOD}
    assert {r["dimension"] for r in instruct_checks.by_condition(grades)} == {"instruction_following"}


def test_cue_calibration_on_storyteller_stories(stories):
    rows = {r["feature"]: r for r in instruct_checks.cue_calibration(stories)}
    assert rows["dialogue"]["hit_rate"] == 1.0 and rows["dialogue"]["false_alarm_rate"] == 0.0
    assert all(r["hit_rate"] > r["false_alarm_rate"] for r in rows.values())


def test_instruction_bars_draw_a_bar_per_condition_and_check():
    from tinystories_lib.show import plots

    rows = [{"condition": c, "dimension": d, "mean": 0.5, "ci95": 0.1, "n": 4}
            for c in (instruct_checks.IN_DIST, instruct_checks.OOD) for d in instruct_checks.DIMENSIONS]
    fig = plots.instruction_bars(rows)
    assert len(fig.axes[0].patches) == 6
    plots.plt.close(fig)


# ---------------------------------------------------------------- fields derived from plain stories


def _check_derived_words(stories: list[Story]) -> None:
    index = vocab_index()
    derived = [instruct_format.derived_words(s, 7) for s in stories]
    assert sum(len(w or {}) == 3 for w in derived) >= 0.9 * len(stories)
    for s, w in zip(stories, derived):
        if not w:
            continue
        assert set(w) <= set(instruct_format.WORD_ROLES) and len(set(w.values())) == len(w)  # one role each
        assert all((role, word) in index for role, word in w.items())  # a vocabulary word of that part of speech
        toks = {words.base_word(t) for t in words.words(s.text)}
        assert all(words.uses_word(toks, x) for x in w.values()), (s.id, w)  # the story uses it, in some form
        assert all(instruct_checks.words_used(s.text, w).values())  # so the words check passes it
    assert derived == [instruct_format.derived_words(s, 7) for s in stories]  # deterministic per id and seed
    assert derived != [instruct_format.derived_words(s, 8) for s in stories]  # and drawn, not fixed


def test_derived_words_are_vocabulary_words_the_story_uses(plain):
    _check_derived_words(plain)
    for told, s in zip(tell_stories(120, seed=5), plain):  # a name ("Rose", "Spot") is not drawn as a word
        lower = set(words.words(s.text, lower=False))
        names = {c["name"].lower() for c in told.facts["characters"] if c["name"].lower() not in lower}
        assert not set((instruct_format.derived_words(s, 7) or {}).values()) & names
    named = Story(id="n", text="Daisy and Spot ran to the ball. Daisy was happy.", source="t")
    assert instruct_format.derived_words(named, 0) == {"verb": "run", "noun": "ball", "adjective": "happy"}
    assert instruct_format.derived_words(Story(id="e", text="Hello there.", source="t"), 0) is None


def test_derived_words_on_real_tinystories(shared):
    from tinystories_lib.stories.loading import load_txt

    stories = load_txt(shared(SAMPLE), limit=400)
    assert not any(instruct_format.story_fields(s) for s in stories)  # plain stories: no field of their own
    _check_derived_words(stories)


def test_detected_features_are_the_cues_that_fire(plain):
    for s in plain:
        found = instruct_checks.detected_features(s.text)
        assert found == [f for f, cue in instruct_checks.FEATURE_CUES.items() if cue(s.text)]
        assert "foreshadowing" not in found
        assert all(instruct_checks.features_honoured(s.text, found).values())  # detection and checking agree
        assert ("dialogue" in found) == any(q in s.text for q in '"“”')  # dialogue: quoted speech
    assert instruct_checks.detected_features("Tom sat. He sat more.") == []


def test_fields_a_story_carries_are_kept_and_only_missing_ones_derived(stories, plain):
    told = stories[0]  # storyteller: words, features (from its prompt, possibly none) and summary of its own
    assert instruct_checks.with_derived_fields(told, 7) == (told, ())
    no_features = replace(told, features=[])
    assert instruct_checks.with_derived_fields(no_features, 7) == (no_features, ())  # its prompt asked for none
    # a hub Instruct record that shows only a Summary: words and features filled, the summary kept
    record = Story(id="r1", text=told.text, source="hub:roneneldan/TinyStoriesInstruct", summary=told.summary)
    filled, derived = instruct_checks.with_derived_fields(record, 7)
    assert derived == ("features", "words") and filled.summary == told.summary
    assert filled.words == instruct_format.derived_words(record, 7)
    assert filled.features == instruct_checks.detected_features(told.text)
    filled, derived = instruct_checks.with_derived_fields(plain[0], 7)
    assert filled.summary is None and "summary" not in derived  # a summary is never made up


def test_held_out_pair_falls_back_to_available_fields():
    assert instruct_format.choose_pair(("summary", "features", "words"), ("summary", "words")) == (("summary", "words"), None)
    pair, note = instruct_format.choose_pair(("features", "words"), ("summary", "words"))
    assert pair == ("features", "words") and "summary not available" in note and "features + words" in note
    assert instruct_format.choose_pair(("features", "words"), ("summary", "features"))[0] == ("features", "words")
    with pytest.raises(ValueError, match="no pair of instruction fields"):
        instruct_format.choose_pair(("words",), ("summary", "words"))


def test_instruct_tokens_and_evaluation_on_plain_stories(tmp_path, plain):
    run = _run_with_corpus(tmp_path, plain)
    out = instruct.instruct_tokens(run, progress=False)  # no longer stops at "no story ... has a summary"
    meta = Run.artifact(out)
    pair = ("features", "words")
    assert meta["available_fields"] == list(pair) and meta["held_out_pair"] == list(pair)
    assert meta["held_out_pair_asked"] == list(PAIR) and meta["held_out_cooccurrences"] == 0
    assert meta["derived_fields"]["train"]["words"] == 90 and 0 < meta["derived_fields"]["train"]["features"] <= 90
    assert any(n.startswith("summary: not available") for n in meta["notes"])
    assert "summary: not available" in instruct.describe_fields(meta)
    records = [r for r in Codec.load(out).decode(read_shard(out / "train.bin")).split(EOT) if r.strip()]
    shown = [instruct_format.record_fields(r) for r in records]
    assert len(records) == 90 and not any(set(pair) <= f for f in shown)  # held-out pair never together
    assert not any("summary" in f for f in shown) and any("words" in f for f in shown) and any("features" in f for f in shown)

    sets = instruct.evaluation_sets(run)
    by_cond = instruct_checks.sets_summary(sets)
    assert set(by_cond[instruct_checks.IN_DIST]) == {"features", "words"}
    assert set(by_cond[instruct_checks.OOD]) == {"features+words"}
    assert sum(by_cond[instruct_checks.OOD].values()) == run.params.instruct.n_eval
    for s in sets:
        assert all(instruct_checks.words_used(s.reference, s.words).values()) if s.words else True
        assert all(instruct_checks.features_honoured(s.reference, s.features).values())
    assert instruct.field_plan(run).pair == pair


def test_cue_calibration_needs_stories_that_know_their_features(plain, stories):
    assert instruct_checks.cue_calibration(plain) == []
    assert "cannot be calibrated" in instruct_checks.calibration_table([])
    assert len(instruct_checks.cue_calibration(plain + stories)) == len(instruct_checks.FEATURE_CUES)


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


def _plain_txt(tmp_path) -> str:
    path = tmp_path / "plain.txt"
    path.write_text("".join(f"{s.text}\n{EOT}\n" for s in tell_stories(400, seed=11)), encoding="utf-8")
    return str(path)


@pytest.mark.slow
@pytest.mark.parametrize("corpus", ["storyteller texts", "shared TinyStories sample"])
def test_notebook_07_runs_on_plain_stories(tmp_path, shared, corpus):
    """`data.source: files` with plain stories: no summary, words and features derived, a fallback pair."""
    from tinystories_lib.reproduce import reproduce

    path = _plain_txt(tmp_path) if corpus == "storyteller texts" else str(shared(SAMPLE))  # skips without ../shared
    reproduce("tiny", only=["07"], overrides={**TINY_INSTRUCT, "data.source": "files", "data.paths": [path],
                                              "data.n_stories": 0},
              runs_root=tmp_path / "runs", figures_root=tmp_path / "figs", log_output=False)
    executed = json.loads((tmp_path / "runs" / "tiny" / "notebooks" / "07_instruct.ipynb").read_text())
    printed = "".join(t for c in executed["cells"] for o in c.get("outputs", [])
                      for t in (o.get("text") or o.get("data", {}).get("text/markdown") or []))
    assert "summary: not available" in printed and "holding out features + words instead" in printed
    assert "cannot be calibrated" in printed
    assert (tmp_path / "figs" / "tiny" / "instruction_following.png").stat().st_size > 0


def test_the_instruct_judge_is_the_profiles_judge_with_its_repeats(tmp_path, monkeypatch):
    from tests.openai_server import FakeOpenAI, judge_reply

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-instruct-repeats")
    sets, comps = _sets_and_completions()
    with FakeOpenAI(reply=judge_reply("plain", instruction_score="\nInstruction following: 9/10")) as server:
        run = Run.load("tiny", {"grade.judge": "llm", "grade.llm.base_url": server.base_url,
                                "grade.llm.model": "fake-judge", "grade.judge_repeats": 2},
                       runs_root=tmp_path / "runs", figures_root=tmp_path / "figures")
        grades = instruct.judge_grades(run, comps, sets)
        assert len(server.chat_requests) == 2 * 2 * len(comps)  # two turns, two repeats, each completion
    assert len(grades) == len(comps) and all(g.status == "ok" for g in grades)
    assert all(len(g.extra["repeat_scores"]) == 2 for g in grades)  # the mean of two judgments each
    assert {g.extra["condition"] for g in grades} == {instruct_checks.IN_DIST, instruct_checks.OOD}
