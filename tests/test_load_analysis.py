"""Load analysis (kurabe.analysis.load) on hand-made store rows, every figure checked against
a hand computation (docs/metrics.md, "Load")."""

from __future__ import annotations

import json
import math

import pytest

from kurabe.analysis.load import analyse_load, find_knee, timeline
from kurabe.analysis.stats import percentiles
from kurabe.metrics import speed_metrics
from kurabe.records import Chunk, LoadLevelRow, LoadRequestRow, StreamRecord
from kurabe.store import Store

CALM = {"workers": 1, "wall_s": 12.0, "cpu_s": 0.6, "per_worker_cpu_s": [0.6],
        "usable_cores": 2, "loop_lag_s": {"p50": 0.0005, "p99": 0.002, "max": 0.004, "n": 1200},
        "send_lag_s": None, "max_in_flight": 4, "in_flight": [[0.0, 0], [0.25, 4]],
        "engine_cpu_s": None, "engine_pids": []}


def level_row(level: int = 0, *, model: str = "m", concurrency: int | None = 4,
              profile: str = "concurrency", rate: float | None = None, wall_s: float = 10.0,
              client: dict | None = None, slo: dict | None = None,
              before: dict | None = None, after: dict | None = None,
              status: str = "complete") -> LoadLevelRow:
    return LoadLevelRow(
        model=model, level=level, profile=profile, status=status, started_at_unix_s=1000.0,
        concurrency=concurrency, rate_per_s=rate, warmup_s=2.0, wall_s=wall_s,
        client={**CALM, **(client or {})},
        server_before=({"url": "http://127.0.0.1:1", "scraped_at_unix_s": 1000.0,
                        "samples": before} if before is not None else None),
        server_after=({"url": "http://127.0.0.1:1", "scraped_at_unix_s": 1012.0,
                       "samples": after} if after is not None else None),
        spec={"profile": profile, "concurrency": concurrency, "rate_per_s": rate,
              "slo": slo or {"ttft_s": None, "itl_s": None, "e2e_s": None}})


def req(level: int = 0, *, model: str = "m", status: str = "ok", warmup: bool = False,
        sent_s: float = 3.0, kind: str | None = None, **metrics) -> LoadRequestRow:
    return LoadRequestRow(
        model=model, level=level, status=status, endpoint="http://127.0.0.1:1/v1",
        prompt_id="p", sent_s=sent_s, sent_at_unix_s=1000.0 + sent_s, warmup=warmup,
        error=None if status == "ok" else "failed", error_kind=kind, metrics=metrics,
        record={"chunks": [], "t_done_s": metrics.get("e2e_s")})


def store_with(tmp_path, levels, requests) -> Store:
    store = Store.create(tmp_path / "run")
    for lv in levels:
        store.write_load_level(lv)
    store.add_load_requests(requests)
    return store


def test_percentiles_type_7_on_a_known_list():
    # rank 1 + q (n - 1) of 1..10: p50 at 5.5, p90 at 9.1, p99 at 9.91
    got = percentiles([7, 3, 1, 10, 2, 9, 4, 8, 6, 5, None, math.nan])
    assert got == pytest.approx({"p50": 5.5, "p90": 9.1, "p99": 9.91})
    assert percentiles([]) == {"p50": None, "p90": None, "p99": None}


def four_requests() -> list[LoadRequestRow]:
    ok = [  # (ttft, itl per token, e2e, output tokens, decode t/s)
        (0.2, 0.02, 2.2, 100, 50.0), (0.6, 0.0125, 2.1, 120, 80.0),
        (0.3, 0.025, 2.3, 80, 40.0), (0.4, 0.016, 2.0, 100, 62.5)]
    rows = [req(ttft_s=t, itl_per_token_s=i, e2e_s=e, output_tokens=n, prompt_tokens=10,
                decode_tokens_per_s=d) for t, i, e, n, d in ok]
    rows += [req(status="error", kind="http_5xx"), req(status="cancelled", kind="cancelled"),
             # warm-up: kept, left out of every figure
             req(warmup=True, sent_s=0.5, ttft_s=9.0, e2e_s=9.0, output_tokens=1000,
                 prompt_tokens=10, decode_tokens_per_s=1.0, itl_per_token_s=1.0),
             req(warmup=True, sent_s=1.0, ttft_s=9.0, e2e_s=9.0, output_tokens=1000,
                 prompt_tokens=10, decode_tokens_per_s=1.0, itl_per_token_s=1.0)]
    return rows


def test_throughput_latency_and_goodput_by_hand(tmp_path):
    store = store_with(tmp_path, [level_row(slo={"ttft_s": 0.5, "itl_s": 0.02})],
                       four_requests())
    out = analyse_load(store).to_json()
    lv = out["models"]["m"]["levels"][0]
    assert lv["output_tokens_per_s"] == pytest.approx(400 / 10)  # warm-up's 2000 left out
    assert lv["total_tokens_per_s"] == pytest.approx((400 + 40) / 10)
    assert lv["requests_per_s"] == pytest.approx(4 / 10)
    assert lv["decode_tokens_per_s"] == pytest.approx((50 + 62.5) / 2)  # median of four
    # sorted TTFTs 0.2 0.3 0.4 0.6: ranks 2.5, 3.7, 3.97
    assert lv["ttft_s"] == pytest.approx({"p50": 0.35, "p90": 0.54, "p99": 0.594})
    assert lv["itl_s"]["p50"] == pytest.approx((0.016 + 0.02) / 2)
    assert lv["e2e_s"]["p50"] == pytest.approx(2.15)
    assert lv["samples"] == {"ttft_s": 4, "itl_s": 4, "e2e_s": 4}
    assert (lv["sent"], lv["completed"], lv["failed"], lv["cancelled"]) == (6, 4, 1, 1)
    assert lv["warmup_sent"] == 2
    assert lv["errors"] == {"http_5xx": 1}
    # TTFT ≤ 0.5 and ITL ≤ 0.02: the first and the last request only
    assert lv["goodput_requests_per_s"] == pytest.approx(2 / 10)
    assert lv["goodput_share"] == pytest.approx(2 / 6)
    assert lv["client_cpu_cores"] == pytest.approx(0.6 / 12)
    assert lv["client_bound"] is False and lv["client_bound_reasons"] == []
    codes = [w["code"] for w in out["warnings"]]
    assert codes == ["failed_requests"]
    for key in ("concurrency", "output_tokens_per_s", "decode_tokens_per_s", "requests_per_s",
                "ttft_s", "itl_s", "errors", "client_cpu_cores", "client_bound"):
        assert key in lv
    assert set(lv["ttft_s"]) == set(lv["itl_s"]) == {"p50", "p90", "p99"}
    json.dumps(out)  # plain JSON, as `kurabe load --json` prints it


def test_no_slo_means_no_goodput(tmp_path):
    store = store_with(tmp_path, [level_row()], four_requests())
    lv = analyse_load(store).to_json()["models"]["m"]["levels"][0]
    assert lv["goodput_requests_per_s"] is None and lv["goodput_share"] is None


def test_every_request_accounted_or_warned(tmp_path):
    rows = four_requests()
    store = store_with(tmp_path, [level_row(client={"sent": len(rows)}),
                                  level_row(1, client={"sent": len(rows) + 3})],
                       rows + [r.__class__(**{**r.__dict__, "level": 1}) for r in rows])
    out = analyse_load(store).to_json()
    unaccounted = [w for w in out["warnings"] if w["code"] == "requests_unaccounted"]
    assert len(unaccounted) == 1
    assert "sent 11 request(s) but 8 are stored" in unaccounted[0]["message"]
    for lv in out["models"]["m"]["levels"]:
        assert lv["sent"] == lv["completed"] + lv["failed"] + lv["cancelled"]


def curve(points: list[tuple[int, float, float | None]]) -> list[dict]:
    return [{"level": i, "profile": "sweep", "concurrency": c, "rate_per_s": None,
             "output_tokens_per_s": tps, "goodput_requests_per_s": good,
             "ttft_s": {"p50": 0.1, "p90": 0.2, "p99": 0.1 * c}}
            for i, (c, tps, good) in enumerate(points)]


def test_knee_on_a_hand_made_curve():
    # gains: 95/50 = 1.9, 120/95 = 1.26, 125/120 = 1.04 < 1.10 -> the knee is at 4 streams
    knee = find_knee(curve([(8, 125.0, None), (1, 50.0, None), (2, 95.0, None),
                            (4, 120.0, None)]))
    assert knee is not None
    assert (knee["concurrency"], knee["output_tokens_per_s"]) == (4, 120.0)
    assert knee["ttft_p99_s"] == pytest.approx(0.4)
    assert knee["next_gain"] == pytest.approx(125 / 120)
    assert knee["reason"] == "throughput"
    # throughput still rising by 10% or more at every step: no knee; one level: none
    assert find_knee(curve([(1, 50.0, None), (2, 95.0, None), (4, 120.0, None)])) is None
    assert find_knee(curve([(1, 50.0, None)])) is None
    # goodput falls from 2 to 4 streams although throughput rises by 26%
    knee = find_knee(curve([(1, 50.0, 1.0), (2, 95.0, 1.5), (4, 120.0, 1.2)]))
    assert knee is not None and (knee["concurrency"], knee["reason"]) == (2, "goodput")


def test_knee_from_stored_levels(tmp_path):
    rows, levels = [], []
    for i, (c, tokens) in enumerate([(1, 500), (2, 950), (4, 1000)]):
        levels.append(level_row(i, concurrency=c, profile="sweep"))
        rows.append(req(i, output_tokens=tokens, ttft_s=0.1 * c, e2e_s=1.0))
    out = analyse_load(store_with(tmp_path, levels, rows)).to_json()
    knee = out["models"]["m"]["knee"]
    assert knee["concurrency"] == 2
    assert knee["output_tokens_per_s"] == pytest.approx(950 / 10)


def test_client_bound_from_loop_lag_send_lag_and_cpu(tmp_path):
    lagging = level_row(0, client={"loop_lag_s": {"p50": 0.01, "p99": 0.035, "max": 0.2,
                                                  "n": 900}})
    late = level_row(1, profile="poisson", concurrency=None, rate=8.0,
                     client={"send_lag_s": {"p50": 0.02, "p99": 0.08, "max": 0.3}})
    busy = level_row(2, client={"workers": 2, "cpu_s": 12.4, "per_worker_cpu_s": [11.4, 1.0]})
    calm = level_row(3)
    out = analyse_load(store_with(tmp_path, [lagging, late, busy, calm],
                                  [req(i, output_tokens=10) for i in range(4)])).to_json()
    lv = out["models"]["m"]["levels"]
    assert lv[0]["client_bound"] and "event-loop lag p99 35.0 ms" in lv[0]["client_bound_reasons"][0]
    assert lv[1]["client_bound"] and "send lag p99 80.0 ms" in lv[1]["client_bound_reasons"][0]
    assert lv[2]["client_bound"] and lv[2]["client_bound_reasons"] == [
        "worker 0 used 0.95 cores (≥ 0.9 of one core)"]
    assert lv[2]["client_cpu_cores"] == pytest.approx(12.4 / 12)
    assert not lv[3]["client_bound"] and lv[3]["client_bound_reasons"] == []
    assert sum(w["code"] == "client_bound" for w in out["warnings"]) == 3


def test_client_competing_with_a_local_engine(tmp_path):
    # 2 cores × 12 s = 24 CPU-s; engine 21.7 and client 1.8 leave 0.5 idle: 1.3 taken
    shared = level_row(0, client={"cpu_s": 1.8, "per_worker_cpu_s": [1.8],
                                  "engine_cpu_s": 21.7, "engine_pids": [42]})
    alone = level_row(1, client={"cpu_s": 0.6, "engine_cpu_s": 10.0, "engine_pids": [42]})
    out = analyse_load(store_with(tmp_path, [shared, alone],
                                  [req(0, output_tokens=5), req(1, output_tokens=5)])).to_json()
    lv = out["models"]["m"]["levels"]
    assert lv[0]["engine_cpu_taken_s"] == pytest.approx(1.3)
    assert lv[1]["engine_cpu_taken_s"] == pytest.approx(0.0)  # 13.4 CPU-s were idle
    competes = [w for w in out["warnings"] if w["code"] == "client_competes_with_server"]
    assert len(competes) == 1 and "0.15 of 2 cores" in competes[0]["message"]


def llama_counters(tokens: float, seconds: float, prompt: float) -> dict:
    return {"llamacpp:tokens_predicted_total": tokens,
            "llamacpp:tokens_predicted_seconds_total": seconds,
            "llamacpp:prompt_tokens_total": prompt, "llamacpp:requests_processing": 0.0}


def test_server_cross_check_llamacpp(tmp_path):
    # three requests of 128 tokens at 64 t/s, one warm-up among them (the engine counts it):
    # 127 timed tokens each over 127/64 s; the engine counts 384 tokens, times 381
    rows = [req(warmup=i == 0, sent_s=float(i), output_tokens=128, prompt_tokens=20,
                decode_tokens_per_s=64.0, ttft_s=0.1, e2e_s=2.1) for i in range(3)]
    before = llama_counters(1000, 50.0, 300)
    good = llama_counters(1000 + 384, 50.0 + 381 / 64, 360)
    bad = llama_counters(1000 + 450, 50.0 + 381 / 80, 360)
    store = store_with(tmp_path, [level_row(0, before=before, after=good),
                                  level_row(1, before=before, after=bad), level_row(2)],
                       rows + [LoadRequestRow(**{**r.__dict__, "level": 1}) for r in rows])
    out = analyse_load(store).to_json()
    ok, off, none = out["models"]["m"]["levels"]
    check = ok["server_check"]
    assert check["engine"] == "llama.cpp" and check["agrees"]
    assert check["client_output_tokens"] == 384 and check["server_output_tokens"] == 384
    assert check["server_decode_tokens_per_s"] == pytest.approx(64.0)  # first tokens taken off
    assert check["client_decode_tokens_per_s"] == pytest.approx(64.0)
    assert check["server_prompt_tokens"] == 60 and check["client_prompt_tokens"] == 60
    assert not off["server_check"]["agrees"]
    assert none["server_check"] is None
    disagree = [w for w in out["warnings"] if w["code"] == "server_disagrees"]
    assert len(disagree) == 1
    assert "engine 450, client 384" in disagree[0]["message"]
    assert "decode rate: client 64.0" in disagree[0]["message"]


def test_server_cross_check_vllm(tmp_path):
    rows = [req(output_tokens=50, prompt_tokens=10, decode_tokens_per_s=40.0) for _ in range(2)]
    before = {"vllm:generation_tokens_total": 0.0, "vllm:prompt_tokens_total": 0.0,
              "vllm:request_success_total": 0.0,
              "vllm:time_per_output_token_seconds_sum": 0.0,
              "vllm:time_per_output_token_seconds_count": 0.0}
    after = {"vllm:generation_tokens_total": 100.0, "vllm:prompt_tokens_total": 20.0,
             "vllm:request_success_total": 3.0,
             "vllm:time_per_output_token_seconds_sum": 98 / 40,
             "vllm:time_per_output_token_seconds_count": 98.0}
    out = analyse_load(store_with(tmp_path, [level_row(before=before, after=after)],
                                  rows)).to_json()
    check = out["models"]["m"]["levels"][0]["server_check"]
    assert check["engine"] == "vLLM"
    assert check["server_decode_tokens_per_s"] == pytest.approx(40.0)
    assert check["server_requests"] == 3 and not check["agrees"]
    assert "completed requests: engine 3, client 2" in out["warnings"][0]["message"]


def test_timeline_from_chunk_times_and_server_counts():
    # request A sent at 0.5 s: chunks at 0.5+0.2 (1 token), 0.5+0.9 (3 tokens: running count
    # 4), 0.5+1.7 (count 6); ends at 2.3 s. Request B sent at 1.2 s: no counts, 2 chunks at
    # 1.5 and 2.6 s, the server's usage says 5 tokens: the 3 unattributed land on the last.
    a = StreamRecord(sent_at_unix_s=0.0, chunks=[Chunk(0.2, "a", "", 1), Chunk(0.9, "b", "", 4),
                                                 Chunk(1.7, "c", "", 6)], t_done_s=1.8,
                     usage={"completion_tokens": 6, "prompt_tokens": 3}, finish_reason="stop")
    b = StreamRecord(sent_at_unix_s=0.0, chunks=[Chunk(0.3, "x"), Chunk(1.4, "y")],
                     t_done_s=1.4, usage={"completion_tokens": 5, "prompt_tokens": 3},
                     finish_reason="stop")
    rows = [LoadRequestRow(model="m", level=0, status="ok", endpoint="e", prompt_id="p",
                           sent_s=sent, sent_at_unix_s=sent, record=rec.to_dict(),
                           metrics=speed_metrics(rec).to_dict())
            for sent, rec in ((0.5, a), (1.2, b))]
    lv = level_row(client={"wall_s": 3.0})
    got = timeline(lv, rows)
    assert [b["t_s"] for b in got] == [0.0, 1.0, 2.0]
    assert [b["output_tokens"] for b in got] == [1, 3 + 1, 2 + 4]
    # in flight: A over [0.5, 2.3], B over [1.2, 2.6]
    assert [b["in_flight"] for b in got] == pytest.approx([0.5, 1.0 + 0.8, 0.3 + 0.6])


def test_send_delay_is_reported_and_flags_a_client_that_held_requests_back(tmp_path):
    # delays 0.01 .. 0.10 s: p50 0.055, p99 0.0991 > 50 ms; a calm level's stay at 2 ms
    held = [req(0, output_tokens=5, send_delay_s=0.01 * (i + 1)) for i in range(10)]
    prompt = [req(1, output_tokens=5, send_delay_s=0.002) for _ in range(10)]
    out = analyse_load(store_with(tmp_path, [level_row(0), level_row(1)],
                                  held + prompt)).to_json()
    lv = out["models"]["m"]["levels"]
    assert lv[0]["send_delay_s"] == pytest.approx({"p50": 0.055, "p90": 0.091, "p99": 0.0991})
    assert lv[0]["client_bound"]
    assert lv[0]["client_bound_reasons"] == [
        "send delay p99 99.1 ms > 50 ms before requests were written"]
    assert lv[1]["send_delay_s"]["p99"] == pytest.approx(0.002)
    assert not lv[1]["client_bound"]
