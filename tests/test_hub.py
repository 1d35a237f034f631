"""`data.source: hub` end to end through the real `datasets` and `huggingface_hub` clients, offline: a local
fake hub (tests/fake_hub.py) serves the TinyStories repo's files, built from the shared real sample when
../shared is present and from stories written here otherwise. Each hub failure gets one clear error.
Also: how a local .txt file separates its stories (`data.txt_separator`)."""

from __future__ import annotations

import json
import os
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fake_hub import FakeHub, commit_sha, dataset_files, run_python, stories_txt, tinystories_files

from tinystories_lib.stories.cleaning import clean
from tinystories_lib.stories.loading import load_corpus, load_local, load_txt
from tinystories_lib.stories.records import EOT, Story, read_jsonl

REPO = Path(__file__).resolve().parents[1]
SAMPLE = Path(os.environ.get("TINYSTORIES_SHARED", REPO.parent / "shared")) / (
    "data/tinystories_sample/tinystories_v1_sample_2500.txt"
)
HUB = "roneneldan/TinyStories"
V2_TRAIN, V2_VALID = "TinyStoriesV2-GPT4-train.txt", "TinyStoriesV2-GPT4-valid.txt"

_NAMES = ["Lily", "Tom", "Sue", "Ben", "Mia", "Max"]
_PLOTS = [
    "{n} found a red ball in the park. She threw it high and her dog ran to get it. They played until the sun went down.",
    "{n} had a little boat. One day the wind took it far away. A kind duck pushed it back, and {n} said thank you.",
    "{n} wanted a big cake. Mom said they must share it. {n} gave a piece to a friend and felt happy inside.",
    "{n} saw a sad bird on a branch.\n\n\"Are you hurt?\" {n} asked. The bird sang a song and flew up to the sky.",
    "{n} was scared of the dark. Dad gave {n} a small lamp. Now the room was bright and {n} slept well all night.",
    "{n} and a cat went to the shop. They bought milk and bread. On the way home it rained, so they ran and laughed.",
    "{n} built a tall tower of blocks. It fell down with a loud crash. {n} did not cry and built it again, even taller.",
    "{n} planted a seed in the garden. Every day {n} gave it water. Soon a pretty flower grew and {n} smiled at it.",
]


def _served_stories() -> tuple[list[str], list[str]]:
    """(train, valid) stories for the fake repo: the real sample if present, else stories written here."""
    if SAMPLE.exists():
        stories = [d.strip() for d in SAMPLE.read_text(encoding="utf-8").split(EOT) if d.strip()]
        return stories[:2000], stories[2000:]
    stories = [plot.format(n=n) for plot in _PLOTS for n in _NAMES]
    return stories[:40], stories[40:]


TRAIN, VALID = _served_stories()


def _run(code: str, hub: FakeHub | None, hf_home: Path, offline: bool = False) -> dict:
    """Run `code` in a child whose hub is `hub`; it prints one JSON object last, which is returned."""
    out = run_python(textwrap.dedent(code), hub, hf_home, offline=offline)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(autouse=True)
def _needs_datasets(request):
    if "txt_" not in request.node.name:
        pytest.importorskip("datasets")


# --- loading through the hub ---------------------------------------------------------------------------------


def test_v2_file_in_order_and_a_pinned_revision(tmp_path):
    n = min(100, len(TRAIN) // 2)
    older = TRAIN[::-1][: n + 5]
    pinned = commit_sha(HUB, "v1")
    files = {**tinystories_files(TRAIN, VALID), **dataset_files(HUB, {V2_TRAIN: stories_txt(older)}, "v1")}
    code = f"""
        import json
        from tinystories_lib.stories.loading import load_corpus
        kw = dict(hub_name={HUB!r}, hub_data_files={V2_TRAIN!r}, limit={n})
        latest = load_corpus("hub", **kw)
        old = load_corpus("hub", hub_revision={pinned!r}, **kw)
        print(json.dumps({{"latest": [[s.id, s.text, s.source] for s in latest], "old": [s.text for s in old]}}))
        """
    with FakeHub(files) as hub:
        got = _run(code, hub, tmp_path / "hf")
    assert [text for _, text, _ in got["latest"]] == TRAIN[:n]
    assert got["latest"][0][0] == "TinyStoriesV2-GPT4-train-000001" and got["latest"][0][2] == f"hub:{HUB}"
    assert [i for i, _, _ in got["latest"]][-1] == f"TinyStoriesV2-GPT4-train-{n:06d}"
    assert got["old"] == older[:n]
    # The client asked for the pinned commit, for the data file and for the repo's metadata.
    paths = {e["path"] for e in hub.log}
    assert f"/datasets/{HUB}/resolve/{pinned}/{V2_TRAIN}" in paths
    assert any(p.startswith(f"/api/datasets/{HUB}/") and pinned in p for p in paths), sorted(paths)


def test_streaming_with_a_limit_reads_only_part_of_a_large_file(tmp_path):
    one = stories_txt(TRAIN)
    big = one * (-(-(32 << 20) // len(one)))  # at least 32 MiB, the first stories first
    files = dataset_files(HUB, {V2_TRAIN: big, V2_VALID: stories_txt(VALID)})
    code = f"""
        import json
        from tinystories_lib.stories.loading import load_corpus
        stories = load_corpus("hub", hub_data_files={V2_TRAIN!r}, limit=5)
        print(json.dumps([s.text for s in stories]))
        """
    with FakeHub(files) as hub:
        got = _run(code, hub, tmp_path / "hf")
    assert got == TRAIN[:5]
    reads = [e for e in hub.log if e["path"].endswith(f"/resolve/{commit_sha(HUB, 'main')}/{V2_TRAIN}")]
    assert reads and all(e["method"] == "GET" and e["range"] for e in reads), reads
    assert 0 < hub.bytes_sent(V2_TRAIN) < len(big) // 2, (hub.bytes_sent(V2_TRAIN), len(big))
    assert not list((tmp_path / "hf").rglob(V2_TRAIN))  # streamed, not downloaded to the cache


def test_default_parquet_config_and_reuse_offline(tmp_path):
    """`load_dataset(repo, split="train")` reads the card's default config (data/train-*.parquet); a
    non-streamed load is cached, so the same call works afterwards with HF_HUB_OFFLINE=1."""
    code = f"""
        import json
        import datasets
        from tinystories_lib.stories.hub import load_hub
        from tinystories_lib.stories.loading import load_corpus
        rows = [r["text"] for r in datasets.load_dataset({HUB!r}, split="train")]
        train = load_corpus("hub")
        val = load_hub(split="validation")
        first = load_corpus("hub", limit=3)
        print(json.dumps({{"rows": rows, "train": [s.text for s in train], "id": train[0].id,
                          "val": [s.text for s in val], "first": [s.text for s in first]}}))
        """
    with FakeHub(tinystories_files(TRAIN, VALID)) as hub:
        got = _run(code, hub, tmp_path / "hf")
    assert got["rows"] == got["train"] == TRAIN
    assert got["id"] == "TinyStories-train-000001"
    assert got["val"] == VALID and got["first"] == TRAIN[:3]
    assert any(p.endswith("/data/train-00000-of-00001-fake.parquet") for p in hub.downloaded())
    assert not any(p.endswith(".txt") for p in hub.downloaded())

    offline = """
        import json
        from tinystories_lib.stories.hub import load_hub
        from tinystories_lib.stories.loading import load_corpus
        print(json.dumps({"train": [s.text for s in load_corpus("hub")],
                          "val": [s.text for s in load_hub(split="validation")]}))
        """
    again = _run(offline, None, tmp_path / "hf", offline=True)
    assert again == {"train": TRAIN, "val": VALID}


def test_the_corpus_stage_from_the_hub(tmp_path):
    overrides = {"data.source": "hub", "data.hub_data_files": V2_TRAIN, "data.n_stories": 300,
                 "data.val_source": "hub", "data.val_hub_data_files": V2_VALID}
    code = f"""
        import json
        from tinystories_lib import stages
        from tinystories_lib.runs import Run
        run = Run.load("tiny", {overrides!r}, runs_root={str(tmp_path / "runs")!r})
        out = stages.corpus(run)
        print(json.dumps({{"out": str(out), "artifact": Run.artifact(out)}}))
        """
    with FakeHub(tinystories_files(TRAIN, VALID)) as hub:
        got = _run(code, hub, tmp_path / "hf")
    out, artifact = Path(got["out"]), got["artifact"]
    settings = artifact["clean_report"]["settings"]  # the profile's cleaning, as the stage ran it

    def served(stories, stem):  # the served stories as the stage sees them, cleaned as it cleans them
        return clean([Story(id=f"{stem}-{i:06d}", text=t, source=f"hub:{HUB}") for i, t in enumerate(stories, 1)],
                     **settings)[0]

    val = served(VALID, "TinyStoriesV2-GPT4-valid")
    train = [s for s in served(TRAIN[:300], "TinyStoriesV2-GPT4-train") if s.text not in {v.text for v in val}]
    assert artifact["n_loaded"] == len(TRAIN[:300]) and artifact["val_source"] == "hub"
    assert list(read_jsonl(out / "train.jsonl")) == train and len(train) >= 20
    assert list(read_jsonl(out / "val.jsonl")) == val and val
    assert {e["path"].rsplit("/", 1)[-1] for e in hub.log if "/resolve/" in e["path"] and e["range"]} == {
        V2_TRAIN, V2_VALID}


# --- hub errors ----------------------------------------------------------------------------------------------

_ERROR_CASES = {
    "missing_repo": dict(hub_name="roneneldan/NoSuchStories", hub_data_files=V2_TRAIN),
    "missing_file": dict(hub_data_files="TinyStoriesV3-train.txt"),
    "missing_revision": dict(hub_data_files=V2_TRAIN, hub_revision="v9"),
    "gated_401": dict(hub_name="roneneldan/GatedStories", hub_data_files=V2_TRAIN),
    "gated_403": dict(hub_name="roneneldan/PrivateStories", hub_data_files=V2_TRAIN),
    "forbidden_403": dict(hub_name="roneneldan/BlockedStories", hub_data_files=V2_TRAIN),
    "plain_404": dict(hub_name="roneneldan/GoneStories", hub_data_files=V2_TRAIN),
}


@pytest.fixture(scope="module")
def hub_errors(tmp_path_factory) -> dict[str, dict]:
    """Every error case in one child: {case: {"types": exception class names, "message": str}}."""
    pytest.importorskip("datasets")
    files = tinystories_files(TRAIN[:30], VALID[:5])
    errors = {"roneneldan/GatedStories": 401, "roneneldan/PrivateStories": 403,
              "roneneldan/BlockedStories": (403, None), "roneneldan/NoSuchStories": 404,
              "roneneldan/GoneStories": (404, None)}
    code = f"""
        import json
        from tinystories_lib.stories.loading import load_corpus
        got = {{}}
        for case, kw in {_ERROR_CASES!r}.items():
            try:
                load_corpus("hub", limit=3, **kw)
                got[case] = {{"types": [], "message": "loaded"}}
            except Exception as e:
                got[case] = {{"types": [c.__name__ for c in type(e).__mro__], "message": str(e)}}
        print(json.dumps(got))
        """
    with FakeHub(files, errors=errors) as hub:
        return _run(code, hub, tmp_path_factory.mktemp("hf"))


def _error(hub_errors, case: str, kind: str) -> str:
    got = hub_errors[case]
    assert kind in got["types"] and "HubError" in got["types"], (case, got)
    return got["message"]


@pytest.mark.parametrize("case", ["missing_repo", "plain_404"])
def test_a_missing_dataset(hub_errors, case):
    msg = _error(hub_errors, case, "HubNotFoundError")
    assert "FileNotFoundError" in hub_errors[case]["types"]
    assert "could not load dataset 'roneneldan/" in msg and V2_TRAIN in msg, msg
    assert "no such dataset" in msg and "data.hub_name" in msg and "HF_TOKEN" in msg, msg


def test_a_missing_file(hub_errors):
    msg = _error(hub_errors, "missing_file", "HubNotFoundError")
    assert "data_files 'TinyStoriesV3-train.txt'" in msg and "no such file" in msg, msg
    assert "data.hub_data_files" in msg and V2_TRAIN in msg and "TinyStories-valid.txt" in msg, msg  # lists files


def test_a_missing_revision(hub_errors):
    msg = _error(hub_errors, "missing_revision", "HubNotFoundError")
    assert "revision 'v9'" in msg and "no such revision" in msg and "data.hub_revision" in msg, msg


@pytest.mark.parametrize("case, status", [("gated_401", 401), ("gated_403", 403), ("forbidden_403", 403)])
def test_access_refused(hub_errors, case, status):
    msg = _error(hub_errors, case, "HubAccessError")
    assert "PermissionError" in hub_errors[case]["types"]
    assert f"refused access ({status})" in msg and V2_TRAIN in msg, msg
    assert "HF_TOKEN" in msg and "huggingface-cli login" in msg and "gated" in msg, msg


def test_offline_errors(tmp_path):
    """A hub that is gone (connection refused) and HF_HUB_OFFLINE=1 with a cold cache."""
    code = f"""
        import json
        from tinystories_lib.stories.loading import load_corpus
        try:
            load_corpus("hub", hub_data_files={V2_TRAIN!r}, limit=3)
            print(json.dumps({{"types": [], "message": "loaded"}}))
        except Exception as e:
            print(json.dumps({{"types": [c.__name__ for c in type(e).__mro__], "message": str(e)}}))
        """
    with FakeHub({}) as gone:
        pass  # its port is closed now
    with ThreadPoolExecutor(2) as pool:
        refused = pool.submit(_run, code, gone, tmp_path / "a")
        offline = pool.submit(_run, code, None, tmp_path / "b", True)
        results = {"refused": refused.result(), "offline": offline.result()}
    for case, got in results.items():
        msg = got["message"]
        assert "HubUnavailableError" in got["types"], (case, got)
        assert f"could not load dataset '{HUB}'" in msg and V2_TRAIN in msg, (case, msg)
        assert "download" in msg and "data.source: files" in msg and "data.paths" in msg, (case, msg)
    assert gone.endpoint in results["refused"]["message"]
    assert "OfflineModeIsEnabled" in results["offline"]["message"]


# --- .txt separators -----------------------------------------------------------------------------------------


def test_txt_without_separators_says_which_setting_to_use(tmp_path):
    path = tmp_path / "my_stories.txt"
    path.write_text("\n\n".join(TRAIN[:30]) + "\n", encoding="utf-8")
    assert len(path.read_text()) > 2000
    with pytest.raises(ValueError) as e:
        load_txt(path)
    assert str(path) in str(e.value) and EOT in str(e.value) and "data.txt_separator: blank_line" in str(e.value)
    with pytest.raises(ValueError, match="data.txt_separator: blank_line"):
        load_corpus("files", paths=[path])

    short = tmp_path / "one.txt"
    short.write_text("Just one short story, with no separator.\n")
    assert [s.text for s in load_txt(short)] == ["Just one short story, with no separator."]


def test_txt_blank_line_separator(tmp_path, capsys):
    path = tmp_path / "hand_made.txt"
    path.write_bytes(b"\r\nFirst story,\r\nsecond line.  \r\n\r\n\r\n  Second story.\n \n<|endoftext|>\nThird.")
    stories = load_txt(path, separator="blank_line")
    assert [s.text for s in stories] == ["First story,\nsecond line.", "Second story.", "Third."]
    assert [s.id for s in stories] == ["hand_made-000001", "hand_made-000002", "hand_made-000003"]
    assert "3 stories, split at blank lines (data.txt_separator: blank_line)" in capsys.readouterr().out
    assert load_txt(path, limit=2, separator="blank_line") == stories[:2]
    assert load_local(tmp_path, limit=2, separator="blank_line") == stories[:2]
    assert load_corpus("files", paths=[path], txt_separator="blank_line") == stories

    many = tmp_path / "many.txt"
    many.write_text("\n\n".join(TRAIN[:30]) + "\n", encoding="utf-8")
    got = load_corpus("files", paths=[many], txt_separator="blank_line")
    assert len(got) >= 30  # a story with a paragraph break becomes two: the price of this separator


def test_txt_separator_is_checked(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text(f"A.\n{EOT}\n")
    with pytest.raises(ValueError, match="expected one of"):
        load_txt(path, separator="newline")
    with pytest.raises(ValueError, match="expected one of"):
        load_corpus("files", paths=[path], txt_separator="paragraph")
