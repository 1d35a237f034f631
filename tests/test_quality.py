"""Notebook 08's data-quality experiment: the phi-1 filter (labels in, classifier out, filtered artifact,
metrics against held-out labels), the corpora cut to one token budget, and its claim checks."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("sklearn", reason="the quality classifier needs scikit-learn (the quality extra)")

from tinystories_lib.evals import claims  # noqa: E402
from tinystories_lib.evals import quality as Q  # noqa: E402
from tinystories_lib.evals.grades import Completion, Grade  # noqa: E402
from tinystories_lib.params import ParamsError  # noqa: E402
from tinystories_lib.runs import Run  # noqa: E402
from tinystories_lib.stages import quality  # noqa: E402
from tinystories_lib.stories import variants  # noqa: E402
from tinystories_lib.stories.loading import load_txt  # noqa: E402
from tinystories_lib.stories.records import read_jsonl  # noqa: E402
from tinystories_lib.stories.storyteller import tell_stories  # noqa: E402

SAMPLE = "data/tinystories_sample/tinystories_v1_sample_2500.txt"


def _stories(source, shared, n=600):
    if source == "real":
        return load_txt(shared(SAMPLE))[:n]
    return tell_stories(n, seed=3)


@pytest.mark.parametrize("source", ["real", "storyteller"])
def test_the_classifier_tells_typos_from_clean_stories_on_held_out_text(source, shared):
    stories = _stories(source, shared)
    good, bad = stories[:300], variants.with_typos(stories[300:600], 0.03, seed=1)
    texts = [s.text for s in good] + [s.text for s in bad]
    labels = [1] * len(good) + [0] * len(bad)
    split = Q.train_test_split(len(texts), 0.3, seed=0, labels=labels)
    assert not set(split.train) & set(split.test)
    assert {labels[i] for i in split.test} == {0, 1} == {labels[i] for i in split.train}
    for kind in ("logistic", "forest"):
        clf = Q.QualityClassifier(kind, seed=0).fit([texts[i] for i in split.train],
                                                    [labels[i] for i in split.train], texts)
        m = clf.metrics([texts[i] for i in split.test], [labels[i] for i in split.test])
        assert m["n"] == len(split.test) and m["accuracy"] > 0.85, (kind, m)
        assert m["precision"] > 0.85 and m["recall"] > 0.85, (kind, m)


def test_one_label_only_is_a_clear_error():
    texts = [s.text for s in tell_stories(20, seed=1)]
    with pytest.raises(ValueError, match="one label only"):
        Q.QualityClassifier().fit(texts, [1] * len(texts))
    with pytest.raises(ValueError, match="logistic or forest"):
        Q.QualityClassifier("svm")
    with pytest.raises(RuntimeError, match="fit the classifier first"):
        Q.QualityClassifier().score(texts)


def test_metrics_count_good_as_the_class_kept():
    m = Q.classification_metrics([1, 1, 1, 0, 0, 0], [True, True, False, True, False, False])
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (2, 1, 1, 2)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["accuracy"] == pytest.approx(4 / 6) and m["f1"] == pytest.approx(2 / 3)
    none_kept = Q.classification_metrics([1, 0], [False, False])
    assert none_kept["precision"] is None and none_kept["f1"] is None and none_kept["recall"] == 0


class _Annotator:
    """A grader that scores by story length and fails on one story: what `annotate` makes of each."""

    name, is_llm = "length annotator", False

    def grade(self, items: list[Completion]) -> list[Grade]:
        out = []
        for c in items:
            if "FAIL" in c.beginning:
                out.append(Grade("m", c.prompt_id, "k", self.name, status="failed", reason="malformed reply"))
            else:
                out.append(Grade("m", c.prompt_id, "k", self.name, scores={"grammar": min(10, len(c.completion) / 20)}))
        return out


def test_annotate_never_makes_up_a_label():
    story = ("One day a little cat sat in the warm sun by the door. It was very happy and it purred. "
             "Then the sun went down and it got cold. The cat ran home to its mom and slept in her bed.")
    texts = [story, "FAIL here. " + story, "no sentence end at all so no cut"]
    scores = Q.annotate(_Annotator(), texts, ["a", "b", "c"])
    assert scores[0] is not None and 0 < scores[0] <= 10
    assert scores[1] is None and scores[2] is None


def _run(root, **over):
    base = {"data.n_stories": 700, "quality.annotator_stories": 60, "quality.n_annotated": 80,
            "quality.train_tokens": 6000, "quality.val_stories": 30, "quality.max_steps": 8,
            "quality.eval_interval": 4}
    return Run.load("tiny", {**base, **over}, runs_root=root / "runs", figures_root=root / "figures")


@pytest.fixture(scope="module")
def shared_root(tmp_path_factory):
    """One runs folder for the stage tests: the filter, the corpora and the models are built once."""
    return tmp_path_factory.mktemp("quality")


def test_the_filter_stage_writes_labels_classifier_scores_and_kept_stories(shared_root):
    import joblib

    run = _run(shared_root)
    out = quality.quality_filter(run, progress=False)
    info = Run.artifact(out)
    pool = list(read_jsonl(out / "pool.jsonl"))
    labels = [json.loads(line) for line in (out / "labels.jsonl").read_text().splitlines()]
    scores = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    kept = list(read_jsonl(out / "filtered.jsonl"))
    assert info["n_pool"] == len(pool) == len(scores) and info["n_annotated"] == 80
    assert info["n_labelled"] == len(labels) and {r["part"] for r in labels} == {"train", "test"}
    assert info["test"]["n"] == sum(r["part"] == "test" for r in labels)
    assert 0.2 < info["test"]["n"] / len(labels) < 0.4  # quality.test_fraction 0.3
    # the truth of the pool: 30% degraded, half each way; the filter's kept share by kind is reported
    degraded = sum(s["degraded"] is not None for s in scores)
    assert degraded == round(0.3 * len(pool))
    assert set(info["by_truth"]) == {"clean", "shuffled", "typos"}
    # the kept stories are exactly the pool's with P(good) >= keep_threshold, in the pool's order
    by_id = {s["id"]: s for s in scores}
    assert [s.id for s in kept] == [s.id for s in pool if by_id[s.id]["p_good"] >= 0.5]
    assert info["n_kept"] == len(kept) and info["kept_fraction"] == pytest.approx(len(kept) / len(pool))
    # the saved classifier is the one that scored the pool
    clf = joblib.load(out / "classifier.joblib")
    again = clf.score([s.text for s in pool[:20]])
    assert np.allclose(again, [by_id[s.id]["p_good"] for s in pool[:20]])
    # no annotated story is one the offline annotator was built from
    held_out, _ = quality.split_stories(run)
    assert not {s.id for s in held_out} & {r["id"] for r in labels}
    # a finished filter is reused, and the markdown table reads it
    assert quality.quality_filter(run, progress=False) == out
    assert "| good = kept |" in quality.filter_table(info)


def test_an_annotator_with_one_label_leaves_the_filtered_corpus_out_and_says_why(tmp_path):
    run = _run(tmp_path, **{"quality.label_threshold": 0.0})  # every graded story is good
    info = Run.artifact(quality.quality_filter(run, progress=False))
    assert "labelled every annotated story good" in info["skipped"] and "label_threshold" in info["skipped"]
    assert quality.filter_table(info).startswith("No filter in this run:")
    names = [s.name for s in quality.corpus_specs(run, progress=False)]
    assert "filtered pool" not in names and "unfiltered pool" in names
    values = {"corpora": [{"corpus": "unfiltered pool", "role": "unfiltered", "val_bpb": 2.0}],
              "filter": {"skipped": info["skipped"]}}
    with pytest.raises(claims.NotMeasured, match="no filter: the offline grader"):
        claims.filtered_beats_unfiltered(values)


def test_filter_key_follows_the_annotator_and_its_fields_not_the_model(tmp_path):
    run = _run(tmp_path)
    key = quality.filter_key(run)
    assert quality.filter_key(_run(tmp_path, **{"quality.max_steps": 99, "quality.hidden": 64})) == key
    assert quality.filter_key(_run(tmp_path, **{"quality.label_threshold": 7.0})) != key
    assert quality.filter_key(_run(tmp_path, **{"quality.classifier": "forest"})) != key


def test_every_corpus_is_cut_to_one_budget_and_scored_on_one_validation_text(shared_root):
    run = _run(shared_root)
    dirs = quality.corpora(run, progress=False)
    assert set(dirs) == {"clean", "unfiltered pool", "filtered pool", "shuffled sentences", "typos",
                         "repeated stories"}  # tiny is the storyteller: no stand-in row, no GPT-4 rows
    metas = {name: Run.artifact(d) for name, d in dirs.items()}
    vals = {(d / "val.bin").read_bytes() for d in dirs.values()}
    assert len(vals) == 1
    for name, m in metas.items():
        assert m["train_tokens"] == 6000 == (dirs[name] / "train.bin").stat().st_size // 2, name
        assert not m["short"]
    rep = metas["repeated stories"]
    assert rep["unique_stories"] < rep["n_stories"]
    assert metas["clean"]["unique_stories"] == metas["clean"]["n_stories"]
    assert "| repeated stories | control | 6,000 |" in quality.corpora_table(run)
    # a budget larger than a corpus: used whole, and said so
    big = quality.corpora(_run(shared_root, **{"quality.train_tokens": 10_000_000}), progress=False)
    note = Run.artifact(big["filtered pool"])["note"]
    assert "fewer than quality.train_tokens" in note


def test_the_models_the_figure_and_its_claims(shared_root):
    run = _run(shared_root)
    models = quality.train_corpora(run, progress=False)
    data = quality.figure_data(run, models)
    rows = {r["corpus"]: r for r in data["corpora"]}
    assert len(rows) == 6 and all(r["val_bpb"] > 0 for r in rows.values())
    assert {r["tokens_seen"] for r in rows.values()} == {8 * 8 * 64}  # max_steps x batch x context, for each
    assert all(len(r["curve"]) >= 2 for r in rows.values())
    checked = claims.check_figure("data_quality", data)
    assert [c.id for c in checked] == ["quality-degraded", "quality-filter"]
    assert all(c.holds is not None for c in checked)
    # the claim reads the numbers: it holds exactly when every control is worse than clean
    clean = rows["clean"]["val_bpb"]
    controls = [r["val_bpb"] for r in rows.values() if r["role"] == "control"]
    assert checked[0].holds == all(v > clean for v in controls)
    assert "| clean |" in quality.results_table(data)
    assert quality.train_corpora(run, progress=False)["clean"].summary.get("skipped") is True


def test_quality_claims_say_holds_fails_or_not_measured():
    def row(corpus, role, bpb):
        return {"corpus": corpus, "role": role, "val_bpb": bpb}

    good = {"corpora": [row("clean", "clean", 2.0), row("typos", "control", 2.2), row("shuffled", "control", 2.1),
                        row("filtered pool", "filtered", 2.05), row("unfiltered pool", "unfiltered", 2.08)],
            "filter": {"kept_fraction": 0.7}}
    assert claims.degraded_below_clean(good)[1] is True
    text, holds = claims.filtered_beats_unfiltered(good)
    assert holds is True and "70%" in text
    bad = {"corpora": [row("clean", "clean", 2.15), row("typos", "control", 2.2), row("shuffled", "control", 2.1)]}
    assert claims.degraded_below_clean(bad)[1] is False
    with pytest.raises(claims.NotMeasured):
        claims.filtered_beats_unfiltered(bad)
    with pytest.raises(claims.NotMeasured):
        claims.degraded_below_clean({"corpora": [row("clean", "clean", 2.0)]})


def test_quality_parameters_are_validated():
    with pytest.raises(ParamsError, match="quality.hidden"):
        Run.load("tiny", {"quality.hidden": 30, "quality.heads": 4})
    with pytest.raises(ParamsError, match="quality"):
        Run.load("tiny", {"quality.classifier": "svm"})
    with pytest.raises(ParamsError, match="quality"):
        Run.load("tiny", {"quality.typo_rate": 0.9})


def test_gpt4_and_gpt35_stories_are_compared_only_where_the_stories_name_their_model():
    from tinystories_lib.stories.records import Story

    told = tell_stories(6, seed=2)
    assert quality._source_groups(told) == {"GPT-4 stories": [], "GPT-3.5 stories": []}
    named = [Story(id=s.id, text=s.text, source="GPT-4" if i % 2 else "GPT-3.5") for i, s in enumerate(told)]
    groups = quality._source_groups(named)
    assert [len(v) for v in groups.values()] == [3, 3]
    assert all(s.source == "GPT-4" for s in groups["GPT-4 stories"])
