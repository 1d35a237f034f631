import numpy as np
import pytest

from tinystories_lib.tokenizer import EOT, Codec, load_gpt2, read_shard, top_k_codec, train_bpe, write_shard

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
