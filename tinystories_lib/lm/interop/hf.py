"""Hugging Face `transformers` interop for our GPT-Neo, both ways.

Our parameter names equal GPTNeoForCausalLM's, so conversion is a config translation plus a state dict
copy. Loading a local checkpoint directory needs only safetensors/torch (config.json is read as JSON);
`transformers` is imported only to build its config, write a tokenizer, or take a model object.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from tinystories_lib.lm.model import GPTNeo, GPTNeoConfig
from tinystories_lib.lm.tokenizer import Codec, load_gpt2
from tinystories_lib.stories.records import EOT

# HF registers the causal/local masks as buffers; older checkpoints saved them (attn.bias, attn.masked_bias).
_BUFFER_SUFFIXES = (".attn.attention.bias", ".attn.attention.masked_bias")
_HUB_FILES = ["config.json", "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
              "tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"]


# ---------------------------------------------------------------- config


def _compress_attention_types(types: list[str]) -> list[list]:
    """Per-layer list -> HF's [[pattern, repeats]] form, using the shortest repeating pattern."""
    n = len(types)
    for period in range(1, n + 1):
        if n % period == 0 and types == types[:period] * (n // period):
            return [[list(types[:period]), n // period]]
    raise AssertionError("unreachable: the whole list is always a period")


def _expand_attention_types(hf_types: list) -> list[str]:
    return [t for pattern, repeats in hf_types for _ in range(repeats) for t in pattern]


def config_to_hf(cfg: GPTNeoConfig, eot_id: int | None = None):
    """Our config as a `transformers.GPTNeoConfig`. `eot_id` becomes bos/eos; without it they are unset
    unless HF's default (50256) is a valid id, so a small-vocab model never points outside its vocab."""
    from transformers import GPTNeoConfig as HFGPTNeoConfig

    if eot_id is None and cfg.vocab_size > 50256:
        eot_id = 50256
    return HFGPTNeoConfig(
        vocab_size=cfg.vocab_size,
        max_position_embeddings=cfg.context,
        hidden_size=cfg.hidden,
        num_layers=cfg.layers,
        num_heads=cfg.heads,
        attention_types=_compress_attention_types(cfg.attention_types),
        window_size=cfg.window,
        intermediate_size=cfg.intermediate,
        activation_function="gelu_new",
        resid_dropout=cfg.dropout,
        embed_dropout=cfg.dropout,
        attention_dropout=cfg.dropout,
        layer_norm_epsilon=cfg.layer_norm_eps,
        bos_token_id=eot_id,
        eos_token_id=eot_id,
        tie_word_embeddings=True,
    )


def config_from_hf(hf_cfg: Any) -> GPTNeoConfig:
    """Our config from a `transformers.GPTNeoConfig` or its config.json dict."""
    d = dict(hf_cfg) if isinstance(hf_cfg, Mapping) else hf_cfg.to_dict()
    if d.get("model_type", "gpt_neo") != "gpt_neo":
        raise ValueError(f"not a GPT-Neo checkpoint: model_type is {d.get('model_type')!r}")
    act = d.get("activation_function", "gelu_new")
    if act != "gelu_new":
        raise ValueError(f"activation {act!r} is not supported: our GPT-Neo uses gelu_new (tanh GELU) only")
    if not d.get("tie_word_embeddings", True):
        raise ValueError("untied input/output embeddings are not supported: our GPT-Neo ties lm_head to wte")
    hidden = d["hidden_size"]
    types = _expand_attention_types(d.get("attention_types") or [[["global", "local"], d["num_layers"] // 2]])
    dropouts = {d.get(k, 0.0) for k in ("resid_dropout", "embed_dropout", "attention_dropout")}
    return GPTNeoConfig(
        vocab_size=d["vocab_size"],
        context=d["max_position_embeddings"],
        hidden=hidden,
        layers=d["num_layers"],
        heads=d["num_heads"],
        window=d.get("window_size", 256),
        intermediate=d.get("intermediate_size") or 4 * hidden,
        attention_types=types,
        dropout=max(dropouts),  # we have one dropout rate; inference ignores it anyway
        layer_norm_eps=d.get("layer_norm_epsilon", 1e-5),
    )


# ---------------------------------------------------------------- HF -> ours


def _load_state(d: Path) -> dict[str, torch.Tensor]:
    """Weights of a checkpoint directory: model.safetensors, its sharded index, or pytorch_model.bin."""
    if (d / "model.safetensors").exists():
        return load_file(str(d / "model.safetensors"))
    index = d / "model.safetensors.index.json"
    if index.exists():
        state = {}
        for shard in sorted(set(json.loads(index.read_text())["weight_map"].values())):
            state.update(load_file(str(d / shard)))
        return state
    if (d / "pytorch_model.bin").exists():
        # weights_only: a .bin is a pickle; refuse anything but tensors.
        return torch.load(d / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"no model.safetensors or pytorch_model.bin in {d}")


def _from_state(cfg: GPTNeoConfig, state: Mapping[str, torch.Tensor]) -> GPTNeo:
    state = {k: v for k, v in state.items() if not k.endswith(_BUFFER_SUFFIXES)}
    lm_head = state.pop("lm_head.weight", None)
    wte = state.get("transformer.wte.weight")
    if lm_head is not None and wte is not None and not torch.equal(lm_head.float(), wte.float()):
        raise ValueError("checkpoint has an lm_head different from wte: untied heads are not supported")
    model = GPTNeo(cfg)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise ValueError(f"checkpoint does not match GPT-Neo: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model.eval()


def _download(repo_id: str) -> Path:
    """Fetch a hub repository's model and tokenizer files (cached by huggingface_hub)."""
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(repo_id, allow_patterns=_HUB_FILES))


def _resolve(path_or_id: str | Path) -> Path:
    p = Path(path_or_id)
    if p.exists():
        if not p.is_dir():
            raise ValueError(f"{p} is a file: pass the checkpoint directory (config.json + weights)")
        return p
    name = str(path_or_id)
    if name.count("/") != 1 or name.startswith((".", "/", "~")):
        raise FileNotFoundError(f"{name} is neither a local directory nor a hub id like 'roneneldan/TinyStories-1M'")
    try:
        return _download(name)
    except Exception as e:
        raise RuntimeError(
            f"no local directory {name!r}, and fetching it from the Hugging Face hub failed ({type(e).__name__}: {e}). "
            f"Offline? On a machine "
            f"with internet run `hf download {name} --local-dir DIR` (older huggingface_hub: `huggingface-cli "
            f"download`), copy DIR here and pass DIR instead of the hub id."
        ) from e


def from_hf(path_or_model: Any) -> GPTNeo:
    """Our GPTNeo from a GPTNeoForCausalLM object, a local checkpoint directory or a hub id."""
    if isinstance(path_or_model, torch.nn.Module):
        return _from_state(config_from_hf(path_or_model.config), path_or_model.state_dict())
    d = _resolve(path_or_model)
    if not (d / "config.json").exists():
        raise FileNotFoundError(f"{d} has no config.json: not a Hugging Face checkpoint directory")
    cfg = config_from_hf(json.loads((d / "config.json").read_text()))
    return _from_state(cfg, _load_state(d))


def codec_from_hf(path: str | Path) -> Codec:
    """Our Codec from the tokenizer a checkpoint ships: tokenizer.json, else vocab.json + merges.txt."""
    from tokenizers import Tokenizer

    d = _resolve(path)
    if (d / "tokenizer.json").exists():
        return Codec(Tokenizer.from_file(str(d / "tokenizer.json")))
    if (d / "vocab.json").exists():
        return Codec(load_gpt2(d))
    raise FileNotFoundError(f"{d} has no tokenizer.json nor vocab.json + merges.txt")


# ---------------------------------------------------------------- ours -> HF


def to_hf(model: GPTNeo, out_dir: str | Path, codec: Codec | None = None) -> Path:
    """Write a directory `GPTNeoForCausalLM.from_pretrained` loads (and `AutoTokenizer` too, with a codec)."""
    if codec is not None and codec.id_map is not None:
        # A top-k codec remaps ids and spells dropped tokens in bytes: no HF tokenizer encodes like that.
        raise ValueError("a top-k codec has no exact Hugging Face tokenizer equivalent: call to_hf without "
                         "codec and keep the codec beside it with codec.save(another_dir)")
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    hf_cfg = config_to_hf(model.cfg, codec.eot_id if codec is not None else None)
    hf_cfg.architectures = ["GPTNeoForCausalLM"]
    hf_cfg.save_pretrained(d)
    # Tied lm_head is left out, as transformers itself saves GPT-Neo.
    state = {k: v.detach().float().contiguous().cpu() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    save_file(state, str(d / "model.safetensors"), metadata={"format": "pt"})
    if codec is not None:
        _save_hf_tokenizer(codec, d, model.cfg.context)
    return d


def _save_hf_tokenizer(codec: Codec, d: Path, max_length: int) -> None:
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(tokenizer_object=codec.tok, bos_token=EOT, eos_token=EOT, unk_token=EOT,
                                   model_max_length=max_length)
    fast.save_pretrained(d)
