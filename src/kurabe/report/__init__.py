"""Reports: presentation only. Every figure comes from ``kurabe.analysis`` over the store.

Every output file is written whole to a temporary file in the run folder and then renamed
over the old one, all of them only once every output has been produced: a failure part way
leaves the previous outputs as they were.
"""

from __future__ import annotations

import csv
import json
import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from kurabe import KurabeError
from kurabe.analysis.run import RunAnalysis, analyse_run
from kurabe.report.html import render_html
from kurabe.report.markdown import render_markdown
from kurabe.store import Store, damage_error

CSV_FIELDS = ("seq", "model", "prompt_id", "repeat", "ttft_s", "first_answer_char_s", "e2e_s",
              "prompt_tokens", "output_tokens", "output_tokens_source", "prompt_tokens_per_s",
              "decode_tokens_per_s", "itl_per_token_s", "itl_per_chunk_median_s", "n_chunks",
              "answer_chars", "answer_graphemes", "answer_bytes", "reasoning_chars",
              "reasoning_share", "chars_per_s", "bytes_per_s", "chars_per_token",
              "finish_reason", "cached_prompt_tokens", "server_decode_tokens_per_s",
              "server_prompt_tokens_per_s")

# A text cell starting with one of these is a formula to a spreadsheet (OWASP, CSV injection).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

_SURROGATES = re.compile("[\ud800-\udfff]")


def csv_cell(value: Any) -> Any:
    """A text value a spreadsheet reads as text, never as a formula: a leading ``'`` before
    = + - @ tab or carriage return. Numbers are left as they are."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


class _Outputs:
    """Output files staged in the run folder, renamed into place together by ``commit``."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.staged: list[tuple[Path, Path]] = []  # (temporary file, final path)

    @contextmanager
    def open(self, name: str, *, newline: str | None = None) -> Iterator[IO[str]]:
        final = self.run_dir / name
        tmp = self.run_dir / f".{name}.{secrets.token_hex(4)}.tmp"
        # O_EXCL: never follow or reuse a file that is there; 0o666: the umask decides, as
        # for any file the user writes
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        self.staged.append((tmp, final))
        # errors="replace": a lone surrogate that got this far is written as "?", never
        # stops the file half-way
        with open(fd, "w", encoding="utf-8", errors="replace", newline=newline) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())

    def text(self, name: str, text: str) -> None:
        with self.open(name) as fh:
            fh.write(_SURROGATES.sub("\ufffd", text))

    def commit(self) -> list[Path]:
        for tmp, final in self.staged:
            os.replace(tmp, final)
        done = [final for _, final in self.staged]
        self.staged = []
        return done

    def discard(self) -> None:
        for tmp, _ in self.staged:
            tmp.unlink(missing_ok=True)
        self.staged = []


def _stage_exports(store: Store, outputs: _Outputs) -> None:
    """results.jsonl (every stored request, raw stream included) and results.csv (metrics)."""
    with outputs.open("results.jsonl") as fh:
        for row in store.requests():
            line = json.dumps({
                "seq": row.seq, "model": row.model, "prompt_id": row.prompt_id,
                "repeat": row.repeat, "phase": row.phase, "status": row.status,
                "error": row.error, "error_kind": row.error_kind,
                "sent_at_unix_s": row.sent_at_unix_s,
                "request": row.request, "metrics": row.metrics, "record": row.record,
            }, ensure_ascii=False)
            fh.write(_SURROGATES.sub("\ufffd", line) + "\n")
    with outputs.open("results.csv", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for row in store.requests(phase="measure", status="ok"):
            cells = {"seq": row.seq, "model": row.model, "prompt_id": row.prompt_id,
                     "repeat": row.repeat, **row.metrics}
            writer.writerow({k: csv_cell(v) for k, v in cells.items()})


def write_exports(store: Store, run_dir: Path) -> list[Path]:
    """results.jsonl and results.csv of the run in ``run_dir``, each replaced whole."""
    outputs = _Outputs(Path(run_dir))
    try:
        _stage_exports(store, outputs)
        return outputs.commit()
    finally:
        outputs.discard()


def render_run(run_dir: str | Path) -> tuple[RunAnalysis, list[Path]]:
    """Re-render every output of a run folder from its store alone. The store is only read;
    a damaged store is a KurabeError naming the folder, and no output is touched."""
    run_dir = Path(run_dir)
    outputs = _Outputs(run_dir)
    try:
        return _render(run_dir, outputs)
    except OSError as exc:
        raise KurabeError(f"{run_dir}: cannot write the report: "
                          f"{exc.strerror or exc} ({exc.filename})") from None
    finally:
        outputs.discard()


def _render(run_dir: Path, outputs: _Outputs) -> tuple[RunAnalysis, list[Path]]:
    from kurabe.inputs import run_snapshot

    store = Store.open(run_dir, read_only=True)
    try:
        if store.snapshot() is None:
            # a run made before snapshots existed: its snapshot is resolved and kept now
            store.close()
            store = Store.open(run_dir)
        analysis = analyse_run(store, run_snapshot(store))
        _stage_exports(store, outputs)
    except KurabeError:
        raise
    except Exception as exc:
        error = damage_error(run_dir, exc, "report")
        if error is exc:
            raise
        raise error from None
    finally:
        store.close()
    if analysis.calibration_only:  # a judge's calibration alone: its own small report
        from kurabe.report.calibration import (
            render_calibration_html,
            render_calibration_markdown,
        )

        outputs.text("report.md", render_calibration_markdown(analysis, run_dir))
        outputs.text("report.html", render_calibration_html(analysis, run_dir))
    else:
        outputs.text("report.md", render_markdown(analysis, run_dir))
        outputs.text("report.html", render_html(analysis, run_dir))
    written = outputs.commit()
    order = ["report.md", "report.html", "results.jsonl", "results.csv"]
    return analysis, sorted(written, key=lambda p: order.index(p.name))
