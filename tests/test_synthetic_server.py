"""The synthetic streaming server (kurabe.load.synthetic): its timing is what it says, its
counts are exact, and its /metrics and ground truth agree with what a plain client received."""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from kurabe.load.synthetic import WORDS, SyntheticServer, prompt_digest, spawn, tokenize
from kurabe.store import Store

from conftest import run_kurabe

CHAT = {"role": "user", "content": "bak bel bim zut"}  # 4 words: 4 prompt tokens


@pytest.fixture
def server_process(tmp_path: Path):
    """A synthetic server in its own process (so a test's client never shares its GIL):
    TTFT 20 ms, ITL 50 ms, answers of 12 tokens, ground truth in a JSONL file."""
    truth = tmp_path / "truth.jsonl"
    proc, url = spawn(ttft_ms=20, itl_ms=50, tokens=12, ground_truth_path=truth)
    yield url, truth
    proc.terminate()
    proc.wait(10)


def _metrics(root: str) -> dict[str, float]:
    text = httpx.get(f"{root}/metrics").text
    return {s.name: s.value for fam in text_string_to_metric_families(text)
            for s in fam.samples}


async def _stream(client: httpx.AsyncClient, url: str, body: dict[str, Any]
                  ) -> dict[str, Any]:
    """One streamed request read line by line: the time each content chunk arrived
    (seconds after sending), its text, and the final events."""
    t0 = time.perf_counter()
    times: list[float] = []
    words: list[str] = []
    events: list[dict[str, Any]] = []
    async with client.stream("POST", f"{url}/chat/completions", json=body) as resp:
        assert resp.status_code == 200
        async for line in resp.aiter_lines():
            if not line.startswith("data: {"):
                continue
            event = json.loads(line[6:])
            events.append(event)
            for choice in event["choices"]:
                content = choice["delta"].get("content")
                if content:
                    times.append(time.perf_counter() - t0)
                    words.append(content)
    return {"times": times, "words": words, "events": events}


async def _many(url: str, n: int, body: dict[str, Any]) -> list[dict[str, Any]]:
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        return await asyncio.gather(*(_stream(client, url, body) for _ in range(n)))


def _server_itl_s(req: dict[str, Any]) -> float:
    t = req["token_perf_s"]
    return (t[-1] - t[0]) / (len(t) - 1)


@pytest.mark.parametrize("streams", [1, 64])
def test_timing_is_what_it_says(server_process, streams: int) -> None:
    url, truth_file = server_process
    body = {"messages": [CHAT], "stream": True, "stream_options": {"include_usage": True}}
    results = asyncio.run(_many(url, streams, body))
    truth = httpx.get(url.removesuffix("/v1") + "/ground_truth").json()
    requests = truth["requests"]
    assert len(requests) == streams
    assert all(r["status"] == "completed" and r["output_tokens"] == 12 for r in requests)
    for r in requests:
        # Never early: token k is due at received + 20 ms + k * 50 ms; the loop's timer
        # granularity (1 ms) and a busy 2-core machine make it late by a few ms at most.
        lateness = [t - (r["received_perf_s"] + 0.020 + k * 0.050)
                    for k, t in enumerate(r["token_perf_s"])]
        assert min(lateness) >= 0
        assert statistics.median(lateness) < 0.005
        assert abs(_server_itl_s(r) - 0.050) < 0.002
    # The client's own per-request ITL (last - first over n - 1) agrees with the set rate: in
    # their median (this plain one-process test client, reading 64 streams on a busy 2-core
    # machine, can read one stream's first token late and its next ones in a burst).
    client_itls = [(res["times"][-1] - res["times"][0]) / 11 for res in results]
    assert abs(statistics.median(client_itls) - 0.050) < 0.005, client_itls
    for res in results:
        assert len(res["times"]) == 12
        # TTFT as a plain client sees it: at least the server's 20 ms.
        assert res["times"][0] >= 0.020
        usage = res["events"][-1]["usage"]
        assert usage == {"prompt_tokens": 4, "completion_tokens": 12, "total_tokens": 16}
        assert res["events"][-1]["timings"]["predicted_n"] == 12
        # Every token is one word of the server's vocabulary, spaced so that a whitespace
        # tokenizer counts exactly the chunks.
        text = "".join(res["words"])
        assert len(tokenize(text)) == 12 and all(w in WORDS for w in text.split())
    # The JSONL file holds the same requests as /ground_truth.
    lines = [json.loads(x) for x in truth_file.read_text().splitlines()]
    assert sorted(x["request_id"] for x in lines) == sorted(r["request_id"] for r in requests)
    assert {x["request_id"]: x["token_perf_s"] for x in lines} == {
        r["request_id"]: r["token_perf_s"] for r in requests}


def test_metrics_deltas_equal_tokens_served(server_process) -> None:
    url, _ = server_process
    root = url.removesuffix("/v1")
    before = _metrics(root)
    body = {"messages": [CHAT], "stream": True, "max_tokens": 5}
    results = asyncio.run(_many(url, 8, body))
    after = _metrics(root)
    served = sum(len(r["words"]) for r in results)
    assert served == 8 * 5
    assert after["llamacpp:tokens_predicted_total"] - before[
        "llamacpp:tokens_predicted_total"] == served
    assert after["llamacpp:prompt_tokens_total"] - before["llamacpp:prompt_tokens_total"] == 8 * 4
    assert after["llamacpp:requests_processing"] == 0
    # llama.cpp's definition: decode seconds run from each request's first token to its last.
    requests = httpx.get(f"{root}/ground_truth").json()["requests"]
    expected_s = sum(r["token_perf_s"][-1] - r["token_perf_s"][0] for r in requests)
    delta_s = (after["llamacpp:tokens_predicted_seconds_total"]
               - before["llamacpp:tokens_predicted_seconds_total"])
    assert delta_s == pytest.approx(expected_s, rel=1e-9)
    assert delta_s == pytest.approx(8 * 4 * 0.050, rel=0.1)


def test_lengths_finish_reasons_and_other_endpoints() -> None:
    with SyntheticServer(ttft_s=0.0, itl_s=0.002, tokens=6) as server:
        url, root = server.base_url, server.base_url.removesuffix("/v1")

        async def run() -> list[dict[str, Any]]:
            async with httpx.AsyncClient(timeout=10) as client:
                return [await _stream(client, url, {"messages": [CHAT], "stream": True, **extra})
                        for extra in ({}, {"max_tokens": 3}, {"max_tokens": 9},
                                      {"max_tokens": 9, "ignore_eos": True})]

        natural, cut, long_ok, forced = asyncio.run(run())
        finish = [next(c["finish_reason"] for e in r["events"] for c in e["choices"]
                       if c.get("finish_reason")) for r in (natural, cut, long_ok, forced)]
        assert [len(r["words"]) for r in (natural, cut, long_ok, forced)] == [6, 3, 6, 9]
        assert finish == ["stop", "length", "stop", "length"]
        # The role-only chunk comes first and carries no text.
        assert natural["events"][0]["choices"][0]["delta"] == {"role": "assistant",
                                                              "content": None}
        whole = httpx.post(f"{url}/chat/completions",
                           json={"messages": [CHAT], "max_tokens": 4}).json()
        assert len(whole["choices"][0]["message"]["content"].split()) == 4
        assert whole["usage"]["completion_tokens"] == 4
        assert httpx.get(f"{url}/models").json()["data"][0]["id"] == "synthetic"
        assert httpx.post(f"{root}/tokenize",
                          json={"content": "bak  nope\nbel"}).json() == {"tokens": [1, 0, 9]}
        assert "build_info" in httpx.get(f"{root}/props").json()
        assert httpx.get(f"{root}/nowhere").status_code == 404
        assert httpx.post(f"{url}/chat/completions", content=b"{").status_code == 400


def test_client_that_leaves_is_counted() -> None:
    with SyntheticServer(ttft_s=0.0, itl_s=0.01, tokens=200) as server:
        root = server.base_url.removesuffix("/v1")

        async def leave_early() -> int:
            seen = 0
            async with httpx.AsyncClient(timeout=10) as client, client.stream(
                    "POST", f"{server.base_url}/chat/completions",
                    json={"messages": [CHAT], "stream": True}) as resp:
                async for line in resp.aiter_lines():
                    seen += '"content":"' in line
                    if seen == 3:
                        break
            return seen

        asyncio.run(leave_early())
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            requests = httpx.get(f"{root}/ground_truth").json()["requests"]
            if requests[0]["status"] != "in_flight":
                break
            time.sleep(0.05)
        assert requests[0]["status"] == "client_closed"
        assert 3 <= requests[0]["output_tokens"] < 200
        assert _metrics(root)["llamacpp:requests_processing"] == 0


def test_command_line_errors_name_the_flag(tmp_path: Path) -> None:
    bad = subprocess.run([sys.executable, "-m", "kurabe.load.synthetic", "--itl-ms", "0"],
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "--itl-ms" in bad.stderr
    missing = tmp_path / "no-such-folder" / "truth.jsonl"
    bad = subprocess.run([sys.executable, "-m", "kurabe.load.synthetic", "--ground-truth",
                          str(missing)], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "--ground-truth" in bad.stderr


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def test_kurabe_load_holds_1024_streams(tmp_path: Path) -> None:
    """``kurabe load`` at 1024 concurrent streams against the synthetic server: no error,
    every request accounted for (the client's count, the store's rows and the server's own
    record agree), and each request's TTFT and ITL as kurabe reports them match what the
    server did (requests paired by send and arrival order; every request has the same
    schedule, so a mispaired neighbour differs only by the server's jitter)."""
    streams, tokens = 1024, 16
    proc, url = spawn(ttft_ms=20, itl_ms=50, tokens=tokens)
    try:
        done = run_kurabe("load", "-m", f"syn={url}", "--concurrency", str(streams),
                          "--requests", str(streams), "--max-tokens", str(tokens),
                          "--fixed-length", "--prompt-tokens", "8", "--json",
                          "--out", str(tmp_path / "run"), timeout=120)
        truth = httpx.get(url.removesuffix("/v1") + "/ground_truth", timeout=30).json()
    finally:
        proc.terminate()
        proc.wait(10)
    assert done.returncode == 0, done.stderr[-2000:]
    level = json.loads(done.stdout)["models"]["syn"]["levels"][0]
    assert level["concurrency"] == streams
    assert (level["sent"], level["completed"], level["failed"], level["cancelled"]) == (
        streams, streams, 0, 0)
    assert level["errors"] == {}
    # kurabe's cross-check read the server's own counters: every token counted once.
    assert level["server_check"]["server_output_tokens"] == streams * tokens
    served = sorted((r for r in truth["requests"] if r["stream"]),
                    key=lambda r: r["received_perf_s"])
    assert len(served) == streams
    by_prompt = {r["prompt_digest"]: r for r in served}
    assert len(by_prompt) == streams  # every request had a prompt of its own
    assert all(r["status"] == "completed" and r["output_tokens"] == tokens for r in served)
    store = Store.open(tmp_path / "run", read_only=True)
    try:
        rows = store.load_requests(model="syn")
    finally:
        store.close()
    assert len(rows) == streams and all(r.status == "ok" for r in rows)
    assert sum(r.metrics["output_tokens"] for r in rows) == streams * tokens
    # The server held every stream at once: the last request arrived before the first ended.
    assert served[-1]["received_perf_s"] < min(r["end_perf_s"] for r in served)
    # each stored request paired with the server's record of the same prompt
    pairs = [(r, by_prompt[prompt_digest(r.request["messages"])]) for r in rows]
    ttft_err = [r.metrics["ttft_s"] - (s["token_perf_s"][0] - s["received_perf_s"])
                for r, s in pairs]
    itl_err = [r.metrics["itl_per_token_s"]
               - (s["token_perf_s"][-1] - s["token_perf_s"][0]) / (tokens - 1)
               for r, s in pairs]
    # Measured on 2 cores (December 2026): ITL error p99 8 ms, TTFT error 0.7-1.2 s (the
    # client's loop lagged while it opened 1024 connections, and said so).
    # ITL: within 10 ms (20% of the 50 ms gap) for 99% of requests, or, when the client's
    # loop read first tokens late (a busy machine), within 25 ms and the level flagged.
    itl_p99 = _pct([abs(e) for e in itl_err], 0.99)
    assert itl_p99 < 0.025, (_pct(itl_err, 0.01), _pct(itl_err, 0.99))
    if itl_p99 >= 0.010:
        assert level["client_bound"], (itl_p99, level["client_bound_reasons"])
    # TTFT: never less than the server's (the client's includes the request's way there).
    # Its delay inside the client is not bounded here, since it grows with whatever else
    # runs on the machine (1.2 s alone, 2.4 s beside one busy core): a client whose TTFT is
    # off by more than 100 ms in the median must have flagged the level as client-bound.
    assert min(ttft_err) > -0.002
    if _pct(ttft_err, 0.5) > 0.1:
        assert level["client_bound"], (_pct(ttft_err, 0.5), level["client_bound_reasons"])


def test_kurabe_client_times_from_when_the_request_was_written(server_process) -> None:
    """The client records when it began writing each request; its TTFT starts there and
    agrees with the server's own (first token written − request received) within 5 ms."""
    from kurabe.backends.openai import OpenAIEndpoint
    from kurabe.client import ChatClient
    from kurabe.metrics import speed_metrics
    from kurabe.records import ChatRequest

    url, _truth = server_process
    backend = OpenAIEndpoint("s", url)
    backend.start()

    async def run():
        async with ChatClient(backend) as client:
            return [await client.stream_chat(ChatRequest(messages=[CHAT], max_tokens=4))
                    for _ in range(3)]

    records = asyncio.run(run())
    truth = httpx.get(url.removesuffix("/v1") + "/ground_truth").json()["requests"]
    assert len(truth) == 3
    for rec, server in zip(records, truth, strict=True):
        assert rec.error is None
        assert rec.t_written_s is not None and 0 <= rec.t_written_s < rec.chunks[0].t_s
        m = speed_metrics(rec)
        assert m.send_delay_s == rec.t_written_s
        server_ttft = server["token_perf_s"][0] - server["received_perf_s"]
        assert abs(m.ttft_s - server_ttft) < 0.005
