"""Generation, summaries and the judge against a real OpenAI-compatible server: `transformers serve` (the
`serving` extra of transformers: fastapi, uvicorn, accelerate) serving a kit GPT-Neo exported by `hf.to_hf`
with a chat template added (project issue 18, item 12). Its weights are random, so what it writes is no story
and no grade: what is tested is how the kit takes a real server's answers, with real `usage` and
`finish_reason` (a reply cut at the token cap is rejected as `cut_off`, an unreadable grade is reminded once
and then failed, a prompt longer than the context is a 500 with the same body twice and fails after the
second request, not six retries). Skipped where the serving extra is not installed; about 20 s to start on
two cores."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

MISSING = [m for m in ("fastapi", "uvicorn", "accelerate", "openai", "datasketch") if importlib.util.find_spec(m) is None]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(bool(MISSING), reason=f"transformers serve needs {', '.join(MISSING)}: "
                                             "pip install 'transformers[serving]' (and the kit's llm extra)"),
]

CONTEXT = 2048  # room for the judge's two turns and a reminder with the byte-level tokenizer below
START_S = 180


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _export_model(d):
    """A 2-layer GPT-Neo with random weights and a BPE of 300 tokens, as a Hugging Face directory whose
    tokenizer has a chat template (transformers serve applies it to the messages)."""
    import torch

    from tinystories_lib.lm.interop.hf import to_hf
    from tinystories_lib.lm.model import GPTNeo, GPTNeoConfig
    from tinystories_lib.lm.tokenizer import train_bpe

    codec = train_bpe(["Once upon a time, there was a little girl named Lily. She loved her red ball."] * 50, 300)
    torch.manual_seed(0)
    model = GPTNeo(GPTNeoConfig(vocab_size=codec.vocab_size, context=CONTEXT, hidden=32, layers=2, heads=2))
    to_hf(model, d, codec)
    path = d / "tokenizer_config.json"
    cfg = json.loads(path.read_text())
    cfg["chat_template"] = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                            "{% if add_generation_prompt %}assistant:{% endif %}")
    path.write_text(json.dumps(cfg))
    return d


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(base_url, model name) of `transformers serve` serving the exported model on this machine."""
    root = tmp_path_factory.mktemp("serve")
    model_dir = _export_model(root / "model")
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "OMP_NUM_THREADS": "1"}
    code = "import sys; from transformers.cli.transformers import main; sys.argv[0] = 'transformers'; sys.exit(main())"
    log = open(root / "serve.log", "wb")
    proc = subprocess.Popen([sys.executable, "-c", code, "serve", "--port", str(port), "--device", "cpu",
                             str(model_dir)], stdout=log, stderr=subprocess.STDOUT, env=env)
    t0 = time.monotonic()
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() - t0 > START_S:
                tail = (root / "serve.log").read_text(errors="replace")[-3000:]
                pytest.fail(f"transformers serve did not answer within {START_S}s (exit {proc.poll()}):\n{tail}")
            time.sleep(0.5)
        print(f"transformers serve answered after {time.monotonic() - t0:.1f}s")
        yield f"http://127.0.0.1:{port}/v1", str(model_dir)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _config(served, **kw):
    from tinystories_lib.llm.client import LLMConfig

    base_url, model = served
    return LLMConfig(**{"base_url": base_url, "model": model, "max_tokens": 20, "temperature": 0.0,
                        "max_concurrency": 2, "timeout_s": 120, "backoff_base_s": 0.01, **kw})


@pytest.mark.parametrize("token_param", ["max_tokens", "max_completion_tokens"])
def test_stories_cut_at_the_token_cap_are_rejected_with_real_usage(served, tmp_path, token_param):
    from openai_server import make_specs

    from tinystories_lib.llm.generate import generate_stories
    from tinystories_lib.llm.runner import rejects_table

    specs = make_specs(3)
    out = tmp_path / "stories.jsonl"
    report = generate_stories(specs, _config(served, token_param=token_param), out, progress=False)
    assert report.rejected == {"cut_off": 3} and report.written == 0 and not report.failed
    assert report.requests == 3 and report.completion_tokens == 3 * 20  # the server's count: the cap, honoured
    assert report.prompt_tokens > 3 * 20 and report.status == "complete"
    assert "| cut_off | 3 |" in rejects_table(out)
    again = generate_stories(specs, _config(served), out, progress=False)
    assert again.requests == 0 and again.skipped_existing == 3  # a rejected prompt is not paid for twice


def test_summaries_of_a_real_server(served, tmp_path):
    from tinystories_lib.llm.summaries import summarize_stories
    from tinystories_lib.stories.records import Story

    stories = [Story(id=f"s{i}", source="test", text=f"Tom had a red ball. He threw it {i} times and laughed.") for i in range(2)]
    summaries, report = summarize_stories(stories, _config(served), tmp_path / "summaries.jsonl")
    assert report["failed"] == 0 and report["written"] + sum(report["rejected"].values()) == 2
    assert set(report["rejected"]) <= {"cut_off"} and len(summaries) == report["written"]


def test_the_judge_against_a_real_server(served, tmp_path):
    from tinystories_lib.evals.grade_tables import judge_report
    from tinystories_lib.evals.grades import Completion
    from tinystories_lib.evals.judge import LLMJudge
    from tinystories_lib.stages.grading import judge_summary

    items = [Completion("m", f"e{i}", f"Tom had a red ball. One day he {i}", " threw it far.") for i in range(2)]
    cache = tmp_path / "judge.jsonl"
    judge = LLMJudge(_config(served, max_tokens=30), cache_path=cache)
    grades = judge.grade(items)
    assert all(g.status == "failed" and "unparseable judge reply after a format reminder" in g.reason for g in grades)
    assert judge.usage.requests == 6 and judge.usage.retries == 0  # turn 1, turn 2, one reminder each
    assert judge.snapshot == served[1] and all(g.extra["temperature"] == 0.0 for g in grades)
    assert f"`{served[1]}`" in judge_report(judge_summary(judge, grades))
    again = LLMJudge(_config(served, max_tokens=30), cache_path=cache)
    again.grade(items)
    assert again.usage.requests == 4  # the failures are retried, their turn-1 replies kept: turn 2 and reminder


def test_a_prompt_longer_than_the_context_fails_without_a_retry_storm(served, tmp_path):
    """A prompt past the model's positions: transformers serve up to 5.24 answers 500 with the same body
    (refused at the second), from 5.25 a 400 that says why (refused at once, its message kept)."""
    from tinystories_lib.evals.grades import Completion
    from tinystories_lib.evals.judge import LLMJudge

    long = " ".join(f"Tom saw bird number {i} fly over the tree." for i in range(150))  # past 2048 tokens
    judge = LLMJudge(_config(served), cache_path=tmp_path / "judge.jsonl")
    (grade,) = judge.grade([Completion("m", "e0", "Tom had a red ball.", long)])
    assert grade.status == "failed" and judge.usage.failures == 1
    if "HTTP 400" in grade.reason:
        assert "tokens" in grade.reason and "context" in grade.reason, grade.reason
        assert judge.usage.retries == 0
    else:
        assert "HTTP 500" in grade.reason and "same answer twice" in grade.reason, grade.reason
        # two 500s (a dropped connection between them may add one retry), not 1 + 6 retries
        assert judge.usage.retries in (1, 2)
    assert grade.extra["attempts"] == 1  # counted: asked at most 3 times over all runs
