"""Sampling the machine while a run runs: was anything else using it?

A speed figure is only as good as the machine it was measured on: another process using the
CPU slows an engine down, and by different amounts for different models. So while the
orchestrator runs its phases, a background thread samples the machine at a fixed interval
(1 s; ``KURABE_SAMPLE_INTERVAL_S`` changes it) with psutil and, where the ``nvidia-ml-py``
bindings and a driver are present, NVML. Each ``MachineSample`` holds, for the interval
before it:

- the CPU time of the whole machine (busy = everything but idle and iowait, psutil's
  definition, so time stolen by a hypervisor counts as busy), on the cores kurabe may use;
- the CPU time of the engines kurabe started (``Backend.pid``) and of their children;
- the CPU time of kurabe's own process (its client, the in-process scripted backend, this
  sampler);
- the rest: ``other = busy - engines - kurabe``, never below zero;
- the 1-minute load average, the current CPU frequency, and per GPU its utilisation and
  memory in use.

Samples are written in batches (every few seconds) on the sampler's own store connection, so
an interrupted run keeps what was sampled up to its last batch. A sampler that fails stops
sampling and says why (``error``); it never fails the run.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import psutil

from kurabe import KurabeError
from kurabe.records import JSON, MachineSample

DEFAULT_INTERVAL_S = 1.0
INTERVAL_ENV = "KURABE_SAMPLE_INTERVAL_S"
FLUSH_EVERY_S = 5.0


def sample_interval() -> float:
    """The sampling interval: ``KURABE_SAMPLE_INTERVAL_S`` when set, else 1 s."""
    text = os.environ.get(INTERVAL_ENV, "").strip()
    if not text:
        return DEFAULT_INTERVAL_S
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0.01 <= value <= 3600:
        raise KurabeError(f"{INTERVAL_ENV}={text!r}: expected seconds between 0.01 and 3600")
    return value


def usable_cpus() -> list[int]:
    """The CPUs this process may run on (all of them where the OS cannot say)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(psutil.cpu_count() or 1))


def _busy(t: Any) -> float:
    """psutil's busy time of one ``cpu_times`` entry: all but idle and iowait (guest time is
    already inside user time on Linux, so it is not added twice)."""
    total = sum(t) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)
    return float(total - t.idle - getattr(t, "iowait", 0.0))


class _CpuClock:
    """Busy CPU-seconds of the usable cores, summed."""

    def __init__(self) -> None:
        self.cpus = usable_cpus()
        n = len(psutil.cpu_times(percpu=True))
        # When kurabe may use every core, the machine-wide line is the same sum, cheaper.
        self.all = len(self.cpus) >= n or max(self.cpus) >= n
        self.cores = n if self.all else len(self.cpus)

    def busy_s(self) -> float:
        if self.all:
            return _busy(psutil.cpu_times())
        per = psutil.cpu_times(percpu=True)
        return sum(_busy(per[i]) for i in self.cpus)


class _ProcessTrees:
    """CPU-seconds used by a set of processes and all their descendants since the last call.

    A process first seen is counted from its start when it started after the previous call
    (it was born during the interval), otherwise from now on. A process that exits between
    two calls loses its last interval (it is then counted as other load)."""

    def __init__(self, roots: Iterable[int]) -> None:
        self.roots: list[psutil.Process] = []
        for pid in roots:
            with contextlib.suppress(psutil.Error):
                self.roots.append(psutil.Process(pid))
        self.seen: dict[tuple[int, float], float] = {}

    def cpu_s(self, since_unix_s: float | None) -> float:
        procs: list[psutil.Process] = []
        for root in self.roots:
            with contextlib.suppress(psutil.Error):
                procs += [root, *root.children(recursive=True)]
        used, now = 0.0, {}
        for p in procs:
            try:
                with p.oneshot():
                    key = (p.pid, p.create_time())
                    t = p.cpu_times()
            except psutil.Error:
                continue
            total = t.user + t.system
            before = self.seen.get(key)
            if before is not None:
                used += max(total - before, 0.0)
            elif since_unix_s is not None and key[1] >= since_unix_s:
                used += total
            now[key] = total
        self.seen = now
        return used


class _Gpus:
    """GPU utilisation and memory through NVML, when ``pynvml`` (nvidia-ml-py) is installed
    and a driver answers; otherwise nothing."""

    def __init__(self) -> None:
        self.nvml: Any = None
        self.handles: list[tuple[int, Any, str]] = []
        try:
            nvml = importlib.import_module("pynvml")
            nvml.nvmlInit()
        except Exception:  # not installed, no driver, no device: no GPU figures
            return
        self.nvml = nvml
        try:
            for i in range(nvml.nvmlDeviceGetCount()):
                handle = nvml.nvmlDeviceGetHandleByIndex(i)
                name = nvml.nvmlDeviceGetName(handle)
                self.handles.append((i, handle, name.decode() if isinstance(name, bytes)
                                     else str(name)))
        except Exception:
            self.close()

    def read(self) -> list[JSON]:
        out: list[JSON] = []
        for index, handle, name in self.handles:
            entry: JSON = {"index": index, "name": name}
            with contextlib.suppress(Exception):
                entry["util_pct"] = float(self.nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            with contextlib.suppress(Exception):
                mem = self.nvml.nvmlDeviceGetMemoryInfo(handle)
                entry["mem_used_bytes"], entry["mem_total_bytes"] = int(mem.used), int(mem.total)
            out.append(entry)
        return out

    def close(self) -> None:
        if self.nvml is not None:
            with contextlib.suppress(Exception):
                self.nvml.nvmlShutdown()
        self.nvml, self.handles = None, []


def _load_1m() -> float | None:
    try:
        return float(psutil.getloadavg()[0])
    except (OSError, AttributeError):
        return None


def _freq_mhz() -> float | None:
    try:
        freq = psutil.cpu_freq()
    except (OSError, NotImplementedError, AttributeError, RuntimeError):
        return None
    return float(freq.current) if freq is not None and freq.current else None


class MachineSampler:
    """A background thread that samples the machine every ``interval_s`` seconds and hands
    batches of ``MachineSample`` to ``write`` (from the sampler's thread).

    ``engine_pids``: the processes kurabe started as engines; their children are included.
    """

    def __init__(self, write: Callable[[list[MachineSample]], None],
                 engine_pids: Iterable[int | None] = (), *, interval_s: float | None = None,
                 flush_every_s: float = FLUSH_EVERY_S) -> None:
        self.write = write
        self.engine_pids = [pid for pid in engine_pids if pid]
        self.interval_s = interval_s if interval_s is not None else sample_interval()
        self.flush_every_s = flush_every_s
        self.error: str | None = None
        self.taken = 0
        self._stop = threading.Event()
        self._started = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start sampling; returns once the first reading (the baseline) is taken, so
        everything after this call is covered."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="kurabe-sampler", daemon=True)
        self._thread.start()
        self._started.wait(timeout=10.0)

    def stop(self) -> None:
        """Take a last sample, write what is pending and end the thread (safe to call twice)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval_s + 10.0)
            if self._thread.is_alive():
                self.error = self.error or "the sampler did not stop in time"

    def __enter__(self) -> MachineSampler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the thread ------------------------------------------------------------------------

    def _run(self) -> None:
        gpus: _Gpus | None = None
        pending: list[MachineSample] = []
        try:
            gpus = _Gpus()
            cpu = _CpuClock()
            engines = _ProcessTrees(self.engine_pids)
            me = psutil.Process()
            state = self._read(cpu, engines, me, None)
            self._started.set()
            last_flush = time.monotonic()
            while True:
                wait = max(state["mono"] + self.interval_s - time.monotonic(), 0.0)
                stopping = self._stop.wait(wait)
                elapsed = time.monotonic() - state["mono"]
                # On stop, a last partial interval is kept when it is long enough to mean
                # something (a quarter of an interval).
                if not stopping or elapsed >= self.interval_s / 4:
                    now = self._read(cpu, engines, me, state["unix"])
                    pending.append(self._sample(cpu, state, now, gpus))
                    self.taken += 1
                    state = now
                if stopping or time.monotonic() - last_flush >= self.flush_every_s:
                    pending = self._flush(pending)
                    last_flush = time.monotonic()
                if stopping:
                    break
        except Exception as exc:
            self.error = f"machine sampling stopped: {type(exc).__name__}: {exc}"
            self._flush(pending)
        finally:
            self._started.set()
            if gpus is not None:
                gpus.close()

    def _flush(self, pending: list[MachineSample]) -> list[MachineSample]:
        """Write ``pending``; what could not be written is kept for the next try."""
        if not pending:
            return pending
        try:
            self.write(pending)
        except Exception as exc:  # a locked or closed store: keep sampling, try again
            self.error = f"machine samples not written: {type(exc).__name__}: {exc}"
            return pending[-3600:]
        return []

    @staticmethod
    def _read(cpu: _CpuClock, engines: _ProcessTrees, me: psutil.Process,
              since_unix_s: float | None) -> dict[str, float]:
        mine = me.cpu_times()
        return {"mono": time.monotonic(), "unix": time.time(), "busy": cpu.busy_s(),
                "engines": engines.cpu_s(since_unix_s), "kurabe": mine.user + mine.system}

    @staticmethod
    def _sample(cpu: _CpuClock, before: dict[str, float], now: dict[str, float],
                gpus: _Gpus) -> MachineSample:
        interval = max(now["mono"] - before["mono"], 1e-9)
        # Counters tick in 10 ms steps: a short interval can read a little over its span.
        busy = min(max(now["busy"] - before["busy"], 0.0), interval * cpu.cores)
        engines = now["engines"]
        kurabe = max(now["kurabe"] - before["kurabe"], 0.0)
        return MachineSample(
            t_unix_s=now["unix"], interval_s=interval, usable_cores=cpu.cores,
            cpu_busy_pct=100.0 * busy / (interval * cpu.cores),
            engine_cpu_s=engines, kurabe_cpu_s=kurabe,
            other_cpu_s=max(busy - engines - kurabe, 0.0),
            load_1m=_load_1m(), cpu_freq_mhz=_freq_mhz(), gpus=gpus.read())
