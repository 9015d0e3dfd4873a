"""Load profiles: the levels of a load run and each level's arrival schedule.

Closed loop (fixed concurrency, sweep): N streams, each sending its next request when the
last one ends. Open loop (constant rate, Poisson): requests sent at scheduled instants
whatever the server does, so a slow server builds a queue instead of slowing the client.
Poisson arrivals come from a seeded generator: the same seed gives the same schedule.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from kurabe.config import LoadConfig

OPEN_LOOP = ("rate", "poisson")


@dataclass
class LevelPlan:
    """One level as planned; ``spec`` is what the store keeps of it."""

    index: int
    profile: str  # concurrency | rate | poisson | sweep
    concurrency: int | None
    rate_per_s: float | None
    duration_s: float | None  # measured time after warm-up, or None: a request count
    requests: int | None  # measured requests after warm-up, or None: a duration
    warmup_s: float
    warmup_requests: int
    max_tokens: int
    seed: int

    @property
    def open_loop(self) -> bool:
        return self.profile in OPEN_LOOP

    def spec(self, load: LoadConfig, prompt_source: str) -> dict:
        return {"profile": self.profile, "concurrency": self.concurrency,
                "rate_per_s": self.rate_per_s, "duration_s": self.duration_s,
                "requests": self.requests, "warmup_s": self.warmup_s,
                "warmup_requests": self.warmup_requests, "prompt_source": prompt_source,
                "max_tokens": self.max_tokens, "fixed_length": load.fixed_length,
                "seed": self.seed, "slo": load.slo.model_dump()}


def level_plan(load: LoadConfig, index: int, *, concurrency: int | None = None,
               rate_per_s: float | None = None) -> LevelPlan:
    return LevelPlan(index=index, profile=load.profile, concurrency=concurrency,
                     rate_per_s=rate_per_s, duration_s=load.duration_s,
                     requests=load.requests, warmup_s=load.warmup_s,
                     warmup_requests=load.warmup_requests, max_tokens=load.max_tokens,
                     seed=load.seed + index)


def planned_levels(load: LoadConfig) -> list[LevelPlan]:
    """The levels known before the run: every fixed level; a sweep's first level (the next
    ones depend on what the previous ones measured, ``next_sweep_concurrency``)."""
    if load.sweep:
        return [level_plan(load, 0, concurrency=1)]
    if load.rate is not None:
        return [level_plan(load, i, rate_per_s=r) for i, r in enumerate(load.rate)]
    if load.poisson is not None:
        return [level_plan(load, i, rate_per_s=r) for i, r in enumerate(load.poisson)]
    return [level_plan(load, i, concurrency=c) for i, c in enumerate(load.concurrency or [1])]


def next_sweep_concurrency(load: LoadConfig, measured: list[tuple[int, float, bool]]
                           ) -> int | None:
    """The sweep's next concurrency, or None: it has found its knee. ``measured``: per
    level so far (concurrency, output tokens per second, whether its SLOs held). The sweep
    stops when throughput rose by less than ``knee_gain`` over the previous level, when an
    SLO broke, or at ``max_concurrency``."""
    if not measured:
        return 1
    concurrency, throughput, slo_held = measured[-1]
    if not slo_held or concurrency >= load.max_concurrency:
        return None
    if len(measured) >= 2:
        before = measured[-2][1]
        if before > 0 and throughput < before * (1 + load.knee_gain):
            return None
    return min(concurrency * 2, load.max_concurrency)


def arrival_times(plan: LevelPlan, *, horizon_s: float | None = None,
                  count: int | None = None) -> list[float]:
    """Scheduled send times (seconds from the level's start) of an open-loop level: at even
    intervals (``rate``) or with exponential gaps (``poisson``, seeded), until
    ``horizon_s`` or for ``count`` requests."""
    assert plan.rate_per_s is not None and plan.rate_per_s > 0
    rng = random.Random(plan.seed)
    times: list[float] = []
    t = 0.0
    while True:
        if count is not None and len(times) >= count:
            break
        # an arrival at the horizon itself (up to rounding) belongs to the next level
        if horizon_s is not None and t >= horizon_s - 1e-9:
            break
        times.append(t)
        # even arrivals as i / rate, not summed gaps: 10 gaps of 0.05 s sum to just under 0.5
        t = (t + rng.expovariate(plan.rate_per_s) if plan.profile == "poisson"
             else len(times) / plan.rate_per_s)
    return times
