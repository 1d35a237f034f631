"""Grading throughput: the offline grader (with an NgramIndex) and the LLM judge against a local server.

Offline: `offline.OfflineGrader` (grammar, consistency, creativity, plot; its word LM and IDF on the
training stories, its anchors on 300 held-out ones) with an `NgramIndex` over 20k storyteller stories
grades completions made from held-out storyteller stories (each cut after ~40% of its words,
mid-sentence). Baseline: the same grader with a brute-force nearest-story scan instead of the index
(Rouge-2 precision against every story, bigrams counted once up front), on a few completions; the
novelty (the copying part of creativity) must agree.

LLM judge: `judge.LLMJudge.grade` (two turns per completion, JSONL cache) with max_concurrency 32 against
tests/openai_server.FakeOpenAI (judge_reply, 200 ms per request, child process, loopback only). Ideal:
32 / (2 x 0.2 s) = 80 completions/s; target >= 90% of it. Same-run baseline: the bare openai
AsyncOpenAI client running the same two turns with a 32-slot semaphore and nothing else.

    python bench/bench_grading.py [--quick]
"""

from __future__ import annotations

import asyncio
import copy
import tempfile
from collections import Counter
from pathlib import Path

from common import FakeServer, Row, Timer, parse_args, print_table, server_arg, start

from tinystories_lib.evals.grades import Completion
from tinystories_lib.evals.judge import LLMJudge
from tinystories_lib.evals.judge_prompt import turn1_messages, turn2_messages
from tinystories_lib.evals.ngram_index import NearestResult, NgramIndex
from tinystories_lib.evals.offline import OfflineGrader
from tinystories_lib.evals.text_metrics import _ngrams
from tinystories_lib.llm.client import LLMConfig, make_async_client, run_async
from tinystories_lib.stories.storyteller import tell_stories
from tinystories_lib.stories.words import split_words

LATENCY_S, CONCURRENCY = 0.2, 32


def completions_from(stories, cut: float = 0.4) -> list[Completion]:
    out = []
    for s in stories:
        words = s.text.split(" ")
        k = max(1, int(len(words) * cut))
        out.append(Completion("storyteller-heldout", s.id, " ".join(words[:k]), " " + " ".join(words[k:])))
    return out


class BruteForceIndex:
    """Stands in for NgramIndex in OfflineGrader: scores every story (the obvious implementation)."""

    def __init__(self, texts: list[str], common_words: set[str]):
        self.bigrams = [Counter(_ngrams(split_words(t), 2)) for t in texts]
        self.common_words = common_words

    def search(self, text: str, k: int = 1) -> NearestResult:
        cand = Counter(_ngrams(split_words(text), 2))
        total = sum(cand.values())
        if not total:
            return NearestResult([], True, 0, 0)
        scores = [(sum(min(c, ref[g]) for g, c in cand.items() if g in ref), i) for i, ref in enumerate(self.bigrams)]
        best = sorted(scores, key=lambda si: (-si[0], si[1]))[:k]
        return NearestResult([(i, s / total) for s, i in best if s > 0], True, len(scores), total)


def offline_part(args, rows: list[Row]) -> None:
    n_train, n_grade, n_brute = (3_000, 60, 2) if args.quick else (20_000, 500, 5)
    with Timer() as t:
        train = [s.text for s in tell_stories(n_train, seed=0)]
    print(f"   {n_train} storyteller stories in {t.s:.1f} s")
    with Timer() as t:
        index = NgramIndex(train)
    print(f"   NgramIndex over {n_train} stories built in {t.s:.1f} s")
    comps = completions_from(tell_stories(n_grade, seed=12345))
    calibration = [s.text for s in tell_stories(300, seed=54321)]
    with Timer() as t:
        grader = OfflineGrader(train, calibration, train_index=index)
    print(f"   OfflineGrader (word LM, IDF, anchors) built in {t.s:.1f} s")
    grader.grade(comps[:5])  # warm-up
    with Timer() as t_idx:
        grades = grader.grade(comps)
    brute = copy.copy(grader)  # the same word LM, IDF and anchors; only the nearest-story search differs
    brute.train_index = BruteForceIndex(train, index.common_words)
    with Timer() as t_brute:
        slow = brute.grade(comps[:n_brute])
    same = all(abs(a.extra["raw"]["novelty"] - b.extra["raw"]["novelty"]) < 1e-9 for a, b in zip(grades, slow))
    print(f"   novelty from the index equals the brute-force scan on {n_brute} completions: {same}")
    index.DENSE_TABLE_MAX = 0  # the same index on its large-vocabulary path (searchsorted), as a baseline
    with Timer() as t_search:
        searched = grader.grade(comps)
    del index.DENSE_TABLE_MAX
    same = all(a.scores == b.scores and a.extra == b.extra for a, b in zip(grades, searched))
    print(f"   grades on the searchsorted path equal the dense-table ones on {n_grade} completions: {same}")
    failed = sum(g.status != "ok" for g in grades)
    rows.append(Row(f"OfflineGrader + NgramIndex ({n_train // 1000}k stories), {n_grade} completions",
                    n_grade / t_idx.s, n_brute / t_brute.s, "completions/s",
                    f"same grader, brute-force nearest-story scan ({n_brute} completions, measured here)",
                    note=f"{failed} failed" if failed else ""))
    rows.append(Row("NgramIndex lookup: dense query table vs searchsorted", n_grade / t_idx.s, n_grade / t_search.s,
                    "completions/s", "same index on its searchsorted path (large vocabularies; measured here)"))



async def bare_judge(config: LLMConfig, comps: list[Completion]) -> None:
    client = make_async_client(config)
    sem = asyncio.Semaphore(config.max_concurrency)

    async def one(c: Completion) -> None:
        async with sem:
            m1 = turn1_messages(c)
            r1 = await client.chat.completions.create(model=config.model, messages=m1)
            await client.chat.completions.create(model=config.model, messages=turn2_messages(m1, r1.choices[0].message.content))

    await asyncio.gather(*(one(c) for c in comps))
    await client.close()


def judge_part(args, rows: list[Row]) -> None:
    n = 96 if args.quick else 960  # 30 rounds of 32 two-turn gradings: ramp-up and tail weigh little
    comps = completions_from(tell_stories(n, seed=777))  # n distinct items: the judge caches repeats
    ideal = CONCURRENCY / (2 * LATENCY_S)
    with FakeServer("judge", LATENCY_S, kind=args.server) as server, tempfile.TemporaryDirectory() as d:
        config = LLMConfig(base_url=server.base_url, model="fake-judge", max_concurrency=CONCURRENCY)
        LLMJudge(config).grade(comps[:4])  # warm-up: imports, first connections
        runs = {"bare": [], "ours": []}
        for r in range(2):  # interleaved rounds; the faster of each counts
            with Timer() as t:
                run_async(bare_judge(config, comps))  # the same event loop as ours (uvloop if installed)
            runs["bare"].append(t)
            judge = LLMJudge(config, cache_path=Path(d) / f"cache{r}.jsonl")  # a fresh cache: every call is made
            with Timer() as t:
                grades = judge.grade(comps)
            runs["ours"].append(t)
            bad = [g for g in grades if g.status != "ok"]
            if bad:
                print(f"   WARNING: {len(bad)} failed grades, e.g. {bad[0].reason}")
    print(f"   server: {server.stats}")
    best = {k: min(v, key=lambda t: t.s) for k, v in runs.items()}
    for k, t in best.items():
        print(f"   {k}: {n} completions in {t.s:.2f} s (rounds {[round(x.s, 2) for x in runs[k]]}); client CPU "
              f"{t.cpu / n / 2 * 1000:.2f} ms per request; ideal {n / ideal:.2f} s")
    ours, bare = n / best["ours"].s, n / best["bare"].s
    ideal_name = f"ideal: {CONCURRENCY} / (2 turns x {LATENCY_S} s)"
    rows.append(Row(f"LLMJudge.grade, {n} completions, concurrency {CONCURRENCY}", ours, ideal, "completions/s",
                    ideal_name, target=0.9))
    rows.append(Row("bare AsyncOpenAI client, same two turns", bare, ideal, "completions/s", ideal_name))
    rows.append(Row("LLMJudge.grade vs bare client", ours, bare, "completions/s",
                    "bare AsyncOpenAI client + semaphore, same server (measured here)"))


def main():
    args = parse_args(__doc__.splitlines()[0], server_arg)
    info = start(args, "bench_grading: offline grader and LLM judge completions/s", torch_threads=False)
    rows: list[Row] = []
    offline_part(args, rows)
    judge_part(args, rows)
    print_table(rows, args, info)


if __name__ == "__main__":
    main()
