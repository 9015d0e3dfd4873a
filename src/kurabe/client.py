"""Streaming chat client: timestamps every chunk and keeps reasoning apart from the answer.

The only module that knows about SSE framing. Each request yields a ``StreamRecord`` holding
everything the metrics are computed from, so any figure can be recomputed from the store.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
from httpx_sse import aconnect_sse

from kurabe.backends.base import Endpoint


@dataclass
class Chunk:
    t_s: float  # seconds since the request was sent (monotonic clock)
    content: str = ""
    reasoning: str = ""


@dataclass
class StreamRecord:
    sent_at_unix_s: float
    chunks: list[Chunk] = field(default_factory=list)
    t_done_s: float | None = None  # end of stream ([DONE] or connection close)
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    timings: dict[str, Any] | None = None  # llama.cpp's own clock for this request
    http_status: int | None = None
    error: str | None = None
    attempts: int = 1

    @property
    def answer(self) -> str:
        return "".join(c.content for c in self.chunks)

    @property
    def reasoning(self) -> str:
        return "".join(c.reasoning for c in self.chunks)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["chunks"] = [[c.t_s, c.content, c.reasoning] for c in self.chunks]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StreamRecord:
        data = dict(data)
        data["chunks"] = [Chunk(t, c, r) for t, c, r in data.get("chunks") or []]
        return cls(**data)


@dataclass
class ChatRequest:
    messages: list[dict[str, str]]
    max_tokens: int
    temperature: float = 0.0
    seed: int | None = 0
    fixed_length: bool = False  # ignore EOS so every model generates max_tokens tokens
    extra_body: dict[str, Any] = field(default_factory=dict)


def request_body(endpoint: Endpoint, req: ChatRequest) -> dict[str, Any]:
    body: dict[str, Any] = {
        "messages": req.messages,
        "max_tokens": req.max_tokens,
        "temperature": req.temperature,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if endpoint.model_id:
        body["model"] = endpoint.model_id
    if req.seed is not None:
        body["seed"] = req.seed
    if endpoint.engine_kind == "llama.cpp":
        # Repeats must measure the same work: never serve the prompt from llama.cpp's cache.
        body["cache_prompt"] = False
    if req.fixed_length:
        body["ignore_eos"] = True  # llama.cpp and vLLM honour it
    body.update(req.extra_body)
    return body


def _delta_text(delta: dict[str, Any]) -> tuple[str, str]:
    content = delta.get("content") or ""
    # llama.cpp and older vLLM: reasoning_content; newer vLLM: reasoning.
    reasoning = delta.get("reasoning_content") or delta.get("reasoning") or ""
    return content, reasoning


async def _drain(events) -> None:
    async for _ in events:
        pass


class ChatClient:
    """One HTTP connection pool per endpoint; ``stream_chat`` never raises for server errors."""

    def __init__(self, endpoint: Endpoint, *, timeout_s: float = 600.0) -> None:
        self.endpoint = endpoint
        headers = {}
        if endpoint.api_key:
            headers["Authorization"] = f"Bearer {endpoint.api_key}"
        # No connection cap: a request must never wait in a client-side pool inside its own
        # TTFT. Connections are reused (the stream is read to its end, see stream_chat).
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s, connect=10.0, pool=10.0), headers=headers,
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=None),
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> ChatClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def count_tokens(self, text: str) -> int | None:
        """Tokens of ``text`` by the model's own tokenizer (llama.cpp's /tokenize), else None."""
        if self.endpoint.engine_kind != "llama.cpp" or not text:
            return None
        for attempt in range(2):  # a pooled connection the server closed: retry once
            try:
                resp = await self._http.post(f"{self.endpoint.server_root}/tokenize",
                                             json={"content": text, "add_special": False})
                if resp.status_code != 200:
                    return None
                return len(resp.json().get("tokens") or [])
            except httpx.RemoteProtocolError:
                continue
            except (httpx.HTTPError, ValueError):
                return None
        return None

    async def stream_chat(self, req: ChatRequest) -> StreamRecord:
        """Send one streamed chat request and record it. A pooled keep-alive connection the
        server already closed fails before any response byte: that attempt is retried once on
        a fresh connection, with the clock restarted, and counted in ``attempts``."""
        record = await self._stream_once(req)
        if record.error and record.http_status is None and not record.chunks \
                and record.error.startswith(("RemoteProtocolError", "ReadError", "WriteError")):
            retry = await self._stream_once(req)
            retry.attempts = 2
            return retry
        return record

    async def _stream_once(self, req: ChatRequest) -> StreamRecord:
        body = request_body(self.endpoint, req)
        url = f"{self.endpoint.base_url}/chat/completions"
        record = StreamRecord(sent_at_unix_s=time.time())
        t0 = time.perf_counter()
        try:
            async with aconnect_sse(self._http, "POST", url, json=body) as source:
                record.http_status = source.response.status_code
                if source.response.status_code != 200:
                    text = (await source.response.aread()).decode("utf-8", "replace")
                    record.error = f"HTTP {source.response.status_code}: {text[:500]}"
                    return record
                events = source.aiter_sse()
                async for event in events:
                    now = time.perf_counter() - t0
                    if event.data.strip() == "[DONE]":
                        record.t_done_s = now
                        break
                    self._absorb(record, now, event.data)
                if record.t_done_s is not None:
                    # Read the body to its end so the connection goes back to the pool
                    # (breaking off would close it, and the next request would pay a connect).
                    try:
                        await asyncio.wait_for(_drain(events), timeout=1.0)
                    except asyncio.TimeoutError:
                        pass
        except httpx.HTTPError as exc:
            record.error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        finally:
            if record.t_done_s is None:
                record.t_done_s = time.perf_counter() - t0
        return record

    @staticmethod
    def _absorb(record: StreamRecord, now: float, data: str) -> None:
        try:
            payload = json.loads(data)
        except json.JSONDecodeError:
            record.error = f"unparseable stream event: {data[:200]}"
            return
        if "error" in payload:
            record.error = json.dumps(payload["error"], ensure_ascii=False)[:500]
            return
        for choice in payload.get("choices") or []:
            content, reasoning = _delta_text(choice.get("delta") or {})
            if content or reasoning:
                record.chunks.append(Chunk(now, content, reasoning))
            if choice.get("finish_reason"):
                record.finish_reason = choice["finish_reason"]
        if payload.get("usage"):
            record.usage = payload["usage"]
        if payload.get("timings"):
            record.timings = payload["timings"]
