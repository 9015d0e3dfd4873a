"""Thinking formats end to end: scripted tiny models served by a real llama.cpp server.

Each fixture of :mod:`scripted_models` writes a known text. It is served with
``--reasoning-format none`` and ``auto``; every case sends the same chat request streamed
(``ChatClient.stream_chat``) and not streamed (a plain POST), checks what llama.cpp returned
(``content`` / ``reasoning_content``), then what kurabe makes of it: the split, the outcome,
the leaked markers and the timestamps. The last tests run the real CLI on the fixtures.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from kurabe.backends.llamacpp import LlamaCppServer
from kurabe.client import ChatClient, ChatRequest
from kurabe.metrics import speed_metrics
from kurabe.thinking import outcome, split_content, template_opens_thinking

from conftest import run_kurabe
from scripted_models import (
    FIXTURES,
    HARMONY_ANSWER,
    HARMONY_REASONING,
    LOOP_REASONING,
    PLAIN_ANSWER,
    THINK_ANSWER,
    THINK_REASONING,
    write_fixtures,
    write_scripted,
)

engine = pytest.mark.engine
PROMPT = [{"role": "user", "content": "日本の首都はどこですか？"}]


# --------------------------------------------------------------------------------------------
# Models and servers, shared by the whole module
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scripted(tmp_path_factory):
    return write_fixtures(tmp_path_factory.mktemp("scripted"))


@pytest.fixture(scope="module")
def serve(scripted, tmp_path_factory):
    """serve(fixture, reasoning_format) -> the running server. Every pair the cases use is started at
    once (in parallel: starting is mostly the server process loading llama.cpp)."""
    logs = tmp_path_factory.mktemp("scripted-engines")
    pairs = sorted({(c.fixture, c.reasoning_format) for c in CASES.values()})
    # One thread each: a tiny model gains nothing from more, and spinning threads would
    # slow every server down on a busy machine.
    servers = {(name, fmt): LlamaCppServer(f"{name}-{fmt}", scripted[name].path, ctx=512,
                                           threads=1, reasoning_format=fmt,
                                           log_path=logs / f"{name}-{fmt}.log")
               for name, fmt in pairs}
    try:
        with ThreadPoolExecutor(len(servers)) as pool:
            list(pool.map(LlamaCppServer.start, servers.values()))
        yield lambda name, fmt: servers[(name, fmt)]
    finally:
        for server in servers.values():
            server.stop()


def post_chat(endpoint, max_tokens: int, extra: dict | None = None) -> dict:
    """The same request as ChatClient's, not streamed."""
    body = {"messages": PROMPT, "max_tokens": max_tokens, "temperature": 0.0, "seed": 0,
            "stream": False, "cache_prompt": False, **(extra or {})}
    resp = httpx.post(f"{endpoint.endpoint.base_url}/chat/completions", json=body, timeout=60)
    assert resp.status_code == 200, resp.text
    return resp.json()


def stream_chat(endpoint, max_tokens: int, extra: dict | None = None, **kw):
    async def go():
        async with ChatClient(endpoint) as client:
            return await client.stream_chat(ChatRequest(
                messages=PROMPT, max_tokens=max_tokens, extra_body=dict(extra or {}), **kw))
    record = asyncio.run(go())
    assert record.error is None, record.error
    return record


# --------------------------------------------------------------------------------------------
# What llama.cpp returns, and what kurabe makes of it
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    fixture: str
    reasoning_format: str
    max_tokens: int
    # llama.cpp's message
    content: str
    reasoning_content: str
    finish_reason: str
    # kurabe's split and outcome
    reasoning: str
    answer: str
    split_format: str
    outcome: str
    leaked: tuple[str, ...] = ()
    extra: dict = field(default_factory=dict)


T_FULL = FIXTURES["think"].script
T_CUT = "The user asks which city is Japan's capital"  # the first 10 tokens, less <think>\n
T_BUDGET4 = "The user asks which"  # 4 reasoning tokens, then </think> is forced
LOOP_40 = " ".join([LOOP_REASONING] * 3) + " Hmm"  # 40 tokens of the 13-token loop
H_MARKED = f"<|channel|>analysis<|message|>{HARMONY_REASONING}<|end|>"
H_CUT = "User wants a greeting in"  # 8 tokens: 3 of markers, 5 of reasoning
OFF = LlamaCppServer.reasoning_fields("off")  # what kurabe sends for reasoning "off"
BUDGET4 = LlamaCppServer.reasoning_fields(4)  # ... and for a 4-token budget
STRAY = FIXTURES["stray_close"].script

CASES = {
    # (a) think, then answer
    "think-none": Case("think", "none", 64, T_FULL, "", "stop",
                       THINK_REASONING, THINK_ANSWER, "think", "answered"),
    "think-auto": Case("think", "auto", 64, THINK_ANSWER, THINK_REASONING + "\n", "stop",
                       THINK_REASONING + "\n", THINK_ANSWER, "server", "answered"),
    "think-cut-none": Case("think", "none", 10, "<think>\n" + T_CUT, "", "length",
                           T_CUT, "", "think", "thinking_exhausted"),
    "think-cut-auto": Case("think", "auto", 10, "", T_CUT, "length",
                           T_CUT, "", "server", "thinking_exhausted"),
    # enable_thinking=false: the template writes an empty think block and the model answers
    "think-off-none": Case("think", "none", 64, "<think>\n\n</think>\n\n" + THINK_ANSWER, "",
                           "stop", "", THINK_ANSWER, "think", "answered", extra=OFF),
    "think-off-auto": Case("think", "auto", 64, THINK_ANSWER, "", "stop",
                           "", THINK_ANSWER, "none", "answered", extra=OFF),
    # a per-request reasoning budget: llama.cpp forces </think> after 4 reasoning tokens
    "think-budget4-none": Case("think", "none", 64,
                               f"<think>\n{T_BUDGET4}</think>\n\n{THINK_ANSWER}", "", "stop",
                               T_BUDGET4, THINK_ANSWER, "think", "answered", extra=BUDGET4),
    "think-budget4-auto": Case("think", "auto", 64, THINK_ANSWER, T_BUDGET4, "stop",
                               T_BUDGET4, THINK_ANSWER, "server", "answered", extra=BUDGET4),
    # a budget of 0 alone: the model opens <think> and llama.cpp closes it at once
    "think-budget0-none": Case("think", "none", 64, f"<think></think>\n\n{THINK_ANSWER}", "",
                               "stop", "", THINK_ANSWER, "think", "answered",
                               extra={"reasoning_budget_tokens": 0}),
    "think-budget0-auto": Case("think", "auto", 64, THINK_ANSWER, "", "stop",
                               "", THINK_ANSWER, "none", "answered",
                               extra={"reasoning_budget_tokens": 0}),
    # (b) a template-opened think block that never closes; with "none" llama.cpp puts the
    #     template's <think>\n in front of the content
    "forever-none": Case("think_forever", "none", 40, "<think>\n" + LOOP_40, "", "length",
                         LOOP_40, "", "think", "thinking_exhausted"),
    "forever-auto": Case("think_forever", "auto", 40, "", LOOP_40, "length",
                         LOOP_40, "", "server", "thinking_exhausted"),
    # (c) Harmony: with "none" the gpt-oss parser keeps the analysis markers but drops the
    #     final channel's header (<|start|>assistant<|channel|>final<|message|>)
    "harmony-none": Case("harmony", "none", 64, H_MARKED + HARMONY_ANSWER, "", "stop",
                         HARMONY_REASONING, HARMONY_ANSWER, "harmony", "answered"),
    "harmony-auto": Case("harmony", "auto", 64, HARMONY_ANSWER, HARMONY_REASONING, "stop",
                         HARMONY_REASONING, HARMONY_ANSWER, "server", "answered"),
    "harmony-cut-none": Case("harmony", "none", 8, f"<|channel|>analysis<|message|>{H_CUT}", "",
                             "length", H_CUT, "", "harmony", "thinking_exhausted"),
    "harmony-cut-auto": Case("harmony", "auto", 8, "", H_CUT, "length",
                             H_CUT, "", "server", "thinking_exhausted"),
    # (d) plain-text Harmony markers: the parser matches them, but the text <|return|> stays
    "harmony_leak-none": Case("harmony_leak", "none", 64,
                              H_MARKED + HARMONY_ANSWER + "<|return|>", "", "stop",
                              HARMONY_REASONING, HARMONY_ANSWER, "harmony", "answered"),
    "harmony_leak-auto": Case("harmony_leak", "auto", 64, HARMONY_ANSWER + "<|return|>",
                              HARMONY_REASONING, "stop", HARMONY_REASONING,
                              HARMONY_ANSWER + "<|return|>", "server", "leaked",
                              leaked=("<|return|>",)),
    # (d') no Harmony parser at all: every marker reaches the content; kurabe splits it itself
    "harmony_unparsed-none": Case("harmony_unparsed", "none", 64,
                                  FIXTURES["harmony_unparsed"].script, "", "stop",
                                  HARMONY_REASONING, HARMONY_ANSWER, "harmony", "answered"),
    "harmony_unparsed-auto": Case("harmony_unparsed", "auto", 64,
                                  FIXTURES["harmony_unparsed"].script, "", "stop",
                                  HARMONY_REASONING, HARMONY_ANSWER, "harmony", "answered"),
    # (e) a stray </think> from a model whose template does not think
    "stray-none": Case("stray_close", "none", 64, STRAY, "", "stop", "", STRAY, "none",
                       "leaked", leaked=("</think>",)),
    "stray-auto": Case("stray_close", "auto", 64, STRAY, "", "stop", "", STRAY, "none",
                       "leaked", leaked=("</think>",)),
    # (f) a plain answer
    "plain-none": Case("plain", "none", 64, PLAIN_ANSWER, "", "stop", "", PLAIN_ANSWER, "none",
                       "answered"),
    "plain-auto": Case("plain", "auto", 64, PLAIN_ANSWER, "", "stop", "", PLAIN_ANSWER, "none",
                       "answered"),
}



@pytest.fixture(scope="module")
def exchange(serve):
    """exchange(case_id) -> (non-streamed JSON, StreamRecord), each sent once per module."""
    done: dict[str, tuple[dict, object]] = {}

    def get(case_id: str):
        if case_id not in done:
            case = CASES[case_id]
            endpoint = serve(case.fixture, case.reasoning_format)
            done[case_id] = (post_chat(endpoint, case.max_tokens, case.extra),
                             stream_chat(endpoint, case.max_tokens, case.extra))
        return done[case_id]
    return get


@engine
@pytest.mark.parametrize("case_id", CASES)
def test_what_llama_cpp_returns(exchange, case_id):
    case = CASES[case_id]
    data, record = exchange(case_id)
    choice = data["choices"][0]
    message = choice["message"]
    assert message["content"] == case.content
    assert (message.get("reasoning_content") or "") == case.reasoning_content
    assert choice["finish_reason"] == case.finish_reason
    # The stream carries the same text, split the same way.
    assert record.answer == case.content
    assert record.reasoning == case.reasoning_content
    assert record.finish_reason == case.finish_reason
    assert record.usage["completion_tokens"] == data["usage"]["completion_tokens"]


@engine
@pytest.mark.parametrize("case_id", [pytest.param(c)
                                     for c in CASES])
def test_what_kurabe_makes_of_it(exchange, scripted, case_id):
    case = CASES[case_id]
    data, record = exchange(case_id)
    opens = template_opens_thinking(scripted[case.fixture].chat_template)

    message = data["choices"][0]["message"]
    split = split_content(message["content"], message.get("reasoning_content") or "",
                          starts_in_reasoning=opens)
    # kurabe trims both sides, whether the server split them or kurabe did
    assert (split.reasoning, split.answer) == (case.reasoning.strip(), case.answer)
    assert split.format == case.split_format
    assert tuple(split.leaked_markers) == case.leaked
    assert outcome(split, case.finish_reason) == case.outcome

    m = speed_metrics(record, starts_in_reasoning=opens)
    assert (m.outcome, m.reasoning_format, tuple(m.leaked_markers)) == (
        case.outcome, case.split_format, case.leaked)
    if case.reasoning.strip():
        assert m.first_reasoning_s is not None and m.thinking_s > 0
        assert m.reasoning_chars == len(unicodedata.normalize("NFKC", case.reasoning.strip()))
    else:
        assert m.first_reasoning_s is None and m.reasoning_tokens == 0
    if case.answer:
        assert m.first_answer_char_s is not None
        if case.reasoning.strip():
            assert m.first_reasoning_s < m.first_answer_char_s
        elif case.split_format == "none":  # no markers either: the first chunk is answer
            assert m.first_answer_char_s == m.ttft_s
    else:  # thinking_exhausted: the limit came inside the reasoning, no answer time
        assert m.first_answer_char_s is None and m.length_capped


@engine
def test_a_stray_close_tag_is_a_leak_only_when_the_template_is_known_not_to_think(serve):
    endpoint = serve("stray_close", "auto")
    content = post_chat(endpoint, 64)["choices"][0]["message"]["content"]
    # Template unknown: a </think> with no <think> before it reads as a template-opened block.
    guessed = split_content(content)
    assert (guessed.format, guessed.reasoning, outcome(guessed, "stop")) == (
        "think-opened", "答えは4です。", "answered")
    assert outcome(split_content(content, starts_in_reasoning=False), "stop") == "leaked"


@engine
def test_a_harmony_template_turns_plain_output_into_a_server_error(tmp_path):
    """llama.cpp's gpt-oss parser accepts nothing but Harmony: a model whose template has
    <|channel|> but which answers in plain text gets HTTP 500 (streamed: an error event)."""
    model = write_scripted(tmp_path / "plain-harmony.gguf", PLAIN_ANSWER,
                           chat_template=FIXTURES["harmony"].chat_template)
    server = LlamaCppServer("plain-harmony", model.path, ctx=512, threads=1,
                            reasoning_format="none", log_path=tmp_path / "plain-harmony.log")
    server.start()
    endpoint = server
    try:
        resp = httpx.post(f"{server.endpoint.base_url}/chat/completions", timeout=60, json={
            "messages": PROMPT, "max_tokens": 64, "temperature": 0.0, "stream": False})
        message = "The model produced output that does not match the expected peg-native format"
        assert (resp.status_code, resp.json()["error"]["message"]) == (500, message)

        async def go():
            async with ChatClient(endpoint) as client:
                return await client.stream_chat(ChatRequest(messages=PROMPT, max_tokens=64))
        record = asyncio.run(go())
    finally:
        server.stop()
    assert record.http_status == 200 and message in record.error and record.answer == ""
    assert speed_metrics(record).outcome == "error"


@engine
def test_fixed_length_requests_get_max_tokens_from_the_plain_model(serve, scripted):
    record = stream_chat(serve("plain", "none"), 20, fixed_length=True)
    m = speed_metrics(record)
    assert (m.output_tokens, record.finish_reason) == (20, "length")
    assert record.answer == scripted["plain"].generated(20, ignore_eos=True)
    assert record.answer.startswith(PLAIN_ANSWER + PLAIN_ANSWER[:4])


@engine
def test_the_models_tokenizer_gives_back_the_generated_tokens(serve, scripted):
    """/tokenize of the reasoning counts exactly the reasoning tokens that were generated, and
    the generation prompt ends on the token the chain starts from."""
    endpoint = serve("think", "auto")
    model = scripted["think"]
    with httpx.Client(base_url=endpoint.endpoint.server_root, timeout=30) as http:
        tokens = http.post("/tokenize", json={"content": THINK_REASONING, "add_special": False,
                                             "with_pieces": True}).json()["tokens"]
        reasoning_pieces = model.pieces[1:model.piece_index("</think>")]
        assert len(tokens) == len(reasoning_pieces) == 24
        assert [t["piece"] for t in tokens] == model.tokenize(THINK_REASONING)
        prompt = http.post("/apply-template", json={"messages": PROMPT}).json()["prompt"]
        last = http.post("/tokenize", json={"content": prompt, "with_pieces": True}
                         ).json()["tokens"][-1]
    assert last["piece"] == model.start == "\n"


# --------------------------------------------------------------------------------------------
# The fixtures themselves (no server)
# --------------------------------------------------------------------------------------------


def test_fixtures_are_small_and_quick_to_write(tmp_path):
    t0 = time.perf_counter()
    models = write_fixtures(tmp_path)
    assert time.perf_counter() - t0 < 2.0
    assert set(models) == set(FIXTURES)
    for name, model in models.items():
        assert model.path.stat().st_size < 3 * 2**20, name
        assert len(set(model.pieces)) == len(model.pieces)
        assert model.start not in model.pieces
    assert models["think"].text == FIXTURES["think"].script
    assert models["harmony"].start == "assistant"
    assert models["think_forever"].generated(40) == LOOP_40 and not models["think_forever"].ends


def test_a_repeated_word_is_joined_to_its_neighbour(tmp_path):
    model = write_scripted(tmp_path / "r.gguf", "one two one two three")
    assert model.pieces == ("one", " two", " one", " two three")  # " two" joined to " three"
    with pytest.raises(ValueError, match="distinct"):
        write_scripted(tmp_path / "bad.gguf", ["x", "x"])


# --------------------------------------------------------------------------------------------
# The real CLI on scripted models
# --------------------------------------------------------------------------------------------


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "shootout.toml"
    path.write_text(text, encoding="utf-8")
    return path


def table_rows(report: str, first_cell: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in report.splitlines() if line.startswith(f"| {first_cell} |")]


def results(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in
            (run_dir / "results.jsonl").read_text(encoding="utf-8").splitlines()]


@engine
def test_run_with_too_few_tokens_reports_thinking_exhausted(scripted, tmp_path):
    config = write_config(tmp_path, f"""
[run]
name = "exhausted"
repeats = 2
warmup = 0
max_tokens = 12

[[models]]
name = "thinker"
source = "{scripted['think'].path}"
engine = {{ ctx = 512, threads = 1 }}

[[prompts]]
id = "capital"
text = "日本の首都は？"
""")
    run_dir = tmp_path / "run"
    done = run_kurabe("run", str(config), "--out", str(run_dir), timeout=120, check=True)
    report = (run_dir / "report.md").read_text(encoding="utf-8")
    # Outcomes: model | answered | thinking exhausted | answered without thinking |
    # stopped in thinking | leaked | empty | failed
    outcomes = [r for r in table_rows(report, "thinker") if len(r) == 8]
    assert outcomes == [["thinker", "0", "2", "0", "0", "0", "0", "0"]]
    assert ("**Thinking exhausted** means the model was still reasoning when it reached "
            "max_tokens and returned no answer.") in report
    assert "raise `max_tokens` well above the reasoning length" in report
    # 12 tokens: <think> and 11 reasoning tokens (counted again by the model's tokenizer)
    warning = ("thinker: 2 of 2 requests spent the whole token limit thinking (11 reasoning "
               "tokens) and returned no answer; these are not refusals. Raise max_tokens well "
               "above the reasoning length, or cap thinking (llama-server --reasoning-budget N")
    assert f"⚠ **thinking_exhausted**: {warning}" in report
    assert "thinking_exhausted" in done.stdout
    for row in results(run_dir):
        assert row["metrics"]["outcome"] == "thinking_exhausted"
        assert row["metrics"]["first_answer_char_s"] is None


@engine
def test_reasoning_sweep_over_off_a_budget_and_unlimited(scripted, tmp_path):
    config = write_config(tmp_path, f"""
[run]
name = "sweep"
repeats = 1
warmup = 0
max_tokens = 64

[[models]]
name = "thinker"
source = "{scripted['think'].path}"
engine = {{ ctx = 512, threads = 1 }}

[[prompts]]
id = "capital"
text = "日本の首都は？"
category = "knowledge"

[reasoning_sweep]
settings = ["off", 4, "unlimited"]
""")
    run_dir = tmp_path / "run"
    run_kurabe("run", str(config), "--out", str(run_dir), timeout=120, check=True)
    report = (run_dir / "report.md").read_text(encoding="utf-8")
    assert "## Reasoning budget sweep" in report
    # model | category | setting | n | answer rate | exhausted | output tokens | reasoning tokens
    rows = {r[2]: r[3:8] for r in table_rows(report, "thinker") if r[1] == "knowledge"}
    # off: the template's empty think block, then 4 answer tokens + EOS
    assert rows["off"] == ["1", "100%", "0", "5", "0"]
    # budget 4: <think>, 4 reasoning tokens, the forced </think>, "\n\n", the answer, EOS
    assert rows["4"] == ["1", "100%", "0", "12", "4"]
    assert rows["unlimited"] == ["1", "100%", "0", "32", "24"]
    swept = {row["request"]["extra_body"].get("reasoning_budget_tokens"): row
             for row in results(run_dir) if row["phase"] == "sweep"}
    assert swept[0]["request"]["extra_body"]["chat_template_kwargs"] == {"enable_thinking": False}
    reasoning = {k: "".join(c[2] for c in row["record"]["chunks"]) for k, row in swept.items()}
    assert reasoning == {0: "", 4: T_BUDGET4, -1: THINK_REASONING + "\n"}

    # The recommendation is the fastest setting (every one answered), as the table's timings say.
    from kurabe.analysis.run import analyse_run
    from kurabe.inputs import run_snapshot
    from kurabe.store import Store

    with Store.open(run_dir) as store:
        analysis = analyse_run(store, run_snapshot(store))
    (rec,) = analysis.sweep_recommendations
    fastest = min(analysis.sweep_cells, key=lambda c: c.seconds)
    assert rec.setting == fastest.setting
    assert f"- {rec.sentence}" in report
    assert re.match(r"thinker — knowledge: (turn thinking off|reasoning budget 4|reasoning "
                    r"unlimited) \(", rec.sentence)


@pytest.fixture(scope="module")
def shootout(scripted, tmp_path_factory):
    """One `kurabe run` of the thinking fixture against the plain one: the run folder."""
    tmp_path = tmp_path_factory.mktemp("shootout")
    config = write_config(tmp_path, f"""
[run]
name = "shootout"
repeats = 3
warmup = 1
max_tokens = 64

[[models]]
name = "thinker"
source = "{scripted['think'].path}"
engine = {{ ctx = 512, threads = 1 }}

[[models]]
name = "plain"
source = "{scripted['plain'].path}"
engine = {{ ctx = 512, threads = 1 }}

[[prompts]]
id = "capital"
text = "日本の首都は？"
""")
    run_dir = tmp_path / "run"
    run_kurabe("run", str(config), "--out", str(run_dir), timeout=120, check=True)
    return run_dir


def phase_times(row: dict, side: int) -> list[float]:
    """Times of the stored chunks that carry answer (side 1) or reasoning (side 2) text."""
    return [chunk[0] for chunk in row["record"]["chunks"] if chunk[side]]


def phase_rate(times: list[float]) -> float:
    """One token per chunk: (tokens - 1) over the span from the first to the last."""
    return (len(times) - 1) / (times[-1] - times[0])


@engine
def test_shootout_times_reasoning_and_answer_apart_and_flags_the_reasoning_share(shootout):
    run_dir = shootout
    report = (run_dir / "report.md").read_text(encoding="utf-8")

    def speed_row(label: str) -> list[str]:
        (row,) = table_rows(report, label)
        return row[1:]

    # One prompt: a median without an interval (intervals resample prompts).
    number = re.compile(r"^[\d,.e+-]+ \(n=\d+\)$")
    for label in ("decode while reasoning (tokens/s)", "decode while answering (tokens/s)"):
        thinker, plain = speed_row(label)
        assert number.match(thinker) and plain == "–", (label, thinker, plain)
    thinker, plain = speed_row("reasoning tokens (tokens)")
    assert thinker.startswith("24 (n=") and plain.startswith("0 (n="), (thinker, plain)

    nfkc = lambda s: len(unicodedata.normalize("NFKC", s))  # noqa: E731
    share = nfkc(THINK_REASONING) / (nfkc(THINK_REASONING) + nfkc(THINK_ANSWER))
    assert (f"⚠ **reasoning_share_mismatch**: reasoning share differs: thinker {share:.0%} of "
            "output characters were reasoning, plain 0%; compare answer characters/s, not "
            "tokens/s") in report

    measured = [r for r in results(run_dir) if r["phase"] == "measure"]
    # Counted by the model's own tokenizer (/tokenize); a request whose count failed falls
    # back to one token per reasoning chunk, which is also 24 here.
    sources = [r["metrics"]["reasoning_tokens_source"] for r in measured if r["model"] == "thinker"]
    assert "tokenizer" in sources and set(sources) <= {"tokenizer", "estimate"}
    for row in measured:
        m = row["metrics"]
        if row["model"] == "thinker":
            assert m["reasoning_tokens"] == 24
            assert m["reasoning_decode_tokens_per_s"] > 0 and m["answer_decode_tokens_per_s"] > 0
            assert m["first_reasoning_s"] < m["first_answer_char_s"]
        else:
            assert m["reasoning_decode_tokens_per_s"] is None
            assert m["answer_decode_tokens_per_s"] is None
            assert m["answer_chars"] == nfkc(PLAIN_ANSWER)


@engine
def test_the_reasoning_phase_rate_covers_the_reasoning_tokens(shootout, scripted):
    n_reasoning = scripted["think"].piece_index("</think>") - 1
    for row in results(shootout):
        if row["model"] == "thinker" and row["phase"] == "measure":
            times = phase_times(row, 2)
            assert len(times) == n_reasoning == 24  # one chunk per reasoning token
            assert row["metrics"]["reasoning_decode_tokens_per_s"] == pytest.approx(
                phase_rate(times))


@engine
def test_the_answer_phase_rate_covers_the_answer_tokens(shootout, scripted):
    model = scripted["think"]
    n_answer = len(model.pieces) - model.piece_index("\n\n") - 1
    for row in results(shootout):
        if row["model"] == "thinker" and row["phase"] == "measure":
            times = phase_times(row, 1)
            assert len(times) == n_answer == 4  # one chunk per answer token
            assert row["metrics"]["answer_decode_tokens_per_s"] == pytest.approx(
                phase_rate(times))
