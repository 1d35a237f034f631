"""Shared helpers for the benchmark scripts: arguments, machine info, timing, the result table.

Every benchmark compares "ours" with a named baseline measured in the same run (or, where that is
impossible, a figure quoted from elsewhere and labelled so) and prints one table row per comparison.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/bench_x.py` from the repo root
    sys.path.insert(0, str(ROOT))


def server_arg(p: argparse.ArgumentParser) -> None:
    """--server for the benchmarks against a fake OpenAI endpoint."""
    p.add_argument("--server", choices=["asyncio", "threaded"], default="asyncio",
                   help="fake endpoint: a minimal asyncio server with a fixed latency (default), or the tests' "
                        "threaded FakeOpenAI (which adds ~90 ms of its own at concurrency 64)")


def parse_args(description: str, extra=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="a smaller run (< 40 s) for a smoke check")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    p.add_argument("--json", type=Path, help="also write the results table as JSON here")
    if extra:
        extra(p)
    return p.parse_args()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_has_bf16() -> bool:
    """Whether the CPU has bf16 matrix units (AMX or AVX512-BF16), which `train.cpu_bf16` needs to pay."""
    try:
        flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    except OSError:
        return False
    return bool({"amx_bf16", "avx512_bf16"} & set(flags.split()))


def machine_info(threads: int | None = None) -> dict:
    info = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "loadavg": tuple(round(x, 2) for x in os.getloadavg()),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["threads"] = torch.get_num_threads() if threads is None else threads
    except ImportError:
        pass
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    return info


# ---------------------------------------------------------------- the fake OpenAI server, in a child process


def _serve(reply: str, latency_s: float, n_specs: int, backlog: int, conn) -> None:
    """Child process: run tests/openai_server.FakeOpenAI until told to stop, then report its counters."""
    from http.server import ThreadingHTTPServer

    # socketserver listens with a backlog of 5: a burst of 64 new connections then overflows the accept
    # queue (dropped SYNs are retried after 1 s; some connections are reset). A real endpoint listens
    # with a deep backlog, so the benchmark gives the fake one the same (backlog=0 keeps stdlib's 5).
    if backlog:
        ThreadingHTTPServer.request_queue_size = backlog
    sys.path.insert(0, str(ROOT / "tests"))
    from openai_server import FakeOpenAI, StoryWriter, judge_reply, make_specs

    fn = StoryWriter(make_specs(n_specs)) if reply == "story" else judge_reply("plain")
    with FakeOpenAI(reply=fn, latency_s=latency_s) as server:
        conn.send(server.base_url)
        conn.recv()  # stop
        conn.send({"chat_requests": len(server.chat_requests), "max_in_flight": server.max_in_flight,
                   "server_cpu_s": round(time.process_time(), 2)})


def _serve_asyncio(reply: str, latency_s: float, n_specs: int, backlog: int, conn) -> None:
    """Child process: a minimal asyncio HTTP/1.1 server for chat completions (keep-alive, Content-Length
    bodies) that answers each request exactly `latency_s` after it arrived. The threaded FakeOpenAI adds
    its own delay at 64 connections (64 threads take turns on one interpreter lock, ~90 ms a request
    measured here), so a throughput benchmark against it measures the fake server, not the client."""
    import asyncio

    sys.path.insert(0, str(ROOT / "tests"))
    from openai_server import StoryWriter, chat_completion_json, judge_reply, make_specs

    fn = StoryWriter(make_specs(n_specs)) if reply == "story" else judge_reply("plain")
    stats = {"chat_requests": 0, "max_in_flight": 0, "in_flight": 0, "late_ms": []}

    async def handle(reader, writer):
        try:
            while True:
                request_line = await reader.readline()
                if not request_line:
                    break
                arrived = time.perf_counter()
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = json.loads(await reader.readexactly(length)) if length else {}
                if b"/chat/completions" not in request_line:
                    out, status = b'{"error": {"message": "not found"}}', b"404 Not Found"
                else:
                    stats["chat_requests"] += 1
                    stats["in_flight"] += 1
                    stats["max_in_flight"] = max(stats["max_in_flight"], stats["in_flight"])
                    msgs = body.get("messages", [])
                    out = json.dumps(chat_completion_json(body.get("model", "fake"), fn(msgs), msgs)).encode()
                    status = b"200 OK"
                    await asyncio.sleep(max(0.0, arrived + latency_s - time.perf_counter()))
                    stats["in_flight"] -= 1
                    stats["late_ms"].append((time.perf_counter() - arrived - latency_s) * 1000)
                writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\nContent-Length: "
                             + str(len(out)).encode() + b"\r\n\r\n" + out)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=backlog or 1024)
        port = server.sockets[0].getsockname()[1]
        conn.send(f"http://127.0.0.1:{port}/v1")
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # stop
        server.close()

    asyncio.run(main())
    late = sorted(stats.pop("late_ms")) or [0.0]
    stats.pop("in_flight")
    conn.send({**stats, "server_cpu_s": round(time.process_time(), 2),
               "reply_late_ms_median": round(late[len(late) // 2], 2), "reply_late_ms_max": round(late[-1], 2)})


class FakeServer:
    """`with FakeServer("story" | "judge", latency_s) as s: s.base_url`; loopback only (127.0.0.1).
    The server runs in its own process, as a real endpoint would, so its request handling does not
    share the benchmark's interpreter lock. `s.stats` (after exit): requests served, peak concurrency.
    `kind="threaded"` is the tests' FakeOpenAI; `kind="asyncio"` a minimal chat-only server that keeps
    its latency fixed under concurrency (see _serve_asyncio)."""

    def __init__(self, reply: str, latency_s: float, n_specs: int = 0, backlog: int = 1024, kind: str = "threaded"):
        self.args = (reply, latency_s, n_specs, backlog)
        self.target = {"threaded": _serve, "asyncio": _serve_asyncio}[kind]
        self.stats: dict = {}

    def __enter__(self) -> FakeServer:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=self.target, args=(*self.args, child), daemon=True)
        self.proc.start()
        self.base_url = self.conn.recv()
        return self

    def __exit__(self, *exc) -> None:
        self.conn.send("stop")
        self.stats = self.conn.recv()
        self.proc.join(timeout=10)


def small_op_us() -> float:
    """Microseconds for one small parallel op (a 512x512 compare) at the current thread count. About
    200 us on an idle core; milliseconds mean the OpenMP workers are being descheduled (other processes
    hold the cores), and every op of every model pays that: read such results as load-bound."""
    import torch

    a = torch.randn(512, 512)
    for _ in range(5):
        torch.ge(a, 0)
    with Timer() as t:
        for _ in range(50):
            torch.ge(a, 0)
    return t.s / 50 * 1e6


def start(args: argparse.Namespace, name: str, torch_threads: bool = True) -> dict:
    """Set threads, print the machine header (with the load average at start) and return it."""
    if torch_threads:
        import torch

        torch.set_num_threads(args.threads)
    info = machine_info(args.threads if torch_threads else None)
    if torch_threads:
        from tinystories_lib.lm.allocator import keep_freed_memory

        # Set before anything runs, so ours and the baseline in this process share it (TINYSTORIES_MALLOC=default: off).
        info["allocator"] = "glibc keeps freed memory (lm.allocator)" if keep_freed_memory() else "default"
        info["small_op_us"] = round(small_op_us())
    print(f"== {name}{' (--quick)' if args.quick else ''}")
    for k, v in info.items():
        print(f"   {k}: {v}")
    print(f"   os.getloadavg() at start: {os.getloadavg()}")
    if info.get("small_op_us", 0) > 2000:
        print(f"   WARNING: a small op takes {info['small_op_us']} us at {args.threads} threads (about 200 us "
              "idle): other processes hold the cores, OpenMP threads stall; figures are load-bound.")
    return info


class Timer:
    """`with Timer() as t: ...; t.s` wall seconds (perf_counter), `t.cpu` this process's CPU seconds."""

    def __enter__(self):
        self.t0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.s = time.perf_counter() - self.t0
        self.cpu = time.process_time() - self.c0


def best_of(fn, repeat: int = 3) -> float:
    """Fastest of `repeat` calls of fn(), in seconds (least disturbed by other load)."""
    times = []
    for _ in range(repeat):
        with Timer() as t:
            fn()
        times.append(t.s)
    return min(times)


@dataclass
class Row:
    """One comparison. `ours` and `baseline` in `unit`; `target` is the ratio ours/baseline asked for
    (None: no target), at least that much, or at most that much with `at_most` (memory, where lower is
    better). `baseline_name` says what the baseline is and whether it was measured here."""

    what: str
    ours: float
    baseline: float
    unit: str
    baseline_name: str
    target: float | None = None
    note: str = ""
    at_most: bool = False

    @property
    def ratio(self) -> float:
        return self.ours / self.baseline if self.baseline else float("nan")

    @property
    def target_text(self) -> str:
        if self.target is None:
            return "-"
        return f"{'<=' if self.at_most else '>='} {self.target:.3g}x"

    @property
    def met(self) -> str:
        if self.target is None:
            return "-"
        ok = self.ratio <= self.target if self.at_most else self.ratio >= self.target
        return "yes" if ok else "NO"


def _fmt(x: float) -> str:
    if x >= 100:
        return f"{x:,.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.3g}"


def print_table(rows: list[Row], args: argparse.Namespace | None = None, info: dict | None = None) -> None:
    """Print the rows as a Markdown table (pasted into BENCHMARKS.md) and the load at the end."""
    print()
    print("| what | ours | baseline | unit | ours / baseline | target | met? | baseline is |")
    print("|---|---:|---:|---|---:|---:|---|---|")
    for r in rows:
        note = f" ({r.note})" if r.note else ""
        print(f"| {r.what}{note} | {_fmt(r.ours)} | {_fmt(r.baseline)} | {r.unit} | {r.ratio:.2f}x | "
              f"{r.target_text} | {r.met} | {r.baseline_name} |")
    end_load = os.getloadavg()
    print(f"\n   os.getloadavg() at end: {end_load}")
    if args is not None and args.json:
        out = {"info": info, "loadavg_end": end_load,
               "rows": [asdict(r) | {"ratio": r.ratio, "met": r.met} for r in rows]}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2))
