"""The machine under a run: sampling it, the busy rule, the report's warning and compare's note.

The runs here are real: the sampler reads the machine while in-process scripted runs execute,
once as the machine happens to be and once with CPU-burning processes started by the test (one
per usable core). The machine is shared, so no test assumes it is quiet; every assertion about
measured load is checked against what the test's own processes were measured to use (psutil),
or against a verdict the stored samples themselves decide.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from kurabe import api
from kurabe.analysis.compare import compare_runs
from kurabe.analysis.machine import (
    BUSY_CORE_SHARE,
    busy_machine_warning,
    load_difference,
    machine_load,
    summarise_machine,
)
from kurabe.backends.scripted import ScriptedReply, register_script, unregister_script
from kurabe.config import parse_config
from kurabe.records import MachineSample
from kurabe.sampler import INTERVAL_ENV, MachineSampler, usable_cpus
from kurabe.store import Store

BURN = "while True: pass"
PROMPTS = [{"id": "p1", "text": "一つ目の質問", "category": "knowledge"},
           {"id": "p2", "text": "二つ目の質問", "category": "creative"}]


def config(source: str, repeats: int = 2):
    return parse_config({"run": {"name": "load", "repeats": repeats, "warmup": 0,
                                 "max_tokens": 64},
                         "models": [{"name": "a", "source": source}],
                         "prompts": PROMPTS}, "test")


def tree_cpu_s(procs: list[psutil.Process]) -> float:
    """User + system seconds of these processes and all their descendants, now."""
    total = 0.0
    for root in procs:
        for p in [root, *root.children(recursive=True)]:
            t = p.cpu_times()
            total += t.user + t.system
    return total


def stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.kill()
        proc.wait(timeout=10)


# -- the busy rule, on recorded figures ----------------------------------------------------


def recorded(t: float, other_cores: float, *, cores: int = 4, interval: float = 1.0,
             freq: float | None = 2400.0) -> MachineSample:
    return MachineSample(t_unix_s=t, interval_s=interval, usable_cores=cores,
                         cpu_busy_pct=100 * (other_cores + 1.1) / cores,
                         engine_cpu_s=1.0 * interval, kurabe_cpu_s=0.1 * interval,
                         other_cpu_s=other_cores * interval, load_1m=1.0 + other_cores,
                         cpu_freq_mhz=freq)


def run_of(busy: int, quiet: int, other: float = 0.5, start: float = 1000.0,
           **kw) -> list[MachineSample]:
    return [recorded(start + i + 1, other if i < busy else 0.05, **kw)
            for i in range(busy + quiet)]


def test_a_run_is_busy_when_more_than_a_fifth_of_its_samples_are():
    # 4 cores: a sample is busy above 0.4 cores used by other processes
    threshold = BUSY_CORE_SHARE * 4
    at_limit = summarise_machine(run_of(2, 8), None)  # 20% busy: not more than 20%
    assert at_limit is not None and at_limit.busy_samples == 2 and not at_limit.busy
    assert busy_machine_warning(at_limit) is None
    over = summarise_machine(run_of(3, 7), None)
    assert over is not None and over.busy and over.busy_share == pytest.approx(0.3)
    warning = busy_machine_warning(over)
    assert warning is not None and warning.code == "busy_machine"
    assert "3 of 10 samples (30%)" in warning.message and "of the 4 cores" in warning.message
    # exactly at the threshold is not busy; just above it is
    at, above = (summarise_machine(run_of(10, 0, other=o), None) for o in (threshold,
                                                                          threshold + 0.01))
    assert at is not None and above is not None and not at.busy and above.busy
    # medians and maxima in cores, whatever the interval
    half = summarise_machine(run_of(3, 7, other=1.5, interval=0.5), None)
    assert half is not None
    assert half.other_cores_max == pytest.approx(1.5) and half.other_cores_median == pytest.approx(0.05)
    assert half.engine_cores_median == pytest.approx(1.0)
    assert summarise_machine([], None) is None


def test_only_samples_overlapping_the_measured_span_decide():
    # ten busy seconds before the measured requests (engines loading), ten quiet ones during
    samples = run_of(10, 10)  # t = 1001 .. 1020, each covering the second before it
    load = summarise_machine(samples, (1010.0, 1020.0))
    assert load is not None
    assert load.n_samples == 20 and load.n_window == 10 and not load.busy
    assert [p["in_window"] for p in load.series] == [False] * 10 + [True] * 10
    # the same samples with the busy seconds inside the span
    load = summarise_machine(samples, (1000.0, 1010.0))
    assert load is not None and load.n_window == 10 and load.busy


def test_compare_notes_follow_the_load_of_both_runs():
    quiet, busy = summarise_machine(run_of(0, 10), None), summarise_machine(run_of(8, 2), None)
    notes = load_difference(quiet, busy)
    assert len(notes) == 1 and "different machine load" in notes[0]
    assert "busy in 0% of samples" in notes[0] and "busy in 80% of samples (a busy machine)" in notes[0]
    assert load_difference(busy, busy) == [] and load_difference(None, None) == []
    assert "whether both ran under the same load is unknown" in load_difference(None, busy)[0]
    slow = summarise_machine(run_of(0, 10, freq=1200.0), None)
    assert load_difference(quiet, slow) == [
        "the CPU ran at different frequencies: a median 2.40 GHz before, 1.20 GHz after"]


# -- the sampler, against processes the test started ---------------------------------------


def test_the_sampler_counts_engine_process_trees_apart_from_other_processes():
    # an "engine" that does its work in a child process, and an unrelated busy process
    engine = subprocess.Popen(
        [sys.executable, "-c",
         f"import subprocess, sys; subprocess.run([sys.executable, '-c', {BURN!r}])"],
        start_new_session=True)
    other = subprocess.Popen([sys.executable, "-c", BURN])
    try:
        eng, oth = psutil.Process(engine.pid), psutil.Process(other.pid)
        deadline = time.monotonic() + 20
        while not eng.children() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert eng.children(), "the engine's child did not start"
        samples: list[MachineSample] = []
        eng0, oth0 = tree_cpu_s([eng]), tree_cpu_s([oth])
        with MachineSampler(samples.extend, [engine.pid, None], interval_s=0.2):
            time.sleep(2.0)
        eng_used, oth_used = tree_cpu_s([eng]) - eng0, tree_cpu_s([oth]) - oth0
    finally:
        os.killpg(engine.pid, signal.SIGKILL)
        engine.wait(timeout=10)
        stop([other])
    assert len(samples) >= 5
    # the last one covers the part of an interval before stop() (at least a quarter of one)
    assert all(0.15 < s.interval_s < 1.5 for s in samples[:-1])
    assert 0.045 < samples[-1].interval_s < 1.5
    assert all(s.usable_cores == len(usable_cpus()) for s in samples)
    assert eng_used > 0.2 and oth_used > 0.2, "the test's processes got no CPU"
    engines = sum(s.engine_cpu_s for s in samples)
    others = sum(s.other_cpu_s for s in samples)
    # the sampler's first and last readings lie inside the test's own: it can miss a little
    # at either end (and count 10 ms ticks), never the other process
    assert eng_used - 0.3 <= engines <= eng_used + 0.05
    assert others >= oth_used - 0.3
    assert all(0.0 <= s.cpu_busy_pct <= 100.0 for s in samples)
    assert all(s.load_1m is not None for s in samples)  # Linux has a load average


# -- whole runs: quiet-ish and loaded ------------------------------------------------------


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One scripted run on the machine as it is, one with a burner on every usable core."""
    source = register_script("machine-load", ScriptedReply(content=["トークン"] * 30,
                                                            token_s=0.02))
    base = tmp_path_factory.mktemp("machine-load")
    burners: list[subprocess.Popen] = []
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(INTERVAL_ENV, "0.2")
            quiet = api.run_shootout(config(source), base / "quiet")
            burners = [subprocess.Popen([sys.executable, "-c", BURN])
                       for _ in usable_cpus()]
            procs = [psutil.Process(b.pid) for b in burners]
            time.sleep(0.3)
            used0, t0 = tree_cpu_s(procs), time.monotonic()
            busy = api.run_shootout(config(source), base / "busy")
            burned = (tree_cpu_s(procs) - used0) / (time.monotonic() - t0)
    finally:
        stop(burners)
        unregister_script("machine-load")
    return {"base": base, "quiet": quiet, "busy": busy, "burner_cores": burned}


def window_samples(run_dir: Path) -> list[MachineSample]:
    with Store.open(run_dir) as store:
        load = machine_load(store)
        samples = store.machine_samples()
    assert load is not None and load.window is not None
    start, end = load.window
    return [s for s in samples if s.t_unix_s > start and s.t_unix_s - s.interval_s < end]


def test_a_run_on_a_loaded_machine_carries_the_busy_machine_warning(runs):
    run_dir, analysis = runs["base"] / "busy", runs["busy"]
    load = analysis.machine_load
    assert load is not None and load.busy
    assert "busy_machine" in [w.code for w in analysis.speed.warnings]
    md = (run_dir / "report.md").read_text(encoding="utf-8")
    html = (run_dir / "report.html").read_text(encoding="utf-8")
    assert "⚠ **busy_machine**: the machine was busy while speed was measured" in md
    assert "Measured on a busy machine" in md and "the machine counts as busy" in md
    assert "<strong>busy_machine</strong>: the machine was busy" in html
    assert 'data-chart="timeline"' in html and 'data-series="other processes"' in html
    # the stored samples show the burners: other processes used at least what the burners
    # were measured to use (everything else on the machine comes on top)
    samples = window_samples(run_dir)
    assert len(samples) >= 5
    other = statistics.median(s.other_cpu_s / s.interval_s for s in samples)
    assert runs["burner_cores"] > 0.3, "the burners got no CPU"
    assert other >= 0.7 * runs["burner_cores"]
    assert other > BUSY_CORE_SHARE * samples[0].usable_cores


def test_every_run_stores_its_samples_and_reports_what_they_decide(runs):
    run_dir, analysis = runs["base"] / "quiet", runs["quiet"]
    load = analysis.machine_load
    assert load is not None
    with Store.open(run_dir) as store:
        samples = store.machine_samples()
        measured = list(store.requests(phase="measure", status="ok"))
    assert len(samples) >= 5 and 0.15 < load.interval_s < 1.0
    assert [s.t_unix_s for s in samples] == sorted(s.t_unix_s for s in samples)
    # the sampler ran from before the first request to after the last one
    start, end = load.window or (0.0, 0.0)
    assert start == min(r.sent_at_unix_s for r in measured)
    assert samples[0].t_unix_s - samples[0].interval_s <= start + 0.05
    assert samples[-1].t_unix_s >= end - 0.1
    # the scripted engine runs inside kurabe's process: no engine process, kurabe's CPU
    assert all(s.engine_cpu_s == 0.0 for s in samples)
    assert sum(s.kurabe_cpu_s for s in samples) > 0.0
    # the verdict is the documented rule over the stored samples, and the report says it
    window = window_samples(run_dir)
    busy = sum(1 for s in window if s.other_cpu_s / s.interval_s
               > BUSY_CORE_SHARE * s.usable_cores)
    assert load.busy_samples == busy and load.busy == (busy > 0.2 * len(window))
    md = (run_dir / "report.md").read_text(encoding="utf-8")
    html = (run_dir / "report.html").read_text(encoding="utf-8")
    assert f"Machine load while speed was measured: {load.sentence()}." in md
    assert ("busy_machine" in md) == load.busy == ("<strong>busy_machine</strong>" in html)
    assert analysis.summary_json()["machine_load"]["busy"] == load.busy


def test_compare_notes_a_difference_in_machine_load(runs, tmp_path):
    base = runs["base"]
    assert not [n for n in compare_runs(base / "busy", base / "busy")["notes"] if "load" in n]
    # the quiet run's folder, its samples set to a machine nothing else used
    calm = tmp_path / "calm"
    shutil.copytree(base / "quiet", calm)
    with sqlite3.connect(calm / "results.sqlite") as db:
        db.execute("UPDATE machine_samples SET other_cpu_s = 0")
    notes = compare_runs(calm, base / "busy")["notes"]
    load = [n for n in notes if n.startswith("the runs ran under different machine load")]
    assert len(load) == 1
    assert "before, other processes used a median 0.00 of" in load[0]
    assert "(a busy machine); speed differences between them may come from the load" in load[0]
    with sqlite3.connect(calm / "results.sqlite") as db:
        db.execute("DELETE FROM machine_samples")
    notes = compare_runs(calm, base / "busy")["notes"]
    assert [n for n in notes if n.startswith("the before run has no machine samples")]


def test_a_run_that_fails_keeps_the_samples_it_took(tmp_path, monkeypatch):
    monkeypatch.setenv(INTERVAL_ENV, "0.1")
    source = register_script("machine-load-dies", [ScriptedReply(content="あ" * 20,
                                                                 token_s=0.02)] * 3
                             + [ScriptedReply(die=True)])
    try:
        api.run_shootout(config(source, repeats=3), tmp_path / "run")
    finally:
        unregister_script("machine-load-dies")
    with Store.open(tmp_path / "run") as store:
        assert store.run().status == "incomplete"
        samples = store.machine_samples()
    assert len(samples) >= 3
