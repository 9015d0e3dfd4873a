"""The real CLI, end to end, on the two built-in models."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kurabe.metrics import METRIC_DOCS

from conftest import ARTIFACTS, run_kurabe

pytestmark = pytest.mark.engine


def children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead
        return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) != "Z"
    except OSError:
        return False


def measured_rows(run_dir: Path) -> int:
    db = run_dir / "results.sqlite"
    if not db.exists():
        return 0
    try:
        con = sqlite3.connect(db)
        return con.execute("SELECT count(*) FROM requests WHERE phase='measure' AND status='ok'"
                           ).fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def wait_for(predicate, timeout=240.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    raise AssertionError("timed out waiting")


def test_bench_json_matches_a_hand_computation_from_the_csv(tmp_path):
    out = tmp_path / "run"
    done = run_kurabe("bench", "--model", "a=builtin:smollm2-135m", "--model",
                      "b=builtin:gemma3-270m", "--repeats", "2", "--max-tokens", "24",
                      "--fixed-length", "--json", "--out", str(out), check=True)
    summary = json.loads(done.stdout)
    for name in ("a", "b"):
        model = summary["models"][name]
        for key in ("decode_tokens_per_s", "prompt_tokens_per_s", "ttft_s", "chars_per_s"):
            est = model[key]
            assert set(est) >= {"median", "ci_low", "ci_high"}
            assert est["ci_low"] <= est["median"] <= est["ci_high"]
    comp = summary["comparison"]
    assert comp["ci_low"] <= comp["ratio"] <= comp["ci_high"]

    rows = list(csv.DictReader(open(out / "results.csv", encoding="utf-8")))
    assert len(rows) == 2 * 2 * 6  # models x repeats x built-in prompts
    assert {int(r["output_tokens"]) for r in rows} == {24}  # fixed-length mode
    by = {(r["model"], r["prompt_id"], r["repeat"]): float(r["decode_tokens_per_s"]) for r in rows}
    logs = [math.log(by[("a", p, k)] / by[("b", p, k)]) for (m, p, k) in by if m == "a"]
    assert comp["ratio"] == pytest.approx(math.exp(sum(logs) / len(logs)), rel=1e-9)
    a_decode = sorted(float(r["decode_tokens_per_s"]) for r in rows if r["model"] == "a")
    assert summary["models"]["a"]["decode_tokens_per_s"]["median"] == pytest.approx(
        (a_decode[5] + a_decode[6]) / 2)
    # fixed-length mode: equal lengths, so neither length nor cap warnings
    codes = {w["code"] for w in summary["warnings"]}
    assert not codes & {"output_length_mismatch", "length_capped", "prompt_cache_hits"}

    for name in ("report.md", "results.jsonl", "results.sqlite", "engines/a.log", "engines/b.log"):
        assert (out / name).is_file(), name
    report = (out / "report.md").read_text(encoding="utf-8")
    assert comp["sentence"] in report

    # Re-render from the store alone: same figures, same report.
    (out / "report.md").unlink()
    again = run_kurabe("report", str(out), "--json", check=True)
    assert json.loads(again.stdout)["comparison"] == comp
    assert (out / "report.md").read_text(encoding="utf-8") == report


def test_explain_prints_every_metric():
    done = run_kurabe("bench", "--explain", check=True)
    for key in METRIC_DOCS:
        assert key in done.stdout


def test_models_lists_the_builtins_as_installed():
    done = run_kurabe("models", check=True)
    assert "builtin:smollm2-135m" in done.stdout and "builtin:gemma3-270m" in done.stdout
    assert "not installed" not in done.stdout


@pytest.mark.parametrize("args, needle", [
    (["run", "/nonexistent/shootout.toml"], "/nonexistent/shootout.toml"),
    (["bench", "--model", "a=/nonexistent/a.gguf", "--out", "{tmp}/r"], "/nonexistent/a.gguf"),
    (["bench", "--model", "a=builtin:nope", "--out", "{tmp}/r"], "builtin:nope"),
    (["report", "{tmp}/empty"], "no kurabe run here"),
    (["run", "--resume", "{tmp}/empty"], "no kurabe run here"),
])
def test_bad_input_is_one_clear_error(tmp_path, args, needle):
    (tmp_path / "empty").mkdir()
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    done = run_kurabe(*args)
    assert done.returncode == 2
    assert needle in done.stderr
    assert "Traceback" not in done.stderr


def test_demo_report_compares_both_builtin_models(tmp_path, page_watch):
    out = tmp_path / "demo"
    done = run_kurabe("demo", "--repeats", "1", "--max-tokens", "24", "--quality-max-tokens", "32",
                      "--out", str(out), check=True)
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "smollm2-135m" in report and "gemma3-270m" in report
    assert "decodes" in report and "95% CI" in report or "no clear winner" in report
    assert "## Fairness warnings" in report and "## Setup" in report
    # the small quality round, judged by a built-in model, says how little that judge is worth
    for section in ("## Quality", "### The judge's reliability", "## Knowledge cutoff",
                    "## Safety", "## Code checks", "## Model cards", "## Loading"):
        assert section in report, section
    assert "tiny built-in model" in report
    # the judge was calibrated first, and the report says plainly whether it passed
    assert "#### Calibration" in report and "its calibration (pairwise accuracy" in report
    summary = json.loads(run_kurabe("report", str(out), "--json", check=True).stdout)
    assert summary["run_status"] == "complete"
    # the HTML report opens offline, without console errors, every section in reading order
    page = page_watch.page
    page.goto((out / "report.html").as_uri())
    sections = page.locator("section").evaluate_all("els => els.map(e => e.id)")
    assert sections == ["headline", "setup", "cards", "loading", "speed", "quality", "answers",
                        "code", "cutoff", "safety", "fairness", "methods"]
    assert page.locator("#loading svg.chart rect[data-value]").count() >= 4
    assert "Unscored rate" in page.locator("#quality").inner_text()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "demo-report.png"), full_page=True)
    assert page_watch.errors == [] and page_watch.requests == [] and page_watch.dialogs == []
    assert (out / "report.html").stat().st_size < 2_000_000  # small enough to email
    assert "decodes" in done.stdout or "no clear winner" in done.stdout
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "demo-report.md").write_text(report, encoding="utf-8")


SHOOTOUT = """
[run]
name = "resume-test"
repeats = 4
warmup = 1
max_tokens = 32

[[models]]
name = "smol"
source = "builtin:smollm2-135m"
engine = {{ ctx = 1024 }}

[[models]]
name = "gemma"
source = "builtin:gemma3-270m"
engine = {{ ctx = 1024 }}

[[prompts]]
id = "ja"
text = "日本の四季について説明してください。"

[[prompts]]
id = "en"
text = "Describe the four seasons in Japan."
"""


def test_killing_an_engine_mid_run_skips_its_work_and_resume_completes_without_redoing(
        tmp_path):
    cfg = tmp_path / "shootout.toml"
    cfg.write_text(SHOOTOUT.format(), encoding="utf-8")
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "kurabe", "run", str(cfg), "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: measured_rows(out) >= 4)
        engines = children(proc.pid)
        gemma = [p for p in engines
                 if "gemma" in Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace")]
        assert len(gemma) == 1
        os.kill(gemma[0], signal.SIGKILL)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 3, stderr  # finished incomplete
    assert "gemma, measure:" in stderr and "engine_exited" in stderr
    assert f"kurabe run --resume {out}" in stderr
    for pid in engines:
        assert not alive(pid)  # the surviving engine was stopped too

    con = sqlite3.connect(out / "results.sqlite")
    assert con.execute("SELECT status FROM run").fetchone()[0] == "incomplete"
    # the other model went on to the end
    assert con.execute("SELECT count(*) FROM requests WHERE status='ok' AND phase='measure'"
                       " AND model='smol'").fetchone()[0] == 8
    before = dict(con.execute("SELECT seq, record_json FROM requests WHERE status='ok'"))
    con.close()
    n_before = measured_rows(out)
    assert 4 <= n_before < 16
    assert "Incomplete run" in (out / "report.md").read_text(encoding="utf-8")

    run_kurabe("run", "--resume", str(out), check=True)
    con = sqlite3.connect(out / "results.sqlite")
    assert con.execute("SELECT status FROM run").fetchone()[0] == "complete"
    ok = con.execute("SELECT seq FROM requests WHERE status='ok' AND phase='measure'").fetchall()
    assert len(ok) == 16 and len({s for (s,) in ok}) == 16  # 2 models x 4 repeats x 2 prompts
    after = dict(con.execute("SELECT seq, record_json FROM requests WHERE status='ok'"))
    assert all(after[seq] == rec for seq, rec in before.items())  # nothing redone
    assert "Incomplete run" not in (out / "report.md").read_text(encoding="utf-8")


def test_ctrl_c_stops_the_engines_and_keeps_what_was_measured(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "kurabe", "bench", "--model",
                             "a=builtin:smollm2-135m", "--repeats", "20", "--max-tokens", "32",
                             "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: measured_rows(out) >= 2)
        engines = children(proc.pid)
        assert engines
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr
    wait_for(lambda: not any(alive(p) for p in engines), timeout=15)
    con = sqlite3.connect(out / "results.sqlite")
    assert con.execute("SELECT status FROM run").fetchone()[0] == "interrupted"
    assert measured_rows(out) >= 2


def test_compare_two_runs_reports_setup_and_speed_changes(tmp_path):
    common = ["bench", "--model", "s=builtin:smollm2-135m", "--repeats", "2", "--warmup", "0",
              "--max-tokens", "32", "--fixed-length"]
    run_kurabe(*common, "--threads", "1", "--out", str(tmp_path / "one"), check=True)
    run_kurabe(*common, "--threads", "2", "--out", str(tmp_path / "two"), check=True)
    result = json.loads(run_kurabe("compare", str(tmp_path / "one"), str(tmp_path / "two"),
                                   "--json", check=True).stdout)
    assert {"model": "s", "field": "engine.threads", "before": 1, "after": 2} in result["setup_changes"]
    decode = next(c for c in result["changes"] if c["metric"] == "decode_tokens_per_s")

    def decode_by_request(run):
        return {(r["prompt_id"], r["repeat"]): float(r["decode_tokens_per_s"])
                for r in csv.DictReader(open(tmp_path / run / "results.csv"))}

    # paired on (prompt, repeat): the geometric mean of the per-request ratios
    one, two = decode_by_request("one"), decode_by_request("two")
    assert set(one) == set(two) and decode["n"] == len(one)
    logs = [math.log(two[k] / one[k]) for k in one]
    assert decode["ratio"] == pytest.approx(math.exp(sum(logs) / len(logs)))
    assert decode["ci_low"] <= decode["ratio"] <= decode["ci_high"]
    text = run_kurabe("compare", str(tmp_path / "one"), str(tmp_path / "two"), check=True).stdout
    assert "engine.threads: 1 → 2" in text
