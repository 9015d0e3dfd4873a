"""What llama.cpp says it allocated: buffer sizes parsed from a load log.

A llama.cpp server started at verbosity 4 (``-lv 4``) logs every buffer it allocates while
loading a model and creating its context, for example::

    load_tensors: offloaded 31/31 layers to GPU
    load_tensors:   CPU_Mapped model buffer size =    92.10 MiB
    llama_context: n_ctx                 = 4096
    llama_context:        CPU  output buffer size =     0.19 MiB
    llama_kv_cache_iswa: creating     SWA KV cache, size = 1024 cells
    llama_kv_cache:        CPU KV buffer size =    15.00 MiB
    llama_kv_cache: size =   15.00 MiB (  1024 cells,  15 layers,  1/1 seqs), K (f16): ...
    llama_memory_recurrent:        CPU RS buffer size =     0.03 MiB
    llama_memory_recurrent: size =    0.03 MiB (     2 cells,   4 layers,  2 seqs  0 rs_seq), ...
    sched_reserve:        CPU compute buffer size =    16.64 MiB

:func:`parse_load_log` turns such text into :class:`ObservedBuffers` (bytes per buffer kind
and device). The figures are printed in MiB with two decimals, so each one is known only to
within half of ``resolution_bytes`` (0.01 MiB); compare with :meth:`ObservedBuffers.tolerance`.

Parsing is line by line with forgiving patterns: unknown lines are ignored, and a log from a
load that failed part-way yields whatever was logged before the failure (plus the error
lines). A log file that several starts appended to holds several loads; :func:`parse_load_logs`
returns each, :func:`parse_load_log` the last one that allocated anything.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

MIB = 1024 * 1024

_NUM = r"([0-9]+(?:\.[0-9]*)?)"
_MIB = _NUM + r"\s*MiB"

_LOAD_START = re.compile(r"llama_model_loader:\s+loaded meta data")
_MODEL_BUF = re.compile(r"(\S+)\s+model buffer size\s*=\s*" + _MIB)
_OFFLOADED = re.compile(r"offloaded\s+(\d+)\s*/\s*(\d+)\s+layers to GPU")
_OUTPUT_BUF = re.compile(r"(\S+)\s+output buffer size\s*=\s*" + _MIB)
_COMPUTE_BUF = re.compile(r"(\S+)\s+compute buffer size\s*=\s*" + _MIB)
_KV_BUF = re.compile(r"(\S+)\s+KV buffer size\s*=\s*" + _MIB)
_RS_BUF = re.compile(r"(\S+)\s+RS buffer size\s*=\s*" + _MIB)
_KV_CREATING = re.compile(r"creating\s+(.+?)\s+KV cache,\s*size\s*=\s*(\d+)\s*cells")
_KV_SIZE = re.compile(
    r"kv_cache\w*:\s+size\s*=\s*" + _MIB
    + r"\s*\(\s*(\d+)\s*cells,\s*(\d+)\s*layers,\s*(\d+)\s*(?:/\s*(\d+))?\s*seqs\s*\)"
    + r",\s*K\s*\(\s*(\w+)\s*\)\s*:\s*" + _MIB
    + r",\s*V\s*\(\s*(\w+)\s*\)\s*:\s*" + _MIB
)
_RS_SIZE = re.compile(
    r"memory_recurrent\w*:\s+size\s*=\s*" + _MIB
    + r"\s*\(\s*(\d+)\s*cells,\s*(\d+)\s*layers,\s*(\d+)\s*seqs(?:\s+(\d+)\s*rs_seq)?\s*\)"
    + r",\s*R\s*\(\s*(\w+)\s*\)\s*:\s*" + _MIB
    + r",\s*S\s*\(\s*(\w+)\s*\)\s*:\s*" + _MIB
    + r"(?:,\s*P\s*\(\s*(\w+)\s*\)\s*:\s*" + _MIB + r")?"
)
_CONTEXT_KV = re.compile(r"llama_context:\s+(\w+)\s*=\s*(\S+)\s*$")
_FA_RESOLVED = re.compile(r"Flash Attention\s+(enabled|not supported)")
_FA_FORCED = re.compile(r"enabling flash_attn since")
# "0.00.008.697 E func: message" (common log format with timestamps) or a bare error line
_ERROR_LEVEL = re.compile(r"^\s*[0-9.]+\s+E\s+(.*\S)")
_ERROR_TEXT = re.compile(r"^\s*(\w+:\s*(?:error|failed|exception)\b.*\S)", re.IGNORECASE)

_TRUE = {"1", "true", "enabled", "on", "yes"}
_FALSE = {"0", "false", "disabled", "off", "no"}


def mib_to_bytes(mib: str | float) -> int:
    """A MiB figure as logged -> bytes (rounded to the nearest byte)."""
    return int(round(float(mib) * MIB))


def _decimals(figure: str) -> int:
    return len(figure.split(".", 1)[1]) if "." in figure else 0


def _add(d: dict[str, int], key: str, value: int) -> None:
    d[key] = d.get(key, 0) + value


@dataclass
class KVCacheInfo:
    """One attention KV cache (a model with sliding-window layers has two).

    ``label`` is ``"full"`` for the ordinary (or non-SWA) cache, ``"swa"`` for the
    sliding-window one, otherwise the name llama.cpp gave it, lower-cased. ``cells`` is per
    stream; ``seqs``/``streams`` are the ``N/M seqs`` figures (with a non-unified cache each
    sequence is its own stream of ``cells`` cells). ``buffers`` holds this cache's
    ``KV buffer`` lines by device.
    """

    label: str = "full"
    cells: int | None = None
    layers: int | None = None
    seqs: int | None = None
    streams: int | None = None
    k_type: str | None = None
    k_bytes: int | None = None
    v_type: str | None = None
    v_bytes: int | None = None
    size_bytes: int | None = None
    planned_cells: int | None = None  # from "creating ... KV cache, size = N cells"
    buffers: dict[str, int] = field(default_factory=dict)

    @property
    def buffer_bytes(self) -> int:
        return sum(self.buffers.values())


@dataclass
class RecurrentStateInfo:
    """The fixed-size state of recurrent / linear-attention layers (hybrid models).

    R is the convolution (or token-shift) state, S the SSM state, P an extra per-layer
    state some models have. ``cells`` is the number of state slots (one per sequence).
    """

    cells: int | None = None
    layers: int | None = None
    seqs: int | None = None
    rs_seq: int | None = None
    r_type: str | None = None
    r_bytes: int | None = None
    s_type: str | None = None
    s_bytes: int | None = None
    p_type: str | None = None
    p_bytes: int | None = None
    size_bytes: int | None = None
    buffers: dict[str, int] = field(default_factory=dict)

    @property
    def buffer_bytes(self) -> int:
        return sum(self.buffers.values())


@dataclass
class ObservedBuffers:
    """Buffers one llama.cpp model load reported, in bytes, by buffer name (device).

    Buffer names are llama.cpp's: ``CPU``, ``CPU_Mapped`` (mmap'd weights), ``CPU_REPACK``,
    ``CUDA0``, ``CUDA_Host`` (pinned host memory), ``Metal``, ...

    * ``model_buffers``: weights (``load_tensors: X model buffer size``), summed per name.
    * ``kv_buffers``: all attention KV caches, summed per name; ``kv_caches`` details each.
    * ``recurrent_buffers`` / ``recurrent``: recurrent-state buffers (``RS buffer``).
    * ``output_buffers``: logits/embeddings output buffer.
    * ``compute_buffers``: the scheduler's compute buffers (last reservation per name).
    * ``layers_offloaded`` / ``layers_offloadable``: ``offloaded N/M layers to GPU``.
    * ``n_ctx``, ``n_ctx_seq``, ``n_seq_max``, ``n_batch``, ``n_ubatch``, ``flash_attn`` (as
      logged: ``auto``/``enabled``/``disabled``, or ``0``/``1`` in older builds),
      ``flash_attn_enabled`` (the outcome, when the log says it), ``kv_unified``;
      ``context`` keeps every ``llama_context: key = value`` line as text.
    * ``resolution_bytes``: the step of the printed figures (0.01 MiB = 10486 bytes at two
      decimals); every figure is within half of it of the true size.
    * ``errors``: error lines (a failed load).
    """

    model_buffers: dict[str, int] = field(default_factory=dict)
    kv_buffers: dict[str, int] = field(default_factory=dict)
    kv_caches: list[KVCacheInfo] = field(default_factory=list)
    recurrent_buffers: dict[str, int] = field(default_factory=dict)
    recurrent: list[RecurrentStateInfo] = field(default_factory=list)
    output_buffers: dict[str, int] = field(default_factory=dict)
    compute_buffers: dict[str, int] = field(default_factory=dict)
    layers_offloaded: int | None = None
    layers_offloadable: int | None = None
    n_ctx: int | None = None
    n_ctx_seq: int | None = None
    n_seq_max: int | None = None
    n_batch: int | None = None
    n_ubatch: int | None = None
    flash_attn: str | None = None
    flash_attn_enabled: bool | None = None
    kv_unified: bool | None = None
    context: dict[str, str] = field(default_factory=dict)
    resolution_bytes: int = math.ceil(MIB / 100)
    errors: list[str] = field(default_factory=list)

    # -- totals ------------------------------------------------------------------------------

    def _groups(self) -> tuple[dict[str, int], ...]:
        return (self.model_buffers, self.kv_buffers, self.recurrent_buffers,
                self.output_buffers, self.compute_buffers)

    @property
    def n_figures(self) -> int:
        """How many logged figures ``total_bytes`` adds up."""
        return sum(len(g) for g in self._groups())

    @property
    def model_bytes(self) -> int:
        return sum(self.model_buffers.values())

    @property
    def kv_bytes(self) -> int:
        return sum(self.kv_buffers.values())

    @property
    def recurrent_bytes(self) -> int:
        return sum(self.recurrent_buffers.values())

    @property
    def output_bytes(self) -> int:
        return sum(self.output_buffers.values())

    @property
    def compute_bytes(self) -> int:
        return sum(self.compute_buffers.values())

    @property
    def total_bytes(self) -> int:
        """Everything the load reported: weights + KV + recurrent state + output + compute."""
        return (self.model_bytes + self.kv_bytes + self.recurrent_bytes + self.output_bytes
                + self.compute_bytes)

    def by_buffer(self) -> dict[str, int]:
        """Total bytes per buffer name across all kinds."""
        out: dict[str, int] = {}
        for group in self._groups():
            for name, n in group.items():
                _add(out, name, n)
        return out

    def tolerance(self, n_figures: int = 1) -> int:
        """Largest error of a sum of ``n_figures`` logged figures, in bytes: half a step of
        the printed precision each, plus a byte each for rounding MiB to whole bytes."""
        return n_figures * (self.resolution_bytes // 2 + 1)

    @property
    def total_tolerance_bytes(self) -> int:
        return self.tolerance(self.n_figures)

    def kv_cache(self, label: str) -> KVCacheInfo | None:
        for cache in self.kv_caches:
            if cache.label == label:
                return cache
        return None

    @property
    def empty(self) -> bool:
        return self.n_figures == 0 and not self.kv_caches and not self.recurrent

    # -- storage -----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (derived totals included for readers; ignored on load)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "kv_caches":
                value = [_plain(c) for c in value]
            elif f.name == "recurrent":
                value = [_plain(r) for r in value]
            elif isinstance(value, (dict, list)):
                value = type(value)(value)
            out[f.name] = value
        out["total_bytes"] = self.total_bytes
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ObservedBuffers:
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in data.items() if k in known}
        kw["kv_caches"] = [_build(KVCacheInfo, c) for c in data.get("kv_caches", [])]
        kw["recurrent"] = [_build(RecurrentStateInfo, r) for r in data.get("recurrent", [])]
        for name in ("model_buffers", "kv_buffers", "recurrent_buffers", "output_buffers",
                     "compute_buffers"):
            kw[name] = {str(k): int(v) for k, v in (data.get(name) or {}).items()}
        kw["context"] = {str(k): str(v) for k, v in (data.get("context") or {}).items()}
        kw["errors"] = [str(e) for e in data.get("errors") or []]
        return cls(**kw)


def _plain(obj) -> dict[str, Any]:
    return {f.name: (dict(getattr(obj, f.name)) if isinstance(getattr(obj, f.name), dict)
                     else getattr(obj, f.name)) for f in fields(obj)}


def _build(cls, data: dict[str, Any]):
    known = {f.name for f in fields(cls)}
    kw = {k: v for k, v in data.items() if k in known}
    kw["buffers"] = {str(k): int(v) for k, v in (data.get("buffers") or {}).items()}
    return cls(**kw)


def _flag(text: str) -> bool | None:
    low = text.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    return None


def _int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


class _Parser:
    def __init__(self) -> None:
        self.obs = ObservedBuffers()
        self.decimals: int | None = None
        self.pending_label: str | None = None
        self.pending_cells: int | None = None
        self.kv_pending: dict[str, int] = {}
        self.rs_pending: dict[str, int] = {}
        self.fa_resolved: bool | None = None

    def figure(self, text: str) -> int:
        d = _decimals(text)
        self.decimals = d if self.decimals is None else min(self.decimals, d)
        return mib_to_bytes(text)

    def line(self, line: str) -> None:
        obs = self.obs
        if "buffer size" in line:
            if m := _MODEL_BUF.search(line):
                _add(obs.model_buffers, m.group(1), self.figure(m.group(2)))
            elif m := _KV_BUF.search(line):
                n = self.figure(m.group(2))
                _add(obs.kv_buffers, m.group(1), n)
                _add(self.kv_pending, m.group(1), n)
            elif m := _RS_BUF.search(line):
                n = self.figure(m.group(2))
                _add(obs.recurrent_buffers, m.group(1), n)
                _add(self.rs_pending, m.group(1), n)
            elif m := _OUTPUT_BUF.search(line):
                obs.output_buffers[m.group(1)] = self.figure(m.group(2))
            elif m := _COMPUTE_BUF.search(line):
                obs.compute_buffers[m.group(1)] = self.figure(m.group(2))
            return
        if m := _KV_SIZE.search(line):
            label = self.pending_label or "full"
            obs.kv_caches.append(KVCacheInfo(
                label=label, cells=int(m.group(2)), layers=int(m.group(3)),
                seqs=int(m.group(4)), streams=_int(m.group(5)) if m.group(5) else None,
                k_type=m.group(6), k_bytes=self.figure(m.group(7)),
                v_type=m.group(8), v_bytes=self.figure(m.group(9)),
                size_bytes=self.figure(m.group(1)), planned_cells=self.pending_cells,
                buffers=self.kv_pending,
            ))
            self.pending_label, self.pending_cells, self.kv_pending = None, None, {}
            return
        if m := _RS_SIZE.search(line):
            obs.recurrent.append(RecurrentStateInfo(
                cells=int(m.group(2)), layers=int(m.group(3)), seqs=int(m.group(4)),
                rs_seq=_int(m.group(5)) if m.group(5) else None,
                r_type=m.group(6), r_bytes=self.figure(m.group(7)),
                s_type=m.group(8), s_bytes=self.figure(m.group(9)),
                p_type=m.group(10), p_bytes=self.figure(m.group(11)) if m.group(11) else None,
                size_bytes=self.figure(m.group(1)), buffers=self.rs_pending,
            ))
            self.rs_pending = {}
            return
        if m := _KV_CREATING.search(line):
            name = m.group(1).strip()
            low = name.lower()
            self.pending_label = {"non-swa": "full", "swa": "swa"}.get(low, low)
            self.pending_cells = int(m.group(2))
            return
        if m := _OFFLOADED.search(line):
            obs.layers_offloaded, obs.layers_offloadable = int(m.group(1)), int(m.group(2))
            return
        if m := _CONTEXT_KV.search(line):
            key, value = m.group(1), m.group(2)
            obs.context[key] = value
            if key in ("n_ctx", "n_ctx_seq", "n_ctx_per_seq", "n_seq_max", "n_batch",
                       "n_ubatch"):
                attr = "n_ctx_seq" if key == "n_ctx_per_seq" else key
                setattr(obs, attr, _int(value))
            elif key == "flash_attn":
                obs.flash_attn = value
            elif key == "kv_unified":
                obs.kv_unified = _flag(value)
            return
        if m := _FA_RESOLVED.search(line):
            self.fa_resolved = m.group(1) == "enabled"
            return
        if _FA_FORCED.search(line):
            self.fa_resolved = True
            return
        if m := _ERROR_LEVEL.match(line) or _ERROR_TEXT.match(line):
            obs.errors.append(m.group(1))

    def finish(self) -> ObservedBuffers:
        obs = self.obs
        # KV/RS buffer lines not followed by their summary line (a failed load)
        if self.kv_pending:
            obs.kv_caches.append(KVCacheInfo(label=self.pending_label or "full",
                                             planned_cells=self.pending_cells,
                                             buffers=self.kv_pending))
        if self.rs_pending:
            obs.recurrent.append(RecurrentStateInfo(buffers=self.rs_pending))
        if self.decimals is not None:
            obs.resolution_bytes = math.ceil(MIB / 10 ** self.decimals)
        if obs.flash_attn is not None:
            flag = _flag(obs.flash_attn)
            obs.flash_attn_enabled = flag if flag is not None else self.fa_resolved
        else:
            obs.flash_attn_enabled = self.fa_resolved
        return obs


def _sections(text: str) -> list[list[str]]:
    """Split a log into one list of lines per model load."""
    sections: list[list[str]] = [[]]
    started = False  # the current section already holds a load's first line
    for line in text.splitlines():
        if "llama_model_loader" in line and _LOAD_START.search(line):
            if started:
                sections.append([])
            started = True
        sections[-1].append(line)
    return sections


def parse_load_logs(text: str) -> list[ObservedBuffers]:
    """Every model load in ``text`` (a new load starts at ``llama_model_loader: loaded meta
    data``), in order. Text without such a line counts as a single load."""
    out = []
    for lines in _sections(text):
        parser = _Parser()
        for line in lines:
            parser.line(line)
        out.append(parser.finish())
    return out


def parse_load_log(text: str) -> ObservedBuffers:
    """The last model load in ``text`` that reported any buffer (else the last load)."""
    loads = parse_load_logs(text)
    for obs in reversed(loads):
        if not obs.empty:
            return obs
    return loads[-1]


def parse_load_log_file(path: str | Path) -> ObservedBuffers:
    """:func:`parse_load_log` on a log file (read as UTF-8, bad bytes replaced)."""
    return parse_load_log(Path(path).read_text(encoding="utf-8", errors="replace"))
