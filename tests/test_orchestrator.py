"""Whole runs driven in-process on the scripted backend: schedule order, resume, failure
accounting, signals, the reasoning sweep, the quality stages, and self-contained run folders.

The scripted backend streams real SSE through the real client (an httpx transport instead of
a socket), so everything above the backend runs as it does against a server.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kurabe import api
from kurabe.backends.scripted import (
    ScriptedReply,
    last_user_text,
)
from kurabe.cli import app
from kurabe.config import load_config, parse_config
from kurabe.orchestrator import Orchestrator, RunTerminated
from kurabe.phases.schedule import build_schedule
from kurabe.store import Store


def recorder(calls: list, label: str, reply=None):
    """A script that records (label, user text, body) and answers ``reply(body)``."""
    def fn(body):
        calls.append((label, last_user_text(body), body))
        if reply is not None:
            return reply(body)
        text = last_user_text(body)
        return ScriptedReply(content=f"{label}の答えです。日本語で丁寧に説明します：{text}")
    return fn


PROMPTS = [{"id": "p1", "text": "一つ目の質問", "category": "knowledge"},
           {"id": "p2", "text": "二つ目の質問", "category": "creative"}]


def config(models, **run):
    return parse_config({"run": {"name": "t", "repeats": 2, "warmup": 1, "max_tokens": 32, **run},
                         "models": [{"name": n, "source": s} for n, s in models],
                         "prompts": PROMPTS}, "test")


def test_requests_go_out_in_the_schedules_alternating_order(tmp_path, script):
    calls: list = []
    a, b = script(recorder(calls, "a")), script(recorder(calls, "b"))
    analysis = api.run_shootout(config([("a", a), ("b", b)]), tmp_path / "run")
    expected = build_schedule(["a", "b"], ["p1", "p2"], 2, 1)
    text = {p["id"]: p["text"] for p in PROMPTS}
    assert [(c[0], c[1]) for c in calls] == [(s.model, text[s.prompt_id]) for s in expected]
    # A B, then B A: who goes first alternates between rounds
    measured = [s.model for s in expected if s.phase == "measure"]
    assert measured[:4] == ["a", "b", "b", "a"]
    with Store.open(tmp_path / "run") as store:
        rows = list(store.requests())
        assert [r.seq for r in rows] == [s.seq for s in expected]
        assert all(r.status == "ok" for r in rows) and store.run().status == "complete"
        assert {m.name: m.engine_kind for m in store.models()} == {
            "a": "scripted (in-process)", "b": "scripted (in-process)"}
    assert (analysis.speed.counts["a"]["ok"], analysis.speed.counts["a"]["error"]) == (4, 0)
    # every request body carries what the run asked for
    assert all(c[2]["max_tokens"] == 32 and c[2]["stream"] for c in calls)


def test_client_rate_agrees_with_the_scripted_servers_own_clock(tmp_path, script):
    reply = ScriptedReply(content=["トークン"] * 40, token_s=0.004)
    a = script(reply)
    api.run_shootout(config([("a", a)], repeats=3, warmup=0, max_tokens=64), tmp_path / "run")
    with Store.open(tmp_path / "run") as store:
        rows = list(store.requests(phase="measure"))
    for r in rows:
        server = r.record["timings"]["predicted_per_second"]
        assert r.metrics["output_tokens"] == 40
        assert r.metrics["decode_tokens_per_s"] == pytest.approx(server, rel=0.15)


def test_a_dead_engine_skips_its_work_and_resume_sends_exactly_the_missing_requests(
        tmp_path, script):
    calls: list = []
    n = itertools.count()

    def dies_on_fifth(body):
        calls.append(last_user_text(body))
        return ScriptedReply(die=True) if next(n) == 4 else ScriptedReply(content="はい")

    src = script(dies_on_fifth)
    cfg = config([("a", src)], repeats=3, warmup=0)
    run_dir = tmp_path / "run"
    analysis = api.run_shootout(cfg, run_dir)
    assert analysis.run.status == "incomplete" and not analysis.complete
    assert analysis.failures == [{"model": "a", "phase": "measure", "error_kind": "engine_exited",
                                  "count": 2, "example": analysis.failures[0]["example"]}]
    assert analysis.failures[0]["example"].startswith("engine exited")
    assert len(calls) == 5  # the request after the death was never sent
    with Store.open(run_dir) as store:
        assert store.completed_seqs() == {0, 1, 2, 3}
        failed = list(store.requests(status="error"))
        assert [(r.seq, r.error_kind) for r in failed] == [(4, "engine_exited"),
                                                          (5, "engine_exited")]
        assert failed[0].error.startswith("engine exited")
        assert failed[1].error.startswith("not sent") and failed[1].record["attempts"] == 0
        assert "engine_exited" in [e.kind for e in store.events()]
    assert (run_dir / "report.md").exists()
    # The backend comes back (a fresh process would); resume does only seqs 4 and 5.
    calls.clear()
    api.resume_shootout(run_dir)
    assert len(calls) == 2
    with Store.open(run_dir) as store:
        assert store.completed_seqs() == set(range(6)) and store.run().status == "complete"
    # Nothing left: a second resume sends nothing.
    calls.clear()
    api.resume_shootout(run_dir)
    assert calls == []


def test_failed_requests_are_stored_counted_and_retried_only_on_resume(tmp_path, script):
    n = itertools.count()
    b_calls: list = []

    def flaky(body):
        b_calls.append(1)
        return ScriptedReply(http_status=500, error_body="overloaded") if next(n) in (1, 3) \
            else ScriptedReply(content="ok")

    a, b = script(ScriptedReply(content="fine")), script(flaky)
    run_dir = tmp_path / "run"
    analysis = api.run_shootout(config([("a", a), ("b", b)], warmup=0), run_dir)
    assert (analysis.speed.counts["b"]["ok"], analysis.speed.counts["b"]["error"]) == (2, 2)
    assert analysis.run.status == "incomplete"
    assert any(w.code == "failed_requests" and "http_5xx ×2" in w.message
               for w in analysis.speed.warnings)
    with Store.open(run_dir) as store:
        errors = list(store.requests(status="error"))
        assert [e.model for e in errors] == ["b", "b"]
        assert all(e.error.startswith("HTTP 500") for e in errors)
        assert all(e.error_kind == "http_5xx" for e in errors)
    b_calls.clear()
    analysis = api.resume_shootout(run_dir)
    assert len(b_calls) == 2  # the two failures, nothing else
    assert (analysis.speed.counts["b"]["ok"], analysis.speed.counts["b"]["error"]) == (4, 0)
    assert analysis.run.status == "complete" and analysis.complete


def test_sigterm_interrupts_cleanly_and_the_run_resumes(tmp_path, script):
    n = itertools.count()

    def terminate_on_third(body):
        if next(n) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return ScriptedReply(content="ok", token_s=0.01, first_token_s=0.05)

    run_dir = tmp_path / "run"
    with pytest.raises(RunTerminated):
        api.run_shootout(config([("a", script(terminate_on_third))], warmup=0), run_dir)
    with Store.open(run_dir) as store:
        assert store.run().status == "interrupted"
        assert store.completed_seqs() == {0, 1}
        assert [e.kind for e in store.events()][-1] == "interrupted"
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handler removed again
    api.resume_shootout(run_dir)
    with Store.open(run_dir) as store:
        assert store.completed_seqs() == {0, 1, 2, 3}


def test_reasoning_sweep_sends_each_setting_and_tabulates_outcomes(tmp_path, script):
    def thinks_when_allowed(body):
        thinking = (body.get("chat_template_kwargs") or {}).get("enable_thinking", True)
        if not thinking:
            return ScriptedReply(content="短い答え")
        return ScriptedReply(reasoning="考え" * 20, content="答え")

    calls: list = []
    cfg = parse_config({
        "run": {"repeats": 1, "warmup": 0, "max_tokens": 30},
        "models": [{"name": "q", "source": script(recorder(calls, "q", thinks_when_allowed))}],
        "prompts": PROMPTS,
        "reasoning_sweep": {"settings": ["off", "high", "unlimited"], "max_tokens": 30}}, "t")
    analysis = api.run_shootout(cfg, tmp_path / "run")
    sweep = [c[2] for c in calls[2:]]  # after the 2 measured requests
    assert [b["chat_template_kwargs"]["enable_thinking"] for b in sweep] == [False, True, True] * 2
    assert [b.get("reasoning_effort") for b in sweep] == ["none", "high", None] * 2
    cells = {(c.category, c.setting): c for c in analysis.sweep_cells}
    # 40 reasoning characters at one token each > 30 tokens: thinking never ends
    assert cells[("knowledge", "off")].answer_rate == 1.0
    assert cells[("knowledge", "high")].thinking_exhausted == 1
    assert analysis.summary_json()["reasoning_sweep"]["cells"]


SUITE = [
    {"id": "k1", "category": "knowledge", "lang": "ja", "turns": ["梅雨の仕組みは？"],
     "reference": "前線"},
    {"id": "k2", "category": "reasoning", "lang": "ja", "turns": ["1+1は？", "では2+2は？"]},
]


def write_inputs(folder: Path, judge_src: str, models: list[tuple[str, str]],
                 max_tokens: int = 24) -> Path:
    """A config file whose prompt set and suite are files beside it (relative paths)."""
    (folder / "mine.toml").write_text(
        "".join(f'[[prompts]]\nid = "{p["id"]}"\ntext = "{p["text"]}"\n'
                f'category = "{p["category"]}"\n\n' for p in PROMPTS), encoding="utf-8")
    (folder / "suite.jsonl").write_text(
        "\n".join(json.dumps(i, ensure_ascii=False) for i in SUITE), encoding="utf-8")
    models_toml = "".join(f'[[models]]\nname = "{n}"\nsource = "{s}"\n\n' for n, s in models)
    (folder / "shootout.toml").write_text(f'''
[run]
name = "folder"
repeats = 1
warmup = 0
max_tokens = 24
prompt_set = "mine.toml"

{models_toml}
[[judges]]
name = "judge"
source = "{judge_src}"

[quality]
suites = ["suite.jsonl"]
max_tokens = {max_tokens}
judge = "judge"
''', encoding="utf-8")
    return folder / "shootout.toml"


def judge_script(score: int, calls: list | None = None):
    def fn(body):
        if calls is not None:
            calls.append(body)
        if "winner" in json.dumps(body.get("response_format") or {}):
            return ScriptedReply(content=json.dumps({"winner": "A", "explanation": "先"}))
        return ScriptedReply(content=json.dumps({"score": score, "explanation": "ok"}))
    return fn


def test_quality_stages_generate_check_and_judge_each_stored(tmp_path, script):
    judged: list = []
    answer_calls: list = []
    a = script(recorder(answer_calls, "a"))
    b = script(recorder(answer_calls, "b", lambda body: ScriptedReply(
        content="The answer is a weather front that stays over Japan for weeks.")))
    cfg_path = write_inputs(tmp_path, script(judge_script(7, judged)), [("a", a), ("b", b)],
                            max_tokens=200)
    analysis = api.run_shootout(load_config(cfg_path), tmp_path / "run")
    q = analysis.quality
    assert q is not None
    # generation: every item (both turns of k2) for both models, in alternating order
    assert [(c[0], c[1]) for c in answer_calls[4:]] == [
        ("a", "梅雨の仕組みは？"), ("b", "梅雨の仕組みは？"),
        ("b", "1+1は？"), ("b", "では2+2は？"), ("a", "1+1は？"), ("a", "では2+2は？")]
    with Store.open(tmp_path / "run") as store:
        answers = {x.key: x for x in store.answers()}
        assert len(answers) == 4 and len(answers[("a", "k2", 0)].turns) == 2
        checks = store.checks()
        lang = {(c.model, c.item_id): c.passed for c in checks if c.name == "language"}
        assert lang[("a", "k1")] is True and lang[("b", "k1")] is False  # English to a ja item
        grades = store.grades("judge")
        free = sum(p.probe == "free" for p in store.probes("judge"))
    # judging: 4 single grades and 2 items x 2 orders pairwise, all with the JSON schema;
    # only the judge probes' free grades (one per sampled grade) go without it
    assert sorted(g.kind for g in grades) == ["pairwise"] * 4 + ["single"] * 4
    assert all(g.status == "scored" for g in grades)
    assert free == 4 and sum("response_format" not in b for b in judged) == free
    assert all(b["response_format"]["type"] == "json_schema" for b in judged
               if "response_format" in b)
    assert q.scores["a"]["overall"].mean == 7.0
    # the judge saw the snapshot's instructions and the fenced answer
    assert "strict, fair grader" in judged[0]["messages"][0]["content"]
    # "A" in both orders is position bias: a flip, counted as a tie
    assert q.pairs[0].flips == 2 and q.pairs[0].ties == 2


def test_a_run_folder_is_self_contained(tmp_path, script, monkeypatch):
    """Copy a finished run elsewhere, delete every input file it came from: report, judge
    and resume (of an interrupted copy) all work from the copy alone."""
    n = itertools.count()
    dies = {"at": 3}

    def a_fn(body):
        if next(n) == dies["at"]:
            return ScriptedReply(die=True)
        return ScriptedReply(content="答えです。" + last_user_text(body)[:4])

    a, b = script(a_fn), script(ScriptedReply(content="こたえ"))
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    cfg_path = write_inputs(inputs, script(judge_script(5)), [("a", a), ("b", b)])
    cfg = load_config(cfg_path)
    interrupted = tmp_path / "interrupted"
    assert api.run_shootout(cfg, interrupted).run.status == "incomplete"
    dies["at"] = -1
    finished = tmp_path / "finished"
    api.run_shootout(cfg, finished)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copytree(finished, elsewhere / "finished")
    shutil.copytree(interrupted, elsewhere / "interrupted")
    shutil.rmtree(inputs)
    monkeypatch.chdir(elsewhere)

    # report, from another folder, through the CLI
    result = CliRunner().invoke(app, ["report", "finished"])
    assert result.exit_code == 0, result.output
    md = (elsewhere / "finished" / "report.md").read_text(encoding="utf-8")
    assert "p1" in md and "p2" in md
    # judge again with another scripted judge: grades added, nothing regenerated
    with Store.open(elsewhere / "finished") as store:
        answers_before = len(store.answers())
    j2 = script(judge_script(9))
    analysis = api.rejudge(Path("finished"), f"j2={j2}")
    assert analysis.quality.judge == "j2" and analysis.quality.scores["a"]["overall"].mean == 9.0
    with Store.open(elsewhere / "finished") as store:
        assert len(store.answers()) == answers_before
    # resume the interrupted copy
    analysis = api.resume_shootout(Path("interrupted"))
    assert analysis.run.status == "complete"
    with Store.open(elsewhere / "interrupted") as store:
        assert store.completed_seqs() == set(range(4))
        assert len(store.answers()) == 4 and store.grades("judge")


def test_the_snapshot_holds_what_the_run_was_given(tmp_path, script):
    cfg_path = write_inputs(tmp_path, script(judge_script(5)), [("a", script(ScriptedReply()))])
    run = Orchestrator.create(load_config(cfg_path), tmp_path / "run")
    try:
        snap = run.store.snapshot()
        assert [p["id"] for p in snap.prompts] == ["p1", "p2"]
        assert [i["id"] for i in snap.suite_items] == ["k1", "k2"]
        assert "strict, fair grader" in snap.judge_prompts["single_system"]
        assert snap.config["run"]["prompt_set"] == str(tmp_path / "mine.toml")
        assert len(snap.calibration_items) == 24  # the judge's calibration set, 4 requests each
        assert run.pending() == {"speed": 2, "quality generation": 2, "checks": 0,
                                 "calibration": 96, "judging": 0, "judge probes": 0}
    finally:
        run.store.close()


def test_the_cli_says_how_to_finish_a_run(tmp_path, script):
    src = script(ScriptedReply(content="x"))
    api.run_shootout(config([("a", src)], warmup=0, repeats=1), tmp_path / "run")
    cfg = tmp_path / "s.toml"
    cfg.write_text(f'[[models]]\nname = "a"\nsource = "{src}"\n\n[[prompts]]\nid = "p"\n'
                   'text = "t"\n', encoding="utf-8")
    result = CliRunner().invoke(app, ["run", str(cfg), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert f"kurabe run --resume {tmp_path / 'run'}" in result.output


def test_a_run_made_before_snapshots_gets_one_from_its_files_once(tmp_path, script):
    src = script(ScriptedReply(content="はい、答えます。"))
    (tmp_path / "mine.toml").write_text('[[prompts]]\nid = "only"\ntext = "質問"\n',
                                        encoding="utf-8")
    cfg = parse_config({"run": {"repeats": 1, "warmup": 0, "prompt_set": "mine.toml"},
                        "models": [{"name": "a", "source": src}]}, "t", base_dir=tmp_path)
    api.run_shootout(cfg, tmp_path / "run")
    with Store.open(tmp_path / "run") as store:  # as an older kurabe left it: no snapshot
        store._db.execute("DELETE FROM snapshot")
        assert store.snapshot() is None
    from kurabe.report import render_run

    analysis, _ = render_run(tmp_path / "run")
    assert [p["id"] for p in analysis.prompts] == ["only"]
    (tmp_path / "mine.toml").unlink()  # kept in the store from now on
    analysis, _ = render_run(tmp_path / "run")
    assert [p["id"] for p in analysis.prompts] == ["only"]


def test_backends_are_found_by_name_and_unknown_names_are_clear():
    from kurabe import KurabeError
    from kurabe.backends.base import backend_class, known_backends

    assert {"llama.cpp", "llama-server", "openai", "ollama", "scripted"} <= set(known_backends())
    with pytest.raises(KurabeError, match="unknown backend 'vllm-nope'"):
        backend_class("vllm-nope")


def test_an_unknown_backend_name_fails_before_the_run_folder_exists(tmp_path, script):
    from kurabe import KurabeError

    cfg = parse_config({"models": [{"name": "a", "source": script(ScriptedReply()),
                                    "engine": {"backend": "vllm-nope"}}], "prompts": PROMPTS},
                       "t.toml")
    with pytest.raises(KurabeError, match="model 'a': engine.backend: unknown backend"):
        api.run_shootout(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()
