"""The machine while the speed was measured: the samples summarised, and the busy rule.

The sampler (``kurabe.sampler``) stores one ``MachineSample`` per interval for the whole run.
The speed figures come from the measured (and swept) requests only, so the samples that
decide whether the machine was busy are those whose interval overlaps the span from the first
such request being sent to the last one ending (all samples when no request is stored).

**Busy rule.** A sample is busy when processes other than the engines kurabe started and
kurabe itself used more than ``BUSY_CORE_SHARE`` (10%) of the usable cores' time during its
interval (on 8 cores: more than 0.8 of a core). The run is busy when more than
``BUSY_SAMPLE_SHARE`` (20%) of its samples were busy. A busy run gets the ``busy_machine``
fairness warning: its speed figures are lower than the same models would reach on a quiet
machine, and not by the same amount for each model, so a comparison inside it may be off too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import median
from typing import Any

from kurabe.analysis.speed import FairnessWarning
from kurabe.records import MachineSample, RequestRow
from kurabe.store import Store

BUSY_CORE_SHARE = 0.10  # a sample is busy above this share of the usable cores used by others
BUSY_SAMPLE_SHARE = 0.20  # a run is busy when more than this share of its samples are busy
LOAD_DIFFERENCE = 0.10  # compare: median other-process share of the cores differing by more
FREQ_DIFFERENCE = 0.10  # compare: median CPU frequencies differing by more than this


def other_cores(s: MachineSample) -> float:
    """Cores' worth of CPU used by other processes during the sample's interval."""
    return s.other_cpu_s / s.interval_s if s.interval_s > 0 else 0.0


def is_busy(s: MachineSample) -> bool:
    return other_cores(s) > BUSY_CORE_SHARE * s.usable_cores


@dataclass
class MachineLoad:
    """What the machine was doing while the speed was measured (``window``), from the run's
    samples; ``series`` keeps every sample of the run for the chart."""

    n_samples: int  # all samples of the run
    n_window: int  # samples overlapping the measured span (the ones summarised below)
    interval_s: float  # median sampling interval
    usable_cores: int
    window: tuple[float, float] | None  # unix seconds; None: no request stored
    other_cores_median: float
    other_cores_max: float
    engine_cores_median: float
    kurabe_cores_median: float
    cpu_busy_pct_median: float
    busy_samples: int
    busy: bool
    load_1m_median: float | None = None
    load_1m_max: float | None = None
    cpu_freq_mhz_median: float | None = None
    cpu_freq_mhz_min: float | None = None
    cpu_freq_mhz_max: float | None = None
    gpus: list[dict[str, Any]] = field(default_factory=list)
    series: list[dict[str, Any]] = field(default_factory=list)

    @property
    def busy_share(self) -> float:
        return self.busy_samples / self.n_window if self.n_window else 0.0

    @property
    def other_share_median(self) -> float:
        return self.other_cores_median / self.usable_cores if self.usable_cores else 0.0

    @property
    def threshold_cores(self) -> float:
        return BUSY_CORE_SHARE * self.usable_cores

    def sentence(self) -> str:
        """One line for the report."""
        parts = [f"other processes used a median {self.other_cores_median:.2f} cores "
                 f"(max {self.other_cores_max:.2f}) of {self.usable_cores}",
                 f"the engines {self.engine_cores_median:.2f}",
                 f"kurabe {self.kurabe_cores_median:.2f}"]
        if self.load_1m_median is not None and self.load_1m_max is not None:
            parts.append(f"load average {self.load_1m_median:.2f} (max {self.load_1m_max:.2f})")
        if self.cpu_freq_mhz_median is not None:
            parts.append(f"CPU {self.cpu_freq_mhz_median / 1000:.2f} GHz")
        for g in self.gpus:
            if g.get("util_pct_median") is not None:
                parts.append(f"GPU {g['index']} {g['util_pct_median']:.0f}% busy"
                             + (f", {g['mem_used_max_bytes'] / 2**30:.1f} GiB used at most"
                                if g.get("mem_used_max_bytes") is not None else ""))
        verdict = "busy" if self.busy else "quiet"
        return (f"{'; '.join(parts)}. {self.busy_samples} of {self.n_window} samples "
                f"({self.busy_share:.0%}) were busy: the machine counts as {verdict} "
                f"(busy: others above {BUSY_CORE_SHARE:.0%} of the cores, "
                f"{self.threshold_cores:.2g} cores here, in more than "
                f"{BUSY_SAMPLE_SHARE:.0%} of the samples; one sample every "
                f"{self.interval_s:.3g} s)")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("series")
        data.update(busy_share=self.busy_share, other_share_median=self.other_share_median,
                    busy_core_share=BUSY_CORE_SHARE, busy_sample_share=BUSY_SAMPLE_SHARE)
        return data


def measured_window(rows: list[RequestRow]) -> tuple[float, float] | None:
    """From the first request sent to the last one ended (unix seconds)."""
    spans = []
    for r in rows:
        rec = r.record or {}
        chunks = rec.get("chunks") or []
        took = rec.get("t_done_s") or (chunks[-1][0] if chunks else 0.0)
        spans.append((r.sent_at_unix_s, r.sent_at_unix_s + float(took or 0.0)))
    if not spans:
        return None
    return min(s for s, _ in spans), max(e for _, e in spans)


def _in_window(s: MachineSample, window: tuple[float, float]) -> bool:
    return s.t_unix_s > window[0] and s.t_unix_s - s.interval_s < window[1]


def _med(values: list[float]) -> float | None:
    return median(values) if values else None


def summarise_machine(samples: list[MachineSample], window: tuple[float, float] | None
                      ) -> MachineLoad | None:
    """The load over ``window`` (all samples when none overlap it); None: no samples."""
    if not samples:
        return None
    chosen = [s for s in samples if _in_window(s, window)] if window else []
    chosen = chosen or samples
    cores = max(s.usable_cores for s in chosen)

    def per_core(attr: str) -> list[float]:
        return [getattr(s, attr) / s.interval_s for s in chosen if s.interval_s > 0]

    other = [other_cores(s) for s in chosen]
    loads = [s.load_1m for s in chosen if s.load_1m is not None]
    freqs = [s.cpu_freq_mhz for s in chosen if s.cpu_freq_mhz]
    t0 = samples[0].t_unix_s - samples[0].interval_s
    series = [{"t_s": s.t_unix_s - t0, "interval_s": s.interval_s,
               "other_cores": other_cores(s), "engine_cores": s.engine_cpu_s / s.interval_s,
               "kurabe_cores": s.kurabe_cpu_s / s.interval_s, "load_1m": s.load_1m,
               "busy": is_busy(s),
               "in_window": window is not None and _in_window(s, window)}
              for s in samples if s.interval_s > 0]
    busy_samples = sum(1 for s in chosen if is_busy(s))
    return MachineLoad(
        n_samples=len(samples), n_window=len(chosen),
        interval_s=median(s.interval_s for s in samples), usable_cores=cores,
        window=window if window and chosen is not samples else None,
        other_cores_median=median(other), other_cores_max=max(other),
        engine_cores_median=_med(per_core("engine_cpu_s")) or 0.0,
        kurabe_cores_median=_med(per_core("kurabe_cpu_s")) or 0.0,
        cpu_busy_pct_median=median(s.cpu_busy_pct for s in chosen),
        busy_samples=busy_samples, busy=busy_samples > BUSY_SAMPLE_SHARE * len(chosen),
        load_1m_median=_med(loads), load_1m_max=max(loads) if loads else None,
        cpu_freq_mhz_median=_med(freqs), cpu_freq_mhz_min=min(freqs) if freqs else None,
        cpu_freq_mhz_max=max(freqs) if freqs else None,
        gpus=_gpus(chosen), series=series)


def _gpus(samples: list[MachineSample]) -> list[dict[str, Any]]:
    by_index: dict[int, list[dict[str, Any]]] = {}
    for s in samples:
        for g in s.gpus:
            by_index.setdefault(int(g.get("index", 0)), []).append(g)
    out = []
    for index, entries in sorted(by_index.items()):
        util = [float(g["util_pct"]) for g in entries if g.get("util_pct") is not None]
        mem = [int(g["mem_used_bytes"]) for g in entries if g.get("mem_used_bytes") is not None]
        out.append({"index": index, "name": entries[-1].get("name"),
                    "util_pct_median": _med(util), "util_pct_max": max(util) if util else None,
                    "mem_used_max_bytes": max(mem) if mem else None,
                    "mem_total_bytes": entries[-1].get("mem_total_bytes")})
    return out


def machine_load(store: Store, rows: list[RequestRow] | None = None) -> MachineLoad | None:
    """The run's load while its speed was measured. ``rows``: the measured and swept requests
    (read from the store when not given). None: the run has no samples (made before kurabe
    sampled the machine)."""
    if rows is None:
        rows = [*store.requests(phase="measure", status="ok"),
                *store.requests(phase="sweep", status="ok")]
    return summarise_machine(store.machine_samples(), measured_window(rows))


def busy_machine_warning(load: MachineLoad | None) -> FairnessWarning | None:
    if load is None or not load.busy:
        return None
    return FairnessWarning(
        "busy_machine",
        f"the machine was busy while speed was measured: in {load.busy_samples} of "
        f"{load.n_window} samples ({load.busy_share:.0%}) processes other than the engines "
        f"and kurabe used more than {BUSY_CORE_SHARE:.0%} of the {load.usable_cores} cores "
        f"(median {load.other_cores_median:.2f} cores, max {load.other_cores_max:.2f}); "
        "the speeds are lower than on a quiet machine, by different amounts for each model, "
        "so run again on a quiet machine before trusting them or a comparison between them")


def load_difference(before: MachineLoad | None, after: MachineLoad | None) -> list[str]:
    """Notes for ``kurabe compare`` when two runs ran under different machine load."""
    if before is None and after is None:
        return []
    if before is None or after is None:
        which = "before" if before is None else "after"
        return [f"the {which} run has no machine samples (made before kurabe sampled the "
                "machine), so whether both ran under the same load is unknown"]

    def said(load: MachineLoad) -> str:
        return (f"other processes used a median {load.other_cores_median:.2f} of "
                f"{load.usable_cores} cores, busy in {load.busy_share:.0%} of samples"
                + (" (a busy machine)" if load.busy else ""))

    notes = []
    if (before.busy != after.busy
            or abs(before.other_share_median - after.other_share_median) > LOAD_DIFFERENCE):
        notes.append(f"the runs ran under different machine load: before, {said(before)}; "
                     f"after, {said(after)}; speed differences between them may come from "
                     "the load rather than from what changed")
    fa, fb = before.cpu_freq_mhz_median, after.cpu_freq_mhz_median
    if fa and fb and abs(fb / fa - 1) > FREQ_DIFFERENCE:
        notes.append(f"the CPU ran at different frequencies: a median {fa / 1000:.2f} GHz "
                     f"before, {fb / 1000:.2f} GHz after")
    return notes


def compare_load(before_dir: str | Path, after_dir: str | Path) -> list[str]:
    """``load_difference`` of two run folders."""
    with Store.open(Path(before_dir)) as a, Store.open(Path(after_dir)) as b:
        return load_difference(machine_load(a), machine_load(b))
