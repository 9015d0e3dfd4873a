"""kurabe killed with SIGKILL mid-run: the store opens cleanly, the engines it started are
found and stopped, and a resume completes exactly the missing requests.

The first two tests run the real CLI in a process of its own against the real built-in
SmolLM2 on llama.cpp, kill it with SIGKILL once requests are stored, and check what is left
behind. The others drive the ownership rules on the scripted backend.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from kurabe import api, processes
from kurabe.backends.scripted import ScriptedReply
from kurabe.config import parse_config
from kurabe.orchestrator import Orchestrator
from kurabe.processes import RunInUseError
from kurabe.store import Store

from conftest import run_kurabe

PROMPTS = """
[[prompts]]
id = "a"
text = "Name three colours."

[[prompts]]
id = "b"
text = "Count from one to five."
"""


def _write_config(tmp_path: Path, server: str) -> Path:
    (tmp_path / "prompts.toml").write_text(PROMPTS, encoding="utf-8")
    cfg = tmp_path / "crash.toml"
    cfg.write_text(f"""
[run]
name = "crash"
repeats = 4
warmup = 0
max_tokens = 24
prompt_set = "prompts.toml"

[[models]]
name = "smollm2"
source = "builtin:smollm2-135m"
engine = {{ ctx = 1024, server = "{server}" }}
""", encoding="utf-8")
    return cfg


def _measured(run_dir: Path) -> list[tuple[int, str]]:
    db = sqlite3.connect(f"file:{run_dir / 'results.sqlite'}?mode=ro", uri=True)
    try:
        return db.execute("SELECT seq, status FROM requests ORDER BY id").fetchall()
    except sqlite3.OperationalError:  # tables not created yet
        return []
    finally:
        db.close()


def _start_and_kill(cfg: Path, run_dir: Path) -> None:
    """Start `kurabe run` and SIGKILL it once two requests are stored."""
    proc = subprocess.Popen([sys.executable, "-m", "kurabe", "run", str(cfg), "--out",
                             str(run_dir)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"kurabe ended before it was killed: {proc.stderr.read()!r}")
            if (run_dir / "results.sqlite").exists() and len(_measured(run_dir)) >= 2:
                break
            time.sleep(0.05)
        else:
            pytest.fail("no request was stored within 120 s")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()


def _engines(run_dir: Path) -> list[processes.ProcessRow]:
    with Store.open(run_dir) as store:
        return [p for p in store.processes() if p.role == "engine"]


def _wait_gone(row: processes.ProcessRow, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not processes.is_running(row):
            return True
        time.sleep(0.1)
    return False


def _check_resumed(run_dir: Path, before: list[tuple[int, str]]
                   ) -> subprocess.CompletedProcess:
    done = run_kurabe("run", "--resume", str(run_dir), timeout=300)
    assert done.returncode == 0, done.stderr
    rows = _measured(run_dir)
    # Exactly the missing requests were sent: the rows stored before the kill are kept
    # as they were, and every scheduled request now has one successful row.
    assert rows[:len(before)] == before
    ok = [seq for seq, status in rows if status == "ok"]
    assert sorted(ok) == list(range(8)) and len(ok) == len(set(ok))
    with Store.open(run_dir) as store:
        assert store.run().status == "complete"
        assert not store.processes(running_only=True)
    return done


def test_sigkill_mid_run_leaves_a_clean_store_and_an_engine_that_ends_itself(tmp_path):
    run_dir = tmp_path / "run"
    _start_and_kill(_write_config(tmp_path, "xllamacpp"), run_dir)

    db = sqlite3.connect(run_dir / "results.sqlite")
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    db.close()
    before = _measured(run_dir)
    assert len(before) >= 2
    [engine] = _engines(run_dir)
    # The wheel's server watches the kurabe that started it and ends itself.
    assert _wait_gone(engine, 10.0), f"engine pid {engine.pid} still running"
    _check_resumed(run_dir, before)


def test_engines_a_killed_kurabe_left_running_are_stopped_by_the_resume(tmp_path):
    # A llama-server program kurabe only knows by path does not watch its parent: after
    # the SIGKILL it keeps running, and the resume must find it in the run and stop it.
    wrapper = tmp_path / "llama-server"
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} -m kurabe.backends.xllamacpp_server"
                       ' "$@"\n', encoding="utf-8")
    wrapper.chmod(0o755)
    run_dir = tmp_path / "run"
    _start_and_kill(_write_config(tmp_path, str(wrapper)), run_dir)
    before = _measured(run_dir)
    [engine] = _engines(run_dir)
    try:
        time.sleep(1.0)
        assert processes.is_running(engine), "the orphaned engine should still be running"
        done = _check_resumed(run_dir, before)
        assert (f"engine of model 'smollm2' (pid {engine.pid}) was left running by an earlier "
                "kurabe; stopping it first") in done.stderr
        assert not processes.is_running(engine)
        with Store.open(run_dir) as store:
            reaped = [e.detail for e in store.events() if e.kind == "engine_reaped"]
            ended = {p.pid: p.end_reason for p in store.processes()}
        assert reaped == [f"stopped engine of model 'smollm2' (pid {engine.pid}) left running "
                          "by an earlier kurabe"]
        assert ended[engine.pid] == "stopped by a later command"
    finally:
        if processes.is_running(engine):
            os.killpg(engine.pid, signal.SIGKILL)


# -- ownership, on the scripted backend -----------------------------------------------------

def _scripted_run(tmp_path, script) -> Orchestrator:
    config = parse_config({"run": {"name": "t", "repeats": 1, "warmup": 0},
                           "models": [{"name": "a", "source": script(ScriptedReply(content="hi"))}],
                           "prompts": [{"id": "p", "text": "hello"}]}, "test")
    return Orchestrator.create(config, tmp_path / "run")


def test_a_run_owned_by_a_live_kurabe_is_refused_and_left_untouched(tmp_path, script):
    run = _scripted_run(tmp_path, script)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        processes.record(run.store, "kurabe", other.pid, ["kurabe", "run"])
        with pytest.raises(RunInUseError, match=f"another kurabe \\(pid {other.pid}"):
            run.execute()
        assert list(run.store.requests()) == []
        assert run.store.run().status == "running"
    finally:
        other.kill()
        other.wait()
        run.store.close()


def test_a_dead_owner_is_marked_gone_and_the_run_proceeds(tmp_path, script):
    run = _scripted_run(tmp_path, script)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    # The pid of a finished process, recorded as the owner: like a kurabe killed earlier.
    processes.record(run.store, "kurabe", gone.pid, ["kurabe", "run"])
    run.execute()
    rows = run.store.processes()
    run.store.close()
    assert rows[0].end_reason.startswith("gone")
    assert rows[1].pid == os.getpid() and rows[1].end_reason == "finished"
    assert api.report(tmp_path / "run")[0].run.status == "complete"


def test_a_reused_pid_is_never_taken_for_a_recorded_engine(tmp_path):
    # Same pid, another start time: the process under that pid is somebody else's.
    me = psutil.Process()
    row = processes.ProcessRow(id=1, role="engine", model="m", pid=me.pid,
                               create_time=me.create_time() - 100.0, command=[],
                               started_at="")
    assert not processes.is_running(row)
    assert processes.stop_process(row) is False
