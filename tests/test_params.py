import pytest
import yaml

from tinystories_lib import params
from tinystories_lib.cli import main as cli_main
from tinystories_lib.params import ParamsError


@pytest.mark.parametrize("name", params.available_profiles())
def test_every_shipped_profile_is_valid(name):
    p = params.load(name)
    assert p.profile == name
    assert p.model.hidden % p.model.heads == 0


def _write(tmp_path, data):
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump(data))
    return f


def test_unknown_key_names_the_key_suggests_and_lists_allowed(tmp_path):
    f = _write(tmp_path, {"train": {"max_step": 10}})
    with pytest.raises(ParamsError) as e:
        params.load(f)
    msg = str(e.value)
    assert "train.max_step" in msg and "did you mean 'max_steps'" in msg and "batch_size" in msg


def test_unknown_section(tmp_path):
    with pytest.raises(ParamsError, match="unknown key 'trian'.*did you mean 'train'"):
        params.load(_write(tmp_path, {"trian": {}}))


@pytest.mark.parametrize("data,match", [
    ({"train": {"max_steps": "ten"}}, "train.max_steps: expected an integer"),
    ({"train": {"lr": True}}, "train.lr: expected a number"),
    ({"data": {"source": "internet"}}, "data.source: 'internet' is not allowed; choose one of 'auto' \\| 'storyteller'"),
    ({"model": {"hidden": 100, "heads": 16}}, "model.hidden: hidden size 100 is not divisible by model.heads=16"),
    ({"sweep": {"hidden": [64, 100], "heads": 16}}, "sweep.heads: 16 heads do not divide sweep.hidden 100"),
    ({"tokenizer": {"vocab_size": 70000}}, "uint16"),
    ({"data": {"source": "files"}}, "data.paths"),
    ({"train": {"warmup_steps": 900, "max_steps": 100}}, "train.warmup_steps"),
    ({"sample": {"top_p": 0}}, "sample.top_p"),
    ({"instruct": {"held_out_pair": ["summary", "story"]}}, "instruct.held_out_pair"),
    ({"instruct": {"hidden": 30, "heads": 4}}, "instruct.hidden"),
    ({"grade": {"completions_per_prompt": 3, "temperature": 0.0}}, "grade.completions_per_prompt.*identical"),
    ({"grade": {"llm": {"modle": "x"}}}, "grade.llm.modle"),
    ({"sweep": {"layers": "4"}}, "sweep.layers: expected list of int"),
])
def test_bad_values_stop_with_a_message_naming_the_key(tmp_path, data, match):
    with pytest.raises(ParamsError, match=match):
        params.load(_write(tmp_path, data))


def test_error_names_the_file(tmp_path):
    f = _write(tmp_path, {"model": {"layers": 0}})
    with pytest.raises(ParamsError, match=str(f).replace(".", r"\.") + ".*model.layers: must be at least 1"):
        params.load(f)


def test_missing_profile_lists_available():
    with pytest.raises(ParamsError, match="available: .*smoke"):
        params.load("no-such-profile")


def test_overrides_are_validated_and_applied():
    p = params.load("smoke", {"train.max_steps": 120, "model": {"hidden": 64}})
    assert p.train.max_steps == 120 and p.model.hidden == 64 and p.model.layers == params.load("smoke").model.layers
    with pytest.raises(ParamsError, match="train.max_stepz"):
        params.load("smoke", {"train.max_stepz": 1})


def test_section_hash_changes_only_with_its_sections():
    a, b = params.load("smoke"), params.load("smoke", {"train.max_steps": 60})
    assert a.section_hash("data") == b.section_hash("data")
    assert a.hash() != b.hash()
    c = params.load("smoke", {"data.n_stories": 100})
    assert a.section_hash("data") != c.section_hash("data")


def test_a_partial_nested_section_keeps_that_fields_own_defaults():
    """grade.llm defaults to gpt-4o and its prices; a profile naming a few of its keys keeps the rest
    (it once fell back to the generic endpoint's gpt-4o-mini prices, 16x too cheap an estimate)."""
    judge = params.load("smoke", {"grade.llm.max_concurrency": 4}).grade.llm
    assert (judge.model, judge.price_per_1m_input, judge.price_per_1m_output, judge.max_concurrency) == (
        "gpt-4o", 2.5, 10.0, 4)
    paper = params.load("paper").grade.llm  # paper.yaml sets model and concurrency, not prices
    assert (paper.price_per_1m_input, paper.price_per_1m_output, paper.max_concurrency) == (2.5, 10.0, 32)


def test_how_a_request_is_made_does_not_change_artifact_keys():
    """A run stopped by its budget must resume into the same files after the budget (or the concurrency,
    the client, the number of processes) changes; the model asked or its temperature makes new stories."""
    base = params.load("smoke", {"data.source": "llm"})
    for key, value in (("data.llm.budget_usd", 5.0), ("data.llm.max_concurrency", 64), ("data.llm.processes", 2),
                       ("data.llm.http_client", "httpx"), ("data.llm.batch_api", True),
                       ("grade.llm.max_concurrency", 4), ("grade.llm.budget_usd", 1.0)):
        section = key.split(".")[0]
        p = params.load("smoke", {"data.source": "llm", key: value})
        assert p.section_hash(section) == base.section_hash(section), key
    for key, value in (("data.llm.model", "gpt-4o"), ("data.llm.temperature", 0.5), ("grade.llm.model", "gpt-4.1")):
        section = key.split(".")[0]
        p = params.load("smoke", {"data.source": "llm", key: value})
        assert p.section_hash(section) != base.section_hash(section), key


def test_cli_params_check(tmp_path, capsys):
    assert cli_main(["params", "check", "params/smoke.yaml"]) == 0
    assert "ok: profile 'smoke'" in capsys.readouterr().out
    bad = _write(tmp_path, {"model": {"hidden": 30, "heads": 4}})
    assert cli_main(["params", "check", str(bad)]) == 2
    assert "not divisible" in capsys.readouterr().err


def test_scientific_notation_is_a_number(tmp_path):
    """PyYAML reads 1e-3 as a string (YAML 1.1); in a number field it means 0.001, in a file or an override."""
    f = tmp_path / "p.yaml"
    f.write_text("train:\n  lr: 1e-3\n  min_lr: 5.0e-5\n")
    p = params.load(f, {"grade.llm.price_per_1m_input": "2.5e+0"})
    assert p.train.lr == 0.001 and p.train.min_lr == 5e-5 and p.grade.llm.price_per_1m_input == 2.5
    with pytest.raises(ParamsError, match="train.max_steps: expected an integer, got '1e3'"):
        params.load(f, {"train.max_steps": "1e3"})
    with pytest.raises(ParamsError, match="expected a number, got 'fast'"):
        params.load(f, {"train.lr": "fast"})


def test_a_bad_override_is_named_not_the_file():
    with pytest.raises(ParamsError, match=r"override \(train.max_steps='abc'\) on .*smoke.yaml: train.max_steps: "
                                          r"expected an integer"):
        params.load("smoke", {"train.max_steps": "abc"})
    with pytest.raises(ParamsError, match=r"sweep.heads: 5 heads do not divide sweep.hidden"):
        params.load("smoke", {"sweep.heads": 5})


def test_a_profile_path_works_from_any_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert params.load("params/tiny.yaml").profile == "tiny"
    assert cli_main(["params", "check", "params/paper.yaml"]) == 0
    assert "ok: profile 'paper'" in capsys.readouterr().out
