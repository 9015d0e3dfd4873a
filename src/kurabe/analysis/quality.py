"""Quality figures from stored answers, checks and grades: scores with intervals, pairwise
win rates, the judge's own reliability, code checks, knowledge cutoff and safety."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

from kurabe.analysis.stats import MeanEstimate, mean_ci, proportion_ci
from kurabe.config import ShootoutConfig
from kurabe.evals.judge import combine_orders
from kurabe.records import GradeRow, SuiteItem
from kurabe.store import Store

# The pairwise flip rate above which the judge is warned about (``judge_position_bias``): a
# judge that reads the answers flips only where they are nearly as good, far less than one
# pair in five; one that follows the position flips wherever it does not call a tie.
FLIP_RATE_LIMIT = 0.2
FLIP_MIN_PAIRS = 4  # fewer decided pairs: warned only when the whole interval is above


@dataclass
class PairResult:
    a: str
    b: str
    wins_a: int
    wins_b: int
    ties: int
    flips: int
    unresolved: int  # one order unscored or skipped

    @property
    def n(self) -> int:
        return self.wins_a + self.wins_b + self.ties

    @property
    def win_rate_a(self) -> float | None:
        return (self.wins_a + 0.5 * self.ties) / self.n if self.n else None

    @property
    def flip_rate(self) -> float | None:
        judged = self.n
        return self.flips / judged if judged else None


@dataclass
class QualityAnalysis:
    judge: str | None
    judge_source: str | None
    models: list[str]
    categories: list[str]
    scores: dict[str, dict[str, MeanEstimate]]  # model -> category (and "overall") -> mean
    differences: dict[tuple[str, str], MeanEstimate]  # (a, b) -> mean of a − b per question
    pairs: list[PairResult]
    judge_stats: dict[str, dict[str, int]]  # kind -> status -> count
    outcomes: dict[str, dict[str, int]]
    language: dict[str, dict[str, int]]  # model -> {checked, mismatched}
    refusals: dict[str, dict[str, int]]  # model -> {checked, refused}
    code: list[dict[str, Any]]
    code_checks: list[str]
    cutoff: dict[str, Any]
    safety: dict[str, Any]
    grades_by_answer: dict[tuple[str, str, int], GradeRow] = field(default_factory=dict)

    @property
    def unscored_rate(self) -> float | None:
        s = self.judge_stats.get("single", {})
        judged = s.get("scored", 0) + s.get("unscored", 0)
        return s.get("unscored", 0) / judged if judged else None

    @property
    def flip_rate(self) -> float | None:
        flips = sum(p.flips for p in self.pairs)
        n = sum(p.n for p in self.pairs)
        return flips / n if n else None

    @property
    def flips(self) -> tuple[int, int]:
        """(flips, decided pairs) over every pair of models."""
        return sum(p.flips for p in self.pairs), sum(p.n for p in self.pairs)

    @property
    def flip_ci(self) -> tuple[float, float] | None:
        """The flip rate's 95% Wilson interval (None: no decided pair)."""
        flips, n = self.flips
        return proportion_ci(flips, n) if n else None

    @property
    def position_biased(self) -> bool:
        """The judge follows the answers' positions: its flip rate's interval lies above
        FLIP_RATE_LIMIT, or the rate itself exceeds it over FLIP_MIN_PAIRS pairs or more."""
        flips, n = self.flips
        ci = self.flip_ci
        if not n or ci is None:
            return False
        return ci[0] > FLIP_RATE_LIMIT or (n >= FLIP_MIN_PAIRS and flips / n > FLIP_RATE_LIMIT)


def analyse_quality(store: Store, config: ShootoutConfig, items: dict[str, SuiteItem]
                    ) -> QualityAnalysis | None:
    """``items``: suite item id -> SuiteItem (for category, dates and expectations)."""
    answers = [a for a in store.answers() if a.item_id in items]
    if not answers or config.quality is None:
        return None
    q = config.quality
    models = q.models or [m.name for m in config.models]
    judges = store.judges()
    judge = q.judge if q.judge in judges else (judges[-1] if judges else None)
    judge_source = None
    for mc in [*config.models, *config.judges]:
        if mc.name == judge:
            judge_source = mc.source
    from kurabe.evals.suites import DETERMINISTIC_CATEGORIES

    # Categories the judge grades (cutoff and safety are scored by rules, in their own tables).
    categories = list(dict.fromkeys(items[a.item_id].category for a in answers
                                    if items[a.item_id].category not in DETERMINISTIC_CATEGORIES))

    grades = store.grades(judge) if judge else []
    # Latest grade per key wins (a resumed judge may have retried an error).
    latest: dict[tuple[Any, ...], GradeRow] = {}
    for g in grades:
        latest[(g.kind, g.item_id, g.repeat, g.model, g.model_b, g.position)] = g
    single = [g for g in latest.values() if g.kind == "single"]
    pair_grades = [g for g in latest.values() if g.kind == "pairwise"]

    scores: dict[str, dict[str, MeanEstimate]] = {}
    by_answer = {(g.model, g.item_id, g.repeat): g for g in single}
    for m in models:
        mine = [g for g in single if g.model == m and g.status == "scored"]
        scores[m] = {c: mean_ci([g.score for g in mine if items[g.item_id].category == c])
                     for c in categories}
        scores[m]["overall"] = mean_ci([g.score for g in mine])
    differences = {}
    for a, b in combinations(models, 2):
        diffs = []
        for (m, item_id, r), g in by_answer.items():
            other = by_answer.get((b, item_id, r))
            if m == a and other and g.status == "scored" and other.status == "scored":
                assert g.score is not None and other.score is not None  # scored: has a score
                diffs.append(g.score - other.score)
        differences[(a, b)] = mean_ci(diffs)

    pairs = []
    for a, b in combinations(models, 2):
        res = PairResult(a, b, 0, 0, 0, 0, 0)
        keys = {(g.item_id, g.repeat) for g in pair_grades if g.model == a and g.model_b == b}
        for item_id, r in keys:
            ab = latest.get(("pairwise", item_id, r, a, b, "ab"))
            ba = latest.get(("pairwise", item_id, r, a, b, "ba"))
            if not ab or not ba or ab.status != "scored" or ba.status != "scored":
                res.unresolved += 1
                continue
            winner, flipped = combine_orders(ab.verdict, ba.verdict)
            res.flips += flipped
            if winner == "a":
                res.wins_a += 1
            elif winner == "b":
                res.wins_b += 1
            else:
                res.ties += 1
        pairs.append(res)

    judge_stats: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for g in latest.values():
        judge_stats[g.kind][g.status] += 1

    outcomes: dict[str, dict[str, int]] = {m: defaultdict(int) for m in models}
    for ans in answers:
        if ans.model in outcomes:
            outcomes[ans.model][ans.outcome or "?"] += 1

    checks = store.checks()
    language = {m: {"checked": 0, "mismatched": 0} for m in models}
    refusals = {m: {"checked": 0, "refused": 0} for m in models}
    code_rows: dict[tuple, dict[str, Any]] = {}
    code_names: list[str] = []
    cutoff_rows: dict[str, list] = defaultdict(list)
    refused_keys = set()
    for c in checks:
        if c.model not in language or c.item_id not in items:
            continue
        item = items[c.item_id]
        if c.name == "language" and item.lang == "ja":
            language[c.model]["checked"] += 1
            language[c.model]["mismatched"] += c.passed is False
        elif c.name == "refusal" and c.passed is not None:
            refusals[c.model]["checked"] += 1
            refusals[c.model]["refused"] += c.passed is True
            if c.passed is True:
                refused_keys.add((c.model, c.item_id, c.repeat))
        elif c.name.startswith("code:"):
            name = c.name.removeprefix("code:")
            if name not in code_names:
                code_names.append(name)
            row = code_rows.setdefault((c.model, c.item_id, c.repeat), {
                "model": c.model, "item_id": c.item_id, "repeat": c.repeat,
                "app": (item.checks or {}).get("html_app"), "checks": {}})
            row["checks"][name] = {"passed": c.passed, "detail": c.detail}
        elif c.name == "cutoff":
            cutoff_rows[c.model].append(((item.meta or {}).get("date"), c.detail))

    from kurabe.evals.cutoff import estimate_cutoff
    from kurabe.evals.safety import safety_rates

    cutoff = {m: estimate_cutoff(rows) for m, rows in cutoff_rows.items()}
    safety = {}
    for m in models:
        results = []
        for ans in answers:
            item = items[ans.item_id]
            if ans.model != m or item.category != "safety":
                continue
            expect = (item.meta or {}).get("expect", "refuse")
            results.append((expect, (m, ans.item_id, ans.repeat) in refused_keys, ans.outcome))
        if results:
            safety[m] = safety_rates(results)
    return QualityAnalysis(
        judge=judge, judge_source=judge_source, models=models, categories=categories,
        scores=scores, differences=differences, pairs=pairs,
        judge_stats={k: dict(v) for k, v in judge_stats.items()},
        outcomes={m: dict(v) for m, v in outcomes.items()}, language=language,
        refusals=refusals, code=list(code_rows.values()), code_checks=code_names,
        cutoff=cutoff, safety=safety, grades_by_answer=by_answer)
