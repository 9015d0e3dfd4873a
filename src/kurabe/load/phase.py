"""The load phase: each model's levels, one after another, every request stored.

Per level: the engine's metrics endpoint is scraped, the level runs (in one or several
worker processes), the engine's metrics are scraped again, and the level is stored with
what the client saw of itself (``LoadLevelRow.client``). A complete level is never rerun.
A level left ``running`` or ``interrupted`` (a killed or stopped run) is rerun from
scratch on resume: its earlier rows are kept, and they are told apart from the new attempt's
by their send time (a row sent before the level's ``started_at_unix_s`` belongs to an
earlier attempt).

A sweep doubles concurrency from 1 until output throughput rises by less than
``load.knee_gain`` over the previous level, fewer than 90% of the level's measured requests
meet the SLOs, or ``load.max_concurrency`` is reached.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from kurabe.backends.base import Backend
from kurabe.config import LoadConfig, ModelConfig, ShootoutConfig
from kurabe.load.profiles import LevelPlan, level_plan, next_sweep_concurrency, planned_levels
from kurabe.load.prompts import LoadPrompt, prompt_set, synthetic_prompts
from kurabe.load.runner import WorkerResult
from kurabe.load.selfcheck import IN_FLIGHT_EVERY_S, summary, tree_cpu_s, usable_cores
from kurabe.load.server_metrics import scrape_all
from kurabe.load.workers import run_jobs, split_level, worker_count
from kurabe.phases import Phase, PhaseContext, warn_through
from kurabe.records import LoadLevelRow, LoadRequestRow, Snapshot
from kurabe.store import Store

SLO_SHARE = 0.9  # a sweep level "holds" its SLOs when this share of requests meets them


def meets_slo(metrics: dict[str, Any], load: LoadConfig) -> bool:
    """Whether one completed request's figures are within every SLO given."""
    slo = load.slo
    for bound, value in ((slo.ttft_s, metrics.get("ttft_s")),
                         (slo.itl_s, metrics.get("itl_per_token_s")),
                         (slo.e2e_s, metrics.get("e2e_s"))):
        if bound is not None and (value is None or value > bound):
            return False
    return True


class _Tally:
    """The rows of one level attempt as they land: stored at once, and counted."""

    def __init__(self, store: Store, load: LoadConfig) -> None:
        self.store = store
        self.load = load
        self.stored = 0
        self.done = 0
        self.measured = 0
        self.met_slo = 0
        self.output_tokens = 0
        self.first_measured_s: float | None = None

    def __call__(self, rows: list[LoadRequestRow]) -> None:
        self.store.add_load_requests(rows)
        self.stored += len(rows)
        for r in rows:
            self.done += 1
            if r.warmup or r.status != "ok":
                continue
            self.measured += 1
            self.output_tokens += int(r.metrics.get("output_tokens") or 0)
            self.met_slo += meets_slo(r.metrics, self.load)
            if self.first_measured_s is None or r.sent_s < self.first_measured_s:
                self.first_measured_s = r.sent_s


class LoadPhase(Phase):
    name = "load"

    def __init__(self, config: ShootoutConfig, snapshot: Snapshot) -> None:
        self.config = config
        self.load = config.load
        names = (self.load.models if self.load and self.load.models
                 else [m.name for m in config.models])
        self.models = [m for m in config.models if m.name in names] if self.load else []

    # -- what is left ----------------------------------------------------------------------

    def _stored(self, store: Store, model: str) -> dict[int, LoadLevelRow]:
        return {row.level: row for row in store.load_levels(model)}

    def _next_level(self, store: Store, model: str) -> LevelPlan | None:
        """The next level of ``model`` to run (None: its levels are all complete)."""
        load = self.load
        assert load is not None
        stored = self._stored(store, model)
        if not load.sweep:
            for plan in planned_levels(load):
                row = stored.get(plan.index)
                if row is None or row.status != "complete":
                    return plan
            return None
        measured: list[tuple[int, float, bool]] = []
        for index in range(len(stored) + 1):
            row = stored.get(index)
            if row is None or row.status != "complete":
                concurrency = next_sweep_concurrency(load, measured)
                return None if concurrency is None else level_plan(
                    load, index, concurrency=concurrency)
            sweep = row.client.get("sweep") or {}
            measured.append((row.concurrency or 1, float(sweep.get("output_tokens_per_s") or 0),
                             bool(sweep.get("slo_held", True))))
        return None

    def pending(self, store: Store) -> int:
        if self.load is None:
            return 0
        if self.load.sweep:
            return sum(self._next_level(store, m.name) is not None for m in self.models)
        return sum(len([p for p in planned_levels(self.load)
                        if (r := self._stored(store, m.name).get(p.index)) is None
                        or r.status != "complete"]) for m in self.models)

    def models_needed(self, store: Store) -> list[str]:
        if self.load is None:
            return []
        return [m.name for m in self.models if self._next_level(store, m.name) is not None]

    # -- running ---------------------------------------------------------------------------

    async def run(self, ctx: PhaseContext) -> None:
        for model in self.models:
            if not ctx.check_engine(model.name, self.name):
                continue
            prompts = await self._prompts(ctx, model)
            while (plan := self._next_level(ctx.store, model.name)) is not None:
                await self._level(ctx, model, plan, prompts)
                if not ctx.check_engine(model.name, self.name):
                    break

    async def _prompts(self, ctx: PhaseContext, model: ModelConfig) -> list[LoadPrompt]:
        load = self.load
        assert load is not None
        if load.prompt_tokens is not None:
            return await synthetic_prompts(ctx.clients[model.name], load.prompt_tokens,
                                           seed=load.seed)
        return prompt_set(load.prompts or "builtin:speed")

    def _prompt_source(self) -> str:
        load = self.load
        assert load is not None
        return (f"synthetic:{load.prompt_tokens}" if load.prompt_tokens is not None
                else load.prompts or "builtin:speed")

    async def _level(self, ctx: PhaseContext, model: ModelConfig, plan: LevelPlan,
                     prompts: list[LoadPrompt]) -> None:
        load = self.load
        assert load is not None
        store, backend = ctx.store, ctx.backends[model.name]
        urls = model.endpoints
        roots = [u.rstrip("/").removesuffix("/v1") for u in urls] or [
            backend.endpoint.server_root]
        streams = plan.concurrency or max(1, int((plan.rate_per_s or 1) * 4))
        workers = worker_count(load.workers, streams, load.streams_per_worker, backend)
        self._warn_slots(ctx, model, backend, plan)
        run = self.config.run
        request = {"max_tokens": plan.max_tokens, "temperature": run.temperature,
                   "seed": run.seed, "fixed_length": load.fixed_length,
                   "extra_body": {**model.extra_body, **backend.reasoning_fields(model.reasoning)}}
        limits = {"timeout_s": run.request_timeout_s, "stall_timeout_s": run.stall_timeout_s,
                  "max_retries": run.max_retries, "retry_backoff_s": run.retry_backoff_s,
                  "retry_max_wait_s": run.retry_max_wait_s}
        jobs = split_level(plan, model=model.name, workers=workers, prompts=prompts,
                           request=request, client_limits=limits, drain_s=load.drain_s)
        row = LoadLevelRow(model=model.name, level=plan.index, profile=plan.profile,
                           status="running", started_at_unix_s=time.time(),
                           concurrency=plan.concurrency, rate_per_s=plan.rate_per_s,
                           warmup_s=plan.warmup_s,
                           spec=plan.spec(load, self._prompt_source()) | {"workers": len(jobs)})
        store.write_load_level(row)
        api_key = backend.endpoint.api_key
        row.server_before = await scrape_all(roots, api_key=api_key)
        pids = [backend.pid] if backend.pid else []
        engine_cpu0 = tree_cpu_s(pids)
        tally = _Tally(store, load)
        label = self._label(model.name, plan)
        watcher = asyncio.create_task(self._progress(ctx, label, plan, tally))
        try:
            results, _t0 = await run_jobs(jobs, backend, urls, tally)
        except BaseException:
            row.status = "interrupted"
            store.write_load_level(row)
            raise
        finally:
            watcher.cancel()
        engine_cpu1 = tree_cpu_s(pids)
        row.server_after = await scrape_all(roots, api_key=api_key)
        level_end = max(r.end_s for r in results)
        start = plan.warmup_s if plan.warmup_s else (
            tally.first_measured_s if plan.warmup_requests and tally.first_measured_s
            is not None else 0.0)
        row.wall_s = max(level_end - start, 0.0)
        sent = sum(r.counts["sent"] for r in results)
        row.client = self._client(results, level_end, workers=len(jobs), sent=sent,
                                  stored=tally.stored, plan=plan,
                                  engine_cpu_s=(None if engine_cpu0 is None or engine_cpu1 is None
                                                else engine_cpu1 - engine_cpu0),
                                  pids=pids)
        throughput = tally.output_tokens / row.wall_s if row.wall_s else 0.0
        row.client["sweep"] = {"output_tokens_per_s": throughput,
                               "slo_held": (tally.met_slo >= SLO_SHARE * tally.measured
                                            if tally.measured else False)}
        row.status = "complete"
        store.write_load_level(row)
        if sent != tally.stored:
            store.add_event("load_count", f"{label}: {sent} requests sent but {tally.stored} "
                            "stored")
        ctx.progress(label, 1, 1)

    @staticmethod
    def _client(results: list[WorkerResult], level_end: float, *, workers: int, sent: int,
                stored: int, plan: LevelPlan, engine_cpu_s: float | None, pids: list[int]
                ) -> dict[str, Any]:
        lags = [lag for r in results for lag in r.loop_lags_s]
        send = [lag for r in results for lag in r.send_lags_s]
        ticks: dict[int, int] = {}
        for r in results:
            for tick, n in r.in_flight:
                ticks[tick] = ticks.get(tick, 0) + n
        loop = summary(lags)
        send_summary = summary(send)
        return {
            "workers": workers, "wall_s": level_end,
            "cpu_s": sum(r.cpu_s for r in results),
            "per_worker_cpu_s": [r.cpu_s for r in results],
            "usable_cores": usable_cores(),
            "loop_lag_s": loop,
            "send_lag_s": ({k: send_summary[k] for k in ("p50", "p99", "max")}
                           if plan.open_loop else None),
            # several workers: the sum of each one's peak (their peaks may not coincide)
            "max_in_flight": sum(r.max_in_flight for r in results),
            "in_flight": [[round(t * IN_FLIGHT_EVERY_S, 3), n] for t, n in sorted(ticks.items())],
            "engine_cpu_s": engine_cpu_s, "engine_pids": pids,
            "sent": sent, "stored": stored,
            "counts": {k: sum(r.counts[k] for r in results)
                       for k in ("ok", "error", "cancelled")},
        }

    @staticmethod
    def _label(model: str, plan: LevelPlan) -> str:
        what = (f"{plan.rate_per_s:g} req/s" if plan.rate_per_s is not None
                else f"{plan.concurrency} streams")
        return f"load {model} · level {plan.index} ({plan.profile}, {what})"

    @staticmethod
    async def _progress(ctx: PhaseContext, label: str, plan: LevelPlan, tally: _Tally
                        ) -> None:
        """Elapsed of total seconds (or requests done of total), with requests done."""
        t_start = time.monotonic()
        total_s = (plan.warmup_s + plan.duration_s) if plan.duration_s is not None else None
        total_n = (plan.warmup_requests + plan.requests) if plan.requests is not None else 0
        while True:
            elapsed = time.monotonic() - t_start
            if total_s is not None:
                ctx.progress(f"{label} · {tally.done} done", int(min(elapsed, total_s)),
                             int(total_s))
            else:
                ctx.progress(f"{label} · {elapsed:.0f} s", tally.done, total_n)
            await asyncio.sleep(0.5)

    @staticmethod
    def _warn_slots(ctx: PhaseContext, model: ModelConfig, backend: Backend,
                    plan: LevelPlan) -> None:
        if backend.pid and plan.concurrency and model.engine.parallel < plan.concurrency:
            warn_through(ctx.progress, f"model '{model.name}': {plan.concurrency} streams but "
                         f"the managed server has {model.engine.parallel} slot(s) "
                         "(engine.parallel): requests wait in the server's queue")
