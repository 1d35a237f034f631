"""A local stand-in for the Hugging Face hub, for the real `huggingface_hub` and `datasets` clients.

It serves the files it is given, keyed `{repo}/resolve/{revision}/{filename}` (datasets under
`datasets/...`), and answers what those clients ask of the hub:

  * HEAD/GET `/{repo}/resolve/{rev}/{file}`: the file, with the headers the client reads (X-Repo-Commit,
    ETag, Content-Length); a Range request is answered 206, as streaming reads need;
  * GET `/api/{type}s/{repo}` and `.../revision/{rev}`: repo info (sha, siblings);
  * GET `/api/{type}s/{repo}/tree/{rev}[/{dir}]`: the file listing (`recursive` or not);
  * POST `/api/{type}s/{repo}/paths-info/{rev}`: the entries of the given paths.

A revision may be named or given as its commit sha (`commit_sha`). Anything else is a 404 carrying the
hub's X-Error-Code (RepoNotFound, RevisionNotFound, EntryNotFound), so the client falls back as it would
on the real hub. `errors[repo] = 401 | 403 | 404` makes a repo answer that status as a gated (401/403)
or missing (404) repo does; `(status, None)` sends it without the X-Error-Code. `log` records every
request, with its Range header and the body bytes the client took. The hub client reads HF_ENDPOINT
when it is imported, so code using it runs in a child process: `run_python(code, hub, ...)`.

    with FakeHub({"EleutherAI/gpt-neo-125M/resolve/main/vocab.json": b"..."}) as hub:
        out = run_python("...", hub, hf_home=tmp_path / "hf")
    with FakeHub(tinystories_files(train, valid)) as hub: ...   # for datasets.load_dataset
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import re
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

_TYPE_PREFIX = {"datasets": "dataset", "spaces": "space"}
_GATED = {
    401: "Access to {type} {repo} is restricted. You must have access to it and be authenticated to access it. "
    "Please log in.",
    403: "Access to {type} {repo} is restricted and you are not in the authorized list.",
}


def dataset_files(repo: str, files: dict[str, bytes], revision: str = "main") -> dict[str, bytes]:
    """`FakeHub` keys for the files of a dataset repo at a revision: {"name.txt": b"..."} -> {key: bytes}."""
    return {f"datasets/{repo}/resolve/{revision}/{name}": data for name, data in files.items()}


def commit_sha(repo: str, revision: str) -> str:
    """The commit a revision name stands for on the fake hub (a sha stands for itself)."""
    if re.fullmatch(r"[0-9a-f]{40}", revision):
        return revision
    return hashlib.sha1(f"{repo}@{revision}".encode()).hexdigest()


@dataclass
class _Repo:
    kind: str  # "model", "dataset" or "space"
    id: str
    revisions: dict[str, dict[str, bytes]] = field(default_factory=dict)  # revision name -> {filename: bytes}

    def revision(self, rev: str) -> dict[str, bytes] | None:
        for name, files in self.revisions.items():
            if rev in (name, commit_sha(self.id, name)):
                return files
        return None

    def sha(self, rev: str) -> str:
        return commit_sha(self.id, rev)


def _split_key(key: str) -> tuple[str, str, str, str]:
    """`datasets/a/b/resolve/main/dir/f.txt` -> ("dataset", "a/b", "main", "dir/f.txt")."""
    left, right = key.strip("/").split("/resolve/", 1)
    first, _, rest = left.partition("/")
    kind, repo = (_TYPE_PREFIX[first], rest) if first in _TYPE_PREFIX else ("model", left)
    rev, _, filename = right.partition("/")
    return kind, repo, rev, filename


def _entry(path: str, data: bytes) -> dict:
    return {"type": "file", "path": path, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}


class FakeHub:
    def __init__(self, files: dict[str, bytes], errors: dict[str, int | tuple[int, str | None]] | None = None):
        self.files = {"/" + k.lstrip("/"): v for k, v in files.items()}
        # repo id -> the status every request about it gets, or (status, X-Error-Code or None)
        self.errors = dict(errors or {})
        self.requests: list[tuple[str, str]] = []  # (method, decoded path)
        self.log: list[dict] = []  # every request: method, path, query, range, status, bytes (body sent)
        self.repos: dict[tuple[str, str], _Repo] = {}
        for key, data in self.files.items():
            kind, repo, rev, filename = _split_key(key)
            self.repos.setdefault((kind, repo), _Repo(kind, repo)).revisions.setdefault(rev, {})[filename] = data

    def __enter__(self) -> FakeHub:
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 10  # an idle keep-alive connection ends, so closing the server never waits long

            def _send(self, status: int, body: bytes = b"", headers: dict | None = None, send_body: bool = True):
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                if "Content-Length" not in (headers or {}):
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                sent = 0
                try:
                    # In chunks, counting what the client took: a streaming reader hangs up early.
                    while send_body and sent < len(body):
                        sent += self.wfile.write(body[sent:sent + 65536])
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True
                self.entry.update(status=status, bytes=sent)

            def _json(self, obj, headers: dict | None = None):
                self._send(200, json.dumps(obj).encode(), {"Content-Type": "application/json", **(headers or {})})

            def _error(self, status: int, code: str | None, message: str, send_body: bool = True):
                headers = {"Content-Type": "application/json", "X-Error-Message": message}
                if code:
                    headers["X-Error-Code"] = code
                self._send(status, json.dumps({"error": message}).encode(), headers, send_body)

            def _handle(self, send_body: bool):
                url = urlsplit(self.path)
                path = unquote(url.path)
                query = parse_qs(url.query)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"):
                    query.update(parse_qs(body.decode()))
                elif body:
                    query.update({k: v if isinstance(v, list) else [v] for k, v in json.loads(body).items()})
                hub.requests.append((self.command, path))
                self.entry = {"method": self.command, "path": path, "query": query, "range": self.headers.get("Range")}
                hub.log.append(self.entry)
                if path.startswith("/api/"):
                    self._api(path[len("/api/"):], query)
                elif "/resolve/" in path:
                    self._resolve(path, send_body)
                else:
                    self._error(404, None, "Not Found", send_body)

            def _find(self, kind: str, repo: str, rev: str | None, send_body: bool = True):
                """The repo and the files of `rev`, or None after answering the error the hub would give."""
                if repo in hub.errors:
                    status, code = hub.errors[repo], None
                    if isinstance(status, tuple):
                        status, code = status
                    elif status in _GATED:
                        code = "GatedRepo"
                    elif status == 404:
                        code = "RepoNotFound"
                    message = _GATED[status] if code == "GatedRepo" else "Repository not found"
                    self._error(status, code, message.format(type=kind, repo=repo), send_body)
                    return None
                found = hub.repos.get((kind, repo))
                if found is None:
                    self._error(404, "RepoNotFound", "Repository not found", send_body)
                    return None
                files = found.revision(rev or "main")
                if files is None:
                    self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}", send_body)
                    return None
                return found, files

            def _resolve(self, path: str, send_body: bool):
                kind, repo, rev, filename = _split_key(path)
                found = self._find(kind, repo, rev, send_body)
                if found is None:
                    return
                repo_obj, files = found
                data = files.get(filename)
                if data is None:
                    self._error(404, "EntryNotFound", "Entry not found", send_body)
                    return
                headers = {"X-Repo-Commit": repo_obj.sha(self._rev_name(repo_obj, rev)),
                           "ETag": f'"{hashlib.sha1(data).hexdigest()}"', "Accept-Ranges": "bytes",
                           "Content-Type": "application/octet-stream"}
                match = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range") or "")
                if match and data:
                    start, end = match.groups()
                    if start == "":
                        start, end = max(len(data) - int(end), 0), len(data) - 1
                    else:
                        start, end = int(start), min(int(end) if end else len(data) - 1, len(data) - 1)
                    if start >= len(data):
                        self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"}, send_body)
                        return
                    headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
                    self._send(206, data[start:end + 1], headers, send_body)
                    return
                self._send(200, data, headers, send_body)

            @staticmethod
            def _rev_name(repo_obj: _Repo, rev: str) -> str:
                return next((n for n in repo_obj.revisions if rev in (n, repo_obj.sha(n))), rev)

            def _api(self, rest: str, query: dict):
                # {type}s/{namespace}/{name}[/revision/{rev} | /tree/{rev}[/{dir}] | /paths-info/{rev}]
                plural, _, rest = rest.partition("/")
                kind = {"models": "model", "datasets": "dataset", "spaces": "space"}.get(plural)
                parts = rest.split("/")
                if kind is None or len(parts) < 2:
                    self._error(404, None, "Not Found")
                    return
                repo, action, tail = "/".join(parts[:2]), (parts[2] if len(parts) > 2 else ""), parts[3:]
                if action not in ("", "revision", "tree", "paths-info"):
                    self._error(404, None, "Not Found")  # e.g. the parquet conversion: not offered
                    return
                rev = tail[0] if tail else (query.get("revision") or ["main"])[0]
                found = self._find(kind, repo, rev)
                if found is None:
                    return
                repo_obj, files = found
                sha = repo_obj.sha(self._rev_name(repo_obj, rev))
                if action in ("", "revision"):
                    self._json({"id": repo, "_id": sha[:24], "sha": sha, "private": False, "gated": False,
                                "disabled": False, "downloads": 0, "likes": 0, "tags": [], "cardData": {},
                                "lastModified": "2024-01-01T00:00:00.000Z",
                                "siblings": [{"rfilename": f} for f in sorted(files)]})
                elif action == "tree":
                    self._tree(files, "/".join(tail[1:]).strip("/"), query)
                else:
                    wanted = [p.strip("/") for p in query.get("paths", [])]
                    self._json([_entry(p, files[p]) for p in wanted if p in files]
                               + [{"type": "directory", "path": p, "oid": "0" * 40} for p in wanted
                                  if p not in files and any(f.startswith(p + "/") for f in files)])

            def _tree(self, files: dict[str, bytes], directory: str, query: dict):
                recursive = (query.get("recursive") or ["false"])[0].lower() in ("1", "true")
                prefix = directory + "/" if directory else ""
                if directory and not any(f.startswith(prefix) for f in files):
                    self._error(404, "EntryNotFound", f"{directory} does not exist")
                    return
                entries, dirs = [], set()
                for name in sorted(files):
                    if not name.startswith(prefix):
                        continue
                    inner = name[len(prefix):].split("/")
                    for depth in range(1, len(inner) if recursive else min(len(inner), 2)):
                        dirs.add(prefix + "/".join(inner[:depth]))
                    if recursive or len(inner) == 1:
                        entries.append(_entry(name, files[name]))
                entries += [{"type": "directory", "path": d, "oid": "0" * 40} for d in sorted(dirs)]
                self._json(sorted(entries, key=lambda e: e["path"]))

            def do_HEAD(self):
                self._handle(False)

            def do_GET(self):
                self._handle(True)

            def do_POST(self):
                self._handle(True)

            def log_message(self, *args):
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # Handler threads are joined on close, so `log` is complete once the `with` block is left.
        self._server.daemon_threads = False
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def downloaded(self) -> set[str]:
        """Paths the client resolved (HEAD or GET), without the client's other calls."""
        return {p for _, p in self.requests if "/resolve/" in p}

    def bytes_sent(self, path_end: str) -> int:
        """Body bytes sent for resolve requests of paths ending with `path_end` (all GETs and ranges)."""
        return sum(e.get("bytes", 0) for e in self.log if "/resolve/" in e["path"] and e["path"].endswith(path_end))


def run_python(code: str, hub: FakeHub | None, hf_home, offline: bool = False) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter whose hub client talks to `hub` (or is offline), caching in `hf_home`."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_OFFLINE", "HF_ENDPOINT", "HF_DATASETS_OFFLINE", "HF_TOKEN")}
    env["HF_HOME"] = str(hf_home)
    if hub is not None:
        env["HF_ENDPOINT"] = hub.endpoint
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def run_against_hub(files: dict[str, bytes], code: str, hf_home) -> tuple[str, set[str]]:
    """Run `code` against a fake hub serving `files`; returns its stdout and the paths it downloaded.
    Fails with the child's stderr when the code does."""
    with FakeHub(files) as hub:
        out = run_python(code, hub, hf_home)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout, hub.downloaded()


TINYSTORIES_CARD = """---
license: cdla-sharing-1.0
task_categories:
- text-generation
language:
- en
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*
  - split: validation
    path: data/validation-*
---
# TinyStories (as served by tests/fake_hub.py)
"""


def stories_txt(stories: list[str]) -> bytes:
    """Stories as the published .txt files hold them: each followed by a `<|endoftext|>` line."""
    return "".join(f"{s}\n<|endoftext|>\n" for s in stories).encode()


def tinystories_files(
    train: list[str], valid: list[str], repo: str = "roneneldan/TinyStories", revision: str = "main"
) -> dict[str, bytes]:
    """`FakeHub` files laid out like the TinyStories dataset repo, holding `train` and `valid` stories:
    the dataset card with the default config, its parquet shards (column `text`), and the V1 and V2
    .txt files."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    def parquet(texts: list[str]) -> bytes:
        buffer = io.BytesIO()
        pq.write_table(pa.table({"text": texts}), buffer)
        return buffer.getvalue()

    return dataset_files(repo, {
        "README.md": TINYSTORIES_CARD.encode(),
        "data/train-00000-of-00001-fake.parquet": parquet(train),
        "data/validation-00000-of-00001-fake.parquet": parquet(valid),
        "TinyStories-train.txt": stories_txt(train),
        "TinyStories-valid.txt": stories_txt(valid),
        "TinyStoriesV2-GPT4-train.txt": stories_txt(train),
        "TinyStoriesV2-GPT4-valid.txt": stories_txt(valid),
        "Evaluation prompts.yaml": b"- Once there was a bee who\n",
    }, revision)
