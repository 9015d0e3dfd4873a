"""Faults a real server rarely shows on demand, injected by a scripted loopback server."""

import asyncio
import json

from kurabe.backends.openai import OpenAIEndpoint
from kurabe.client import ChatClient
from kurabe.records import ChatRequest


def sse_body(texts):
    events = [{"choices": [{"delta": {"content": t}, "finish_reason": None}]} for t in texts]
    events.append({"choices": [{"delta": {}, "finish_reason": "stop"}],
                   "usage": {"prompt_tokens": 3, "completion_tokens": len(texts)}})
    return "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"


async def serve(behaviours):
    """Answer connection i with behaviours[i]: 'close' (drop it unanswered), 'ok', '500'."""
    calls = []

    async def handle(reader, writer):
        behaviour = behaviours[min(len(calls), len(behaviours) - 1)]
        calls.append(behaviour)
        await reader.readuntil(b"\r\n\r\n")
        if behaviour == "close":
            writer.close()
            return
        if behaviour == "500":
            body = b'{"error": "boom"}'
            writer.write(b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\n"
                         b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body))
        else:
            body = sse_body(["こん", "にちは"]).encode()
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                         b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], calls


def run(behaviours, **client_options):
    async def go():
        server, port, calls = await serve(behaviours)
        async with server:
            client = ChatClient(OpenAIEndpoint("fault", f"http://127.0.0.1:{port}/v1"),
                                **client_options)
            rec = await client.stream_chat(ChatRequest(messages=[], max_tokens=4))
            await client.aclose()
        return rec, calls
    return asyncio.run(go())


def test_a_connection_dropped_before_any_response_is_retried_at_once():
    rec, calls = run(["close", "ok"])
    assert calls == ["close", "ok"]
    assert rec.error is None and rec.attempts == 2
    assert rec.retries == [{"kind": "connection", "http_status": None, "waited_s": 0.0,
                            "error": rec.retries[0]["error"]}]
    assert rec.retries[0]["error"].startswith("RemoteProtocolError")
    assert rec.answer == "こんにちは" and rec.usage["completion_tokens"] == 2


def test_drops_beyond_max_retries_are_an_error_not_an_endless_retry():
    rec, calls = run(["close", "close", "close", "ok"], retry_backoff_s=0.01)
    assert len(calls) == 3 and rec.error.startswith("RemoteProtocolError")
    assert rec.error_kind == "connection" and rec.attempts == 3
    assert [r["waited_s"] for r in rec.retries] == [0.0, 0.01]  # then doubling backoff
    rec, calls = run(["close", "ok"], max_retries=0)
    assert len(calls) == 1 and rec.error_kind == "connection"


def test_server_errors_are_recorded_not_retried():
    rec, calls = run(["500", "ok"])
    assert calls == ["500"] and rec.http_status == 500 and "boom" in rec.error
    assert rec.error_kind == "http_5xx" and rec.retries == []


def test_a_prompt_refused_for_its_length_is_context_exceeded():
    """llama.cpp, OpenAI and vLLM each say so in their own words; any other 400 stays 4xx."""
    from kurabe.client import http_error_kind

    llama = ('{"error":{"code":400,"message":"request (590 tokens) exceeds the available '
             'context size (512 tokens), try increasing it","type":"exceed_context_size_error"}}')
    openai = '{"error":{"code":"context_length_exceeded","message":"..."}}'
    vllm = ('{"object":"error","message":"This model\'s maximum context length is 4096 '
            'tokens. However, you requested 5000 tokens."}')
    assert [http_error_kind(400, b) for b in (llama, openai, vllm)] == ["context_exceeded"] * 3
    assert http_error_kind(400, '{"error": "bad json"}') == "http_4xx"
    assert http_error_kind(500, llama) == "http_5xx"
