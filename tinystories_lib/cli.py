"""The `tinystories` command: headless access to what the notebooks do.

    tinystories reproduce --profile smoke [--only 02] [--set train.max_steps=100]
    tinystories train --profile smoke [--set model.hidden=64]
    tinystories sample --model runs/smoke/models/main-h128-l4-.../ --prompt "Once upon a time"
    tinystories params check params/smoke.yaml
"""

from __future__ import annotations

import argparse
import os
import sys

import yaml

from tinystories_lib import params as params_mod
from tinystories_lib.errors import KitError

# Expected failures of modules whose errors do not derive from KitError yet, looked up only in modules
# already loaded (a class never imported was never raised): (module, class).
_EXPECTED_ELSEWHERE = (("tinystories_lib.llm.errors", "LLMError"),)


def _overrides(pairs: list[str] | None) -> dict:
    """--set key=value pairs; values are parsed as YAML (numbers, lists, true/false, null)."""
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            got = "a value not shown here" if params_mod.is_secret(pair) else f"'{pair}'"
            raise params_mod.ParamsError(f"--set expects key=value, got {got}")
        k, v = pair.split("=", 1)
        try:
            out[k.strip()] = params_mod.read_yaml(v)
        except params_mod.ParamsError as e:  # a key given twice
            raise params_mod.ParamsError(f"--set {k.strip()}: {e}") from None
        except yaml.YAMLError as e:
            raise params_mod.ParamsError(f"--set {k.strip()}: the value is not valid YAML "
                                         f"({getattr(e, 'problem', None) or e}); quote it to pass a string") from None
    return out


def _exit_code(e: Exception) -> int | None:
    """2 for a bad parameter or option, 1 for another expected failure, None for a bug (its traceback shows)."""
    if isinstance(e, params_mod.ParamsError):
        return 2
    elsewhere = tuple(c for m, name in _EXPECTED_ELSEWHERE if (c := getattr(sys.modules.get(m), name, None)))
    if isinstance(e, (KitError, *elsewhere)):
        return 1
    # Until lm/ and stories/ raise KitErrors for bad options and data files, their builtins are taken as such.
    return 2 if isinstance(e, (FileNotFoundError, ValueError)) else None


def cmd_reproduce(a) -> int:
    from tinystories_lib.reproduce import reproduce

    reproduce(a.profile, only=a.only, overrides=_overrides(a.set))
    return 0


def cmd_claims(a) -> int:
    from tinystories_lib.reproduce import report_claims
    from tinystories_lib.runs import Run

    claims = report_claims(Run.load(a.profile, _overrides(a.set)))
    return 0 if all(c["holds"] is not False for c in claims) or not a.strict else 1


def cmd_train(a) -> int:
    from tinystories_lib.runs import Run
    from tinystories_lib.stages import models

    run = Run.load(a.profile, _overrides(a.set))
    r = models.train_model(run)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # under torchrun, rank 0 reports
    s = r.summary
    state = "reused" if s.get("skipped") else "trained"
    print(f"{state} {r.label}: validation loss {r.val_loss:.4f}, {s['params'] / 1e6:.2f}M params")
    print(f"model directory: {r.dir}")
    return 0


def cmd_sample(a) -> int:
    from tinystories_lib.lm.checkpoints import load_model
    from tinystories_lib.lm.sample import SamplingConfig, complete
    from tinystories_lib.lm.tokenizer import Codec
    from tinystories_lib.lm.train import pick_device

    if a.n < 1:
        raise ValueError(f"--n must be at least 1, got {a.n}")
    # Options first, so a typo is reported before the model is loaded.
    cfg = SamplingConfig(max_new_tokens=a.max_new_tokens, temperature=a.temperature, top_k=a.top_k, top_p=a.top_p,
                         seed=a.seed)
    device = pick_device(a.device)
    model = load_model(a.model, device)
    codec = Codec.load(a.model)
    prompts = a.prompt or [""]
    for i, text in enumerate(complete(model, codec, [p for p in prompts for _ in range(a.n)], cfg)):
        prompt = prompts[i // a.n]
        print(f"--- sample {i + 1}")
        print(prompt + text)
    return 0


def cmd_params_check(a) -> int:
    try:
        p = params_mod.load(a.file, _overrides(a.set))
    except params_mod.ParamsError as e:
        print(f"invalid: {e}", file=sys.stderr)
        return 2
    print(f"ok: profile '{p.profile}' ({a.file}), parameters hash {p.hash()}")
    if a.show:
        print(yaml.safe_dump(p.to_dict(), sort_keys=False))
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="tinystories", description="tinystories-lab: reproduce the TinyStories paper")
    ap.add_argument("--debug", action="store_true", help="show the traceback of every error, expected ones too")
    sub = ap.add_subparsers(dest="cmd", required=True)

    r = sub.add_parser("reproduce", help="run the notebooks headless with papermill on a profile")
    r.add_argument("--profile", default="smoke", help="a name in params/ or a path to a YAML profile")
    r.add_argument("--only", nargs="+", help="run only these notebooks (e.g. 02 or 02_training)")
    r.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a parameter (repeatable)")
    r.set_defaults(func=cmd_reproduce)

    k = sub.add_parser("claims", help="check the paper's claims on a profile's figure data (what reproduce prints last)")
    k.add_argument("--profile", default="smoke")
    k.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a parameter (repeatable)")
    k.add_argument("--strict", action="store_true", help="exit 1 when a measured claim does not hold")
    k.set_defaults(func=cmd_claims)

    t = sub.add_parser("train", help="train the profile's model (builds corpus and tokens if needed; resumes)")
    t.add_argument("--profile", default="smoke")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a parameter (repeatable)")
    t.set_defaults(func=cmd_train)

    s = sub.add_parser("sample", help="continue a story beginning with a trained model")
    s.add_argument("--model", required=True, help="a model directory (config.json + model.safetensors + tokenizer.json)")
    s.add_argument("--prompt", action="append", help="story beginning (repeatable); empty = from scratch")
    s.add_argument("--n", type=int, default=1, help="samples per prompt")
    s.add_argument("--max-new-tokens", type=int, default=200)
    s.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    s.add_argument("--top-k", type=int, default=0)
    s.add_argument("--top-p", type=float, default=0.9)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", default="auto")
    s.set_defaults(func=cmd_sample)

    pp = sub.add_parser("params", help="work with parameter profiles")
    psub = pp.add_subparsers(dest="params_cmd", required=True)
    c = psub.add_parser("check", help="validate a profile; exit 2 with the reason when it is invalid")
    c.add_argument("file")
    c.add_argument("--set", action="append", metavar="KEY=VALUE")
    c.add_argument("--show", action="store_true", help="print the full resolved parameters")
    c.set_defaults(func=cmd_params_check)
    return ap


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    try:
        return a.func(a)
    except Exception as e:
        code = _exit_code(e)
        if code is None or a.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        if not isinstance(e, params_mod.ParamsError):
            print("(tinystories --debug ... shows the traceback)", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
