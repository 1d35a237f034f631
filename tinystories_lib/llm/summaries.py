"""One-sentence summaries of existing stories, the TinyStories-Instruct way, from any OpenAI-compatible LLM.

    summaries = summarize_stories(stories, config, "runs/x/summaries.jsonl", budget_usd=2)

For stories that came without one (real TinyStories files, the hub's plain split): notebook 07's
`Summary:` field. Replies go to an append-only JSONL keyed by story id, flushed line by line, so a
killed run resumes where it stopped and each story is paid for once; a second process on the same file
is refused. A failed request is counted and retried by the next run, never written; so is a reply cut off
at the token cap or all reasoning (`rejected`, by reason), and a reasoning model's `<think>` block is
dropped from the summary.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tinystories_lib.llm.client import LLMClient, LLMConfig, map_concurrently, run_async
from tinystories_lib.llm.errors import BudgetExceeded, describe_error, error_detail
from tinystories_lib.llm.jsonl import JsonlAppender, read_jsonl_records, repair_jsonl_tail
from tinystories_lib.llm.runner import SUMMARY_MAX_TOKENS, _exclusive, summary_messages, summary_problem
from tinystories_lib.stories.records import Story


async def asummarize_stories(stories: Sequence[Story], config: LLMConfig, out_path: str | Path, *,
                             budget_usd: float | None = None) -> tuple[dict[str, str], dict]:
    """Async form of `summarize_stories`."""
    out_path = Path(out_path)
    with _exclusive(out_path):
        repair_jsonl_tail(out_path)
        done = {r["id"]: r["summary"] for r in read_jsonl_records(out_path) if r.get("id") and r.get("summary")}
        pending = [s for s in stories if s.id not in done]
        report = {"done_before": len(stories) - len(pending), "written": 0, "failed": 0, "not_attempted": 0,
                  "rejected": {}, "failure_examples": []}
        async with LLMClient(config, budget_usd=budget_usd) as client:
            with JsonlAppender(out_path) as out:

                async def one(story: Story) -> None:
                    try:
                        reply = await client.chat(summary_messages(story.text), max_tokens=SUMMARY_MAX_TOKENS)
                    except BudgetExceeded:
                        report["not_attempted"] += 1
                        return
                    except Exception as e:  # counted; the story is retried by the next run
                        report["failed"] += 1
                        if len(report["failure_examples"]) < 5:
                            report["failure_examples"].append(f"{describe_error(e)}: "
                                                              f"{error_detail(e, config.api_key_env)}")
                        return
                    if (problem := summary_problem(reply)) is not None:
                        reason, detail = problem
                        report["rejected"][reason] = report["rejected"].get(reason, 0) + 1
                        if len(report["failure_examples"]) < 5:
                            report["failure_examples"].append(f"{reason}: {detail}")
                        return
                    text = " ".join(reply.answer.split())
                    out.write({"id": story.id, "summary": text})
                    done[story.id] = text
                    report["written"] += 1

                await map_concurrently(pending, one, config.max_concurrency)
        report["cost_usd"] = round(client.usage.cost_usd, 6)
    return {s.id: done[s.id] for s in stories if s.id in done}, report


def summarize_stories(stories: Sequence[Story], config: LLMConfig, out_path: str | Path, *,
                      budget_usd: float | None = None) -> tuple[dict[str, str], dict]:
    """{story id: summary} for the stories summarised so far (this run and earlier ones), and a report:
    done_before, written, failed, not_attempted (the budget stopped them), rejected (cut off or all
    reasoning, by reason: retried by the next run), cost_usd."""
    return run_async(asummarize_stories(stories, config, out_path, budget_usd=budget_usd))
