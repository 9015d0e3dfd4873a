"""An ablation chain: each step's paired ratio and its share of the whole change, checked
against a hand computation from the stored requests, in the report and the JSON summary."""

from __future__ import annotations

import math

import pytest

from kurabe import KurabeError, api
from kurabe.backends.scripted import ScriptedReply
from kurabe.config import parse_config
from kurabe.store import Store

PROMPTS = [{"id": f"p{i}", "text": f"question {i}"} for i in range(5)]
TOKENS = [f"t{i} " for i in range(16)]


def _config(models, chain, **extra):
    return parse_config({"run": {"name": "abl", "repeats": 1, "warmup": 0, "max_tokens": 16},
                         "models": [{"name": n, "source": s} for n, s in models],
                         "prompts": PROMPTS, "ablation": {"chain": chain, **extra}}, "test")


def test_steps_and_shares_match_a_hand_computation(tmp_path, script):
    pace = {"a": 0.002, "b": 0.004, "c": 0.008}
    models = [(n, script(ScriptedReply(content=TOKENS, token_s=s))) for n, s in pace.items()]
    analysis = api.run_shootout(_config(models, ["a", "b", "c"]), tmp_path / "run")

    with Store.open(tmp_path / "run") as store:
        rate = {(r.model, r.prompt_id): r.metrics["decode_tokens_per_s"]
                for r in store.requests(phase="measure", status="ok")}

    def hand(after: str, before: str) -> float:  # geometric mean of per-prompt ratios
        logs = [math.log(rate[(after, p["id"])] / rate[(before, p["id"])]) for p in PROMPTS]
        return math.exp(sum(logs) / len(logs))

    ab = analysis.ablation
    assert ab is not None and ab.chain == ["a", "b", "c"]
    steps = [(s.before, s.after) for s in ab.steps]
    assert steps == [("a", "b"), ("b", "c")]
    expected = [hand("b", "a"), hand("c", "b")]
    assert [s.ratio.ratio for s in ab.steps] == pytest.approx(expected, rel=1e-9)
    assert all(r < 0.75 for r in expected)  # each step halves the pace: clearly slower
    logs = [math.log(r) for r in expected]
    assert [s.share for s in ab.steps] == pytest.approx([v / sum(logs) for v in logs])
    assert sum(s.share for s in ab.steps) == pytest.approx(1.0)
    assert ab.total.ratio == pytest.approx(hand("c", "a"), rel=1e-9)
    assert ab.product == pytest.approx(expected[0] * expected[1], rel=1e-9)

    md = (tmp_path / "run" / "report.md").read_text(encoding="utf-8")
    assert "## Ablation" in md and "| a → b |" in md and "| b → c |" in md
    html = (tmp_path / "run" / "report.html").read_text(encoding="utf-8")
    assert 'id="ablation"' in html and "ratio of each step" in html
    summary = analysis.summary_json()["ablation"]
    assert [s["share"] for s in summary["steps"]] == pytest.approx([s.share for s in ab.steps])


def test_steps_without_a_verdict_are_named(tmp_path, script):
    # Two prompts are too few to decide (docs/metrics.md): ratios and shares are shown,
    # and the note says each step is within noise.
    models = [(n, script(ScriptedReply(content=TOKENS, token_s=s)))
              for n, s in (("a", 0.002), ("b", 0.004), ("c", 0.008))]
    config = _config(models, ["a", "b", "c"])
    config.prompts = config.prompts[:2]
    ab = api.run_shootout(config, tmp_path / "run").ablation
    assert ab is not None and all(s.share is not None and not s.clear for s in ab.steps)
    assert any("no clear change" in n and "a → b, b → c" in n for n in ab.notes)


def test_an_unknown_model_in_the_chain_is_refused(script):
    with pytest.raises(KurabeError, match="ablation.chain: z not in"):
        _config([("a", script(ScriptedReply(content="x")))], ["a", "z"])
    with pytest.raises(KurabeError, match="ablation.chain"):
        _config([("a", script(ScriptedReply(content="x")))], ["a"])
