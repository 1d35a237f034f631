"""A local, scriptable OpenAI-compatible HTTP server for tests (stdlib only, real sockets).

    with FakeOpenAI(reply=lambda messages: "Once upon a time...") as server:
        cfg = LLMConfig(base_url=server.base_url, model="fake-model")
        ...
        server.chat_requests  # every /chat/completions request: method, path, headers, body, json

Implements POST .../chat/completions (OpenAI and Azure paths), POST /v1/files (multipart upload),
GET /v1/files/{id}[/content], POST /v1/batches, GET /v1/batches (newest first, `limit`/`after` pages) and
GET /v1/batches/{id} (the batch completes after `batch_polls` retrievals; `batch_statuses` sets the final status of the 1st, 2nd... batch created;
`batch_token_limit` refuses a batch, as OpenAI's enqueued-token limit does, when its prompt tokens and
those of the batches still in progress pass the limit; `hold_batches_after` makes POST /v1/batches past
that many hang, creating nothing, so a kill test can stop a client between two submissions, or, with
`hold_after_creating`, hang after creating the batch: a client killed before it learns the batch id).
Behaviour is scriptable per test: a fixed `latency_s`, and a queue of `Fault`s consumed one per chat
request (HTTP errors with Retry-After and a message, delays longer than the client timeout, malformed
bodies); a reply function may return an `Answer` to set its finish_reason; `served_model` is the model
(snapshot) replies name; `refuse_max_tokens` answers a `max_tokens` request with OpenAI's 400. It also
provides deterministic fake "LLMs": `StoryWriter` writes a story that uses the prompt's three words,
`judge_reply` answers the two GPT-Eval turns in a chosen format.
"""

from __future__ import annotations

import email.parser
import email.policy
import itertools
import json
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

Reply = Callable[[list], "str | Answer"]


@dataclass
class Answer:
    """A scripted reply with more than text: a `finish_reason` ("length": cut off at max_tokens)."""

    text: str
    finish_reason: str = "stop"


@dataclass
class Fault:
    """One scripted misbehaviour for the next chat request. `status` answers with that HTTP error
    (with `retry_after` as the Retry-After header, `message` as the error message); `delay_s` sleeps
    first (longer than the client's timeout = a timeout); `body`/`content_type` replace the reply with
    raw bytes (malformed replies)."""

    status: int | None = None
    message: str = "scripted error"
    retry_after: float | None = None
    delay_s: float = 0.0
    body: bytes | None = None
    content_type: str = "application/json"


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict  # lower-cased names
    body: bytes
    json: object = None
    time: float = 0.0


@dataclass
class _Batch:
    id: str
    input_file_id: str
    lines: list
    polls: int = 0
    output_file_id: str | None = None
    error_file_id: str | None = None
    extra: dict = field(default_factory=dict)
    created_at: int = field(default_factory=lambda: int(time.time()))


def _words(text: str) -> int:
    return len(str(text).split())


def chat_completion_json(model: str, text: str | Answer, messages: list) -> dict:
    """A chat completion body; token counts are word counts so tests can compute costs exactly."""
    text, finish_reason = (text.text, text.finish_reason) if isinstance(text, Answer) else (text, "stop")
    prompt_tokens = sum(_words(m.get("content", "")) for m in messages)
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason}
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": _words(text),
            "total_tokens": prompt_tokens + _words(text),
        },
    }


class FakeOpenAI:
    def __init__(
        self,
        reply: Reply | None = None,
        *,
        latency_s: float = 0.0,
        batch_polls: int = 2,
        batch_final_status: str = "completed",
        batch_fail_ids: set | None = None,
        batch_statuses: list | None = None,
        batch_token_limit: int | None = None,
        hold_batches_after: int | None = None,
        hold_after_creating: bool = False,
        served_model: str | None = None,
        refuse_max_tokens: bool = False,
    ):
        self.reply = reply or (lambda messages: "Hello from the fake model.")
        self.latency_s = latency_s
        self.batch_polls = batch_polls
        self.batch_final_status = batch_final_status
        self.batch_fail_ids = set(batch_fail_ids or ())
        self.batch_statuses = list(batch_statuses or ())
        self.batch_token_limit = batch_token_limit
        self.hold_batches_after = hold_batches_after
        self.hold_after_creating = hold_after_creating
        self.served_model = served_model  # the `model` of replies (a snapshot); None: the one asked for
        self.refuse_max_tokens = refuse_max_tokens  # as OpenAI's reasoning models do
        self.batch_held = threading.Event()  # set once a POST /v1/batches hangs
        self.requests: list[Recorded] = []
        self.files: dict[str, dict] = {}
        self.batches: dict[str, _Batch] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self._faults: deque[Fault] = deque()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ids = itertools.count(1)
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> FakeOpenAI:
        server = self

        class Handler(_Handler):
            fake = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._httpd.handle_error = lambda request, client_address: None  # clients that time out
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.daemon = True
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()  # wakes handlers sleeping in a fault delay
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # ------------------------------------------------------------------ scripting & inspection
    def add_faults(self, *faults: Fault) -> None:
        with self._lock:
            self._faults.extend(faults)

    def _next_fault(self) -> Fault | None:
        with self._lock:
            return self._faults.popleft() if self._faults else None

    def new_id(self, prefix: str) -> str:
        with self._lock:
            return f"{prefix}-{next(self._ids)}"

    @property
    def chat_requests(self) -> list[Recorded]:
        return [r for r in list(self.requests) if urlparse(r.path).path.endswith("/chat/completions")]

    def requests_to(self, method: str, prefix: str) -> list[Recorded]:
        return [r for r in list(self.requests) if r.method == method and r.path.startswith(prefix)]

    def record(self, rec: Recorded) -> None:
        with self._lock:
            self.requests.append(rec)

    def enter(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._stop.wait(seconds)

    # ------------------------------------------------------------------ batch processing
    def run_batch_line(self, line: dict) -> dict:
        """The output-file (or error-file) record for one batch input line."""
        cid = line["custom_id"]
        body = line["body"]
        rid = self.new_id("batch_req")
        if cid in self.batch_fail_ids:
            error = {"message": f"scripted failure for {cid}", "code": "server_error"}
            return {"id": rid, "custom_id": cid, "response": {"status_code": 500, "body": {"error": error}}, "error": None}
        completion = chat_completion_json(body["model"], self.reply(body["messages"]), body["messages"])
        return {
            "id": rid,
            "custom_id": cid,
            "response": {"status_code": 200, "request_id": rid, "body": completion},
            "error": None,
        }

    def final_status(self, batch: _Batch) -> str:
        return batch.extra.get("final_status") or self.batch_final_status

    def enqueued_tokens(self, batch: _Batch) -> int:
        """A batch's prompt tokens (word counts, as in the fake's usage)."""
        return sum(_words(m.get("content", "")) for line in batch.lines for m in line["body"]["messages"])

    def finish_batch(self, batch: _Batch) -> None:
        lines = batch.lines
        if self.final_status(batch) == "expired":
            lines = lines[: len(lines) // 2]  # an expired batch returns what it got done
        if self.final_status(batch) in ("completed", "expired"):
            records = [self.run_batch_line(line) for line in lines]
            ok = [r for r in records if r["response"]["status_code"] == 200]
            bad = [r for r in records if r["response"]["status_code"] != 200]
            batch.output_file_id = self.store_file(ok, "batch_output")
            batch.error_file_id = self.store_file(bad, "batch_error") if bad else None

    def store_file(self, records: list, purpose: str) -> str:
        fid = self.new_id("file")
        data = "".join(json.dumps(r) + "\n" for r in records).encode()
        self.files[fid] = {"id": fid, "filename": f"{fid}.jsonl", "purpose": purpose, "data": data}
        return fid

    def batch_json(self, batch: _Batch) -> dict:
        refused = batch.extra.get("refused")
        done = batch.polls >= self.batch_polls or refused
        status = "failed" if refused else self.final_status(batch) if done else "in_progress"
        if done and batch.output_file_id is None and status in ("completed", "expired"):
            self.finish_batch(batch)
        errors = None
        if refused:  # OpenAI's wording, with a fake organization
            message = (
                f"Enqueued token limit reached for {batch.lines[0]['body']['model']} in organization org-fake. "
                f"Limit: {self.batch_token_limit:,} enqueued tokens. Please try again once some in_progress "
                "batches have been completed."
            )
            error = {"code": "token_limit_exceeded", "message": message, "param": None, "line": None}
            errors = {"object": "list", "data": [error]}
        return {
            "id": batch.id,
            "object": "batch",
            "endpoint": "/v1/chat/completions",
            "errors": errors,
            "input_file_id": batch.input_file_id,
            "completion_window": "24h",
            "status": status,
            "output_file_id": batch.output_file_id if done else None,
            "error_file_id": batch.error_file_id if done else None,
            "created_at": batch.created_at,
            "request_counts": {"total": len(batch.lines), "completed": 0, "failed": 0},
            "metadata": batch.extra.get("metadata"),
        }


def _parse_multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """Fields of a multipart/form-data body: name -> (filename, bytes)."""
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
    )
    out = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        out[name] = (part.get_filename(), part.get_payload(decode=True))
    return out


class _Handler(BaseHTTPRequestHandler):
    fake: FakeOpenAI
    protocol_version = "HTTP/1.1"  # keep-alive, as the openai client expects

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def _read(self) -> Recorded:
        n = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(n) if n else b""
        parsed = None
        if "json" in (self.headers.get("content-type") or ""):
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = None
        rec = Recorded(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body, parsed, time.monotonic())
        self.fake.record(rec)
        return rec

    def _send(self, status: int, body: bytes, content_type: str = "application/json", headers=None) -> None:
        try:
            self.send_response(status)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout test)

    def _json(self, status: int, obj, headers=None) -> None:
        self._send(status, json.dumps(obj).encode(), headers=headers)

    def _error(self, status: int, message: str, headers=None) -> None:
        self._json(status, {"error": {"message": message, "type": "fake_error", "code": str(status)}}, headers)

    def do_POST(self) -> None:
        rec = self._read()
        path = urlparse(self.path).path
        if path.endswith("/chat/completions"):
            self._chat(rec)
        elif path == "/v1/files":
            self._upload(rec)
        elif path == "/v1/batches":
            self._create_batch(rec)
        else:
            self._error(404, f"no route {path}")

    def do_GET(self) -> None:
        self._read()
        parts = urlparse(self.path).path.strip("/").split("/")
        fake = self.fake
        if parts == ["v1", "batches"]:
            self._list_batches()
        elif parts[:2] == ["v1", "batches"] and len(parts) == 3 and parts[2] in fake.batches:
            batch = fake.batches[parts[2]]
            batch.polls += 1
            self._json(200, fake.batch_json(batch))
        elif parts[:2] == ["v1", "files"] and len(parts) >= 3 and parts[2] in fake.files:
            f = fake.files[parts[2]]
            if parts[3:] == ["content"]:
                self._send(200, f["data"], "application/octet-stream")
            else:
                self._json(200, _file_json(f))
        else:
            self._error(404, f"no route {self.path}")

    def _chat(self, rec: Recorded) -> None:
        fake = self.fake
        fake.enter()
        try:
            fault = fake._next_fault()
            fake.sleep(fake.latency_s + (fault.delay_s if fault else 0.0))
            if fault and fault.status:
                headers = {"retry-after": str(fault.retry_after)} if fault.retry_after is not None else None
                self._error(fault.status, fault.message, headers)
                return
            if fault and fault.body is not None:
                self._send(200, fault.body, fault.content_type)
                return
            if fake.refuse_max_tokens and "max_tokens" in rec.json:  # OpenAI's words and fields
                message = ("Unsupported parameter: 'max_tokens' is not supported with this model. "
                           "Use 'max_completion_tokens' instead.")
                error = {"message": message, "type": "invalid_request_error", "param": "max_tokens",
                         "code": "unsupported_parameter"}
                self._json(400, {"error": error})
                return
            messages = rec.json["messages"]
            text = fake.reply(messages)
            self._json(200, chat_completion_json(fake.served_model or rec.json["model"], text, messages))
        finally:
            fake.leave()

    def _upload(self, rec: Recorded) -> None:
        form = _parse_multipart(self.headers["content-type"], rec.body)
        filename, data = form["file"]
        purpose = form["purpose"][1].decode()
        fid = self.fake.new_id("file")
        self.fake.files[fid] = {"id": fid, "filename": filename, "purpose": purpose, "data": data,
                                "created_at": int(time.time())}
        self._json(200, _file_json(self.fake.files[fid]))

    def _create_batch(self, rec: Recorded) -> None:
        fake = self.fake
        body = rec.json
        f = fake.files.get(body["input_file_id"])
        if f is None:
            self._error(404, "input file not found")
            return
        hold = fake.hold_batches_after is not None and len(fake.batches) >= fake.hold_batches_after
        if hold and not fake.hold_after_creating:
            fake.batch_held.set()
            fake._stop.wait()  # until the server closes; the client is killed meanwhile
            return
        lines = [json.loads(line) for line in f["data"].decode().splitlines() if line.strip()]
        batch = _Batch(fake.new_id("batch"), f["id"], lines, extra={"metadata": body.get("metadata")})
        n = len(fake.batches)
        if n < len(fake.batch_statuses):
            batch.extra["final_status"] = fake.batch_statuses[n]
        if fake.batch_token_limit is not None:
            running = [b for b in fake.batches.values() if not b.extra.get("refused") and b.polls < fake.batch_polls]
            batch.extra["refused"] = sum(map(fake.enqueued_tokens, running + [batch])) > fake.batch_token_limit
        fake.batches[batch.id] = batch
        if hold:  # created, but the client never hears of it
            fake.batch_held.set()
            fake._stop.wait()
            return
        self._json(200, fake.batch_json(batch))

    def _list_batches(self) -> None:
        query = parse_qs(urlparse(self.path).query)
        newest_first = list(reversed(self.fake.batches.values()))
        after = query.get("after", [None])[0]
        if after is not None:
            newest_first = newest_first[[b.id for b in newest_first].index(after) + 1:]
        limit = int(query.get("limit", ["20"])[0])
        page = [self.fake.batch_json(b) for b in newest_first[:limit]]
        self._json(200, {"object": "list", "data": page, "has_more": len(newest_first) > limit,
                         "first_id": page[0]["id"] if page else None, "last_id": page[-1]["id"] if page else None})


def _file_json(f: dict) -> dict:
    return {
        "id": f["id"],
        "object": "file",
        "bytes": len(f["data"]),
        "created_at": f.get("created_at", int(time.time())),
        "filename": f["filename"],
        "purpose": f["purpose"],
        "status": "processed",
    }


# ---------------------------------------------------------------------------- fake "LLMs" and specs


@dataclass
class SimpleSpec:
    """Stands in for `tinystories_lib.stories.prompts.PromptSpec` (same attributes) so these tests do not
    depend on the prompt module's wording."""

    id: str
    noun: str
    verb: str
    adjective: str
    features: list = field(default_factory=list)

    @property
    def words(self) -> dict:
        return {"noun": self.noun, "verb": self.verb, "adjective": self.adjective}

    def render(self) -> str:
        return (
            f'Write a short story using the verb "{self.verb}", the noun "{self.noun}" and the '
            f'adjective "{self.adjective}". Prompt id {self.id}.'
        )


_NOUNS = ["ball", "tree", "dog", "cat", "boat", "cake", "hat", "box", "bird", "car", "fish", "toy"]
_VERBS = ["jump", "run", "play", "sing", "hug", "dance", "swim", "climb", "kick", "paint", "build", "find"]
_ADJS = ["happy", "big", "red", "soft", "tiny", "shiny", "brave", "kind", "funny", "warm", "quiet", "sad"]
_FILLER = (
    "the a and then they she he it was in on with to of little mom dad friend park sun day home "
    "went saw said look see good very all time one two many sky water grass house door window flower "
    "garden hill road river rain wind snow light night moon star cloud tree leaf rock sand shell "
    "apple bread milk cup plate spoon chair bed blanket pillow book page story song game smile laugh "
    "cry shout call walk stop wait help share give take make bring open close pull push hold carry "
    "green blue yellow pink fast slow loud small tall short old new clean dirty hot cold wet dry"
).split()


def make_specs(n: int, prefix: str = "p") -> list[SimpleSpec]:
    return [
        SimpleSpec(
            f"{prefix}{i:04d}", _NOUNS[i % 12], _VERBS[(i // 12) % 12], _ADJS[(i // 144 + i) % 12],
            ["dialogue"] if i % 3 == 0 else [],
        )
        for i in range(n)
    ]


def random_story(seed: str, words: tuple = (), n_words: int = 90) -> str:
    """A pseudo-random story (so no two are near-duplicates) that uses `words`."""
    rng = random.Random(seed)
    tokens = [rng.choice(_FILLER) for _ in range(n_words)]
    for i, w in enumerate(words):
        tokens[5 + i * 20] = w
    sentences = [" ".join(tokens[i : i + 9]).capitalize() + "." for i in range(0, n_words, 9)]
    return " ".join(sentences)


class StoryWriter:
    """A fake story LLM: for a known prompt it writes a story using that spec's words; for a summary
    request it writes one line. `overrides` maps a spec id to a fixed reply (refusals, copies...)."""

    def __init__(self, specs, overrides: dict | None = None):
        self.by_prompt = {s.render(): s for s in specs}
        self.overrides = overrides or {}

    def __call__(self, messages: list) -> str:
        content = messages[-1]["content"]
        spec = self.by_prompt.get(content)
        if spec is None:
            return "A child has a small adventure and learns something."
        if spec.id in self.overrides:
            return self.overrides[spec.id]
        forms = (spec.noun + "s", spec.verb + "ed", spec.adjective)  # inflected on purpose
        return random_story(spec.id, forms)


JUDGE_ASSESSMENT = "The student's completion is grammatically correct and consistent with the beginning."

GRADE_FORMATS = {
    "plain": "Grammar: 8/10\nCreativity: 7/10\nConsistency: 9/10\nPlot: 6/10\nAge group: B",
    "markdown": (
        "Here are my grades:\n\n1. **Grammar**: 8\n2. **Creativity**: 7 out of 10\n"
        "3. **Consistency**: 9/10\n4. **Plot**: 6/10\n\n**Age group**: B (4-5)"
    ),
    "json": '```json\n{"grammar": 8, "creativity": "7/10", "consistency": 9, "plot": 6, "age_group": "B: 4-5"}\n```',
    "prose": (
        "grammar - 8\ncreativity - 7\nconsistency with the story's beginning - 9\n"
        "whether the plot makes sense - 6\nI would guess the age group is B: 4-5."
    ),
}


def judge_reply(fmt: str = "plain", *, instruction_score: str = "", unparseable: bool = False) -> Reply:
    """A fake judge: turn 1 gets an assessment, turn 2 (and a format reminder) a grade in `fmt`."""

    def reply(messages: list) -> str:
        if len(messages) == 1:
            return JUDGE_ASSESSMENT
        if unparseable:
            return "I really enjoyed this story, it was lovely."
        return GRADE_FORMATS[fmt] + instruction_score

    return reply


def varying_judge_reply(spread: int = 2, *, unparseable_for: str | None = None, ages: str = "BC") -> Reply:
    """A fake judge whose grades vary from one conversation to the next, as a sampled judge's do: turn 2's
    n-th reply grades grammar 6 + n % (spread + 1), creativity 7 - n % 2, consistency 9 and plot 5 + n % 3,
    age group ages[n % len(ages)]. A story containing `unparseable_for` gets an unreadable grade every time."""
    counter = itertools.count()
    lock = threading.Lock()

    def reply(messages: list) -> str:
        if len(messages) == 1:
            return JUDGE_ASSESSMENT
        if unparseable_for is not None and unparseable_for in messages[0]["content"]:
            return "I really enjoyed this story, it was lovely."
        with lock:
            n = next(counter)
        return (f"Grammar: {6 + n % (spread + 1)}/10\nCreativity: {7 - n % 2}/10\nConsistency: 9/10\n"
                f"Plot: {5 + n % 3}/10\nAge group: {ages[n % len(ages)]}")

    return reply
