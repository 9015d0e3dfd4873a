"""Everything a report needs, computed from a run's store alone (rows and snapshot)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from kurabe.analysis.ablation import AblationAnalysis, analyse_ablation
from kurabe.analysis.judge_probes import (
    JudgeProbesAnalysis,
    judge_diagnostics,
    judge_warnings,
    sweep_scores,
)
from kurabe.analysis.load import LoadAnalysis, analyse_load
from kurabe.analysis.machine import MachineLoad, busy_machine_warning, machine_load
from kurabe.analysis.speed import FairnessWarning, SpeedAnalysis, analyse_speed
from kurabe.analysis.sweep import Recommendation, SweepCell, analyse_sweep
from kurabe.config import ShootoutConfig
from kurabe.inputs import items_of, prompts_of
from kurabe.records import EventRow, ModelRow, RequestRow, RunRow, Snapshot
from kurabe.store import Store
from kurabe.thinking import split_content

if TYPE_CHECKING:
    from kurabe.analysis.calibration import CalibrationAnalysis
    from kurabe.analysis.quality import QualityAnalysis

MACHINE_KEYS = ("cpu", "logical_cores", "usable_cores", "ram_bytes", "os", "python", "gpus")


@dataclass
class RunAnalysis:
    run: RunRow
    config: ShootoutConfig
    models: list[ModelRow]
    speed: SpeedAnalysis
    measured: list[RequestRow]
    events: list[EventRow]
    total_scheduled: int
    sweep_cells: list[SweepCell]
    sweep_recommendations: list[Recommendation]
    prompts: list[dict[str, Any]]
    responses: list[dict[str, Any]]  # every measured and swept answer, for side-by-side reading
    cards: list[dict[str, Any]]
    loading: list[dict[str, Any]]
    memory_budget_bytes: int | None
    quality: QualityAnalysis | None = None  # when the run had a quality round
    machine_load: MachineLoad | None = None  # None: the run has no machine samples
    # Work whose latest attempt failed, or that was skipped because its engine exited, one
    # entry per (model, phase, error_kind): {model, phase, error_kind, count, example}.
    failures: list[dict[str, Any]] = field(default_factory=list)
    ablation: AblationAnalysis | None = None  # when the config names an ablation chain
    # The judge's calibration (docs/judge.md): None when it was not calibrated (or not yet).
    calibration: CalibrationAnalysis | None = None
    # The run only calibrated a judge (``kurabe judge --calibrate``): no prompts, no items.
    calibration_only: bool = False
    # The judge's diagnostics (forced/free, explanations, consistency, refusals) and, per
    # judge, its prompts checked against its context (kurabe.analysis.judge_probes).
    judge_probes: JudgeProbesAnalysis | None = None
    judge_context: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Pairs of the run's model files of the same shapes: do they share weights? One entry
    # per pair: {a, b, verdict, reason, score} (kurabe.lineage, stored at creation).
    lineage: list[dict[str, Any]] = field(default_factory=list)
    # Load levels (kurabe load, docs/metrics.md "Load"): None when the run has none.
    load: LoadAnalysis | None = None

    @property
    def complete(self) -> bool:
        """The run finished and nothing in it failed."""
        return self.run.status == "complete" and not self.failures

    @property
    def judge_caution(self) -> str | None:
        """The warning to show beside every table of the judge's grades: the judge failed
        its calibration, or was not calibrated; None when it passed (or nothing was graded)."""
        from kurabe.analysis.calibration import NOT_CALIBRATED_CAUTION

        if self.quality is None or not self.quality.judge:
            return None
        if self.calibration is None:
            return NOT_CALIBRATED_CAUTION
        return self.calibration.caution

    def summary_json(self) -> dict[str, Any]:
        """The ``kurabe bench --json`` object: one entry per model, plus comparisons."""
        out: dict[str, Any] = {"run_status": self.run.status, "complete": self.complete,
                               "failures": self.failures, "models": {}}
        for name in self.speed.models:
            est = self.speed.per_model[name]
            out["models"][name] = {
                "name": name,
                **{k: est[k].to_dict() for k in est},
                "requests_ok": self.speed.counts[name]["ok"],
                "requests_failed": self.speed.counts[name]["error"],
            }
        comps = [c.to_dict() for c in self.speed.comparisons]
        out["comparisons"] = comps
        if self.ablation is not None:
            out["ablation"] = self.ablation.to_dict()
        decode = [c for c in comps if c["metric"] == "decode_tokens_per_s"]
        if len(self.speed.models) == 2 and decode:
            out["comparison"] = decode[0]
        out["warnings"] = [w.to_dict() for w in self.speed.warnings]
        if self.calibration is not None:
            out["calibration"] = self.calibration.to_dict()
        if self.judge_probes is not None:
            out["judge_probes"] = self.judge_probes.to_dict()
        if self.judge_context:
            out["judge_context"] = self.judge_context
        if self.machine_load is not None:
            out["machine_load"] = self.machine_load.to_dict()
        if self.lineage:
            out["lineage"] = self.lineage
        if self.load is not None:
            out["load"] = self.load.to_json()
        if self.sweep_cells:
            out["reasoning_sweep"] = {
                "cells": [asdict(c) for c in self.sweep_cells],
                "recommendations": [asdict(r) for r in self.sweep_recommendations],
            }
        return out


def analyse_run(store: Store, snapshot: Snapshot) -> RunAnalysis:
    """``snapshot``: the run's inputs (``kurabe.orchestrator.run_snapshot``)."""
    run = store.run()
    run.machine = {**dict.fromkeys(MACHINE_KEYS), **run.machine}
    cfg = ShootoutConfig.model_validate(snapshot.config)
    model_names = [m.name for m in cfg.models]
    measured = list(store.requests(phase="measure", status="ok"))
    ok_seqs = {r.seq for r in measured}
    # A failed request that a resume later completed is history, not a failure.
    errors = [r for r in store.requests(phase="measure", status="error") if r.seq not in ok_seqs]
    errors = list({r.seq: r for r in errors}.values())
    stored = {m.name: m for m in store.models()}
    twins = [n for n, m in stored.items() if (m.card or {}).get("twin")]
    speed = analyse_speed(model_names, measured, fixed_length=cfg.run.fixed_length,
                          errors=errors, twins=twins)
    models = [stored.get(m.name) or ModelRow(name=m.name, source=m.source, kind=m.kind,
                                             settings=m.engine.model_dump(mode="json"))
              for m in cfg.models]
    prompts = prompts_of(snapshot)
    categories = {p.id: p.category for p in prompts}
    sweep_rows = list(store.requests(phase="sweep", status="ok"))
    settings = [str(s) for s in (cfg.reasoning_sweep.settings if cfg.reasoning_sweep else [])]
    cells, recs = analyse_sweep(sweep_rows, categories, settings,
                                sweep_scores(store, cfg.sweep_judge))
    load = machine_load(store, [*measured, *sweep_rows])
    if (busy := busy_machine_warning(load)) is not None:
        speed.warnings.append(busy)
    failures = run_failures(store, cfg.quality.judge if cfg.quality else None,
                            cfg.sweep_judge)
    speed.warnings += unmeasured_failure_warnings(failures)
    responses = [_response(r, categories) for r in [*measured, *sweep_rows]]
    quality = None
    prompt_list = [p.model_dump() for p in prompts]
    if cfg.quality is not None:
        from kurabe.analysis.quality import analyse_quality

        items = {i.id: i for i in items_of(snapshot)}
        quality = analyse_quality(store, cfg, items)
        if quality is not None:
            responses += _quality_responses(store, items, quality)
            seen = {p["id"] for p in prompt_list}
            prompt_list += [{"id": i.id, "text": i.turns[0], "category": i.category,
                             "lang": i.lang} for i in items.values() if i.id not in seen]
    ablation = (analyse_ablation(speed, cfg.ablation.chain, cfg.ablation.metric)
                if cfg.ablation is not None else None)
    calibration = _calibration(store, snapshot, cfg, quality)
    if (caution := _calibration_warning(calibration, quality)) is not None:
        speed.warnings.append(caution)
    probes, contexts = judge_diagnostics(store, snapshot, cfg, quality)
    speed.warnings += judge_warnings(quality, probes, contexts)
    load_analysis = analyse_load(store) if store.load_levels() else None
    lineage = [{"a": r.model_a, "b": r.model_b, "verdict": r.verdict, "reason": r.reason,
                "score": r.score} for r in store.lineage()]
    return RunAnalysis(run=run, config=cfg, models=models, speed=speed, measured=measured,
                       ablation=ablation,
                       events=store.events(),
                       total_scheduled=len(model_names) * cfg.run.repeats * len(prompts),
                       sweep_cells=cells, sweep_recommendations=recs,
                       prompts=prompt_list, responses=responses, quality=quality,
                       machine_load=load, failures=failures, calibration=calibration,
                       calibration_only=(not snapshot.prompts and not snapshot.suite_items
                                         and bool(snapshot.calibration_items)),
                       judge_probes=probes, judge_context=contexts,
                       cards=_cards(models, lineage), loading=_loading(models),
                       lineage=lineage, load=load_analysis,
                       memory_budget_bytes=_budget(cfg.run.memory_budget))


def _calibration(store: Store, snapshot: Snapshot, cfg: ShootoutConfig,
                 quality: QualityAnalysis | None) -> CalibrationAnalysis | None:
    """The calibration of the judge whose grades the report shows (the configured one)."""
    if cfg.quality is None or not snapshot.calibration_items:
        return None
    from kurabe.analysis.calibration import analyse_calibration
    from kurabe.inputs import calibration_items_of

    judge = quality.judge if quality is not None and quality.judge else cfg.quality.judge
    if not judge:
        return None
    return analyse_calibration(store.calibration_grades(judge), calibration_items_of(snapshot),
                               judge=judge, threshold=cfg.quality.calibration_threshold)


def _calibration_warning(calibration: CalibrationAnalysis | None,
                         quality: QualityAnalysis | None) -> FairnessWarning | None:
    """A judge that failed its calibration, or graded without one."""
    if calibration is not None and not calibration.passes:
        return FairnessWarning("judge_failed_calibration", calibration.sentence()
                               + " Treat its grades as unreliable.")
    graded = quality is not None and quality.judge and any(
        st.get("scored") for st in quality.judge_stats.values())
    if calibration is None and graded:
        assert quality is not None
        return FairnessWarning("judge_not_calibrated", f"the judge {quality.judge} was not "
                               "calibrated: nothing shows it can tell a right answer from a "
                               "wrong one ([quality] calibrate)")
    return None


FAILURE_EXAMPLE_CHARS = 300


def _one_line(text: str | None) -> str:
    return " ".join((text or "").split())[:FAILURE_EXAMPLE_CHARS]


def run_failures(store: Store, judge: str | None = None, sweep_judge: str | None = None
                 ) -> list[dict[str, Any]]:
    """The work of a run whose latest attempt failed (a later success supersedes an earlier
    failure), grouped by (model, phase, error_kind) in the order first met: speed requests
    (phase warmup, measure or sweep), quality answers (phase quality) and the grades of
    ``judge``, the run's judge (phase judge, under the judge's name), its probes (phase
    judge probes) and the grades of the sweep's judge (phase sweep judging). Work skipped because
    its engine had exited is stored as failed, so it is counted here too. Rows of an older
    kurabe whose message shows no kind count as "unknown"."""
    groups: dict[tuple[str, str, str], dict[str, Any]] = {}

    def add(model: str, phase: str, kind: str | None, message: str | None) -> None:
        key = (model, phase, kind or "unknown")
        group = groups.setdefault(key, {"model": model, "phase": phase, "error_kind": key[2],
                                        "count": 0, "example": _one_line(message)})
        group["count"] += 1

    latest_request = {r.seq: r for r in store.requests()}  # ordered by seq, then id
    for r in latest_request.values():
        if r.status == "error":
            add(r.model, r.phase, r.error_kind, r.error)
    latest_answer = {a.key: a for a in store.answers(status=None)}
    for a in latest_answer.values():
        if a.status == "error":
            add(a.model, "quality", a.error_kind, a.error)
    latest_grade = {g.key: g for g in store.grades(judge)} if judge else {}
    for g in latest_grade.values():
        # A prompt too long for the judge's context is not a failure to retry: it is
        # counted in the judge_context warning.
        if g.status == "error" and g.error_kind != "context_exceeded":
            add(g.judge, "judge", g.error_kind, g.detail)
    for probe_judge in dict.fromkeys(j for j in (judge, sweep_judge) if j):
        latest_probe = {p.key: p for p in store.probes(probe_judge)}
        for p in latest_probe.values():
            whose = sweep_judge if p.probe == "sweep" else judge
            if p.status == "error" and p.error_kind != "context_exceeded" and p.judge == whose:
                add(p.judge, "sweep judging" if p.probe == "sweep" else "judge probes",
                    p.error_kind, p.detail)
    latest_calibration = {c.key: c for c in store.calibration_grades(judge)} if judge else {}
    for c in latest_calibration.values():
        if c.status == "error":
            add(c.judge, "calibration", c.error_kind, c.detail)
    return list(groups.values())


def unmeasured_failure_warnings(failures: list[dict[str, Any]]) -> list[FairnessWarning]:
    """Failed warm-ups and sweep requests (failed measured requests are warned about by the
    speed analysis)."""
    out = []
    for phase, what, why in (
            ("warmup", "warm-up", "its first measured requests may have run on a cold engine"),
            ("sweep", "reasoning-sweep", "the sweep's figures lack them")):
        for model in dict.fromkeys(f["model"] for f in failures if f["phase"] == phase):
            mine = [f for f in failures if f["phase"] == phase and f["model"] == model]
            n = sum(f["count"] for f in mine)
            kinds = ", ".join(f"{f['error_kind']} ×{f['count']}" for f in mine)
            out.append(FairnessWarning(
                "failed_requests",
                f"{model}: {n} {what} request{'s' if n > 1 else ''} failed ({kinds}); {why}"))
    return out


def _quality_responses(store: Store, items: dict[str, Any], quality: QualityAnalysis
                       ) -> list[dict[str, Any]]:
    out = []
    for a in store.answers():
        if a.item_id not in items:
            continue
        m = a.metrics
        grade = quality.grades_by_answer.get(a.key)
        out.append({
            "model": a.model, "prompt_id": a.item_id,
            "category": items[a.item_id].category, "repeat": a.repeat,
            "phase": "quality", "setting": "", "answer": a.answer,
            "reasoning": a.reasoning, "outcome": a.outcome,
            "finish_reason": m.get("finish_reason"),
            "decode_tokens_per_s": m.get("decode_tokens_per_s"), "ttft_s": m.get("ttft_s"),
            "chars_per_s": m.get("chars_per_s"), "output_tokens": m.get("output_tokens"),
            "reasoning_tokens": m.get("reasoning_tokens"),
            "grade": grade.score if grade else None,
            "grade_status": grade.status if grade else None,
            "judge_explanation": (grade.explanation or grade.detail) if grade else None,
        })
    return out


LOADING_ROWS = (  # (label, planned keys, observed key)
    ("model weights", ("model_host_bytes", "model_device_bytes", "model_repack_bytes"),
     "model_bytes"),
    ("KV cache", ("kv_bytes",), "kv_bytes"),
    ("recurrent state", ("recurrent_bytes",), "recurrent_bytes"),
    ("output buffer", ("output_bytes",), "output_bytes"),
    ("compute buffer", ("compute_bytes",), "compute_bytes"),
    ("total", ("total_bytes",), "total_bytes"),
)


def _budget(text: str | None) -> int | None:
    if not text:
        return None
    from kurabe.simulator.budget import parse_size

    return parse_size(text, "run.memory_budget")


def _cards(models: list[ModelRow], lineage: list[dict[str, Any]] | None = None
           ) -> list[dict[str, Any]]:
    """Each model's card, with ``lineage``: what the run's lineage comparisons say of it
    (one phrase per other model of the same shapes, "; "-joined), or None."""
    cards = [{"model": m.name, **m.card} for m in models if m.card]
    for card in cards:
        said = [_lineage_phrase(p, p["b"] if p["a"] == card["model"] else p["a"])
                for p in lineage or [] if card["model"] in (p["a"], p["b"])]
        card["lineage"] = "; ".join(said) or None
    return cards


def _lineage_phrase(pair: dict[str, Any], other: str) -> str:
    score = "" if pair["score"] is None else f" (score {pair['score']:.2f})"
    if pair["verdict"] == "derived":
        return f"derived: shares weights with {other}{score}"
    if pair["verdict"] == "independent":
        return f"independent of {other}{score}"
    return f"inconclusive against {other}{score}"


def _loading(models: list[ModelRow]) -> list[dict[str, Any]]:
    """Predicted beside observed buffers, per model, with the error of the prediction."""
    from kurabe.simulator.loadlog import ObservedBuffers

    out = []
    for m in models:
        if not m.plan and not m.observed:
            continue
        plan = m.plan or {}
        observed = ObservedBuffers.from_dict(m.observed) if m.observed else None
        rows = []
        for label, keys, obs_key in LOADING_ROWS:
            predicted = sum(plan[k] for k in keys if plan.get(k) is not None) if "error" not in plan \
                and all(k in plan for k in keys) else None
            seen = getattr(observed, obs_key) if observed is not None else None
            if predicted in (None, 0) and not seen:
                continue
            error = (predicted - seen) / seen if predicted is not None and seen else None
            rows.append({"buffer": label, "predicted_bytes": predicted, "observed_bytes": seen,
                         "error": error})
        settings = m.settings
        out.append({
            "model": m.name, "rows": rows, "plan_error": plan.get("error"),
            "placement": (f"{plan['placement']} ({plan['placement_reason']})"
                          if plan.get("placement_reason") else plan.get("placement")),
            "ctx": settings.get("ctx"), "cache_type_k": settings.get("cache_type_k") or "f16",
            "cache_type_v": settings.get("cache_type_v") or "f16",
            "layers_offloaded": (f"{observed.layers_offloaded}/{observed.layers_offloadable}"
                                 if observed is not None and observed.layers_offloaded is not None
                                 else None),
            "kv_caches": [vars(k) if not isinstance(k, dict) else k
                          for k in (observed.kv_caches if observed is not None else [])],
        })
    return out


def _response(row: RequestRow, categories: dict[str, str]) -> dict[str, Any]:
    """One stored answer, split as the metrics split it (reasoning kept apart)."""
    chunks = row.record.get("chunks") or []
    content = "".join(c[1] for c in chunks)  # [t, content, reasoning(, n_tokens)]
    server_reasoning = "".join(c[2] for c in chunks)
    m = row.metrics
    fmt = m.get("reasoning_format")
    # Read as the metrics read it: a stored format other than think-opened means the template
    # was not taken to open a block (a </think> then stays a leaked marker in the answer).
    opened = (True if fmt == "think-opened" or m.get("outcome") == "answered_without_thinking"
              else None if fmt is None else False)
    split = split_content(content, server_reasoning, starts_in_reasoning=opened,
                          finish_reason=m.get("finish_reason"))
    return {
        "model": row.model, "prompt_id": row.prompt_id,
        "category": categories.get(row.prompt_id, "general"), "repeat": row.repeat,
        "phase": row.phase, "setting": row.setting, "answer": split.answer,
        "reasoning": split.reasoning, "outcome": m.get("outcome"),
        "finish_reason": m.get("finish_reason"),
        "decode_tokens_per_s": m.get("decode_tokens_per_s"), "ttft_s": m.get("ttft_s"),
        "chars_per_s": m.get("chars_per_s"), "output_tokens": m.get("output_tokens"),
        "reasoning_tokens": m.get("reasoning_tokens"),
    }
