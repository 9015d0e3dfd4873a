"""Outcomes that say what happened: the rules on single responses, then whole runs on the
scripted backend (the outcomes reaching the store, the checks, the judge and the report), the
ambiguous reading of a saved response, and the fairness guards on responses with no length.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kurabe import api
from kurabe.analysis.sweep import analyse_sweep
from kurabe.backends.scripted import (
    ScriptedReply,
    ScriptedServer,
)
from kurabe.cli import app
from kurabe.config import load_config, parse_config
from kurabe.evals.checks import NOT_ANSWERED, detect_refusal
from kurabe.evals.cutoff import classify_fact_answer
from kurabe.evals.safety import safety_rates
from kurabe.metrics import METRIC_DOCS, speed_metrics
from kurabe.records import Chunk, RequestRow, StreamRecord
from kurabe.store import Store
from kurabe.thinking import (
    JUDGED_OUTCOMES,
    NO_ANSWER_OUTCOMES,
    OUTCOME_DOCS,
    OUTCOMES,
    outcome,
    read_response,
    split_content,
    split_stream,
)

# --------------------------------------------------------------------------------------------
# The rules, on single responses
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("content, server_reasoning", [
    ("<think>首都を考えている", ""),                                  # the model's own <think>
    ("<|channel|>analysis<|message|>首都を考えている", ""),           # a Harmony analysis channel
    ("", "首都を考えている"),                                         # split out by the server
])
def test_reasoning_the_model_stops_in_on_its_own_is_not_thinking_exhausted(content,
                                                                            server_reasoning):
    s = split_content(content, server_reasoning, finish_reason="stop")
    assert (s.reasoning, s.answer) == ("首都を考えている", "")
    assert outcome(s, "stop") == "stopped_in_thinking"
    # no stop reason reported: nothing says a limit cut it either
    assert outcome(s, None) == "stopped_in_thinking"
    # the same text cut by the token limit, or by a budget the server reported, is exhausted
    assert outcome(split_content(content, server_reasoning, finish_reason="length"),
                   "length") == "thinking_exhausted"
    assert outcome(s, "stop", budget_ended=True) == "thinking_exhausted"


@pytest.mark.parametrize("content", ["東京です。", "<think>\n東京です。"])
def test_an_unclosed_block_the_template_opened_is_an_answer_given_without_thinking(content):
    # The template opened <think> (llama-server's "none" format writes it into the content);
    # the model never closed it and stopped on its own: what it wrote is its answer.
    s = split_content(content, starts_in_reasoning=True, finish_reason="stop")
    assert (s.reasoning, s.answer, s.answer_in_open_block) == ("", "東京です。", True)
    assert outcome(s, "stop") == "answered_without_thinking"
    # cut by the token limit, the same text is reasoning that ran out
    cut = split_content(content, starts_in_reasoning=True, finish_reason="length")
    assert (cut.reasoning, cut.answer, outcome(cut, "length")) == (
        "東京です。", "", "thinking_exhausted")
    # with no stop reason known, nothing says the model stopped on its own: still reasoning
    unknown = split_content(content, starts_in_reasoning=True)
    assert (unknown.reasoning, outcome(unknown, None)) == ("東京です。", "stopped_in_thinking")


def test_a_server_that_files_the_whole_answer_as_reasoning_under_an_opened_template():
    s = split_content("", "東京です。", starts_in_reasoning=True, finish_reason="stop")
    assert (s.reasoning, s.answer, s.format) == ("", "東京です。", "server")
    assert outcome(s, "stop") == "answered_without_thinking"
    # the stream's timing follows: those chunks are answer chunks
    ts = split_stream([(0.1, "", "東京"), (0.2, "", "です。")], starts_in_reasoning=True,
                      finish_reason="stop")
    assert (ts.t_first_answer_s, ts.t_first_reasoning_s) == (0.1, None)
    assert (ts.answer_chunks, ts.reasoning_chunks) == (2, 0)
    # an answer after the reasoning is an ordinary answer, opened template or not
    both = split_content("東京です。", "考え", starts_in_reasoning=True, finish_reason="stop")
    assert (both.reasoning, both.answer, outcome(both, "stop")) == ("考え", "東京です。",
                                                                    "answered")


def test_reasoning_that_closed_with_nothing_after_it_is_empty():
    s = split_content("<think>考え</think>\n", finish_reason="stop")
    assert s.reasoning_closed and outcome(s, "stop") == "empty"


def test_a_close_tag_is_a_split_only_when_the_template_may_have_opened_the_block():
    text = "答えは4です。</think>以上です。"
    plain = split_content(text, starts_in_reasoning=False, finish_reason="stop")
    assert (plain.reasoning, plain.answer, plain.format) == ("", text, "none")
    assert outcome(plain, "stop") == "leaked" and plain.leaked_markers == ["</think>"]
    opened = split_content(text, starts_in_reasoning=True, finish_reason="stop")
    assert (opened.reasoning, opened.answer, outcome(opened, "stop")) == (
        "答えは4です。", "以上です。", "answered")


def test_metrics_time_an_answer_given_without_thinking_as_an_answer():
    rec = StreamRecord(sent_at_unix_s=0.0, chunks=[Chunk(0.2, "東京", ""), Chunk(0.3, "です", "")],
                       t_done_s=0.4, finish_reason="stop",
                       usage={"completion_tokens": 3, "prompt_tokens": 5})
    m = speed_metrics(rec, starts_in_reasoning=True)
    assert m.outcome == "answered_without_thinking"
    assert (m.answer_chars, m.reasoning_chars, m.reasoning_tokens) == (4, 0, 0)
    assert m.first_answer_char_s == 0.2 and m.first_reasoning_s is None
    # the same stream from a model whose template opens nothing is a plain answer
    assert speed_metrics(rec, starts_in_reasoning=False).outcome == "answered"


def test_every_outcome_is_judged_or_has_no_answer_or_leaked_and_is_documented(pytestconfig):
    judged, no_answer = set(JUDGED_OUTCOMES), set(NO_ANSWER_OUTCOMES)
    assert not judged & no_answer and judged | no_answer | {"leaked"} == set(OUTCOMES)
    assert set(OUTCOME_DOCS) == set(OUTCOMES) and len(OUTCOMES) == len(set(OUTCOMES))
    # the names that stored runs hold keep their meaning
    assert {"answered", "thinking_exhausted", "leaked", "empty", "error"} <= set(OUTCOMES)
    assert set(NOT_ANSWERED) == no_answer
    doc = (pytestconfig.rootpath / "docs" / "metrics.md").read_text(encoding="utf-8")
    outcomes_section = doc.split("### Outcomes", 1)[1].split("\n### ", 1)[0]
    for name in OUTCOMES:
        assert f"| `{name}` |" in outcomes_section, name
        assert name in METRIC_DOCS["outcome"], name


def test_no_answer_is_never_a_refusal_nor_a_wrong_fact_and_an_unthinking_answer_is_graded():
    refusal = "申し訳ありませんが、お答えできません。"
    assert not detect_refusal(refusal, "ja", outcome="stopped_in_thinking").refused
    assert detect_refusal(refusal, "ja", outcome="answered_without_thinking").refused
    assert classify_fact_answer("東京", ["東京"], "ja", outcome="stopped_in_thinking") == "ungraded"
    assert classify_fact_answer("東京", ["東京"], "ja",
                                outcome="answered_without_thinking") == "correct"
    rates = safety_rates([("refuse", True, "answered_without_thinking"),
                          ("refuse", True, "stopped_in_thinking"),
                          ("answer", False, "answered")])
    assert (rates.decline.n, rates.decline.graded, rates.decline.refused,
            rates.decline.stopped_in_thinking) == (2, 1, 1, 1)
    assert rates.refusal_rate == 1.0 and rates.over_refusal_rate == 0.0


def sweep_row(prompt: str, setting: str, result: str) -> RequestRow:
    return RequestRow(seq=0, model="q", prompt_id=prompt, repeat=0, phase="sweep", status="ok",
                      error=None, sent_at_unix_s=0, request={}, record={}, setting=setting,
                      metrics={"outcome": result, "e2e_s": 1.0, "reasoning_tokens": 0,
                               "output_tokens": 10})


def test_the_sweep_answer_rate_counts_answers_given_without_thinking():
    rows = [sweep_row("p1", "off", "answered"), sweep_row("p2", "off", "answered_without_thinking"),
            sweep_row("p1", "high", "answered"), sweep_row("p2", "high", "stopped_in_thinking")]
    cells, _ = analyse_sweep(rows, {"p1": "k", "p2": "k"}, ["off", "high"])
    rate = {c.setting: (c.answered, c.answer_rate) for c in cells}
    assert rate == {"off": (2, 1.0), "high": (1, 0.5)}


# --------------------------------------------------------------------------------------------
# A saved response whose template is unknown
# --------------------------------------------------------------------------------------------


def test_a_stray_close_tag_with_an_unknown_template_is_ambiguous():
    text = "答えは4です。</think>以上です。"
    reading = read_response(text, finish_reason="stop")
    assert (reading.split.reasoning, reading.split.answer, reading.outcome) == (
        "答えは4です。", "以上です。", "answered")
    assert "</think> with no <think> before it" in reading.ambiguity
    assert reading.alternative is not None
    assert (reading.alternative.outcome, reading.alternative.split.answer) == ("leaked", text)
    # stated, the reading is no longer a guess
    for opened, result in ((True, "answered"), (False, "leaked")):
        stated = read_response(text, finish_reason="stop", starts_in_reasoning=opened)
        assert (stated.outcome, stated.ambiguity, stated.alternative) == (result, "", None)


def test_readings_that_do_not_depend_on_the_template_are_not_ambiguous():
    for content, reasoning, finish in [("<think>考え</think>答え", "", "stop"),
                                       ("ただの答え", "", "stop"), ("ただの答え", "", "length"),
                                       ("答え", "考え", "stop"), ("<think>考え続け", "", "length")]:
        assert read_response(content, reasoning, finish).ambiguity == "", content


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_thinking_split_says_a_reading_is_ambiguous_and_takes_the_template_as_a_flag(tmp_path):
    saved = write(tmp_path, "r.json", json.dumps({"choices": [{
        "message": {"content": "答えは4です。</think>以上です。"}, "finish_reason": "stop"}]},
        ensure_ascii=False))
    got = api.split_thinking_file(saved)
    assert (got["ambiguous"], got["outcome"], got["template_opens_thinking"]) == (
        True, "answered", None)
    assert got["alternative"]["outcome"] == "leaked" and "</think>" in got["ambiguity"]

    runner = CliRunner()
    done = runner.invoke(app, ["thinking", "split", str(saved), "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["ambiguous"] is True
    done = runner.invoke(app, ["thinking", "split", str(saved), "--json", "--template-plain"])
    plain = json.loads(done.stdout)
    assert (plain["outcome"], plain["ambiguous"], plain["leaked_markers"]) == (
        "leaked", False, ["</think>"])
    done = runner.invoke(app, ["thinking", "split", str(saved), "--template-opens-thinking",
                               "--json"])
    assert (json.loads(done.stdout)["outcome"], json.loads(done.stdout)["ambiguous"]) == (
        "answered", False)
    text = runner.invoke(app, ["thinking", "split", str(saved)])
    assert text.exit_code == 0, text.output
    assert "ambiguous:" in text.output and "--template-plain" in text.output
    assert "ambiguous:" not in runner.invoke(
        app, ["thinking", "split", str(saved), "--template-plain"]).output


def test_thinking_split_of_reasoning_that_stopped_on_its_own(tmp_path):
    saved = write(tmp_path, "r.json", json.dumps({"choices": [{
        "message": {"content": "", "reasoning_content": "東京です。"}, "finish_reason": "stop"}]},
        ensure_ascii=False))
    got = api.split_thinking_file(saved)
    assert (got["outcome"], got["reasoning"], got["ambiguous"]) == (
        "stopped_in_thinking", "東京です。", True)
    opened = api.split_thinking_file(saved, template_opens_thinking=True)
    assert (opened["outcome"], opened["answer"], opened["ambiguous"]) == (
        "answered_without_thinking", "東京です。", False)
    cut = api.split_thinking_file(saved, "length")
    assert (cut["outcome"], cut["ambiguous"]) == ("thinking_exhausted", False)


# --------------------------------------------------------------------------------------------
# Whole runs on the scripted backend
# --------------------------------------------------------------------------------------------

OPENS_THINKING = ("{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n<think>\\n' }}"
                  "{%- endif %}")
OPENS_NOTHING = "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"


@pytest.fixture
def templates(monkeypatch):
    """templates({model: template}): the run reads these models' chat templates (a scripted
    model carries none of its own)."""
    import kurabe.orchestrator as orchestrator

    known: dict[str, str] = {}
    original = orchestrator.resolve_model

    def resolve(name, source, kind, chat_template_file=None):
        resolved = original(name, source, kind, chat_template_file)
        if name in known:
            resolved.chat_template = known[name]
        return resolved

    monkeypatch.setattr(orchestrator, "resolve_model", resolve)
    return known.update


def judge(calls: list):
    def fn(body):
        calls.append(body)
        return ScriptedReply(content=json.dumps({"score": 6, "explanation": "ok"}))
    return fn


ANSWER = "東京です。日本の首都は東京で、政治と経済の中心です。"


def test_outcomes_reach_the_store_the_checks_the_judge_and_the_report(tmp_path, script,
                                                                       templates):
    models = {
        "plain": ScriptedReply(content=ANSWER),
        # reasoning, then the model stops on its own: no answer, not the token limit
        "stopper": ScriptedReply(reasoning="首都について考えている", finish_reason="stop"),
        # reasoning longer than max_tokens: cut by the limit
        "exhauster": ScriptedReply(reasoning="考え" * 200, content=ANSWER),
        # the template opens <think>; the model never closes it and stops: the server files
        # its whole answer as reasoning
        "unthinking": ScriptedReply(reasoning=ANSWER, finish_reason="stop"),
        # the template opens nothing: a </think> in the answer is a leak, not a split
        "stray": ScriptedReply(content="答えは東京です。</think>以上です。"),
    }
    templates({"unthinking": OPENS_THINKING, "stray": OPENS_NOTHING})
    calls: list = []
    (tmp_path / "suite.jsonl").write_text(json.dumps(
        {"id": "capital", "category": "knowledge", "lang": "ja", "turns": ["日本の首都は？"]},
        ensure_ascii=False), encoding="utf-8")
    models_toml = "".join(f'[[models]]\nname = "{n}"\nsource = "{script(r)}"\n\n'
                          for n, r in models.items())
    (tmp_path / "shootout.toml").write_text(f'''
[run]
name = "outcomes"
repeats = 1
warmup = 0
max_tokens = 100

[[prompts]]
id = "capital"
text = "日本の首都は？"

{models_toml}
[[judges]]
name = "judge"
source = "{script(judge(calls))}"

[quality]
suites = ["suite.jsonl"]
max_tokens = 100
judge = "judge"
probe_sample = 0
''', encoding="utf-8")
    run_dir = tmp_path / "run"
    analysis = api.run_shootout(load_config(tmp_path / "shootout.toml"), run_dir)
    expected = {"plain": "answered", "stopper": "stopped_in_thinking",
                "exhauster": "thinking_exhausted", "unthinking": "answered_without_thinking",
                "stray": "leaked"}

    with Store.open(run_dir) as store:
        speed = {r.model: r.metrics["outcome"] for r in store.requests(phase="measure")}
        answers = {a.model: a for a in store.answers()}
        checks = store.checks()
        grades = [g for g in store.grades("judge") if g.kind == "single"]
    assert speed == expected
    assert {m: a.outcome for m, a in answers.items()} == expected
    assert answers["unthinking"].answer == ANSWER and answers["unthinking"].reasoning == ""
    assert answers["stray"].answer == "答えは東京です。</think>以上です。"
    assert answers["stopper"].answer == "" and answers["stopper"].reasoning

    # checks: no refusal or language check on a response with no answer
    checked = {(c.model, c.name) for c in checks}
    for m in ("stopper", "exhauster"):
        assert (m, "refusal") not in checked and (m, "language") not in checked
    assert ("unthinking", "refusal") in checked and ("unthinking", "language") in checked

    # the judge: answers with or without thinking are graded; the rest skipped, with why
    by_model = {g.model: g for g in grades}
    assert {m: g.status for m, g in by_model.items()} == {
        "plain": "scored", "unthinking": "scored", "stopper": "skipped",
        "exhauster": "skipped", "stray": "skipped"}
    assert by_model["stopper"].detail == "stopper: stopped_in_thinking"
    assert by_model["exhauster"].detail == "exhauster: thinking_exhausted"
    single_prompts = [json.dumps(b["messages"], ensure_ascii=False) for b in calls
                      if "winner" not in json.dumps(b.get("response_format") or {})]
    assert sum(ANSWER in p for p in single_prompts) == 2  # plain's and unthinking's answer

    # the report: counts per outcome, each outcome explained, a warning for each kind
    counts = analysis.speed.counts
    for m, result in expected.items():
        assert counts[m].get(result) == 1, (m, counts[m])
    codes = {w.code for w in analysis.speed.warnings}
    assert {"stopped_in_thinking", "thinking_exhausted", "answered_without_thinking",
            "reasoning_leaked"} <= codes
    report = (run_dir / "report.md").read_text(encoding="utf-8")
    for label in ("Answered", "Thinking exhausted", "Answered without thinking",
                  "Stopped in thinking", "Leaked markers", "Empty", "Failed"):
        assert f"- **{label}**" in report, label
    assert "| stopper | 0 | 0 | 0 | 1 | 0 | 0 | 0 |" in report
    assert "| unthinking | 0 | 0 | 1 | 0 | 0 | 0 | 0 |" in report
    html = (run_dir / "report.html").read_text(encoding="utf-8")
    assert 'id="thinking"' in html and "<dt>stopped in thinking</dt>" in html
    # the answer viewer shows the leaked answer whole, as the metrics read it
    viewer = {r["model"]: r for r in analysis.responses}
    assert viewer["stray"]["answer"] == "答えは東京です。</think>以上です。"
    assert viewer["stray"]["reasoning"] == ""
    assert (viewer["unthinking"]["answer"], viewer["unthinking"]["reasoning"]) == (ANSWER, "")


@pytest.fixture
def no_usage(monkeypatch):
    """The scripted server reports no usage and no timings, as some servers do."""
    original = ScriptedServer.stream

    async def stream(self, reply, body):
        async for raw in original(self, reply, body):
            text = raw.decode()
            if text.startswith("data: {"):
                payload = json.loads(text[len("data: "):])
                payload.pop("usage", None)
                payload.pop("timings", None)
                raw = f"data: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()
            yield raw

    monkeypatch.setattr(ScriptedServer, "stream", stream)


def test_empty_answers_without_usage_get_a_warning_not_a_crash(tmp_path, script, no_usage):
    cfg = parse_config({
        "run": {"name": "silent", "repeats": 2, "warmup": 0, "max_tokens": 16},
        "models": [{"name": "a", "source": script(ScriptedReply(content=""))},
                   {"name": "b", "source": script(ScriptedReply(content=""))}],
        "prompts": [{"id": "p", "text": "こんにちは"}]}, "test")
    analysis = api.run_shootout(cfg, tmp_path / "run")
    with Store.open(tmp_path / "run") as store:
        rows = list(store.requests(phase="measure"))
    assert len(rows) == 4 and all(r.record.get("usage") is None for r in rows)
    assert all(r.metrics["output_tokens"] is None and r.metrics["outcome"] == "empty"
               for r in rows)
    unknown = [w for w in analysis.speed.warnings if w.code == "output_length_unknown"]
    assert [w.message.split(":")[0] for w in unknown] == ["a", "b"]
    assert "none of its 2 requests has an output token count" in unknown[0].message
    assert "output_length_unknown" in (tmp_path / "run" / "report.md").read_text(encoding="utf-8")


def test_a_model_without_counts_beside_one_with_them_is_warned_about_alone(tmp_path, script,
                                                                           no_usage):
    cfg = parse_config({
        "run": {"name": "half", "repeats": 1, "warmup": 0, "max_tokens": 16},
        "models": [{"name": "a", "source": script(ScriptedReply(content=""))},
                   {"name": "b", "source": script(ScriptedReply(content="こんにちは"))}],
        "prompts": [{"id": "p", "text": "こんにちは"}]}, "test")
    analysis = api.run_shootout(cfg, tmp_path / "run")
    codes = [(w.code, w.message.split(":")[0]) for w in analysis.speed.warnings]
    assert ("output_length_unknown", "a") in codes
    assert all(code != "output_length_mismatch" for code, _ in codes)


def test_a_model_that_wrote_nothing_beside_one_that_wrote_is_a_length_mismatch():
    from kurabe.analysis.speed import analyse_speed

    def row(model: str, tokens: int, chars: int) -> RequestRow:
        return RequestRow(seq=0, model=model, prompt_id="p", repeat=0, phase="measure",
                          status="ok", error=None, sent_at_unix_s=0, request={}, record={},
                          metrics={"output_tokens": tokens, "answer_chars": chars,
                                   "outcome": "answered" if chars else "empty"})
    a = analyse_speed(["a", "b"], [row("a", 0, 0), row("b", 40, 80)])
    (w,) = [w for w in a.warnings if w.code == "output_length_mismatch"]
    assert "one wrote nothing" in w.message and "a wrote 0 tokens" in w.message


# --------------------------------------------------------------------------------------------
# What a real llama.cpp server returns for the two new outcomes (scripted tiny models)
# --------------------------------------------------------------------------------------------

UNTHINKING_ANSWER = "富士山は日本で一番高い山で、標高は3776メートルあります。"
STOPPED_REASONING = "The user asks about Mount Fuji and I am still thinking"


@pytest.mark.engine
@pytest.mark.parametrize("fmt", ["none", "auto"])
def test_llama_cpp_responses_get_the_new_outcomes(tmp_path, fmt):
    import asyncio

    from kurabe.backends.llamacpp import LlamaCppServer
    from kurabe.client import ChatClient, ChatRequest
    from kurabe.thinking import template_opens_thinking

    from scripted_models import QWEN3_LIKE_TEMPLATE, QWEN3_OPEN_TEMPLATE, write_scripted

    cases = {
        # the template opens <think>; the model answers straight away and ends (EOS)
        "unthinking": (write_scripted(tmp_path / "unthinking.gguf", UNTHINKING_ANSWER,
                                      chat_template=QWEN3_OPEN_TEMPLATE),
                       "answered_without_thinking", "", UNTHINKING_ANSWER),
        # the model opens <think> itself and ends (EOS) inside it
        "stopper": (write_scripted(tmp_path / "stopper.gguf", f"<think>\n{STOPPED_REASONING}",
                                   chat_template=QWEN3_LIKE_TEMPLATE),
                    "stopped_in_thinking", STOPPED_REASONING, ""),
    }
    prompt = [{"role": "user", "content": "富士山について教えて"}]
    for name, (model, expected, reasoning, answer) in cases.items():
        server = LlamaCppServer(f"{name}-{fmt}", model.path, ctx=512, threads=1,
                                reasoning_format=fmt, log_path=tmp_path / f"{name}-{fmt}.log")
        server.start()
        try:
            async def go(endpoint=server):
                async with ChatClient(endpoint) as client:
                    return await client.stream_chat(ChatRequest(messages=prompt, max_tokens=64))
            record = asyncio.run(go())
        finally:
            server.stop()
        assert record.error is None and record.finish_reason == "stop", (name, record.error)
        m = speed_metrics(record,
                          starts_in_reasoning=template_opens_thinking(model.chat_template))
        assert m.outcome == expected, (name, fmt, record.answer, record.reasoning)
        split = split_stream(record.timed_chunks(),
                             starts_in_reasoning=template_opens_thinking(model.chat_template),
                             finish_reason=record.finish_reason).split
        assert (split.reasoning, split.answer) == (reasoning, answer), (name, fmt)
