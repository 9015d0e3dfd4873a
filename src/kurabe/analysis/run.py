"""Everything a report needs, computed from a run's store alone."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from kurabe.analysis.speed import SpeedAnalysis, analyse_speed
from kurabe.analysis.sweep import Recommendation, SweepCell, analyse_sweep
from kurabe.store import RequestRow, Store
from kurabe.thinking import split_content


@dataclass
class RunAnalysis:
    run: dict[str, Any]
    config: dict[str, Any]
    models: list[dict[str, Any]]
    speed: SpeedAnalysis
    measured: list[RequestRow]
    events: list[dict[str, Any]]
    total_scheduled: int
    sweep_cells: list[SweepCell]
    sweep_recommendations: list[Recommendation]
    prompts: list[dict[str, Any]]
    responses: list[dict[str, Any]]  # every measured and swept answer, for side-by-side reading

    def summary_json(self) -> dict[str, Any]:
        """The ``kurabe bench --json`` object: one entry per model, plus comparisons."""
        out: dict[str, Any] = {"run_status": self.run["status"], "models": {}}
        for name in self.speed.models:
            est = self.speed.per_model[name]
            out["models"][name] = {
                "name": name,
                **{k: est[k].as_dict() for k in est},
                "requests_ok": self.speed.counts[name]["ok"],
                "requests_failed": self.speed.counts[name]["error"],
            }
        comps = [c.as_dict() for c in self.speed.comparisons]
        out["comparisons"] = comps
        decode = [c for c in comps if c["metric"] == "decode_tokens_per_s"]
        if len(self.speed.models) == 2 and decode:
            out["comparison"] = decode[0]
        out["warnings"] = [w.as_dict() for w in self.speed.warnings]
        if self.sweep_cells:
            out["reasoning_sweep"] = {
                "cells": [vars(c) for c in self.sweep_cells],
                "recommendations": [vars(r) for r in self.sweep_recommendations],
            }
        return out


def analyse_run(store: Store) -> RunAnalysis:
    run = store.run()
    machine_keys = ("cpu", "logical_cores", "usable_cores", "ram_bytes", "os", "python", "gpus")
    run["machine"] = {**dict.fromkeys(machine_keys), **run["machine"]}
    config = json.loads(run["config_json"])
    model_names = [m["name"] for m in config["models"]]
    measured = list(store.requests(phase="measure", status="ok"))
    ok_seqs = {r.seq for r in measured}
    # A failed request that a resume later completed is history, not a failure.
    errors = [r for r in store.requests(phase="measure", status="error") if r.seq not in ok_seqs]
    errors = list({r.seq: r for r in errors}.values())
    speed = analyse_speed(model_names, measured, fixed_length=config["run"]["fixed_length"],
                          errors=errors)
    stored = {m["name"]: m for m in store.models()}
    blank = dict.fromkeys(("file_path", "file_bytes", "file_sha256", "quant", "architecture",
                           "engine_kind", "engine_version", "engine_log", "settings_json"))
    models = [{**blank, **m, **stored.get(m["name"], {})} for m in config["models"]]
    from kurabe.bench.runner import prompts_of
    from kurabe.config import ShootoutConfig

    cfg = ShootoutConfig.model_validate(config)
    prompts = prompts_of(cfg)
    categories = {p.id: p.category for p in prompts}
    sweep_rows = list(store.requests(phase="sweep", status="ok"))
    settings = [str(s) for s in (cfg.reasoning_sweep.settings if cfg.reasoning_sweep else [])]
    cells, recs = analyse_sweep(sweep_rows, categories, settings)
    responses = [_response(r, categories) for r in [*measured, *sweep_rows]]
    return RunAnalysis(run=run, config=config, models=models, speed=speed, measured=measured,
                       events=store.events(),
                       total_scheduled=len(model_names) * config["run"]["repeats"] * len(prompts),
                       sweep_cells=cells, sweep_recommendations=recs,
                       prompts=[p.model_dump() for p in prompts], responses=responses)


def _response(row: RequestRow, categories: dict[str, str]) -> dict[str, Any]:
    """One stored answer, split as the metrics split it (reasoning kept apart)."""
    chunks = [(t, c, r) for t, c, r in row.record.get("chunks") or []]
    content = "".join(c for _, c, _ in chunks)
    server_reasoning = "".join(r for _, _, r in chunks)
    fmt = row.metrics.get("reasoning_format")
    split = split_content(content, server_reasoning,
                          starts_in_reasoning=True if fmt == "think-opened" else None)
    m = row.metrics
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
