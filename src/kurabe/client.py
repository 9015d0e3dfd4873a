"""Streaming chat client: timestamps every chunk and keeps reasoning apart from the answer.

The only module that knows about SSE framing. What to send is the backend's business
(``Backend.request_body``); the network is the backend's transport when it has one (the
in-process scripted backend), else a real connection pool. Each request yields a
``StreamRecord`` holding everything the metrics are computed from, so any figure can be
recomputed from the store.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any

import httpx
from httpx_sse import aconnect_sse

from kurabe.records import ChatRequest, Chunk, StreamRecord

if TYPE_CHECKING:
    from kurabe.backends.base import Backend


def _delta_text(delta: dict[str, Any]) -> tuple[str, str]:
    content = delta.get("content") or ""
    # llama.cpp and older vLLM: reasoning_content; newer vLLM: reasoning.
    reasoning = delta.get("reasoning_content") or delta.get("reasoning") or ""
    return content, reasoning


def _running_token_count(payload: dict[str, Any]) -> int | None:
    """The server's count of generated tokens so far, when a chunk carries one: llama.cpp's
    per-chunk ``timings`` (``timings_per_token``), or a per-chunk ``usage``."""
    for key, field in (("timings", "predicted_n"), ("usage", "completion_tokens")):
        value = (payload.get(key) or {}).get(field)
        if isinstance(value, int):
            return value
    return None


async def _drain(events) -> None:
    async for _ in events:
        pass


class ChatClient:
    """One HTTP connection pool per backend; ``stream_chat`` never raises for server errors."""

    def __init__(self, backend: Backend, *, timeout_s: float = 600.0) -> None:
        self.backend = backend
        self.endpoint = endpoint = backend.endpoint
        headers = {}
        if endpoint.api_key:
            headers["Authorization"] = f"Bearer {endpoint.api_key}"
        # No connection cap: a request must never wait in a client-side pool inside its own
        # TTFT. Connections are reused (the stream is read to its end, see stream_chat).
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s, connect=10.0, pool=10.0), headers=headers,
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=None),
            transport=backend.transport(),
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> ChatClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def count_tokens(self, text: str) -> int | None:
        """Tokens of ``text`` by the model's own tokenizer, when the backend can count."""
        return await self.backend.count_tokens(self._http, text)

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
        body = self.backend.request_body(req)
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
                    except TimeoutError:
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
        n_tokens = _running_token_count(payload)
        for choice in payload.get("choices") or []:
            content, reasoning = _delta_text(choice.get("delta") or {})
            if content or reasoning:
                record.chunks.append(Chunk(now, content, reasoning, n_tokens))
            if choice.get("finish_reason"):
                record.finish_reason = choice["finish_reason"]
        if payload.get("usage"):
            record.usage = payload["usage"]
        if payload.get("timings"):
            record.timings = payload["timings"]
