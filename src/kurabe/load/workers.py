"""A level split over several worker processes when one process is not enough.

Each worker runs its own event loop and connection pools and sends its rows back on a
queue; the parent stores them. Closed-loop streams and request counts are divided as evenly
as possible; open-loop arrivals are dealt out in turn, so the level's schedule is the same
whatever the number of workers. The level's start is one absolute ``time.perf_counter()``
value, the clock all processes on the machine share (CLOCK_MONOTONIC on Linux), set once
every worker is ready (a worker's start-up is not part of the level).

The in-process scripted backend cannot cross processes: with it the level runs in one
worker, in the calling process.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import queue
import time
import traceback
from collections.abc import Callable
from typing import Any

from kurabe import KurabeError, eventloop
from kurabe.backends.base import Backend
from kurabe.load.profiles import LevelPlan, arrival_times
from kurabe.load.prompts import LoadPrompt
from kurabe.load.runner import (
    ReplicaBackend,
    WorkerJob,
    WorkerResult,
    open_pools,
    replicas_of,
    run_worker,
)
from kurabe.load.selfcheck import usable_cores
from kurabe.records import Endpoint, LoadRequestRow

START_MARGIN_S = 0.1  # from "every worker is ready" to the level's start
READY_TIMEOUT_S = 120.0


def worker_count(setting: str | int, streams: int, streams_per_worker: int,
                 backend: Backend) -> int:
    """``workers`` as configured: a number, or "auto" (one per ``streams_per_worker``
    streams, at most the usable cores); always 1 for a backend that lives in this process."""
    if backend.transport() is not None:
        return 1
    if setting == "auto":
        return max(1, min(usable_cores(), -(-streams // streams_per_worker)))
    return max(1, int(setting))


def _share(total: int, parts: int, i: int) -> int:
    return total // parts + (1 if i < total % parts else 0)


def split_level(plan: LevelPlan, *, model: str, workers: int, prompts: list[LoadPrompt],
                request: dict[str, Any], client_limits: dict[str, Any],
                drain_s: float) -> list[WorkerJob]:
    """The level's work, one job per worker."""
    measured_end = (plan.warmup_s + plan.duration_s) if plan.duration_s is not None else None
    count = (plan.warmup_requests + plan.requests) if plan.requests is not None else None
    arrivals: list[float] = []
    if plan.open_loop:
        arrivals = arrival_times(plan, horizon_s=measured_end, count=count)
    jobs = []
    for w in range(workers):
        jobs.append(WorkerJob(
            model=model, level=plan.index, worker=w, workers=workers,
            open_loop=plan.open_loop,
            streams=_share(plan.concurrency or 0, workers, w),
            arrivals_s=arrivals[w::workers],
            max_requests=None if count is None or plan.open_loop else _share(count, workers, w),
            warmup_s=plan.warmup_s,
            warmup_requests=_share(plan.warmup_requests, workers, w),
            end_s=measured_end, drain_s=drain_s, prompts=prompts, request=request,
            client_limits=client_limits))
    return [j for j in jobs if j.streams or j.arrivals_s or j.worker == 0]


def _dialect_recipe(backend: Backend) -> tuple[type[Backend], tuple, dict]:
    """How a worker process rebuilds the model's dialect (a class and its arguments)."""
    from kurabe.backends.llamacpp import LlamaCppDialect, LlamaCppEndpoint
    from kurabe.backends.openai import OpenAIEndpoint

    ep = backend.endpoint
    if isinstance(backend, OpenAIEndpoint):
        return type(backend), (backend.name, ep.base_url), {"model_id": ep.model_id}
    if isinstance(backend, LlamaCppDialect):
        return LlamaCppEndpoint, (backend.name, ep.base_url), {"model_id": ep.model_id}
    raise KurabeError(f"model '{backend.name}': its backend ({backend.kind}) cannot be used "
                      "from worker processes; set load.workers = 1")


def _run_loop(main: Any) -> Any:
    """A worker's event loop: uvloop's when installed (less CPU per event), else asyncio's."""
    return eventloop.run(main)


def _worker_main(job: WorkerJob, recipe: tuple[type[Backend], tuple, dict],
                 endpoint: Endpoint, urls: list[str], out: Any, go: Any, t0: Any) -> None:
    try:
        cls, args, kwargs = recipe
        dialect = cls(*args, **kwargs)
        backend = ReplicaBackend(dialect, endpoint)
        replicas = replicas_of(backend, urls, job.client_limits)

        def emit(rows: list[LoadRequestRow]) -> None:
            out.put(("rows", job.worker, rows))

        async def main() -> WorkerResult:
            await open_pools(job, replicas)
            out.put(("ready", job.worker, None))
            await asyncio.to_thread(go.wait)
            return await run_worker(job, replicas, t0.value, emit)

        result = _run_loop(main())
        out.put(("done", job.worker, result))
    except BaseException:
        out.put(("failed", job.worker, traceback.format_exc(limit=8)))


async def run_jobs(jobs: list[WorkerJob], backend: Backend, urls: list[str],
                   emit: Callable[[list[LoadRequestRow]], None]) -> tuple[list[WorkerResult],
                                                                          float]:
    """Run a level's jobs (one in this process, several in worker processes); rows go to
    ``emit`` as they land. Returns each worker's result and the level's ``t0``."""
    limits = jobs[0].client_limits
    if len(jobs) == 1:
        replicas = replicas_of(backend, urls, limits)
        await open_pools(jobs[0], replicas)
        t0 = time.perf_counter() + 0.01
        return [await run_worker(jobs[0], replicas, t0, emit)], t0
    ctx = multiprocessing.get_context("spawn")
    out, go, t0v = ctx.Queue(), ctx.Event(), ctx.Value("d", 0.0)
    recipe = _dialect_recipe(backend)
    procs = [ctx.Process(target=_worker_main, daemon=True, name=f"kurabe-load-{j.worker}",
                         args=(j, recipe, backend.endpoint, urls, out, go, t0v))
             for j in jobs]
    for p in procs:
        p.start()
    results: list[WorkerResult] = []
    failures: list[str] = []
    ready = 0
    t0 = 0.0
    deadline = time.monotonic() + READY_TIMEOUT_S
    try:
        while len(results) + len(failures) < len(procs):
            try:
                kind, worker, payload = await asyncio.to_thread(out.get, True, 0.25)
            except queue.Empty:
                if ready < len(procs) and time.monotonic() > deadline:
                    raise KurabeError(f"load workers: only {ready} of {len(procs)} started "
                                      f"within {READY_TIMEOUT_S:.0f} s") from None
                if not any(p.is_alive() for p in procs) and out.empty():
                    raise KurabeError("load workers: a worker process exited without its "
                                      "results") from None
                continue
            if kind == "ready":
                ready += 1
                if ready == len(procs):
                    t0 = t0v.value = time.perf_counter() + START_MARGIN_S
                    go.set()
            elif kind == "rows":
                emit(payload)
            elif kind == "done":
                results.append(payload)
            else:
                failures.append(f"worker {worker}: {payload}")
                go.set()
    finally:
        go.set()
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    if failures:
        raise RuntimeError("load worker failed:\n" + "\n".join(failures))
    return sorted(results, key=lambda r: r.worker), t0
