"""Managed and external engines against real llama.cpp servers."""

from __future__ import annotations

import asyncio
import os
import stat
import sys
from statistics import median

import httpx
import pytest

from kurabe.backends.base import EngineError, create_backend
from kurabe.backends.llamacpp import LlamaCppEndpoint, LlamaCppServer
from kurabe.backends.openai import OpenAIEndpoint
from kurabe.client import ChatClient
from kurabe.config import ModelConfig
from kurabe.metrics import speed_metrics
from kurabe.modelfiles.resolve import resolve_model
from kurabe.records import ChatRequest

pytestmark = pytest.mark.engine


def _stream(backend, n: int, **kw):
    async def go():
        async with ChatClient(backend) as client:
            return [await client.stream_chat(ChatRequest(**kw)) for _ in range(n)]
    return asyncio.run(go())


def test_client_decode_rate_agrees_with_the_servers_own_clock(smollm2_server):
    endpoint = smollm2_server
    records = _stream(endpoint, 8, messages=[{"role": "user", "content": "富士山について教えて。"}],
                      max_tokens=64, fixed_length=True)
    metrics = [speed_metrics(r) for r in records]
    assert all(r.error is None for r in records)
    assert all(m.output_tokens == 64 for m in metrics)  # ignore_eos honoured
    # llama.cpp's own timings: (predicted_n - 1) tokens over predicted_ms
    deviations = [m.decode_tokens_per_s / m.server_decode_tokens_per_s - 1 for m in metrics]
    assert abs(median(deviations)) < 0.03, deviations
    # The client's own clock, request by request. Chunks carry several tokens here (a Japanese
    # character split over two tokens is sent in one chunk, the first chunk included), and the
    # server's running count on each chunk says how many.
    assert all(m.token_attribution == "server" and m.clock_agreement for m in metrics)
    assert all(len(r.chunks) < 64 for r in records)
    client_deviations = [m.clock_agreement - 1 for m in metrics]
    # Within 2%: on a 2-core machine running the whole suite the median has measured
    # 0.8-1.2% (the client sees each chunk a little after the server timed it).
    assert abs(median(client_deviations)) < 0.02, client_deviations
    # and the server's figure is what its own raw fields say
    t = records[0].timings
    assert t["predicted_per_second"] == pytest.approx(
        1000 * (t["predicted_n"] - 1) / t["predicted_ms"], rel=1e-6)


def test_speed_requests_defeat_the_prompt_cache_and_cache_hits_are_seen(smollm2_server):
    endpoint = smollm2_server
    msg = [{"role": "user", "content": "Repeat after me: the same prompt twice."}]
    plain = _stream(endpoint, 2, messages=msg, max_tokens=4)
    assert [speed_metrics(r).cached_prompt_tokens for r in plain] == [0, 0]
    cached = _stream(endpoint, 2, messages=msg, max_tokens=4,
                     extra_body={"cache_prompt": True})
    assert speed_metrics(cached[1]).cached_prompt_tokens > 0


def test_engine_log_holds_buffer_sizes_and_chunks_are_timestamped(smollm2_server):
    server = smollm2_server
    log = server.log_path.read_text()
    assert "model buffer size" in log and "KV buffer size" in log
    assert "compute buffer size" in log
    rec = _stream(server, 1, messages=[{"role": "user", "content": "Hi"}], max_tokens=8)[0]
    times = [c.t_s for c in rec.chunks]
    assert times == sorted(times) and times[0] > 0
    assert rec.t_done_s >= times[-1]
    assert rec.usage["completion_tokens"] == 8 or rec.finish_reason == "stop"


def test_gemma_gets_its_own_turn_template(gemma_server):
    endpoint = gemma_server
    resp = httpx.post(f"{endpoint.endpoint.server_root}/apply-template",
                      json={"messages": [{"role": "user", "content": "こんにちは"}]}, timeout=30)
    prompt = resp.json()["prompt"]
    assert "<start_of_turn>user\nこんにちは<end_of_turn>\n<start_of_turn>model\n" in prompt
    assert "<|im_start|>" not in prompt


def test_a_bad_model_file_is_a_clear_error_and_leaves_no_process(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + os.urandom(64))
    server = LlamaCppServer("broken", bad, ctx=512, log_path=tmp_path / "broken.log",
                            startup_timeout_s=60)
    with pytest.raises(EngineError) as info:
        server.start()
    message = str(info.value)
    assert "broken" in message and "exited" in message and "broken.log" in message
    assert not server.alive()


def test_stop_ends_the_server_process(smollm2_path, tmp_path):
    server = LlamaCppServer("s", smollm2_path, ctx=512, log_path=tmp_path / "s.log")
    server.start()
    pid = server.pid
    os.kill(pid, 0)  # running
    server.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_llama_server_found_on_path_is_used_and_its_version_recorded(smollm2_path, tmp_path,
                                                                    monkeypatch):
    # A program named llama-server on PATH that serves with llama.cpp (the xllamacpp build).
    bindir = tmp_path / "bin"
    bindir.mkdir()
    prog = bindir / "llama-server"
    prog.write_text(f"#!/bin/sh\nexec {sys.executable} -m kurabe.backends.xllamacpp_server \"$@\"\n")
    prog.chmod(prog.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    server = LlamaCppServer("s", smollm2_path, server="llama-server", ctx=512,
                            log_path=tmp_path / "s.log")
    try:
        server.start()
        info = server.info()
        assert info.command[0] == str(prog)
        assert info.version.startswith("xllamacpp ")
        rec = _stream(server, 1, messages=[{"role": "user", "content": "Hi"}], max_tokens=4)[0]
        assert rec.error is None and rec.usage["completion_tokens"] >= 1
    finally:
        server.stop()


def test_missing_server_program_is_a_clear_error(smollm2_path, tmp_path):
    with pytest.raises(EngineError, match="not found on PATH"):
        LlamaCppServer("s", smollm2_path, server="no-such-llama-server",
                       log_path=tmp_path / "s.log")


def test_external_endpoint_uses_the_key_from_the_environment(smollm2_path, tmp_path,
                                                            monkeypatch):
    secret = "kurabe-test-secret-5b1f"
    server = LlamaCppServer("s", smollm2_path, ctx=512, log_path=tmp_path / "s.log",
                            api_key=secret)
    server.start()
    try:
        url = f"http://127.0.0.1:{server.port}/v1"
        monkeypatch.setenv("KURABE_TEST_KEY", secret)
        model = ModelConfig(name="ext", source=url, engine={"api_key_env": "KURABE_TEST_KEY"})
        backend = create_backend(model, resolve_model("ext", url, model.kind), tmp_path)
        backend.start()
        # recognised as llama.cpp, so cache_prompt is sent
        assert isinstance(backend, LlamaCppEndpoint)
        assert backend.request_body(ChatRequest(messages=[], max_tokens=1))["cache_prompt"] is False
        rec = _stream(backend, 1, messages=[{"role": "user", "content": "Hi"}], max_tokens=4)[0]
        assert rec.error is None
        monkeypatch.setenv("KURABE_TEST_KEY", "wrong")
        with pytest.raises(EngineError, match="refused the API key"):
            OpenAIEndpoint("ext", url, api_key_env="KURABE_TEST_KEY").start()
        monkeypatch.delenv("KURABE_TEST_KEY")
        with pytest.raises(EngineError, match=r"\$KURABE_TEST_KEY, which is not set"):
            OpenAIEndpoint("ext", url, api_key_env="KURABE_TEST_KEY").start()
    finally:
        server.stop()


def test_unreachable_endpoint_is_a_clear_error():
    with pytest.raises(EngineError, match="cannot reach"):
        OpenAIEndpoint("gone", "http://127.0.0.1:9").start()


@pytest.mark.engine
def test_a_prompt_longer_than_the_context_is_context_exceeded(smollm2_path, tmp_path):
    """llama.cpp refuses a prompt that does not fit its context with HTTP 400: stored as
    ``context_exceeded``, not as a generic 4xx, and never retried."""
    server = LlamaCppServer("smollm2", smollm2_path, ctx=256, log_path=tmp_path / "s.log")
    server.start()
    try:
        async def send():
            async with ChatClient(server) as client:
                return await client.stream_chat(ChatRequest(
                    messages=[{"role": "user", "content": "rain " * 400}], max_tokens=8))

        record = asyncio.run(send())
    finally:
        server.stop()
    assert record.http_status == 400
    assert record.error_kind == "context_exceeded", record.error
    assert record.attempts == 1 and record.retries == []
