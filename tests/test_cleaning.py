"""Cleaning real corpora: mojibake repaired, GPT-4 stories selected, fragments and near-duplicates dropped,
each drop counted with examples, and the report kept in the corpus artifact."""

from __future__ import annotations

import json

import pytest

from tinystories_lib.stories.cleaning import (
    CleanReport,
    clean,
    drop_report_table,
    is_fragment,
    repair_mojibake,
)
from tinystories_lib.stories.records import Story

HEAD = "data/tinystories_v1_train_head/tinystories_v1_train_head_1096.txt"


def mojibake(text: str) -> str:
    """Text as it reads after its UTF-8 bytes were decoded as cp1252: the bytes cp1252 has no character
    for (the 0x9D ending a closing curly quote) are lost, as in TinyStories V1."""
    return text.encode("utf-8").decode("cp1252", errors="ignore")


def _s(i, text: str, source: str = "test") -> Story:
    return Story(id=f"t-{i}", text=text, source=source)


GOOD = [
    "Lily saw a big red ball in the park. She ran to it and kicked it high. Her dog ran after it and barked.",
    "Tom had a little boat. He put it in the pond and watched it float. A duck swam by and said hello to it.",
    "Mia baked a cake with her mom. They put on pink frosting. Then they shared it with all their friends.",
    "Ben found a shiny shell on the beach. He showed it to his sister. She smiled and said it was pretty.",
]


# --- mojibake ---------------------------------------------------------------------------------------------------


def test_repair_mojibake_undoes_utf8_read_as_cp1252():
    original = "Sue said, \u201cIt\u2019s my kite!\u201d Then she ran \u2013 fast \u2014 to the hill."
    broken = mojibake(original)
    assert "â€™" in broken and "â€œ" in broken and "\x9d" not in broken  # the real byte pattern
    assert repair_mojibake(broken) == original
    assert repair_mojibake(mojibake("\u201cYes,\u201d she said. \u201cNo!\u201d")) == "\u201cYes,\u201d she said. \u201cNo!\u201d"
    for clean_text in (original, "Plain ASCII, nothing to do.", "Zoë ate crème brûlée at the café."):
        assert repair_mojibake(clean_text) == clean_text


def test_clean_counts_and_shows_mojibake_repairs():
    broken = mojibake("Tom said, \u201cI don\u2019t want to go to bed!\u201d His mom smiled and read him a story.")
    kept, report = clean([_s(1, broken), _s(2, GOOD[0])], min_chars=30)
    assert kept[0].text == "Tom said, \"I don't want to go to bed!\" His mom smiled and read him a story."
    assert report.mojibake_repaired == 1
    [example] = report.mojibake_examples
    assert example["id"] == "t-1" and "â€œ" in example["before"] and "\u201cI don\u2019t" in example["after"]
    kept, report = clean([_s(1, broken)], min_chars=30, fix_mojibake=False)
    assert "â€" in kept[0].text and report.mojibake_repaired == 0


def test_no_mojibake_is_left_in_the_real_head_file(shared):
    from tinystories_lib.stories.loading import load_txt

    stories = load_txt(shared(HEAD))
    assert sum("â€" in s.text for s in stories) > 0
    kept, report = clean(stories, min_chars=0, max_chars=10**9)
    assert not [s.id for s in kept if "â€" in s.text]
    assert report.mojibake_repaired > 0 and len(report.mojibake_examples) == 3
    assert not [s.id for s in kept if any(0x80 <= ord(c) < 0xA0 for c in s.text)]  # no stray C1 controls


# --- drops ------------------------------------------------------------------------------------------------------


def test_is_fragment_uses_the_sentence_end_of_the_word_layer():
    assert not is_fragment("He ran home.")
    assert not is_fragment('She said, "Yes!"')
    assert not is_fragment("She said, \u201cYes!\u201d")
    assert not is_fragment("They played all day.\n\nThe End")
    assert is_fragment("They said goodbye to each")
    assert is_fragment("He was happy. Then he")
    assert is_fragment("")


def test_each_drop_reason_is_counted_with_examples():
    stories = [
        _s(1, GOOD[0]),
        _s(2, "   "),
        _s(3, "Too short."),
        _s(4, "Sam ran. " * 100),
        _s(5, GOOD[1] + " Then Tom went home and he"),
        _s(6, GOOD[0]),
        _s(7, GOOD[2]),
        _s(8, "A cat sat on the mat and then it"),
    ]
    kept, report = clean(stories, min_chars=30, max_chars=500, drop_fragments=True)
    assert [s.id for s in kept] == ["t-1", "t-7"]
    assert dict(report) == {"input": 8, "kept": 2, "empty": 1, "too_short": 1, "too_long": 1, "fragment": 2,
                            "exact_duplicate": 1}
    ex = report.examples
    assert [e["id"] for e in ex["fragment"]] == ["t-5", "t-8"]
    assert ex["fragment"][0]["text"].endswith("Then Tom went home and he")  # a fragment shows where it stops
    assert ex["too_long"][0]["text"].startswith("Sam ran.") and len(ex["too_long"][0]["text"]) <= 121
    assert ex["exact_duplicate"] == [{"id": "t-6", "text": GOOD[0], "like": "t-1"}]  # short: shown whole
    assert ex["empty"] == [{"id": "t-2", "text": ""}]
    many = [_s(i, f"Short {i}.") for i in range(10)]
    _, report = clean(many, min_chars=30)
    assert report["too_short"] == 10 and len(report.examples["too_short"]) == 3


def test_the_report_is_json_and_renders_as_markdown():
    stories = [_s(1, GOOD[0]), _s(2, GOOD[0]), _s(3, "Too | short."),
               _s(4, mojibake("Ann said, \u201cLook at the moon!\u201d Her dad looked up and smiled at it."))]
    _, report = clean(stories, min_chars=30, drop_fragments=True)
    stored = json.loads(json.dumps(report.as_dict()))  # what the corpus artifact holds
    assert CleanReport.from_dict(stored) == report and CleanReport.from_dict(stored).examples == report.examples
    table = drop_report_table(stored)
    assert table == drop_report_table(report)
    assert "| exact_duplicate |" in table and "`t-2` (like `t-1`)" in table
    assert "Too \\| short." in table  # a | in a story does not break the table
    assert "repaired in 1 stories" in table and "\u201cLook at the moon!\u201d" in table
    assert "| **kept** | | **2** | |" in table
    # an artifact written before the report had examples: counts alone
    assert "| too_short |" in drop_report_table({"input": 3, "kept": 2, "too_short": 1})


def test_gpt4_only_keeps_the_gpt4_stories():
    stories = [_s(1, GOOD[0], "GPT-4"), _s(2, GOOD[1], "GPT-3.5"), _s(3, GOOD[2], "GPT-4"),
               _s(4, GOOD[3], "file:data00.json")]  # a record without a source: not known to be GPT-4
    kept, report = clean(stories, gpt4_only=True)
    assert [s.id for s in kept] == ["t-1", "t-3"]
    assert report["not_gpt4"] == 2 and [e["id"] for e in report.examples["not_gpt4"]] == ["t-2", "t-4"]
    assert not report.notes
    kept, report = clean(stories)
    assert len(kept) == 4 and "not_gpt4" not in report


def test_gpt4_only_drops_nothing_where_no_story_names_its_model():
    stories = [_s(1, GOOD[0], "storyteller"), _s(2, GOOD[1], "file:TinyStories-train.txt"),
               _s(3, GOOD[2], "hub:roneneldan/TinyStories")]
    kept, report = clean(stories, gpt4_only=True)
    assert len(kept) == 3 and report["not_gpt4"] == 0
    assert report.notes == ["gpt4_only: no story carries its model (storyteller, .txt or hub text); nothing dropped"]
    assert "nothing dropped" in drop_report_table(report)


def test_near_duplicates_dropped_at_a_threshold_and_kept_when_zero():
    pytest.importorskip("datasketch")
    base = ("Once upon a time there was a little girl named Lily. She loved to play in the park with her red ball. "
            "One day the ball rolled into the pond and a kind duck pushed it back to her. Lily said thank you.")
    stories = [_s(1, base), _s(2, base.replace("red ball", "blue ball")), _s(3, GOOD[1])]
    kept, report = clean(stories, near_duplicates=0.7)
    assert [s.id for s in kept] == ["t-1", "t-3"]
    [example] = report.examples["near_duplicate"]
    assert report["near_duplicate"] == 1 and (example["id"], example["like"]) == ("t-2", "t-1")
    kept, report = clean(stories, near_duplicates=0.0)
    assert len(kept) == 3 and "near_duplicate" not in report
    with pytest.raises(ValueError, match="near_duplicates"):
        clean(stories, near_duplicates=1.5)


# --- the corpus stage -------------------------------------------------------------------------------------------


def _run(tmp_path, **over):
    from tinystories_lib.runs import Run

    return Run.load("tiny", {"data.n_stories": 60, **over}, runs_root=tmp_path / "runs",
                    figures_root=tmp_path / "figures")


def test_the_corpus_stage_records_the_report(tmp_path):
    from tinystories_lib import stages
    from tinystories_lib.runs import Run

    run = _run(tmp_path, **{"data.gpt4_only": True})
    info = Run.artifact(stages.corpus(run, progress=False))
    rep = info["clean_report"]
    assert rep["input"] == 60 and rep["kept"] == info["n_train"] + info["n_val"]
    assert {"fragment", "not_gpt4", "examples", "mojibake", "notes", "settings"} <= set(rep)
    assert rep["not_gpt4"] == 0 and "nothing dropped" in rep["notes"][0]  # storyteller stories name no model
    assert rep["settings"]["drop_fragments"] is True and "| **kept** |" in drop_report_table(rep)


def test_the_corpus_stage_cleans_training_and_validation_stories_with_the_profile(tmp_path):
    from tinystories_lib import stages
    from tinystories_lib.runs import Run

    def record(text, source):
        return {"story": text, "instruction": {"prompt": "", "words": [], "features": []}, "summary": "",
                "source": source}

    says = mojibake("\u201cLet\u2019s play!\u201d")
    train = [record(f"Kid {i} ran to the park with a ball. Mom said, {says} They played till dark.", "GPT-4")
             for i in range(30)]
    train += [record(f"Kid {i} had a nap and then a snack.", "GPT-3.5") for i in range(5)]
    train += [record("Kid 99 went to the shop and bought a", "GPT-4")]
    (tmp_path / "train.json").write_text(json.dumps(train))
    val = [record(f"Pup {i} dug a hole in the yard. Then he slept in the sun all day long.", "GPT-4")
           for i in range(4)] + [record("Pup 9 dug a hole and then he", "GPT-4")]
    (tmp_path / "val.json").write_text(json.dumps(val))
    run = _run(tmp_path, **{"data.source": "files", "data.paths": [str(tmp_path / "train.json")],
                            "data.val_source": "files", "data.val_paths": [str(tmp_path / "val.json")],
                            "data.gpt4_only": True, "data.min_chars": 20})
    out = stages.corpus(run, progress=False)
    info = Run.artifact(out)
    rep, val_rep = info["clean_report"], info["val_clean_report"]
    assert (rep["input"], rep["kept"], rep["not_gpt4"], rep["fragment"]) == (36, 30, 5, 1)
    assert rep["mojibake"]["repaired"] == 30 and "â€œ" in rep["mojibake"]["examples"][0]["before"]
    assert (val_rep["input"], val_rep["kept"], val_rep["fragment"]) == (5, 4, 1)
    assert not [s for s in stages.read_corpus(run, "train") if "â€" in s.text]
