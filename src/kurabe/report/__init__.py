"""Reports: presentation only. Every figure comes from ``kurabe.analysis`` over the store."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from kurabe.analysis.run import RunAnalysis, analyse_run
from kurabe.report.html import render_html
from kurabe.report.markdown import render_markdown
from kurabe.store import Store

CSV_FIELDS = ("seq", "model", "prompt_id", "repeat", "ttft_s", "first_answer_char_s", "e2e_s",
              "prompt_tokens", "output_tokens", "output_tokens_source", "prompt_tokens_per_s",
              "decode_tokens_per_s", "itl_per_token_s", "itl_per_chunk_median_s", "n_chunks",
              "answer_chars", "answer_graphemes", "answer_bytes", "reasoning_chars",
              "reasoning_share", "chars_per_s", "bytes_per_s", "chars_per_token",
              "finish_reason", "cached_prompt_tokens", "server_decode_tokens_per_s",
              "server_prompt_tokens_per_s")


def write_exports(store: Store, run_dir: Path) -> list[Path]:
    """results.jsonl (every stored request, raw stream included) and results.csv (metrics)."""
    jsonl = run_dir / "results.jsonl"
    with open(jsonl, "w", encoding="utf-8") as fh:
        for row in store.requests():
            fh.write(json.dumps({
                "seq": row.seq, "model": row.model, "prompt_id": row.prompt_id,
                "repeat": row.repeat, "phase": row.phase, "status": row.status,
                "error": row.error, "sent_at_unix_s": row.sent_at_unix_s,
                "request": row.request, "metrics": row.metrics, "record": row.record,
            }, ensure_ascii=False) + "\n")
    out_csv = run_dir / "results.csv"
    with open(out_csv, "w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for row in store.requests(phase="measure", status="ok"):
            writer.writerow({"seq": row.seq, "model": row.model, "prompt_id": row.prompt_id,
                             "repeat": row.repeat, **row.metrics})
    return [jsonl, out_csv]


def render_run(run_dir: str | Path) -> tuple[RunAnalysis, list[Path]]:
    """Re-render every output of a run folder from its store alone."""
    run_dir = Path(run_dir)
    from kurabe.inputs import run_snapshot

    with Store.open(run_dir) as store:
        analysis = analyse_run(store, run_snapshot(store))
        written = write_exports(store, run_dir)
    md = run_dir / "report.md"
    md.write_text(render_markdown(analysis), encoding="utf-8")
    html = run_dir / "report.html"
    html.write_text(render_html(analysis), encoding="utf-8")
    return analysis, [md, html, *written]
