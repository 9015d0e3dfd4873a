"""`kurabe thinking split` reads a saved response truthfully or says, in one line naming the
file, why it cannot: content given as a list of parts is joined, content of the wrong type
and cut-off JSON are errors (never an "answered" answer), and `-` reads standard input."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from kurabe import KurabeError, api
from kurabe.cli import app
from kurabe.thinking import SavedResponseError, parse_saved_response


def invoke(*args: str, stdin: bytes | str | None = None):
    return CliRunner().invoke(app, list(args), input=stdin, prog_name="kurabe")


def one_clear_error(result, *needles: str) -> str:
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    err = result.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    assert result.exception is None or isinstance(result.exception, SystemExit)
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def _completion(content, **message) -> str:
    return json.dumps({"choices": [{"message": {"role": "assistant", "content": content,
                                                **message}, "finish_reason": "stop"}]})


def test_content_given_as_a_list_of_parts_is_joined(tmp_path):
    saved = tmp_path / "parts.json"
    saved.write_text(_completion([{"type": "text", "text": "<think>考え</think>"},
                                  {"type": "text", "text": "答え"},
                                  {"type": "output_text", "text": "です"}]), encoding="utf-8")
    done = invoke("thinking", "split", str(saved), "--json")
    assert done.exit_code == 0, done.output
    got = json.loads(done.stdout)
    assert (got["reasoning"], got["answer"], got["outcome"], got["input_kind"]) == (
        "考え", "答えです", "answered", "openai")


@pytest.mark.parametrize(("content", "needle"), [
    (42, "choices[0].message.content is a number, not text"),
    (True, "choices[0].message.content is a boolean, not text"),
    ({"text": "x"}, "choices[0].message.content is an object, not text"),
    ([{"type": "image_url", "image_url": {"url": "x"}}],
     "choices[0].message.content[0] is a part of type 'image_url', not text"),
    ([{"type": "text", "text": 5}], "choices[0].message.content[0].text is a number, not text"),
    ([7], "choices[0].message.content[0] is a number, not a text part"),
])
def test_content_of_the_wrong_type_is_one_clear_error_naming_the_file(tmp_path, content, needle):
    saved = tmp_path / "wrong.json"
    saved.write_text(_completion(content), encoding="utf-8")
    one_clear_error(invoke("thinking", "split", str(saved)), f"error: {saved}: {needle}")


@pytest.mark.parametrize(("text", "needle"), [
    ('{"choices":[{"message":{"content":"答えは四', "not valid JSON: Unterminated string"),
    ('{"choices":[{"message":{"content":"x"}}]', "not valid JSON: Expecting ',' delimiter"),
    ("[{\"choices\": [", "not valid JSON"),
    ('{"model": "m", "created": 1}', "a JSON object with none of choices, message or response "
                                    "(its keys: model, created)"),
    ("[1, 2]", "item 0: JSON a number is not a saved chat response"),
    ('"just a string"', None),  # plain text that happens to be quoted: read as text
    ('{"error": {"message": "model overloaded"}}',
     "the saved response is an error, not an answer: model overloaded"),
    ('{"choices": []}', "choices is empty: the response holds no answer"),
    ('{"choices": [{"message": {"content": "x"}, "finish_reason": 3}]}',
     "choices[0].finish_reason is a number, not a stop reason"),
    ('{"message": "hi"}', "message is a string, not an object"),
    ("[" * 50_000 + "]" * 50_000, "JSON nested too deeply"),
])
def test_json_that_cannot_be_read_truthfully_is_never_an_answer(tmp_path, text, needle):
    saved = tmp_path / "saved.json"
    saved.write_text(text, encoding="utf-8")
    done = invoke("thinking", "split", str(saved), "--json")
    if needle is None:
        assert json.loads(done.stdout)["input_kind"] == "text"
        return
    err = one_clear_error(done, f"error: {saved}: ", needle)
    assert "answered" not in done.stdout and "answered" not in err
    assert "cut short" in err or not needle.startswith("not valid JSON: Unterminated")


def test_a_cut_off_file_is_said_to_be_cut_short(tmp_path):
    saved = tmp_path / "cut.json"
    saved.write_text(_completion("<think>r</think>答え")[:-9], encoding="utf-8")
    err = one_clear_error(invoke("thinking", "split", str(saved)), "not valid JSON")
    assert err.endswith("(it ends before the JSON does: cut short?)")


@pytest.mark.parametrize(("text", "answer"), [
    (_completion("<think>r</think>標準入力"), "標準入力"),
    ('data: {"choices":[{"delta":{"content":"A"}}]}\n\ndata: [DONE]\n', "A"),
    ("plain answer", "plain answer"),
])
def test_a_dash_reads_standard_input(text, answer):
    done = invoke("thinking", "split", "-", "--json", stdin=text.encode("utf-8"))
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["answer"] == answer


def test_errors_from_standard_input_say_so():
    one_clear_error(invoke("thinking", "split", "-", stdin=b'{"choices": [{"mess'),
                    "error: standard input: not valid JSON")
    one_clear_error(invoke("thinking", "split", "-", stdin=b"\xff\xfe answer"),
                    "error: standard input: not UTF-8 text (byte 0)")


@pytest.mark.parametrize(("text", "needle"), [
    ('data: {"choices":[{"delta":{"content":"A"}}]}\n\ndata: {"choices": [\n\n',
     "line 3: a stream event is not valid JSON"),
    ('data: {"choices":[{"delta":{"content":"A"}}]}\n{"choices":[{"delta":{"content":"B"}}]}\n',
     "line 2 is not part of an SSE stream"),
    ('data: {"choices":[{"delta":{"content":"A"}}]}\n\ndata: {"error": {"message": "OOM"}}\n\n',
     "line 3: the saved response is an error, not an answer: OOM"),
    ('event: error\ndata: {"message": "boom"}\n\n', "line 2: the stream holds an error event"),
    ('data: {"choices":[{"delta":{"content":7}}]}\n\n',
     "line 1: choices[0].delta.content is a number, not text"),
    ('data: [1]\n\n', "line 1: JSON a list is not a saved chat response"),
    ('data: {"id": 1}\n\ndata: {"usage": {}}\n\ndata: [DONE]\n\n',
     "none of the stream's 2 events holds choices, message or response"),
])
def test_an_sse_transcript_that_cannot_be_read_truthfully_is_an_error(tmp_path, text, needle):
    saved = tmp_path / "stream.sse"
    saved.write_text(text, encoding="utf-8")
    one_clear_error(invoke("thinking", "split", str(saved)), f"{saved}: {needle}")


def test_sse_forms_a_server_really_writes_are_read():
    text = (": keep-alive comment\r\n"
            "event: message\r\nid: 1\r\n"
            'data: {"choices":[{"delta":{"reasoning_content":"R"}}]}\r\n\r\n'
            'data: {"choices":[{"delta":{"content":"A"}}]}\r\n'
            'data: {"choices":[{"delta":{"content":"B"},"finish_reason":"stop"}]}\r\n\r\n'
            'data: {"choices":[],"usage":{"completion_tokens":3}}\r\n\r\n'
            "data: [DONE]\r\n\r\n")
    saved = parse_saved_response(text)
    assert (saved.reasoning, saved.content, saved.finish_reason, saved.kind, saved.notes) == (
        "R", "AB", "stop", "openai-sse", [])


def test_a_stream_with_no_end_is_read_with_a_note(tmp_path):
    saved = tmp_path / "cut.sse"
    saved.write_text('data: {"choices":[{"delta":{"content":"<think>半分"}}]}\n\n',
                     encoding="utf-8")
    done = invoke("thinking", "split", str(saved))
    assert done.exit_code == 0
    assert "note: the stream ends with neither a stop reason nor [DONE]" in done.stdout


def test_a_json_list_of_chunks_and_several_choices_are_read_with_notes():
    chunks = json.dumps([{"choices": [{"delta": {"content": "<think>r</think>"}}]},
                         {"choices": [{"delta": {"content": "a"}, "finish_reason": "stop"}]}])
    got = api.split_thinking(chunks)
    assert (got["reasoning"], got["answer"], got["notes"]) == ("r", "a", [])
    two = json.dumps({"choices": [{"message": {"content": "first"}},
                                  {"message": {"content": "second"}}]})
    got = api.split_thinking(two)
    assert got["answer"] == "first"
    assert got["notes"] == ["the response holds 2 choices; the first is read"]


def test_lone_surrogates_are_replaced_and_said_so(tmp_path):
    saved = tmp_path / "surrogate.json"
    saved.write_text('{"choices":[{"message":{"content":"a\\ud800b"}}]}', encoding="utf-8")
    done = invoke("thinking", "split", str(saved))
    assert done.exit_code == 0, done.output
    assert "a\ufffdb" in done.stdout and "lone surrogates" in done.stdout


def test_terminal_escapes_in_a_saved_answer_are_shown_not_obeyed(tmp_path):
    saved = tmp_path / "escape.json"
    saved.write_text(json.dumps({"choices": [{"message": {"content": "ok\x1b[2J\x07done"},
                                              "finish_reason": "[red]stop\x1b]0;t\x07"}]}),
                     encoding="utf-8")
    done = invoke("thinking", "split", str(saved))
    assert done.exit_code == 0, done.output
    assert "\x1b" not in done.stdout and "\x07" not in done.stdout
    assert "ok\\x1b[2J\\x07done" in done.stdout and "[red]stop\\x1b]0;t\\x07" in done.stdout


def test_unreadable_files_are_one_clear_error(tmp_path):
    one_clear_error(invoke("thinking", "split", str(tmp_path / "nope.json")),
                    "nope.json: cannot read: No such file or directory")
    one_clear_error(invoke("thinking", "split", str(tmp_path)), "cannot read: Is a directory")
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("caf\xe9".encode("latin-1"))
    one_clear_error(invoke("thinking", "split", str(latin)), "latin1.txt: not UTF-8 text (byte 3)")


def test_the_library_raises_kurabe_errors_with_the_origin_it_is_given():
    with pytest.raises(KurabeError, match=r"^clipboard: choices\[0\]\.message\.content is a "
                                          r"number, not text$"):
        api.split_thinking(_completion(1.5), origin="clipboard")
    with pytest.raises(SavedResponseError):
        parse_saved_response('{"choices": 3}')
