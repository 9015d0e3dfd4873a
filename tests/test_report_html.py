"""The HTML report in a real headless Chromium: sections, charts, viewer, safety."""

from __future__ import annotations

import json

import pytest

from kurabe.config import ShootoutConfig
from kurabe.records import RequestRow, RunRow
from kurabe.report import render_run
from kurabe.store import Store

from conftest import ARTIFACTS, run_kurabe

pytestmark = pytest.mark.engine

SHOOTOUT = """
[run]
name = "html-test"
repeats = 2
warmup = 0
max_tokens = 24

[[models]]
name = "smol"
source = "builtin:smollm2-135m"
engine = { ctx = 1024 }

[[models]]
name = "gemma"
source = "builtin:gemma3-270m"
engine = { ctx = 1024 }

[[prompts]]
id = "ja"
category = "knowledge"
text = "富士山について説明してください。"

[[prompts]]
id = "en"
category = "creative"
lang = "en"
text = "Write two lines about rain."

[reasoning_sweep]
settings = ["off", "high"]
models = ["smol"]
"""


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("html-run")
    cfg = root / "shootout.toml"
    cfg.write_text(SHOOTOUT, encoding="utf-8")
    run_kurabe("run", str(cfg), "--out", str(root / "run"), check=True)
    return root / "run"


def test_full_report_sections_charts_and_viewer(full_run, page_watch):
    page = page_watch.page
    page.goto((full_run / "report.html").as_uri())
    for section in ("headline", "setup", "speed", "sweep", "answers", "fairness", "methods"):
        assert page.locator(f"section#{section}").count() == 1, section
    # charts: SVG bars that carry their figures
    assert page.locator("svg.chart").count() >= 4
    values = page.locator("svg.chart rect[data-value]").evaluate_all(
        "els => els.map(e => parseFloat(e.getAttribute('data-value')))")
    assert len(values) >= 6 and all(v > 0 for v in values)
    summary = json.loads(run_kurabe("report", str(full_run), "--json", check=True).stdout)
    decode = summary["models"]["smol"]["decode_tokens_per_s"]["median"]
    assert any(abs(v - decode) / decode < 1e-4 for v in values)  # the bar is the stored median

    # viewer: both models side by side, then filter
    cards = page.locator("#viewer-cards .card")
    assert cards.count() == 2
    page.locator("#viewer-models input[value=gemma]").uncheck()
    assert cards.count() == 1 and cards.first.get_attribute("data-model") == "smol"
    page.locator("#viewer-models input[value=gemma]").check()
    first_prompt = page.locator(".viewer-prompt-text").inner_text()
    page.select_option("#viewer-prompt", "en")
    assert page.locator(".viewer-prompt-text").inner_text() == "Write two lines about rain."
    assert page.locator(".viewer-prompt-text").inner_text() != first_prompt
    page.select_option("#viewer-category", "knowledge")
    assert page.locator("#viewer-prompt option").count() == 1
    page.select_option("#viewer-category", "")
    page.locator("body").click()
    page.keyboard.press("k")  # previous prompt, from the keyboard
    assert page.locator(".viewer-prompt-text").inner_text() == first_prompt

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "report-html.png"), full_page=True)
    assert page_watch.errors == [] and page_watch.requests == [] and page_watch.dialogs == []


def test_sections_without_data_are_left_out(full_run, tmp_path, page_watch):
    # A run without a sweep and without reasoning has no sweep or thinking section.
    out = tmp_path / "plain"
    run_kurabe("bench", "--model", "s=builtin:smollm2-135m", "--repeats", "1", "--warmup", "0",
               "--max-tokens", "8", "--out", str(out), check=True)
    page_watch.page.goto((out / "report.html").as_uri())
    assert page_watch.page.locator("section#sweep").count() == 0
    assert page_watch.page.locator("section#thinking").count() == 0
    assert page_watch.page.locator("section#speed").count() == 1


PAYLOADS = [
    "<script>alert('xss-script')</script>",
    "<img src=x onerror=alert('xss-img')>",
    '<a href="javascript:alert(\'xss-link\')">click</a>',
    '"><svg onload=alert(\'xss-attr\')>',
    "</script><script>alert('xss-break')</script>",
    "<!-- <script>alert('xss-comment')</script>",
]


def test_model_written_html_is_shown_as_text_and_never_runs(tmp_path, page_watch):
    config = ShootoutConfig.model_validate({
        "run": {"name": "xss <b>run</b>", "repeats": 1, "warmup": 0},
        "models": [{"name": "evil", "source": "builtin:smollm2-135m"}],
        "prompts": [{"id": "p1", "text": PAYLOADS[1], "category": "<i>cat</i>"}],
    })
    with Store.create(tmp_path) as store:
        store.write_run(RunRow(
            created_at="2026-12-02T00:00:00+00:00", kurabe_version="test",
            command="kurabe run '<script>alert(1)</script>'", config_json=config.to_json(),
            machine={"cpu": "<b>cpu</b>", "gpus": []}, status="running"))
        answer = "\n".join(PAYLOADS)
        store.add_request(RequestRow(
            seq=0, model="evil", prompt_id="p1", repeat=0, phase="measure", status="ok",
            error=None, sent_at_unix_s=0.0, request={},
            record={"chunks": [[0.1, answer, ""], [0.2, "", ""]]},
            metrics={"decode_tokens_per_s": 10.0, "outcome": "answered", "ttft_s": 0.1,
                     "finish_reason": "<script>alert('xss-finish')</script>"}))
        store.set_status("complete")
    render_run(tmp_path)
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "<script>alert" not in html and "<img src=x" not in html
    page = page_watch.page
    page.goto((tmp_path / "report.html").as_uri())
    page.wait_for_timeout(300)
    shown = page.locator("#viewer-cards pre.answer").inner_text()
    for payload in PAYLOADS:
        assert payload in shown  # literally, as text
    assert page.locator("#viewer-cards img, #viewer-cards svg, #viewer-cards a").count() == 0
    assert page_watch.dialogs == []
    assert page_watch.requests == []
    assert page_watch.errors == []
