"""Reasoning settings on the wire, and the budget sweep's table and recommendation."""

import pytest

from kurabe import KurabeError
from kurabe.analysis.sweep import analyse_sweep
from kurabe.backends.base import backend_class
from kurabe.config import parse_config
from kurabe.records import RequestRow


def request_fields(setting, kind):
    """What the backend registered as ``kind`` sends for a reasoning setting."""
    return backend_class(kind).reasoning_fields(setting)


def test_settings_map_to_each_engines_fields():
    assert request_fields("off", "llama.cpp") == {
        "reasoning_budget_tokens": 0, "chat_template_kwargs": {"enable_thinking": False}}
    assert request_fields(256, "llama.cpp") == {
        "reasoning_budget_tokens": 256, "chat_template_kwargs": {"enable_thinking": True}}
    assert request_fields("high", "openai") == {
        "reasoning_effort": "high",
        "chat_template_kwargs": {"enable_thinking": True, "reasoning_effort": "high"}}
    assert request_fields("unlimited", "llama.cpp")["reasoning_budget_tokens"] == -1
    assert request_fields(None, "llama.cpp") == {}
    with pytest.raises(KurabeError, match="needs a llama.cpp engine"):
        request_fields(128, "openai")
    assert request_fields("off", "ollama")["think"] is False
    assert request_fields("medium", "ollama")["think"] == "medium"
    assert request_fields("unlimited", "ollama")["think"] is True


def test_bad_settings_in_a_config_name_the_key():
    with pytest.raises(KurabeError, match="reasoning_sweep.settings"):
        parse_config({"models": [{"name": "a", "source": "x"}],
                      "reasoning_sweep": {"settings": ["off", "extreme"]}}, "s.toml")
    with pytest.raises(KurabeError, match="models.0.reasoning"):
        parse_config({"models": [{"name": "a", "source": "x", "reasoning": -3}]}, "s.toml")
    cfg = parse_config({"models": [{"name": "a", "source": "x", "reasoning": "512"}],
                        "reasoning_sweep": {"settings": ["off", "HIGH", 64]}}, "s.toml")
    assert cfg.models[0].reasoning == 512 and cfg.reasoning_sweep.settings == ["off", "high", 64]


def row(prompt, setting, outcome, e2e, reasoning_tokens, output_tokens=100, model="q"):
    return RequestRow(seq=0, model=model, prompt_id=prompt, repeat=0, phase="sweep",
                      status="ok", error=None, sent_at_unix_s=0, request={}, record={},
                      setting=setting,
                      metrics={"outcome": outcome, "e2e_s": e2e, "reasoning_tokens": reasoning_tokens,
                               "output_tokens": output_tokens})


def test_sweep_table_and_recommendations_by_category():
    cats = {"c1": "creative", "c2": "creative", "r1": "reasoning", "r2": "reasoning"}
    rows = [
        # creative: answered at every setting; thinking only costs time (1 s vs 6 s)
        row("c1", "off", "answered", 1.0, 0), row("c2", "off", "answered", 1.0, 0),
        row("c1", "high", "answered", 6.0, 500), row("c2", "high", "answered", 6.0, 500),
        # reasoning: off fails half the time; high always answers
        row("r1", "off", "answered", 1.0, 0), row("r2", "off", "empty", 1.0, 0),
        row("r1", "high", "answered", 5.0, 400), row("r2", "high", "answered", 7.0, 600),
        row("r1", "64", "thinking_exhausted", 2.0, 64), row("r2", "64", "thinking_exhausted", 2.0, 64),
    ]
    cells, recs = analyse_sweep(rows, cats, ["off", "64", "high"])
    table = {(c.category, c.setting): c for c in cells}
    assert table[("reasoning", "off")].answer_rate == 0.5
    assert table[("reasoning", "64")].thinking_exhausted == 2
    assert table[("reasoning", "high")].seconds == 6.0  # median of 5 and 7
    assert [c.setting for c in cells if c.category == "reasoning"] == ["off", "64", "high"]
    by_cat = {r.category: r for r in recs}
    assert by_cat["creative"].setting == "off"
    assert "turn thinking off (same answer rate, 6.0× faster than high)" in by_cat["creative"].sentence
    assert by_cat["reasoning"].setting == "high"
    assert "reasoning high" in by_cat["reasoning"].sentence


def test_a_model_that_never_reasons_gets_no_false_recommendation():
    rows = [row("c1", s, "answered", 1.0 + i / 100, 0) for i, s in enumerate(["off", "high"])]
    _, recs = analyse_sweep(rows, {"c1": "creative"}, ["off", "high"])
    assert "did not reason at any setting" in recs[0].sentence
