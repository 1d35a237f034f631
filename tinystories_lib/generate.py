"""TinyStories-style corpus generation with any OpenAI-compatible LLM, losing nothing.

    specs = prompts.sample_prompts(1000, seed=0)
    report = generate_stories(specs, LLMConfig.from_dict(cfg), "runs/x/llm_stories.jsonl", budget_usd=5)
    print(report.summary())

Guarantees:
* The output is append-only JSONL, one `Story` per line, flushed line by line (fsynced in the background). On start the
  ids already written (and already rejected) are skipped, and a torn last line left by a kill is cut
  off, so kill the process at any moment, run again, and every prompt id ends up exactly once.
* Each story is validated (the prompt's three words in some inflection, length, refusals and chatty
  meta-text, exact and near duplicates). Invalid stories go to a rejects JSONL with their reason: kept,
  but out of the corpus. Requests that fail after retries are counted by reason and retried next run.
* `generate_stories_batch` does the same through the Batch API at the batch discount; the batch id is
  recorded next to the output so a killed run resumes polling instead of paying twice.

Specs are `tinystories_lib.prompts.PromptSpec`s or anything with the same attributes: `id`, `noun`,
`verb`, `adjective`, `features`, `render()` (the generation prompt) and optionally `words`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .corpus import NearDuplicateIndex
from .llm import (
    BatchPending,
    BudgetExceeded,
    JsonlAppender,
    LLMClient,
    LLMConfig,
    Usage,
    describe_error,
    error_detail,
    estimate_message_tokens,
    forget_batch,
    map_concurrently,
    read_jsonl_records,
    repair_jsonl_tail,
    run_async,
    run_batch,
)
from .records import Story

log = logging.getLogger(__name__)

# TinyStories-Instruct stories carry a short summary; this asks for one in the same spirit.
SUMMARY_PROMPT = (
    "Write a one-sentence summary of the story below, using only simple words that a small child "
    "would understand. Reply with the summary only.\n\nStory:\n{story}"
)
SUMMARY_MAX_TOKENS = 120
_MAX_FAILURE_EXAMPLES = 20


# ------------------------------------------------------------------------------------ word forms

# Irregular forms of words likely in a child's vocabulary: base -> other forms.
_IRREGULAR_TABLE = """
be:am,is,are,was,were,been,being have:has,had do:does,did,done go:goes,went,gone see:saw,seen
eat:ate,eaten run:ran swim:swam,swum sing:sang,sung ring:rang,rung drink:drank,drunk fly:flew,flown,flies
take:took,taken give:gave,given make:made come:came find:found think:thought bring:brought
buy:bought catch:caught teach:taught fight:fought sit:sat stand:stood win:won tell:told sell:sold
hold:held feel:felt keep:kept sleep:slept sweep:swept leave:left meet:met ride:rode,ridden
write:wrote,written drive:drove,driven hide:hid,hidden bite:bit,bitten break:broke,broken
speak:spoke,spoken wake:woke,woken choose:chose,chosen freeze:froze,frozen steal:stole,stolen
fall:fell,fallen draw:drew,drawn grow:grew,grown know:knew,known throw:threw,thrown blow:blew,blown
begin:began,begun dig:dug hang:hung shake:shook,shaken build:built send:sent spend:spent lend:lent
bend:bent lose:lost shoot:shot light:lit slide:slid spin:spun stick:stuck sting:stung swing:swung
tear:tore,torn wear:wore,worn forget:forgot,forgotten get:got,gotten lay:laid pay:paid say:said
hear:heard understand:understood shine:shone feed:fed lead:led seek:sought weep:wept kneel:knelt
creep:crept leap:leapt dream:dreamt burn:burnt spill:spilt mean:meant sink:sank,sunk flee:fled
lean:leant quit:quitted,quitting rise:rose,risen shrink:shrank,shrunk squat:squatted,squatting saw:sawn
sew:sewn show:shown babysit:babysat forgive:forgave,forgiven
mouse:mice child:children foot:feet tooth:teeth goose:geese man:men woman:women person:people
ox:oxen leaf:leaves knife:knives wolf:wolves life:lives wife:wives shelf:shelves half:halves
good:better,best bad:worse,worst far:farther,further,farthest,furthest little:less,least many:more,most
much:more,most
"""
_IRREGULAR: dict[str, set[str]] = {
    base: set(rest.split(","))
    for base, rest in (entry.split(":") for entry in _IRREGULAR_TABLE.split())
}
_VOWELS = set("aeiou")


@functools.lru_cache(maxsize=1)
def _vocab_forms() -> dict[str, set[str]]:
    """Inflections listed by the prompt vocabulary (`prompts.vocab_index`), when it is installed."""
    try:
        from .prompts import vocab_index

        index = vocab_index()
    except Exception as e:  # the vocabulary is optional here: the rules below still apply
        log.debug("no vocabulary inflection table (%s); using rules only", type(e).__name__)
        return {}
    table: dict[str, set[str]] = {}
    for (_pos, base), entry in index.items():
        table.setdefault(base.lower(), set()).update(v.lower() for _k, v in getattr(entry, "forms", ()))
    return table


def word_forms(word: str) -> set[str]:
    """Forms a prompt word may take in a story: the vocabulary's own inflections when available, plus
    rules: plural/3rd person (s, es, ies), past (ed, d, ied), -ing, comparatives (er, est), adverbs
    (ly), doubled final consonants (run -> running) and a table of irregulars. A superset on purpose:
    this rejects stories that skip a word, not odd spellings."""
    w = word.lower().strip()
    forms = {w, w + "s", w + "es", w + "ed", w + "d", w + "ing", w + "er", w + "r", w + "est", w + "st", w + "ly"}
    if w.endswith("e"):
        forms |= {w[:-1] + "ing", w[:-1] + "y"}  # dance -> dancing, noise -> noisy
    if w.endswith("ie"):
        forms.add(w[:-2] + "ying")  # lie -> lying
    if w.endswith("le"):
        forms.add(w[:-2] + "ly")  # gentle -> gently
    if len(w) > 1 and w.endswith("y") and w[-2] not in _VOWELS:
        stem = w[:-1]
        forms |= {stem + "ies", stem + "ied", stem + "ier", stem + "iest", stem + "ily"}
    if len(w) > 2 and w[-1] not in _VOWELS | set("wxy") and w[-2] in _VOWELS and w[-3] not in _VOWELS:
        d = w + w[-1]  # stop -> stopped, sad -> sadder
        forms |= {d + "ed", d + "ing", d + "er", d + "est", d + "y"}
    if w.endswith("f"):
        forms.add(w[:-1] + "ves")
    if w.endswith("fe"):
        forms.add(w[:-2] + "ves")
    if w.endswith("c"):
        forms |= {w + "ked", w + "king"}  # picnic -> picnicking
    return forms | _IRREGULAR.get(w, set()) | _vocab_forms().get(w, set())


@functools.lru_cache(maxsize=16)  # a story is tokenized by the word check, the digest, then add(): once
def _tokens(text: str) -> tuple[str, ...]:
    text = text.lower().replace("\u2019", "'")
    return tuple(t[:-2] if t.endswith("'s") else t for t in re.findall(r"[a-z]+(?:'[a-z]+)?", text))


_cached_word_forms = functools.lru_cache(maxsize=65536)(word_forms)  # ~1,500 prompt words, asked for per story


def missing_words(text: str, words: dict[str, str], forms: Callable[[str], set[str]] = word_forms) -> list[str]:
    """The prompt words (as "slot:word") that the text does not use in any form."""
    tokens = set(_tokens(text))
    forms = _cached_word_forms if forms is word_forms else forms
    missing = []
    for slot, word in words.items():
        if " " in word.strip():  # a multi-word entry ("ice cream"): look for the phrase
            ok = " ".join(_tokens(word)) in " ".join(_tokens(text))
        else:
            ok = not tokens.isdisjoint(forms(word))
        if not ok:
            missing.append(f"{slot}:{word}")
    return missing


# ------------------------------------------------------------------------------------ validation

# A model declining or talking about itself instead of writing. Only the opening counts for phrases a
# story character could say ("I'm sorry," said Tom), anywhere for phrases no character would.
_REFUSAL_START = re.compile(
    r"^\W*(?:(?:i'm|i am) sorry,? but\b|i apologi[sz]e\b|unfortunately, i\b|"
    r"i (?:cannot|can't|can not|won't|am unable to|'m unable to) "
    r"(?:write|create|generate|help|assist|fulfil|comply|provide|produce|do that|complete))",
    re.IGNORECASE,
)
_REFUSAL_ANYWHERE = re.compile(r"\b(as an ai\b|as a language model|i'm an ai|i am an ai)", re.IGNORECASE)
# Chatty wrappers around the story rather than the story itself.
_META_START = re.compile(
    r"^\W*(sure|certainly|of course|absolutely|okay|ok|alright)\b[\s!,.:]|"
    r"^\W*here('s| is| are) (a|an|the|your|my)\b|^\W*(title|story)\s*:",
    re.IGNORECASE,
)
_META_ANYWHERE = re.compile(
    r"\b(i hope you (enjoy|like)|let me know if|here is a (short )?story|here's a (short )?story)",
    re.IGNORECASE,
)
# Either kind at once: a good story (nearly all of them) is then scanned once from its start and once
# throughout, not twice each.
_SUSPECT_START = re.compile(f"(?:{_REFUSAL_START.pattern})|(?:{_META_START.pattern})", re.IGNORECASE)
_SUSPECT_ANYWHERE = re.compile(f"(?:{_REFUSAL_ANYWHERE.pattern})|(?:{_META_ANYWHERE.pattern})", re.IGNORECASE)


@dataclass
class StoryValidator:
    """Checks one generated story; remembers accepted ones for duplicate checks.

    `check` returns None for a good story, else (reason, detail) with reason one of REJECT_REASONS.
    `near_dup_threshold=None` turns the MinHash check off; `forms` maps a word to its accepted forms
    (default: `word_forms`, rule based; pass a vocabulary's own inflection table if it has one)."""

    min_words: int = 40
    max_words: int = 1500
    near_dup_threshold: float | None = 0.8
    num_perm: int = 128
    forms: Callable[[str], set[str]] = word_forms
    _exact: set = field(default_factory=set, init=False, repr=False)
    _near: NearDuplicateIndex | None = field(default=None, init=False, repr=False)

    def __post_init__(self):
        if self.near_dup_threshold is not None:
            self._near = NearDuplicateIndex(self.near_dup_threshold, self.num_perm)

    @staticmethod
    def _digest(text: str) -> str:
        return hashlib.sha1(" ".join(_tokens(text)).encode()).hexdigest()

    def check(self, text: str, words: dict[str, str] | None) -> tuple[str, str] | None:
        head = text[:300]
        if not text.strip():
            return "empty", ""
        if _SUSPECT_START.search(head) or _SUSPECT_ANYWHERE.search(text):  # one pass each; which one below
            if _REFUSAL_START.search(head) or _REFUSAL_ANYWHERE.search(text):
                return "refusal", head[:80]
            if _META_START.search(head) or _META_ANYWHERE.search(text):
                return "meta_text", head[:80]
        n = len(text.split())
        if n < self.min_words:
            return "too_short", f"{n} words < {self.min_words}"
        if n > self.max_words:
            return "too_long", f"{n} words > {self.max_words}"
        missing = missing_words(text, words or {}, self.forms)
        if missing:
            return "missing_words", ", ".join(missing)
        return self.check_duplicate(text)

    def check_duplicate(self, text: str) -> tuple[str, str] | None:
        """Only the exact and near-duplicate checks against the stories accepted so far."""
        if self._digest(text) in self._exact:
            return "exact_duplicate", ""
        if self._near is not None and self._near.similar(text):
            return "near_duplicate", f"Jaccard >= {self.near_dup_threshold}"
        return None

    def add(self, story_id: str, text: str) -> None:
        """Remember an accepted story, so later copies of it are rejected."""
        self._exact.add(self._digest(text))
        if self._near is not None:
            self._near.add(story_id, text)


REJECT_REASONS = (
    "empty", "refusal", "meta_text", "too_short", "too_long", "missing_words", "exact_duplicate", "near_duplicate",
)


# ------------------------------------------------------------------------------------ report


@dataclass
class GenerationReport:
    """What a generation run did. `status`: "complete" (every requested id is now written or
    rejected), "incomplete" (some requests failed: rerun to retry them), "budget_exceeded" (the cap
    stopped new requests; `not_attempted` were left), "pending" (a batch is still running: rerun)."""

    model: str
    out_path: str
    rejects_path: str
    mode: str = "online"
    status: str = "complete"
    requested: int = 0
    skipped_existing: int = 0
    written: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)
    failure_examples: list[dict] = field(default_factory=list)
    not_attempted: int = 0
    requests: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    estimated_cost_usd: float = 0.0
    budget_usd: float | None = None
    batch_ids: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    stories_per_s: float = 0.0

    def add_failure(self, story_id: str, reason: str, detail: str) -> None:
        self.failed[reason] = self.failed.get(reason, 0) + 1
        if len(self.failure_examples) < _MAX_FAILURE_EXAMPLES:
            self.failure_examples.append({"id": story_id, "reason": reason, "detail": detail})

    def add_rejection(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    def finish(self, usage: Usage, t0: float) -> GenerationReport:
        self.requests, self.retries = usage.requests, usage.retries
        self.prompt_tokens, self.completion_tokens = usage.prompt_tokens, usage.completion_tokens
        self.cost_usd = round(usage.cost_usd, 6)
        self.wall_s = round(time.monotonic() - t0, 3)
        self.stories_per_s = round(self.written / self.wall_s, 3) if self.wall_s > 0 else 0.0
        if self.status == "complete":
            if self.not_attempted:
                self.status = "budget_exceeded"
            elif self.failed:
                self.status = "incomplete"
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        rejected = sum(self.rejected.values())
        failed = sum(self.failed.values())
        lines = [
            f"{self.model} ({self.mode}): {self.status}",
            f"  requested {self.requested}, already done {self.skipped_existing}, written {self.written}, "
            f"rejected {rejected} {self.rejected or ''}, failed {failed} {self.failed or ''}, "
            f"not attempted {self.not_attempted}",
            f"  tokens in/out {self.prompt_tokens}/{self.completion_tokens}, cost ${self.cost_usd:.4f} "
            f"(estimated ${self.estimated_cost_usd:.4f}), {self.wall_s:.1f}s, {self.stories_per_s:.2f} stories/s",
        ]
        return "\n".join(lines)


# ------------------------------------------------------------------------------------ shared pieces


def _spec_words(spec) -> dict[str, str]:
    words = getattr(spec, "words", None)
    if isinstance(words, dict):
        return {k: str(v) for k, v in words.items()}
    return {"noun": spec.noun, "verb": spec.verb, "adjective": spec.adjective}


def story_messages(spec) -> list[dict]:
    return [{"role": "user", "content": spec.render()}]


def summary_messages(story_text: str) -> list[dict]:
    return [{"role": "user", "content": SUMMARY_PROMPT.format(story=story_text)}]


def _stem(out_path: Path) -> str:
    return out_path.name[: -len(".jsonl")] if out_path.name.endswith(".jsonl") else out_path.name


def default_rejects_path(out_path: Path) -> Path:
    return out_path.with_name(_stem(out_path) + ".rejects.jsonl")


@contextlib.contextmanager
def _exclusive(out_path: Path) -> Iterator[None]:
    """Refuse to run two generations into the same file at once (that would break exactly-once).
    The kernel drops the lock when a process dies, so a killed run never blocks the next one."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no locking
        yield
        return
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with open(out_path.with_name(out_path.name + ".lock"), "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"another generation run is writing {out_path}") from None
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@dataclass
class _Run:
    """One generation run's working state: files, what is left to do, the validator, the report."""

    specs: list
    config: LLMConfig
    out_path: Path
    rejects_path: Path
    validator: StoryValidator
    report: GenerationReport
    with_summary: bool
    pending: list = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    t0: float = field(default_factory=time.monotonic)

    def story(self, spec, text: str, summary: str | None = None) -> Story:
        return Story(
            id=spec.id, text=text, source=self.config.model, prompt=spec.render(), words=_spec_words(spec),
            features=list(getattr(spec, "features", []) or []), summary=summary,
        )

    def validate(self, spec, text: str, rejects: JsonlAppender) -> Story | None:
        """The Story if valid (and remembered for duplicate checks), else None after filing the reject.
        Synchronous, so concurrent workers cannot both accept two copies of one story."""
        story = self.story(spec, text.strip())
        problem = self.validator.check(story.text, story.words)
        if problem is not None:
            reason, detail = problem
            rejects.write({**vars(story), "reject_reason": reason, "reject_detail": detail})
            self.report.add_rejection(reason)
            return None
        self.validator.add(story.id, story.text)
        return story

    def fail(self, story_id: str, error: BaseException, prefix: str = "") -> None:
        self.report.add_failure(story_id, prefix + describe_error(error), error_detail(error, self.config))

    def fail_in_batch(self, story_id: str, error: str, prefix: str = "") -> None:
        # Batch errors read "http_500: ..." or "no result in batch ...": group by their first part.
        reason = "missing_from_batch" if error.startswith("no result") else error.split(":")[0].strip()
        self.report.add_failure(story_id, prefix + (reason or "batch_error"), error_detail(error, self.config))

    def accept(self, story: Story, out: JsonlAppender) -> None:
        out.write(vars(story))  # its fields as they are: json reads them (asdict would deep-copy each)
        self.report.written += 1


def _prepare(
    specs: Sequence, config: LLMConfig, out_path, rejects_path, validator, *, with_summary: bool,
    retry_rejected: bool, mode: str, budget_usd: float | None, before_plan: Callable[[_Run, set, set], None] | None = None,
) -> _Run:
    """Repair torn tails, load what is already done, and work out what is left. `before_plan(run, written,
    rejected)` may add finished work (a sharded run's leftover shards) before what is left is worked out."""
    out_path = Path(out_path)
    rejects_path = Path(rejects_path) if rejects_path is not None else default_rejects_path(out_path)
    validator = validator if validator is not None else StoryValidator()
    report = GenerationReport(
        model=config.model, out_path=str(out_path), rejects_path=str(rejects_path), mode=mode,
        requested=len(specs), budget_usd=budget_usd,
    )
    run = _Run(list(specs), config, out_path, rejects_path, validator, report, with_summary)
    repair_jsonl_tail(out_path)
    repair_jsonl_tail(rejects_path)
    written: set[str] = set()
    for rec in read_jsonl_records(out_path):
        if "id" in rec and "text" in rec and rec["id"] not in written:
            written.add(rec["id"])
            validator.add(rec["id"], rec["text"])
    rejected = {rec["id"] for rec in read_jsonl_records(rejects_path) if "id" in rec}
    if before_plan is not None:
        before_plan(run, written, rejected)
    done = written if retry_rejected else written | rejected
    seen: set[str] = set()
    for spec in specs:
        if spec.id in done or spec.id in seen:
            report.skipped_existing += 1
        else:
            seen.add(spec.id)
            run.pending.append(spec)
    report.estimated_cost_usd = round(_estimate(run.pending, config, with_summary, batch=mode == "batch"), 6)
    log.info(
        "%s: %d to generate (%d already done), estimated $%.4f",
        out_path, len(run.pending), report.skipped_existing, report.estimated_cost_usd,
    )
    return run


def estimate_remaining_cost(
    specs: Sequence, config: LLMConfig, out_path, *, with_summary: bool = False, batch: bool = False,
    rejects_path=None,
) -> tuple[int, int, float]:
    """(to generate, already done, estimated USD) for `generate_stories(specs, config, out_path, ...)`,
    before running it: the ids already written or rejected in its files are not paid for again. Input
    tokens are estimated from each prompt's characters; output tokens from `max_tokens`, else
    `est_output_tokens`."""
    out_path = Path(out_path)
    rejects_path = Path(rejects_path) if rejects_path is not None else default_rejects_path(out_path)
    done = {rec["id"] for path in (out_path, rejects_path) for rec in read_jsonl_records(path) if "id" in rec}
    pending = list({s.id: s for s in specs if s.id not in done}.values())
    return len(pending), len(specs) - len(pending), _estimate(pending, config, with_summary, batch=batch)


def _estimate(pending: Sequence, config: LLMConfig, with_summary: bool, *, batch: bool) -> float:
    if not pending:
        return 0.0
    n_in = sum(estimate_message_tokens(story_messages(s)) for s in pending) / len(pending)
    cost = config.estimate_cost(len(pending), n_in, batch=batch)
    if with_summary:  # the summary call reads the story back
        out = config.default_output_tokens
        cost += config.estimate_cost(len(pending), out + 40, min(out, SUMMARY_MAX_TOKENS), batch=batch)
    return cost


def _progress(total: int, enabled: bool):
    if not enabled or total == 0:
        return None
    try:
        from .progress import bar
    except ImportError:  # pragma: no cover
        return None
    return bar(total=total, desc="generating", unit="story")


# ------------------------------------------------------------------------------------ online


async def agenerate_stories(
    specs: Sequence,
    config: LLMConfig,
    out_path: str | Path,
    *,
    budget_usd: float | None = None,
    progress: bool = True,
    with_summary: bool = False,
    validator: StoryValidator | None = None,
    rejects_path: str | Path | None = None,
    retry_rejected: bool = False,
) -> GenerationReport:
    """Async form of `generate_stories` (await it from a notebook cell or your own event loop)."""
    out_path = Path(out_path)
    with _exclusive(out_path):
        run = _prepare(
            specs, config, out_path, rejects_path, validator, with_summary=with_summary,
            retry_rejected=retry_rejected, mode="online", budget_usd=budget_usd,
        )
        bar = _progress(len(run.pending), progress)
        client = LLMClient(config, budget_usd=budget_usd, usage=run.usage)
        try:
            async with client:
                with JsonlAppender(run.out_path) as out, JsonlAppender(run.rejects_path) as rejects:
                    checks = _DeferredChecks(run, out, rejects, bar)

                    async def one(spec) -> None:
                        checks.raise_first_error()
                        if run.with_summary:  # the summary call needs the checked story first
                            await _generate_with_summary(run, client, spec, out, rejects)
                            if bar is not None:
                                bar.update(1)
                            return
                        text = await _fetch_story(run, client, spec)
                        checks.defer(spec, text)

                    try:
                        await map_concurrently(run.pending, one, config.max_concurrency)
                    finally:
                        checks.drain()  # replies already paid for are checked and kept, even when interrupted
                    checks.raise_first_error()
        finally:
            if bar is not None:
                bar.close()
    return run.report.finish(run.usage, run.t0)


class _DeferredChecks:
    """Validation and writing of replies, run just after the worker that received a reply has sent its
    next request. Replies arrive in bursts; checking each one (~0.4 ms) before the next request goes out
    would delay every request behind it in the burst. Checks still run one at a time, in arrival order, on
    the event loop (so two copies of a story cannot both be accepted); `drain` finishes any left over."""

    def __init__(self, run: _Run, out: JsonlAppender, rejects: JsonlAppender, bar):
        self.run, self.out, self.rejects, self.bar = run, out, rejects, bar
        self.queue: collections.deque = collections.deque()
        self.errors: list[BaseException] = []
        self.closed = False  # after `drain`: the files are about to close

    def defer(self, spec, text: str | None) -> None:
        if text is None:  # failed or over budget: already counted
            if self.bar is not None:
                self.bar.update(1)
            return
        self.queue.append((spec, text))
        asyncio.get_running_loop().call_soon(self._check_one)

    def _check_one(self) -> None:
        if not self.queue or self.errors or self.closed:  # drained, or stopped by an error
            return
        spec, text = self.queue.popleft()
        try:
            story = self.run.validate(spec, text, self.rejects)
            if story is not None:
                self.run.accept(story, self.out)
        except Exception as e:  # e.g. a full disk: stop the run (the workers re-raise it) rather than lose it
            self.errors.append(e)
        if self.bar is not None:
            self.bar.update(1)

    def drain(self) -> None:
        """Check what is queued (unless a check failed: those replies are retried by the next run)."""
        while self.queue and not self.errors:
            self._check_one()
        self.closed = True

    def raise_first_error(self) -> None:
        if self.errors:
            raise self.errors[0]


async def _fetch_story(run: _Run, client: LLMClient, spec) -> str | None:
    """The reply's text, or None after counting the failure (or the budget stop)."""
    try:
        return (await client.chat(story_messages(spec))).text
    except BudgetExceeded:
        run.report.not_attempted += 1
    except Exception as e:  # the run goes on; the id is retried next time
        run.fail(spec.id, e)
    return None


async def _generate_with_summary(run: _Run, client: LLMClient, spec, out: JsonlAppender, rejects: JsonlAppender):
    """A story, checked, then its one-line summary (a second call), then the record: in that order, since
    the summary is asked of the checked story."""
    text = await _fetch_story(run, client, spec)
    if text is None:
        return
    story = run.validate(spec, text, rejects)
    if story is None:
        return
    try:
        story.summary = (await client.chat(summary_messages(story.text), max_tokens=SUMMARY_MAX_TOKENS)).text.strip()
    except BudgetExceeded:
        run.report.not_attempted += 1
        return
    except Exception as e:  # story not written: the next run generates it again, with its summary
        run.fail(spec.id, e, prefix="summary:")
        return
    run.accept(story, out)


def generate_stories(
    specs: Sequence,
    config: LLMConfig,
    out_path: str | Path,
    *,
    budget_usd: float | None = None,
    progress: bool = True,
    with_summary: bool = False,
    validator: StoryValidator | None = None,
    rejects_path: str | Path | None = None,
    retry_rejected: bool = False,
    processes: int = 1,
) -> GenerationReport:
    """Generate one story per spec with `config`'s model into the append-only JSONL `out_path`.

    Resumable and exactly-once: ids already in `out_path` (or in the rejects file, unless
    `retry_rejected`) are skipped, so rerunning after a kill finishes the job. Invalid stories go to
    `rejects_path` (default `<out>.rejects.jsonl`) with their reason. `budget_usd` caps the spend;
    `with_summary` adds a one-sentence summary per story (TinyStories-Instruct). `processes` > 1 shares
    the requests among that many client processes (see `_generate_sharded`), for endpoints fast
    enough that one event loop's CPU limits the rate. Works in scripts and in Jupyter."""
    if processes > 1:
        return _generate_sharded(
            specs, config, out_path, processes, budget_usd=budget_usd, progress=progress,
            with_summary=with_summary, validator=validator, rejects_path=rejects_path, retry_rejected=retry_rejected,
        )
    return run_async(
        agenerate_stories(
            specs, config, out_path, budget_usd=budget_usd, progress=progress, with_summary=with_summary,
            validator=validator, rejects_path=rejects_path, retry_rejected=retry_rejected,
        )
    )


# ------------------------------------------------------------------------------------ several processes


def shard_paths(out_path: Path, k: int) -> Path:
    """Where client process k of a sharded run writes its stories (its rejects go beside, by the usual
    `default_rejects_path` rule)."""
    return out_path.with_name(f"{_stem(out_path)}.shard-{k}.jsonl")


def _shard_files(out_path: Path) -> list[Path]:
    return sorted(p for p in out_path.parent.glob(f"{_stem(out_path)}.shard-*.jsonl")
                  if not p.name.endswith(".rejects.jsonl"))


class _ShardMerger:
    """Folds the shard files of client processes into the run's own output, one complete line at a
    time (a line still being written waits for the next poll). Stories go through the duplicate checks of
    the run's one validator, so copies made in different processes are caught as in a single process.
    Ids already in the output (or, for rejects, in either file) are skipped: merging the same shard again
    after a kill adds nothing."""

    def __init__(self, run: _Run, written: set, rejected: set, out: JsonlAppender, rejects: JsonlAppender):
        self.run, self.written, self.rejected, self.out, self.rejects = run, written, rejected, out, rejects
        self.offsets: dict[Path, int] = {}

    def _new_records(self, path: Path) -> list[dict]:
        if not path.exists():
            return []
        with open(path, "rb") as f:
            f.seek(self.offsets.get(path, 0))
            chunk = f.read()
        end = chunk.rfind(b"\n") + 1
        self.offsets[path] = self.offsets.get(path, 0) + end
        return [json.loads(line) for line in chunk[:end].splitlines() if line.strip()]

    def poll(self, shard: Path, count: bool = True) -> int:
        """Merge what `shard` (and its rejects file) gained since the last poll; returns how many records
        were handled. `count`: add them to this run's report (not for a previous run's leftovers)."""
        run, n = self.run, 0
        for rec in self._new_records(default_rejects_path(shard)):
            n += 1
            if rec["id"] not in self.written and rec["id"] not in self.rejected:
                self.rejects.write(rec)
                self.rejected.add(rec["id"])
        for rec in self._new_records(shard):
            n += 1
            if rec["id"] in self.written:
                continue
            problem = run.validator.check_duplicate(rec["text"])
            if problem is None:
                run.validator.add(rec["id"], rec["text"])
                self.out.write(rec)
                self.written.add(rec["id"])
                run.report.written += int(count)
            else:
                self.rejects.write({**rec, "reject_reason": problem[0], "reject_detail": problem[1]})
                self.rejected.add(rec["id"])
                if count:
                    run.report.add_rejection(problem[0])
        return n

    def finish(self, shard: Path) -> None:
        """Remove a shard once all of it is merged and the merged lines are on disk."""
        self.out.sync()
        self.rejects.sync()
        for path in (default_rejects_path(shard), shard, shard.with_name(shard.name + ".lock")):
            path.unlink(missing_ok=True)
        self.offsets.pop(shard, None)
        self.offsets.pop(default_rejects_path(shard), None)


def _die_with_parent() -> None:
    """Pool initializer: on Linux, ask the kernel to kill this worker when its parent dies, so a killed
    run leaves no orphan still writing (and locking) its shard."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - not Linux/glibc
        pass


def _shard_worker(specs, config, out_path, budget_usd, with_summary, validator) -> GenerationReport:
    return generate_stories(specs, config, out_path, budget_usd=budget_usd, progress=False,
                            with_summary=with_summary, validator=validator, retry_rejected=True)


def _generate_sharded(
    specs, config: LLMConfig, out_path, processes: int, *, budget_usd, progress, with_summary, validator,
    rejects_path, retry_rejected,
) -> GenerationReport:
    """`generate_stories` with the requests shared among `processes` client processes (spawned), each
    with its share of `max_concurrency` and of the budget, writing its own append-only shard file
    (`<out>.shard-K.jsonl`). This process merges the shards into `out_path` as they grow and runs the
    duplicate checks across all of them; each story is checked for everything else where it was made.
    A kill at any moment leaves shards that the next run merges first: every story still ends up exactly
    once. The validator must be picklable (its `forms` a module-level function)."""
    import multiprocessing
    import pickle

    out_path = Path(out_path)
    validator = validator if validator is not None else StoryValidator()
    local = dataclasses.replace(validator, near_dup_threshold=None)  # duplicates are checked here, across shards
    try:
        pickle.dumps(local)
    except Exception as e:
        raise TypeError(f"processes > 1 sends the validator to each process, but it cannot be pickled ({e}); "
                        "give it a module-level `forms` function, or use processes=1") from None
    with _exclusive(out_path):
        rejects_path = Path(rejects_path) if rejects_path is not None else default_rejects_path(out_path)
        with JsonlAppender(out_path) as out, JsonlAppender(rejects_path) as rejects:
            merger = None

            def merge_leftovers(run: _Run, written: set, rejected: set) -> None:
                nonlocal merger
                merger = _ShardMerger(run, written, rejected, out, rejects)
                for shard in _shard_files(out_path):  # a killed sharded run's work, finished but not merged
                    merger.poll(shard, count=False)
                    merger.finish(shard)

            run = _prepare(
                specs, config, out_path, rejects_path, validator, with_summary=with_summary,
                retry_rejected=retry_rejected, mode="online", budget_usd=budget_usd, before_plan=merge_leftovers,
            )
            n = max(1, min(processes, len(run.pending)))
            shards = [shard_paths(out_path, k) for k in range(n)]
            usage = Usage()
            bar = _progress(len(run.pending), progress)
            ctx = multiprocessing.get_context("spawn")  # safe beside threads (Jupyter, torch)
            try:
                with ctx.Pool(n, initializer=_die_with_parent) as pool:  # an exception here terminates them
                    jobs = [
                        pool.apply_async(_shard_worker, (
                            run.pending[k::n],
                            dataclasses.replace(config, max_concurrency=max(1, (config.max_concurrency + k) // n)),
                            str(shards[k]), None if budget_usd is None else budget_usd / n, with_summary, local,
                        ))
                        for k in range(n)
                    ]
                    while True:
                        finished = all(j.ready() for j in jobs)  # before the poll: nothing is left behind
                        moved = sum(merger.poll(shard) for shard in shards)
                        if bar is not None and moved:
                            bar.update(moved)
                        if finished:
                            break
                        time.sleep(0.05)
                    reports = [j.get() for j in jobs]  # a worker's exception is raised here
            finally:
                if bar is not None:
                    bar.close()
            for shard in shards:
                merger.finish(shard)
    report = run.report
    for r in reports:
        for reason, k in r.rejected.items():
            report.rejected[reason] = report.rejected.get(reason, 0) + k
        for reason, k in r.failed.items():
            report.failed[reason] = report.failed.get(reason, 0) + k
        report.failure_examples.extend(r.failure_examples[: _MAX_FAILURE_EXAMPLES - len(report.failure_examples)])
        report.not_attempted += r.not_attempted
        usage.requests += r.requests
        usage.retries += r.retries
        usage.prompt_tokens += r.prompt_tokens
        usage.completion_tokens += r.completion_tokens
        usage.cost_usd += r.cost_usd
    return report.finish(usage, run.t0)


# ------------------------------------------------------------------------------------ Batch API


def _batch_state_path(out_path: Path, round_name: str) -> Path:
    return out_path.with_name(f"{out_path.name}.batch-{round_name}.json")


async def agenerate_stories_batch(
    specs: Sequence,
    config: LLMConfig,
    out_path: str | Path,
    *,
    budget_usd: float | None = None,
    with_summary: bool = False,
    poll_s: float = 30.0,
    max_wait_s: float | None = None,
    validator: StoryValidator | None = None,
    rejects_path: str | Path | None = None,
    retry_rejected: bool = False,
) -> GenerationReport:
    """Async form of `generate_stories_batch`."""
    out_path = Path(out_path)
    with _exclusive(out_path):
        run = _prepare(
            specs, config, out_path, rejects_path, validator, with_summary=with_summary,
            retry_rejected=retry_rejected, mode="batch", budget_usd=budget_usd,
        )
        states = [_batch_state_path(out_path, "stories"), _batch_state_path(out_path, "summaries")]
        try:
            merged = await _batch_rounds(run, states, budget_usd, poll_s, max_wait_s)
        except BatchPending as e:
            log.info("%s", e)
            run.report.status = "pending"
            run.report.batch_ids.append(e.batch_id)
            merged = False
        if merged:  # every result is in the files: the recorded batches are spent
            for state in states:
                forget_batch(state)
    return run.report.finish(run.usage, run.t0)


async def _batch_rounds(run: _Run, states: list[Path], budget_usd, poll_s, max_wait_s) -> bool:
    """Round 1: stories; round 2 (with_summary): summaries of the valid ones. Valid stories are
    written only after the last round, so a kill in between resumes from the recorded batches.
    Returns False when the budget stopped a round (its state is kept for a rerun)."""
    if not run.pending:
        return True
    by_id = {s.id: s for s in run.pending}
    common = {"poll_s": poll_s, "max_wait_s": max_wait_s, "usage": run.usage}
    try:
        stories_out = await run_batch(
            run.config, {s.id: story_messages(s) for s in run.pending}, state_path=states[0],
            budget_usd=budget_usd, description="tinystories-lab stories", **common,
        )
    except BudgetExceeded as e:
        log.warning("%s", e)
        run.report.not_attempted = len(run.pending)
        return False
    run.report.batch_ids.append(stories_out.batch_id)
    for sid, err in stories_out.errors.items():
        run.fail_in_batch(sid, err)
    with JsonlAppender(run.out_path) as out, JsonlAppender(run.rejects_path) as rejects:
        valid = [
            story
            for sid, reply in stories_out.results.items()
            if (story := run.validate(by_id[sid], reply.text, rejects)) is not None
        ]
        if run.with_summary and valid:
            left = None if budget_usd is None else max(0.0, budget_usd - run.usage.cost_usd)
            try:
                summaries = await run_batch(
                    run.config, {s.id: summary_messages(s.text) for s in valid}, state_path=states[1],
                    budget_usd=left, max_tokens=SUMMARY_MAX_TOKENS, description="tinystories-lab summaries",
                    **common,
                )
            except BudgetExceeded as e:
                log.warning("%s", e)
                run.report.not_attempted = len(valid)
                return False
            run.report.batch_ids.append(summaries.batch_id)
            for sid, err in summaries.errors.items():
                run.fail_in_batch(sid, err, prefix="summary:")
            valid = [s for s in valid if s.id in summaries.results]
            for s in valid:
                s.summary = summaries.results[s.id].text.strip()
        for story in valid:
            run.accept(story, out)
    return True


def generate_stories_batch(
    specs: Sequence,
    config: LLMConfig,
    out_path: str | Path,
    *,
    budget_usd: float | None = None,
    with_summary: bool = False,
    poll_s: float = 30.0,
    max_wait_s: float | None = None,
    validator: StoryValidator | None = None,
    rejects_path: str | Path | None = None,
    retry_rejected: bool = False,
) -> GenerationReport:
    """`generate_stories` through the Batch API (half price on OpenAI, results within 24 h).

    Builds one batch of the ids not yet done, uploads it, polls every `poll_s` seconds, downloads
    the output and error files, validates and appends to the same files as the online path. The
    batch id is saved in `<out>.batch-stories.json`: a run killed (or stopped by `max_wait_s`, which
    returns status "pending") resumes polling that batch when called again with the same specs.
    `budget_usd` is checked against the estimate before submitting."""
    return run_async(
        agenerate_stories_batch(
            specs, config, out_path, budget_usd=budget_usd, with_summary=with_summary, poll_s=poll_s,
            max_wait_s=max_wait_s, validator=validator, rejects_path=rejects_path, retry_rejected=retry_rejected,
        )
    )


def iter_stories(path: str | Path) -> Iterable[Story]:
    """Stories of a generation output file (tolerates a torn last line)."""
    for rec in read_jsonl_records(path):
        yield Story.from_dict(rec)
