"""Loading TinyStories in each published form, the hub path (offline), cleaning and splitting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tinystories_lib.stories import cleaning, hub
from tinystories_lib.stories.cleaning import clean, split
from tinystories_lib.stories.hub import HubUnavailableError, load_hub, stories_from_rows
from tinystories_lib.stories.loading import load_corpus, load_json, load_local, load_parquet, load_txt
from tinystories_lib.stories.records import EOT, Story, write_jsonl

REPO = Path(__file__).resolve().parents[1]
SAMPLE = "data/tinystories_sample/tinystories_v1_sample_2500.txt"
INSTRUCT = "data/tinystories_instruct_sample/instruct_train_2_records.txt"

# A record in the shape of the TinyStories_all_data shards (note the published "prompt:" key).
PROMPT = (
    "Write a short story (3-5 paragraphs) which only uses very simple words that a 3 year old child would "
    'understand. The story should use the verb "hang", the noun "foot" and the adjective "cute". The story '
    "has the following features: the story should contain at least one dialogue."
)
ALL_DATA_RECORD = {
    "story": '\n\nLily sees a cute bird hang on a branch.\n"Look!" she says to her foot.',
    "instruction": {"prompt:": PROMPT, "words": ["hang", "foot", "cute"], "features": ["Dialogue", "Twist"]},
    "summary": "Lily sees a bird.",
    "source": "GPT-4",
}


def _txt(path: Path, stories: list[str]) -> Path:
    path.write_text("".join(f"{s}\n{EOT}\n" for s in stories), encoding="utf-8")
    return path


def _parquet(path: Path, columns: dict) -> Path:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)
    return path


@pytest.fixture
def datasets(tmp_path, monkeypatch):
    """The real `datasets` library, caching under tmp_path instead of ~/.cache."""
    ds = pytest.importorskip("datasets")
    monkeypatch.setattr(ds.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    return ds


# --- .txt -------------------------------------------------------------------------------------------------


def test_shared_sample_has_2500_stories(shared):
    path = shared(SAMPLE)
    stories = load_txt(path)
    assert len(stories) == 2500
    assert stories[0].id == "tinystories_v1_sample_2500-000001"
    assert stories[-1].id == "tinystories_v1_sample_2500-002500"
    assert stories[0].source == "file:tinystories_v1_sample_2500.txt"
    assert stories[0].text.startswith(
        "Once upon a time, in a small village, there was a little boy named Tim."
    )
    assert stories[0].text.endswith("it is good to help others when they are in need.")
    assert all(EOT not in s.text and s.text == s.text.strip() for s in stories)
    assert len({s.id for s in stories}) == 2500

    first = load_txt(path, limit=3)
    assert [s.text for s in first] == [s.text for s in stories[:3]]
    assert load_local(path, limit=2) == stories[:2]


def test_txt_edge_cases(tmp_path):
    path = tmp_path / "odd.txt"
    path.write_bytes(
        b"\r\n  First story,\r\nsecond line.  \r\n<|endoftext|>\r\n\r\n<|endoftext|>\n"
        b"Second story. <|endoftext|>\nThird story has no final separator\n"
    )
    stories = load_txt(path)
    assert [s.text for s in stories] == [
        "First story,\nsecond line.",
        "Second story.",
        "Third story has no final separator",
    ]
    assert [s.id for s in stories] == ["odd-000001", "odd-000002", "odd-000003"]
    assert load_txt(path, limit=0) == []
    assert load_txt(_txt(tmp_path / "empty.txt", [])) == []


def test_instruct_txt_is_detected_and_parsed(shared):
    path = shared(INSTRUCT)
    stories = load_local(path)
    assert [s.id for s in stories] == ["instruct_train_2_records-000001", "instruct_train_2_records-000002"]
    assert stories[0].text.startswith("Sara and Ben were playing in the park.")
    assert stories[0].words == {"verb": "quit", "noun": "oak", "adjective": "gloomy"}
    assert stories[1].summary.startswith("Lily steals a new bike")
    assert stories[1].features == ["dialogue", "bad_ending", "moral_value"]

    raw = load_txt(path, is_instruct=False)
    assert raw[0].text.startswith("Features: Dialogue\nWords: quit, oak, gloomy") and raw[0].summary is None


def test_instruct_record_without_story_is_skipped(tmp_path):
    path = _txt(
        tmp_path / "instruct.txt", ["Words: a, b, c\nStory: \n\nOne.", "Summary: no story", "Story: Two."]
    )
    stories = load_txt(path)
    assert [(s.id, s.text) for s in stories] == [("instruct-000001", "One."), ("instruct-000003", "Two.")]
    assert [s.text for s in load_txt(path, limit=1)] == ["One."]


def test_streaming_reads_only_what_it_needs():
    """The same document splitter backs load_txt and load_hub; it must stop pulling lines at the limit."""
    pulled = []

    def rows():
        for i in range(10**6):
            pulled.append(i)
            yield {"text": f"line {i}"}
            yield {"text": EOT}

    stories = stories_from_rows(rows(), "test", limit=3, line_based=True)
    assert [s.text for s in stories] == ["line 0", "line 1", "line 2"]
    assert len(pulled) <= 4


# --- .json / .jsonl ---------------------------------------------------------------------------------------


def test_all_data_json_record(tmp_path):
    path = tmp_path / "data00.json"
    path.write_text(json.dumps([ALL_DATA_RECORD, {**ALL_DATA_RECORD, "source": "GPT-3.5"}]), encoding="utf-8")
    s, t = load_json(path)
    assert s.id == "data00-000001" and t.id == "data00-000002"
    assert s.text.startswith("Lily sees a cute bird") and s.text.endswith("to her foot.")
    assert s.source == "GPT-4" and t.source == "GPT-3.5"
    assert s.prompt == PROMPT
    assert s.words == {"verb": "hang", "noun": "foot", "adjective": "cute"}
    assert s.features == ["dialogue", "plot_twist"]
    assert s.summary == "Lily sees a bird."


def test_json_words_roles_come_from_the_prompt(tmp_path):
    record = {
        **ALL_DATA_RECORD,
        "instruction": {**ALL_DATA_RECORD["instruction"], "words": ["cute", "foot", "hang"]},
    }
    path = tmp_path / "shuffled.jsonl"
    path.write_text(json.dumps(record) + "\n", encoding="utf-8")
    assert load_json(path)[0].words == {"verb": "hang", "noun": "foot", "adjective": "cute"}


def test_jsonl_without_instruction_and_our_own_jsonl(tmp_path):
    plain = tmp_path / "plain.jsonl"
    plain.write_text(
        json.dumps({"story": "Just a story."}) + "\n\n" + json.dumps({"text": "Another."}) + "\n"
    )
    a, b = load_json(plain)
    assert (a.text, a.source, a.words, a.features, a.prompt) == (
        "Just a story.",
        "file:plain.jsonl",
        None,
        [],
        None,
    )
    assert b.text == "Another."

    ours = [Story(id="x-1", text="Mine.", source="storyteller", words={"noun": "cat"}, features=["conflict"])]
    write_jsonl(ours, tmp_path / "ours.jsonl")
    assert load_json(tmp_path / "ours.jsonl") == ours


def test_json_shard_directory_with_limit(tmp_path):
    shards = tmp_path / "TinyStories_all_data"
    shards.mkdir()
    for n in range(3):
        records = [{**ALL_DATA_RECORD, "story": f"Shard {n} story {i}."} for i in range(4)]
        (shards / f"data{n:02d}.json").write_text(json.dumps(records), encoding="utf-8")
    assert len(load_json(shards)) == 12
    stories = load_json(shards, limit=6)
    assert [s.id for s in stories][3:] == ["data00-000004", "data01-000001", "data01-000002"]
    assert load_local(shards, limit=6) == stories


def test_bad_json_lines(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"story": "ok"}\nnot json\n')
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        load_json(path)


# --- .parquet ---------------------------------------------------------------------------------------------


def test_parquet(tmp_path):
    path = _parquet(
        tmp_path / "train-00000.parquet", {"text": ["One.", "  ", "Two.", "Three."], "extra": [1, 2, 3, 4]}
    )
    stories = load_parquet(path)
    assert [s.text for s in stories] == ["One.", "Two.", "Three."]
    assert [s.id for s in stories] == ["train-00000-000001", "train-00000-000003", "train-00000-000004"]
    assert stories[0].source == "file:train-00000.parquet"
    assert [s.text for s in load_parquet(path, limit=2)] == ["One.", "Two."]

    no_text = _parquet(tmp_path / "bad.parquet", {"body": ["x"]})
    with pytest.raises(ValueError, match="no 'text' or 'story' column"):
        load_parquet(no_text)


# --- dispatch and the entry point ---------------------------------------------------------------------------


def test_load_local_dispatch_and_directory(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    _txt(folder / "a.txt", ["Txt one.", "Txt two."])
    (folder / "b.jsonl").write_text(json.dumps({"story": "Json one."}) + "\n")
    _parquet(folder / "c.parquet", {"text": ["Parquet one."]})
    (folder / "notes.md").write_text("ignored")
    assert [s.text for s in load_local(folder)] == ["Txt one.", "Txt two.", "Json one.", "Parquet one."]
    assert [s.text for s in load_local(folder, limit=3)] == ["Txt one.", "Txt two.", "Json one."]

    with pytest.raises(ValueError, match="unsupported file type 'notes.md'"):
        load_local(folder / "notes.md")


def test_missing_path_says_what_was_looked_for(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        load_local(tmp_path / "TinyStoriesV2-GPT4-train.txt")
    message = str(e.value)
    assert "TinyStoriesV2-GPT4-train.txt" in message
    assert ".txt" in message and ".parquet" in message and ".json" in message and "directory" in message

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no TinyStories files"):
        load_local(empty)


def test_load_corpus_files(tmp_path):
    a = _txt(tmp_path / "a.txt", ["A1.", "A2."])
    b = _txt(tmp_path / "b.txt", ["B1.", "B2."])
    assert [s.text for s in load_corpus("files", paths=[a, b])] == ["A1.", "A2.", "B1.", "B2."]
    assert [s.text for s in load_corpus("files", paths=[a, b], limit=3)] == ["A1.", "A2.", "B1."]
    assert [s.text for s in load_corpus("files", paths=str(b))] == ["B1.", "B2."]
    with pytest.raises(ValueError, match="needs paths"):
        load_corpus("files")
    with pytest.raises(ValueError, match="unknown corpus source 'storyteller'"):
        load_corpus("storyteller")


# --- `datasets` and the hub, offline ------------------------------------------------------------------------


@pytest.mark.parametrize("streaming", [True, False])
def test_stories_from_rows_with_the_datasets_text_builder(tmp_path, datasets, streaming):
    path = _txt(
        tmp_path / "TinyStoriesV2-GPT4-valid.txt", ["First.\n\nSecond paragraph.", "Second.", "Third."]
    )
    ds = datasets.load_dataset("text", data_files=str(path), split="train", streaming=streaming)
    assert ds.info.builder_name == "text"  # what load_hub keys line reassembly on
    stories = stories_from_rows(ds, "hub:test", id_prefix="v2", line_based=True)
    assert [s.text for s in stories] == ["First.\n\nSecond paragraph.", "Second.", "Third."]
    assert [s.id for s in stories] == ["v2-000001", "v2-000002", "v2-000003"]
    assert stories_from_rows(ds, "hub:test", limit=2, line_based=True)[1].text == "Second."


def test_stories_from_rows_instruct_records(shared, datasets):
    ds = datasets.load_dataset("text", data_files=str(shared(INSTRUCT)), split="train", streaming=True)
    stories = stories_from_rows(ds, "hub:roneneldan/TinyStoriesInstruct", line_based=True, is_instruct=True)
    assert len(stories) == 2
    assert stories[0].words == {"verb": "quit", "noun": "oak", "adjective": "gloomy"}
    assert stories[1].features == ["dialogue", "bad_ending", "moral_value"]
    assert stories[1].text.startswith("Lily liked to ride her bike.")


def test_load_hub_on_a_local_copy_of_the_v2_layout(tmp_path, datasets):
    repo = tmp_path / "TinyStories"
    repo.mkdir()
    _txt(repo / "TinyStoriesV2-GPT4-train.txt", [f"Train story {i}." for i in range(5)])
    _txt(repo / "TinyStoriesV2-GPT4-valid.txt", ["Valid story."])

    stories = load_hub(str(repo), data_files="TinyStoriesV2-GPT4-train.txt", limit=2)
    assert [s.text for s in stories] == ["Train story 0.", "Train story 1."]
    assert stories[0].id == "TinyStoriesV2-GPT4-train-000001"
    assert stories[0].source == f"hub:{repo}"

    valid = load_hub(str(repo), split="validation", data_files="TinyStoriesV2-GPT4-valid.txt")
    assert [s.text for s in valid] == ["Valid story."]


@pytest.mark.parametrize("streaming", [None, False])
def test_load_hub_on_a_local_copy_of_the_v1_parquet_layout(tmp_path, datasets, streaming):
    repo = tmp_path / "TinyStories"
    _parquet(repo / "data" / "train-00000-of-00001.parquet", {"text": ["P1.", "P2.", "P3."]})
    _parquet(repo / "data" / "validation-00000-of-00001.parquet", {"text": ["V1."]})
    stories = load_hub(str(repo), streaming=streaming)
    assert [s.text for s in stories] == ["P1.", "P2.", "P3."]
    assert stories[0].id == "TinyStories-train-000001"
    assert [s.text for s in load_hub(str(repo), split="validation", streaming=streaming)] == ["V1."]
    assert len(load_corpus("hub", hub_name=str(repo), limit=2, streaming=streaming)) == 2


def test_load_hub_instruct_layout(tmp_path, datasets, shared):
    repo = tmp_path / "TinyStoriesInstruct"
    repo.mkdir()
    (repo / "TinyStories-Instruct-train.txt").write_text(shared(INSTRUCT).read_text(encoding="utf-8"))
    stories = load_hub(str(repo), limit=5)
    assert [s.summary[:12] for s in stories] == ["Sara and Ben", "Lily steals "]


def test_load_hub_does_not_hide_real_errors(tmp_path, datasets):
    repo = tmp_path / "TinyStories"
    repo.mkdir()
    with pytest.raises(FileNotFoundError):
        load_hub(str(repo), data_files="no-such-file.txt")


def test_network_errors_while_streaming_are_wrapped(monkeypatch, datasets):
    class Rows:
        info = type("Info", (), {"builder_name": "text"})()

        def __iter__(self):
            yield {"text": "A line."}
            raise ConnectionError("connection reset while streaming")

    monkeypatch.setattr(hub, "_check_reachable", lambda *args: None)
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: Rows())
    with pytest.raises(HubUnavailableError, match="connection reset") as e:
        load_hub("roneneldan/TinyStories", data_files="TinyStoriesV2-GPT4-train.txt")
    assert "'TinyStoriesV2-GPT4-train.txt'" in str(e.value)


_HUB_PROBE = textwrap.dedent(
    """
    import time
    from tinystories_lib.stories.hub import HubUnavailableError, load_hub
    start = time.time()
    try:
        load_hub("roneneldan/TinyStories", split="validation", data_files="TinyStoriesV2-GPT4-valid.txt", limit=3)
    except HubUnavailableError as e:
        print("CAUSE", type(e.__cause__).__name__)
        print("SECONDS", round(time.time() - start, 1))
        print(e)
    else:
        print("LOADED")
    """
)


def _run_hub_probe(tmp_path: Path, **env: str) -> subprocess.Popen:
    """`datasets` reads HF_HUB_OFFLINE and HF_ENDPOINT at import, so each case gets a fresh interpreter."""
    full_env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    full_env.update(env, HF_HOME=str(tmp_path / "hf-home"), PYTHONPATH=str(REPO))
    return subprocess.Popen(
        [sys.executable, "-c", _HUB_PROBE],
        env=full_env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def test_hub_unreachable_gives_a_clear_error(tmp_path):
    pytest.importorskip("datasets")
    # Both cases run at once: offline mode (the error comes from inside datasets.load_dataset) and an
    # endpoint on a closed loopback port (caught by the reachability check before datasets' retries).
    offline = _run_hub_probe(tmp_path / "a", HF_HUB_OFFLINE="1")
    closed_port = _run_hub_probe(tmp_path / "b", HF_ENDPOINT="http://127.0.0.1:9")
    outputs = {}
    for name, proc in (("offline", offline), ("closed_port", closed_port)):
        try:
            outputs[name] = proc.communicate(timeout=60)[0]
        finally:
            proc.kill()

    for name, out in outputs.items():
        assert "could not load dataset 'roneneldan/TinyStories'" in out, (name, out)
        assert "split 'validation'" in out and "TinyStoriesV2-GPT4-valid.txt" in out, out
        assert "data.source: files" in out and "data.paths" in out and "HF_HUB_OFFLINE" in out, out
        assert float(out.split("SECONDS ")[1].split()[0]) < 15, out
    assert "OfflineModeIsEnabled" in outputs["offline"]
    assert "127.0.0.1:9" in outputs["closed_port"] and "CAUSE URLError" in outputs["closed_port"]


# --- clean ----------------------------------------------------------------------------------------------------


def _s(i: int, text: str) -> Story:
    return Story(id=f"t-{i}", text=text, source="test")


def test_clean_counts_each_reason():
    long_enough = "Tom found a \u201cshiny\u201d stone   by the river.\n\n\n\nHe kept it\u2019s glow.  "
    stories = [
        _s(1, long_enough),
        _s(2, "   "),
        _s(3, "Too short."),
        _s(4, "x" * 200),
        _s(5, long_enough.replace("   ", " ")),  # same story once normalised
        _s(6, "Sue and her cat played in the big garden all day long."),
    ]
    kept, report = clean(stories, min_chars=30, max_chars=100)
    assert [s.id for s in kept] == ["t-1", "t-6"]
    assert kept[0].text == 'Tom found a "shiny" stone by the river.\n\nHe kept it\'s glow.'
    assert report == {
        "input": 6,
        "kept": 2,
        "empty": 1,
        "too_short": 1,
        "too_long": 1,
        "exact_duplicate": 1,
    }
    assert stories[0].text == long_enough  # inputs are not modified


def test_clean_near_duplicates():
    pytest.importorskip("datasketch")
    base = (
        "Once upon a time there was a little girl named Lily. She loved to play in the park with her red ball. "
        "One day the ball rolled into the pond and a kind duck pushed it back to her. Lily said thank you."
    )
    near = base.replace("red ball", "blue ball")
    other = (
        "Max the dog liked to dig holes in the yard. His mom was not happy, so Max helped plant new flowers."
    )
    kept, report = clean([_s(1, base), _s(2, near), _s(3, other)], near_dup_threshold=0.7)
    assert [s.id for s in kept] == ["t-1", "t-3"]
    assert report["near_duplicate"] == 1 and report["kept"] == 2

    kept, report = clean([_s(1, base), _s(2, near), _s(3, other)])
    assert len(kept) == 3 and "near_duplicate" not in report


def test_near_duplicate_sketch_estimates_the_word_trigram_jaccard():
    """The sketch hashes each word once and mixes word hashes into 3-gram hashes: its Jaccard estimate
    must still be unbiased against the exact 3-gram Jaccard, order-sensitive, and case-blind."""
    pytest.importorskip("datasketch")
    import random
    import re
    import statistics

    def trigrams(t):
        w = re.findall(r"\w+", t.lower())
        return {tuple(w[i : i + 3]) for i in range(len(w) - 2)}

    rng = random.Random(0)
    vocab = "the a cat dog sun ran big red happy sad park ball said Lily Tom mom tree went saw found".split()
    index = cleaning.NearDuplicateIndex(0.8)
    errors = []
    for _ in range(60):
        words = [rng.choice(vocab) for _ in range(120)]
        edited = list(words)
        for _ in range(rng.randint(0, 30)):
            edited[rng.randrange(len(edited))] = rng.choice(vocab)
        a, b = " ".join(words), " ".join(edited)
        exact = len(trigrams(a) & trigrams(b)) / len(trigrams(a) | trigrams(b))
        errors.append(index._sketch(a).jaccard(index._sketch(b)) - exact)
    assert abs(statistics.mean(errors)) < 0.02  # 128 permutations: each estimate's sd is <= 0.044
    assert statistics.pstdev(errors) < 0.06
    text = "one two three four five six seven"
    assert index._sketch(text).jaccard(index._sketch(text.upper())) == 1.0
    assert index._sketch(text).jaccard(index._sketch(" ".join(reversed(text.split())))) < 0.2
    # shorter than one shingle: the whole text is the shingle (a second text, so no cached sketch is reused)
    assert index._sketch("hi there").jaccard(index._sketch("Hi, there!")) == 1.0
    assert index._sketch("hi there").jaccard(index._sketch("bye there")) < 0.2


def test_clean_keeps_the_real_sample(shared):
    stories = load_txt(shared(SAMPLE))
    kept, report = clean(stories)
    assert report["kept"] == len(kept) == 2500
    assert report["exact_duplicate"] == 0


# --- split ----------------------------------------------------------------------------------------------------


def test_split_is_deterministic_and_stable_as_the_corpus_grows():
    stories = [_s(i, f"story {i}") for i in range(2000)]
    train, val = split(stories, 0.1, seed=0)
    assert len(train) + len(val) == 2000
    assert 140 < len(val) < 260
    assert split(stories, 0.1, seed=0) == (train, val)
    assert {s.id for s in split(stories, 0.1, seed=1)[1]} != {s.id for s in val}

    grown_train, grown_val = split(stories + [_s(i, "new") for i in range(2000, 2500)], 0.1, seed=0)
    val_ids = {s.id for s in val}
    assert {s.id for s in grown_val if int(s.id.split("-")[1]) < 2000} == val_ids
    assert not val_ids & {s.id for s in grown_train}


def test_split_edge_cases():
    two = [_s(1, "a"), _s(2, "b")]
    train, val = split(two, 0.01, seed=0)
    assert len(train) == 1 and len(val) == 1  # a tiny corpus still gets a validation story
    assert split(two, 0.0) == (two, [])
    with pytest.raises(ValueError, match="val_fraction"):
        split(two, 1.0)
