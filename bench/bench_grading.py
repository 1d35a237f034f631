"""Grading throughput: the offline grader (with an NgramIndex) and the LLM judge against a local server.

Offline: `metrics.OfflineGrader` with an `NgramIndex` over 20k storyteller stories grades completions
made from held-out storyteller stories (each cut after ~40% of its words, mid-sentence). Baseline: the
same grader with a brute-force nearest-story scan instead of the index (Rouge-2 precision against every
story, bigrams counted once up front), on a few completions; the novelty scores must agree. Also: a
patched copy of the index's scoring (dense lookup instead of searchsorted; proposed fix), same grades.

LLM judge: `judge.LLMJudge.grade` (two turns per completion, JSONL cache) with max_concurrency 32 against
tests/openai_server.FakeOpenAI (judge_reply, 200 ms per request, child process, loopback only). Ideal:
32 / (2 x 0.2 s) = 80 completions/s; target >= 90% of it. Same-run baseline: the bare openai
AsyncOpenAI client running the same two turns with a 32-slot semaphore and nothing else.

    python bench/bench_grading.py [--quick]
"""

from __future__ import annotations

import asyncio
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
from common import FakeServer, Row, Timer, parse_args, print_table, start

from tinystories_lib.grading import Completion
from tinystories_lib.judge import LLMJudge, turn1_messages, turn2_messages
from tinystories_lib.llm import LLMConfig, make_async_client
from tinystories_lib.metrics import NearestResult, NgramIndex, OfflineGrader, _ngrams, tokens
from tinystories_lib.storyteller import generate_stories

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
        self.bigrams = [Counter(_ngrams(tokens(t), 2)) for t in texts]
        self.common_words = common_words

    def search(self, text: str, k: int = 1) -> NearestResult:
        cand = Counter(_ngrams(tokens(text), 2))
        total = sum(cand.values())
        if not total:
            return NearestResult([], True, 0, 0)
        scores = [(sum(min(c, ref[g]) for g, c in cand.items() if g in ref), i) for i, ref in enumerate(self.bigrams)]
        best = sorted(scores, key=lambda si: (-si[0], si[1]))[:k]
        return NearestResult([(i, s / total) for s, i in best if s > 0], True, len(scores), total)


class DenseLookupIndex(NgramIndex):
    """Patched copy of NgramIndex (proposed library fix; measured, not applied). `_overlaps` finds each
    candidate-story bigram among the query's with np.searchsorted over ~1M keys per batch, most of the
    grader's time. A query has ~100 distinct bigrams over a vocabulary of a few thousand words, so a
    dense table (query first words x vocab -> query bigram position) answers with two gathers instead."""

    def _overlaps(self, stories: np.ndarray, qkeys: np.ndarray, qcounts: np.ndarray) -> np.ndarray:
        starts, lens = self.offsets[stories], np.diff(self.offsets)[stories]
        within = np.arange(lens.sum()) - np.repeat(np.cumsum(lens) - lens, lens)
        toks = self.tokens[np.repeat(starts, lens) + within]
        owner = np.repeat(np.arange(len(stories)), lens)
        V, q = len(self.vocab), len(qkeys)
        firsts, row_of = np.unique(qkeys // V, return_inverse=True)
        first_row = np.full(V, -1, np.int64)  # -1 picks the table's last row: all -1 (no such bigram)
        first_row[firsts] = np.arange(len(firsts))
        table = np.full((len(firsts) + 1, V), -1, np.int64)
        table[row_of, qkeys % V] = np.arange(q)
        pos = table[first_row[toks[:-1]], toks[1:]]
        hit = (owner[:-1] == owner[1:]) & (pos >= 0)
        cells, counts = np.unique(owner[:-1][hit] * q + pos[hit], return_counts=True)
        clipped = np.minimum(counts, qcounts[cells % q])
        return np.bincount(cells // q, weights=clipped, minlength=len(stories)).astype(np.int64)


def offline_part(args, rows: list[Row]) -> list[Completion]:
    n_train, n_grade, n_brute = (3_000, 60, 2) if args.quick else (20_000, 500, 5)
    with Timer() as t:
        train = [s.text for s in generate_stories(n_train, seed=0)]
    print(f"   {n_train} storyteller stories in {t.s:.1f} s")
    with Timer() as t:
        index = NgramIndex(train)
    print(f"   NgramIndex over {n_train} stories built in {t.s:.1f} s")
    comps = completions_from(generate_stories(n_grade, seed=12345))
    grader = OfflineGrader(index)
    grader.grade(comps[:5])  # warm-up
    with Timer() as t_idx:
        grades = grader.grade(comps)
    brute = OfflineGrader(BruteForceIndex(train, index.common_words))
    with Timer() as t_brute:
        slow = brute.grade(comps[:n_brute])
    same = all(abs(a.scores.get("novelty", -1) - b.scores.get("novelty", -1)) < 1e-9 for a, b in zip(grades, slow))
    print(f"   novelty from the index equals the brute-force scan on {n_brute} completions: {same}")
    dense = DenseLookupIndex.__new__(DenseLookupIndex)
    dense.__dict__.update(index.__dict__)  # same index, patched scoring
    with Timer() as t_dense:
        fast = OfflineGrader(dense).grade(comps)
    same = all(a.scores == b.scores and a.extra == b.extra for a, b in zip(grades, fast))
    print(f"   grades with the patched index equal the current ones on {n_grade} completions: {same}")
    failed = sum(g.status != "ok" for g in grades)
    rows.append(Row(f"OfflineGrader + NgramIndex ({n_train // 1000}k stories), {n_grade} completions",
                    n_grade / t_idx.s, n_brute / t_brute.s, "completions/s",
                    f"same grader, brute-force nearest-story scan ({n_brute} completions, measured here)",
                    note=f"{failed} failed" if failed else ""))
    rows.append(Row("OfflineGrader + patched NgramIndex (dense lookup, proposed fix)", n_grade / t_dense.s,
                    n_grade / t_idx.s, "completions/s", "current NgramIndex (measured here)",
                    note="patched copy in this script"))
    return comps


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


def judge_part(args, comps: list[Completion], rows: list[Row]) -> None:
    n = 96 if args.quick else 320
    comps = comps[:n]
    ideal = CONCURRENCY / (2 * LATENCY_S)
    with FakeServer("judge", LATENCY_S) as server, tempfile.TemporaryDirectory() as d:
        config = LLMConfig(base_url=server.base_url, model="fake-judge", max_concurrency=CONCURRENCY)
        LLMJudge(config).grade(comps[:4])  # warm-up: imports, first connections
        runs = {"bare": [], "ours": []}
        for r in range(2):  # interleaved rounds; the faster of each counts
            with Timer() as t:
                asyncio.run(bare_judge(config, comps))
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
    args = parse_args(__doc__.splitlines()[0])
    info = start(args, "bench_grading: offline grader and LLM judge completions/s", torch_threads=False)
    rows: list[Row] = []
    comps = offline_part(args, rows)
    judge_part(args, comps, rows)
    print_table(rows, args, info)


if __name__ == "__main__":
    main()
