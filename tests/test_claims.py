"""The paper's claims as checks on figure data: each holds on data shaped like the paper's finding, fails on
data built to break it, and is "not measured" (never silently passed) when its figure is missing."""

import json

import pytest

from tinystories_lib.evals import claims as C


def _write(d, name, values):
    (d / f"{name}.json").write_text(json.dumps({"figure": name, "values": values}))


def _grid(loss):  # loss(hidden, layers) -> validation loss
    rows = [{"model": f"h{h}-l{n}", "role": "grid", "hidden": h, "layers": n, "params": h * h * n,
             "val_loss": loss(h, n), "val_bpb": loss(h, n) / 2.5} for h in (32, 64, 96) for n in (1, 2, 4)]
    return {"models": rows + [{"model": "main-h128-l4", "role": "main", "hidden": 128, "layers": 4,
                               "params": 128 * 128 * 4, "val_loss": 1.0, "val_bpb": 0.4}]}


def _series(steps_to_plateau):  # dimension -> step at which it jumps to its final value
    steps = [50, 100, 200, 300, 450]
    return {"main": "main", "series": {dim: {"main": [[s, 8.0 if s >= at else 2.0] for s in steps]}
                                       for dim, at in steps_to_plateau.items()}}


def _heatmap_grades(gain):  # dimension -> grade gained per layer
    return {"models": [{"model": f"h{h}-l{n}", "hidden": h, "layers": n, "dimension": d, "mean": 5 + g * n}
                       for h in (32, 64) for n in (1, 4) for d, g in gain.items()]}


def _instruct(in_dist, ood, mismatched):
    return {"rows": [{"condition": c, "dimension": d, "mean": v}
                     for c, v in (("in-distribution", in_dist), ("out-of-distribution", ood),
                                  ("reference stories", 0.9), ("mismatched instructions", mismatched))
                     for d in ("words_used", "features_honoured")]}


def _rouge(model_mean, base_mean):
    return {"models": {"m": [{"rouge2": model_mean}] * 5}, "baseline": [{"rouge2": base_mean}] * 5}


def _heads(one_layer, random_init):
    return {"one_layer": "h96-l1", "random_init": "h96-l1 at random init",
            "models": {"h96-l1": [{"verdict": v} for v in one_layer],
                       "h96-l1 at random init": [{"verdict": v} for v in random_init]}}


def _quality(clean, controls, filtered, unfiltered):
    rows = [{"corpus": "clean", "role": "clean", "val_bpb": clean},
            {"corpus": "filtered pool", "role": "filtered", "val_bpb": filtered},
            {"corpus": "unfiltered pool", "role": "unfiltered", "val_bpb": unfiltered}]
    rows += [{"corpus": f"control {i}", "role": "control", "val_bpb": v} for i, v in enumerate(controls)]
    return {"corpora": rows, "filter": {"kept_fraction": 0.7}}


GOOD = {
    "loss_heatmap": _grid(lambda h, n: 5 - h / 50 - n / 10),
    "grades_over_training": _series({"grammar": 100, "consistency": 200, "creativity": 300}),
    "grades_heatmaps": _heatmap_grades({"grammar": 0.1, "consistency": 0.5}),
    "instruction_following": _instruct(0.6, 0.5, 0.2),
    "rouge_histograms": _rouge(0.3, 0.5),
    "head_scores": _heads(["distance", "entity", "other"], ["other", "other", "other"]),
    "data_quality": _quality(2.0, [2.1, 2.2, 2.05], 2.02, 2.06),
}
BROKEN = {  # each breaks exactly the claims reading that figure
    "loss_heatmap": _grid(lambda h, n: 5 + h / 50 + n / 10),  # wider and deeper are worse; main still best
    "grades_over_training": _series({"grammar": 300, "consistency": 200, "creativity": 100}),
    "grades_heatmaps": _heatmap_grades({"grammar": 0.5, "consistency": 0.1}),
    "instruction_following": _instruct(0.6, 0.1, 0.2),  # fails out of distribution only
    "rouge_histograms": _rouge(0.7, 0.5),
    "head_scores": _heads(["distance", "other"], ["other"]),  # no entity head
    "data_quality": _quality(2.0, [2.1, 1.99, 2.05], 2.07, 2.06),  # one control beats clean; filtering hurts
}


def test_every_claim_holds_on_data_shaped_like_the_paper(tmp_path):
    for name, values in GOOD.items():
        _write(tmp_path, name, values)
    got = C.check_claims(tmp_path)
    assert [c.id for c in got] == [t.id for t, _ in C.CHECKS]
    assert all(c.holds is True for c in got), [(c.id, c.this_run) for c in got if not c.holds]
    table = C.claims_table(got)
    assert table.startswith("| claim | paper | this run | holds? |") and f"{len(got)} of {len(got)} measured" in table


@pytest.mark.parametrize("figure", list(BROKEN))
def test_a_claim_fails_on_data_built_to_break_it(tmp_path, figure):
    for name, values in GOOD.items():
        _write(tmp_path, name, BROKEN[name] if name == figure else values)
    got = {c.id: c for c in C.check_claims(tmp_path)}
    failed = {k for k, c in got.items() if c.holds is False}
    expected = {c.id for c, _ in C.CHECKS if c.figure == figure} - ({"fig4-main"} if figure == "loss_heatmap" else set())
    assert failed == expected
    assert all(got[k].verdict == "**no**" and got[k].this_run for k in failed)  # reported, with the numbers


def test_the_main_model_losing_to_a_smaller_model_fails(tmp_path):
    data = _grid(lambda h, n: 5 - h / 50 - n / 10)
    data["models"][-1]["val_loss"] = 4.0  # worse than h96-l4
    _write(tmp_path, "loss_heatmap", data)
    got = {c.id: c for c in C.check_claims(tmp_path)}
    assert got["fig4-main"].holds is False and got["fig4-width"].holds is True


def test_random_init_with_distance_heads_fails_the_heads_claim(tmp_path):
    _write(tmp_path, "head_scores", _heads(["distance", "entity"], ["distance", "other"]))
    assert {c.id: c for c in C.check_claims(tmp_path)}["heads"].holds is False


def test_missing_or_unreadable_data_is_not_measured_never_passed(tmp_path):
    _write(tmp_path, "grades_over_training", _series({"grammar": 100, "consistency": 200}))  # no creativity
    (tmp_path / "rouge_histograms.json").write_text("{not json")
    got = {c.id: c for c in C.check_claims(tmp_path)}
    assert all(c.holds is None and c.verdict == "not measured" for c in got.values())
    assert "was not written" in got["fig4-width"].this_run
    assert "creativity" in got["emergence-order"].this_run
    assert "could not be read" in got["not-copying"].this_run


def test_a_grade_that_ends_at_zero_is_not_timed(tmp_path):
    data = _series({"grammar": 100, "consistency": 200, "creativity": 300})
    data["series"]["creativity"]["main"] = [[s, 0.0] for s, _ in data["series"]["creativity"]["main"]]
    _write(tmp_path, "grades_over_training", data)
    got = {c.id: c for c in C.check_claims(tmp_path)}["emergence-order"]
    assert got.holds is None and "nothing emerged" in got.this_run


def test_plateau_step_interpolates_between_checkpoints():
    assert C.plateau_step([(0, 0.0), (100, 10.0)]) == pytest.approx(90.0)
    assert C.plateau_step([(50, 9.5), (100, 10.0)]) == 50  # never below: the first step
    assert C.plateau_step([(0, 0.0), (100, 10.0), (200, 5.0), (300, 10.0)]) == pytest.approx(280.0)  # dips count


def test_reproduce_prints_the_claims_and_keeps_them_in_the_manifest(tmp_path, capsys):
    from tinystories_lib import params
    from tinystories_lib.reproduce import report_claims
    from tinystories_lib.runs import Run

    run = Run(params.load("tiny"), runs_root=tmp_path / "runs", figures_root=tmp_path / "figures")
    run.figures.mkdir(parents=True)
    for name, values in GOOD.items():
        _write(run.figures, name, values)
    _write(run.figures, "rouge_histograms", BROKEN["rouge_histograms"])
    report_claims(run)
    out = capsys.readouterr().out
    assert "| claim | paper | this run | holds? |" in out and "storyteller stand-in" in out
    manifest = json.loads((run.figures / "manifest.json").read_text())
    by_id = {c["id"]: c for c in manifest["claims"]}
    assert by_id["not-copying"]["holds"] is False and by_id["fig4-width"]["holds"] is True


def test_sweep_learning_rate_per_width(tmp_path):
    from tinystories_lib import params
    from tinystories_lib.runs import Run
    from tinystories_lib.stages.models import sweep_lr

    run = Run(params.load("tiny", {"sweep.lr": 0.003, "sweep.lr_per_hidden": [0.01, 0.002]}),
              runs_root=tmp_path / "runs", figures_root=tmp_path / "figures")
    assert (sweep_lr(run, 16), sweep_lr(run, 32), sweep_lr(run, 48)) == (0.01, 0.002, 0.003)  # 48: not in the grid
    with pytest.raises(params.ParamsError, match="one learning rate per sweep.hidden"):
        params.load("tiny", {"sweep.lr_per_hidden": [0.01]})
