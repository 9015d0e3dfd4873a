"""Everything a report needs, computed from a run's store alone."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from kurabe.analysis.speed import SpeedAnalysis, analyse_speed
from kurabe.store import RequestRow, Store


@dataclass
class RunAnalysis:
    run: dict[str, Any]
    config: dict[str, Any]
    models: list[dict[str, Any]]
    speed: SpeedAnalysis
    measured: list[RequestRow]
    events: list[dict[str, Any]]
    total_scheduled: int

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
        return out


def analyse_run(store: Store) -> RunAnalysis:
    run = store.run()
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
    n_prompts = len(config.get("prompts") or []) or len({r.prompt_id for r in measured})
    return RunAnalysis(run=run, config=config, models=models, speed=speed, measured=measured,
                       events=store.events(),
                       total_scheduled=len(model_names) * config["run"]["repeats"] * n_prompts)
