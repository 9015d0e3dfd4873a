"""Soak: thousands of requests against a server that fails some of them at random.

A whole kurabe run (``kurabe.api.run_shootout``, the store, the analysis and the report)
against a local OpenAI-compatible server in a process of its own that streams short answers
and fails a set share of requests at random (seeded): HTTP 500, 503 and 429 (half of them
with Retry-After: 0), a connection dropped mid-stream, an unparseable event, a stream that
ends with neither a finish reason nor [DONE]. Then the faults are switched off and
``kurabe.api.resume_shootout`` redoes exactly the requests that failed.

Printed: requests sent by kurabe and answered by the server (by outcome), rows stored (by
status and error kind), retries, whether every scheduled request ended with exactly one
successful row after the resume (nothing lost, nothing doubled), the resident memory of the
process every 10% of the run and the growth from 10% to 100%, and the time the run, the
analysis and the resume took.

Run (from the repository root, with the project's virtual environment active):

    python benchmarks/soak.py                      # 10,000 requests, 5% failing
    python benchmarks/soak.py --requests 2000 --fail 0.05

The server listens on 127.0.0.1 only, and stops when this process ends.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import psutil

from kurabe import api
from kurabe.config import parse_config
from kurabe.store import Store

HOST = "127.0.0.1"
FAULTS = ("http_500", "http_503", "http_429", "drop", "bad_event", "truncated")


def _event(payload: dict | str) -> bytes:
    text = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    data = f"data: {text}\n\n".encode()
    return b"%x\r\n%s\r\n" % (len(data), data)


def _delta(delta: dict, finish: str | None = None) -> dict:
    return {"id": "soak", "object": "chat.completion.chunk", "created": 0, "model": "soak",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n")


def _json(status: str, payload: dict, extra: str = "") -> bytes:
    data = json.dumps(payload).encode()
    return (b"HTTP/1.1 %s\r\nContent-Type: application/json\r\n%sContent-Length: %d\r\n\r\n%s"
            % (status.encode(), extra.encode(), len(data), data))


def serve(port_out, fail: float, seed: int, tokens: int) -> None:
    rng = random.Random(seed)
    outcomes: Counter[str] = Counter()
    failing = [fail]  # POST /faults/off turns the faults off (before the resume)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                line, *rest = head.decode("latin-1").split("\r\n")
                method, path, _ = line.split(" ", 2)
                headers = {k.strip().lower(): v.strip()
                           for k, _, v in (h.partition(":") for h in rest if ":" in h)}
                length = int(headers.get("content-length", "0"))
                if length:
                    await reader.readexactly(length)
                if path.endswith("/models"):
                    writer.write(_json("200 OK", {"data": [{"id": "soak"}]}))
                elif path == "/stats":
                    writer.write(_json("200 OK", dict(outcomes)))
                elif path == "/faults/off":
                    failing[0] = 0.0
                    outcomes.clear()
                    writer.write(_json("200 OK", {}))
                elif method == "POST" and path.endswith("/chat/completions"):
                    fault = rng.choice(FAULTS) if rng.random() < failing[0] else None
                    outcomes[fault or "ok"] += 1
                    if fault == "http_500":
                        writer.write(_json("500 Internal Server Error", {"error": "boom"}))
                    elif fault == "http_503":
                        writer.write(_json("503 Service Unavailable", {"error": "busy"},
                                           "Retry-After: 0\r\n"))
                    elif fault == "http_429":
                        writer.write(_json("429 Too Many Requests", {"error": "slow down"},
                                           "Retry-After: 0\r\n" if rng.random() < 0.5 else ""))
                    else:
                        writer.write(HEAD + _event(_delta({"role": "assistant"})))
                        for k in range(tokens):
                            writer.write(_event(_delta({"content": f" t{k}"})))
                            if fault == "drop" and k == tokens // 2:
                                await writer.drain()
                                writer.close()
                                return
                            if fault == "bad_event" and k == tokens // 2:
                                writer.write(_event("{not json"))
                        if fault == "truncated":
                            writer.write(b"0\r\n\r\n")
                        else:
                            usage = {"prompt_tokens": 8, "completion_tokens": tokens}
                            writer.write(_event(_delta({}, "stop"))
                                         + _event({**_delta({}), "choices": [], "usage": usage})
                                         + _event("[DONE]") + b"0\r\n\r\n")
                else:
                    writer.write(_json("404 Not Found", {"error": "not found"}))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, HOST, 0)
        port_out.put(server.sockets[0].getsockname()[1])
        parent = os.getppid()
        async with server:
            while os.getppid() == parent:
                await asyncio.sleep(0.5)

    asyncio.run(main())


def rss_mib() -> float:
    return psutil.Process().memory_info().rss / 2**20


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--fail", type=float, default=0.05, help="share of requests that fail")
    ap.add_argument("--prompts", type=int, default=20)
    ap.add_argument("--tokens", type=int, default=16, help="tokens per answer")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", type=Path, help="run folder to keep (default: a temp folder)")
    args = ap.parse_args()

    queue: multiprocessing.Queue = multiprocessing.Queue()
    server = multiprocessing.Process(target=serve, args=(queue, args.fail, args.seed,
                                                         args.tokens), daemon=True)
    server.start()
    port = queue.get(timeout=30)
    url = f"http://{HOST}:{port}"
    repeats = max(1, args.requests // args.prompts)
    total = repeats * args.prompts
    config = parse_config({
        "run": {"name": "soak", "repeats": repeats, "warmup": 0, "max_tokens": args.tokens},
        "models": [{"name": "soak", "source": url, "engine": {"backend": "openai"}}],
        "prompts": [{"id": f"p{i:03d}", "text": f"question {i}"} for i in range(args.prompts)],
    }, "soak")
    run_dir = args.keep or Path(tempfile.mkdtemp(prefix="kurabe-soak-")) / "run"

    memory: list[tuple[int, float]] = []
    step = max(1, total // 10)

    def progress(description: str, done: int, total_: int) -> None:
        if done and done % step == 0 and (not memory or memory[-1][0] != done):
            memory.append((done, rss_mib()))

    print(f"soak: {total:,} requests, {args.fail:.0%} failing at random (seed {args.seed}), "
          f"{args.tokens} tokens each, run folder {run_dir}")
    t0 = time.perf_counter()
    analysis = api.run_shootout(config, run_dir, progress=progress)
    t_run = time.perf_counter() - t0
    with Store.open(run_dir) as store:
        rows = list(store.requests())
        first_ok = {r.seq for r in rows if r.status == "ok"}
    kinds = Counter(r.error_kind or "?" for r in rows if r.status == "error")
    retried = sum(len((r.record or {}).get("retries") or []) for r in rows)
    served = httpx.get(f"{url}/stats").json()
    print(f"run: {t_run:.1f} s ({total / t_run:,.0f} requests/s, report included); "
          f"run status {analysis.run.status}")
    print(f"server answered {sum(served.values()):,} requests: "
          + ", ".join(f"{k} {v:,}" for k, v in sorted(served.items())))
    print(f"stored {len(rows):,} rows: ok {len(first_ok):,}, error {len(rows) - len(first_ok):,}"
          f" ({', '.join(f'{k} {v}' for k, v in sorted(kinds.items()))}); retries recorded "
          f"{retried:,}")
    lost = total - len(rows)
    print(f"scheduled requests with no stored row: {lost}")
    faults = sum(served.values()) - served.get("ok", 0)
    # Each retry absorbed one injected fault; every other fault must be a stored error, and
    # every stream the server finished a stored ok row.
    accounted = (len(rows) - len(first_ok) == faults - retried
                 and len(first_ok) == served.get("ok", 0))
    print(f"faults injected {faults:,} = retried {retried:,} + stored as errors "
          f"{len(rows) - len(first_ok):,}, and ok streams = ok rows: {accounted}")

    httpx.post(f"{url}/faults/off")
    t1 = time.perf_counter()
    api.resume_shootout(run_dir)
    t_resume = time.perf_counter() - t1
    with Store.open(run_dir) as store:
        after = list(store.requests())
        status = store.run().status
    ok_seqs = [r.seq for r in after if r.status == "ok"]
    complete = sorted(ok_seqs) == list(range(total))

    def key(r):
        return (r.seq, r.status, r.error, r.sent_at_unix_s)

    kept = not (Counter(map(key, rows)) - Counter(map(key, after)))
    print(f"resume (faults off): {t_resume:.1f} s, {len(after) - len(rows):,} requests redone "
          f"(server answered {sum(httpx.get(f'{url}/stats').json().values()):,}); status "
          f"{status}; every scheduled request has exactly one ok row: {complete}; every row "
          f"stored before the resume kept as it was: {kept}")
    print("resident memory (MiB) by requests done: "
          + ", ".join(f"{n:,}: {m:.0f}" for n, m in memory)
          + f"; after the analysis and the resume: {rss_mib():.0f}")
    if len(memory) >= 2:
        print(f"growth from {memory[0][0]:,} to {memory[-1][0]:,} requests: "
              f"{memory[-1][1] - memory[0][1]:+.1f} MiB")
    server.terminate()
    return 0 if (lost == 0 and accounted and complete and kept) else 1


if __name__ == "__main__":
    sys.exit(main())
