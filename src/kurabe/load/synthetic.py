"""A synthetic OpenAI-compatible streaming server whose timing is known exactly.

It plays a model that answers after ``ttft_s`` and then writes one token every ``itl_s``,
on a fixed schedule per request (token k is due at ``received + ttft_s + k * itl_s``), and
records when it really wrote each token. Load tools (kurabe's own and its peers) are measured
against that record: a client's TTFT and ITL minus the server's, per request, is the client's
own error, and a client that cannot keep up shows as tokens written later than their schedule.

Built to hold a thousand concurrent streams on two cores beside the client that loads it:
one asyncio loop (uvloop when installed), HTTP/1.1 parsed by h11, one scheduler timer for all
streams (a heap of due times; every token due at a wake-up is written in that wake-up) and
SSE chunks assembled from pre-encoded bytes.

Endpoints: ``POST /v1/chat/completions`` (streamed or not), ``GET /v1/models``,
``POST /tokenize`` and ``POST /apply-template`` (llama.cpp's forms; one token per
whitespace-separated word), ``GET /props`` and ``GET /health`` (llama.cpp's, so kurabe treats
the server as a llama-server), ``GET /metrics`` (llama.cpp's Prometheus names) and
``GET /ground_truth`` (JSON: every request's received, token and end times). With
``ground_truth_path`` each finished request is also appended to a JSONL file.

Run it as ``python -m kurabe.load.synthetic --port 0 --ttft-ms 20 --itl-ms 50 --tokens 64``;
it prints its base URL on stdout when ready. From Python: ``SyntheticServer(...).start()`` in
a background thread, or ``spawn(...)`` for a separate process (the one to use under load, so
the server does not share a GIL with the client).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import heapq
import importlib.util
import itertools
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

import h11

# The output vocabulary: every word is exactly one token in the server's own /tokenize and
# in the word-level tokenizer ``tokenizer_json`` builds for the peers, so any client that
# re-tokenizes the answer counts exactly the tokens the server wrote.
_ONSETS = "b d f g k l m n p r s t v z".split()
_VOWELS = "a e i o u".split()
_CODAS = "k l m n r s t".split()
WORDS: tuple[str, ...] = tuple(o + v + c for o in _ONSETS for v in _VOWELS for c in _CODAS)
UNKNOWN_TOKEN = "[UNK]"
MODEL_ID = "synthetic"


def word_ids() -> dict[str, int]:
    """The vocabulary of the server's tokenizer: word -> token id (0 is the unknown word)."""
    return {UNKNOWN_TOKEN: 0, **{w: i + 1 for i, w in enumerate(WORDS)}}


def tokenize(text: str) -> list[int]:
    """One token per whitespace-separated word: the word's id, or 0 for any other word."""
    ids = word_ids()
    return [ids.get(w, 0) for w in text.split()]


def tokenizer_json() -> dict[str, Any]:
    """A Hugging Face ``tokenizer.json`` (WordLevel over ``WORDS``, split on whitespace) that
    counts exactly as ``tokenize`` does; the peer benchmark saves it for tools that need a
    Hugging Face tokenizer."""
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": 0, "content": UNKNOWN_TOKEN, "single_word": False,
                          "lstrip": False, "rstrip": False, "normalized": False,
                          # not special: a decoded prompt keeps its unknown words, so
                          # the server counts the tokens the client meant to send
                          "special": False}],
        "normalizer": None,
        "pre_tokenizer": {"type": "WhitespaceSplit"},
        "post_processor": None,
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": False},
        "model": {"type": "WordLevel", "vocab": word_ids(), "unk_token": UNKNOWN_TOKEN},
    }


@dataclass
class RequestTruth:
    """What the server did for one chat request (perf-counter seconds; add
    ``perf_to_unix_offset_s`` for unix time)."""

    request_id: int
    received_perf_s: float  # the whole request had been read
    prompt_tokens: int
    planned_tokens: int
    stream: bool
    token_perf_s: list[float] = field(default_factory=list)  # after each token's write returned
    end_perf_s: float | None = None  # after the last byte of the answer was written
    status: str = "in_flight"  # in_flight | completed | client_closed
    prompt_digest: str = ""  # prompt_digest() of its messages: pairs it with a client's record

    def to_dict(self, offset_s: float) -> dict[str, Any]:
        return {"request_id": self.request_id, "status": self.status, "stream": self.stream,
                "prompt_tokens": self.prompt_tokens, "planned_tokens": self.planned_tokens,
                "prompt_digest": self.prompt_digest,
                "output_tokens": len(self.token_perf_s),
                "received_perf_s": self.received_perf_s,
                "received_unix_s": self.received_perf_s + offset_s,
                "token_perf_s": self.token_perf_s,
                "end_perf_s": self.end_perf_s,
                "end_unix_s": None if self.end_perf_s is None else self.end_perf_s + offset_s}


def prompt_digest(messages: Any) -> str:
    """A short digest of a chat's messages, recorded with each request's ground truth, so a
    client's stored request can be paired with what the server did for it."""
    return hashlib.sha1(_prompt_text(messages).encode("utf-8")).hexdigest()[:16]


def _prompt_text(messages: Any) -> str:
    """The text of a chat's messages (plain strings or OpenAI content parts), one per line."""
    if not isinstance(messages, list):
        return ""
    lines = []
    for m in messages:
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, list):
            content = " ".join(str(p.get("text") or "") for p in content if isinstance(p, dict))
        lines.append(str(content or ""))
    return "\n".join(lines)


class _Stream:
    """One streamed answer in flight: what to write and when."""

    __slots__ = ("proto", "truth", "prefix", "next_due_s", "first_due_s", "written",
                 "include_usage", "finish_reason", "closed")

    def __init__(self, proto: _Connection, truth: RequestTruth, prefix: bytes, first_due_s: float,
                 include_usage: bool, finish_reason: str) -> None:
        self.proto = proto
        self.truth = truth
        self.prefix = prefix
        self.first_due_s = first_due_s
        self.next_due_s = first_due_s
        self.written = 0
        self.include_usage = include_usage
        self.finish_reason = finish_reason
        self.closed = False


_SUFFIX = b'"},"finish_reason":null}]}\n\n'
_WORD_BYTES = [w.encode() for w in WORDS]
_SPACED_WORD_BYTES = [b" " + w for w in _WORD_BYTES]


class SyntheticServer:
    """The server (see the module docstring). ``serve()`` runs it on the current loop;
    ``start()``/``stop()`` run it on a background thread."""

    def __init__(self, *, ttft_s: float = 0.02, itl_s: float = 0.05, tokens: int = 64,
                 host: str = "127.0.0.1", port: int = 0, role_chunk: bool = True,
                 ground_truth_path: Path | None = None) -> None:
        if ttft_s < 0 or itl_s <= 0 or tokens < 1:
            raise ValueError("--ttft-ms must be >= 0, --itl-ms > 0 and --tokens >= 1")
        self.ttft_s, self.itl_s, self.tokens = ttft_s, itl_s, tokens
        self.host, self.port = host, port
        self.role_chunk = role_chunk
        self.ground_truth_path = ground_truth_path
        self.truths: list[RequestTruth] = []
        self.perf_to_unix_offset_s = time.time() - time.perf_counter()
        # llama.cpp's counters, updated when a request ends (as llama-server does).
        self.prompt_tokens_total = 0
        self.prompt_seconds_total = 0.0
        self.tokens_predicted_total = 0
        self.tokens_predicted_seconds_total = 0.0
        self.requests_processing = 0
        self._ids = itertools.count(1)
        self._heap: list[tuple[float, int, _Stream]] = []
        self._seq = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due_s = float("inf")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._truth_file: IO[str] | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stopping: asyncio.Event | None = None
        self._startup_error: BaseException | None = None

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    async def open(self) -> None:
        """Listen (``port`` 0 takes a free port, then ``port`` says which)."""
        self._loop = asyncio.get_running_loop()
        if self.ground_truth_path is not None:
            self._truth_file = self.ground_truth_path.open("a", encoding="utf-8")
        self._server = await self._loop.create_server(
            lambda: _Connection(self), self.host, self.port, backlog=4096, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
        if self._timer is not None:
            self._timer.cancel()
        if self._truth_file is not None:
            self._truth_file.close()
            self._truth_file = None

    async def serve(self) -> None:
        """Run until ``stop()`` (or until cancelled)."""
        self._stopping = asyncio.Event()
        await self.open()
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            await self.close()

    def start(self) -> str:
        """Serve on a background thread; returns the base URL once listening."""
        def run() -> None:
            try:
                asyncio.run(self.serve())
            except BaseException as exc:  # reported to the caller of start()
                self._startup_error = exc
                self._ready.set()
        self._thread = threading.Thread(target=run, name="synthetic-server", daemon=True)
        self._thread.start()
        self._ready.wait(10.0)
        if self._startup_error is not None:
            raise self._startup_error
        return self.base_url

    def stop(self) -> None:
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join(10.0)

    def __enter__(self) -> SyntheticServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what the server reports about itself -------------------------------------------

    def ground_truth(self) -> dict[str, Any]:
        offset = self.perf_to_unix_offset_s
        return {"ttft_s": self.ttft_s, "itl_s": self.itl_s, "tokens": self.tokens,
                "perf_to_unix_offset_s": offset,
                "requests": [t.to_dict(offset) for t in self.truths]}

    def metrics_text(self) -> str:
        rows = [
            ("prompt_tokens_total", "counter", "Number of prompt tokens processed.",
             self.prompt_tokens_total),
            ("prompt_seconds_total", "counter", "Prompt process time",
             self.prompt_seconds_total),
            ("tokens_predicted_total", "counter", "Number of generation tokens processed.",
             self.tokens_predicted_total),
            ("tokens_predicted_seconds_total", "counter", "Predict process time",
             self.tokens_predicted_seconds_total),
            ("requests_processing", "gauge", "Number of requests processing.",
             self.requests_processing),
            ("requests_deferred", "gauge", "Number of requests deferred.", 0),
        ]
        out = []
        for name, kind, help_text, value in rows:
            out += [f"# HELP llamacpp:{name} {help_text}", f"# TYPE llamacpp:{name} {kind}",
                    f"llamacpp:{name} {value}"]
        return "\n".join(out) + "\n"

    # -- chat ------------------------------------------------------------------------------

    def chat(self, proto: _Connection, body: dict[str, Any]) -> None:
        """Begin answering one chat request on ``proto``."""
        now = time.perf_counter()
        prompt = _prompt_text(body.get("messages"))
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        limit = limit if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0 \
            else None
        # The answer's own length is ``tokens``; max_tokens cuts it short, and ignore_eos
        # (llama.cpp, vLLM) makes it run on to max_tokens.
        if limit is not None and (limit <= self.tokens or body.get("ignore_eos")):
            planned, finish = limit, "length"
        else:
            planned, finish = self.tokens, "stop"
        stream = bool(body.get("stream"))
        truth = RequestTruth(next(self._ids), now, len(prompt.split()), planned, stream,
                             prompt_digest=hashlib.sha1(prompt.encode("utf-8")).hexdigest()[:16])
        self.truths.append(truth)
        self.requests_processing += 1
        created = int(time.time())
        if not stream:
            delay = self.ttft_s + (planned - 1) * self.itl_s
            assert self._loop is not None
            self._loop.call_later(delay, self._answer_whole, proto, truth, created, finish)
            return
        proto.start_stream()
        head = (f'data: {{"id":"chatcmpl-{truth.request_id}","object":"chat.completion.chunk",'
                f'"created":{created},"model":"{MODEL_ID}","choices":[{{"index":0,"delta":')
        prefix = head.encode() + b'{"content":"'
        if self.role_chunk:
            proto.write_chunk(head.encode() + b'{"role":"assistant","content":null},'
                              b'"finish_reason":null}]}\n\n')
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        s = _Stream(proto, truth, prefix, now + self.ttft_s, include_usage, finish)
        proto.streams.append(s)
        self._push(s)

    def _push(self, s: _Stream) -> None:
        heapq.heappush(self._heap, (s.next_due_s, next(self._seq), s))
        if s.next_due_s < self._timer_due_s:
            self._arm()

    def _arm(self) -> None:
        assert self._loop is not None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._heap:
            self._timer_due_s = float("inf")
            return
        due = self._heap[0][0]
        self._timer_due_s = due
        self._timer = self._loop.call_at(self._loop.time() + due - time.perf_counter(),
                                         self._tick)

    def _tick(self) -> None:
        """Write every token that is due (the loop's timers fire up to a millisecond early
        or late; a token is never written before its due time)."""
        self._timer = None
        heap, itl = self._heap, self.itl_s
        perf = time.perf_counter
        now = perf()
        while heap and heap[0][0] <= now:
            _, _, s = heapq.heappop(heap)
            if s.closed:
                continue
            truth = s.truth
            word = (_WORD_BYTES if s.written == 0 else _SPACED_WORD_BYTES)[
                (truth.request_id * 7 + s.written) % len(WORDS)]
            s.proto.write_chunk(s.prefix + word + _SUFFIX)
            truth.token_perf_s.append(perf())
            s.written += 1
            if s.written >= truth.planned_tokens:
                self._finish_stream(s)
            else:
                s.next_due_s = s.first_due_s + s.written * itl
                heapq.heappush(heap, (s.next_due_s, next(self._seq), s))
            now = perf()
        self._arm()

    def _finish_stream(self, s: _Stream) -> None:
        truth = s.truth
        tail = {"id": f"chatcmpl-{truth.request_id}", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": MODEL_ID,
                "choices": [{"index": 0, "delta": {}, "finish_reason": s.finish_reason}]}
        last: dict[str, Any] = tail
        if s.include_usage:
            last = {**tail, "choices": [], "usage": self._usage(truth)}
        last["timings"] = self._timings(truth)
        frames = b"data: " + json.dumps(tail).encode() + b"\n\n"
        if last is not tail:
            frames += b"data: " + json.dumps(last).encode() + b"\n\n"
        s.proto.write_chunk(frames + b"data: [DONE]\n\n")
        s.proto.end_message()
        s.closed = True
        self._request_done(truth, "completed")

    def _answer_whole(self, proto: _Connection, truth: RequestTruth, created: int,
                      finish: str) -> None:
        if proto.lost:
            self._request_done(truth, "client_closed")
            return
        words = [WORDS[(truth.request_id * 7 + k) % len(WORDS)] for k in range(truth.planned_tokens)]
        # Not streamed: no token is written on its own, so the token times are the schedule.
        first = truth.received_perf_s + self.ttft_s
        truth.token_perf_s = [first + k * self.itl_s for k in range(truth.planned_tokens)]
        body = {"id": f"chatcmpl-{truth.request_id}", "object": "chat.completion",
                "created": created, "model": MODEL_ID,
                "choices": [{"index": 0, "finish_reason": finish,
                             "message": {"role": "assistant", "content": " ".join(words)}}],
                "usage": self._usage(truth), "timings": self._timings(truth)}
        proto.send_json(200, body)
        self._request_done(truth, "completed")

    def _usage(self, truth: RequestTruth) -> dict[str, int]:
        n = len(truth.token_perf_s)
        return {"prompt_tokens": truth.prompt_tokens, "completion_tokens": n,
                "total_tokens": truth.prompt_tokens + n}

    def _timings(self, truth: RequestTruth) -> dict[str, Any]:
        # llama.cpp's definitions: prompt_ms until the first token; predicted_ms from the
        # first token to the last (n tokens over n - 1 gaps).
        times = truth.token_perf_s
        prompt_ms = ((times[0] if times else time.perf_counter()) - truth.received_perf_s) * 1e3
        predicted_ms = (times[-1] - times[0]) * 1e3 if times else 0.0
        n = len(times)
        return {"cache_n": 0, "prompt_n": truth.prompt_tokens, "prompt_ms": prompt_ms,
                "prompt_per_second": truth.prompt_tokens / prompt_ms * 1e3 if prompt_ms else 0.0,
                "predicted_n": n, "predicted_ms": predicted_ms,
                "predicted_per_second": n / predicted_ms * 1e3 if predicted_ms else 0.0}

    def _request_done(self, truth: RequestTruth, status: str) -> None:
        if truth.status != "in_flight":
            return
        truth.status = status
        truth.end_perf_s = time.perf_counter()
        self.requests_processing -= 1
        times = truth.token_perf_s
        self.prompt_tokens_total += truth.prompt_tokens
        if times:
            self.prompt_seconds_total += times[0] - truth.received_perf_s
            self.tokens_predicted_total += len(times)
            self.tokens_predicted_seconds_total += times[-1] - times[0]
        if self._truth_file is not None:
            self._truth_file.write(json.dumps(truth.to_dict(self.perf_to_unix_offset_s)) + "\n")
            self._truth_file.flush()

    def stream_lost(self, s: _Stream) -> None:
        s.closed = True
        self._request_done(s.truth, "client_closed")


class _Connection(asyncio.Protocol):
    """One client connection: h11 reads requests; responses are written as they are made.
    Requests on one connection are answered one at a time (HTTP/1.1 without pipelining)."""

    def __init__(self, server: SyntheticServer) -> None:
        self.server = server
        self.conn = h11.Connection(h11.SERVER)
        self.transport: asyncio.Transport | None = None
        self.streams: list[_Stream] = []
        self.lost = False
        self._request: h11.Request | None = None
        self._body = bytearray()
        self._chunked = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        for s in self.streams:
            if not s.closed:
                self.server.stream_lost(s)
        self.streams.clear()

    def data_received(self, data: bytes) -> None:
        try:
            self.conn.receive_data(data)
        except h11.RemoteProtocolError:
            self._abort()
            return
        self._process()

    def eof_received(self) -> bool | None:
        with contextlib.suppress(h11.RemoteProtocolError):
            self.conn.receive_data(b"")
        return True  # half-close: a client may still be reading its answer

    def _process(self) -> None:
        while True:
            try:
                event = self.conn.next_event()
            except h11.RemoteProtocolError:
                self._abort()
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Request):
                self._request, self._body = event, bytearray()
            elif isinstance(event, h11.Data):
                self._body += event.data
            elif isinstance(event, h11.EndOfMessage):
                self._route()
            elif isinstance(event, h11.ConnectionClosed):
                return

    def _route(self) -> None:
        req = self._request
        assert req is not None
        path = req.target.split(b"?", 1)[0].decode("latin-1").rstrip("/")
        method = req.method
        server = self.server
        body: Any = None
        if method == b"POST":
            try:
                body = json.loads(self._body or b"{}")
            except ValueError:
                self.send_json(400, {"error": {"message": "the body is not JSON"}})
                return
            if not isinstance(body, dict):
                self.send_json(400, {"error": {"message": "the body is not a JSON object"}})
                return
        if method == b"POST" and path in ("/v1/chat/completions", "/chat/completions"):
            server.chat(self, body)
        elif method == b"GET" and path in ("/v1/models", "/models"):
            self.send_json(200, {"object": "list", "data": [
                {"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "kurabe"}]})
        elif method == b"POST" and path == "/tokenize":
            self.send_json(200, {"tokens": tokenize(str(body.get("content") or ""))})
        elif method == b"POST" and path == "/apply-template":
            self.send_json(200, {"prompt": _prompt_text(body.get("messages"))})
        elif method == b"GET" and path == "/props":
            self.send_json(200, {"build_info": "kurabe-synthetic",
                                 "default_generation_settings": {"n_ctx": 1 << 20},
                                 "model_path": MODEL_ID})
        elif method == b"GET" and path == "/health":
            self.send_json(200, {"status": "ok"})
        elif method == b"GET" and path == "/metrics":
            self._send_body(200, server.metrics_text().encode(),
                            "text/plain; version=0.0.4; charset=utf-8")
        elif method == b"GET" and path == "/ground_truth":
            self.send_json(200, server.ground_truth())
        else:
            self.send_json(404, {"error": {"message": f"no route {method.decode()} {path}"}})

    # -- writing ---------------------------------------------------------------------------

    def _send(self, event: h11.Event) -> None:
        data = self.conn.send(event)
        if data and self.transport is not None and not self.lost:
            self.transport.write(data)

    def _send_body(self, status: int, payload: bytes, content_type: str) -> None:
        if self.lost:
            return
        self._send(h11.Response(status_code=status, headers=[
            ("content-type", content_type), ("content-length", str(len(payload)))]))
        if self._request is None or self._request.method != b"HEAD":  # HEAD: head only
            self._send(h11.Data(data=payload))
        self.end_message()

    def send_json(self, status: int, body: Any) -> None:
        self._send_body(status, json.dumps(body).encode(), "application/json")

    def start_stream(self) -> None:
        req = self._request
        self._chunked = req is not None and req.http_version == b"1.1"
        headers = [("content-type", "text/event-stream"), ("cache-control", "no-cache")]
        if self._chunked:
            headers.append(("transfer-encoding", "chunked"))
        self._send(h11.Response(status_code=200, headers=headers))

    def write_chunk(self, data: bytes) -> None:
        """One piece of a streamed body, framed by hand (h11 only writes the head and the
        end; its chunked writer would add a call per token)."""
        if self.lost or self.transport is None:
            return
        if self._chunked:
            self.transport.write(b"%x\r\n%b\r\n" % (len(data), data))
        else:
            self.transport.write(data)

    def end_message(self) -> None:
        if self.lost:
            return
        if self._chunked or self.conn.their_state is not h11.MUST_CLOSE:
            # h11 has not seen the hand-framed data; its end-of-message bytes close the body.
            data = self.conn.send(h11.EndOfMessage())
            if data and self.transport is not None:
                self.transport.write(data)
        if self.conn.our_state is h11.MUST_CLOSE or self.conn.their_state is h11.MUST_CLOSE:
            self._close()
            return
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.streams = [s for s in self.streams if not s.closed]
            self.conn.start_next_cycle()
            self._process()
        elif self.conn.our_state is h11.DONE:
            self._close()

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


def spawn(*, ttft_ms: float = 20.0, itl_ms: float = 50.0, tokens: int = 64,
          ground_truth_path: Path | None = None, role_chunk: bool = True,
          extra_env: dict[str, str] | None = None,
          ) -> tuple[subprocess.Popen[str], str]:
    """Start the server as a separate process; returns the process and its base URL.
    The caller stops it (``terminate()``, then ``wait()``)."""
    cmd = [sys.executable, "-m", "kurabe.load.synthetic", "--port", "0",
           "--ttft-ms", str(ttft_ms), "--itl-ms", str(itl_ms), "--tokens", str(tokens)]
    if ground_truth_path is not None:
        cmd += ["--ground-truth", str(ground_truth_path)]
    if not role_chunk:
        cmd.append("--no-role-chunk")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, **(extra_env or {})})
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("http"):
        proc.kill()
        proc.wait()
        raise RuntimeError(f"the synthetic server did not start (it printed {line!r})")
    return proc, line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kurabe.load.synthetic",
        description="A streaming OpenAI-compatible server with exactly known timing.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    parser.add_argument("--ttft-ms", type=float, default=20.0,
                        help="from a request's arrival to its first token")
    parser.add_argument("--itl-ms", type=float, default=50.0, help="between tokens")
    parser.add_argument("--tokens", type=int, default=64,
                        help="answer length when the request does not force max_tokens")
    parser.add_argument("--ground-truth", type=Path, default=None, metavar="FILE.jsonl",
                        help="append every finished request's timing to this file")
    parser.add_argument("--no-role-chunk", action="store_true",
                        help="do not send the role-only first chunk")
    args = parser.parse_args(argv)
    if args.ttft_ms < 0 or args.itl_ms <= 0 or args.tokens < 1:
        parser.error("--ttft-ms must be >= 0, --itl-ms > 0 and --tokens >= 1")
    if args.ground_truth is not None and not args.ground_truth.parent.is_dir():
        parser.error(f"--ground-truth {args.ground_truth}: its folder does not exist")
    server = SyntheticServer(ttft_s=args.ttft_ms / 1e3, itl_s=args.itl_ms / 1e3,
                             tokens=args.tokens, host=args.host, port=args.port,
                             role_chunk=not args.no_role_chunk,
                             ground_truth_path=args.ground_truth)

    async def run() -> None:
        await server.open()
        print(server.base_url, flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await server.close()

    with contextlib.suppress(KeyboardInterrupt):
        if importlib.util.find_spec("uvloop") is not None:
            import uvloop
            uvloop.run(run())
        else:
            asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
