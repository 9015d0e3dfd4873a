"""The reasoning/answer split on every format, as whole responses and as streams."""

import pytest

from kurabe.thinking import outcome, split_content, split_stream, template_opens_thinking


def test_server_split_content_is_the_answer():
    s = split_content("東京です。", "首都を聞かれている。")
    assert (s.reasoning, s.answer, s.format) == ("首都を聞かれている。", "東京です。", "server")
    assert outcome(s, "stop") == "answered"


def test_server_split_with_a_stray_close_tag_in_the_answer_is_a_leak():
    s = split_content("答え</think>です", "考え")
    assert s.leaked_markers == ["</think>"]
    assert outcome(s, "stop") == "leaked"


def test_inline_think_tags():
    s = split_content("<think>\nまず考える。\n</think>\n\n答えは42です。")
    assert (s.reasoning, s.answer, s.format) == ("まず考える。", "答えは42です。", "think")
    assert outcome(s, "stop") == "answered"


def test_output_starting_inside_a_template_opened_think():
    s = split_content("reasoning here</think>The answer.", starts_in_reasoning=True)
    assert (s.reasoning, s.answer, s.format) == ("reasoning here", "The answer.", "think-opened")
    inferred = split_content("reasoning here</think>The answer.")  # template unknown
    assert inferred.answer == "The answer." and inferred.format == "think-opened"


def test_a_close_tag_from_a_model_known_not_to_think_is_a_leak():
    s = split_content("The answer.</think> More.", starts_in_reasoning=False)
    assert s.format == "none" and s.leaked_markers == ["</think>"]
    assert outcome(s, "stop") == "leaked"


@pytest.mark.parametrize("text, opened", [("<think>考え続けて", False), ("考え続けて", True)])
def test_a_think_block_that_never_closes_is_thinking_exhausted(text, opened):
    s = split_content(text, starts_in_reasoning=opened or None)
    assert s.answer == "" and not s.reasoning_closed and s.reasoning == "考え続けて"
    assert outcome(s, "length") == "thinking_exhausted"


def test_server_split_reasoning_cut_by_the_token_limit_is_thinking_exhausted():
    s = split_content("", "long reasoning that ran out")
    assert outcome(s, "length") == "thinking_exhausted"
    assert outcome(split_content("", ""), "stop") == "empty"


def test_harmony_channels():
    text = ("<|channel|>analysis<|message|>User asks capital. Answer Tokyo.<|end|>"
            "<|start|>assistant<|channel|>final<|message|>東京です。<|return|>")
    s = split_content(text)
    assert (s.reasoning, s.answer, s.format) == ("User asks capital. Answer Tokyo.", "東京です。",
                                                 "harmony")
    assert outcome(s, "stop") == "answered"


def test_harmony_analysis_only_ran_out_of_tokens():
    s = split_content("<|channel|>analysis<|message|>thinking and thinking")
    assert s.answer == "" and not s.reasoning_closed
    assert outcome(s, "length") == "thinking_exhausted"


def test_harmony_degraded_to_plain_words():
    s = split_content("analysisThe user wants X.assistantfinalHere is X.")
    assert (s.reasoning, s.answer, s.format) == ("The user wants X.", "Here is X.",
                                                 "harmony-degraded")


def test_harmony_markers_left_in_a_server_split_answer_are_a_leak():
    s = split_content("<|channel|>final<|message|>答え", "analysis text")
    assert set(s.leaked_markers) == {"<|channel|>", "<|message|>"}
    assert outcome(s, "stop") == "leaked"


def test_plain_answer_and_empty_answer():
    assert outcome(split_content("Just an answer."), "stop") == "answered"
    assert outcome(split_content("   "), "stop") == "empty"


def test_stream_timestamps_first_reasoning_and_first_answer():
    chunks = [(0.10, "<think>", ""), (0.12, "考", ""), (0.14, "え", ""), (0.16, "</think>", ""),
              (0.18, "\n", ""), (0.20, "答", ""), (0.22, "え", "")]
    ts = split_stream(chunks)
    assert ts.t_first_reasoning_s == 0.12  # the tag itself is not reasoning text
    assert ts.t_last_reasoning_s == 0.14
    assert ts.t_first_answer_s == 0.20  # whitespace after the tag is not an answer yet
    assert (ts.reasoning_chunks, ts.answer_chunks) == (2, 2)
    assert ts.split.answer == "答え"


def test_stream_with_server_reasoning_fields():
    chunks = [(0.1, "", "a"), (0.2, "", "b"), (0.3, "X", ""), (0.4, "Y", "")]
    ts = split_stream(chunks)
    assert (ts.t_first_reasoning_s, ts.t_first_answer_s) == (0.1, 0.3)
    assert ts.split.reasoning == "ab" and ts.split.answer == "XY"


def test_template_opening_detection():
    qwen_like = ("{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n<think>\\n' }}"
                 "{%- endif %}")
    assert template_opens_thinking(qwen_like)
    closed = ("{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
              "{%- if enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
              "{%- endif %}")
    assert not template_opens_thinking(closed)
    assert not template_opens_thinking(None)


CASES = {
    "openai.json": ('{"choices":[{"message":{"content":"","reasoning_content":"考え中"},'
                    '"finish_reason":"length"}]}', None, ("考え中", "", "thinking_exhausted")),
    "openai-inline.json": ('{"choices":[{"message":{"content":"<think>r</think>答え"},'
                           '"finish_reason":"stop"}]}', None, ("r", "答え", "answered")),
    "ollama.json": ('{"message":{"role":"assistant","content":"A","thinking":"T"},'
                    '"done_reason":"stop","done":true}', None, ("T", "A", "answered")),
    "ollama.ndjson": ('{"message":{"content":"","thinking":"T1"},"done":false}\n'
                      '{"message":{"content":"","thinking":"T2"},"done":true,"done_reason":"length"}\n',
                      None, ("T1T2", "", "thinking_exhausted")),
    "stream.sse": ('data: {"choices":[{"delta":{"content":"<|channel|>analysis<|message|>R"}}]}\n\n'
                   'data: {"choices":[{"delta":{"content":"<|end|><|start|>assistant<|channel|>final'
                   '<|message|>F"},"finish_reason":"stop"}]}\n\ndata: [DONE]\n',
                   None, ("R", "F", "answered")),
    "plain.txt": ("<think>never closed", "length", ("never closed", "", "thinking_exhausted")),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_thinking_split_command_reads_every_saved_format(tmp_path, name):
    import json

    from conftest import run_kurabe

    text, finish, (reasoning, answer, result) = CASES[name]
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    args = ["thinking", "split", str(path), "--json"]
    if finish:
        args += ["--finish-reason", finish]
    done = run_kurabe(*args, check=True)
    got = json.loads(done.stdout)
    assert (got["reasoning"], got["answer"], got["outcome"]) == (reasoning, answer, result)
    assert got["leaked_markers"] == []
