"""Reasoning budget sweep: per model, category and setting, what thinking buys and costs.

Where the sweep's answers were graded by a judge (``kurabe.phases.judge_probes``), each
cell also carries the median grade with its interval, and the recommendation weighs it:
the cheapest setting that answers about as often as the best one and whose quality is not
clearly below the best setting's (docs/metrics.md, "Reasoning budget sweep").
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from statistics import median

from kurabe.analysis.stats import Estimate, median_ci
from kurabe.store import RequestRow
from kurabe.thinking import JUDGED_OUTCOMES

ANSWER_RATE_TOLERANCE = 0.05  # settings this close to the best answer rate count as "as good"
MIN_SPEEDUP = 1.2  # below this, latency differences between settings are not worth a claim
# Without intervals to compare (grades of a single prompt), a setting whose median grade is
# this many points below the best setting's counts as clearly worse.
QUALITY_MARGIN = 2.0

# (model, prompt id, repeat, setting) -> the judge's grade of that sweep answer
SweepScores = dict[tuple[str, str, int, str], float]


@dataclass
class SweepCell:
    model: str
    category: str
    setting: str
    n: int
    answered: int  # answers, with or without thinking (kurabe.thinking.JUDGED_OUTCOMES)
    thinking_exhausted: int
    answer_rate: float
    output_tokens: float | None
    reasoning_tokens: float | None
    seconds: float | None  # median end-to-end latency
    # The judge's median grade of the cell's answers (prompts as clusters), None: not judged.
    quality: Estimate | None = None


@dataclass
class Recommendation:
    model: str
    category: str
    setting: str
    sentence: str


def _med(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(median(present)) if present else None


def _seconds(cell: SweepCell) -> float:
    assert cell.seconds is not None  # only cells with a latency are compared
    return cell.seconds


def _label(setting: str) -> str:
    return f"budget {setting}" if setting.isdigit() else setting


def clearly_below(cell: SweepCell, best: SweepCell) -> bool:
    """The cell's quality is clearly below the best cell's: its interval lies wholly below
    the best one's, or, where either has no interval, its median is at least
    QUALITY_MARGIN points lower. A cell with no grade is never clearly below."""
    q, b = cell.quality, best.quality
    if q is None or b is None or q.median is None or b.median is None:
        return False
    if q.ci_high is not None and b.ci_low is not None:
        return q.ci_high < b.ci_low
    return b.median - q.median >= QUALITY_MARGIN


def _median_grade(cell: SweepCell) -> float:
    return cell.quality.median if cell.quality and cell.quality.median is not None else 0.0


def _quality_text(cell: SweepCell) -> str:
    assert cell.quality is not None and cell.quality.median is not None
    return f"{cell.quality.median:g}"


def analyse_sweep(rows: list[RequestRow], categories: dict[str, str],
                  settings_order: list[str], scores: SweepScores | None = None
                  ) -> tuple[list[SweepCell], list[Recommendation]]:
    """``rows``: successful sweep requests; ``categories``: prompt id -> category;
    ``scores``: the judge's scored grades of the sweep answers (None: not judged)."""
    cells: list[SweepCell] = []
    keys = sorted({(r.model, categories.get(r.prompt_id, "general")) for r in rows},
                  key=lambda k: (k[0], k[1]))
    order = {s: i for i, s in enumerate(settings_order)}
    for model, category in keys:
        sel = [r for r in rows if r.model == model and categories.get(r.prompt_id) == category]
        for setting in sorted({r.setting for r in sel}, key=lambda s: order.get(s, 99)):
            group = [r for r in sel if r.setting == setting]
            outcomes = [r.metrics.get("outcome") for r in group]
            answered = sum(1 for o in outcomes if o in JUDGED_OUTCOMES)
            cells.append(SweepCell(
                model, category, setting, len(group), answered,
                outcomes.count("thinking_exhausted"), answered / len(group),
                _med(r.metrics.get("output_tokens") for r in group),
                _med(r.metrics.get("reasoning_tokens") for r in group),
                _med(r.metrics.get("e2e_s") for r in group),
                _quality(group, scores)))
    recs: list[Recommendation] = []
    for model, category in keys:
        model_cells = [c for c in cells if c.model == model and c.category == category]
        best_rate = max(c.answer_rate for c in model_cells)
        judged = [c for c in model_cells if c.quality is not None and c.quality.median is not None]
        best_quality = max(judged, key=_median_grade, default=None)
        rate_ok = [c for c in model_cells if c.answer_rate >= best_rate - ANSWER_RATE_TOLERANCE
                   and c.seconds is not None]
        good = [c for c in rate_ok
                if best_quality is None or not clearly_below(c, best_quality)]
        if not good:
            continue
        if all(not c.reasoning_tokens and not c.thinking_exhausted for c in model_cells):
            recs.append(Recommendation(model, category, "", (
                f"{model} — {category}: the model did not reason at any setting, so the "
                "setting makes no difference")))
            continue
        pick = min(good, key=_seconds)
        slowest = max((c for c in model_cells if c.seconds is not None), key=_seconds)
        speedup = (_seconds(slowest) / pick.seconds) if pick.seconds else None
        what = "turn thinking off" if pick.setting == "off" else f"reasoning {_label(pick.setting)}"
        rate = f"answer rate {pick.answer_rate:.0%}"
        # cheaper settings that answer as often but were left out for their grades
        worse = [c for c in rate_ok if c not in good and c.seconds is not None
                 and pick.seconds is not None and c.seconds < pick.seconds]
        quality = ""
        if pick.quality is not None and pick.quality.median is not None:
            quality = f", quality {_quality_text(pick)}"
            if best_quality is not None and best_quality is not pick:
                quality += f" vs {_quality_text(best_quality)} at {_label(best_quality.setting)}"
        if pick is slowest or speedup is None or speedup < MIN_SPEEDUP:
            if worse:
                sentence = (f"{category}: {what} ({rate}{quality}; cheaper settings score "
                            "clearly lower)")
            elif len(good) == 1 and len(model_cells) > 1:
                sentence = f"{category}: {what} ({rate}{quality}; cheaper settings answer " \
                    "less often)"
            else:
                sentence = f"{category}: {what} ({rate}{quality})"
        else:
            same = "same answer rate" if abs(pick.answer_rate - slowest.answer_rate) < 1e-9 \
                else f"{rate} vs {slowest.answer_rate:.0%}"
            lower = "; cheaper settings score clearly lower" if worse else ""
            sentence = (f"{category}: {what} ({same}{quality}, {speedup:.1f}× faster than "
                        f"{_label(slowest.setting)}{lower})")
        recs.append(Recommendation(model, category, pick.setting, f"{model} — {sentence}"))
    return cells, recs


def _quality(group: list[RequestRow], scores: SweepScores | None) -> Estimate | None:
    """The median grade of a cell's answers, prompts as clusters (None: not judged)."""
    if scores is None:
        return None
    graded = [(r.prompt_id, scores[(r.model, r.prompt_id, r.repeat, r.setting)]) for r in group
              if (r.model, r.prompt_id, r.repeat, r.setting) in scores]
    return median_ci([v for _, v in graded], [k for k, _ in graded])

