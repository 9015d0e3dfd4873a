"""What changed between two runs of the same models (a new engine build, new flags)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kurabe import KurabeError
from kurabe.analysis.machine import compare_load
from kurabe.analysis.speed import COMPARED_METRICS, SUMMARY_METRICS
from kurabe.analysis.stats import MIN_PROMPTS, Ratio, paired_ratio, ratio_of_medians
from kurabe.inputs import run_snapshot
from kurabe.records import RequestRow
from kurabe.store import Store

SETUP_FIELDS = ("engine_version", "engine_kind", "file_sha256", "quant", "settings")


@dataclass
class Change:
    model: str
    metric: str
    before: float | None  # median over the earlier run's measured requests
    after: float | None  # median over the later run's
    ratio: Ratio  # after / before
    method: str = "paired"  # "paired" on (prompt, repeat), or "unpaired" (nothing paired)

    def sentence(self) -> str:
        label, unit, higher = SUMMARY_METRICS[self.metric]
        r = self.ratio
        if r.ratio is None:
            return f"{self.model} {label}: not measured in both runs"
        ci = (f"95% CI {r.ci_low:.2f}–{r.ci_high:.2f}" if r.ci_low is not None else "no interval")
        how = (f"{r.n} paired requests" if self.method == "paired"
               else "unpaired: no request of one run matches one of the other")
        if r.no_verdict is not None:
            return f"{self.model} {label}: {r.no_verdict} (×{r.ratio:.2f}, {ci}; {how})"
        if not r.decided:
            return f"{self.model} {label}: no clear change (×{r.ratio:.2f}, {ci}; {how})"
        better = (r.ratio > 1) == higher
        return (f"{self.model} {label}: {'better' if better else 'worse'}, "
                f"{self.before:.3g} → {self.after:.3g} {unit} (×{r.ratio:.2f}, {ci}; {how})")

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "metric": self.metric, "before": self.before,
                "after": self.after, **self.ratio.to_dict(), "method": self.method,
                "sentence": self.sentence()}


@dataclass
class _Run:
    models: list[str]  # as configured, in order
    rows: dict[str, list[RequestRow]]  # measured, successful requests per model
    prompts: dict[str, tuple[str, str | None]]  # id -> (text, system) as the run was given
    setup: dict[str, Any]  # model name -> ModelRow


def _read(store: Store) -> _Run:
    snapshot = run_snapshot(store)
    models = [str(m["name"]) for m in snapshot.config.get("models") or []]
    rows: dict[str, list[RequestRow]] = {}
    for row in store.requests(phase="measure", status="ok"):
        rows.setdefault(row.model, []).append(row)
    models += [m for m in rows if m not in models]
    prompts = {str(p["id"]): (str(p["text"]), p.get("system")) for p in snapshot.prompts}
    return _Run(models, rows, prompts, {m.name: m for m in store.models()})


def _median(values: list[float]) -> float | None:
    import statistics

    return statistics.median(values) if values else None


def _values(rows: list[RequestRow], metric: str) -> tuple[list[float], list[str]]:
    pairs = [(v, r.prompt_id) for r in rows if (v := r.metrics.get(metric)) is not None]
    return [v for v, _ in pairs], [p for _, p in pairs]


def _change(model: str, metric: str, rows_a: list[RequestRow], rows_b: list[RequestRow],
            same_prompts: set[str]) -> Change:
    """after/before on the requests both runs made of the same prompt (prompt, repeat), as a
    paired ratio with prompts as clusters; unpaired (ratio of medians) only when none pair."""
    before, prompts_before = _values(rows_a, metric)
    after, prompts_after = _values(rows_b, metric)
    by_key_a = {(r.prompt_id, r.repeat): r.metrics.get(metric) for r in rows_a}
    by_key_b = {(r.prompt_id, r.repeat): r.metrics.get(metric) for r in rows_b}
    xs: list[float] = []
    ys: list[float] = []
    clusters: list[str] = []
    for key in sorted(set(by_key_a) & set(by_key_b)):
        x, y = by_key_b[key], by_key_a[key]
        if key[0] in same_prompts and x and y and x > 0 and y > 0:
            xs.append(x)
            ys.append(y)
            clusters.append(key[0])
    if xs:
        ratio, method = paired_ratio(xs, ys, clusters=clusters), "paired"
    else:
        ratio = ratio_of_medians(after, before, prompts_after, prompts_before)
        method = "unpaired"
    return Change(model, metric, _median(before), _median(after), ratio, method)


def _prompt_note(a: _Run, b: _Run) -> str | None:
    if a.prompts == b.prompts:
        return None
    only_a = sorted(set(a.prompts) - set(b.prompts))
    only_b = sorted(set(b.prompts) - set(a.prompts))
    changed = sorted(p for p in set(a.prompts) & set(b.prompts) if a.prompts[p] != b.prompts[p])
    parts = [f"{what}: {', '.join(ids)}" for what, ids in (
        ("only in the earlier run", only_a), ("only in the later run", only_b),
        ("same id, different text", changed)) if ids]
    return ("the runs used different prompts (" + "; ".join(parts) + "); differences may "
            "come from the prompts, so requests are paired only on prompts both runs were given")


def compare_runs(before_dir, after_dir) -> dict[str, Any]:
    """``kurabe compare``: per model and metric the change after/before, paired on the
    requests both runs made of the same prompt (same id and text) and repeat."""
    with Store.open(before_dir) as sa, Store.open(after_dir) as sb:
        a, b = _read(sa), _read(sb)
    models = [m for m in a.models if m in b.models]
    if not models:
        raise KurabeError(
            f"{before_dir} and {after_dir} have no model in common (earlier run: "
            f"{', '.join(a.models) or 'none'}; later run: {', '.join(b.models) or 'none'}); "
            "compare two runs of the same models")
    same_prompts = {p for p in a.prompts if b.prompts.get(p) == a.prompts[p]}
    changes = [_change(model, metric, a.rows.get(model, []), b.rows.get(model, []), same_prompts)
               for model in models for metric in COMPARED_METRICS]
    setup = []
    for model in models:
        for field in SETUP_FIELDS:
            ma, mb = a.setup.get(model), b.setup.get(model)
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
    if (prompt_note := _prompt_note(a, b)) is not None:
        notes.append(prompt_note)
    unpaired = sorted({c.model for c in changes
                       if c.method == "unpaired" and c.ratio.ratio is not None})
    if unpaired:
        notes.append(f"{', '.join(unpaired)}: no request of one run matches a request of the "
                     "other (same prompt and repeat), so those changes compare the two runs' "
                     "medians unpaired, and prompt-to-prompt differences are in them")
    few = sorted({c.model for c in changes
                  if c.ratio.ratio is not None and c.ratio.clusters < MIN_PROMPTS})
    if few:
        notes.append(f"{', '.join(few)}: fewer than {MIN_PROMPTS} prompts in common, too few "
                     "to decide whether anything changed")
    notes += compare_load(before_dir, after_dir)  # different machine load (analysis.machine)
    only = sorted(set(a.models) ^ set(b.models))
    if only:
        notes.append(f"models in only one run: {', '.join(only)}")
    return {"before": str(before_dir), "after": str(after_dir),
            "setup_changes": setup, "changes": [c.to_dict() for c in changes], "notes": notes}
