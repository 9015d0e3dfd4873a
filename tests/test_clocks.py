"""Which tokens the client's decode clock times, and which clock a figure ends up on.

Hand-built streams for the formula, the scripted backend (real SSE through the real client,
with the server's own clock) for per-chunk token counts and the fairness warning.
"""

from __future__ import annotations

import asyncio
import itertools

import pytest

from kurabe import api
from kurabe.analysis.speed import analyse_speed
from kurabe.backends.scripted import (
    ScriptedBackend,
    ScriptedReply,
    register_script,
    unregister_script,
)
from kurabe.client import ChatClient
from kurabe.config import parse_config
from kurabe.metrics import CLOCK_AGREEMENT_TOLERANCE, client_decode_rate, speed_metrics
from kurabe.records import ChatRequest, Chunk, RequestRow, StreamRecord


def record(chunks, **kw) -> StreamRecord:
    return StreamRecord(sent_at_unix_s=0.0, chunks=[Chunk(*c) for c in chunks], **kw)


# -- the formula ------------------------------------------------------------------------------


def test_the_first_chunk_holding_two_tokens_is_counted_from_the_servers_running_count():
    # What llama.cpp streams for SmolLM2 answering in Japanese: token 1 is half a character,
    # so the first chunk is sent after token 2. Tokens 1..6 every 0.1 s from t = 0.4 s.
    rec = record([(0.5, "こ", "", 2), (0.6, "の", "", 3), (0.8, "サ", "", 5), (0.9, "。", "", 6)],
                 t_done_s=1.0, usage={"completion_tokens": 6},
                 timings={"predicted_n": 6, "predicted_ms": 500.0,
                          "predicted_per_second": 10.0})
    assert client_decode_rate(rec) == (pytest.approx(10.0), "server")  # 4 tokens in 0.4 s
    m = speed_metrics(rec)
    assert m.decode_tokens_per_s == pytest.approx(10.0)
    assert m.itl_per_token_s == pytest.approx(0.1)
    assert m.clock_agreement == pytest.approx(1.0)
    assert (m.decode_clock, m.token_attribution) == ("client", "server")
    # the old formula, (6 - 1) / 0.4 s = 12.5 tokens/s, read 25% fast on this stream
    assert (6 - 1) / (0.9 - 0.5) == pytest.approx(12.5)


def test_without_per_chunk_counts_the_first_chunk_is_assumed_to_hold_the_first_token():
    rec = record([(0.1, "ab", ""), (0.2, "cd", ""), (0.4, "efg", "")], t_done_s=0.4,
                 usage={"completion_tokens": 7})
    assert client_decode_rate(rec) == (pytest.approx(20.0), "assumed")  # 6 tokens in 0.3 s
    m = speed_metrics(rec)
    assert (m.decode_clock, m.clock_agreement, m.token_attribution) == ("client", None, "assumed")


def test_counts_that_cannot_be_running_counts_are_not_trusted():
    # a per-chunk count of 0, or above the final count, falls back to the assumption
    for first, last in ((0, 3), (1, 9)):
        rec = record([(0.1, "a", "", first), (0.3, "b", "", last)], t_done_s=0.3,
                     usage={"completion_tokens": 3})
        assert client_decode_rate(rec) == (pytest.approx(10.0), "assumed")


def test_tokens_after_the_last_text_chunk_are_outside_the_window():
    # an end-of-stream token carries no text: 3 tokens in the window, not 4
    rec = record([(0.1, "a", "", 1), (0.2, "b", "", 2), (0.4, "c", "", 4)], t_done_s=0.5,
                 usage={"completion_tokens": 5})
    assert client_decode_rate(rec) == (pytest.approx(10.0), "server")


def test_beyond_the_tolerance_the_figure_is_the_servers_clock_and_says_so():
    # 9 chunks for 16 tokens, no per-chunk counts: the client reads 3.18 tokens/s where the
    # server timed 1.08 (the case that used to pass without a word)
    times = [0.0, 0.7, 1.4, 2.1, 2.8, 3.5, 4.2, 4.5, 4.72]
    rec = record([(10.0 + t, "x", "") for t in times], t_done_s=15.0,
                 usage={"completion_tokens": 16},
                 timings={"predicted_n": 16, "predicted_per_second": 1.08})
    m = speed_metrics(rec)
    assert m.clock_agreement == pytest.approx(15 / 4.72 / 1.08)
    assert (m.decode_clock, m.decode_tokens_per_s) == ("server", 1.08)
    assert m.itl_per_token_s == pytest.approx(1 / 1.08)
    assert m.server_decode_tokens_per_s == 1.08


def test_within_the_tolerance_the_client_clock_stays():
    edge = 1 + CLOCK_AGREEMENT_TOLERANCE * 0.9
    rec = record([(0.1, "a", ""), (0.2, "b", "")], t_done_s=0.2,
                 usage={"completion_tokens": 2},
                 timings={"predicted_n": 2, "predicted_per_second": 10.0 / edge})
    m = speed_metrics(rec)
    assert m.decode_clock == "client" and m.decode_tokens_per_s == pytest.approx(10.0)


def test_a_client_clock_with_no_window_falls_back_to_the_server():
    # everything in one chunk: the client saw no decode at all
    rec = record([(0.3, "abc", "", 3)], t_done_s=0.3, usage={"completion_tokens": 3},
                 timings={"predicted_n": 3, "predicted_per_second": 50.0})
    m = speed_metrics(rec)
    assert (m.decode_clock, m.decode_tokens_per_s, m.clock_agreement) == ("server", 50.0, None)
    none = speed_metrics(record([(0.3, "abc", "")], t_done_s=0.3,
                                usage={"completion_tokens": 3}))
    assert none.decode_tokens_per_s is None and none.decode_clock is None


def test_per_chunk_counts_survive_the_store_and_old_records_still_load():
    rec = record([(0.1, "a", "", 2), (0.2, "b", "")], t_done_s=0.2)
    data = rec.to_dict()
    assert data["chunks"] == [[0.1, "a", "", 2], [0.2, "b", ""]]
    assert StreamRecord.from_dict(data).chunks == rec.chunks
    old = StreamRecord.from_dict({"sent_at_unix_s": 0.0, "chunks": [[0.1, "a", ""]]})
    assert old.chunks[0].n_tokens is None


# -- the scripted server: several tokens to a chunk --------------------------------------------


def _stream(reply: ScriptedReply, n: int = 1) -> list[StreamRecord]:
    name = f"clocks-{id(reply)}"
    source = register_script(name, reply)
    try:
        backend = ScriptedBackend(name, source)

        async def go():
            async with ChatClient(backend) as client:
                return [await client.stream_chat(ChatRequest(
                    messages=[{"role": "user", "content": "q"}], max_tokens=64))
                    for _ in range(n)]
        return asyncio.run(go())
    finally:
        unregister_script(name)


def test_scripted_chunks_carry_several_tokens_and_the_servers_running_count():
    reply = ScriptedReply(content=[f"t{i} " for i in range(16)], token_s=0.01,
                          tokens_per_chunk=[8, 1], timings_per_chunk=True)
    rec = _stream(reply)[0]
    assert len(rec.chunks) == 9
    assert rec.chunks[0].content == "".join(f"t{i} " for i in range(8))
    assert [c.n_tokens for c in rec.chunks] == [8, *range(9, 17)]
    assert rec.usage["completion_tokens"] == 16 and rec.timings["predicted_n"] == 16
    m = speed_metrics(rec)
    assert m.token_attribution == "server" and m.decode_clock == "client"
    assert m.clock_agreement == pytest.approx(1.0, abs=0.08)


def test_scripted_chunks_without_counts_mislead_the_client_clock_and_the_server_clock_wins():
    reply = ScriptedReply(content=[f"t{i} " for i in range(16)], token_s=0.01,
                          tokens_per_chunk=[8, 1])
    rec = _stream(reply)[0]
    assert [c.n_tokens for c in rec.chunks] == [None] * 9
    m = speed_metrics(rec)
    # 15 tokens over 8 of the 15 steps: nearly twice the server's rate
    assert m.clock_agreement == pytest.approx(15 / 8, rel=0.1)
    assert m.decode_clock == "server"
    assert m.decode_tokens_per_s == rec.timings["predicted_per_second"]


# -- the warning ---------------------------------------------------------------------------------

_names = itertools.count()


def test_a_run_whose_chunks_cannot_resolve_tokens_warns_and_says_which_clock_it_uses(tmp_path):
    coarse = register_script(f"coarse{next(_names)}", ScriptedReply(
        content=[f"t{i} " for i in range(16)], token_s=0.005, tokens_per_chunk=[8, 1]))
    fine = register_script(f"fine{next(_names)}", ScriptedReply(
        content=[f"t{i} " for i in range(16)], token_s=0.005))
    try:
        cfg = parse_config({"run": {"name": "t", "repeats": 2, "warmup": 0, "max_tokens": 16,
                                    "fixed_length": True},
                            "models": [{"name": "coarse", "source": coarse},
                                       {"name": "fine", "source": fine}],
                            "prompts": [{"id": "p1", "text": "質問", "category": "knowledge"}]},
                           "test")
        analysis = api.run_shootout(cfg, tmp_path / "run")
    finally:
        unregister_script(coarse.removeprefix("scripted:"))
        unregister_script(fine.removeprefix("scripted:"))
    warnings = {w.code: w.message for w in analysis.speed.warnings}
    msg = warnings["clock_fallback"]
    assert msg.startswith("coarse: on 2 of 2 requests")
    assert "9 chunks for 16 tokens" in msg
    assert "use the server's own clock" in msg
    assert "fine" not in msg and sum(w.code == "clock_fallback"
                                     for w in analysis.speed.warnings) == 1


def _row(model: str, repeat: int, **metrics) -> RequestRow:
    return RequestRow(seq=0, model=model, prompt_id="p", repeat=repeat, phase="measure",
                      status="ok", error=None, sent_at_unix_s=0, request={}, record={},
                      metrics={"decode_tokens_per_s": 100.0, "chars_per_s": 300.0,
                               "output_tokens": 64, "answer_chars": 300, "ttft_s": 0.1,
                               **metrics})


def test_a_server_without_a_clock_and_coarse_chunks_is_flagged_as_unverified():
    rows = [_row("a", r, decode_clock="client", token_attribution="assumed", n_chunks=16)
            for r in range(3)]
    rows += [_row("b", r, decode_clock="client", token_attribution="assumed", n_chunks=60)
             for r in range(3)]
    a = analyse_speed(["a", "b"], rows)
    unverified = [w.message for w in a.warnings if w.code == "clock_unverified"]
    assert len(unverified) == 1 and unverified[0].startswith("a: 3 of 3 requests")
    assert "16 chunks for 64 tokens" in unverified[0]
    assert "client's clock" in unverified[0]
