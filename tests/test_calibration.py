"""The judge's calibration: the built-in set, its loader, the phase (stored, resumable), the
analysis (accuracy with intervals, degenerate patterns), the report and the CLI.

Scripted judges drive it in-process; one test runs the real built-in SmolLM2 as the judge.
"""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from kurabe import KurabeError, api
from kurabe.analysis.calibration import (
    FAILED_CAUTION,
    NOT_CALIBRATED_CAUTION,
    Accuracy,
    analyse_calibration,
)
from kurabe.backends.scripted import ScriptedReply, last_user_text
from kurabe.cli import app
from kurabe.config import parse_config
from kurabe.evals import calibration as C
from kurabe.evals import judge as J
from kurabe.records import CalibrationGradeRow
from kurabe.store import Store

BUILTIN = C.load_calibration_set(C.BUILTIN_SET)
GOOD = {J.neutralise(i.good) for i in BUILTIN}
ANSWER = re.compile(r'<answer turn="1">\n(.*?)\n</answer>', re.S)


def _answers(body: dict) -> tuple[str, str | None]:
    """The graded answer (single), or answers A and B (pairwise), from a judge prompt."""
    user = last_user_text(body)
    if "Assistant B:" in user:
        a, b = user.split("Assistant B:", 1)
        return ANSWER.findall(a)[-1], ANSWER.findall(b)[-1]
    return ANSWER.findall(user)[-1], None


def verdict(**fields) -> ScriptedReply:
    return ScriptedReply(content=json.dumps({**fields, "explanation": "理由"}, ensure_ascii=False))


def correct_judge(body: dict) -> ScriptedReply:
    """Grades as a good judge would: it recognises the known-good answer."""
    a, b = _answers(body)
    if b is None:
        return verdict(score=9 if a in GOOD else 2)
    return verdict(winner="A" if a in GOOD else "B")


def longer_judge(body: dict) -> ScriptedReply:
    """Always prefers the longer answer; grades by length."""
    a, b = _answers(body)
    if b is None:
        return verdict(score=min(10, 1 + len(a) // 25))
    return verdict(winner="A" if len(a) > len(b) else "B" if len(b) > len(a) else "tie")


def six_judge(body: dict) -> ScriptedReply:
    """What a grammar-forced junk judge does: 6 for everything, a tie for every pair."""
    _, b = _answers(body)
    return verdict(score=6) if b is None else verdict(winner="tie")


# -- the built-in set -----------------------------------------------------------------------


def test_the_builtin_set_is_japanese_first_and_covers_every_flaw():
    assert len(BUILTIN) == 24 and len({i.id for i in BUILTIN}) == 24
    langs = [i.lang for i in BUILTIN]
    assert langs.count("ja") == 16 and langs[:16] == ["ja"] * 16
    assert {i.flaw for i in BUILTIN} == set(C.FLAWS)
    assert all(i.source == C.BUILTIN_SET for i in BUILTIN)
    # Length does not give the answer away (docs/judge.md): the good answer is the longer
    # one in only 9 of the 24 items.
    assert sum(len(i.good) > len(i.bad) for i in BUILTIN) == 9


def test_every_pairwise_prompt_fits_a_4096_token_judge_with_room_for_its_verdict():
    # A byte-level BPE tokenizer (SmolLM2's) never makes more tokens than UTF-8 bytes, so the
    # byte count bounds the token count; chat markers add a few tokens a message.
    for item in BUILTIN:
        for kind, position in C.POSITIONS:
            messages, _ = C.task_messages(kind, item, position)
            size = sum(len(m["content"].encode("utf-8")) for m in messages)
            assert size < 3000, (item.id, kind, size)
            assert size + 32 + 512 <= 4096


def test_sampling_per_flaw_takes_japanese_items_first_and_is_fixed_by_the_seed():
    one = C.sample_per_flaw(BUILTIN, 1, seed=0)
    assert len(one) == len(C.FLAWS) and {i.flaw for i in one} == set(C.FLAWS)
    assert all(i.lang == "ja" for i in one)
    assert [i.id for i in one] == [i.id for i in C.sample_per_flaw(BUILTIN, 1, seed=0)]
    three = C.sample_per_flaw(BUILTIN, 3, seed=1)
    # broken_code, truncated and wrong_reasoning have two Japanese items: the third is English
    assert sorted(i.flaw for i in three if i.lang == "en") == [
        "broken_code", "truncated", "wrong_reasoning"]
    assert len(three) == 18


def test_the_judge_tasks_use_the_rounds_own_prompts():
    item = BUILTIN[0]
    tasks = C.calibration_tasks([item])
    assert [(k, p) for k, _, p in tasks] == list(C.POSITIONS)
    messages, schema = C.task_messages("pairwise", item, "bad_first")
    assert schema == J.PAIR_SCHEMA
    assert messages == J.pair_prompt(turns=[item.question], answers_a=[item.bad],
                                     answers_b=[item.good], lang="ja", category=item.category,
                                     rubric=item.rubric, reference=item.reference)
    messages, schema = C.task_messages("single", item, "good")
    assert schema == J.SINGLE_SCHEMA and J.neutralise(item.good) in messages[1]["content"]


# -- loading a user's set -------------------------------------------------------------------

GOOD_LINE = {"id": "x-1", "lang": "ja", "category": "knowledge", "flaw": "wrong_fact",
             "question": "日本の首都は？", "good": "東京です。", "bad": "大阪です。"}


@pytest.mark.parametrize("lines, message", [
    (['{"id": "x-1",'], "line 1: not valid JSON"),
    ([{**GOOD_LINE, "godo": "x"}], "line 1: unknown field 'godo'; did you mean 'good'?"),
    ([{k: v for k, v in GOOD_LINE.items() if k != "bad"}], "line 1: missing field 'bad'"),
    ([GOOD_LINE, {**GOOD_LINE, "id": "x-2", "flaw": "typo"}],
     "line 2: flaw 'typo': use one of wrong_fact, wrong_language"),
    ([{**GOOD_LINE, "lang": "fr"}], "line 1: lang 'fr': use one of ja, en"),
    ([{**GOOD_LINE, "category": "cutoff"}], "line 1: category 'cutoff': use one of"),
    ([{**GOOD_LINE, "bad": "東京です。"}], "line 1: the good and the bad answer are the same"),
    ([{**GOOD_LINE, "good": 3}], "line 1: field 'good' must be a string"),
    ([{**GOOD_LINE, "question": " "}], "line 1: field 'question' is empty"),
    ([GOOD_LINE, "", GOOD_LINE], "line 3: id 'x-1' is used twice (first on line 1)"),
    (["[1, 2]"], "line 1: expected a JSON object, got list"),
    ([""], "no calibration items"),
])
def test_a_bad_calibration_set_is_one_line_naming_the_file_and_line(tmp_path, lines, message):
    path = tmp_path / "mine.jsonl"
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x, ensure_ascii=False)
                              for x in lines), encoding="utf-8")
    with pytest.raises(KurabeError) as err:
        C.load_calibration_set(str(path))
    text = str(err.value)
    assert text.startswith(f"{path}: ") and message in text and "\n" not in text


def test_unreadable_sets_are_named(tmp_path):
    (tmp_path / "latin1.jsonl").write_bytes("é".encode("latin-1"))
    for spec, message in ((str(tmp_path / "latin1.jsonl"), "not UTF-8"),
                          (str(tmp_path / "gone.jsonl"), "cannot read calibration set"),
                          (str(tmp_path), "a folder, not a calibration set"),
                          ("builtin:nope", "unknown calibration set 'builtin:nope'")):
        with pytest.raises(KurabeError, match=message):
            C.load_calibration_set(spec)


def test_a_users_set_loads_with_its_optional_fields(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text(json.dumps({**GOOD_LINE, "reference": "東京", "note": "大阪は首都でない"},
                               ensure_ascii=False) + "\n\n", encoding="utf-8")
    (item,) = C.load_calibration_set(str(path))
    assert (item.reference, item.note, item.source) == ("東京", "大阪は首都でない", str(path))


# -- statistics -----------------------------------------------------------------------------


def test_accuracy_has_a_wilson_interval():
    acc = Accuracy.of(18, 24)
    assert acc.rate == 0.75 and acc.ci_low == pytest.approx(0.551, abs=0.001)
    assert acc.ci_high == pytest.approx(0.880, abs=0.001)
    assert acc.text() == "75% [55–88%] (18/24)"
    assert Accuracy.of(0, 0).rate is None and Accuracy.of(0, 0).text() == "–"
    assert Accuracy.of(6, 6).ci_high == 1.0 and Accuracy.of(6, 6).ci_low < 1.0


def test_unscored_and_failed_verdicts_are_not_correct_and_counted_apart():
    items = BUILTIN[:3]

    def row(item, kind, position, status="scored", **kw):
        return CalibrationGradeRow(judge="j", item_id=item.id, kind=kind, position=position,
                                   status=status, **kw)

    rows = []
    # item 0: correct in both; item 1: an unscored single grade and a flip; item 2: errors
    rows += [row(items[0], "single", "good", score=8.0), row(items[0], "single", "bad", score=3.0),
             row(items[0], "pairwise", "good_first", verdict="A"),
             row(items[0], "pairwise", "bad_first", verdict="B")]
    rows += [row(items[1], "single", "good", status="unscored"),
             row(items[1], "single", "bad", score=3.0),
             row(items[1], "pairwise", "good_first", verdict="A"),
             row(items[1], "pairwise", "bad_first", verdict="A")]
    rows += [row(items[2], "single", "good", status="error", error_kind="timeout"),
             row(items[2], "pairwise", "good_first", verdict="tie")]
    c = analyse_calibration(rows, items, judge="j", threshold=0.75)
    assert c is not None
    assert c.overall.single.correct == 1 and c.overall.pairwise.correct == 1
    assert c.overall.single_states == {"correct": 1, "tie": 0, "wrong": 0, "unscored": 1,
                                       "error": 1}
    assert c.overall.pairwise_states == {"correct": 1, "wrong": 0, "tie": 0, "flip": 1,
                                         "unscored": 0, "error": 1}
    assert c.requests == {"scored": 8, "unscored": 1, "error": 1} and c.missing == 2
    assert not c.complete and not c.passes
    assert "failed or were not sent" in c.sentence()
    # a later verdict of the same request (a resume) replaces the error
    rows.append(row(items[2], "single", "good", score=9.0))
    again = analyse_calibration(rows, items, judge="j", threshold=0.75)
    assert again is not None and again.requests.get("error") is None
    assert analyse_calibration(rows, items, judge="other", threshold=0.75) is None


# -- whole calibrations, scripted judges ----------------------------------------------------


def calibrate(tmp_path, script, judge, name: str, **kw):
    return api.calibrate_judge(f"{name}={script(judge)}", out=tmp_path / name, **kw)


def test_three_judges_get_clearly_different_calibrations(tmp_path, script):
    good = calibrate(tmp_path, script, correct_judge, "correct")
    longer = calibrate(tmp_path, script, longer_judge, "longer")
    six = calibrate(tmp_path, script, six_judge, "six")
    for result in (good, longer, six):
        assert result.complete and result.calibration is not None
        assert result.calibration.n_items == 24 and result.calibration.threshold == 0.75
    g, lo, s = good.calibration, longer.calibration, six.calibration
    assert g is not None and lo is not None and s is not None

    assert g.passes and g.overall.pairwise.rate == 1.0 and g.overall.single.rate == 1.0
    assert g.patterns == [] and g.unscored_rate == 0.0
    assert "The judge correct passes its calibration (pairwise accuracy 100% [86–100%] " \
           "against a threshold of 75%)" in g.sentence()
    assert all(grp.pairwise.rate == 1.0 for grp in g.by_flaw.values())

    assert not lo.passes and lo.overall.pairwise.rate == pytest.approx(9 / 24)
    assert [p.code for p in lo.patterns] == ["prefers_longer"]
    assert "prefers the longer answer (the longer one won 24 of 24 decided pairs)" \
        in lo.patterns[0].text
    assert lo.by_flaw["truncated"].pairwise.rate == 0.5  # two of four truncated are longer

    assert not s.passes and s.overall.pairwise.rate == 0 and s.overall.single.rate == 0
    assert s.overall.single_states["tie"] == 24 and s.overall.pairwise_states["tie"] == 24
    assert [p.code for p in s.patterns] == ["same_grade", "always_tie"]
    assert s.patterns[0].text.startswith("gives every answer the same grade (6, 48 grades)")
    assert "fails its calibration (pairwise accuracy 0% [0–14%]" in s.sentence()

    # every verdict is stored with its raw output, in its own folder
    with Store.open(tmp_path / "six") as store:
        rows = store.calibration_grades("six")
        snap = store.snapshot()
    assert len(rows) == 96 and {r.raw_output for r in rows if r.kind == "single"} == {
        json.dumps({"score": 6, "explanation": "理由"}, ensure_ascii=False)}
    assert snap is not None and len(snap.calibration_items) == 24 and snap.prompts == []
    summary = six.analysis.summary_json()
    assert summary["calibration"]["passes"] is False
    assert "judge_failed_calibration" in {w["code"] for w in summary["warnings"]}
    assert six.to_dict()["calibration"]["overall"]["pairwise"]["correct"] == 0


def test_the_calibration_only_report_says_plainly_whether_the_judge_passes(tmp_path, script):
    result = calibrate(tmp_path, script, six_judge, "six", per_flaw=1)
    md = (tmp_path / "six" / "report.md").read_text(encoding="utf-8")
    html = (tmp_path / "six" / "report.html").read_text(encoding="utf-8")
    assert md.startswith("# kurabe judge calibration: six")
    assert "| **all** | 6 | 0% \\[0–39%\\] (0/6)" not in md  # figures are not escaped
    assert "| **all** | 6 | 0% [0–39%] (0/6) | 0% [0–39%] (0/6) | 0 / 0 | 0 / 0 |" in md
    assert "**The judge six fails its calibration" in md
    assert "- ⚠ The judge gives every answer the same grade" in md
    first = C.sample_per_flaw(BUILTIN, 1)[0]
    assert f"| {first.id} | ja | wrong_fact | 6 / 6 | tie / tie | tie | tie |" in md
    assert "Speed" not in md and "Headline" not in md
    assert 'id="calibration-table"' in html and "fails its calibration" in html
    assert "script-src &#39;none&#39;" in html and "<script" not in html
    assert result.calibration is not None and result.calibration.n_items == 6
    # re-rendered from the store alone, the same report
    api.report(tmp_path / "six")
    assert (tmp_path / "six" / "report.md").read_text(encoding="utf-8") == md


def test_a_resume_sends_only_the_missing_calibration_requests(tmp_path, script):
    calls: list[str] = []
    fail = {"on": {2, 5}}

    def flaky(body):
        n = len(calls)
        calls.append(last_user_text(body))
        if n in fail["on"]:
            return ScriptedReply(http_status=500, error_body="judge crashed")
        return correct_judge(body)

    result = api.calibrate_judge(f"j={script(flaky)}", out=tmp_path / "cal", per_flaw=1)
    assert not result.complete and result.analysis.run.status == "incomplete"
    assert [(f["phase"], f["error_kind"], f["count"]) for f in result.analysis.failures] == [
        ("calibration", "http_5xx", 2)]
    assert result.calibration is not None and not result.calibration.complete
    failed = [calls[2], calls[5]]
    assert api.pending_work(tmp_path / "cal")["phases"] == [
        {"phase": "calibration", "pending": 2, "total": None, "unit": "grades"}]
    fail["on"] = set()
    sent = len(calls)
    analysis = api.resume_shootout(tmp_path / "cal")
    assert calls[sent:] == failed  # exactly the two that failed, nothing else
    assert analysis.complete and analysis.calibration is not None
    assert analysis.calibration.passes and analysis.calibration.complete


# -- inside a shootout ----------------------------------------------------------------------

SUITE = [{"id": "k1", "category": "knowledge", "lang": "ja", "turns": ["梅雨の仕組みは？"],
          "reference": "前線"}]


def shootout(tmp_path, script, judge_fn, **quality):
    (tmp_path / "suite.jsonl").write_text(json.dumps(SUITE[0], ensure_ascii=False) + "\n",
                                          encoding="utf-8")
    answer = script(ScriptedReply(content="梅雨前線が日本の上にとどまるためです。"))
    return parse_config({
        "run": {"name": "q", "repeats": 1, "warmup": 0, "max_tokens": 16},
        "prompts": [{"id": "p1", "text": "こんにちは"}],
        "models": [{"name": "a", "source": answer}, {"name": "b", "source": answer}],
        "judges": [{"name": "judge", "source": script(judge_fn)}],
        "quality": {"suites": ["suite.jsonl"], "judge": "judge", **quality}},
        "test", base_dir=tmp_path)


def test_a_round_calibrates_its_judge_first_and_warns_beside_every_grade(tmp_path, script):
    seen: list[str] = []

    def six_then_grades(body):
        seen.append(last_user_text(body))
        return six_judge(body)

    cfg = shootout(tmp_path, script, six_then_grades, calibration_per_flaw=1)
    analysis = api.run_shootout(cfg, tmp_path / "run")
    assert analysis.complete
    # the judge saw the 6 calibration items (4 requests each) before the round's answers
    calibration = [text for text in seen if "梅雨の仕組み" not in text]
    assert len(calibration) == 24 and seen[:24] == calibration
    c = analysis.calibration
    assert c is not None and not c.passes and c.n_items == 6
    assert analysis.judge_caution == FAILED_CAUTION
    codes = {w.code for w in analysis.speed.warnings}
    assert "judge_failed_calibration" in codes
    md = (tmp_path / "run" / "report.md").read_text(encoding="utf-8")
    reliability = md.index("### The judge's reliability")
    calibration = md.index("#### Calibration")
    assert reliability < calibration < md.index("### Answers and language")
    assert md.count(f"> {FAILED_CAUTION}") == 2  # beside the scores and the pairwise table
    assert "**The judge judge fails its calibration (pairwise accuracy 0%" in md
    assert "judge\\_failed\\_calibration" in md or "judge_failed_calibration" in md
    html = (tmp_path / "run" / "report.html").read_text(encoding="utf-8")
    assert html.count('class="warning judge-caution"') == 2 and 'id="calibration-table"' in html
    with Store.open(tmp_path / "run") as store:
        assert len(store.calibration_grades("judge")) == 24
        assert [i["id"] for i in store.snapshot().calibration_items] == [
            i.id for i in C.sample_per_flaw(BUILTIN, 1)]


def test_a_judge_that_passes_gets_no_warning_and_a_rejudge_calibrates_the_new_judge(
        tmp_path, script):
    cfg = shootout(tmp_path, script, correct_judge, calibration_per_flaw=1)
    analysis = api.run_shootout(cfg, tmp_path / "run")
    assert analysis.calibration is not None and analysis.calibration.passes
    assert analysis.judge_caution is None
    assert "judge_failed_calibration" not in {w.code for w in analysis.speed.warnings}
    md = (tmp_path / "run" / "report.md").read_text(encoding="utf-8")
    assert "passes its calibration" in md and "⚠ judge" not in md
    # another judge: calibrated on the same items (the snapshot's), then grading
    analysis = api.rejudge(tmp_path / "run", f"other={script(longer_judge)}")
    assert analysis.calibration is not None and analysis.calibration.judge == "other"
    assert not analysis.calibration.passes and analysis.calibration.n_items == 6
    assert analysis.judge_caution == FAILED_CAUTION


def test_a_judge_not_calibrated_is_said_beside_its_grades(tmp_path, script):
    cfg = shootout(tmp_path, script, correct_judge, calibrate=False)
    analysis = api.run_shootout(cfg, tmp_path / "run")
    assert analysis.calibration is None and analysis.judge_caution == NOT_CALIBRATED_CAUTION
    assert "judge_not_calibrated" in {w.code for w in analysis.speed.warnings}
    md = (tmp_path / "run" / "report.md").read_text(encoding="utf-8")
    assert "The judge was not calibrated" in md and f"> {NOT_CALIBRATED_CAUTION}" in md
    with Store.open(tmp_path / "run") as store:
        assert store.calibration_grades() == [] and store.snapshot().calibration_items == []


def test_the_config_names_a_relative_calibration_set_from_its_own_folder(tmp_path, script):
    (tmp_path / "mine.jsonl").write_text(json.dumps(GOOD_LINE, ensure_ascii=False),
                                         encoding="utf-8")
    cfg = shootout(tmp_path, script, correct_judge, calibration_set="mine.jsonl")
    assert cfg.quality is not None and cfg.quality.calibration_set == str(tmp_path / "mine.jsonl")
    analysis = api.run_shootout(cfg, tmp_path / "run")
    assert analysis.calibration is not None and analysis.calibration.n_items == 1


# -- the command line -----------------------------------------------------------------------


def test_cli_judge_calibrate_prints_the_table_and_the_verdict(tmp_path, script):
    src = script(longer_judge)
    result = CliRunner().invoke(app, ["judge", "--calibrate", "--judge", f"lj={src}",
                                      "--out", str(tmp_path / "cal")])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "wrong_fact" in out and "language ja" in out and "38% [21–57%] (9/24)" in out
    assert "The judge lj fails its calibration (pairwise accuracy 38% [21–57%] against a " \
           "threshold of 75%)." in out
    assert "⚠ the judge prefers the longer answer" in out
    assert f"report: {tmp_path / 'cal' / 'report.md'}" in out

    result = CliRunner().invoke(app, ["judge", "--calibrate", "--judge", f"ok={script(correct_judge)}",
                                      "--out", str(tmp_path / "cal2"), "--per-flaw", "2",
                                      "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["calibration"]["passes"] is True and data["calibration"]["n_items"] == 12
    assert data["complete"] is True and data["run_dir"] == str(tmp_path / "cal2")


@pytest.mark.parametrize("args, message", [
    (["judge"], "missing RUN_DIR"),
    (["judge", "--calibrate"], "--calibrate needs --judge NAME=SPEC"),
    (["judge", "somewhere", "--calibrate", "--judge", "j=builtin:smollm2-135m"],
     "--calibrate runs in a new folder"),
    (["judge", "somewhere", "--out", "x"], "--out applies only with --calibrate"),
    (["judge", "--calibrate", "--judge", "j=builtin:smollm2-135m",
      "--calibration-set", "nowhere.jsonl"], "nowhere.jsonl: cannot read calibration set"),
])
def test_cli_judge_usage_errors_are_one_line_with_exit_code_2(tmp_path, args, message,
                                                              monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "kurabe-runs").exists()


# -- the real built-in judge ----------------------------------------------------------------


@pytest.mark.engine
def test_the_builtin_smollm2_judge_is_calibrated_end_to_end(tmp_path):
    """Two short English items against the real SmolLM2 on llama.cpp: the structure (rows,
    raw outputs, report), not the quality of a 135M judge."""
    path = tmp_path / "two.jsonl"
    path.write_text("\n".join(
        json.dumps({k: v for k, v in i.to_dict().items() if k != "source" and v is not None},
                   ensure_ascii=False)
        for i in BUILTIN if i.id in ("en-fact-01", "en-trunc-02")), encoding="utf-8")
    result = api.calibrate_judge("smol=builtin:smollm2-135m", calibration_set=str(path),
                                 out=tmp_path / "cal", judge_max_tokens=24, ctx=2048)
    assert result.complete, result.analysis.failures
    c = result.calibration
    assert c is not None and c.n_items == 2 and sum(c.requests.values()) == 8
    with Store.open(tmp_path / "cal") as store:
        rows = store.calibration_grades("smol")
        models = store.models()
    assert sorted((r.item_id, r.kind, r.position) for r in rows) == sorted(
        (i, k, p) for i in ("en-fact-01", "en-trunc-02") for k, p in C.POSITIONS)
    assert all(r.status in ("scored", "unscored") and r.raw_output for r in rows)
    assert models[0].engine_kind and "llama.cpp" in models[0].engine_kind
    md = (tmp_path / "cal" / "report.md").read_text(encoding="utf-8")
    assert "#### Calibration" in md and ("passes its calibration" in md
                                         or "fails its calibration" in md)
    assert "| en-fact-01 | en | wrong_fact |" in md
