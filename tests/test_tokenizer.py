import numpy as np
import pytest
from fake_hub import FakeHub, run_python

from tinystories_lib.lm.tokenizer import (
    EOT,
    Codec,
    load_gpt2,
    read_shard,
    top_k_codec,
    train_bpe,
    write_shard,
)

TEXTS = [f"Lily saw a {c} ball. She said, \"I like the {c} ball!\" Tom smiled." for c in
         ["red", "blue", "green", "big", "small", "shiny"]] * 20


def test_bpe_roundtrip_and_eot(tmp_path):
    codec = train_bpe(TEXTS, 300)
    assert codec.vocab_size <= 300 and codec.eot_id == 0
    for t in TEXTS[:6] + ["Zebra ünïcödé 🙂 text never seen"]:
        assert codec.decode(codec.encode(t)) == t  # byte-level: lossless on anything
    codec.save(tmp_path)
    again = Codec.load(tmp_path)
    assert again.encode(TEXTS[0]) == codec.encode(TEXTS[0])


def test_shard_holds_every_story_followed_by_eot(tmp_path):
    codec = train_bpe(TEXTS, 300)
    n = write_shard(codec, TEXTS, tmp_path / "train.bin")
    data = read_shard(tmp_path / "train.bin")
    assert data.dtype == np.uint16 and len(data) == n
    assert int((np.asarray(data) == codec.eot_id).sum()) == len(TEXTS)
    first = list(data[: list(data).index(codec.eot_id)])
    assert codec.decode(first) == TEXTS[0]
    assert not (tmp_path / "train.bin.tmp").exists()


def test_missing_tokenizer_and_shard_errors_say_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        Codec.load(tmp_path)
    with pytest.raises(FileNotFoundError, match="tokenization stage"):
        read_shard(tmp_path / "nope.bin")


def test_gpt_neo_top_k_is_lossless_and_compact(shared):
    gpt2_dir = shared("tokenizers/gpt2/vocab.json").parent
    base = load_gpt2(gpt2_dir)
    assert base.token_to_id(EOT) == 50256
    codec = top_k_codec(base, TEXTS, 400)
    assert codec.vocab_size == 400
    rare = "Quixotic zephyrs bamboozled the xylophonist."
    ids = codec.encode(rare)
    assert max(ids) < 400 and codec.decode(ids) == rare  # rare tokens are spelled in bytes
    common = codec.encode(TEXTS[0])
    assert len(common) == len(base.encode(TEXTS[0]).ids)  # frequent tokens kept whole
    assert codec.decode([codec.eot_id]) == EOT


def test_gpt_neo_top_k_codec_saves_its_id_map(shared, tmp_path):
    base = load_gpt2(shared("tokenizers/gpt2/vocab.json").parent)
    codec = top_k_codec(base, TEXTS, 400)
    codec.save(tmp_path)
    assert (tmp_path / "token_map.json").exists()
    again = Codec.load(tmp_path)
    assert again.vocab_size == 400 and again.eot_id == codec.eot_id
    for t in TEXTS[:3] + ["Quixotic zephyrs."]:
        assert again.encode(t) == codec.encode(t) and again.decode(codec.encode(t)) == t


def test_gpt_neo_top_k_through_the_pipeline_decodes_beside_the_model(shared, tmp_path):
    """tokenizer.kind gpt-neo-top-k end to end: the shards are in the restricted ids, the model directory
    carries the id map, and its codec decodes the model's ids back to the corpus text and samples to text."""
    from tinystories_lib import stages
    from tinystories_lib.lm.checkpoints import load_model
    from tinystories_lib.lm.sample import SamplingConfig, generate
    from tinystories_lib.runs import Run
    from tinystories_lib.stories.records import read_jsonl

    over = {"data.n_stories": 300, "tokenizer.kind": "gpt-neo-top-k", "tokenizer.vocab_size": 1000,
            "tokenizer.gpt2_files": str(shared("tokenizers/gpt2/vocab.json").parent), "train.max_steps": 3, "train.warmup_steps": 1,
            "train.checkpoint_steps": []}
    run = Run.load("tiny", over, runs_root=tmp_path / "runs", figures_root=tmp_path / "figs")
    m = stages.train_model(run, progress=False)
    assert (m.dir / "token_map.json").exists()
    codec = Codec.load(m.dir)
    assert codec.vocab_size == 1000
    data = np.asarray(read_shard(stages.shards(run, progress=False) / "train.bin"))
    assert int(data.max()) < 1000
    first = data[: int(np.argmax(data == codec.eot_id))].tolist()
    assert codec.decode(first) == next(read_jsonl(stages.corpus(run, progress=False) / "train.jsonl")).text
    ids = generate(load_model(m.dir), [[codec.eot_id, *codec.encode("Once upon a time")]],
                   SamplingConfig(max_new_tokens=20, seed=1, stop_at_eot=False), codec.eot_id)[0]
    assert len(ids) == 20 and max(ids) < 1000
    gpt2 = load_gpt2(shared("tokenizers/gpt2/vocab.json").parent)
    assert codec.decode(ids) == gpt2.decode([int(codec.id_map[i]) for i in ids])  # model ids are GPT-Neo's, remapped


def test_gpt_neo_tokenizer_offline_says_what_to_do(tmp_path):
    """No gpt2_files and no hub: the real hf_hub_download fails, and the error names the parameter to set."""
    pytest.importorskip("huggingface_hub")
    code = ("from tinystories_lib.lm.tokenizer import fetch_gpt_neo_files\n"
            "try:\n    fetch_gpt_neo_files()\nexcept RuntimeError as e:\n    print(e)\n")
    out = run_python(code, None, tmp_path / "hf", offline=True).stdout
    assert "EleutherAI/gpt-neo-125M" in out and "tokenizer.gpt2_files" in out and "offline" in out, out


def test_gpt_neo_tokenizer_from_a_hub_endpoint(shared, tmp_path):
    """fetch_gpt_neo_files through the real hf_hub_download against a local endpoint speaking the hub's
    resolve protocol, then from the cache with the hub offline."""
    pytest.importorskip("huggingface_hub")
    repo = "EleutherAI/gpt-neo-125M/resolve/main"
    files = {f"{repo}/{n}": shared(f"tokenizers/gpt2/{n}").read_bytes() for n in ("vocab.json", "merges.txt")}
    code = ("from tinystories_lib.lm.tokenizer import fetch_gpt_neo_files, load_gpt2\n"
            "d = fetch_gpt_neo_files()\n"
            "print(d, load_gpt2(d).encode('Once upon a time').ids)\n")
    with FakeHub(files) as hub:
        out = run_python(code, hub, tmp_path / "hf")
    assert out.returncode == 0, out.stderr[-2000:]
    assert str(tmp_path / "hf") in out.stdout and "[7454, 2402, 257, 640]" in out.stdout, out.stdout
    assert hub.downloaded() == {f"/{name}" for name in files}
    again = run_python(code, None, tmp_path / "hf", offline=True)
    assert again.returncode == 0 and "[7454, 2402, 257, 640]" in again.stdout, again.stderr[-2000:]
