"""The load generator: profiles, counting, cancellation, warm-up, replicas, worker processes
and the client's self-check, against the in-process scripted backend (fast) and real
llama.cpp servers whose own timings and /metrics counters are the independent source."""

from __future__ import annotations

import itertools
import random
import statistics

import httpx
import pytest

from kurabe import api
from kurabe.backends.llamacpp import LlamaCppServer
from kurabe.backends.scripted import ScriptedReply
from kurabe.config import LoadConfig
from kurabe.load.profiles import arrival_times, level_plan, next_sweep_concurrency
from kurabe.load.runner import _Picker
from kurabe.load.selfcheck import STARVE_ENV
from kurabe.load.server_metrics import parse
from kurabe.store import Store

TOKENS = list("abcdefghij")


def _run(tmp_path, models, **kw):
    run_dir = tmp_path / "run"
    kw.setdefault("max_tokens", 16)
    result = api.run_load(api.load_test_config(models, **kw), run_dir)
    store = Store.open(run_dir)
    try:
        return result, store.load_levels(), store.load_requests()
    finally:
        store.close()


def _counting(reply: ScriptedReply):
    calls = itertools.count(1)
    seen = [0]

    def script(_body):
        seen[0] = next(calls)
        return reply

    return script, seen


# -- scripted backend: logic -------------------------------------------------------------


def test_closed_loop_counts_every_request_and_cancels_at_the_end(tmp_path, script):
    # Each request takes 0.05 s + 10 × 0.02 s = 0.25 s; three streams never idle, so when
    # the 0.6 s level ends exactly three requests are in flight.
    fn, seen = _counting(ScriptedReply(content=TOKENS, first_token_s=0.05, token_s=0.02))
    result, levels, rows = _run(tmp_path, [f"m={script(fn)}"], concurrency=[3],
                                duration_s=0.6)
    assert len(rows) == seen[0]  # every request the server saw is stored
    assert levels[0].client["sent"] == levels[0].client["stored"] == len(rows)
    cancelled = [r for r in rows if r.status == "cancelled"]
    assert len(cancelled) == 3 and {r.error_kind for r in cancelled} == {"cancelled"}
    ok = [r for r in rows if r.status == "ok"]
    assert 3 <= len(ok) <= 6
    assert all(r.metrics["output_tokens"] == 10 for r in ok)
    assert levels[0].client["max_in_flight"] == 3
    level = result["models"]["m"]["levels"][0]
    assert level["cancelled"] == 3 and level["completed"] == len(ok)
    assert level["sent"] == len(rows)


def test_open_loop_sends_on_schedule(tmp_path, script):
    # 20 requests/s for 0.5 s: sends at 0, 0.05, ..., 0.45 whatever is in flight.
    model = script(ScriptedReply(content=TOKENS, first_token_s=0.01, token_s=0.02))
    _, levels, rows = _run(tmp_path, [f"m={model}"], rate=[20.0], duration_s=0.5)
    scheduled = sorted(r.scheduled_s for r in rows)
    assert scheduled == pytest.approx([i * 0.05 for i in range(10)])
    assert all(0 <= r.sent_s - r.scheduled_s < 0.05 for r in rows)
    assert levels[0].client["max_in_flight"] >= 3  # 0.21 s requests, one every 0.05 s
    assert levels[0].client["send_lag_s"]["max"] < 0.05


def test_poisson_arrivals_are_reproducible_and_have_their_rate():
    load = LoadConfig(poisson=[50.0], duration_s=40)
    plan = level_plan(load, 0, rate_per_s=50.0)
    times = arrival_times(plan, horizon_s=40.0)
    assert times == arrival_times(plan, horizon_s=40.0)
    other = level_plan(LoadConfig(poisson=[50.0], seed=7), 0, rate_per_s=50.0)
    assert arrival_times(other, horizon_s=40.0) != times
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert statistics.mean(gaps) == pytest.approx(1 / 50, rel=0.05)
    # exponential gaps: standard deviation equal to the mean
    assert statistics.stdev(gaps) == pytest.approx(1 / 50, rel=0.1)


def test_warmup_requests_are_kept_and_marked(tmp_path, script):
    model = script(ScriptedReply(content=TOKENS))
    result, _, rows = _run(tmp_path, [f"m={model}"], concurrency=[1], requests=4,
                           warmup_requests=2)
    assert [r.warmup for r in sorted(rows, key=lambda r: r.sent_s)] == [True, True] + [False] * 4
    level = result["models"]["m"]["levels"][0]
    assert level["completed"] == 4 and level["warmup_sent"] == 2


def test_replica_with_fewest_in_flight_ties_in_turn():
    class R:
        def __init__(self, n):
            self.in_flight = n

    a, b, c = R(1), R(0), R(0)
    picker = _Picker([a, b, c])
    assert [picker.pick() for _ in range(4)] == [b, c, b, c]
    b.in_flight = 2
    assert picker.pick() is c


def test_sweep_doubles_until_the_knee():
    load = LoadConfig(sweep=True, max_concurrency=64, knee_gain=0.05)
    assert next_sweep_concurrency(load, []) == 1
    assert next_sweep_concurrency(load, [(1, 50.0, True), (2, 98.0, True)]) == 4
    # 4 streams: 100 t/s, only 2% more than 98: the knee
    assert next_sweep_concurrency(load, [(1, 50.0, True), (2, 98.0, True),
                                         (4, 100.0, True)]) is None
    assert next_sweep_concurrency(load, [(1, 50.0, False)]) is None  # SLO broken
    capped = LoadConfig(sweep=True, max_concurrency=3)
    assert next_sweep_concurrency(capped, [(1, 50.0, True), (2, 99.0, True)]) == 3
    assert next_sweep_concurrency(capped, [(1, 50.0, True), (2, 99.0, True),
                                           (3, 150.0, True)]) is None


def test_sweep_runs_levels_until_max(tmp_path, script):
    # No server limit: throughput doubles every level, so the sweep stops at the cap.
    model = script(ScriptedReply(content=TOKENS, token_s=0.01))
    _, levels, _ = _run(tmp_path, [f"m={model}"], sweep=True, max_concurrency=4,
                        duration_s=0.4)
    assert [lv.concurrency for lv in levels] == [1, 2, 4]
    assert all(lv.status == "complete" for lv in levels)


def test_starved_client_is_flagged_client_bound(tmp_path, script, monkeypatch):
    model = script(ScriptedReply(content=TOKENS, token_s=0.005))
    result, levels, _ = _run(tmp_path, [f"m={model}"], rate=[40.0], duration_s=1.0)
    calm = result["models"]["m"]["levels"][0]
    assert calm["client_bound"] is False, calm["client_bound_reasons"]
    # The client's own process now loses its interpreter to a CPU-bound thread 80% of the
    # time: a real shortage the recorded lag must show.
    monkeypatch.setenv(STARVE_ENV, "0.8")
    result, levels, _ = _run(tmp_path / "starved", [f"m={model}"], rate=[40.0],
                             duration_s=1.0)
    starved = result["models"]["m"]["levels"][0]
    assert levels[0].client["loop_lag_s"]["p99"] > 0.02
    assert starved["client_bound"] is True
    assert starved["client_bound_reasons"]


def test_metrics_parse_sums_label_sets_and_refuses_other_text():
    text = ("# TYPE x_total counter\nx_total{a=\"1\"} 2\nx_total{a=\"2\"} 3\n"
            "# TYPE g gauge\ng 1.5\n")
    assert parse(text) == {"x_total": 5.0, "g": 1.5}
    assert parse("<html>not metrics</html>") is None
    assert parse("") is None


def test_bad_load_config_names_the_key():
    from kurabe import KurabeError
    from kurabe.config import parse_config

    with pytest.raises(KurabeError, match=r"x\.toml: load: give one profile"):
        parse_config({"models": [{"name": "m", "source": "scripted:x"}],
                      "load": {"concurrency": [1], "rate": [2.0]}}, "x.toml")
    with pytest.raises(KurabeError, match=r"x\.toml: models\.0: replicas"):
        parse_config({"models": [{"name": "m", "source": "scripted:x",
                                  "replicas": ["http://127.0.0.1:1/v1"]}]}, "x.toml")


# -- real llama.cpp servers ----------------------------------------------------------------


@pytest.fixture(scope="module")
def two_slot_server(smollm2_path, tmp_path_factory):
    """SmolLM2 with two parallel slots, so two streams really run at once."""
    log_dir = tmp_path_factory.mktemp("load-engine")
    server = LlamaCppServer("smollm2", smollm2_path, ctx=2048, parallel=2,
                            log_path=log_dir / "smollm2.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def second_server(smollm2_path, tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("load-engine-2")
    server = LlamaCppServer("smollm2", smollm2_path, ctx=1024,
                            log_path=log_dir / "smollm2.log")
    server.start()
    yield server
    server.stop()


# Real servers get short synthetic prompts and answers: the checks need tokens, not time.
REAL = {"prompt_tokens": 12, "max_tokens": 8}


def _predicted(row) -> int:
    return int((row.record.get("timings") or {}).get("predicted_n") or 0)


def _check_against_server(levels, rows):
    """Every request's output tokens equal the server's own count, and the /metrics counter
    moved by exactly the level's generated tokens."""
    assert rows and all(r.status == "ok" for r in rows)
    for r in rows:
        assert r.metrics["output_tokens"] == _predicted(r) == \
            r.record["usage"]["completion_tokens"]
    for lv in levels:
        mine = [r for r in rows if r.level == lv.level]
        before = lv.server_before["samples"]["llamacpp:tokens_predicted_total"]
        after = lv.server_after["samples"]["llamacpp:tokens_predicted_total"]
        assert after - before == sum(_predicted(r) for r in mine)


@pytest.mark.parametrize("profile", [{"concurrency": [1, 2]}, {"rate": [4.0]},
                                     {"poisson": [4.0]}, {"sweep": True, "max_concurrency": 2}])
def test_profiles_against_llamacpp(tmp_path, two_slot_server, profile):
    url = two_slot_server.endpoint.base_url
    result, levels, rows = _run(tmp_path, [f"s={url}"], requests=3, **REAL, **profile)
    assert {r.prompt_id.rsplit("-", 1)[0] for r in rows} == {"synthetic-12"}
    _check_against_server(levels, rows)
    assert all(lv.status == "complete" for lv in levels)
    for level in result["models"]["s"]["levels"]:
        assert level["completed"] == 3 and level["errors"] == {}
        check = level["server_check"]
        assert check is not None and check["output_tokens_ratio"] == 1.0


def test_two_streams_run_at_once_on_two_slots(tmp_path, two_slot_server):
    url = two_slot_server.endpoint.base_url
    _, levels, rows = _run(tmp_path, [f"s={url}"], concurrency=[2], requests=4,
                            **REAL)
    assert levels[0].client["max_in_flight"] == 2
    # overlapping requests: some request was sent while another was still streaming
    spans = sorted((r.sent_s, r.sent_s + r.record["t_done_s"]) for r in rows)
    assert any(b[0] < a[1] for a, b in itertools.pairwise(spans))


def test_worker_processes_share_a_level(tmp_path, two_slot_server):
    url = two_slot_server.endpoint.base_url
    _, levels, rows = _run(tmp_path, [f"s={url}"], concurrency=[2], requests=4, workers=2,
                            **REAL)
    assert levels[0].client["workers"] == 2
    assert len(levels[0].client["per_worker_cpu_s"]) == 2
    assert {r.worker for r in rows} == {0, 1} and len(rows) == 4
    _check_against_server(levels, rows)


def test_synthetic_prompts_have_their_length(two_slot_server):
    import asyncio

    from kurabe.client import ChatClient
    from kurabe.load.prompts import synthetic_prompts

    async def build():
        async with ChatClient(two_slot_server) as client:
            return await synthetic_prompts(client, 12, n=3)

    prompts = asyncio.run(build())
    # every request gets a variant of a base prompt: all different, all of the same length
    assert all(p.slots == 3 and len(p.swaps) >= 8 for p in prompts)
    rng = random.Random(1)
    variants = [p.variant(i) for p in prompts
                for i in (0, 1, 2, *rng.sample(range(len(p.swaps) ** 3), 5))]
    texts = [v.messages[0]["content"] for v in variants]
    assert len(set(texts)) == len(texts)
    for text in texts:  # counted again here, straight from the server's tokenizer
        tokens = httpx.post(f"{two_slot_server.endpoint.server_root}/tokenize",
                            json={"content": text, "add_special": False}).json()["tokens"]
        assert len(tokens) == 12


def test_replicas_share_the_load(tmp_path, two_slot_server, second_server):
    urls = [two_slot_server.endpoint.base_url, second_server.endpoint.base_url]

    def predicted_total(server) -> float:
        text = httpx.get(f"{server.endpoint.server_root}/metrics").text
        return parse(text)["llamacpp:tokens_predicted_total"]

    before = [predicted_total(s) for s in (two_slot_server, second_server)]
    _, levels, rows = _run(tmp_path, [f"s={','.join(urls)}"], concurrency=[2], requests=4,
                            **REAL)
    after = [predicted_total(s) for s in (two_slot_server, second_server)]
    by_url = {u: [r for r in rows if r.endpoint == u] for u in urls}
    assert all(by_url[u] for u in urls)  # both replicas served requests
    for i, u in enumerate(urls):
        assert after[i] - before[i] == sum(_predicted(r) for r in by_url[u])
    assert levels[0].server_before.get("urls") is not None


def test_run_with_speed_and_load_and_resume_of_an_interrupted_level(tmp_path, script):
    from kurabe.config import parse_config

    model = script(ScriptedReply(content=TOKENS))
    config = parse_config({"run": {"repeats": 1, "warmup": 0, "max_tokens": 8},
                           "models": [{"name": "m", "source": model}],
                           "load": {"concurrency": [1, 2], "requests": 3, "max_tokens": 8}},
                          "shootout.toml")
    run_dir = tmp_path / "run"
    api.run_shootout(config, run_dir)
    store = Store.open(run_dir)
    try:
        assert store.requests()  # the speed phase ran first
        level = store.load_levels("m")[1]
        level.status = "interrupted"  # as a killed run leaves it
        store.write_load_level(level)
        store.set_status("interrupted")
        first = store.load_levels("m")[0]
    finally:
        store.close()
    assert api.pending_work(run_dir)["phases"] == [
        {"phase": "load", "pending": 1, "total": None, "unit": "levels"}]
    api.resume_shootout(run_dir)
    store = Store.open(run_dir)
    try:
        levels = store.load_levels("m")
        rows = store.load_requests("m", 1)
    finally:
        store.close()
    assert levels[0].started_at_unix_s == first.started_at_unix_s  # complete: not rerun
    assert all(lv.status == "complete" for lv in levels)
    # the rerun's rows are the ones sent after the level's (new) start; the earlier
    # attempt's rows are kept
    new = [r for r in rows if r.sent_at_unix_s >= levels[1].started_at_unix_s]
    assert len(new) == 3 and len(rows) == 6
    # ... and the analysis counts only the rerun's
    from kurabe.analysis.load import analyse_load

    with Store.open(run_dir, read_only=True) as store:
        level_json = analyse_load(store).to_json()["models"]["m"]["levels"][1]
    assert level_json["sent"] == 3 and level_json["completed"] == 3


def test_warmup_seconds_are_left_out_of_the_measured_window(tmp_path, script):
    model = script(ScriptedReply(content=TOKENS[:5], token_s=0.01))
    _, levels, rows = _run(tmp_path, [f"m={model}"], concurrency=[1], duration_s=0.3,
                           warmup_s=0.2)
    assert all(r.warmup == (r.sent_s < 0.2) for r in rows)
    assert any(r.warmup for r in rows) and any(not r.warmup for r in rows)
    level = levels[0]
    assert level.warmup_s == 0.2
    # measured window: from the warm-up's end to the level's end (0.5 s after its start)
    assert level.wall_s == pytest.approx(level.client["wall_s"] - 0.2)
    assert level.client["wall_s"] == pytest.approx(0.5, abs=0.05)


def test_load_through_a_router_in_front_of_two_servers(tmp_path, two_slot_server,
                                                        second_server):
    """A cluster behind one OpenAI-compatible address: kurabe load sees one endpoint, the
    router spreads the requests, and the two servers' own counters add up to the client's."""
    from router import Router

    servers = (two_slot_server, second_server)

    def predicted_total(server) -> float:
        text = httpx.get(f"{server.endpoint.server_root}/metrics").text
        return parse(text)["llamacpp:tokens_predicted_total"]

    router = Router([s.endpoint.server_root for s in servers]).start()
    try:
        before = [predicted_total(s) for s in servers]
        _, levels, rows = _run(tmp_path, [f"r={router.base_url}"], concurrency=[2],
                               requests=6, **REAL)
        after = [predicted_total(s) for s in servers]
    finally:
        router.stop()
    assert [r.status for r in rows] == ["ok"] * 6
    assert {r.endpoint for r in rows} == {router.base_url}
    served = [a - b for a, b in zip(after, before, strict=True)]
    assert all(n > 0 for n in served)  # both servers behind the router generated tokens
    assert sum(served) == sum(_predicted(r) for r in rows)
    # every output token the client counted was generated by one of the two servers
    assert sum(r.metrics["output_tokens"] for r in rows) == sum(served)
