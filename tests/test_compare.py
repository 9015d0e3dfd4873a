"""``kurabe compare`` on whole runs made in-process with the scripted backend: requests paired
on (prompt, repeat), a run against itself, prompts read from each run's snapshot, the unpaired
fallback, and runs that share no model."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import pytest

from kurabe import KurabeError, api
from kurabe.analysis.compare import compare_runs
from kurabe.analysis.stats import MIN_PROMPTS
from kurabe.backends.scripted import ScriptedReply, register_script, unregister_script
from kurabe.config import parse_config
from kurabe.store import Store

TOKENS = ["トー", "クン"] * 5  # ten tokens a reply

PROMPTS = [{"id": f"p{i}", "text": f"{i}番目の質問です", "category": "general"}
           for i in range(1, 7)]

KEYS = {"model", "metric", "before", "after", "ratio", "ci_low", "ci_high", "n", "decided",
        "sentence"}


def make_run(folder: Path, models: list[tuple[str, str]], prompts: list[dict],
             repeats: int = 2) -> Path:
    config = parse_config({"run": {"name": "cmp", "repeats": repeats, "warmup": 0,
                                   "max_tokens": 32},
                           "models": [{"name": n, "source": s} for n, s in models],
                           "prompts": prompts}, "test")
    api.run_shootout(config, folder)
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run folders, made once: a base run, a slower one, one with a prompt's text changed,
    one cut short, one on other prompts, and one of another model."""
    root = tmp_path_factory.mktemp("compare")
    names = {"fast": ScriptedReply(content=TOKENS, token_s=0.002),
             "slow": ScriptedReply(content=TOKENS, token_s=0.006)}
    calls = {"n": 0}

    def dies_on_third(_body):
        calls["n"] += 1
        return ScriptedReply(die=True) if calls["n"] >= 3 else names["fast"]

    sources = {key: register_script(f"cmp-{key}", reply) for key, reply in names.items()}
    sources["dies"] = register_script("cmp-dies", dies_on_third)
    try:
        changed = [*PROMPTS[:5], {**PROMPTS[5], "text": "まったく別の質問です"}]
        other = [{**p, "id": f"q{i}", "text": f"別の{i}番目"} for i, p in enumerate(PROMPTS)]
        out = {
            "base": make_run(root / "base", [("m", sources["fast"])], PROMPTS),
            "slower": make_run(root / "slower", [("m", sources["slow"])], PROMPTS),
            "changed": make_run(root / "changed", [("m", sources["fast"])], changed),
            "other_prompts": make_run(root / "other", [("m", sources["fast"])], other),
            "other_model": make_run(root / "model", [("z", sources["fast"])], PROMPTS),
        }
        make_run(root / "cut", [("m", sources["dies"])], PROMPTS)  # ends incomplete
        out["cut"] = root / "cut"
        yield out
    finally:
        for key in (*names, "dies"):
            unregister_script(f"cmp-{key}")


def decode_by_key(run: Path, model: str = "m") -> dict[tuple[str, int], float]:
    with Store.open(run) as store:
        return {(r.prompt_id, r.repeat): r.metrics["decode_tokens_per_s"]
                for r in store.requests(phase="measure", status="ok") if r.model == model}


def change(result: dict, metric: str = "decode_tokens_per_s", model: str = "m") -> dict:
    return next(c for c in result["changes"] if c["metric"] == metric and c["model"] == model)


def test_a_run_compared_with_itself_changes_nothing_exactly(runs):
    result = api.compare(runs["base"], runs["base"])
    assert set(result) >= {"before", "after", "setup_changes", "changes", "notes"}
    assert result["setup_changes"] == []
    assert not any("prompt" in note for note in result["notes"])
    assert result["changes"]
    for c in result["changes"]:
        assert set(c) >= KEYS
        assert (c["ratio"], c["ci_low"], c["ci_high"]) == (1.0, 1.0, 1.0)
        assert (c["method"], c["n"], c["clusters"]) == ("paired", 12, 6)
        assert c["decided"] is False and c["no_verdict"] is None
        assert "×1.00, 95% CI 1.00–1.00" in c["sentence"]


def test_a_slower_run_is_compared_pair_by_pair(runs):
    result = compare_runs(runs["base"], runs["slower"])
    c = change(result)
    before, after = decode_by_key(runs["base"]), decode_by_key(runs["slower"])
    assert set(before) == set(after) and len(before) == 12
    logs = [math.log(after[k] / before[k]) for k in before]
    assert c["ratio"] == pytest.approx(math.exp(sum(logs) / len(logs)), rel=1e-12)
    assert (c["method"], c["n"], c["clusters"]) == ("paired", 12, 6)
    assert c["before"] == pytest.approx(statistics.median(before.values()))
    assert c["after"] == pytest.approx(statistics.median(after.values()))
    # Three times the time per token: clearly slower, on every prompt.
    assert c["decided"] and c["ci_high"] < 1.0
    assert "worse" in c["sentence"] and "12 paired requests" in c["sentence"]
    assert not any("prompt" in note for note in result["notes"])


def test_a_changed_prompt_text_is_a_different_prompt(runs):
    result = compare_runs(runs["base"], runs["changed"])
    notes = [n for n in result["notes"] if "different prompts" in n]
    assert len(notes) == 1 and "same id, different text: p6" in notes[0]
    c = change(result)
    # p6 is not the same prompt in the two runs, so only p1..p5 pair.
    assert (c["method"], c["n"], c["clusters"]) == ("paired", 10, 5)
    before, after = decode_by_key(runs["base"]), decode_by_key(runs["changed"])
    logs = [math.log(after[k] / before[k]) for k in before if k[0] != "p6"]
    assert c["ratio"] == pytest.approx(math.exp(sum(logs) / len(logs)), rel=1e-12)


def test_a_run_cut_short_used_the_same_prompts(runs):
    # The run stopped after two requests: its rows name two prompts, but it was given six.
    assert len(decode_by_key(runs["cut"])) == 2
    result = compare_runs(runs["base"], runs["cut"])
    assert not any("different prompts" in n for n in result["notes"])
    c = change(result)
    assert (c["method"], c["n"], c["clusters"]) == ("paired", 2, 2)
    assert not c["decided"] and "too few requests to decide" in c["no_verdict"]
    assert "too few requests to decide" in c["sentence"]
    assert any(f"fewer than {MIN_PROMPTS} prompts" in n for n in result["notes"])


def test_runs_on_other_prompts_fall_back_to_unpaired_and_say_so(runs):
    result = compare_runs(runs["base"], runs["other_prompts"])
    c = change(result)
    before = list(decode_by_key(runs["base"]).values())
    after = list(decode_by_key(runs["other_prompts"]).values())
    assert c["method"] == "unpaired"
    assert c["ratio"] == pytest.approx(statistics.median(after) / statistics.median(before))
    assert c["ci_low"] <= c["ratio"] <= c["ci_high"]
    assert "unpaired" in c["sentence"]
    assert any("different prompts" in n and "only in the later run: q0" in n
               for n in result["notes"])
    assert any(n.startswith("m: no request of one run matches") for n in result["notes"])


def test_runs_with_no_model_in_common_are_an_error(runs):
    with pytest.raises(KurabeError, match="no model in common"):
        compare_runs(runs["base"], runs["other_model"])
