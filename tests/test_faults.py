"""Server faults injected into real runs on the scripted backend: every fault is stored with
its kind while the run goes on, retries happen only where nothing was generated yet (and are
recorded), timeouts are the run's own, the console names the cause, the exit code says the run
is incomplete, and a resume completes exactly the missing requests.

The scripted backend streams real SSE through the real client (an httpx transport instead of
a socket), so the faults reach the same parsing, timing and error handling as a server's.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from kurabe import api, exitcodes
from kurabe.backends.scripted import (
    ScriptedBackend,
    ScriptedReply,
    register_script,
    unregister_script,
)
from kurabe.cli import app
from kurabe.client import ChatClient, retry_after_s
from kurabe.config import parse_config
from kurabe.records import ERROR_KINDS, ChatRequest
from kurabe.store import MIGRATIONS, Store

PROMPTS = [{"id": "p1", "text": "一つ目の質問", "category": "knowledge"},
           {"id": "p2", "text": "二つ目の質問", "category": "creative"}]
# Short limits, so that a hang ends within a fraction of a second.
LIMITS = {"stall_timeout_s": 0.3, "request_timeout_s": 5.0, "retry_backoff_s": 0.01,
          "retry_max_wait_s": 2.0}
ANSWER = "はい、日本語でお答えします。"


def config(models, **run):
    return parse_config({"run": {"name": "t", "repeats": 2, "warmup": 0, "max_tokens": 32,
                                 **LIMITS, **run},
                         "models": [{"name": n, "source": s} for n, s in models],
                         "prompts": PROMPTS}, "test")


def faulty(fault: ScriptedReply, at: set[int], calls: list | None = None):
    """A script that answers ``fault`` to the calls numbered in ``at`` (from 0) and
    ANSWER to every other."""
    n = itertools.count()
    calls = calls if calls is not None else []

    def fn(body):
        i = next(n)
        calls.append(i)
        return fault if i in at else ScriptedReply(content=ANSWER, token_s=0.001)
    return fn


def rows(run_dir, **where):
    with Store.open(run_dir) as store:
        return list(store.requests(**where))


# (fault, expected kind): none of these is retried, and each fails one request of model b.
NOT_RETRIED = {
    "http_500": (ScriptedReply(http_status=500, error_body="overloaded"), "http_5xx"),
    "http_404": (ScriptedReply(http_status=404, error_body="no such route"), "http_4xx"),
    "hang_before_first_token": (ScriptedReply(content=ANSWER, fault="hang"), "stalled"),
    "hang_mid_stream": (ScriptedReply(content=ANSWER, fault="hang", fault_after=3), "stalled"),
    "reset_mid_stream": (ScriptedReply(content=ANSWER, fault="reset", fault_after=3),
                         "connection"),
    "bad_json": (ScriptedReply(content=ANSWER, fault="bad_json", fault_after=2), "bad_stream"),
    "missing_data_prefix": (ScriptedReply(content=ANSWER, fault="no_data_prefix",
                                          fault_after=2), "bad_stream"),
    "no_finish_no_done": (ScriptedReply(content=ANSWER, fault="truncate", fault_after=4),
                          "truncated_stream"),
    "error_event": (ScriptedReply(content=ANSWER, fault="error_event", fault_after=2),
                    "server_error_event"),
    "plain_json_answer": (ScriptedReply(content=ANSWER, fault="not_a_stream"), "not_a_stream"),
    "whole_request_timeout": (ScriptedReply(content=["トークン"] * 40, token_s=0.05),
                              "timeout"),
}


@pytest.mark.parametrize("name", list(NOT_RETRIED))
def test_a_fault_fails_one_request_the_run_goes_on_and_resume_redoes_exactly_it(
        name, tmp_path, script):
    fault, kind = NOT_RETRIED[name]
    calls: list = []
    a = script(ScriptedReply(content=ANSWER, token_s=0.001))
    b = script(faulty(fault, {1}, calls))
    run_dir = tmp_path / "run"
    t0 = time.monotonic()
    analysis = api.run_shootout(config([("a", a), ("b", b)], request_timeout_s=0.5), run_dir)
    assert time.monotonic() - t0 < 4  # a hang ends by the stall limit, a slow answer by the
    #                                    whole-request limit
    assert analysis.run.status == "incomplete" and not analysis.complete
    assert len(calls) == 4  # not retried: every request of b was sent once
    failed = rows(run_dir, status="error")
    assert [(r.model, r.error_kind) for r in failed] == [("b", kind)]
    record = failed[0].record
    assert record["error_kind"] == kind and record["retries"] == [] and record["attempts"] == 1
    assert len(rows(run_dir, status="ok")) == 7  # the run went on
    assert analysis.failures == [{"model": "b", "phase": "measure", "error_kind": kind,
                                  "count": 1, "example": " ".join(failed[0].error.split())[:300]}]
    assert any(w.code == "failed_requests" and f"{kind} ×1" in w.message
               for w in analysis.speed.warnings)
    summary = analysis.summary_json()
    assert summary["complete"] is False and summary["failures"] == analysis.failures
    # The fault is gone (the script answers every later call): resume sends only that one.
    calls.clear()
    analysis = api.resume_shootout(run_dir)
    assert calls == [4] and analysis.complete and analysis.failures == []
    assert len({r.seq for r in rows(run_dir, status="ok")}) == 8


def test_a_hang_ends_by_the_stall_limit_and_keeps_what_streamed(tmp_path, script):
    b = script(ScriptedReply(content=ANSWER, fault="hang", fault_after=3))
    run_dir = tmp_path / "run"
    t0 = time.monotonic()
    api.run_shootout(config([("b", b)], repeats=1, stall_timeout_s=0.2), run_dir)
    elapsed = time.monotonic() - t0
    failed = rows(run_dir, status="error")
    assert [r.error_kind for r in failed] == ["stalled", "stalled"]
    assert 0.4 <= elapsed < 3  # two hangs of 0.2 s each, not the default 300 s
    assert failed[0].error == "no byte from the server for 0.2 s (after 3 chunks)"
    assert failed[0].record["t_done_s"] == pytest.approx(0.2, abs=0.15)
    assert "".join(c[1] for c in failed[0].record["chunks"]) == ANSWER[:3]


def test_a_slow_stream_within_the_limits_is_measured_not_cut(tmp_path, script):
    # 0.1 s between tokens, stall limit 0.3 s: the stall timer restarts with every byte.
    b = script(ScriptedReply(content="ゆっくり答えます", token_s=0.1))
    analysis = api.run_shootout(config([("b", b)], repeats=1), tmp_path / "run")
    assert analysis.complete
    for r in rows(tmp_path / "run"):
        assert r.metrics["e2e_s"] > 0.6 and r.metrics["answer_chars"] == 8


def test_a_stream_that_ends_after_its_finish_reason_without_done_is_whole(tmp_path, script):
    b = script(ScriptedReply(content=ANSWER, send_done=False))
    analysis = api.run_shootout(config([("b", b)], repeats=1), tmp_path / "run")
    assert analysis.complete
    assert all(r.record["finish_reason"] == "stop" for r in rows(tmp_path / "run"))


def test_utf8_split_across_network_chunks_is_reassembled(tmp_path, script):
    # One byte per network chunk: every Japanese character arrives in three pieces.
    b = script(ScriptedReply(content=["日本", "語の", "答え"], network_chunk_bytes=1))
    analysis = api.run_shootout(config([("b", b)], repeats=1), tmp_path / "run")
    assert analysis.complete
    for r in rows(tmp_path / "run"):
        assert "".join(c[1] for c in r.record["chunks"]) == "日本語の答え"
        assert r.record["notes"] == [] and r.metrics["n_chunks"] == 3


def test_a_lone_surrogate_is_stored_as_replacement_character(tmp_path, script):
    events = [b'data: {"choices": [{"delta": {"content": "ab\\ud800c"}}]}\n\n',
              b'data: {"choices": [{"delta": {}, "finish_reason": "stop"}]}\n\n',
              b"data: [DONE]\n\n"]
    b = script(ScriptedReply(raw=events))
    analysis = api.run_shootout(config([("b", b)], repeats=1), tmp_path / "run")
    assert analysis.complete
    for r in rows(tmp_path / "run"):
        assert r.record["chunks"][0][1] == "ab\ufffdc"
        assert r.record["notes"] == ["1 lone surrogate(s) replaced with U+FFFD"]
    api.report(tmp_path / "run")  # and the report renders it


# -- retries -----------------------------------------------------------------------------


@pytest.mark.parametrize("fault, kind", [
    (ScriptedReply(http_status=503, error_body="loading model"), "http_503"),
    (ScriptedReply(http_status=429, error_body="slow down"), "http_429"),
    (ScriptedReply(fault="refuse"), "connection"),
    (ScriptedReply(drop=True), "connection"),
])
def test_a_transient_fault_before_any_answer_is_retried_and_recorded(
        fault, kind, tmp_path, script):
    calls: list = []
    b = script(faulty(fault, {1}, calls))
    analysis = api.run_shootout(config([("b", b)], warmup=0), tmp_path / "run")
    assert analysis.complete and len(calls) == 5  # 4 requests, one of them sent twice
    retried = [r for r in rows(tmp_path / "run") if r.record["retries"]]
    assert len(retried) == 1 and retried[0].record["attempts"] == 2
    (attempt,) = retried[0].record["retries"]
    # A dropped connection is retried at once (a pooled connection the server closed);
    # a status asks for the doubling backoff.
    waited = 0.0 if kind == "connection" else 0.01
    assert attempt["kind"] == kind and attempt["waited_s"] == waited
    assert attempt["http_status"] == (int(kind[5:]) if kind.startswith("http") else None)


def test_a_fault_that_outlasts_the_retries_is_stored_with_every_attempt(tmp_path, script):
    calls: list = []
    b = script(faulty(ScriptedReply(http_status=503, error_body="loading model"), {1, 2, 3},
                      calls))
    run_dir = tmp_path / "run"
    analysis = api.run_shootout(config([("b", b)], max_retries=2), run_dir)
    assert len(calls) == 6  # the second request sent three times
    (failed,) = rows(run_dir, status="error")
    assert failed.error_kind == "http_503" and failed.record["attempts"] == 3
    assert [r["waited_s"] for r in failed.record["retries"]] == [0.01, 0.02]
    assert analysis.failures[0]["error_kind"] == "http_503"
    calls.clear()
    assert api.resume_shootout(run_dir).complete and calls == [6]


def test_retry_after_is_honoured_and_the_clock_restarts_for_the_measured_attempt(
        tmp_path, script):
    b = script(faulty(ScriptedReply(http_status=429, retry_after="1"), {0}))
    t0 = time.time()
    api.run_shootout(config([("b", b)], repeats=1, retry_max_wait_s=5), tmp_path / "run")
    first = rows(tmp_path / "run")[0]
    assert first.status == "ok"
    assert first.record["retries"][0]["waited_s"] == 1.0
    assert first.sent_at_unix_s >= t0 + 1.0  # the recorded attempt was sent after the wait
    assert first.metrics["e2e_s"] < 0.5  # and its clock does not hold the wait


def test_retry_after_waits_are_capped(tmp_path, script):
    b = script(faulty(ScriptedReply(http_status=503, retry_after="3600"), {0}))
    t0 = time.monotonic()
    api.run_shootout(config([("b", b)], repeats=1, retry_max_wait_s=0.05), tmp_path / "run")
    assert time.monotonic() - t0 < 2
    assert rows(tmp_path / "run")[0].record["retries"][0]["waited_s"] == 0.05


def test_retry_after_reads_seconds_and_http_dates():
    now = time.time()
    when = format_datetime(datetime.fromtimestamp(now, UTC) + timedelta(seconds=30),
                           usegmt=True)
    assert retry_after_s(when, now=now) == pytest.approx(30, abs=1)
    assert retry_after_s("7") == 7.0 and retry_after_s(" 0 ") == 0.0
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past: no wait
    for unreadable in (None, "", "soon", "nan", "inf", "-"):
        assert retry_after_s(unreadable) is None


def test_no_retry_once_the_answer_has_begun(tmp_path, script):
    calls: list = []
    b = script(faulty(ScriptedReply(content=ANSWER, fault="reset", fault_after=1), {0}, calls))
    api.run_shootout(config([("b", b)], repeats=1), tmp_path / "run")
    assert calls == [0, 1]  # two requests; the reset one was not sent again
    (failed,) = rows(tmp_path / "run", status="error")
    assert failed.error_kind == "connection" and failed.record["retries"] == []


# -- engines that die --------------------------------------------------------------------


@pytest.mark.parametrize("fault", [ScriptedReply(die=True),
                                   ScriptedReply(content=ANSWER, fault="die", fault_after=2)],
                         ids=["before_answering", "mid_stream"])
def test_a_dead_engine_skips_its_model_the_others_finish_and_resume_completes(
        fault, tmp_path, script):
    calls: list = []
    a = script(ScriptedReply(content=ANSWER))
    b = script(faulty(fault, {1}, calls))
    run_dir = tmp_path / "run"
    analysis = api.run_shootout(config([("a", a), ("b", b)]), run_dir)
    assert analysis.run.status == "incomplete"
    assert len(calls) == 2  # nothing sent to b after it died
    assert analysis.failures == [{"model": "b", "phase": "measure",
                                  "error_kind": "engine_exited", "count": 3,
                                  "example": analysis.failures[0]["example"]}]
    assert analysis.failures[0]["example"].startswith("engine exited")
    with Store.open(run_dir) as store:
        assert {r.model for r in store.requests(status="ok")} == {"a", "b"}
        assert sum(r.model == "a" for r in store.requests(status="ok")) == 4
        assert [r.record["attempts"] for r in store.requests(status="error")] == [1, 0, 0]
        assert [e.kind for e in store.events()].count("engine_exited") == 1
    calls.clear()
    analysis = api.resume_shootout(run_dir)
    assert len(calls) == 3 and analysis.complete


def test_a_dead_engine_skips_its_quality_answers_and_a_dead_judge_its_grades(
        tmp_path, script):
    a = script(faulty(ScriptedReply(die=True), {2}))  # dies on its first quality answer
    judge = script(faulty(ScriptedReply(die=True), {0}))
    cfg = parse_config({
        "run": {"repeats": 1, "warmup": 0, "max_tokens": 16, **LIMITS},
        "models": [{"name": "a", "source": a},
                   {"name": "b", "source": script(ScriptedReply(content=ANSWER))}],
        "judges": [{"name": "j", "source": judge}], "prompts": PROMPTS,
        "quality": {"suites": ["builtin:ja_core"], "per_category": 1, "max_tokens": 16,
                    "judge": "j", "pairwise": False, "calibrate": False}}, "test")
    analysis = api.run_shootout(cfg, tmp_path / "run")
    groups = {(f["model"], f["phase"]): f for f in analysis.failures}
    assert set(groups) == {("a", "quality"), ("j", "judge")}
    assert groups[("a", "quality")]["error_kind"] == "engine_exited"
    with Store.open(tmp_path / "run") as store:
        answers = store.answers(status=None)
        assert all(x.error_kind == "engine_exited" for x in answers if x.model == "a")
        assert all(x.status == "ok" for x in answers if x.model == "b")
        grades = store.grades("j")
        assert grades and all(g.status == "error" and g.error_kind == "engine_exited"
                              for g in grades)
        assert groups[("j", "judge")]["count"] == len(grades)
        assert groups[("a", "quality")]["count"] == sum(x.model == "a" for x in answers)
    analysis = api.resume_shootout(tmp_path / "run")
    assert analysis.complete


# -- the console and the exit codes ------------------------------------------------------


def write_config(tmp_path, models, **run):
    text = "[run]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in
                               {"repeats": 1, "warmup": 0, **LIMITS, **run}.items())
    text += "".join(f'[[models]]\nname = "{n}"\nsource = "{s}"\n' for n, s in models)
    text += "".join(f'[[prompts]]\nid = "{p["id"]}"\ntext = "{p["text"]}"\n' for p in PROMPTS)
    path = tmp_path / "shootout.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_console_names_the_cause_and_the_exit_code_says_incomplete(tmp_path, script):
    calls: list = []
    b = script(faulty(ScriptedReply(http_status=500, error_body="CUDA out of memory"), {0},
                      calls))
    cfg = write_config(tmp_path, [("b", b)])
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", str(cfg), "--out", str(run_dir)])
    assert result.exit_code == exitcodes.INCOMPLETE == 3, result.output
    assert "b, measure: 1 × http_5xx (HTTP 500: CUDA out of memory)" in result.output
    assert f"retry exactly those with: kurabe run --resume {run_dir}" in result.output
    assert "failed_requests" in result.output  # the summary's warning too
    result = CliRunner().invoke(app, ["run", "--resume", str(run_dir)])
    assert result.exit_code == exitcodes.OK, result.output
    assert "incomplete run" not in result.output and len(calls) == 3


@pytest.mark.parametrize("reply, kind, cause", [
    (ScriptedReply(http_status=501, error_body="Not Implemented"), "http_5xx", "HTTP 501"),
    (ScriptedReply(raw=[b"garbage\n\n", b"data: {\"choices\": oops}\n\n"]), "bad_stream",
     "stream line without data: garbage"),
], ids=["http_501", "garbage_sse"])
def test_an_endpoint_that_never_answers_is_loud_in_console_exit_code_and_report(
        reply, kind, cause, tmp_path, script):
    cfg = write_config(tmp_path, [("b", script(reply))])
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", str(cfg), "--out", str(run_dir)])
    assert result.exit_code == exitcodes.INCOMPLETE, result.output
    assert f"b, measure: 2 × {kind} ({cause}" in result.output
    report = (run_dir / "report.md").read_text(encoding="utf-8")
    fairness = report.split("## Fairness warnings", 1)[1].split("\n## ", 1)[0]
    assert "failed_requests" in fairness and f"{kind} ×2" in fairness


def test_bench_json_carries_the_failures_and_exits_incomplete(tmp_path, script):
    b = script(faulty(ScriptedReply(content=ANSWER, fault="error_event"), {0}))
    result = CliRunner().invoke(app, ["bench", "--model", f"b={b}", "--repeats", "1",
                                      "--warmup", "0", "--json", "--out", str(tmp_path / "r")])
    assert result.exit_code == exitcodes.INCOMPLETE
    summary = json.loads(result.stdout)
    assert summary["complete"] is False and summary["run_status"] == "incomplete"
    assert [(f["model"], f["error_kind"]) for f in summary["failures"]] == [
        ("b", "server_error_event")]


def test_bench_takes_the_timeouts_and_retries_from_its_flags(tmp_path, script):
    b = script(ScriptedReply(content=ANSWER, fault="hang"))
    t0 = time.monotonic()
    result = CliRunner().invoke(app, ["bench", "--model", f"b={b}", "--repeats", "1",
                                      "--warmup", "0", "--stall-timeout", "0.3",
                                      "--max-retries", "0", "--json",
                                      "--out", str(tmp_path / "r")])
    assert time.monotonic() - t0 < 10  # the default stall limit is 300 s
    assert result.exit_code == exitcodes.INCOMPLETE
    summary = json.loads(result.stdout)
    assert [(f["model"], f["error_kind"]) for f in summary["failures"]] == [("b", "stalled")]
    with Store.open(tmp_path / "r") as store:
        limits = json.loads(store.run().config_json)["run"]
    assert (limits["stall_timeout_s"], limits["max_retries"]) == (0.3, 0)


def test_sigterm_exits_143_and_says_how_to_finish(tmp_path, script):
    n = itertools.count()

    def terminate_on_second(body):
        if next(n) == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return ScriptedReply(content=ANSWER, first_token_s=0.05)

    cfg = write_config(tmp_path, [("b", script(terminate_on_second))])
    result = CliRunner().invoke(app, ["run", str(cfg), "--out", str(tmp_path / "run")])
    assert result.exit_code == exitcodes.TERMINATED == 143
    assert f"finish with: kurabe run --resume {tmp_path / 'run'}" in result.output


# -- the store ---------------------------------------------------------------------------


def test_error_kinds_of_an_older_store_are_read_from_its_messages(tmp_path, script):
    run_dir = tmp_path / "run"
    api.run_shootout(config([("b", script(ScriptedReply(content=ANSWER)))], repeats=1),
                     run_dir)
    before = MIGRATIONS.index(next(m for m in MIGRATIONS if "ADD COLUMN error_kind" in m))
    con = sqlite3.connect(run_dir / "results.sqlite")
    template = con.execute("SELECT * FROM requests LIMIT 1").fetchone()
    cols = [d[0] for d in con.execute("SELECT * FROM requests LIMIT 1").description]
    old = {"HTTP 503: loading": "http_503", "HTTP 502: bad gateway": "http_5xx",
           "HTTP 401: no key": "http_4xx", "ReadTimeout": "stalled",
           "engine exited: ConnectError: refused": "engine_exited",
           "RemoteProtocolError: Server disconnected": "connection",
           "unparseable stream event: {": "bad_stream", "something else": None}
    for i, message in enumerate(old):
        row = dict(zip(cols, template, strict=True))
        row.update(id=None, seq=100 + i, status="error", error=message, error_kind=None)
        con.execute(f"INSERT INTO requests ({', '.join(row)}) VALUES "
                    f"({', '.join('?' for _ in row)})", tuple(row.values()))
    # As an older kurabe left it: no error_kind column yet.
    for table in ("requests", "answers", "grades"):
        con.execute(f"ALTER TABLE {table} DROP COLUMN error_kind")
    con.execute(f"PRAGMA user_version = {before}")
    con.commit()
    con.close()
    failed = rows(run_dir, status="error")
    assert {r.error: r.error_kind for r in failed} == old


# -- the SSE path, property-tested -------------------------------------------------------


def _event(payload) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=8) | st.sampled_from(
    ["日本", "\ud800", "😀", "\\", "\n", ""])
_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | _text,
                     lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(_text, inner, max_size=3), max_leaves=6)
_pieces = st.one_of(
    _text.map(lambda t: _event({"choices": [{"delta": {"content": t}}]})),
    _text.map(lambda t: _event({"choices": [{"delta": {"reasoning_content": t}}]})),
    st.sampled_from([
        _event({"choices": [{"delta": {}, "finish_reason": "stop"}],
                "usage": {"completion_tokens": 3}}),
        b"data: [DONE]\n\n", b": keep-alive\n\n", b"event: message\n", b"\r\n",
        b'data: {"choices": [{"delta": {"content": "\\ud83d\\ude00 \\udc00"}}]}\n\n',
        _event({"error": {"message": "boom"}}), b"data: {not json\n\n", b"retry: 10\n",
    ]),
    _json.map(lambda v: _event(v)),
    _json.map(lambda v: _event({"choices": [{"delta": v, "finish_reason": v}],
                                "usage": v, "timings": v})),
    st.binary(max_size=24),
)


@st.composite
def _network(draw):
    """A stream of events and garbage, cut into network chunks at random points."""
    body = b"".join(draw(st.lists(_pieces, max_size=8)))
    cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=6)))
    points = [0, *cuts, len(body)]
    return [body[a:b] for a, b in itertools.pairwise(points)]


_ROUNDS = itertools.count()


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(chunks=_network())
def test_the_client_reads_any_byte_stream_into_a_record_and_never_raises(chunks):
    name = f"sse-fuzz-{next(_ROUNDS)}"
    source = register_script(name, ScriptedReply(raw=chunks))
    try:
        backend = ScriptedBackend(name, source)

        async def go():
            async with ChatClient(backend, stall_timeout_s=2, max_retries=0) as client:
                return await client.stream_chat(ChatRequest(messages=[], max_tokens=8))

        record = asyncio.run(go())
    finally:
        unregister_script(name)
    if record.error is None:
        assert record.error_kind is None
        # Whole: a finish reason or [DONE] (t_done_s at [DONE] or the end of the body).
        assert record.finish_reason is not None or b"[DONE]" in b"".join(chunks)
    else:
        assert record.error_kind in ERROR_KINDS and record.error_kind not in (
            "stalled", "timeout", "engine_exited")
    # Whatever came in can be stored: valid UTF-8 JSON, no lone surrogate left.
    json.dumps(record.to_dict(), ensure_ascii=False).encode("utf-8")
