"""``kurabe load`` as a user runs it: the issue's JSON fields, a managed server started with
parallel slots and metrics, and bad flags named."""

from __future__ import annotations

import json

import httpx
import pytest

from conftest import run_kurabe

ISSUE_KEYS = {"concurrency", "output_tokens_per_s", "decode_tokens_per_s", "requests_per_s",
              "ttft_s", "itl_s", "errors", "client_cpu_cores", "client_bound"}


def test_load_json_against_a_managed_server(tmp_path):
    out = tmp_path / "run"
    done = run_kurabe("load", "-m", "s=builtin:smollm2-135m", "--concurrency", "1,2",
                      "--requests", "3", "--max-tokens", "8", "--prompt-tokens", "12",
                      "--slo-ttft", "30", "--out", str(out), "--json", timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["run_dir"] == str(out)
    levels = result["models"]["s"]["levels"]
    assert [lv["concurrency"] for lv in levels] == [1, 2]
    for lv in levels:
        assert ISSUE_KEYS <= set(lv)
        for key in ("ttft_s", "itl_s"):
            assert set(lv[key]) == {"p50", "p90", "p99"}
        assert lv["errors"] == {} and lv["completed"] == 3
        assert lv["client_bound"] is False
        # the managed engine was started with --metrics: the cross-check is there
        assert lv["server_check"]["output_tokens_ratio"] == 1.0
    from kurabe.store import Store

    store = Store.open(out)
    try:
        stored = store.load_levels("s")
        command = store.models()[0].engine_command
    finally:
        store.close()
    assert stored[1].client["engine_cpu_s"] > 0  # the managed engine's CPU was recorded
    assert stored[1].client["max_in_flight"] == 2
    assert command is not None
    assert "--metrics" in command and command[command.index("-np") + 1] == "2"


@pytest.mark.parametrize(("args", "flag"), [
    (["--duration", "5x"], "--duration"),
    (["--concurrency", "1,x"], "--concurrency"),
    (["--rate", "2", "--concurrency", "2"], "--concurrency and --rate"),
    (["--workers", "many"], "--workers"),
])
def test_bad_flags_are_named(tmp_path, args, flag):
    done = run_kurabe("load", "-m", "s=scripted:none", *args, "--out", str(tmp_path / "r"))
    assert done.returncode == 2
    assert flag in done.stderr
    assert not (tmp_path / "r").exists()


def test_no_model_is_named(tmp_path):
    done = run_kurabe("load", "--concurrency", "1")
    assert done.returncode == 2 and "--model" in done.stderr


def test_1024_streams_against_the_synthetic_server(tmp_path):
    from kurabe.load.synthetic import spawn

    proc, url = spawn(ttft_ms=20, itl_ms=50, tokens=8)
    try:
        done = run_kurabe("load", "-m", f"syn={url}", "--concurrency", "1024", "--requests",
                          "1024", "--max-tokens", "8", "--prompt-tokens", "8",
                          "--out", str(tmp_path / "run"), "--json", timeout=300)
        truth = httpx.get(url.removesuffix("/v1") + "/ground_truth", timeout=30).json()
    finally:
        proc.terminate()
        proc.wait()
    assert done.returncode == 0, done.stderr
    level = json.loads(done.stdout)["models"]["syn"]["levels"][0]
    assert level["concurrency"] == 1024
    assert level["errors"] == {} and level["completed"] == 1024 == level["sent"]
    assert level["failed"] == 0 and level["cancelled"] == 0
    served = truth["requests"]  # the server's own record of every chat request
    assert len(served) == 1024 and {r["status"] for r in served} == {"completed"}
    assert sum(r["output_tokens"] for r in served) == 1024 * 8
