"""The client checking itself: how late its event loop runs, and the CPU it uses.

A load generator that cannot keep up measures itself, not the server: its timestamps come
late and its requests leave late. A periodic 10 ms timer shows it: how late each tick fires
is the event loop's lag (a busy or starved client lags). The CPU time of the process over a
level says how much of the machine the client took.
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time

import psutil

LAG_TICK_S = 0.010
IN_FLIGHT_EVERY_S = 0.25
# Makes the client's own process compete for its interpreter lock with this duty cycle
# (0-1): a real CPU shortage of the client, used to test that a starved client is seen.
STARVE_ENV = "KURABE_LOAD_STARVE_DUTY"


def summary(values: list[float]) -> dict:
    """p50, p99, max and n of ``values`` (nearest-rank percentiles; None when empty)."""
    if not values:
        return {"p50": None, "p99": None, "max": None, "n": 0}
    ordered = sorted(values)

    def rank(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.5) - 1))]

    return {"p50": rank(0.50), "p99": rank(0.99), "max": ordered[-1], "n": len(ordered)}


class LoopLagMonitor:
    """Records how late a 10 ms periodic timer fires on the running loop."""

    def __init__(self) -> None:
        self.lags_s: list[float] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._tick())

    async def _tick(self) -> None:
        while True:
            due = time.perf_counter() + LAG_TICK_S
            await asyncio.sleep(LAG_TICK_S)
            self.lags_s.append(max(0.0, time.perf_counter() - due))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass


def process_cpu_s() -> float:
    """CPU seconds (user + system) this process has used."""
    t = os.times()
    return t.user + t.system


def tree_cpu_s(pids: list[int]) -> float | None:
    """CPU seconds used so far by processes ``pids`` and their children (None: none is
    readable)."""
    total, seen = 0.0, False
    for pid in pids:
        try:
            root = psutil.Process(pid)
            procs = [root, *root.children(recursive=True)]
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        for p in procs:
            try:
                t = p.cpu_times()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            total += t.user + t.system
            seen = True
    return total if seen else None


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class Starver:
    """Holds the interpreter lock for ``duty`` of every 100 ms from a thread (sorting a
    list is one long C call), so the event loop gets only the rest: a CPU-starved client."""

    PERIOD_S = 0.1

    def __init__(self, duty: float) -> None:
        self.duty = min(max(duty, 0.0), 0.95)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="starver", daemon=True)
        self._data = [random.random() for _ in range(200_000)]

    @classmethod
    def from_env(cls) -> Starver | None:
        value = os.environ.get(STARVE_ENV)
        return cls(float(value)) if value else None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        busy_s = self.duty * self.PERIOD_S
        while not self._stop.is_set():
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < busy_s:
                sorted(self._data)
            self._stop.wait(self.PERIOD_S - busy_s)
