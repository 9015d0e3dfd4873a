"""How well the judge tells a known-good answer from a known-bad one (docs/judge.md).

Per item: the single grades are correct when the good answer scores higher than the bad one;
the pairwise verdicts are correct when both orders name the good answer. Unscored verdicts
and failed requests make their item not correct and are counted apart. Accuracies are
proportions with a 95% Wilson interval, overall, per kind of flaw and per language; the judge
passes when its pairwise accuracy (the point estimate) reaches the threshold.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kurabe.analysis.stats import proportion_ci
from kurabe.evals.judge import combine_orders
from kurabe.records import CalibrationGradeRow, CalibrationItem

if TYPE_CHECKING:
    from kurabe.analysis.run import RunAnalysis

# The per-grade warning of a judge that failed its calibration, or was not calibrated.
FAILED_CAUTION = "⚠ judge failed calibration: treat these grades as unreliable"
NOT_CALIBRATED_CAUTION = ("⚠ judge not calibrated: nothing shows it can tell a right answer "
                          "from a wrong one")

# Degenerate patterns: the share of decided pairs won by the longer answer, or of pairwise
# verdicts naming one position, at or above which the pattern is named, and the fewest
# verdicts behind it.
PATTERN_SHARE = 0.9
PATTERN_MIN = 4

SINGLE_STATES = ("correct", "tie", "wrong", "unscored", "error")
PAIR_STATES = ("correct", "wrong", "tie", "flip", "unscored", "error")


@dataclass(frozen=True)
class Accuracy:
    """``correct`` of ``n`` items, with a 95% Wilson interval (None when n is 0)."""

    correct: int
    n: int
    rate: float | None
    ci_low: float | None
    ci_high: float | None

    @classmethod
    def of(cls, correct: int, n: int) -> Accuracy:
        if n == 0:
            return cls(0, 0, None, None, None)
        low, high = proportion_ci(correct, n)
        return cls(correct, n, correct / n, low, high)

    def text(self) -> str:
        """'75% [55–88%] (18/24)'."""
        if self.rate is None:
            return "–"
        assert self.ci_low is not None and self.ci_high is not None
        return (f"{100 * self.rate:.0f}% [{100 * self.ci_low:.0f}–{100 * self.ci_high:.0f}%] "
                f"({self.correct}/{self.n})")


@dataclass
class CalibrationGroup:
    """The items of one kind of flaw, one language, or all of them."""

    n: int
    single: Accuracy
    pairwise: Accuracy
    single_states: dict[str, int]  # SINGLE_STATES -> items
    pairwise_states: dict[str, int]  # PAIR_STATES -> items


@dataclass
class Pattern:
    code: str  # same_grade | prefers_longer | same_position | always_tie
    text: str


@dataclass
class CalibrationAnalysis:
    judge: str
    calibration_set: str
    threshold: float
    n_items: int
    overall: CalibrationGroup
    by_flaw: dict[str, CalibrationGroup]
    by_lang: dict[str, CalibrationGroup]
    requests: dict[str, int]  # status -> requests (latest verdict per request)
    missing: int  # requests never answered (the calibration stopped before them)
    patterns: list[Pattern] = field(default_factory=list)
    # per item: {id, lang, flaw, single, pairwise, good_score, bad_score, verdicts}
    items: list[dict[str, Any]] = field(default_factory=list)

    @property
    def unscored_rate(self) -> float | None:
        judged = self.requests.get("scored", 0) + self.requests.get("unscored", 0)
        return self.requests.get("unscored", 0) / judged if judged else None

    @property
    def complete(self) -> bool:
        """Every request of the calibration has a verdict (none failed or is missing)."""
        return not self.missing and not self.requests.get("error")

    @property
    def passes(self) -> bool:
        rate = self.overall.pairwise.rate
        return rate is not None and rate >= self.threshold

    def sentence(self) -> str:
        """'The judge passes its calibration (pairwise accuracy 92% [74–98%] against a
        threshold of 75%).'"""
        acc = self.overall.pairwise
        verdict = "passes" if self.passes else "fails"
        if acc.rate is None or acc.ci_low is None or acc.ci_high is None:
            figure = "no pairwise verdict"
        else:
            figure = (f"pairwise accuracy {100 * acc.rate:.0f}% "
                      f"[{100 * acc.ci_low:.0f}–{100 * acc.ci_high:.0f}%]")
        tail = "" if self.complete else (
            f"; {self.requests.get('error', 0) + self.missing} of its requests failed or were "
            "not sent, and count as not correct")
        return (f"The judge {self.judge} {verdict} its calibration ({figure} against a "
                f"threshold of {100 * self.threshold:.0f}%{tail}).")

    @property
    def caution(self) -> str | None:
        """The warning to show beside every grade the judge gave, or None when it passed."""
        return None if self.passes else FAILED_CAUTION

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passes": self.passes, "complete": self.complete,
                "unscored_rate": self.unscored_rate, "sentence": self.sentence()}


def _latest(rows: list[CalibrationGradeRow]) -> dict[tuple[str, str, str], CalibrationGradeRow]:
    """The latest verdict per request (a resume may have retried an error)."""
    return {r.key: r for r in rows}


def _single_state(good: CalibrationGradeRow | None, bad: CalibrationGradeRow | None) -> str:
    rows = (good, bad)
    if any(r is None or r.status == "error" for r in rows):
        return "error"
    if any(r.status != "scored" for r in rows if r is not None):
        return "unscored"
    assert good is not None and bad is not None
    assert good.score is not None and bad.score is not None  # scored: has a score
    return ("correct" if good.score > bad.score else
            "tie" if good.score == bad.score else "wrong")


def _pair_state(good_first: CalibrationGradeRow | None, bad_first: CalibrationGradeRow | None
                ) -> tuple[str, str | None]:
    """(state, winner: good | bad | None)."""
    rows = (good_first, bad_first)
    if any(r is None or r.status == "error" for r in rows):
        return "error", None
    if any(r.status != "scored" for r in rows if r is not None):
        return "unscored", None
    assert good_first is not None and bad_first is not None
    winner, flipped = combine_orders(good_first.verdict, bad_first.verdict)
    if winner == "a":
        return "correct", "good"
    if winner == "b":
        return "wrong", "bad"
    return ("flip" if flipped else "tie"), None


def _verdict(row: CalibrationGradeRow | None) -> str | None:
    return row.verdict if row is not None else None


def _group(rows: list[dict[str, Any]]) -> CalibrationGroup:
    single = Counter(r["single"] for r in rows)
    pair = Counter(r["pairwise"] for r in rows)
    n = len(rows)
    return CalibrationGroup(
        n=n, single=Accuracy.of(single["correct"], n), pairwise=Accuracy.of(pair["correct"], n),
        single_states={s: single[s] for s in SINGLE_STATES},
        pairwise_states={s: pair[s] for s in PAIR_STATES})


def _patterns(per_item: list[dict[str, Any]], latest: dict[tuple[str, str, str],
              CalibrationGradeRow], by_id: dict[str, CalibrationItem]) -> list[Pattern]:
    out: list[Pattern] = []
    scores = [r.score for r in latest.values()
              if r.kind == "single" and r.status == "scored" and r.score is not None]
    if len(scores) >= 2 and len(set(scores)) == 1:
        out.append(Pattern("same_grade", f"gives every answer the same grade ({scores[0]:g}, "
                                         f"{len(scores)} grades)"))
    decided = [r for r in per_item if r["winner"] is not None
               and len(by_id[r["id"]].good) != len(by_id[r["id"]].bad)]
    longer = sum(1 for r in decided if (r["winner"] == "good") ==
                 (len(by_id[r["id"]].good) > len(by_id[r["id"]].bad)))
    if len(decided) >= PATTERN_MIN and longer >= PATTERN_SHARE * len(decided):
        out.append(Pattern("prefers_longer", f"prefers the longer answer (the longer one won "
                                             f"{longer} of {len(decided)} decided pairs)"))
    verdicts = [r.verdict for r in latest.values()
                if r.kind == "pairwise" and r.status == "scored" and r.verdict]
    letters = Counter(v for v in verdicts if v in ("A", "B"))
    if letters:
        letter, count = letters.most_common(1)[0]
        n_letters = sum(letters.values())
        if n_letters >= PATTERN_MIN and count >= PATTERN_SHARE * n_letters:
            out.append(Pattern("same_position", f"picks the same position ({letter} in {count} "
                                                f"of {n_letters} pairwise verdicts)"))
    if len(verdicts) >= PATTERN_MIN and all(v == "tie" for v in verdicts):
        out.append(Pattern("always_tie", f"calls every pair a tie ({len(verdicts)} verdicts)"))
    return out


def analyse_calibration(rows: list[CalibrationGradeRow], items: list[CalibrationItem], *,
                        judge: str, threshold: float) -> CalibrationAnalysis | None:
    """The judge's calibration from its stored verdicts; None when it has none (it was not
    calibrated, or the calibration has not started)."""
    mine = [r for r in rows if r.judge == judge]
    if not items or not mine:
        return None
    latest = _latest(mine)
    by_id = {i.id: i for i in items}
    per_item: list[dict[str, Any]] = []
    missing = 0
    for item in items:
        got = {pos: latest.get((item.id, kind, pos)) for kind, pos in (
            ("single", "good"), ("single", "bad"), ("pairwise", "good_first"),
            ("pairwise", "bad_first"))}
        missing += sum(1 for r in got.values() if r is None)
        pair, winner = _pair_state(got["good_first"], got["bad_first"])
        per_item.append({
            "id": item.id, "lang": item.lang, "flaw": item.flaw,
            "single": _single_state(got["good"], got["bad"]), "pairwise": pair,
            "winner": winner,
            "good_score": got["good"].score if got["good"] else None,
            "bad_score": got["bad"].score if got["bad"] else None,
            "verdicts": [_verdict(got["good_first"]), _verdict(got["bad_first"])]})
    known = {i.id for i in items}
    requests = Counter(r.status for r in latest.values() if r.item_id in known)
    flaws = list(dict.fromkeys(i.flaw for i in items))
    langs = list(dict.fromkeys(i.lang for i in items))
    return CalibrationAnalysis(
        judge=judge, calibration_set=items[0].source or "", threshold=threshold,
        n_items=len(items), overall=_group(per_item),
        by_flaw={f: _group([r for r in per_item if r["flaw"] == f]) for f in flaws},
        by_lang={lang: _group([r for r in per_item if r["lang"] == lang]) for lang in langs},
        requests=dict(requests), missing=missing,
        patterns=_patterns(per_item, latest, by_id), items=per_item)


@dataclass
class CalibrationResult:
    """A calibration run on its own (``kurabe.api.calibrate_judge``): its folder, the
    calibration, and the run's analysis (status, failures)."""

    run_dir: Path
    calibration: CalibrationAnalysis | None  # None: no verdict was stored
    analysis: RunAnalysis

    @property
    def complete(self) -> bool:
        return self.analysis.complete

    def to_dict(self) -> dict[str, Any]:
        return {"run_dir": str(self.run_dir), "run_status": self.analysis.run.status,
                "complete": self.complete, "failures": self.analysis.failures,
                "calibration": self.calibration.to_dict() if self.calibration else None}
