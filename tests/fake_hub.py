"""A local stand-in for the Hugging Face hub's file endpoint, for the real `hf_hub_download`.

It answers HEAD and GET on `/{repo}/resolve/{revision}/{filename}` (datasets under `/datasets/...`) with the
headers the client reads (X-Repo-Commit, ETag, Content-Length) and 404 for anything else. The hub client
reads HF_ENDPOINT when it is imported, so code using it runs in a child process: `run_python(code, hub, ...)`.

    with FakeHub({"EleutherAI/gpt-neo-125M/resolve/main/vocab.json": b"..."}) as hub:
        out = run_python("...", hub, hf_home=tmp_path / "hf")
"""

from __future__ import annotations

import hashlib
import http.server
import os
import subprocess
import sys
import threading
from urllib.parse import unquote


class FakeHub:
    def __init__(self, files: dict[str, bytes]):
        self.files = {"/" + k.lstrip("/"): v for k, v in files.items()}
        self.requests: list[tuple[str, str]] = []  # (method, decoded path)

    def __enter__(self) -> FakeHub:
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self, body: bool):
                path = unquote(self.path.split("?", 1)[0])
                hub.requests.append((self.command, path))
                data = hub.files.get(path)
                if data is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("X-Repo-Commit", "0" * 40)
                self.send_header("ETag", f'"{hashlib.sha1(data).hexdigest()}"')
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def do_HEAD(self):
                self._answer(False)

            def do_GET(self):
                self._answer(True)

            def log_message(self, *args):
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def downloaded(self) -> set[str]:
        """Paths the client resolved (HEAD or GET), without the client's other calls."""
        return {p for _, p in self.requests if "/resolve/" in p}


def run_python(code: str, hub: FakeHub | None, hf_home, offline: bool = False) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter whose hub client talks to `hub` (or is offline), caching in `hf_home`."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_ENDPOINT", "HF_DATASETS_OFFLINE")}
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
