"""The report's Load section (Markdown and HTML) from a stored load run: tables, knee,
charts, warnings, and every outside string escaped."""

from __future__ import annotations

import re
from pathlib import Path

from markdown_it import MarkdownIt

from kurabe.config import ShootoutConfig
from kurabe.inputs import build_snapshot
from kurabe.records import LoadLevelRow, LoadRequestRow, RunRow
from kurabe.report import render_run
from kurabe.store import Store

HOSTILE = "<script>alert(1)</script> # [x](https://evil.example/) |"
CLIENT = {"workers": 1, "wall_s": 12.0, "cpu_s": 0.6, "per_worker_cpu_s": [0.6],
          "usable_cores": 2, "loop_lag_s": {"p50": 0.0005, "p99": 0.002, "max": 0.004, "n": 9},
          "send_lag_s": None, "max_in_flight": 4, "in_flight": [], "engine_cpu_s": None,
          "engine_pids": []}


def write_load_run(run_dir: Path, name: str) -> Path:
    config = ShootoutConfig.model_validate({
        "run": {"name": "load", "repeats": 1, "warmup": 0},
        "models": [{"name": "plain", "source": "builtin:smollm2-135m"}],
        "prompts": [{"id": "p1", "text": "hello", "category": "knowledge"}],
    })
    with Store.create(run_dir) as store:
        store.write_run(RunRow(created_at="2026-12-02T00:00:00+00:00", kurabe_version="test",
                               command="kurabe load", config_json=config.to_json(),
                               machine={"cpu": "cpu", "os": "os", "python": "3.11",
                                        "gpus": [], "logical_cores": 2, "usable_cores": 2,
                                        "ram_bytes": 2**33}, status="running"))
        store.write_snapshot(build_snapshot(config))
        requests = []
        for level, (concurrency, tokens) in enumerate([(1, 500), (2, 950), (4, 1000)]):
            lag = 0.04 if concurrency == 4 else 0.002
            # level 0: a local engine beside the client, and its llama.cpp counters
            local = {"cpu_s": 1.8, "per_worker_cpu_s": [1.8], "engine_cpu_s": 21.7} \
                if level == 0 else {}
            counters = ({"samples": {"llamacpp:tokens_predicted_total": 0.0,
                                     "llamacpp:tokens_predicted_seconds_total": 0.0}},
                        {"samples": {"llamacpp:tokens_predicted_total": 500.0,
                                     "llamacpp:tokens_predicted_seconds_total": 4.99}}) \
                if level == 0 else (None, None)
            store.write_load_level(LoadLevelRow(
                model=name, level=level, profile="sweep", status="complete",
                started_at_unix_s=1000.0, concurrency=concurrency, warmup_s=2.0, wall_s=10.0,
                client={**CLIENT, **local,
                        "loop_lag_s": {**CLIENT["loop_lag_s"], "p99": lag}},
                server_before=counters[0], server_after=counters[1],
                spec={"profile": "sweep", "concurrency": concurrency,
                      "slo": {"ttft_s": 0.5, "itl_s": None, "e2e_s": None}}))
            for i in range(concurrency):
                t = 0.1 * concurrency
                requests.append(LoadRequestRow(
                    model=name, level=level, status="ok", endpoint="http://127.0.0.1:1/v1",
                    prompt_id="p1", sent_s=2.0 + i, sent_at_unix_s=1002.0 + i,
                    record={"chunks": [[t, "a", ""], [1.0, "b", ""]], "t_done_s": 1.0},
                    metrics={"output_tokens": tokens // concurrency, "prompt_tokens": 5,
                             "ttft_s": t, "e2e_s": 1.0, "itl_per_token_s": 0.01,
                             "decode_tokens_per_s": 100.0}))
        store.add_load_requests(requests)
        store.set_status("complete")
    return run_dir


def test_load_section_in_markdown_and_html(tmp_path):
    run = write_load_run(tmp_path / "run", "gemma")
    analysis, _ = render_run(run)
    assert analysis.load is not None
    md = (run / "report.md").read_text(encoding="utf-8")
    html = (run / "report.html").read_text(encoding="utf-8")
    assert "## Load" in md and "output t/s (end-to-end)" in md
    # level 1: 950 tokens over 10 s; the knee at concurrency 2 (1000/950 is +5%)
    assert "| 1 (sweep) | 2 | 95 |" in md
    assert "gemma: knee at concurrency 2: 95 output tokens/s end-to-end" in md
    assert "**client_bound**" in md and "event-loop lag p99 40.0 ms" in md
    # (500 − 1 first token) / 4.99 s = 100 t/s, as the client's clock says
    assert ("Level 0, the engine's llama.cpp metrics: output tokens 500 (client 500), decode "
            "100 t/s per stream (client 100): agree.") in md
    # 2 cores × 12 s = 24 CPU-s; engine 21.7 + client 1.8 leave 0.5 idle: 1.3 taken
    assert "the client used 0.15 cores, of which 1.3 CPU-s could not have come" in md
    assert "client_competes_with_server" in html
    assert '<section id="load">' in html and 'href="#load"' in html
    assert html.count('data-chart="xy-curves"') == 2
    assert 'data-chart="timeline"' in html
    # the curve's points sit at the levels' throughput, labelled with their concurrency
    assert re.search(r'data-x="95" data-y="0\.2"', html)
    assert ">c=4</text>" in html
    assert "gemma: knee at concurrency 2" in html
    assert analysis.summary_json()["load"]["models"]["gemma"]["knee"]["concurrency"] == 2


def test_load_labels_are_escaped(tmp_path):
    run = write_load_run(tmp_path / "run", HOSTILE)
    render_run(run)
    md = (run / "report.md").read_text(encoding="utf-8")
    html = (run / "report.html").read_text(encoding="utf-8")
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script>alert(1)" not in md
    tokens = MarkdownIt().enable("table").parse(md)
    assert not [t for t in tokens if t.type == "link_open"]
    assert not [t for t in tokens if t.type == "html_block" or t.type == "html_inline"]
    headings = [tokens[i + 1].content for i, t in enumerate(tokens) if t.type == "heading_open"]
    assert "Load" in headings and not any("evil" in h for h in headings)


def test_run_without_load_has_no_load_section(tmp_path):
    run = write_load_run(tmp_path / "run", "gemma")
    with Store.open(run) as store:
        store._db.execute("DELETE FROM load_levels")
        store._db.commit()
    analysis, _ = render_run(run)
    assert analysis.load is None
    assert "## Load" not in (run / "report.md").read_text(encoding="utf-8")
    assert 'id="load"' not in (run / "report.html").read_text(encoding="utf-8")
