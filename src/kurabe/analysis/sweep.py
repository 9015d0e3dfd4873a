"""Reasoning budget sweep: per model, category and setting, what thinking buys and costs."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from statistics import median

from kurabe.store import RequestRow
from kurabe.thinking import JUDGED_OUTCOMES

ANSWER_RATE_TOLERANCE = 0.05  # settings this close to the best answer rate count as "as good"
MIN_SPEEDUP = 1.2  # below this, latency differences between settings are not worth a claim


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


def analyse_sweep(rows: list[RequestRow], categories: dict[str, str],
                  settings_order: list[str]) -> tuple[list[SweepCell], list[Recommendation]]:
    """``rows``: successful sweep requests; ``categories``: prompt id -> category."""
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
                _med(r.metrics.get("e2e_s") for r in group)))
    recs: list[Recommendation] = []
    for model, category in keys:
        model_cells = [c for c in cells if c.model == model and c.category == category]
        best_rate = max(c.answer_rate for c in model_cells)
        good = [c for c in model_cells if c.answer_rate >= best_rate - ANSWER_RATE_TOLERANCE
                and c.seconds is not None]
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
        if pick is slowest or speedup is None or speedup < MIN_SPEEDUP:
            sentence = f"{category}: {what} ({rate}; cheaper settings answer less often)" \
                if len(good) == 1 and len(model_cells) > 1 else f"{category}: {what} ({rate})"
        else:
            same = "same answer rate" if abs(pick.answer_rate - slowest.answer_rate) < 1e-9 \
                else f"{rate} vs {slowest.answer_rate:.0%}"
            sentence = (f"{category}: {what} ({same}, {speedup:.1f}× faster than "
                        f"{_label(slowest.setting)})")
        recs.append(Recommendation(model, category, pick.setting, f"{model} — {sentence}"))
    return cells, recs
