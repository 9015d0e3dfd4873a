"""Fairness guards and headline sentences on hand-built rows."""

from kurabe.analysis.speed import analyse_speed
from kurabe.records import RequestRow


def row(model, prompt, repeat, **metrics):
    base = {"decode_tokens_per_s": 100.0, "chars_per_s": 300.0, "output_tokens": 100,
            "answer_chars": 300, "reasoning_share": 0.0, "length_capped": False,
            "cached_prompt_tokens": 0, "server_decode_tokens_per_s": 100.0, "ttft_s": 0.1,
            "prompt_tokens_per_s": 500.0}
    base.update(metrics)
    return RequestRow(seq=0, model=model, prompt_id=prompt, repeat=repeat, phase="measure",
                      status="ok", error=None, sent_at_unix_s=0, request={}, record={},
                      metrics=base)


def codes(analysis):
    return {w.code for w in analysis.warnings}


def test_equal_models_raise_no_warning_and_no_winner():
    rows = [row(m, p, r, decode_tokens_per_s=100.0 + r, server_decode_tokens_per_s=100.0 + r)
            for m in "ab" for p in ("p1", "p2") for r in range(3)]
    a = analyse_speed(["a", "b"], rows)
    assert codes(a) == set()
    assert "no clear winner" in a.headline()[0]


def test_a_faster_model_gets_a_headline_with_its_interval():
    prompts = ("p1", "p2", "p3", "p4", "p5")  # enough to decide (stats.MIN_PROMPTS)
    rows = [row("a", p, r, decode_tokens_per_s=141.0 * (1 + r / 100),
                server_decode_tokens_per_s=141.0 * (1 + r / 100), chars_per_s=423.0)
            for p in prompts for r in range(5)]
    rows += [row("b", p, r, decode_tokens_per_s=100.0 * (1 + r / 100),
                 server_decode_tokens_per_s=100.0 * (1 + r / 100)) for p in prompts for r in range(5)]
    a = analyse_speed(["a", "b"], rows)
    assert a.headline() == ["a decodes 1.41× faster than b (95% CI 1.41–1.41, n=25)"]
    assert codes(a) == set()


def test_each_guard_fires_on_its_own_condition():
    rows = [row("a", "p", r, output_tokens=100, answer_chars=300, decode_tokens_per_s=120.0,
                chars_per_s=200.0, server_decode_tokens_per_s=120.0) for r in range(3)]
    rows += [row("b", "p", r, output_tokens=150, answer_chars=600, reasoning_share=0.5,
                 length_capped=True, cached_prompt_tokens=10, decode_tokens_per_s=100.0,
                 chars_per_s=400.0, server_decode_tokens_per_s=80.0) for r in range(3)]
    a = analyse_speed(["a", "b"], rows)
    assert codes(a) == {"output_length_mismatch", "reasoning_share_mismatch", "length_capped",
                        "ranking_disagreement", "prompt_cache_hits", "clock_disagreement"}
    msg = {w.code: w.message for w in a.warnings}
    assert "50%" in msg["output_length_mismatch"]  # 150 vs 100 tokens
    assert "3 of 3" in msg["length_capped"] and msg["length_capped"].startswith("b:")
    assert "+25.0%" in msg["clock_disagreement"]  # 100 / 80 - 1


def test_twins_are_left_out_of_the_characters_ranking():
    # a twin writes random tokens of a stand-in vocabulary: its characters/s mean nothing
    rows = [row("real", p, r, decode_tokens_per_s=120.0, server_decode_tokens_per_s=120.0,
                chars_per_s=200.0) for p in ("p1", "p2") for r in range(3)]
    rows += [row("twin", p, r, decode_tokens_per_s=100.0, server_decode_tokens_per_s=100.0,
                 chars_per_s=400.0) for p in ("p1", "p2") for r in range(3)]
    assert "ranking_disagreement" in codes(analyse_speed(["real", "twin"], rows))
    assert "ranking_disagreement" not in codes(analyse_speed(["real", "twin"], rows,
                                                             twins=["twin"]))
    rows += [row("other", p, r, decode_tokens_per_s=110.0, server_decode_tokens_per_s=110.0,
                 chars_per_s=500.0) for p in ("p1", "p2") for r in range(3)]
    among_real = analyse_speed(["real", "twin", "other"], rows, twins=["twin"])
    message = next(w.message for w in among_real.warnings if w.code == "ranking_disagreement")
    assert "twin" not in message and "real > other" in message


def test_length_caps_are_expected_in_fixed_length_mode_and_failures_are_counted():
    rows = [row(m, "p", r, length_capped=True) for m in "ab" for r in range(2)]
    failed = [row("b", "p", 9)]
    a = analyse_speed(["a", "b"], rows, fixed_length=True, errors=failed)
    assert codes(a) == {"failed_requests"}
    assert a.counts["b"] == {"ok": 2, "error": 1, "answered": 2}
