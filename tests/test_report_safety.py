"""Reports of untrusted runs: nothing handed to kurabe is trusted in its outputs.

A store that is not kurabe's is refused untouched; broken text and damaged rows in a real
store give complete outputs or one clear error; every output is replaced whole or not at all;
report.md escapes every outside string (checked against a Markdown parser); results.csv never
hands a spreadsheet a formula; report.html stays safe and usable with megabytes of answer.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import sqlite3
import stat
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt
from typer.testing import CliRunner

from kurabe import KurabeError
from kurabe.analysis.run import analyse_run
from kurabe.cli import app
from kurabe.config import ShootoutConfig
from kurabe.inputs import build_snapshot, run_snapshot
from kurabe.records import ModelRow, RequestRow, RunRow
from kurabe.report import csv_cell, render_run
from kurabe.report.markdown import md_code, md_text, render_markdown
from kurabe.store import STORE_NAME, Store

OUTPUTS = ("report.md", "report.html", "results.jsonl", "results.csv")

# Markdown that would forge structure if it were pasted into report.md as it is.
MD_PAYLOADS = [
    "# Forged heading",
    "| forged | row |\n|---|---|\n| x | y |",
    "[click](https://evil.example/)",
    "![img](https://evil.example/x.png)",
    "<script>alert('md')</script>",
    "<img src=x onerror=alert('md-img')>",
    "**bold** __strong__ _em_ *em* `code` ~~strike~~",
    "```\nfenced\n```",
    "> quoted",
    "- item\n+ item\n* item\n1. item\n2) item",
    "line\n\n## Second heading\n\n    indented code",
    "&lt;entity&gt; &#60;script&#62; &amp;",
    "<https://evil.example/autolink> <evil@example.com>",
    "[ref]\n\n[ref]: https://evil.example/",
    "\x1b[31mred\x1b[0m \u202eevil\u202c",
    "setext\n===\n---\n***",
    "trailing backslash \\",
]
HOSTILE = " ".join(MD_PAYLOADS)


def md_parser() -> MarkdownIt:
    return MarkdownIt("commonmark").enable(["table", "strikethrough"])


def structure(markdown: str) -> Counter:
    """How many of each structural token a Markdown text holds (block and inline)."""
    counts: Counter = Counter()
    for token in md_parser().parse(markdown):
        counts[token.type] += 1
        for child in token.children or []:
            counts[child.type] += 1
    counts.pop("text", None)
    counts.pop("inline", None)
    return counts


# --------------------------------------------------------------------------------------------
# A run written straight into a store, its outside strings chosen by the test
# --------------------------------------------------------------------------------------------


def card(text: str) -> dict:
    return {"architecture": text, "params_total": 135_000_000, "params_active": 135_000_000,
            "n_experts_used": 0, "n_experts": 0, "n_layers": 2, "attention_layers": [0, 1],
            "swa_layers": [], "swa_window": None, "recurrent_layers": [], "n_head": 4,
            "n_head_kv": 2, "head_dim_k": 64, "context_length": 2048, "vocab_size": 100,
            "tokenizer": text, "chat_template": text, "thinking_markers": None,
            "quant": text, "license": text}


def metrics(finish: str = "stop", **more) -> dict:
    return {"decode_tokens_per_s": 20.0, "chars_per_s": 40.0, "ttft_s": 0.1, "e2e_s": 1.0,
            "output_tokens": 20, "output_tokens_source": "server", "answer_chars": 40,
            "outcome": "answered", "finish_reason": finish, **more}


def write_run(run_dir: Path, *, text: str = "plain text", names=("alpha", "beta"),
              prompts=("p1", "p2"), answer: str = "an answer", status: str = "complete",
              failed: bool = True) -> Path:
    """A finished two-model run in ``run_dir`` whose every outside string is ``text`` (or
    built from it); the first request answered ``answer``."""
    config = ShootoutConfig.model_validate({
        "run": {"name": text, "repeats": 1, "warmup": 0},
        "models": [{"name": n, "source": "builtin:smollm2-135m"} for n in names],
        "prompts": [{"id": p, "text": f"{text} {i}", "category": "knowledge"}
                    for i, p in enumerate(prompts)],
    })
    with Store.create(run_dir) as store:
        store.write_run(RunRow(
            created_at="2026-12-02T00:00:00+00:00", kurabe_version="test",
            command=f"kurabe run {text}", config_json=config.to_json(),
            machine={"cpu": text, "os": text, "python": "3.11", "gpus": [text, text],
                     "logical_cores": 4, "usable_cores": 4, "ram_bytes": 2**33},
            status="running"))
        store.write_snapshot(build_snapshot(config))
        for model in config.models:
            store.upsert_model(ModelRow(
                name=model.name, source=f"models/{text}.gguf", kind="file",
                settings=model.engine.model_dump(mode="json"),
                file_path=f"/models/{text}.gguf", file_bytes=1000, file_sha256="ab" * 32,
                quant=text, architecture=text, engine_kind=text, engine_version=text,
                card=card(text), plan={"error": text}))
        seq = 0
        for p in prompts:
            for name in names:
                said = answer if seq == 0 else f"{text} {seq}"
                store.add_request(RequestRow(
                    seq=seq, model=name, prompt_id=p, repeat=0, phase="measure",
                    status="ok", error=None, sent_at_unix_s=1000.0 + seq, request={},
                    record={"chunks": [[0.1, said, ""], [0.2, "", ""]]},
                    metrics=metrics(finish=text)))
                seq += 1
        if failed:
            store.add_request(RequestRow(
                seq=seq, model=names[0], prompt_id=prompts[0], repeat=1, phase="measure",
                status="error", error=f"HTTP 500: {text}", sent_at_unix_s=2000.0,
                request={}, record={}, metrics={}, error_kind="http_5xx"))
        store.set_status(status)
    return run_dir


def snapshot_files(run_dir: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(run_dir.iterdir())}


# --------------------------------------------------------------------------------------------
# A file that is not a kurabe store
# --------------------------------------------------------------------------------------------


def foreign_sqlite(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (body TEXT)")
    conn.execute("INSERT INTO notes VALUES ('not kurabe')")
    conn.commit()
    conn.close()


NOT_A_STORE = {
    "empty": lambda p: p.write_bytes(b""),
    "random bytes": lambda p: p.write_bytes(os.urandom(3000)),
    "text": lambda p: p.write_text("model,tokens/s\na,12\n", encoding="utf-8"),
    "another sqlite database": foreign_sqlite,
    "sqlite header, then garbage": lambda p: p.write_bytes(b"SQLite format 3\x00" + os.urandom(4080)),
}


@pytest.mark.parametrize("kind", list(NOT_A_STORE))
def test_report_refuses_a_file_that_is_not_a_kurabe_store_and_leaves_it_untouched(tmp_path, kind):
    NOT_A_STORE[kind](tmp_path / STORE_NAME)
    os.utime(tmp_path / STORE_NAME, ns=(1_600_000_000_000_000_000,) * 2)
    before = snapshot_files(tmp_path)

    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2, result.output
    message = result.output.strip()
    assert len(message.splitlines()) == 1 and "Traceback" not in message
    assert str(tmp_path / STORE_NAME) in message.replace("\n", "")
    assert "not a kurabe results store" in message
    # not a byte written, not a file added (no -wal, -shm or -journal, no report)
    assert snapshot_files(tmp_path) == before
    with pytest.raises(KurabeError, match="not a kurabe results store"):
        Store.open(tmp_path)
    assert snapshot_files(tmp_path) == before


def test_a_store_of_a_newer_kurabe_is_refused_untouched(tmp_path):
    write_run(tmp_path)
    conn = sqlite3.connect(tmp_path / STORE_NAME)
    conn.execute("PRAGMA user_version = 999")
    conn.close()
    before = snapshot_files(tmp_path)
    with pytest.raises(KurabeError, match="newer kurabe"):
        render_run(tmp_path)
    assert snapshot_files(tmp_path) == before


def test_report_reads_the_store_without_writing_to_it(tmp_path):
    run = write_run(tmp_path / "run")
    store_before = (run / STORE_NAME).read_bytes(), (run / STORE_NAME).stat().st_mtime_ns
    os.chmod(run / STORE_NAME, 0o444)
    try:
        _, written = render_run(run)
    finally:
        os.chmod(run / STORE_NAME, 0o644)
    assert [p.name for p in written] == list(OUTPUTS)
    assert ((run / STORE_NAME).read_bytes(), (run / STORE_NAME).stat().st_mtime_ns) == store_before


# --------------------------------------------------------------------------------------------
# Broken text and damaged rows in a real store
# --------------------------------------------------------------------------------------------


def test_lone_surrogates_and_invalid_utf8_in_the_store_still_give_complete_outputs(tmp_path):
    run = write_run(tmp_path / "run")
    conn = sqlite3.connect(run / STORE_NAME)
    # JSON text with lone surrogate escapes (as json.dumps writes them), a pair kept whole,
    # and an escaped backslash before "ud800" that is text, not an escape
    record = ('{"chunks": [[0.1, "lone \\ud800 high, lone \\udcff low, pair \\ud83d\\ude00, '
              'text \\\\ud800", ""], [0.2, "", ""]]}')
    conn.execute("UPDATE requests SET record_json = ? WHERE seq = 0", (record,))
    conn.execute("UPDATE run SET machine_json = ?",
                 ('{"cpu": "cpu \\udcff", "gpus": ["gpu \\ud800"], "usable_cores": 4}',))
    # invalid UTF-8: as a BLOB where text belongs, and as TEXT that does not decode
    conn.execute("UPDATE requests SET error = ? WHERE status = 'error'", (b"HTTP 500: \xff\xfe",))
    conn.execute("UPDATE requests SET metrics_json = CAST(? AS TEXT) WHERE seq = 1",
                 (json.dumps(metrics(finish="FINISH")).encode().replace(b"FINISH", b"st\xc3op"),))
    conn.commit()
    conn.close()

    analysis, written = render_run(run)
    assert [p.name for p in written] == list(OUTPUTS)
    lines = (run / "results.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines]
    assert len(rows) == 5  # every stored request, the failed one included
    first = "".join(c[1] for c in rows[0]["record"]["chunks"])
    assert first == "lone \ufffd high, lone \ufffd low, pair \U0001f600, text \\ud800"
    assert rows[1]["metrics"]["finish_reason"] == "st\ufffdop"
    assert rows[4]["error"] == "HTTP 500: \ufffd\ufffd"
    assert analysis.run.machine["gpus"] == ["gpu \ufffd"]
    html = (run / "report.html").read_text(encoding="utf-8")
    md = (run / "report.md").read_text(encoding="utf-8")
    assert html.rstrip().endswith("</html>") and "gpu \ufffd" in html
    assert "## Methods" in md and "gpu \ufffd" in md
    assert list(csv.DictReader(open(run / "results.csv", encoding="utf-8")))[1][
        "finish_reason"] == "st\ufffdop"


DAMAGE = {
    "request record is not JSON": (
        "UPDATE requests SET record_json = '{\"chunks\": [[0.1, \"cut' WHERE seq = 0",
        "table requests, row 1: record_json is not valid JSON"),
    "metrics are not an object": (
        "UPDATE requests SET metrics_json = '[1, 2]' WHERE seq = 2",
        "table requests, row 3: metrics_json is not a JSON object"),
    "run config is not JSON": (
        "UPDATE run SET config_json = 'not json'",
        "table run, row 1: config_json is not valid JSON"),
    "run config is not a config": (
        "UPDATE run SET config_json = '{\"run\": {\"repeats\": \"many\"}, \"models\": []}'",
        "run config"),
    "a time that is not a number": (
        "UPDATE requests SET sent_at_unix_s = 'yesterday' WHERE seq = 1",
        "table requests, row 2: sent_at_unix_s is not a number"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_damaged_row_is_one_clear_error_naming_the_run_folder(tmp_path, case):
    run = write_run(tmp_path / "run")
    render_run(run)
    sql, expected = DAMAGE[case]
    conn = sqlite3.connect(run / STORE_NAME)
    conn.execute(sql)
    conn.commit()
    conn.close()
    before = {n: (run / n).read_bytes() for n in OUTPUTS}

    with pytest.raises(KurabeError) as caught:
        render_run(run)
    message = str(caught.value)
    assert message.startswith(f"{run}: ") and "\n" not in message
    assert "is damaged" in message and expected in message
    assert {n: (run / n).read_bytes() for n in OUTPUTS} == before  # the old outputs stay

    result = CliRunner().invoke(app, ["report", str(run)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "is damaged" in result.output


def test_a_corrupt_database_file_is_one_clear_error(tmp_path):
    run = write_run(tmp_path / "run", answer="x" * 20_000)
    with Store.open(run):
        pass  # checkpoint: everything in the main file
    data = bytearray((run / STORE_NAME).read_bytes())
    page = 4096
    assert len(data) > 4 * page
    data[2 * page:len(data) - page] = os.urandom(len(data) - 3 * page)  # the header survives
    (run / STORE_NAME).write_bytes(bytes(data))

    with pytest.raises(KurabeError) as caught:
        render_run(run)
    message = str(caught.value)
    assert str(run) in message and "\n" not in message
    assert not any((run / n).exists() for n in OUTPUTS)


# --------------------------------------------------------------------------------------------
# Atomic outputs
# --------------------------------------------------------------------------------------------


def test_a_failure_half_way_leaves_every_previous_output_as_it_was(tmp_path, monkeypatch):
    import kurabe.report as report

    run = write_run(tmp_path / "run")
    render_run(run)
    before = snapshot_files(run)

    def broken_html(*args, **kwargs):
        raise RuntimeError("rendering failed")

    monkeypatch.setattr(report, "render_html", broken_html)
    with pytest.raises(RuntimeError, match="rendering failed"):
        render_run(run)
    assert snapshot_files(run) == before  # no output replaced, no temporary file left
    monkeypatch.undo()

    # a failure in the middle of writing results.jsonl: the third request cannot be written
    calls = {"n": 0}
    real_dumps = json.dumps

    def dumps_failing_on_the_third_row(obj, **kw):
        if isinstance(obj, dict) and "record" in obj:
            calls["n"] += 1
            if calls["n"] == 3:
                raise OSError(28, "No space left on device")
        return real_dumps(obj, **kw)

    monkeypatch.setattr(report.json, "dumps", dumps_failing_on_the_third_row)
    with pytest.raises(KurabeError, match="cannot write the report: No space left on device"):
        render_run(run)
    assert calls["n"] == 3
    assert snapshot_files(run) == before


def test_outputs_are_written_with_the_users_permissions(tmp_path):
    run = write_run(tmp_path / "run")
    old = os.umask(0o022)
    try:
        render_run(run)
    finally:
        os.umask(old)
    for name in OUTPUTS:
        assert stat.S_IMODE((run / name).stat().st_mode) == 0o644, name
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == []


# --------------------------------------------------------------------------------------------
# report.md: outside strings cannot forge anything
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clean_and_hostile(tmp_path_factory):
    root = tmp_path_factory.mktemp("md")
    clean = write_run(root / "clean", text="plain text", status="interrupted")
    hostile = write_run(root / "hostile <script>alert('dir')</script> $(x) `y` [z](w)",
                        text=HOSTILE, names=("x._y_", "z-1.__init__"),
                        prompts=("p._1_", "q-_2_"), answer=HOSTILE, status="interrupted")
    return clean, hostile


def with_failures(run_dir: Path, example: str):
    """The run's analysis, with one more failed group of work, its message ``example``."""
    with Store.open(run_dir, read_only=True) as store:
        analysis = analyse_run(store, run_snapshot(store))
    analysis.failures = [*analysis.failures,
                         {"model": analysis.speed.models[0], "phase": "measure",
                          "error_kind": "http_5xx", "count": 2, "example": example}]
    return analysis


def test_report_md_escapes_every_outside_string(clean_and_hostile):
    clean, hostile = clean_and_hostile
    render_run(clean)
    render_run(hostile)
    clean_md = (clean / "report.md").read_text(encoding="utf-8")
    hostile_md = (hostile / "report.md").read_text(encoding="utf-8")
    # the same headings, table rows, links, code, emphasis, lists and no HTML at all
    assert structure(hostile_md) == structure(clean_md)
    counts = structure(hostile_md)
    for forged in ("html_block", "html_inline", "link_open", "image", "fence", "code_block", "s_open"):
        assert counts[forged] == 0, forged
    # ... while every hostile string is there, as text
    shown = md_parser().render(hostile_md)
    assert shown.count("&lt;script&gt;alert('md')&lt;/script&gt;") >= 8
    assert "# Forged heading" in shown and "[click](https://evil.example/)" in shown
    assert "\x1b" not in hostile_md and "\u202e" not in hostile_md
    # the failures table: a hostile error message in a cell of its own row
    clean_with = render_markdown(with_failures(clean, "HTTP 500: plain"), clean)
    hostile_with = render_markdown(with_failures(hostile, HOSTILE), hostile)
    assert structure(hostile_with) == structure(clean_with)
    assert structure(clean_with)["tr_open"] > structure(clean_md)["tr_open"]


def test_the_incomplete_notice_shows_the_real_resume_command(clean_and_hostile):
    for run in clean_and_hostile:
        md = (run / "report.md").read_text(encoding="utf-8")
        notice = next(line for line in md.splitlines() if "Incomplete run" in line)
        code = [t for t in md_parser().parseInline(notice)[0].children
                if t.type == "code_inline"]
        assert len(code) == 1
        assert shlex.split(code[0].content) == ["kurabe", "run", "--resume",
                                                str(run.resolve())]
        assert "RUN_DIR" not in md and "<run folder>" not in md
        html = (run / "report.html").read_text(encoding="utf-8")
        assert "RUN_DIR" not in html


def test_failures_are_listed_in_both_reports(tmp_path):
    from kurabe.report.html import render_html

    run = write_run(tmp_path / "run", status="incomplete")
    analysis = with_failures(run, "HTTP 503: <b>busy</b> | try later")
    md = render_markdown(analysis, run)
    rows = [line for line in md.splitlines() if line.startswith("| alpha | measure |")]
    assert rows == [  # the failed request stored in the run, then the one added here
        "| alpha | measure | http_5xx | 1 | HTTP 500: plain text |",
        "| alpha | measure | http_5xx | 2 | HTTP 503: &lt;b&gt;busy&lt;/b&gt; \\| try later |"]
    assert "3 request(s) failed or were never sent" in md
    html = render_html(analysis, run)
    assert ("<td>http_5xx</td><td class=\"num\">2</td><td class=\"clip\">HTTP 503: "
            "&lt;b&gt;busy&lt;/b&gt; | try later</td>") in html


# md_text and md_code, for any text at all


def expected_text(value: str) -> str:
    """What a reader sees of an escaped value: control characters as U+FFFD, line breaks as
    spaces, no surrounding whitespace."""
    value = re.sub("[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f\u202a-\u202e\u2066-\u2069"
                   "\ud800-\udfff]", "\ufffd", value)
    return re.sub("[\t\n\v\f\r\x85\u2028\u2029]+", " ", value).strip()


# Pieces of Markdown syntax, joined at random
MARKDOWNISH = st.lists(st.sampled_from(list("#>-+=*_`~[]()!<>&|\\$:;.1234567890 \n\taé日")
                                       + ["\x1b", "\u202e", "\r\n", "&lt;", "http://", "<a>",
                                          "```", "1.", "---", "    ", "&#60;", "![", "]("]),
                       max_size=40).map("".join)
ANY_TEXT = st.one_of(MARKDOWNISH, st.text(max_size=40))


def inline_children(markdown: str) -> list:
    tokens = md_parser().parse(markdown)
    return [c for t in tokens if t.type == "inline" for c in t.children or []]


@settings(max_examples=400, deadline=None)
@given(ANY_TEXT)
def test_md_text_is_always_plain_text_in_a_paragraph_a_list_item_and_a_table_cell(value):
    escaped = md_text(value)
    assert "\n" not in escaped and "\r" not in escaped
    shown = expected_text(value)
    # a paragraph and a list item: one block, text only, the same characters
    paragraph = ["paragraph_open", "inline", "paragraph_close"]
    if shown:  # alone, at the start of a line; on the line after a paragraph's first line
        assert [t.type for t in md_parser().parse(escaped)] == paragraph
        assert "".join(c.content for c in inline_children(escaped)) == shown
        assert [t.type for t in md_parser().parse(f"first\n{escaped}")] == paragraph
        assert "".join(c.content for c in inline_children(f"first\n{escaped}")
                       if c.type == "text") == f"first{shown}"
    for markdown, blocks in ((f"x {escaped}", paragraph), (f"- {escaped}", None)):
        tokens = md_parser().parse(markdown)
        if blocks:
            assert [t.type for t in tokens] == blocks
        else:
            assert [t.type for t in tokens if t.type.endswith("_open")] == [
                "bullet_list_open", "list_item_open"] + (["paragraph_open"] if shown else [])
        children = inline_children(markdown)
        assert {c.type for c in children} <= {"text"}
        text = "".join(c.content for c in children)
        assert text == (f"x {shown}".rstrip() if blocks else shown)
    # a table cell: the row keeps its three cells
    table = f"| a | b | c |\n|---|---|---|\n| 1 | {escaped} | 3 |\n"
    tokens = md_parser().parse(table)
    assert [t.type for t in tokens].count("td_open") == 3
    cells = [t for t in tokens if t.type == "inline"][3:]
    assert [c.content for c in cells][0] == "1" and cells[2].content == "3"
    assert {c.type for c in cells[1].children} <= {"text"}
    assert "".join(c.content for c in cells[1].children) == shown


@settings(max_examples=300, deadline=None)
@given(ANY_TEXT)
def test_md_code_is_always_one_code_span_of_the_same_text(value):
    shown = expected_text(value)
    children = inline_children(f"run {md_code(value)} now")
    if not shown:
        assert [c.type for c in children] == ["text"]
        return
    assert [c.type for c in children] == ["text", "code_inline", "text"]
    assert children[1].content == shown


# --------------------------------------------------------------------------------------------
# results.csv
# --------------------------------------------------------------------------------------------


def test_results_csv_never_hands_a_spreadsheet_a_formula(tmp_path):
    formulas = ["=HYPERLINK(\"https://evil.example\",\"x\")", "+1+2", "-2+3", "@SUM(A1)",
                "\tTAB", "\rCR"]
    config = ShootoutConfig.model_validate({
        "run": {"name": "csv", "repeats": 1, "warmup": 0},
        "models": [{"name": "a", "source": "builtin:smollm2-135m"}],
        "prompts": [{"id": "p1", "text": "x"}]})
    with Store.create(tmp_path) as store:
        store.write_run(RunRow(created_at="2026-12-02T00:00:00+00:00", kurabe_version="test",
                               command="kurabe", config_json=config.to_json(), machine={},
                               status="running"))
        for seq, formula in enumerate(formulas):
            store.add_request(RequestRow(
                seq=seq, model="a", prompt_id="p1", repeat=seq, phase="measure", status="ok",
                error=None, sent_at_unix_s=float(seq), request={}, record={"chunks": []},
                metrics=metrics(finish=formula, output_tokens_source=formula,
                                cached_prompt_tokens=-1, reasoning_share=-0.5)))
        store.set_status("complete")
    render_run(tmp_path)
    rows = list(csv.DictReader(open(tmp_path / "results.csv", encoding="utf-8", newline="")))
    assert [r["finish_reason"] for r in rows] == ["'" + f for f in formulas]
    assert [r["output_tokens_source"] for r in rows] == ["'" + f for f in formulas]
    # numbers stay numbers, the negative ones too
    assert {r["cached_prompt_tokens"] for r in rows} == {"-1"}
    assert {r["reasoning_share"] for r in rows} == {"-0.5"}
    assert csv_cell("plain") == "plain" and csv_cell(-3) == -3 and csv_cell("") == ""


# --------------------------------------------------------------------------------------------
# report.html in a real browser
# --------------------------------------------------------------------------------------------

HTML_PAYLOADS = [
    "<script>alert('xss-script')</script>",
    "<img src=x onerror=alert('xss-img')>",
    '"><svg onload=alert(\'xss-attr\')>',
    "</script><script>alert('xss-break')</script>",
    "<!-- <style>body{display:none}</style>",
    "<link rel=stylesheet href=https://evil.example/x.css>",
]


def test_report_html_with_hostile_text_in_every_new_place_runs_nothing(tmp_path, page_watch):
    from kurabe.report.html import render_html

    payload = " ".join(HTML_PAYLOADS)
    run = write_run(tmp_path / "run \"'><img src=x onerror=alert('dir')>", text=payload,
                    answer=payload, status="interrupted")
    render_run(run)
    analysis = with_failures(run, payload)
    (run / "report.html").write_text(render_html(analysis, run), encoding="utf-8")
    page = page_watch.page
    page.goto((run / "report.html").as_uri())
    page.wait_for_timeout(300)
    assert page.locator("code.resume").inner_text() == f"kurabe run --resume {shlex.quote(str(run.resolve()))}"
    assert payload in page.locator("#failures").inner_text()
    assert payload in page.locator("#setup").inner_text()
    assert payload in page.locator("#viewer-cards pre.answer").first.inner_text()
    assert page.locator("img, link[rel=stylesheet], main svg:not(.chart)").count() == 0
    assert page_watch.dialogs == [] and page_watch.requests == [] and page_watch.errors == []


def test_a_two_megabyte_answer_keeps_the_viewer_card_small(tmp_path, page_watch):
    answer = ("答え" + "x" * 98 + "\n") * 20_000  # 2,020,000 characters, 2.1 MB of UTF-8
    assert len(answer.encode()) > 2_000_000
    run = write_run(tmp_path / "run", answer=answer, failed=False)
    render_run(run)
    page = page_watch.page
    page.goto((run / "report.html").as_uri())
    card = page.locator("#viewer-cards .card").first
    assert card.bounding_box()["height"] < 1200
    more = card.locator("button.more")
    shown_all = re.fullmatch(r"show all (\d+) characters \((\d+) more\)", more.inner_text())
    assert shown_all and int(shown_all[1]) > 2_000_000 and int(shown_all[2]) > 1_900_000
    # the sections after the viewer are where they would be with a short answer
    methods = page.locator("section#methods")
    methods.scroll_into_view_if_needed()
    assert methods.is_visible()
    assert page.evaluate("document.documentElement.scrollHeight") < 12_000
    more.click()
    assert len(card.locator("pre.answer").inner_text()) >= 2_000_000
    assert card.locator("button.more").count() == 0
    assert card.bounding_box()["height"] < 1200
    assert page.evaluate("document.documentElement.scrollHeight") < 12_000
    assert page_watch.errors == [] and page_watch.requests == []


@pytest.mark.parametrize("command", ["resume", "judge", "compare"])
def test_other_commands_name_a_damaged_row_too(tmp_path, command):
    run = write_run(tmp_path / "run")
    render_run(run)
    conn = sqlite3.connect(run / STORE_NAME)
    conn.execute(DAMAGE["run config is not JSON"][0])
    conn.commit()
    conn.close()
    args = {"resume": ["run", "--resume", str(run)], "judge": ["judge", str(run)],
            "compare": ["compare", str(run), str(run)]}[command]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)  # a clean exit, not a crash
    assert f"cannot {command} this run, its {STORE_NAME} is damaged: table run, row 1: " \
           "config_json is not valid JSON" in " ".join(result.output.split())
