"""How much does kurabe's own streaming client cost, and how many streams can it follow?

Every speed figure kurabe reports is a timestamp taken by ``kurabe.client.ChatClient`` when it
has parsed an SSE event. If the client itself is slow, or falls behind when many streams are
open, those timestamps drift away from the moment the server actually sent the token. This
script measures that cost against a fake OpenAI-compatible server, so no model is involved.

The fake server is plain standard-library asyncio (minimal HTTP/1.1, one
``Transfer-Encoding: chunked`` chunk per SSE event, keep-alive), listens on 127.0.0.1 only and
runs in a separate process, so its CPU time is never counted as the client's. It streams
``chat.completion.chunk`` events with one token each, then a ``finish_reason`` chunk, a usage
chunk and ``data: [DONE]``. It stops by itself when the benchmark ends, when this process dies,
or after a hard lifetime cap.

Part 1 - cost per token. The server emits a long stream (2000 tokens by default) as fast as it
can; ``ChatClient.stream_chat`` reads it, repeated a few times. Reported: client-process CPU
time (``time.process_time``) and wall time per token, in microseconds. Two reference rows
strip layers off the same stream to show where the time goes: httpx alone (raw bytes, no SSE
parsing) and httpx + httpx-sse (SSE events, no JSON decoding and no ``StreamRecord``).

Part 2 - concurrent streams. The server paces each stream at one token every 20 ms (50
tokens/s per stream). N concurrent ``stream_chat`` calls run from one event loop for
N = 1, 2, 4, ... 128; the streams start together, so their tokens arrive in bursts, as they do
from a server that decodes a batch of requests in lockstep. Small N is repeated until enough
gaps are pooled. For each N: the median, p99 and max of the client-observed inter-chunk gap
minus the pace ("jitter", ms); the p99 of the part the client and the OS added (observed gap
minus the gap between the server's own send times, which the server puts in each token); the
longest wait for a first token; the client's CPU share (% of one core) and CPU per token; how
many streams the server actually had open at once and how many connections the client opened;
and the server's lateness against its schedule and its CPU share (so that a late server is not
blamed on the client). "Sustained" is the largest N whose p99 jitter is under 5 ms with all N
streams open at the same time.

Run (from the repository root, with the project's virtual environment active):

    python benchmarks/client_overhead.py           # full run, well under two minutes
    python benchmarks/client_overhead.py --quick   # a few seconds, coarser figures

Options: ``--pace-ms``, ``--jitter-limit-ms``, ``--tokens`` (part 1), ``--stream-tokens``
(part 2), ``--max-n``. Figures depend on the machine and on what else it is doing; run it on
an otherwise idle machine and compare runs made on the same one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import signal
import statistics
import sys
import time
from dataclasses import dataclass
from importlib.metadata import version as pkg_version

import httpx
from httpx_sse import aconnect_sse

from kurabe.backends.openai import OpenAIEndpoint
from kurabe.client import ChatClient, ChatRequest, StreamRecord

HOST = "127.0.0.1"
SERVER_LIFETIME_CAP_S = 600.0  # the server exits after this, whatever happens
REQUEST_TIMEOUT_S = 60.0

# --------------------------------------------------------------------------------------------
# Fake OpenAI-compatible SSE server (runs in its own process)
# --------------------------------------------------------------------------------------------


def _chunk(payload: dict | str) -> bytes:
    """One SSE event, framed as one HTTP/1.1 chunk."""
    text = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    event = f"data: {text}\n\n".encode()
    return b"%x\r\n%s\r\n" % (len(event), event)


def _completion_chunk(delta: dict, finish_reason: str | None = None) -> dict:
    return {
        "id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1700000000,
        "model": "bench",
        "choices": [{"index": 0, "delta": delta, "logprobs": None,
                     "finish_reason": finish_reason}],
    }


ROLE_CHUNK = _chunk(_completion_chunk({"role": "assistant", "content": ""}))
TOKEN_CHUNK = _chunk(_completion_chunk({"content": " tok"}))
FINISH_CHUNK = _chunk(_completion_chunk({}, "length"))
DONE_CHUNK = _chunk("[DONE]")
LAST_CHUNK = b"0\r\n\r\n"
SSE_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n")
# Paced streams carry the server's send time (time.monotonic, seconds) as the token text, so
# the client can tell the gaps the server produced from the gaps it added itself.
_STAMP_HEAD, _STAMP_TAIL = json.dumps(
    _completion_chunk({"content": "@"}), separators=(",", ":")).encode().split(b"@")


def _stamped_token_chunk(t: float) -> bytes:
    event = b"data: %s%.6f%s\n\n" % (_STAMP_HEAD, t, _STAMP_TAIL)
    return b"%x\r\n%s\r\n" % (len(event), event)


class _ServerState:
    def __init__(self) -> None:
        self.active = 0
        self.reset()

    def reset(self) -> None:
        self.peak = self.active
        self.connections = 0
        self.lateness_s: list[float] = []
        self.cpu0 = time.process_time()
        self.wall0 = time.perf_counter()

    def snapshot(self) -> dict:
        late = sorted(self.lateness_s)
        wall = time.perf_counter() - self.wall0
        return {
            "peak_streams": self.peak,
            "connections": self.connections,
            "late_p99_ms": percentile(late, 99) * 1e3 if late else 0.0,
            "late_max_ms": late[-1] * 1e3 if late else 0.0,
            "cpu_share": (time.process_time() - self.cpu0) / wall if wall > 0 else 0.0,
        }


async def _send_stream(writer: asyncio.StreamWriter, body: dict, state: _ServerState) -> None:
    n_tokens = max(0, int(body.get("max_tokens", 16)))
    pace_s = float(body.get("bench_pace_s", 0.0))
    loop = asyncio.get_running_loop()
    state.active += 1
    state.peak = max(state.peak, state.active)
    try:
        writer.write(SSE_HEAD + ROLE_CHUNK)
        t_start = loop.time()
        for k in range(n_tokens):
            if pace_s > 0:
                due = t_start + k * pace_s
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                now = loop.time()
                state.lateness_s.append(max(0.0, now - due))
                writer.write(_stamped_token_chunk(now))
            else:
                writer.write(TOKEN_CHUNK)
            await writer.drain()
        usage = {"prompt_tokens": 8, "completion_tokens": n_tokens,
                 "total_tokens": 8 + n_tokens}
        writer.write(FINISH_CHUNK
                     + _chunk({**_completion_chunk({}), "choices": [], "usage": usage})
                     + DONE_CHUNK + LAST_CHUNK)
        await writer.drain()
    finally:
        state.active -= 1


def _send_json(writer: asyncio.StreamWriter, status: str, payload: dict) -> None:
    data = json.dumps(payload).encode()
    writer.write(b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                 % (status.encode(), len(data), data))


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                  state: _ServerState) -> None:
    fresh = True  # no request served on this connection yet
    try:
        while True:  # HTTP/1.1 keep-alive: one request after another on this connection
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, *header_lines = head.decode("latin-1").split("\r\n")
            method, path, _ = request_line.split(" ", 2)
            headers = {}
            for line in header_lines:
                name, sep, value = line.partition(":")
                if sep:
                    headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            raw = await reader.readexactly(length) if length else b""
            if method == "POST" and path.endswith("/chat/completions"):
                state.connections += fresh
                fresh = False
                await _send_stream(writer, json.loads(raw or b"{}"), state)
            elif method == "GET" and path == "/stats":
                _send_json(writer, "200 OK", state.snapshot())
                state.reset()
                await writer.drain()
            else:
                _send_json(writer, "404 Not Found", {"error": {"message": "not found"}})
                await writer.drain()
            if headers.get("connection", "").lower() == "close":
                break
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError,
            asyncio.CancelledError):  # client went away, or the server is shutting down
        pass
    finally:
        writer.close()


async def _serve_main(conn, parent_pid: int) -> None:
    state = _ServerState()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    server = await asyncio.start_server(lambda r, w: _handle(r, w, state), HOST, 0,
                                        backlog=1024)
    conn.send(server.sockets[0].getsockname()[1])

    def on_parent_message() -> None:
        try:
            conn.recv()  # any message, or EOF, means stop
        except (EOFError, OSError):
            pass
        stop.set()

    loop.add_reader(conn.fileno(), on_parent_message)
    deadline = loop.time() + SERVER_LIFETIME_CAP_S
    while not stop.is_set() and loop.time() < deadline and os.getppid() == parent_pid:
        try:
            await asyncio.wait_for(stop.wait(), timeout=0.5)
        except TimeoutError:
            pass
    loop.remove_reader(conn.fileno())
    server.close()
    for task in asyncio.all_tasks():
        if task is not asyncio.current_task():
            task.cancel()


def _serve(conn, parent_pid: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the parent, which stops us
    asyncio.run(_serve_main(conn, parent_pid))


class FakeServer:
    """The fake server in a child process; a context manager that always stops it."""

    def __enter__(self) -> FakeServer:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child_conn = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child_conn, os.getpid()), daemon=True,
                                 name="kurabe-fake-sse-server")
        self._proc.start()
        child_conn.close()
        try:
            if not self._conn.poll(30):
                raise EOFError
            self.port = self._conn.recv()
        except (EOFError, OSError):
            self.__exit__()
            raise RuntimeError("the fake SSE server did not start within 30 s") from None
        self.base = f"http://{HOST}:{self.port}"
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._conn.send("stop")
        except (OSError, ValueError):
            pass
        self._proc.join(5)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(5)
        self._conn.close()


# --------------------------------------------------------------------------------------------
# Measurements (client side)
# --------------------------------------------------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated percentile of an already sorted, non-empty list."""
    if len(sorted_values) == 1:
        return sorted_values[0]
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def _request(n_tokens: int, pace_s: float = 0.0) -> ChatRequest:
    extra = {"bench_pace_s": pace_s} if pace_s else {}
    return ChatRequest(messages=[{"role": "user", "content": "Count."}], max_tokens=n_tokens,
                       extra_body=extra)


def _check(record: StreamRecord, n_tokens: int) -> None:
    if record.error or len(record.chunks) != n_tokens or record.finish_reason != "length" \
            or not record.usage:
        raise RuntimeError(f"bad stream: error={record.error!r}, chunks={len(record.chunks)} "
                           f"of {n_tokens}, finish={record.finish_reason!r}")


@dataclass
class CostRow:
    label: str
    cpu_us: list[float]  # per token, one value per repeat
    wall_us: list[float]


async def _timed(coro_factory, n_tokens: int, repeats: int) -> tuple[list[float], list[float]]:
    cpu, wall = [], []
    for _ in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        await coro_factory()
        c1, w1 = time.process_time(), time.perf_counter()
        cpu.append((c1 - c0) * 1e6 / n_tokens)
        wall.append((w1 - w0) * 1e6 / n_tokens)
    return cpu, wall


async def measure_cost(base: str, n_tokens: int, repeats: int) -> list[CostRow]:
    endpoint = OpenAIEndpoint("bench", f"{base}/v1", model_id="bench")
    url = f"{base}/v1/chat/completions"
    req = _request(n_tokens)
    body = {"model": "bench", "messages": req.messages, "max_tokens": n_tokens, "stream": True}

    async with ChatClient(endpoint, timeout_s=REQUEST_TIMEOUT_S) as client, \
            httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S) as http:

        async def full() -> None:
            _check(await client.stream_chat(req), n_tokens)

        async def raw_bytes() -> None:
            async with http.stream("POST", url, json=body) as response:
                async for _ in response.aiter_bytes():
                    pass

        async def sse_events() -> None:
            count = 0
            async with aconnect_sse(http, "POST", url, json=body) as source:
                async for event in source.aiter_sse():
                    if event.data == "[DONE]":
                        break
                    count += 1
            if count != n_tokens + 3:  # role chunk + tokens + finish chunk + usage chunk
                raise RuntimeError(f"expected {n_tokens + 3} events, got {count}")

        rows = []
        for label, factory in [("kurabe ChatClient.stream_chat (full)", full),
                               ("  ref: httpx + httpx-sse, events only", sse_events),
                               ("  ref: httpx alone, raw bytes only", raw_bytes)]:
            await factory()  # warm-up: connection, imports, caches
            cpu, wall = await _timed(factory, n_tokens, repeats)
            rows.append(CostRow(label, cpu, wall))
        return rows


@dataclass
class PacedRow:
    n: int
    rounds: int
    gaps: int  # inter-chunk gaps pooled over all streams and rounds
    jitter_p50_ms: float
    jitter_p99_ms: float
    jitter_max_ms: float
    added_p99_ms: float  # client gap minus the server's own gap: what the client added
    first_chunk_max_ms: float
    cpu_share: float  # client CPU seconds / wall seconds
    cpu_us_per_token: float
    server: dict

    def ok(self, limit_ms: float) -> bool:
        return self.jitter_p99_ms < limit_ms and self.server["peak_streams"] >= self.n


async def _server_stats(http: httpx.AsyncClient, base: str) -> dict:
    response = await http.get(f"{base}/stats")
    response.raise_for_status()
    return response.json()


async def _all_or_nothing(coros: list, timeout_s: float) -> list:
    """Run concurrently; every result, or TimeoutError with nothing left running."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        _, pending = await asyncio.wait(tasks, timeout=timeout_s)
    finally:
        for task in tasks:
            task.cancel()
    if pending:
        raise TimeoutError(f"{len(pending)} of {len(tasks)} streams still open after "
                           f"{timeout_s:.1f} s")
    return [task.result() for task in tasks]


async def measure_paced(base: str, ns: list[int], n_tokens: int, pace_s: float,
                        min_gaps: int) -> list[PacedRow]:
    """For each N, enough rounds of N concurrent streams to pool at least ``min_gaps`` gaps."""
    endpoint = OpenAIEndpoint("bench", f"{base}/v1", model_id="bench")
    req = _request(n_tokens, pace_s)
    rows = []
    async with ChatClient(endpoint, timeout_s=REQUEST_TIMEOUT_S) as client, \
            httpx.AsyncClient(timeout=10.0) as http:
        _check(await client.stream_chat(_request(5, pace_s)), 5)  # warm-up
        for n in ns:
            rounds = max(1, -(-min_gaps // (n * (n_tokens - 1))))
            await _server_stats(http, base)  # resets the server's counters
            jitter, added, first = [], [], []
            cpu_s = wall_s = 0.0
            for _ in range(rounds):
                budget_s = 3 * n_tokens * pace_s * (1 + n // 100) + 15
                c0, w0 = time.process_time(), time.perf_counter()
                records = await _all_or_nothing(
                    [client.stream_chat(req) for _ in range(n)], budget_s)
                cpu_s += time.process_time() - c0
                wall_s += time.perf_counter() - w0
                for record in records:
                    _check(record, n_tokens)
                    seen = [c.t_s for c in record.chunks]
                    sent = [float(c.content) for c in record.chunks]
                    first.append(seen[0])
                    for k in range(1, len(seen)):
                        gap = seen[k] - seen[k - 1]
                        jitter.append(gap - pace_s)
                        added.append(gap - (sent[k] - sent[k - 1]))
            server = await _server_stats(http, base)
            jitter.sort()
            added.sort()
            rows.append(PacedRow(
                n=n, rounds=rounds, gaps=len(jitter),
                jitter_p50_ms=percentile(jitter, 50) * 1e3,
                jitter_p99_ms=percentile(jitter, 99) * 1e3,
                jitter_max_ms=jitter[-1] * 1e3,
                added_p99_ms=percentile(added, 99) * 1e3,
                first_chunk_max_ms=max(first) * 1e3,
                cpu_share=cpu_s / wall_s,
                cpu_us_per_token=cpu_s * 1e6 / (rounds * n * n_tokens),
                server=server,
            ))
            print(f"  N={n:<4d} {rounds} round(s) in {wall_s:5.1f} s", file=sys.stderr,
                  flush=True)
    return rows


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def _print_cost(rows: list[CostRow], n_tokens: int, repeats: int) -> None:
    print(f"1. Client cost per streamed token  ({n_tokens} tokens per stream, one token per "
          f"SSE event, server sending\n   as fast as it can; median (min) of {repeats} "
          f"streams after one warm-up; us = microseconds)")
    print()
    print(f"   {'reader':<40} {'CPU us/token':>17} {'wall us/token':>17} {'tokens/s (wall)':>16}")
    for row in rows:
        cpu_med, wall_med = statistics.median(row.cpu_us), statistics.median(row.wall_us)
        print(f"   {row.label:<40} {cpu_med:8.1f} ({min(row.cpu_us):6.1f}) "
              f"{wall_med:8.1f} ({min(row.wall_us):6.1f}) {1e6 / wall_med:16,.0f}")
    print()
    print("   CPU = this process's CPU time (time.process_time); the server's is not included.\n"
          "   At full speed several events arrive per socket read; when tokens arrive one at a\n"
          "   time (part 2), each costs an event-loop wake-up and more CPU (column CPU/token).")
    print()


def _sustained(rows: list[PacedRow], limit_ms: float) -> int | None:
    passing = [row.n for row in rows if row.ok(limit_ms)]
    return max(passing) if passing else None


def _print_paced(rows: list[PacedRow], n_tokens: int, pace_ms: float, limit_ms: float) -> None:
    print(f"2. Concurrent paced streams  (server pace {pace_ms:g} ms/token = "
          f"{1000 / pace_ms:g} tokens/s per stream, {n_tokens} tokens\n"
          f"   per stream, N concurrent stream_chat calls from one event loop; "
          f"jitter = client-observed\n   inter-chunk gap - {pace_ms:g} ms)")
    print()
    print(f"   {'N':>4} {'gaps':>6} {'jitter p50':>10} {'p99':>7} {'max':>7} "
          f"{'added p99':>10} {'1st chunk':>10} {'client CPU':>10} {'CPU/token':>10} "
          f"{'open':>5} {'conns':>6} {'srv late p99':>12} {'srv CPU':>8}  ok")
    print(f"   {'':>4} {'':>6} {'(ms)':>10} {'(ms)':>7} {'(ms)':>7} "
          f"{'(ms)':>10} {'max (ms)':>10} {'(% core)':>10} {'(us)':>10} "
          f"{'':>5} {'':>6} {'(ms)':>12} {'(% core)':>8}")
    for r in rows:
        print(f"   {r.n:>4} {r.gaps:>6} {r.jitter_p50_ms:10.2f} {r.jitter_p99_ms:7.2f} "
              f"{r.jitter_max_ms:7.2f} {r.added_p99_ms:10.2f} {r.first_chunk_max_ms:10.1f} "
              f"{r.cpu_share * 100:9.1f}% {r.cpu_us_per_token:10.1f} "
              f"{r.server['peak_streams']:>5} {r.server['connections']:>6} "
              f"{r.server['late_p99_ms']:12.2f} "
              f"{r.server['cpu_share'] * 100:7.1f}%  {'yes' if r.ok(limit_ms) else 'NO'}")
    print()
    print("   gaps = inter-chunk gaps pooled over all streams (small N is repeated to get "
          "enough);\n"
          "   added = client-observed gap - the gap between the server's send times (the "
          "part of the\n"
          "   jitter the client and the OS added); 1st chunk = request sent to first token "
          "parsed;\n"
          "   client CPU = client CPU time / wall time; open = most streams the server had "
          "open at once;\n"
          "   conns = TCP connections the client opened for these streams (the rest were "
          "reused);\n"
          "   srv late = server lateness against its own schedule; srv CPU = the server "
          "process's share.")
    print(f"   Criterion: N is sustained when the p99 jitter is under {limit_ms:g} ms and all N "
          f"streams were\n   open at the same time; 'sustained' is the largest N that passes.")
    capped = [r for r in rows if r.server["peak_streams"] < r.n]
    if capped:
        print(f"   Note: at N={', '.join(str(r.n) for r in capped)} the server never had all "
              f"streams open at once (at most "
              f"{', '.join(str(r.server['peak_streams']) for r in capped)}); the others\n"
              f"   waited inside the client for a connection (see '1st chunk max').")
    best = _sustained(rows, limit_ms)
    below = [r.n for r in rows if best is not None and r.n < best and not r.ok(limit_ms)]
    if below:
        print(f"   Note: N={', '.join(map(str, below))} failed although N={best} passed: "
              f"compare 'added p99' with 'jitter p99'\n   to see whether the client or "
              f"timing noise on the machine (server, scheduler) caused it.")
    print()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer tokens, fewer N")
    parser.add_argument("--tokens", type=int, help="tokens per stream in part 1 (default 2000)")
    parser.add_argument("--stream-tokens", type=int,
                        help="tokens per stream in part 2 (default 100, quick 40)")
    parser.add_argument("--pace-ms", type=float, default=20.0, help="part 2 pace (default 20)")
    parser.add_argument("--jitter-limit-ms", type=float, default=5.0,
                        help="p99 jitter limit for 'sustained' (default 5)")
    parser.add_argument("--max-n", type=int, default=128,
                        help="largest N of the ladder to run (default 128)")
    args = parser.parse_args(argv)

    cost_tokens = args.tokens or (500 if args.quick else 2000)
    repeats = 3 if args.quick else 7
    paced_tokens = args.stream_tokens or (40 if args.quick else 100)
    min_gaps = 150 if args.quick else 600
    ladder = [1, 4, 16, 64, 128] if args.quick else [1, 2, 4, 8, 16, 32, 64, 128]
    ns = [n for n in ladder if n <= args.max_n] or [1]
    pace_s = args.pace_ms / 1e3
    if cost_tokens < 1 or paced_tokens < 2 or pace_s <= 0:
        parser.error("need --tokens >= 1, --stream-tokens >= 2 and --pace-ms > 0")

    print("kurabe client overhead" + (" (quick)" if args.quick else ""))
    print(f"python {platform.python_version()}, httpx {pkg_version('httpx')}, httpx-sse "
          f"{pkg_version('httpx-sse')}, {platform.system()} {platform.machine()}, "
          f"{os.cpu_count()} CPUs; fake server: separate process on {HOST}")
    print(flush=True)
    t0 = time.perf_counter()
    with FakeServer() as server:
        print("part 1 ...", file=sys.stderr, flush=True)
        cost = asyncio.run(measure_cost(server.base, cost_tokens, repeats))
        _print_cost(cost, cost_tokens, repeats)
        sys.stdout.flush()
        print("part 2 ...", file=sys.stderr, flush=True)
        paced = asyncio.run(measure_paced(server.base, ns, paced_tokens, pace_s, min_gaps))
        _print_paced(paced, paced_tokens, args.pace_ms, args.jitter_limit_ms)

    cpu_us = statistics.median(cost[0].cpu_us)
    wall_us = statistics.median(cost[0].wall_us)
    busiest = max((r for r in paced if r.server["peak_streams"] >= r.n), key=lambda r: r.n,
                  default=paced[0])
    sustained = _sustained(paced, args.jitter_limit_ms)
    print(f"Summary: the client costs {cpu_us:.1f} us CPU and {wall_us:.1f} us wall per token "
          f"at full speed (~{1e6 / cpu_us:,.0f} tokens/s per core),\n"
          f"{busiest.cpu_us_per_token:.1f} us CPU per token with {busiest.n} paced streams; "
          f"it sustains "
          + (f"{sustained} concurrent stream{'s' if sustained != 1 else ''}"
             if sustained else "none of the tested N")
          + f" at {1000 / args.pace_ms:g} tokens/s each (p99 jitter < "
          f"{args.jitter_limit_ms:g} ms, all open at once; tested N <= {ns[-1]}). "
          f"[{time.perf_counter() - t0:.0f} s]")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # the server has been stopped on the way out
        print("interrupted", file=sys.stderr)
        sys.exit(130)
