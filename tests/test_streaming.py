"""The data stages stream: the corpus and token stages hold a bounded number of stories whatever the
corpus size (bench/bench_data_scale.py measures it at 100k to 2.1M stories; these check it in seconds).

Memory is Python's own, traced by `tracemalloc` from the stage's start: exact and deterministic (no
allocator noise), and it is where a list of stories or texts would live."""

from __future__ import annotations

import random
import tracemalloc
import weakref
from pathlib import Path

import pytest

from tinystories_lib.runs import Run
from tinystories_lib.stories.records import EOT, Story

WORDS = ("cat dog ball tree park sun mom dad girl boy red big small happy sad ran jumped played saw liked "
         "found gave took made little friend home water cake hat box bird fish toy kite rain day").split()


def _story(i: int) -> str:
    rng = random.Random(i)
    sentences = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 10))).capitalize() + "."
                 for _ in range(18)]
    return f"Story {i}. " + " ".join(sentences)  # about 1 KB, distinct, ends with a sentence end


def _txt(path: Path, n: int) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            f.write(f"{_story(i)}\n{EOT}\n")
    return path


def _run(tmp_path: Path, name: str, n: int, **over) -> Run:
    path = _txt(tmp_path / f"{name}.txt", n)
    return Run.load("tiny", {"data.source": "files", "data.paths": [str(path)], "data.n_stories": 0,
                             "tokenizer.vocab_size": 300, "tokenizer.train_stories": 300, **over},
                    runs_root=tmp_path / name / "runs", figures_root=tmp_path / name / "figures")


def _peak_mb(fn) -> float:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


@pytest.fixture(scope="module")
def peaks(tmp_path_factory):
    """Python's peak memory of each stage on 2,500 and on 7,500 stories (2.5 and 7.5 MB of text), and of
    the list APIs on the larger corpus (what the stages did before streaming). Both corpora are larger
    than what the stages hold at a time (the loader's 1 MB chunks, the tokenizer's 2048-story batches),
    and the digests of exact-duplicate detection are merged into their 8-byte array every 256 stories
    (DigestSet.buffer, 131,072 otherwise), so the Python set's 100 bytes a story do not blur the figure."""
    from tinystories_lib.stages.corpus import corpus
    from tinystories_lib.stages.shards import shards
    from tinystories_lib.stories.cleaning import DigestSet, clean
    from tinystories_lib.stories.loading import load_corpus

    tmp = tmp_path_factory.mktemp("streaming")
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(DigestSet, "buffer", 256)
        warm = _run(tmp, "warm", 300)  # the stages' lazy imports, outside the measured calls
        shards(warm, progress=False)
        for name, n in (("small", 2500), ("big", 7500)):
            run = _run(tmp, name, n)
            out[name, "corpus"] = _peak_mb(lambda run=run: corpus(run, progress=False))
            out[name, "tokens"] = _peak_mb(lambda run=run: shards(run, progress=False))
            out[name, "run"] = run
    big = out["big", "run"].params.data.paths
    out["lists"] = _peak_mb(lambda: clean(load_corpus("files", paths=big), min_chars=50, max_chars=4000))
    return out


def test_the_corpus_stage_holds_no_more_for_a_larger_corpus(peaks):
    small, big = peaks["small", "corpus"], peaks["big", "corpus"]
    # 5 MB more text; 40 KB more digests; where a 1 MB chunk of the file falls moves the peak by some 0.5 MB
    assert big < small + 1.5, (small, big)
    assert peaks["lists"] > big + 5.0, (peaks["lists"], big)  # the list APIs hold it: the test can see it


def test_the_token_stage_holds_no_more_for_a_larger_corpus(peaks):
    small, big = peaks["small", "tokens"], peaks["big", "tokens"]
    assert big < small + 1.5, (small, big)  # a batch of ids is held (2048 stories), never the corpus
    info = Run.artifact(next((peaks["big", "run"].root / "tokens").iterdir()))
    assert info["tokenizer_stories"] <= 300 and info["train_tokens"] > 7000 * 100


def test_the_corpus_stage_lets_each_story_go_before_reading_the_next(tmp_path, monkeypatch):
    """A source that checks, as each story is asked for, that the stories it gave before were let go."""
    from tinystories_lib.stages import corpus
    from tinystories_lib.stories import loading

    given: list[weakref.ref] = []
    most_alive = [0]

    def source(*args, **kw):
        for i in range(300):
            most_alive[0] = max(most_alive[0], sum(r() is not None for r in given[-50:]))
            s = Story(id=f"s{i:04d}", text=_story(i), source="file:test.txt")
            given.append(weakref.ref(s))
            yield s
            del s

    monkeypatch.setattr(loading, "iter_corpus", source)
    run = _run(tmp_path, "gen", 0, **{"data.paths": [str(_txt(tmp_path / "unused.txt", 1))]})
    out = corpus(run, progress=False)
    assert Run.artifact(out)["n_loaded"] == 300 and most_alive[0] <= 2


def test_the_streamed_corpus_is_the_list_apis_corpus(tmp_path):
    """The stage's files are what `clean` + `split` + `write_jsonl` make of the same stories, with the
    cleaning report's counts and examples (duplicates name the story they repeat)."""
    from tinystories_lib.stages import corpus
    from tinystories_lib.stories.cleaning import clean, split
    from tinystories_lib.stories.loading import load_corpus
    from tinystories_lib.stories.records import write_jsonl

    texts = [_story(i) for i in range(400)]
    texts[50] = texts[10]  # duplicates, one repeating a story that may land in validation
    texts[399] = texts[3]
    texts[77] = texts[77][:300]  # a fragment
    texts[78] = "Too short."
    path = tmp_path / "mixed.txt"
    path.write_text("".join(f"{t}\n{EOT}\n" for t in texts), encoding="utf-8")
    run = Run.load("tiny", {"data.source": "files", "data.paths": [str(path)], "data.n_stories": 0},
                   runs_root=tmp_path / "runs", figures_root=tmp_path / "figures")
    out = corpus(run, progress=False)
    d = run.params.data
    kept, report = clean(load_corpus("files", paths=[path]), min_chars=d.min_chars, max_chars=d.max_chars,
                         fix_mojibake=d.fix_mojibake, drop_fragments=d.drop_fragments)
    train, val = split(kept, d.val_fraction, seed=run.params.seed)
    write_jsonl(train, tmp_path / "train.jsonl")
    write_jsonl(val, tmp_path / "val.jsonl")
    for name in ("train.jsonl", "val.jsonl"):
        assert (out / name).read_bytes() == (tmp_path / name).read_bytes(), name
    info = Run.artifact(out)
    assert info["clean_report"] == report.as_dict()
    dups = info["clean_report"]["examples"]["exact_duplicate"]
    assert [(e["id"], e["like"]) for e in dups] == [("mixed-000051", "mixed-000011"), ("mixed-000400", "mixed-000004")]
