import re

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


@pytest.mark.parametrize("override, says", [
    ({"seed": -1}, r"seed: must be in \[0, 4294967295\]"),
    ({"train.beta2": 1.5}, r"train.beta2: must be in \[0, 1\)"),
    ({"train.grad_clip": -1}, r"train.grad_clip: must be at least 0 \(0 = off\)"),
    ({"train.weight_decay": -1}, "train.weight_decay: must be at least 0"),
    ({"data.llm.timeout_s": -1}, "data.llm.timeout_s: must be above 0"),
    ({"grade.llm.budget_usd": -5}, "grade.llm.budget_usd: must be at least 0"),
    ({"data.llm.price_per_1m_output": -0.1}, "data.llm.price_per_1m_output: must be at least 0"),
    ({"grade.llm.max_tokens": 0}, "grade.llm.max_tokens: must be at least 1"),
    ({"sweep.hidden": []}, r"sweep.hidden: needs at least one entry, got \[\]"),
    ({"sweep.layers": [1, 0]}, r"sweep.layers\[1\]: must be at least 1, got 0"),
    ({"sweep.lr_per_hidden": [0.003, 0.0, -1]}, r"sweep.lr_per_hidden\[1\]: must be above 0"),
    ({"interpret.distance_min": 2}, r"interpret.distance_min: must be in \[0, 1\]"),
    ({"interpret.neuron_layers": 0}, "interpret.neuron_layers: must be at least 1"),
    ({"diversity.top_p": 0}, r"diversity.top_p: must be in \(0, 1\]"),
    ({"data.source": "storyteller", "data.n_stories": 0}, "data.n_stories: .*must be at least 1"),
    ({"model.heads": 0}, "model.heads: must be at least 1"),  # before hidden % heads divides by it
])
def test_every_numeric_setting_is_range_checked(override, says):
    """Values once accepted by `params check` that failed late (seed -1) or silently (grad_clip -1: no clipping)."""
    with pytest.raises(ParamsError, match=f"override .* on .*tiny.yaml: {says}"):
        params.load("tiny", override)


def test_every_numeric_field_declares_its_range():
    """A new int or float field gets a Range in its annotation (Positive, Count, ... or its own), so it is
    validated like the rest; this names the fields that have none."""
    import dataclasses
    import types
    import typing

    def unranged(hint, key):
        args = typing.get_args(hint)
        if typing.get_origin(hint) is typing.Annotated:
            ranged = any(isinstance(m, params.Range) for m in hint.__metadata__)
            return [] if ranged and args[0] in (int, float) else unranged(args[0], key)
        if dataclasses.is_dataclass(hint):
            hints = typing.get_type_hints(hint, include_extras=True)
            return [k for f in dataclasses.fields(hint) for k in unranged(hints[f.name], f"{key}.{f.name}")]
        if typing.get_origin(hint) in (list, typing.Union, types.UnionType):
            return [k for a in args for k in unranged(a, key)]
        return [key] if hint in (int, float) else []

    assert unranged(params.Params, "params") == []


def test_a_key_given_twice_names_the_key_the_file_and_the_line(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("train:\n  lr: 0.001\n  max_steps: 10\n  lr: 0.01\n")
    with pytest.raises(ParamsError, match=f"{f}, line 4: key 'lr' is given twice .*also on line 2.*keep one"):
        params.load(f)
    assert params.read_yaml("a: 1\nb: {a: 2}") == {"a": 1, "b": {"a": 2}}  # one key in two sections is fine
    assert params.read_yaml("base: &b {x: 1}\nc:\n  <<: *b\n  x: 2") == {"base": {"x": 1}, "c": {"x": 2}}


def test_no_secret_is_ever_echoed(capsys):
    secret = "sk-proj-SECRET123"
    for pair in (f"data.llm.api_key={secret}", f"grade.llm.api_key_env={secret}", f"data.llm={{hf_token: {secret}}}",
                 f"data.llm.api_key_env=[{secret}]", f"api_key:{secret}"):
        assert cli_main(["params", "check", "tiny", "--set", pair]) == 2, pair
        err = capsys.readouterr().err
        assert secret not in err and ("secret" in err or "not shown" in err), (pair, err)
    with pytest.raises(ParamsError, match="got 0"):  # a count of tokens is no secret: its value is shown
        params.load("tiny", {"data.llm.max_tokens": 0})


@pytest.mark.parametrize("name, content, says", [
    ("p.json", b'{"train": {"lr": 0.001}}', " is not a profile .*data.paths.*ending in .yaml"),
    ("stories.parquet", b"PAR1\x00\x15", " is not a profile .*data.paths"),
    ("p.yaml", b"\x89PNG\r\n\x1a\n\x00\xff", ": not a text file; a profile is a YAML text file"),
    ("nul.yaml", b"train: \x00\n", ": not a text file"),
    ("p.yaml", b"train: [1,\n", ", line 2: not valid YAML .*fix that line"),
    ("d.yaml", None, " is a directory; give a profile's YAML file"),
])
def test_every_load_error_names_the_file_and_what_to_do(tmp_path, name, content, says):
    f = tmp_path / name
    f.mkdir() if content is None else f.write_bytes(content)
    with pytest.raises(ParamsError, match=re.escape(str(f)) + says):
        params.load(f)
