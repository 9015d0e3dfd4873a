"""An in-process scripted backend: replays answers as a real SSE stream, with set timing.

The fast seam for testing everything above the backends (schedule, resume, failure
accounting, sweeps, quality stages) without a server process. The client talks to it through
an ``httpx`` transport, so the same SSE parsing, timing and error handling run as against a
real server; only the network is missing.

A script is registered under a name and used as ``source = "scripted:NAME"``. It maps each
request body to a ``ScriptedReply``: text streamed one chunk per token (a string is split
into characters, a list is taken as the tokens) or several tokens to a chunk, optional
reasoning before it, a finish reason, the delay before the first token and between tokens,
or a fault (``FAULTS``: an HTTP error with or without Retry-After, a dropped connection, a
stream that hangs, resets, breaks its framing or ends early, a plain JSON answer, an error
event, an engine that dies), and how the bytes are cut into network chunks. The backend keeps its
own clock for each reply and reports it as llama.cpp's ``timings`` would (``predicted_ms``
from the first token to the last, ``predicted_per_second`` = (n − 1) / predicted_ms), in
every chunk too when asked (llama.cpp's ``timings_per_token``), so figures can be checked
against it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from kurabe import KurabeError
from kurabe.backends.base import Backend, register
from kurabe.records import Endpoint, EngineInfo

if TYPE_CHECKING:
    from kurabe.config import ModelConfig
    from kurabe.modelfiles.resolve import ResolvedModel


# Faults a reply can inject, after ``fault_after`` token chunks of its stream:
FAULTS = {
    "hang": "go silent without closing the connection",
    "reset": "reset the connection",
    "truncate": "end the stream cleanly, with neither a finish_reason nor [DONE]",
    "bad_json": "send an event whose data is not JSON",
    "no_data_prefix": "send an event line without its 'data:' field name",
    "error_event": "send an error object inside the stream",
    "die": "the engine dies: the connection resets and every later request is refused",
    "not_a_stream": "answer with one plain JSON chat.completion (application/json)",
    "refuse": "refuse the connection (this request only)",
}


@dataclass
class ScriptedReply:
    content: str | Sequence[str] = ""
    reasoning: str | Sequence[str] = ""
    finish_reason: str = "stop"
    first_token_s: float = 0.0  # delay before the first token (prompt processing)
    token_s: float = 0.0  # delay between tokens
    # Tokens per chunk: an int, or the sizes of the chunks in turn (the last size repeats),
    # e.g. [8, 1]: the first chunk holds 8 tokens, as when a server holds text back.
    tokens_per_chunk: int | Sequence[int] = 1
    timings_per_chunk: bool = False  # running timings in every chunk (timings_per_token)
    http_status: int = 200  # != 200: answer with this status and ``error_body``
    error_body: str = "scripted error"
    retry_after: str | None = None  # the Retry-After header of an http_status answer
    drop: bool = False  # close the connection before answering
    die: bool = False  # the engine dies: this request and every later one fails
    fault: str | None = None  # one of FAULTS
    fault_after: int = 0  # token chunks streamed before the fault
    send_done: bool = True  # end the stream with data: [DONE]
    # Cut the response bytes into network chunks of this many bytes (1: every UTF-8
    # sequence split), instead of one network chunk per event.
    network_chunk_bytes: int | None = None
    raw: Sequence[bytes] | None = None  # send exactly these network chunks as the body
    content_type: str = "text/event-stream"

    def __post_init__(self) -> None:
        if self.fault is not None and self.fault not in FAULTS:
            raise ValueError(f"unknown scripted fault {self.fault!r} (known: {', '.join(FAULTS)})")

    def tokens(self) -> tuple[list[str], list[str]]:
        def split(x: str | Sequence[str]) -> list[str]:
            return list(x) if isinstance(x, str) else [str(t) for t in x]

        return split(self.reasoning), split(self.content)

    def chunk_sizes(self) -> Iterator[int]:
        sizes = ([self.tokens_per_chunk] if isinstance(self.tokens_per_chunk, int)
                 else list(self.tokens_per_chunk)) or [1]
        yield from sizes
        while True:
            yield sizes[-1]


Script = Callable[[dict[str, Any]], ScriptedReply]


def last_user_text(body: dict[str, Any]) -> str:
    users = [m for m in body.get("messages") or [] if m.get("role") == "user"]
    content = users[-1].get("content", "") if users else ""
    return content if isinstance(content, str) else json.dumps(content)


def _reply_list(replies: Sequence[ScriptedReply]) -> Script:
    """Replies in turn (the last one repeats)."""
    state = {"n": 0}

    def script(_body: dict[str, Any]) -> ScriptedReply:
        i = min(state["n"], len(replies) - 1)
        state["n"] += 1
        return replies[i]

    return script


_SCRIPTS: dict[str, Script] = {
    # Echoes the last user message (at most max_tokens characters), 1 ms a token.
    "echo": lambda body: ScriptedReply(
        content=last_user_text(body)[: int(body.get("max_tokens") or 64)], token_s=0.001),
}


def register_script(name: str, script: Script | ScriptedReply | Sequence[ScriptedReply]) -> str:
    """Make ``scripted:NAME`` available in this process; returns the source string."""
    if isinstance(script, ScriptedReply):
        reply = script
        _SCRIPTS[name] = lambda _body: reply
    elif callable(script):
        _SCRIPTS[name] = script
    else:
        _SCRIPTS[name] = _reply_list(list(script))
    return f"scripted:{name}"


def unregister_script(name: str) -> None:
    _SCRIPTS.pop(name, None)


def script_of(source: str) -> Script:
    name = source.removeprefix("scripted:")
    try:
        return _SCRIPTS[name]
    except KeyError:
        raise KurabeError(f"{source}: no scripted model of that name in this process (known: "
                          + ", ".join(sorted(_SCRIPTS)) + ")") from None


@dataclass
class ScriptedServer:
    """The server side: what was asked, and the server's own clock for each answer."""

    script: Script
    requests: list[dict[str, Any]] = field(default_factory=list)
    dead: bool = False

    def _sse(self, payload: dict[str, Any]) -> bytes:
        return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()

    async def _fault(self, reply: ScriptedReply) -> AsyncIterator[bytes]:
        """The fault's own bytes (a fault that ends the stream raises or never returns)."""
        fault = reply.fault
        if fault == "hang":
            await asyncio.Event().wait()  # until the client gives up
        elif fault in ("reset", "die"):
            if fault == "die":
                self.dead = True
            raise httpx.ReadError("[Errno 104] Connection reset by peer")
        elif fault == "bad_json":
            yield b'data: {"choices": [{"delta": {"content": "broken\n\n'
        elif fault == "no_data_prefix":
            yield b'{"choices": [{"index": 0, "delta": {"content": "x"}}]}\n\n'
        elif fault == "error_event":
            yield self._sse({"error": {"message": "scripted failure inside the stream",
                                       "type": "server_error", "code": 500}})

    async def stream(self, reply: ScriptedReply, body: dict[str, Any]) -> AsyncIterator[bytes]:
        """The SSE body, with the reply's fault in place of the event after ``fault_after``
        token chunks (the final event, which carries the finish reason, counts as one)."""
        sent = 0  # token chunks sent
        async for counts, data in self._events(reply, body):
            if reply.fault is not None and counts and sent >= reply.fault_after:
                async for extra in self._fault(reply):
                    yield extra
                return  # truncate, bad framing, error event: nothing follows
            yield data
            sent += counts

    async def _events(self, reply: ScriptedReply, body: dict[str, Any]
                      ) -> AsyncIterator[tuple[bool, bytes]]:
        """(whether it counts as a token chunk, the event's bytes), in order."""
        reasoning, content = reply.tokens()
        limit = int(body.get("max_tokens") or 1 << 30)
        tokens = [("reasoning", t) for t in reasoning] + [("content", t) for t in content]
        finish = reply.finish_reason
        if len(tokens) > limit:
            tokens, finish = tokens[:limit], "length"
        t0 = time.perf_counter()
        if reply.first_token_s:
            await asyncio.sleep(reply.first_token_s)
        t_first = t_last = None
        per_chunk = reply.timings_per_chunk or bool(body.get("timings_per_token"))
        prompt_n = sum(len(str(m.get("content", ""))) for m in body.get("messages") or [])

        def timings(n: int) -> dict[str, Any]:
            predicted_ms = ((t_last - t_first) * 1000) if t_first and t_last else 0.0
            prompt_ms = ((t_first or time.perf_counter()) - t0) * 1000
            return {"prompt_n": prompt_n, "prompt_ms": prompt_ms,
                    "prompt_per_second": prompt_n / (prompt_ms / 1000) if prompt_ms else None,
                    "predicted_n": n, "predicted_ms": predicted_ms,
                    "predicted_per_second": ((n - 1) / (predicted_ms / 1000)
                                             if n > 1 and predicted_ms else None),
                    "cache_n": 0}

        yield False, self._sse({"choices": [{"index": 0, "delta": {"role": "assistant"}}]})
        sizes = reply.chunk_sizes()
        want = next(sizes)
        held: dict[str, str] = {}
        for i, (kind, text) in enumerate(tokens):
            if i and reply.token_s:
                await asyncio.sleep(reply.token_s)
            t_last = time.perf_counter()
            t_first = t_first or t_last
            field_name = "reasoning_content" if kind == "reasoning" else "content"
            held[field_name] = held.get(field_name, "") + text
            want -= 1
            if want > 0 and i < len(tokens) - 1:
                continue  # the chunk is not full yet: this token waits in it
            payload: dict[str, Any] = {"choices": [{"index": 0, "delta": held}]}
            if per_chunk:
                payload["timings"] = timings(i + 1)
            yield True, self._sse(payload)
            held, want = {}, next(sizes)
        n = len(tokens)
        yield True, self._sse({
            "choices": [{"index": 0, "delta": {}, "finish_reason": finish}],
            "usage": {"prompt_tokens": prompt_n, "completion_tokens": n,
                      "total_tokens": prompt_n + n},
            "timings": timings(n)})
        if reply.send_done:
            yield False, b"data: [DONE]\n\n"

    def completion(self, reply: ScriptedReply, body: dict[str, Any]) -> dict[str, Any]:
        """The whole answer as one plain chat.completion object (not a stream)."""
        reasoning, content = reply.tokens()
        message: dict[str, Any] = {"role": "assistant", "content": "".join(content)}
        if reasoning:
            message["reasoning_content"] = "".join(reasoning)
        n = len(reasoning) + len(content)
        return {"id": "scripted", "object": "chat.completion", "model": body.get("model"),
                "choices": [{"index": 0, "message": message,
                             "finish_reason": reply.finish_reason}],
                "usage": {"prompt_tokens": 1, "completion_tokens": n, "total_tokens": n + 1}}


class _Transport(httpx.AsyncBaseTransport):
    def __init__(self, server: ScriptedServer) -> None:
        self.server = server

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if self.server.dead:
            raise httpx.ConnectError("scripted engine is not running", request=request)
        if path.endswith("/models"):
            return httpx.Response(200, json={"data": [{"id": "scripted"}]})
        body = json.loads(await request.aread() or b"{}")
        if path.endswith("/tokenize"):
            return httpx.Response(200, json={"tokens": list(range(len(body.get("content", ""))))})
        if not path.endswith("/chat/completions"):
            return httpx.Response(404, text="not found")
        self.server.requests.append(body)
        reply = self.server.script(body)
        if reply.die:
            self.server.dead = True
        if reply.die or reply.drop:
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.",
                                            request=request)
        if reply.fault == "refuse":
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        if reply.http_status != 200:
            headers = {"retry-after": reply.retry_after} if reply.retry_after is not None else {}
            return httpx.Response(reply.http_status, text=reply.error_body, headers=headers)
        if reply.fault == "not_a_stream":
            return httpx.Response(200, json=self.server.completion(reply, body))
        chunks = (_raw(reply.raw) if reply.raw is not None
                  else self.server.stream(reply, body))
        return httpx.Response(200, headers={"content-type": reply.content_type},
                              stream=_Stream(chunks, reply.network_chunk_bytes))


async def _raw(chunks: Sequence[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


class _Stream(httpx.AsyncByteStream):
    def __init__(self, chunks: AsyncIterator[bytes], size: int | None = None) -> None:
        self._chunks = chunks
        self._size = size

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._chunks:
            if not self._size:
                yield chunk
                continue
            for i in range(0, len(chunk), self._size):
                yield chunk[i:i + self._size]


@register
class ScriptedBackend(Backend):
    kind = "scripted"

    def __init__(self, name: str, source: str, ctx: int | None = None) -> None:
        self.name = name
        self.source = source
        self.server = ScriptedServer(script_of(source))
        self._started = False
        self.ctx = ctx  # engine.ctx, reported as a llama.cpp server reports its context

    @classmethod
    def from_config(cls, model: ModelConfig, resolved: ResolvedModel, log_dir: Path
                    ) -> ScriptedBackend:
        return cls(model.name, model.source, model.engine.ctx)

    def start(self) -> Endpoint:
        self._started = True
        return self.endpoint

    def stop(self) -> None:
        self._started = False

    def alive(self) -> bool:
        return not self.server.dead

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint(base_url=f"http://scripted.invalid/{self.name}/v1", model_id=self.name)

    def info(self) -> EngineInfo:
        return EngineInfo(kind="scripted (in-process)", version="kurabe scripted backend",
                          command=None, base_url=self.endpoint.base_url)

    def transport(self) -> httpx.AsyncBaseTransport:
        return _Transport(self.server)

    async def count_tokens(self, http: httpx.AsyncClient, text: str) -> int | None:
        return len(text) if text else None  # one token per character, as it streams them

    async def count_prompt_tokens(self, http: httpx.AsyncClient,
                                  messages: list[dict[str, str]]) -> int | None:
        # As its usage counts a prompt: one token per character of every message.
        return sum(len(str(m.get("content", ""))) for m in messages)

    async def context_size(self, http: httpx.AsyncClient) -> int | None:
        return self.ctx
