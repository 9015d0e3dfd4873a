"""An ablation: models that differ by one change at a time, and each change's share of the gap.

A chain ``[m0, m1, ..., mk]`` goes from one model to another through variants that each make
one more change (twins written with ``kurabe twin --set``, usually). Each step's ratio
``r_i = m_i / m_(i-1)`` is the paired ratio kurabe computes for any two models of a run
(geometric mean of per-request ratios on the same prompt and repeat, a 95% t interval with
prompts as clusters). Ratios multiply along the chain, so their logarithms add: a step's
share of the whole change is ``ln r_i / sum_j ln r_j``. The direct ratio ``mk / m0`` is given
beside the product of the steps: they differ only by the pairs a step could not match.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from kurabe.analysis.speed import SpeedAnalysis
from kurabe.analysis.stats import Ratio


@dataclass
class AblationStep:
    before: str
    after: str
    ratio: Ratio  # after / before
    share: float | None  # of the sum of the steps' log ratios; None when it cannot be split

    @property
    def clear(self) -> bool:
        """The step's interval excludes 1.0 (with enough prompts to decide)."""
        return self.ratio.decided

    def to_dict(self) -> dict[str, Any]:
        return {"before": self.before, "after": self.after, **self.ratio.to_dict(),
                "share": self.share, "clear": self.clear}


@dataclass
class AblationAnalysis:
    chain: list[str]
    metric: str
    steps: list[AblationStep]
    total: Ratio  # last / first, paired directly
    product: float | None  # the product of the steps' ratios
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"chain": self.chain, "metric": self.metric,
                "steps": [s.to_dict() for s in self.steps], "total": self.total.to_dict(),
                "product": self.product, "notes": self.notes}


def _inverse(r: Ratio) -> Ratio:
    def inv(x: float | None) -> float | None:
        return None if x is None or x == 0 else 1.0 / x

    return Ratio(inv(r.ratio), inv(r.ci_high), inv(r.ci_low), r.n, r.clusters, r.no_verdict)


def pair_ratio(speed: SpeedAnalysis, a: str, b: str, metric: str) -> Ratio:
    """a / b for ``metric``, from the run's own comparisons (either order)."""
    for c in speed.comparisons:
        if c.metric != metric:
            continue
        if (c.a, c.b) == (a, b):
            return c.ratio
        if (c.a, c.b) == (b, a):
            return _inverse(c.ratio)
    return Ratio(None, None, None, 0, 0, "not compared in this run")


def analyse_ablation(speed: SpeedAnalysis, chain: list[str], metric: str
                     ) -> AblationAnalysis:
    ratios = [pair_ratio(speed, after, before, metric)
              for before, after in zip(chain, chain[1:], strict=False)]
    logs = [math.log(r.ratio) if r.ratio else None for r in ratios]
    notes = []
    total_log = sum(v for v in logs if v is not None) if None not in logs else None
    if total_log is None:
        notes.append("a step has no matched requests: shares are not given")
    elif abs(total_log) < 1e-12:
        notes.append("the steps cancel out: shares of a zero gap are not given")
        total_log = None
    steps = [AblationStep(before, after, r,
                          None if total_log is None or log is None else log / total_log)
             for (before, after), r, log in zip(zip(chain, chain[1:], strict=False), ratios,
                                                logs, strict=True)]
    product = math.prod(r.ratio for r in ratios if r.ratio) if None not in logs else None
    undecided = [f"{s.before} → {s.after}" for s in steps if not s.clear]
    if undecided:
        notes.append("no clear change (the interval includes 1.0, or too few prompts): "
                     + ", ".join(undecided) + "; their shares are within noise")
    return AblationAnalysis(chain, metric, steps, pair_ratio(speed, chain[-1], chain[0], metric),
                            product, notes)
