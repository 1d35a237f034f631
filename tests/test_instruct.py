"""TinyStories-Instruct records: exact published formatting, parsing real records, round trips."""

from __future__ import annotations

import random

import pytest

from tinystories_lib.stories.instruct_format import (
    EOT,
    FEATURE_NAMES,
    feature_keys,
    feature_names,
    format_record,
    iter_documents,
    looks_like_record,
    parse_record,
    parse_records,
    pick_sentence,
    record_to_story,
    write_instruct_file,
)
from tinystories_lib.stories.records import Story

REAL_RECORDS = "data/tinystories_instruct_sample/instruct_train_2_records.txt"

STORY = Story(
    id="s-1",
    text='Tom had a red ball.\n"Can I play?" asked Sue.\n\nThey played all day.',
    source="test",
    words={"verb": "play", "noun": "ball", "adjective": "red"},
    features=["dialogue", "plot_twist"],
    summary="Tom shares his red ball with Sue.",
)


def test_parses_the_two_real_records(shared):
    text = shared(REAL_RECORDS).read_text(encoding="utf-8")
    first, second = parse_records(text)

    assert first["features"] == ["Dialogue"]
    assert first["words"] == ["quit", "oak", "gloomy"]
    assert first["summary"].startswith("Sara and Ben were playing in the park, but Sara wanted")
    assert first["random_sentence"] is None
    assert first["story"].startswith("Sara and Ben were playing in the park.")
    assert first["story"].endswith("They went home and had a cozy and happy time.")
    assert first["story"].count("\n") == 9  # ten paragraphs, one per line

    assert second["features"] == ["Dialogue", "BadEnding", "MoralValue"]
    assert second["words"] == ["ride", "work", "upset"]
    assert second["summary"].endswith("The moral of the story is not to steal.")
    assert "The moral of the story is: do not steal." in second["story"]
    assert EOT not in first["story"] + second["story"]


def test_parsing_lines_matches_parsing_text(shared):
    path = shared(REAL_RECORDS)
    with open(path, encoding="utf-8") as f:
        from_lines = parse_records(f)
    assert from_lines == parse_records(path.read_text(encoding="utf-8"))


def test_real_record_to_story(shared):
    record = parse_records(shared(REAL_RECORDS).read_text(encoding="utf-8"))[1]
    story = record_to_story(record, "instruct-000002", "file:x.txt")
    assert story.words == {"verb": "ride", "noun": "work", "adjective": "upset"}
    assert story.features == ["dialogue", "bad_ending", "moral_value"]
    assert story.summary == record["summary"] and story.text == record["story"]


def test_formatting_reproduces_the_published_lines(shared):
    """Every line we write for a real record appears verbatim in the published one, and the
    `Story:` section (trailing space, blank line, text, separator) matches byte for byte."""
    text = shared(REAL_RECORDS).read_text(encoding="utf-8")
    published = text.split(EOT + "\n")[1] + EOT + "\n"
    story = record_to_story(parse_record(published), "x", "test")

    ours = format_record(story, random.Random(0), all_fields=True)

    head, tail = ours.split("Story: ", 1)
    assert published.endswith("Story: " + tail)
    assert sorted(head.splitlines()) == sorted(published.split("Story: ")[0].splitlines())


def test_round_trip_all_fields():
    text = format_record(STORY, random.Random(1), random_sentence="They played all day.", all_fields=True)
    record = parse_record(text)
    assert record == {
        "summary": STORY.summary,
        "features": ["Dialogue", "Twist"],
        "words": ["play", "ball", "red"],
        "random_sentence": "They played all day.",
        "story": STORY.text,
    }
    back = record_to_story(record, STORY.id, STORY.source)
    assert back == STORY


def test_random_subsets_and_orders_round_trip():
    orders = set()
    for seed in range(40):
        text = format_record(STORY, random.Random(seed), random_sentence="They played all day.")
        assert text.endswith(f"\n\n{STORY.text}\n{EOT}\n")
        record = parse_record(text)
        assert record["story"] == STORY.text
        present = [line.split(":")[0] for line in text.splitlines() if ": " in line and line != "Story: "]
        assert 1 <= len(present) <= 4
        orders.add(tuple(present))
        assert record["words"] in (None, ["play", "ball", "red"])
        assert record["features"] in (None, ["Dialogue", "Twist"])
        assert record["summary"] in (None, STORY.summary)
    assert len(orders) > 10  # subsets and orders really vary


def test_same_seed_same_record():
    assert format_record(STORY, random.Random(7)) == format_record(STORY, random.Random(7))


def test_concatenated_records_parse_back():
    rng = random.Random(3)
    stories = [
        Story(id=f"s{i}", text=f"Story number {i}.\n\nThe end.", source="t", summary=f"S{i}.")
        for i in range(5)
    ]
    records = parse_records("".join(format_record(s, rng) for s in stories))
    assert [r["story"] for r in records] == [s.text for s in stories]


def test_story_without_instructions():
    text = format_record(Story(id="a", text="Just a story.", source="t"), random.Random(0))
    assert text == f"Story: \n\nJust a story.\n{EOT}\n"
    assert parse_record(text)["story"] == "Just a story."


def test_parse_is_robust_to_order_case_wrapping_and_missing_separator():
    text = (
        "Random sentence: The dog ran home.\n"
        "summary: A dog gets lost\n"
        "  and finds its way home.\n"
        "\n"
        "Words: run, home, lost\n"
        "Story: The dog was lost.\n"
        "Summary: not a field, part of the story\n"
        "\n"
        "The dog ran home."
    )
    record = parse_record(text)
    assert record["random_sentence"] == "The dog ran home."
    assert record["summary"] == "A dog gets lost and finds its way home."
    assert record["words"] == ["run", "home", "lost"]
    assert record["features"] is None
    assert (
        record["story"] == "The dog was lost.\nSummary: not a field, part of the story\n\nThe dog ran home."
    )


def test_looks_like_record(shared):
    first = shared(REAL_RECORDS).read_text(encoding="utf-8").split(EOT)[0]
    assert looks_like_record(first)
    assert looks_like_record(format_record(STORY, random.Random(0)))
    assert not looks_like_record(STORY.text)
    assert not looks_like_record("Summary: a summary but no story section")


def test_record_without_story():
    record = parse_record("Summary: nothing else\n")
    assert record["story"] is None and record["summary"] == "nothing else"
    with pytest.raises(ValueError, match="no 'Story:' section"):
        record_to_story(record, "bad-1", "t")


def test_feature_spellings_round_trip():
    keys = list(FEATURE_NAMES)
    assert feature_names(keys) == [
        "Dialogue",
        "BadEnding",
        "MoralValue",
        "Twist",
        "Foreshadowing",
        "Conflict",
    ]
    assert feature_keys(feature_names(keys)) == keys
    assert feature_names(["happy_ending"]) == ["HappyEnding"]
    assert feature_keys(["HappyEnding"]) == ["happy_ending"]


def test_words_with_other_keys_and_one_line_fields():
    story = Story(id="w", text="x", source="t", words={"0": "a", "1": "b"}, summary="two\nlines")
    record = parse_record(format_record(story, random.Random(0), all_fields=True))
    assert record["words"] == ["a", "b"] and record["summary"] == "two lines"
    assert record_to_story(record, "w", "t").words == {"0": "a", "1": "b"}


def test_iter_documents_line_based_and_whole_rows():
    lines = ["A line.", "", "More.", EOT, "", EOT, "B.", f"C. {EOT} D.", "E."]
    assert list(iter_documents(lines)) == ["A line.\n\nMore.", "B.\nC.", "D.\nE."]
    rows = ["one", "", f"two{EOT}three", "four"]
    assert list(iter_documents(rows, line_based=False)) == ["one", "two", "three", "four"]


def test_pick_sentence_takes_a_whole_sentence_of_the_story():
    text = '"Let\'s go!" Tom said to Sue. "Can I help?" asked Sue.\n\nThey all went home. Hi.'
    picks = {pick_sentence(text, random.Random(i)) for i in range(50)}
    assert picks == {'"Let\'s go!" Tom said to Sue.', '"Can I help?" asked Sue.', "They all went home."}
    assert pick_sentence("Hi. Yes.", random.Random(0)) is None


def test_write_instruct_file_in_the_published_layout(tmp_path):
    """Generated stories (summaries, words, features) exported as an Instruct file: every record parses back
    to its story, each of the four fields is shown in some records and left out of others, the random sentence
    comes from the story, and the corpus loader reads the file as Instruct records."""
    from tinystories_lib.stories.loading import load_corpus
    from tinystories_lib.stories.storyteller import Storyteller

    stories = Storyteller(seed=0).generate(200, seed=3)
    path = tmp_path / "TinyStories-Instruct-mine.txt"
    assert write_instruct_file(stories, path, seed=1) == 200
    records = parse_records(path.read_text())
    assert [r["story"] for r in records] == [s.text.strip() for s in stories]
    for key in ("summary", "features", "words", "random_sentence"):
        shown = sum(r[key] is not None for r in records)
        assert 40 < shown < 160, (key, shown)
    assert all(r["random_sentence"] in " ".join(s.text.split()) for r, s in zip(records, stories) if r["random_sentence"])
    assert all(any(r[k] for k in ("summary", "features", "words", "random_sentence")) for r in records)
    loaded = load_corpus("files", paths=[path])
    assert [s.text for s in loaded] == [s.text.strip() for s in stories]
    assert sum(s.summary is not None for s in loaded) == sum(r["summary"] is not None for r in records)
    again = tmp_path / "again.txt"
    write_instruct_file(stories, again, seed=1)
    assert again.read_text() == path.read_text()  # reproducible
