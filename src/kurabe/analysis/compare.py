"""What changed between two runs of the same models (a new engine build, new flags)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kurabe.analysis.speed import COMPARED_METRICS, SUMMARY_METRICS
from kurabe.analysis.stats import Ratio, ratio_of_medians
from kurabe.store import Store

SETUP_FIELDS = ("engine_version", "engine_kind", "file_sha256", "quant", "settings")


@dataclass
class Change:
    model: str
    metric: str
    before: float | None
    after: float | None
    ratio: Ratio

    def sentence(self) -> str:
        label, unit, higher = SUMMARY_METRICS[self.metric]
        r = self.ratio
        if r.ratio is None:
            return f"{self.model} {label}: not measured in both runs"
        ci = (f"95% CI {r.ci_low:.2f}–{r.ci_high:.2f}" if r.ci_low is not None else "no interval")
        if not r.decided:
            return f"{self.model} {label}: no clear change (×{r.ratio:.2f}, {ci})"
        better = (r.ratio > 1) == higher
        return (f"{self.model} {label}: {'better' if better else 'worse'}, "
                f"{self.before:.3g} → {self.after:.3g} {unit} (×{r.ratio:.2f}, {ci})")

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "metric": self.metric, "before": self.before,
                "after": self.after, **self.ratio.to_dict(), "sentence": self.sentence()}


def _measured(store: Store) -> dict[str, dict[str, list[float]]]:
    out: dict[str, dict[str, list[float]]] = {}
    for row in store.requests(phase="measure", status="ok"):
        for metric in COMPARED_METRICS:
            value = row.metrics.get(metric)
            if value is not None:
                out.setdefault(row.model, {}).setdefault(metric, []).append(value)
    return out


def compare_runs(before_dir, after_dir) -> dict[str, Any]:
    with Store.open(before_dir) as a, Store.open(after_dir) as b:
        before, after = _measured(a), _measured(b)
        setup_a = {m.name: m for m in a.models()}
        setup_b = {m.name: m for m in b.models()}
        prompts_a = {r.prompt_id for r in a.requests(phase="measure")}
        prompts_b = {r.prompt_id for r in b.requests(phase="measure")}
    models = [m for m in before if m in after]
    changes = []
    for model in models:
        for metric in COMPARED_METRICS:
            xa, xb = before[model].get(metric, []), after[model].get(metric, [])
            import statistics

            changes.append(Change(model, metric,
                                  statistics.median(xa) if xa else None,
                                  statistics.median(xb) if xb else None,
                                  ratio_of_medians(xb, xa)))
    setup = []
    for model in models:
        for field in SETUP_FIELDS:
            ma, mb = setup_a.get(model), setup_b.get(model)
            va, vb = getattr(ma, field, None), getattr(mb, field, None)
            if va != vb:
                if field == "settings":
                    da, db = va or {}, vb or {}
                    for key in sorted(set(da) | set(db)):
                        if da.get(key) != db.get(key):
                            setup.append({"model": model, "field": f"engine.{key}",
                                          "before": da.get(key), "after": db.get(key)})
                else:
                    setup.append({"model": model, "field": field, "before": va, "after": vb})
    notes = []
    if prompts_a != prompts_b:
        notes.append("the runs used different prompts; differences may come from the prompts")
    only = sorted(set(before) ^ set(after))
    if only:
        notes.append(f"models in only one run: {', '.join(only)}")
    return {"before": str(before_dir), "after": str(after_dir),
            "setup_changes": setup, "changes": [c.to_dict() for c in changes], "notes": notes}
