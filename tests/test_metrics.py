"""Per-request metrics on hand-built streams, each figure worked out by hand."""

import pytest

from kurabe.metrics import METRIC_DOCS, count_chars, count_graphemes, speed_metrics
from kurabe.records import Chunk, StreamRecord


def record(chunks, **kw):
    return StreamRecord(sent_at_unix_s=0.0, chunks=[Chunk(*c) for c in chunks], **kw)


def test_decode_rate_counts_tokens_after_the_first_over_time_after_the_first():
    # 5 tokens at t = 0.5, 0.6, 0.7, 0.8, 0.9 s -> 4 tokens in 0.4 s = 10 tokens/s
    rec = record([(0.5, "あ", ""), (0.6, "い", ""), (0.7, "う", ""), (0.8, "え", ""),
                  (0.9, "お", "")], t_done_s=1.0, finish_reason="stop",
                 usage={"prompt_tokens": 20, "completion_tokens": 5})
    m = speed_metrics(rec)
    assert m.ttft_s == 0.5
    assert m.first_answer_char_s == 0.5
    assert m.e2e_s == 1.0
    assert m.decode_tokens_per_s == pytest.approx(10.0)
    assert m.itl_per_token_s == pytest.approx(0.1)
    assert m.itl_per_chunk_median_s == pytest.approx(0.1)
    assert m.prompt_tokens_per_s == pytest.approx(40.0)  # 20 tokens / 0.5 s
    assert m.answer_chars == 5
    assert m.answer_bytes == 15  # 3 UTF-8 bytes per hiragana
    assert m.chars_per_s == pytest.approx(12.5)  # 5 chars / 0.4 s
    assert m.bytes_per_s == pytest.approx(37.5)
    assert m.chars_per_token == pytest.approx(1.0)
    assert m.output_tokens_source == "server"
    assert not m.length_capped


def test_server_count_wins_over_chunk_count_when_chunks_hold_several_tokens():
    # 3 chunks but the server says 7 tokens: 6 tokens in 0.3 s = 20 tokens/s
    rec = record([(0.1, "ab", ""), (0.2, "cd", ""), (0.4, "efg", "")], t_done_s=0.4,
                 usage={"prompt_tokens": 3, "completion_tokens": 7})
    m = speed_metrics(rec)
    assert m.decode_tokens_per_s == pytest.approx(20.0)
    assert m.itl_per_chunk_median_s == pytest.approx(0.15)  # gaps 0.1, 0.2


def test_without_server_counts_tokens_are_estimated_from_chunks():
    rec = record([(0.1, "a", ""), (0.3, "b", "")], t_done_s=0.3)
    m = speed_metrics(rec)
    assert m.output_tokens == 2 and m.output_tokens_source == "chunks"
    assert m.decode_tokens_per_s == pytest.approx(5.0)


def test_reasoning_is_kept_out_of_answer_characters():
    rec = record([(0.2, "", "考え"), (0.3, "", "中"), (0.5, "答", ""), (0.6, "え", "")],
                 t_done_s=0.7, usage={"completion_tokens": 4, "prompt_tokens": 1})
    m = speed_metrics(rec)
    assert m.ttft_s == 0.2
    assert m.first_answer_char_s == 0.5
    assert m.answer_chars == 2 and m.reasoning_chars == 3
    assert m.reasoning_share == pytest.approx(3 / 5)
    assert m.chars_per_token is None  # tokens include reasoning: no honest ratio
    assert m.chars_per_s == pytest.approx(2 / 0.4)


def test_single_token_and_empty_streams_give_none_not_zero():
    one = speed_metrics(record([(0.2, "x", "")], t_done_s=0.2,
                               usage={"completion_tokens": 1, "prompt_tokens": 2}))
    assert one.decode_tokens_per_s is None and one.chars_per_s is None
    empty = speed_metrics(record([], t_done_s=0.1, error="HTTP 500"))
    assert empty.ttft_s is None and empty.decode_tokens_per_s is None
    assert empty.answer_chars == 0 and empty.reasoning_share is None


def test_llama_cpp_timings_cache_and_length_stop_are_read():
    rec = record([(0.1, "a", ""), (0.2, "b", "")], t_done_s=0.2, finish_reason="length",
                 timings={"predicted_n": 2, "predicted_per_second": 9.5, "prompt_per_second": 100.0,
                          "cache_n": 12, "prompt_n": 3})
    m = speed_metrics(rec)
    assert m.length_capped
    assert m.cached_prompt_tokens == 12
    assert m.server_decode_tokens_per_s == 9.5
    assert m.prompt_tokens == 3 and m.output_tokens == 2


def test_character_counts_are_unicode_correct():
    assert count_chars("ｶﾀｶﾅ") == 4  # half-width katakana: NFKC folds, 4 code points
    assert count_chars("\u30ab\u3099") == 1  # decomposed カ + dakuten composes to one code point
    assert count_chars("㍿") == 4  # NFKC expands to 株式会社
    assert count_graphemes("👨‍👩‍👧") == 1  # ZWJ family: 5 code points, one grapheme
    assert count_chars("👨‍👩‍👧") == 5
    assert count_graphemes("é") == 1


def test_every_metric_is_explained_in_docs(pytestconfig):
    doc = (pytestconfig.rootpath / "docs" / "metrics.md").read_text(encoding="utf-8")
    for key in METRIC_DOCS:
        assert f"`{key}`" in doc, f"docs/metrics.md does not define {key}"


def test_reasoning_and_answer_phases_are_timed_apart():
    # inline tags, 3 reasoning chunks then 3 answer chunks, 6 tokens by the server
    rec = record([(0.1, "<think>", ""), (0.2, "考", ""), (0.3, "え", ""), (0.4, "</think>", ""),
                  (0.5, "答", ""), (0.7, "え", ""), (0.9, "。", "")], t_done_s=1.0,
                 finish_reason="stop", usage={"completion_tokens": 7, "prompt_tokens": 1})
    m = speed_metrics(rec, reasoning_tokens=2, reasoning_tokens_source="tokenizer",
                      answer_phase_tokens=3)
    assert m.outcome == "answered" and m.reasoning_format == "think"
    assert m.first_reasoning_s == 0.2 and m.first_answer_char_s == 0.5
    assert m.thinking_s == pytest.approx(0.4)  # 0.5 - 0.1 (first token)
    assert (m.reasoning_tokens, m.answer_tokens) == (2, 5)
    assert m.reasoning_decode_tokens_per_s == pytest.approx(1 / 0.1)  # 1 token in 0.2..0.3
    # the answer's own 3 tokens, streamed 0.5..0.9 (not the 5 left after reasoning, which
    # include </think> and the end token)
    assert m.answer_decode_tokens_per_s == pytest.approx(2 / 0.4)
    assert m.answer_chars == 3 and m.reasoning_chars == 2


def test_thinking_exhausted_without_a_tokenizer_is_estimated_from_chunks():
    rec = record([(0.1, "", "a"), (0.2, "", "b"), (0.3, "", "c")], t_done_s=0.3,
                 finish_reason="length", usage={"completion_tokens": 3, "prompt_tokens": 1})
    m = speed_metrics(rec)
    assert m.outcome == "thinking_exhausted"
    assert (m.reasoning_tokens, m.reasoning_tokens_source, m.answer_tokens) == (3, "estimate", 0)
    assert m.first_answer_char_s is None and m.answer_decode_tokens_per_s is None
    assert m.thinking_s == pytest.approx(0.2)


def test_latencies_start_when_the_request_began_to_be_written():
    # started at 0; connected and writing at 0.040; first token 0.140; done 0.500
    rec = StreamRecord(sent_at_unix_s=0.0, t_written_s=0.040, t_done_s=0.500,
                       finish_reason="stop", usage={"prompt_tokens": 20, "completion_tokens": 3},
                       chunks=[Chunk(0.140, "a"), Chunk(0.240, "b"), Chunk(0.340, "c")])
    m = speed_metrics(rec)
    assert m.send_delay_s == pytest.approx(0.040)
    assert m.ttft_s == pytest.approx(0.100)
    assert m.first_answer_char_s == pytest.approx(0.100)
    assert m.e2e_s == pytest.approx(0.460)
    assert m.prompt_tokens_per_s == pytest.approx(200.0)
    assert m.decode_tokens_per_s == pytest.approx(10.0)  # unchanged: chunk to chunk
    # a transport that cannot say when it wrote: times from the request's start
    rec.t_written_s = None
    assert speed_metrics(rec).ttft_s == pytest.approx(0.140)
    assert speed_metrics(rec).send_delay_s is None
