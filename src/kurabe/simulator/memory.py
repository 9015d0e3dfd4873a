"""How much memory llama.cpp's server needs to run a GGUF model, from the file header alone.

:func:`plan_memory` predicts the buffers a ``llama-server`` load reports at ``-lv 4``:

* weights (``model buffer``): host and device parts, plus the CPU repack copy;
* the attention KV cache(s) (``KV buffer``), one per cache (full and sliding-window);
* the recurrent state of SSM / linear-attention layers (``RS buffer``);
* the logits output buffer (``output buffer``);
* the compute buffer (``compute buffer``): llama.cpp reserves it by allocating a worst-case
  graph. kurabe rebuilds that graph (one ubatch of prompt tokens through every layer) as a
  list of tensors and replays llama.cpp's graph allocator over it (tensors freed after their
  last use, in-place reuse, best-fit free blocks), which lands within a few percent of the
  logged figure for the architectures it knows and within ~15% otherwise.

The rules are those of the llama.cpp server kurabe starts (the ``xllamacpp`` wheel); each
carries a one-line "why". A plan is for that engine: other front ends reserve different
compute buffers for the same model (see docs/field-notes.md section 3).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import gguf

from kurabe import KurabeError
from kurabe.simulator.layout import (
    FULL,
    GATED_DELTA_NET,
    RECURRENT,
    SWA,
    LayerLayout,
    ModelLayout,
    derive_layout,
)

QT = gguf.GGMLQuantizationType

# KV cache types llama-server accepts (-ctk / -ctv).
CACHE_TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1")

# Why: llama.cpp pads n_ctx (and, per sequence, n_ctx_seq) up to a multiple of 256.
CTX_PAD = 256
# Why: ggml CPU buffers align every tensor to 32 bytes (TENSOR_ALIGNMENT).
TENSOR_ALIGNMENT = 32
# Why: the CPU backend repacks these weight types into interleaved layouts on x86 AVX2 when
# the row count is a multiple of 8 (ggml-cpu repack); the copy lives in a CPU_REPACK buffer.
REPACK_TYPES_AVX2 = {int(QT.Q4_0), int(QT.Q4_K), int(QT.IQ4_NL), int(QT.MXFP4)}
# Name prefixes of the "input layer": llama.cpp always keeps it in host memory.
INPUT_TENSOR_PREFIXES = ("token_embd.", "token_embd_norm.", "token_types.", "position_embd.",
                         "per_layer_token_embd.")
# Architectures whose multi-token-prediction blocks are skipped at load time unless the
# server loads the draft head (llama.cpp marks their tensors TENSOR_SKIP).
MTP_SKIPPED_ARCHS = {"bailingmoe3", "cohere2moe", "deepseek2", "deepseek32", "deepseek4",
                     "glm-dsa", "glm4moe", "glm5-next", "hy-v3", "mimo2", "nemotron_h",
                     "qwen35", "qwen35moe", "qwen3next", "step35"}


class PlanError(KurabeError):
    pass


# --------------------------------------------------------------------------------------------
# Type sizes
# --------------------------------------------------------------------------------------------


def type_traits(ggml_type: int | str) -> tuple[int, int]:
    """(block size in elements, bytes per block) of a GGML type, from gguf-py's table."""
    if isinstance(ggml_type, str):
        try:
            qtype = gguf.GGMLQuantizationType[ggml_type.upper()]
        except KeyError:
            raise PlanError(f"unknown GGML type {ggml_type!r}") from None
    else:
        qtype = QT(int(ggml_type))
    return gguf.GGML_QUANT_SIZES[qtype]


def row_bytes(ggml_type: int | str, n_elements: int) -> int:
    """Bytes of ``n_elements`` values of a type: elements / block size * block bytes."""
    block, size = type_traits(ggml_type)
    if n_elements % block:
        raise PlanError(f"{n_elements} elements is not a multiple of the "
                        f"{type_name(ggml_type)} block size {block}")
    return n_elements // block * size


def type_name(ggml_type: int | str) -> str:
    if isinstance(ggml_type, str):
        return ggml_type.lower()
    return QT(int(ggml_type)).name.lower()


def tensor_bytes(shape: Iterable[int], ggml_type: int | str) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    block, size = type_traits(ggml_type)
    return n // block * size


def _pad(n: int, to: int) -> int:
    return (n + to - 1) // to * to


# --------------------------------------------------------------------------------------------
# Result
# --------------------------------------------------------------------------------------------


@dataclass
class KVCacheDetail:
    """One KV cache as llama.cpp logs it (``cells`` is per stream; a non-unified cache keeps
    one stream of ``cells`` cells per parallel sequence)."""

    label: str  # "full" or "swa"
    cells: int
    streams: int
    layers: int
    k_type: str
    v_type: str
    k_bytes: int
    v_bytes: int
    host_bytes: int = 0
    device_bytes: int = 0

    @property
    def bytes(self) -> int:
        return self.k_bytes + self.v_bytes


@dataclass
class RecurrentDetail:
    layers: int
    cells: int  # state slots: one per parallel sequence
    r_bytes: int  # conv / token-shift state
    s_bytes: int  # SSM / delta-net state
    host_bytes: int = 0
    device_bytes: int = 0

    @property
    def bytes(self) -> int:
        return self.r_bytes + self.s_bytes


@dataclass
class MemoryPlan:
    """Predicted buffers of one llama-server load, in bytes."""

    model_host_bytes: int  # weights in host memory (CPU_Mapped on a CPU machine)
    model_device_bytes: int  # weights on the accelerator
    model_repack_bytes: int  # CPU_REPACK copy of host weights (x86 AVX2 builds)
    kv_bytes: int
    kv_detail: list[KVCacheDetail]
    recurrent_bytes: int
    recurrent_detail: RecurrentDetail | None
    output_bytes: int
    compute_bytes: int
    compute_host_bytes: int
    compute_device_bytes: int
    kv_host_bytes: int
    kv_device_bytes: int
    recurrent_host_bytes: int
    recurrent_device_bytes: int
    n_ctx: int  # after padding / rounding, all sequences together
    n_ctx_seq: int  # per sequence
    n_batch: int
    n_ubatch: int
    flash_attn: bool  # as resolved ("auto" -> on)
    n_gpu_layers: int  # layers (of n_layer + 1, the output counting as one) on the device
    layout: ModelLayout
    settings: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    _header: Any = field(default=None, repr=False, compare=False)

    @property
    def model_bytes(self) -> int:
        return self.model_host_bytes + self.model_device_bytes + self.model_repack_bytes

    @property
    def host_bytes(self) -> int:
        return (self.model_host_bytes + self.model_repack_bytes + self.kv_host_bytes
                + self.recurrent_host_bytes + self.output_bytes + self.compute_host_bytes)

    @property
    def device_bytes(self) -> int:
        return (self.model_device_bytes + self.kv_device_bytes + self.recurrent_device_bytes
                + self.compute_device_bytes)

    @property
    def total_bytes(self) -> int:
        return self.host_bytes + self.device_bytes

    @property
    def n_layers_offloadable(self) -> int:
        """Layers -ngl counts: the blocks and the output layer (llama.cpp's "N/M layers")."""
        return self.layout.n_layer_all + 1

    @property
    def gpu_assumed(self) -> bool:
        """Whether this plan is for a machine (and build) with an accelerator."""
        return bool(self.settings.get("gpu", True))

    @property
    def placement(self) -> str:
        """Where the layers go, in words: CPU only, or how many are offloaded to the GPU."""
        n, m = self.n_gpu_layers, self.n_layers_offloadable
        if n == 0:
            return "CPU only" if not self.gpu_assumed else f"CPU only: 0/{m} layers on the GPU"
        if n >= m:
            return f"all {m}/{m} layers on the GPU"
        return f"{n}/{m} layers on the GPU, {m - n} on the CPU"

    def _used(self, which: str) -> int:
        if which == "total":
            return self.total_bytes
        if which == "device":
            return self.device_bytes
        if which == "host":
            return self.host_bytes
        raise ValueError(f"which must be total, device or host, not {which!r}")

    def headroom(self, budget_bytes: int, which: str = "total") -> int:
        """Budget left over (negative: short by that much)."""
        return int(budget_bytes) - self._used(which)

    def fits(self, budget_bytes: int, which: str = "total") -> bool:
        return self.headroom(budget_bytes, which) >= 0

    def replan(self, **changes: Any) -> MemoryPlan:
        """The same plan with some settings changed (ctx=..., parallel=..., ...)."""
        if self._header is None:
            raise PlanError("this plan does not keep its model header")
        return plan_memory(self._header, **{**self.settings, **changes})

    def max_ctx(self, budget_bytes: int, which: str = "total", limit: int | None = None
                ) -> int | None:
        """The largest context (a multiple of 256, all sequences together) whose plan fits
        ``budget_bytes``; None when not even 256 tokens per sequence fit. Searched up to
        ``limit`` (default: the training context times the number of sequences)."""
        parallel = int(self.settings.get("parallel", 1) or 1)
        step = CTX_PAD * (1 if self.settings.get("kv_unified") else parallel)
        if limit is None:
            train = self.layout.n_ctx_train_tokens or 131072
            limit = max(train * (1 if self.settings.get("kv_unified") else parallel), step)
        lo, hi = 1, max(1, int(limit) // step)

        def ok(k: int) -> bool:
            return self.replan(ctx=k * step).fits(budget_bytes, which)

        if not ok(lo):
            return None
        if ok(hi):
            return hi * step
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if ok(mid):
                lo = mid
            else:
                hi = mid
        return lo * step

    def to_dict(self, budget_bytes: int | None = None, which: str = "total") -> dict[str, Any]:
        out: dict[str, Any] = {
            "model_host_bytes": self.model_host_bytes,
            "model_device_bytes": self.model_device_bytes,
            "model_repack_bytes": self.model_repack_bytes,
            "kv_bytes": self.kv_bytes,
            "recurrent_bytes": self.recurrent_bytes,
            "output_bytes": self.output_bytes,
            "compute_bytes": self.compute_bytes,
            "total_bytes": self.total_bytes,
            "host_bytes": self.host_bytes,
            "device_bytes": self.device_bytes,
            "n_ctx": self.n_ctx,
            "n_ctx_seq": self.n_ctx_seq,
            "n_ubatch": self.n_ubatch,
            "flash_attn": self.flash_attn,
            "n_gpu_layers": self.n_gpu_layers,
            "n_layers_offloadable": self.n_layers_offloadable,
            "gpu_assumed": self.gpu_assumed,
            "placement": self.placement,
            "kv_detail": [vars(d) | {"bytes": d.bytes} for d in self.kv_detail],
            "notes": list(self.notes),
        }
        if budget_bytes is not None:
            out["budget_bytes"] = int(budget_bytes)
            out["fits"] = self.fits(budget_bytes, which)
            out["headroom_bytes"] = self.headroom(budget_bytes, which)
            out["max_ctx"] = self.max_ctx(budget_bytes, which)
        return out


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Ctx:
    n_ctx: int
    n_ctx_seq: int
    n_seq: int
    n_batch: int
    n_ubatch: int
    unified: bool
    fa: bool


def _resolve_ctx(layout: ModelLayout, ctx: int, parallel: int, ubatch: int, batch: int,
                 kv_unified: bool, fa: bool) -> _Ctx:
    n_seq = max(1, int(parallel))
    # Why: -c 0 means "the model's training context".
    n_ctx = int(ctx) if ctx and ctx > 0 else (layout.n_ctx_train_tokens or 4096)
    # Why: llama_context pads n_ctx to 256; without a unified cache each sequence gets
    # n_ctx / n_seq cells, padded to 256 again, and n_ctx becomes n_ctx_seq * n_seq.
    n_ctx = _pad(n_ctx, CTX_PAD)
    if kv_unified:
        n_ctx_seq = n_ctx
    else:
        n_ctx_seq = _pad(n_ctx // n_seq, CTX_PAD)
        n_ctx = n_ctx_seq * n_seq
    # Why: with causal attention the batch is capped by the context, the ubatch by the batch.
    n_batch = min(n_ctx, int(batch))
    n_ubatch = min(n_batch, int(ubatch) if ubatch else n_batch)
    return _Ctx(n_ctx, n_ctx_seq, n_seq, n_batch, n_ubatch, bool(kv_unified), fa)


# --------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------


def _layer_of(name: str) -> int | None:
    if name.startswith("blk."):
        try:
            return int(name.split(".", 2)[1])
        except (IndexError, ValueError):
            return None
    return None


def _repackable(t: Any, repack: bool) -> bool:
    # Why: only matrices multiplied as weights (2-D, or 3-D expert stacks) of the repack
    # types with ne[1] % 8 == 0 get the interleaved copy; convolutions and lookups do not.
    if not repack or int(t.ggml_type) not in REPACK_TYPES_AVX2:
        return False
    if len(t.shape) not in (2, 3) or int(t.shape[1]) % 8:
        return False
    return "conv1d" not in t.name and not t.name.startswith(INPUT_TENSOR_PREFIXES)


@dataclass
class _Weights:
    host: int = 0
    device: int = 0
    repack: int = 0
    skipped: int = 0
    largest_host_layer: int = 0
    per_layer_device: dict[int, bool] = field(default_factory=dict)


def _weights(header: Any, layout: ModelLayout, n_gpu: int, repack: bool) -> _Weights:
    w = _Weights()
    n_all = layout.n_layer_all
    # Why: llama.cpp offloads the output layer first, then the last repeating layers: layer
    # il (the output being il = n_layer_all) is on the device when il >= n_layer_all + 1 - ngl.
    gpu_start = max(n_all + 1 - n_gpu, 0)

    def on_device(il: int) -> bool:
        return n_gpu > 0 and il >= gpu_start

    names = {t.name for t in header.tensors}
    layer_bytes: dict[int, int] = {}
    skip_mtp = layout.n_layer_nextn > 0 and layout.arch in MTP_SKIPPED_ARCHS
    for t in header.tensors:
        nb = tensor_bytes(t.shape, t.ggml_type)
        il = _layer_of(t.name)
        if t.name.startswith(INPUT_TENSOR_PREFIXES):
            # Why: the input layer (token embedding lookups) always stays in host memory.
            w.host += nb
            continue
        if il is not None and skip_mtp and il >= layout.n_layer:
            # Why: multi-token-prediction blocks are skipped unless the draft head is loaded.
            w.skipped += nb
            continue
        where = il if il is not None else n_all  # non-block tensors belong to the output
        if on_device(where):
            w.device += nb
        else:
            w.host += nb
            if _repackable(t, repack):
                w.repack += nb
            if il is not None:
                layer_bytes[il] = layer_bytes.get(il, 0) + nb
    # Why: a model without output.weight reuses token_embd as the output matrix; llama.cpp
    # loads a second copy where the output layer's buffer type differs from the input's.
    if "output.weight" not in names:
        embd = next((t for t in header.tensors if t.name == "token_embd.weight"), None)
        if embd is not None:
            nb = tensor_bytes(embd.shape, embd.ggml_type)
            if on_device(n_all):
                w.device += nb
            elif _repackable(_Named("output.weight", tuple(embd.shape), int(embd.ggml_type)),
                             repack):
                w.repack += nb
    w.largest_host_layer = max(layer_bytes.values(), default=0)
    w.per_layer_device = {il: on_device(il) for il in range(n_all + 1)}
    return w


@dataclass
class _Named:
    name: str
    shape: tuple[int, ...]
    ggml_type: int


# --------------------------------------------------------------------------------------------
# KV cache and recurrent state
# --------------------------------------------------------------------------------------------


def _v_row_max(layout: ModelLayout) -> int:
    # Why: without flash attention V is stored transposed and every layer's V row is padded
    # to the widest one over all blocks (llama.cpp n_embd_v_gqa_max, TAG_V_CACHE_VARIABLE).
    return max((ly.v_row_elements for ly in layout.layers), default=0)


def _swa_cells(layout: ModelLayout, c: _Ctx, swa_full: bool) -> int:
    # Why: the sliding-window cache holds the window for each sequence sharing a stream plus
    # one ubatch, padded to 256 and never more than the full cache (unless --swa-full).
    base = c.n_ctx_seq
    if swa_full or layout.sliding_window is None:
        return base
    window = layout.sliding_window.window_tokens
    return min(base, _pad(window * (c.n_seq if c.unified else 1) + c.n_ubatch, CTX_PAD))


def _kv_caches(layout: ModelLayout, c: _Ctx, type_k: str, type_v: str, swa_full: bool,
               layer_on_device: dict[int, bool]) -> list[KVCacheDetail]:
    streams = 1 if c.unified else c.n_seq
    v_trans = not c.fa
    # Why: every attention block of the trunk gets a K/V pair (multi-token-prediction
    # blocks are filtered out), even one with 0 KV heads (deci), whose rows are empty.
    kv_layers = [ly for ly in layout.trunk if ly.has_kv]
    v_max = _v_row_max(layout)
    out = []
    groups = [("full", [ly for ly in kv_layers if ly.kind != SWA], c.n_ctx_seq)]
    if layout.sliding_window is not None:
        groups.append(("swa", [ly for ly in kv_layers if ly.kind == SWA],
                       _swa_cells(layout, c, swa_full)))
    for label, layers, cells in groups:
        if not layers:
            continue
        detail = KVCacheDetail(label=label, cells=cells, streams=streams, layers=len(layers),
                               k_type=type_k, v_type=type_v, k_bytes=0, v_bytes=0)
        for ly in layers:
            k = row_bytes(type_k, ly.k_row_elements) * cells * streams
            v = 0
            if layout.mla is None:
                v_elems = v_max if v_trans else ly.v_row_elements
                v = row_bytes(type_v, v_elems) * cells * streams
            detail.k_bytes += k
            detail.v_bytes += v
            # Why: each cache tensor sits 32-byte aligned in its buffer.
            nb = _pad(k, TENSOR_ALIGNMENT) + _pad(v, TENSOR_ALIGNMENT)
            if layer_on_device.get(ly.index, False):
                detail.device_bytes += nb
            else:
                detail.host_bytes += nb
        out.append(detail)
    return out


def _recurrent(layout: ModelLayout, c: _Ctx, n_rs_seq: int,
               layer_on_device: dict[int, bool]) -> RecurrentDetail | None:
    rec = layout.recurrent
    layers = layout.recurrent_layers
    if rec is None or not layers:
        return None
    # Why: one F32 state slot per parallel sequence (at least one), times 1 + the rollback
    # snapshots (n_rs_seq, 0 unless speculative decoding asks for them).
    cells = max(1, c.n_seq)
    rows = cells * (1 + max(0, int(n_rs_seq)))
    d = RecurrentDetail(layers=len(layers), cells=cells, r_bytes=0, s_bytes=0)
    for il in layers:
        r = 4 * rec.conv_floats_per_seq * rows
        s = 4 * rec.ssm_floats_per_seq * rows
        d.r_bytes += r
        d.s_bytes += s
        nb = _pad(r, TENSOR_ALIGNMENT) + _pad(s, TENSOR_ALIGNMENT)
        if layer_on_device.get(il, False):
            d.device_bytes += nb
        else:
            d.host_bytes += nb
    return d


# --------------------------------------------------------------------------------------------
# Compute buffer: the reserve graph and llama.cpp's graph allocator
# --------------------------------------------------------------------------------------------

F32, F16, I32, I64 = "f32", "f16", "i32", "i64"
_ESIZE = {F32: 4, F16: 2, I32: 4, I64: 8}
# Why: ggml-alloc lets these ops write over their (sole-user, same-shape) first fitting input.
_INPLACE_OPS = {"add", "add1", "sub", "mul", "div", "scale", "sqr", "sqrt", "log", "unary",
                "rope", "rms_norm", "clamp", "soft_max", "fill", "add_id"}


class _T:
    __slots__ = ("op", "src", "ne", "dt", "view_src", "out", "ext", "nbytes")

    def __init__(self, op: str, ne: Iterable[int], dt: str = F32, src=(), view_src=None,
                 ext: bool = False):
        self.op = op
        self.ne = tuple(int(x) for x in ne)
        self.dt = dt
        self.src = [s for s in src if s is not None]
        self.view_src = view_src
        self.out = False
        self.ext = ext
        n = 1
        for x in self.ne:
            n *= x
        self.nbytes = n * _ESIZE.get(dt, 0)


class _Graph:
    """Nodes in llama.cpp's evaluation order: each expand() adds the not-yet-seen ancestors
    of a tensor depth-first, sources left to right, then the tensor (ggml_build_forward)."""

    def __init__(self) -> None:
        self.nodes: list[_T] = []
        self.leafs: list[_T] = []
        self._seen: set[int] = set()

    def expand(self, t: _T) -> _T:
        stack = [(t, 0)]
        while stack:
            x, i = stack.pop()
            if i == 0:
                if id(x) in self._seen:
                    continue
                self._seen.add(id(x))
            if i < len(x.src):
                stack.append((x, i + 1))
                if id(x.src[i]) not in self._seen:
                    stack.append((x.src[i], 0))
                continue
            (self.leafs if x.op == "none" else self.nodes).append(x)
        return t


def _root(a: _T) -> _T:
    return a.view_src if a.view_src is not None else a


def _inp(*ne: int, dt: str = F32) -> _T:
    return _T("none", ne, dt)


def _w(*ne: int) -> _T:
    return _T("none", ne, F32, ext=True)


def _view(a: _T, *ne: int) -> _T:
    return _T("view", ne, a.dt, [a], view_src=_root(a))


def _op(op: str, ne: Iterable[int], *src: _T, dt: str = F32) -> _T:
    return _T(op, ne, dt, src)


def _mm(w: _T, x: _T) -> _T:
    return _op("mul_mat", (w.ne[1],) + x.ne[1:], w, x)


def _un(a: _T, op: str = "unary") -> _T:
    return _op(op, a.ne, a, dt=a.dt)


def _bin(op: str, a: _T, b: _T) -> _T:
    return _op(op, a.ne, a, b, dt=a.dt)


def _norm(x: _T, weighted: bool = True) -> _T:
    y = _un(x, "rms_norm")
    return _bin("mul", y, _w(x.ne[0])) if weighted else y


def _set_rows(dst: _T, vals: _T, idx: _T) -> _T:
    return _T("set_rows", dst.ne, dst.dt, [vals, idx, dst], view_src=_root(dst))


def _cpy(src: _T, dst: _T) -> _T:
    # Why: a copy into an existing tensor (a cache) is a view of its destination.
    return _T("cpy", dst.ne, dst.dt, [src, dst], view_src=_root(dst))


def _peak_bytes(g: _Graph, align: int = TENSOR_ALIGNMENT) -> int:
    """Largest buffer ggml's graph allocator needs for ``g``.

    Replays ggml-alloc: graph leaves are placed first, then each node; a node may take over
    the memory of a source that has no other user (for the in-place ops), and a tensor's
    memory returns to a free list (merged with neighbours) once its last user ran. Requests
    take the smallest free block that fits, else grow the buffer's end.
    """
    free: list[list[int]] = [[0, 1 << 62]]  # [offset, size], sorted; the last is the open end
    top = 0
    n_children: dict[int, int] = {}
    n_views: dict[int, int] = {}
    own: dict[int, bool] = {}
    offset: dict[int, int] = {}

    def alloc(size: int) -> int:
        nonlocal top
        size = _pad(size, align)
        best, best_size = -1, None
        for i in range(len(free) - 1):
            if free[i][1] >= size and (best_size is None or free[i][1] <= best_size):
                best, best_size = i, free[i][1]
        if best < 0:
            best = len(free) - 1
        off = free[best][0]
        free[best][0] += size
        free[best][1] -= size
        if free[best][1] == 0:
            del free[best]
        top = max(top, off + size)
        return off

    def release(off: int, size: int) -> None:
        size = _pad(size, align)
        for i, b in enumerate(free):
            if b[0] + b[1] == off:
                b[1] += size
                if i + 1 < len(free) and b[0] + b[1] == free[i + 1][0]:
                    b[1] += free[i + 1][1]
                    del free[i + 1]
                return
            if off + size == b[0]:
                b[0] = off
                b[1] += size
                if i > 0 and free[i - 1][0] + free[i - 1][1] == b[0]:
                    free[i - 1][1] += b[1]
                    del free[i]
                return
        k = 0
        while k < len(free) and free[k][0] < off:
            k += 1
        free.insert(k, [off, size])

    def place(t: _T) -> None:
        if t.ext or own.get(id(t)) or t.view_src is not None:
            return
        own[id(t)] = True
        if t.op in _INPLACE_OPS:
            for p in t.src:
                if not own.get(id(p)) or p.out or p.view_src is not None:
                    continue
                if p.dt != t.dt or p.ne != t.ne:
                    continue
                if n_children.get(id(p), 0) == 1 and n_views.get(id(p), 0) == 0:
                    offset[id(t)] = offset[id(p)]
                    own[id(p)] = False
                    return
        offset[id(t)] = alloc(t.nbytes)

    def drop(t: _T) -> None:
        if t.out:
            return
        release(offset[id(t)], t.nbytes)
        own[id(t)] = False

    for leaf in g.leafs:
        place(leaf)
    for n in g.nodes:
        if n.view_src is not None:
            n_views[id(n.view_src)] = n_views.get(id(n.view_src), 0) + 1
        for s in n.src:
            n_children[id(s)] = n_children.get(id(s), 0) + 1
    for n in g.nodes:
        for s in n.src:
            place(s)
        place(n)
        for p in n.src:
            n_children[id(p)] -= 1
            if n_children[id(p)] == 0 and n_views.get(id(p), 0) == 0:
                if p.view_src is not None:
                    v = p.view_src
                    n_views[id(v)] -= 1
                    if n_views[id(v)] == 0 and n_children.get(id(v), 0) == 0 and own.get(id(v)):
                        drop(v)
                elif own.get(id(p)):
                    drop(p)
    return top


@dataclass
class _GraphSpec:
    layout: ModelLayout
    names: set[str]
    n_tokens: int
    n_seqs: int
    n_streams: int
    n_outputs: int
    fa: bool
    kv_cells: dict[str, int]  # cache label -> cells per stream
    rot_k: int  # Hadamard size for quantized K (0: none)
    rot_v: int
    v_max: int
    ffn_width: dict[str, int] = field(default_factory=dict)  # tensor name -> ne[1]
    positions_per_token: int = 1
    final_softcap: bool = False


class _Builder:
    """The worst-case prompt graph llama.cpp reserves, reduced to tensor sizes and order."""

    def __init__(self, s: _GraphSpec) -> None:
        self.s = s
        L = s.layout
        self.L = L
        self.g = _Graph()
        self.E = L.n_embd
        self.T = s.n_tokens
        self.arch = L.arch

    def has(self, suffix: str, il: int) -> bool:
        """Whether block ``il`` has the tensor ``blk.<il>.<suffix>``."""
        return f"blk.{il}.{suffix}" in self.s.names

    # -- inputs -----------------------------------------------------------------------------

    def build(self) -> _Graph:
        s, L, g, E, T = self.s, self.L, self.g, self.E, self.T
        tok_embd = _w(E, L.n_vocab)
        tokens = _inp(T, dt=I32)
        x = _op("get_rows", (E, T), tok_embd, tokens)
        g.expand(x)
        # Why: the server's graph also builds a "mixed" embedding input (its nodes and inputs
        # are named inp_mixed_tokens, inp_mixed_embd, inp_mixed_slots): a gather of token rows, a copy
        # (dup) of an n_embd x n_ubatch vector input, and a set_rows of the rows into that
        # copy. The inputs and the gather are freed once read, the copy is never read and
        # stays allocated to the end; the freed vector input leaves an n_embd x n_ubatch hole
        # low in the buffer that later small tensors (the MoE router's, SSM states) fill.
        mixed_tokens = _inp(T, dt=I32)
        mixed_rows = _op("get_rows", (E, T), tok_embd, mixed_tokens)
        g.expand(mixed_rows)
        # Why: the embedding input offers two sources (token ids or raw vectors); both are
        # graph inputs and the unused one stays allocated for the whole graph. Its leaf sits
        # between the mixed path's token ids and its slots (the order of the inputs' offsets
        # in a real load), which decides which freed inputs end up adjacent.
        g.expand(_inp(E, T))
        mixed = _op("dup", (E, T), _inp(E, T))
        g.expand(_set_rows(mixed, mixed_rows, _inp(T, dt=I64)))
        if self.arch in ("gemma", "gemma2", "gemma3", "gemma3n", "gemma4"):
            x = _un(x, "scale")  # Why: Gemma scales embeddings by sqrt(n_embd) in place.
        # Why: multi-section (M-RoPE / IMRoPE) models feed 4 positions per token.
        self.pos = _inp(T * s.positions_per_token, dt=I32)
        ns = s.n_streams
        self.idx: dict[str, tuple[_T, _T]] = {}
        self.mask: dict[str, _T] = {}
        for label, cells in s.kv_cells.items():
            k_idx = _inp(T, dt=I64)
            # Why: without flash attention V rows are scattered element-wise (one index per
            # value), with it one index per token.
            v_idx = _inp(T if s.fa else T * s.v_max, dt=I64)
            self.idx[label] = (k_idx, v_idx)
            # Why: the KQ mask is F16 for flash attention, F32 otherwise, n_kv x tokens.
            self.mask[label] = _inp(cells, T // ns, 1, ns, dt=F16 if s.fa else F32)
        self.rot_k = _inp(s.rot_k, s.rot_k) if s.rot_k else None
        self.rot_v = _inp(s.rot_v, s.rot_v) if s.rot_v else None
        self.out_ids = _inp(s.n_outputs, dt=I32)
        if L.recurrent_layers:
            self.s_copy = _inp(s.n_seqs, dt=I32)
        inp_l = x
        n_layer = L.n_layer
        for il in range(n_layer):
            ly = L.layers[il]
            last = il == n_layer - 1
            inp_l = self.block(ly, inp_l, last)
        cur = _norm(inp_l)
        cur.out = True  # Why: the final hidden state is a graph output (never freed).
        if L.recurrent is not None and L.recurrent.kind == GATED_DELTA_NET:
            # Why: Qwen3-Next / Qwen3.5 normalise every token (the draft head's input is a
            # graph output) and pick the output rows only then.
            cur = _op("get_rows", (E, s.n_outputs), cur, self.out_ids)
        logits = _mm(_w(E, L.n_vocab), cur)
        if s.final_softcap:
            logits = _un(_un(_un(logits, "scale"), "unary"), "scale")
        logits.out = True
        g.expand(logits)
        return g

    # -- one block --------------------------------------------------------------------------

    def block(self, ly: LayerLayout, inp_l: _T, last: bool) -> _T:
        il = ly.index
        gated_hybrid = self.L.recurrent is not None and self.L.recurrent.kind == GATED_DELTA_NET
        inp_sa = inp_l
        cur = _norm(inp_l)
        if gated_hybrid:
            self.g.expand(cur)
        if ly.kind == RECURRENT:
            cur = self.recurrent(ly, cur)
        elif ly.kind in (FULL, SWA) and ly.n_head_kv > 0:
            cur = self.attention(ly, cur, gated=gated_hybrid)
        else:
            cur = _mm(_w(self.E, self.E), cur)  # linear replacement (deci) or no mixer
        if last and not gated_hybrid:
            # Why: the last block computes only the rows that produce outputs.
            cur = _op("get_rows", (cur.ne[0], self.s.n_outputs), cur, self.out_ids)
            inp_sa = _op("get_rows", (inp_sa.ne[0], self.s.n_outputs), inp_sa, self.out_ids)
        if self.has("post_attention_norm.weight", il) and not gated_hybrid:
            cur = _norm(cur)  # Gemma: normalise the attention output before the residual
        ffn_inp = _bin("add", cur, inp_sa)
        cur = _norm(ffn_inp)
        cur = self.ffn(ly, cur)
        if self.has("post_ffw_norm.weight", il):
            cur = _norm(cur)
        return _bin("add", cur, ffn_inp)

    def attention(self, ly: LayerLayout, cur: _T, gated: bool) -> _T:
        s, g, T, il = self.s, self.g, self.T, ly.index
        H, Hkv, dk, dv = ly.n_head, ly.n_head_kv, ly.head_dim_k, ly.head_dim_v or ly.head_dim_k
        ns = s.n_streams
        label = "swa" if ly.kind == SWA and "swa" in s.kv_cells else "full"
        n_kv = s.kv_cells[label]
        gate = None
        if self.has("attn_qkv.weight", il):
            qkv = _mm(_w(self.E, H * dk + 2 * Hkv * dk), cur)
            q = _view(qkv, dk, H, T)
            k = _view(qkv, dk, Hkv, T)
            v = _view(qkv, dv, Hkv, T)
        elif gated:
            # Qwen3-Next / Qwen3.5: the Q projection carries an output gate of the same size.
            q_full = _mm(_w(self.E, 2 * H * dk), cur)
            k = _view(_mm(_w(self.E, Hkv * dk), cur), dk, Hkv, T)
            v = _view(_mm(_w(self.E, Hkv * dv), cur), dv, Hkv, T)
            q = _view(q_full, dk, H, T)
            gate = _op("cont", (dk * H, T), _view(q_full, dk, H, T))
        else:
            q = _view(_mm(_w(self.E, H * dk), cur), dk, H, T)
            k = _view(_mm(_w(self.E, Hkv * dk), cur), dk, Hkv, T)
            v = _view(_mm(_w(self.E, Hkv * dv), cur), dv, Hkv, T)
            if self.has("attn_q.bias", il):
                q = _bin("add", q, _w(H * dk))
                k = _bin("add", k, _w(Hkv * dk))
                v = _bin("add", v, _w(Hkv * dv))
        if self.has("attn_q_norm.weight", il):
            q = _norm(q)
        if self.has("attn_k_norm.weight", il):
            k = _norm(k)
        q = _op("rope", q.ne, q, self.pos)
        k = _op("rope", k.ne, k, self.pos)
        if self.arch in ("gemma2", "gemma3"):
            q = _un(q, "scale")
        if self.rot_k is not None:
            q = _view(_mm(self.rot_k, _view(q, s.rot_k, q.nbytes // 4 // s.rot_k)), *q.ne)
            k = _view(_mm(self.rot_k, _view(k, s.rot_k, k.nbytes // 4 // s.rot_k)), *k.ne)
        if self.rot_v is not None:
            v = _view(_mm(self.rot_v, _view(v, s.rot_v, v.nbytes // 4 // s.rot_v)), *v.ne)
        # Why: build_attn adds Q, V, K (Q, K, V for sliding-window caches) to the graph
        # before storing K and V, so their producers run in that order.
        order = (q, k, v) if self.s.kv_cells.keys() >= {"swa"} else (q, v, k)
        for t in order:
            g.expand(t)
        k_idx, v_idx = self.idx[label]
        k_cache = _w(Hkv * dk, n_kv, ns)
        v_cache = _w(Hkv * dv, n_kv, ns)
        g.expand(_set_rows(k_cache, _view(k, Hkv * dk, T), k_idx))
        if s.fa:
            g.expand(_set_rows(v_cache, _view(v, Hkv * dv, T), v_idx))
        else:
            g.expand(_set_rows(_view(v_cache, 1, Hkv * dv * n_kv * ns),
                               _view(v, 1, Hkv * dv * T), v_idx))
        mask = self.mask[label]
        qp = _view(_view(q, dk, H, T // ns, ns), dk, T // ns, H, ns)
        kp = _view(k_cache, dk, n_kv, Hkv, ns)
        vp = _view(v_cache, dv, n_kv, Hkv, ns)
        if s.fa:
            o = _op("flash_attn_ext", (dv, H, T // ns, ns), qp, kp, vp, mask)
            g.expand(o)
            o = _view(o, dv * H, T)
        else:
            # Why: without flash attention the full n_kv x tokens x heads score matrix (F32)
            # is materialised; softmax runs in place on it.
            kq = _op("mul_mat", (n_kv, T // ns, H, ns), kp, qp)
            kq = _op("soft_max", kq.ne, kq, mask)
            kqv = _op("mul_mat", (dv, T // ns, H, ns), _view(v_cache, n_kv, dv, Hkv, ns), kq)
            o = _op("cont", (dv * H, T), _view(kqv, dv, H, T // ns, ns))
            g.expand(o)
        if self.rot_v is not None:
            o = _view(_mm(self.rot_v, _view(o, s.rot_v, o.nbytes // 4 // s.rot_v)), *o.ne)
        if gate is not None:
            o = _bin("mul", o, _un(gate))
        out = _mm(_w(dv * H, self.E), o)
        if self.has("attn_output.bias", il):
            out = _bin("add", out, _w(self.E))
        return out

    def ffn(self, ly: LayerLayout, cur: _T) -> _T:
        E, il = self.E, ly.index
        if ly.is_moe or self.has("ffn_gate_inp.weight", il):
            out = self.moe(ly, cur)
            if self.has("ffn_up_shexp.weight", il):
                f = self._ffn_shape("ffn_up_shexp.weight", il)
                if not f:
                    # A shared-expert FFN implies expert metadata (expert_count > 0).
                    assert self.L.experts is not None
                    f = self.L.experts.n_ff_shared_expert
                sh = self.dense(cur, f)
                if self.has("ffn_gate_inp_shexp.weight", il):
                    sg = _un(_mm(_w(E, 1), cur))
                    sh = _bin("mul", sh, sg)
                out = _bin("add", out, sh)
            return out
        f = ly.n_ff or self._ffn_shape("ffn_up.weight", il) or 4 * E
        return self.dense(cur, f)

    def _ffn_shape(self, suffix: str, il: int) -> int:
        return self.s.ffn_width.get(f"blk.{il}.{suffix}", 0)

    def dense(self, cur: _T, f: int) -> _T:
        E = self.E
        up = _mm(_w(E, f), cur)
        gate = _mm(_w(E, f), cur)
        act = _op("glu", up.ne, gate, up)
        return _mm(_w(f, E), act)

    def moe(self, ly: LayerLayout, cur: _T) -> _T:
        g, E, T = self.g, self.E, cur.ne[1]
        ex = self.L.experts
        n_exp = ex.n_expert if ex else 8
        k = ly.n_expert_used or (ex.n_expert_used if ex else 2)
        f = ly.n_ff_expert or (ex.n_ff_expert if ex else E)
        logits = _mm(_w(E, n_exp), cur)
        probs = _un(logits, "soft_max")
        sorted_ = _op("argsort", (n_exp, T), probs, dt=I32)
        selected = _view(sorted_, k, T)
        weights = _op("get_rows", (1, k, T), _view(probs, 1, n_exp, T), selected)
        wsum = _un(_op("sum_rows", (1, T), _view(weights, k, T)), "clamp")
        weights = _view(_op("div", (k, T), _view(weights, k, T), wsum), 1, k, T)
        g.expand(weights)
        x3 = _view(cur, E, 1, T)
        up = _op("mul_mat_id", (f, k, T), _w(E, f, n_exp), x3, selected)
        gate = _op("mul_mat_id", (f, k, T), _w(E, f, n_exp), x3, selected)
        act = _op("glu", gate.ne, gate, up)
        experts = _op("mul_mat_id", (E, k, T), _w(f, E, n_exp), act, selected)
        experts = _bin("mul", experts, weights)
        g.expand(experts)
        views = [_view(experts, E, T) for _ in range(k)]
        for v in views:
            g.expand(v)
        out = views[0]
        for v in views[1:]:
            out = _op("add", (E, T), out, v)
            g.expand(out)
        if k == 1:
            out = _op("cont", (E, T), out)
        return out

    def recurrent(self, ly: LayerLayout, cur: _T) -> _T:
        rec = self.L.recurrent
        # A layer is only RECURRENT when the layout derived recurrent dimensions for it.
        assert rec is not None
        g, E, T, n_seqs = self.g, self.E, self.T, self.s.n_seqs
        if rec.kind == GATED_DELTA_NET:
            d_inner, d_state, n_group, dt_rank = rec.d_inner, rec.d_state, rec.n_group, rec.dt_rank
            conv_dim = d_inner + 2 * n_group * d_state
            head_v = d_inner // max(dt_rank, 1)
            qkv = _view(_mm(_w(E, conv_dim), cur), conv_dim, T // n_seqs, n_seqs)
            z = _mm(_w(E, d_inner), cur)
            if self.has("ssm_ba.weight", ly.index):
                ba = _mm(_w(E, 2 * dt_rank), cur)
                beta = _un(_view(ba, 1, dt_rank, T // n_seqs, n_seqs))
                alpha = _view(ba, dt_rank, T // n_seqs, n_seqs)
            else:
                beta = _un(_view(_mm(_w(E, dt_rank), cur), 1, dt_rank, T // n_seqs, n_seqs))
                alpha = _view(_mm(_w(E, dt_rank), cur), dt_rank, T // n_seqs, n_seqs)
            gate = _bin("mul", _un(_bin("add", alpha, _w(dt_rank))), _w(dt_rank))
            gate = _view(gate, 1, dt_rank, T // n_seqs, n_seqs)
            conv_states = _op("get_rows", (rec.conv_floats_per_seq, n_seqs),
                              _w(rec.conv_floats_per_seq, n_seqs), self.s_copy)
            g.expand(conv_states)
            conv_in = _op("concat", (rec.d_conv - 1 + T // n_seqs, conv_dim, n_seqs),
                          _view(conv_states, rec.d_conv - 1, conv_dim, n_seqs),
                          _view(qkv, T // n_seqs, conv_dim, n_seqs))
            g.expand(_cpy(_view(conv_in, rec.d_conv - 1, conv_dim, n_seqs),
                          _w(rec.conv_floats_per_seq, n_seqs)))
            # Why: build_rs gathers the SSM state rows here and at once copies the rows of the
            # states it does not use back into the cache (an empty copy in the reserve graph),
            # which expands the gather into the graph before the convolution (a load of a
            # Qwen3.5-MoE twin shows it ahead of ssm_conv, in the hole the inputs left).
            state = _op("get_rows", (rec.ssm_floats_per_seq, n_seqs),
                        _w(rec.ssm_floats_per_seq, n_seqs), self.s_copy)
            g.expand(state)
            conv = _un(_op("ssm_conv", (conv_dim, T // n_seqs, n_seqs), conv_in,
                           _w(rec.d_conv, conv_dim)))
            # L2 norm of Q and K: an RMS norm (new tensor, its input is a view), scaled in place.
            q = _un(_op("rms_norm", (d_state, n_group, T // n_seqs, n_seqs),
                        _view(conv, d_state, n_group, T // n_seqs, n_seqs)), "scale")
            k = _un(_op("rms_norm", (d_state, n_group, T // n_seqs, n_seqs),
                        _view(conv, d_state, n_group, T // n_seqs, n_seqs)), "scale")
            if self.arch == "qwen3next" and n_group != dt_rank:
                # Why: Qwen3-Next repeats the K heads up to the V heads before the delta net
                # (Qwen3.5 leaves the broadcast to the fused op).
                q = _op("repeat", (d_state, dt_rank, T // n_seqs, n_seqs), q)
                k = _op("repeat", (d_state, dt_rank, T // n_seqs, n_seqs), k)
            v = _view(conv, head_v, dt_rank, T // n_seqs, n_seqs)
            # Why: the fused gated-delta-net op returns the outputs and the new state in one
            # tensor (outputs first).
            res = _op("gated_delta_net", (head_v * dt_rank, T + head_v * n_seqs),
                      q, k, v, gate, beta, _view(state, head_v, head_v, dt_rank, n_seqs))
            g.expand(_cpy(_view(res, rec.ssm_floats_per_seq, n_seqs),
                          _w(rec.ssm_floats_per_seq, n_seqs)))
            out = _view(res, head_v, dt_rank, T // n_seqs, n_seqs)
            normed = _bin("mul", _norm(out), _un(_view(z, head_v, dt_rank, T // n_seqs, n_seqs)))
            return _mm(_w(d_inner, E), _view(normed, d_inner, T))
        # Generic SSM block (Mamba-2 style): input projection, short convolution, scan.
        d_inner = rec.d_inner or 2 * E
        proj = 2 * d_inner + 2 * rec.n_group * rec.d_state + max(rec.dt_rank, 1)
        zx = _mm(_w(E, proj), cur)
        conv_states = _op("get_rows", (max(rec.conv_floats_per_seq, 1), n_seqs),
                          _w(max(rec.conv_floats_per_seq, 1), n_seqs), self.s_copy)
        conv_ch = max(rec.conv_floats_per_seq // max(rec.d_conv - 1, 1), 1)
        conv_in = _op("concat", (max(rec.d_conv - 1, 0) + T // n_seqs, conv_ch, n_seqs),
                      conv_states, zx)
        conv = _un(_op("ssm_conv", (conv_ch, T // n_seqs, n_seqs), conv_in))
        state = _op("get_rows", (max(rec.ssm_floats_per_seq, 1), n_seqs),
                    _w(max(rec.ssm_floats_per_seq, 1), n_seqs), self.s_copy)
        y = _op("ssm_scan", (d_inner * T + rec.ssm_floats_per_seq * n_seqs,), conv, state, zx)
        y = _op("mul", (d_inner, T), _view(y, d_inner, T), _view(zx, d_inner, T))
        return _mm(_w(d_inner, E), _norm(y))


def _hadamard_size(head: int, quantized: bool, k: bool) -> int:
    # Why: llama.cpp rotates Q/K (and V) with a Hadamard matrix before storing them in a
    # quantized cache when the head size is a multiple of 64: the largest power of two >= 64
    # dividing the K head, always 64 for V.
    if not quantized or head <= 0 or head % 64:
        return 0
    if not k:
        return 64
    n = 64
    while head % (n * 2) == 0:
        n *= 2
    return n


def _compute_bytes(header: Any, layout: ModelLayout, c: _Ctx, kv: list[KVCacheDetail],
                   type_k: str, type_v: str, n_outputs_max: int) -> int:
    names = {t.name for t in header.tensors}
    # Why: the worst-case reserve is one ubatch of min(n_ctx, n_ubatch) tokens split evenly
    # over all sequences (rounded up to a multiple of them).
    n_seqs = c.n_seq
    n_tokens = min(c.n_ctx, c.n_ubatch)
    n_tokens = _pad(n_tokens, n_seqs)
    n_streams = 1 if c.unified else n_seqs
    cells = {d.label: d.cells for d in kv}
    if not cells and any(ly.has_kv for ly in layout.trunk):
        cells = {"full": c.n_ctx_seq}
    heads_k = {ly.head_dim_k for ly in layout.trunk if ly.has_kv}
    head_k = heads_k.pop() if len(heads_k) == 1 else 0
    heads_v = {ly.head_dim_v for ly in layout.trunk if ly.has_kv}
    head_v = heads_v.pop() if len(heads_v) == 1 else 0
    quant_k = type_k not in ("f32", "f16", "bf16")
    quant_v = type_v not in ("f32", "f16", "bf16")
    md = getattr(header, "metadata", {}) or {}
    spec = _GraphSpec(
        layout=layout, names=names, n_tokens=n_tokens, n_seqs=n_seqs, n_streams=n_streams,
        n_outputs=max(1, min(n_tokens, n_outputs_max)), fa=c.fa, kv_cells=cells,
        rot_k=_hadamard_size(head_k, quant_k, True), rot_v=_hadamard_size(head_v, quant_v, False),
        v_max=_v_row_max(layout),
        ffn_width={t.name: int(t.shape[1]) for t in header.tensors if len(t.shape) >= 2},
        positions_per_token=4 if f"{layout.arch}.rope.dimension_sections" in md else 1,
        final_softcap=bool(md.get(f"{layout.arch}.final_logit_softcapping")))
    builder = _Builder(spec)
    return _peak_bytes(builder.build())


# --------------------------------------------------------------------------------------------
# The plan
# --------------------------------------------------------------------------------------------


def plan_memory(
    header_like: Any,
    *,
    ctx: int,
    cache_type_k: str = "f16",
    cache_type_v: str = "f16",
    parallel: int = 1,
    ngl: int | None = None,
    ubatch: int = 512,
    batch: int = 2048,
    flash_attn: str | bool = "auto",
    kv_unified: bool = False,
    gpu: bool = True,
    cpu_repack: bool = True,
    swa_full: bool = False,
    n_outputs_max: int | None = None,
    n_rs_seq: int = 0,
) -> MemoryPlan:
    """Predict what llama-server allocates to serve ``header_like`` (anything with
    ``.metadata`` and ``.tensors`` of ``name``/``shape``/``ggml_type``, e.g. a
    :class:`~kurabe.modelfiles.gguf_header.GGUFHeader`).

    Settings mirror llama-server flags: ``ctx`` (-c; 0 = training context), ``cache_type_k/v``
    (-ctk/-ctv), ``parallel`` (-np), ``ngl`` (-ngl; None or -1 = every layer, 0 = none),
    ``ubatch``/``batch`` (-ub/-b), ``flash_attn`` (-fa on/off/auto), ``kv_unified`` (-kvu),
    ``swa_full`` (--swa-full). ``gpu=False`` plans for a machine (or build) without an
    accelerator: every buffer is then host memory, whatever ``ngl`` says. ``cpu_repack``
    counts the CPU_REPACK copy x86 AVX2 builds make of Q4_0/Q4_K/IQ4_NL/MXFP4 host weights.
    """
    settings = dict(ctx=ctx, cache_type_k=cache_type_k, cache_type_v=cache_type_v,
                    parallel=parallel, ngl=ngl, ubatch=ubatch, batch=batch,
                    flash_attn=flash_attn, kv_unified=kv_unified, gpu=gpu,
                    cpu_repack=cpu_repack, swa_full=swa_full, n_outputs_max=n_outputs_max,
                    n_rs_seq=n_rs_seq)
    metadata = getattr(header_like, "metadata", None)
    tensors = getattr(header_like, "tensors", None)
    if metadata is None or tensors is None:
        raise PlanError("plan_memory needs an object with .metadata and .tensors (a GGUF header)")
    type_k, type_v = str(cache_type_k).lower(), str(cache_type_v).lower()
    for t in (type_k, type_v):
        if t not in CACHE_TYPES:
            raise PlanError(f"unknown KV cache type {t!r} (known: {', '.join(CACHE_TYPES)})")
    layout = derive_layout(metadata, {t.name for t in tensors})
    notes = list(layout.notes) + [f"layout: {u}" for u in layout.unknown]
    if not layout.n_vocab:
        # Why: llama.cpp sizes the vocabulary from the tokenizer; without one in the header
        # the embedding matrix's second dimension is the same number.
        embd = next((t for t in tensors if t.name == "token_embd.weight"), None)
        if embd is not None and len(embd.shape) == 2:
            layout.n_vocab = int(embd.shape[1])

    fa_setting = flash_attn
    if isinstance(fa_setting, bool):
        fa = fa_setting
    else:
        fa_text = str(fa_setting).lower()
        if fa_text not in ("auto", "on", "off", "enabled", "disabled", "1", "0", "true", "false"):
            raise PlanError(f"flash_attn must be on, off or auto, not {flash_attn!r}")
        # Why: -fa auto turns flash attention on where the backend supports it (the CPU and
        # CUDA backends do for ordinary head sizes).
        fa = fa_text in ("auto", "on", "enabled", "1", "true")
        if fa_text == "auto":
            notes.append("flash attention 'auto' assumed to resolve to on")
    if not fa and type_v not in ("f32", "f16", "bf16"):
        # Why: llama.cpp refuses a quantized V cache without flash attention (load fails).
        raise PlanError(f"a {type_v} V cache needs flash attention: llama.cpp fails to create "
                        "the context with -fa off")

    c = _resolve_ctx(layout, ctx, parallel, ubatch, batch, kv_unified, fa)

    n_all = layout.n_layer_all
    if not gpu:
        n_gpu = 0
    elif ngl is None or ngl < 0 or ngl > n_all + 1:
        n_gpu = n_all + 1
    else:
        n_gpu = int(ngl)
    weights = _weights(header_like, layout, n_gpu, cpu_repack)
    if weights.skipped:
        notes.append(f"{weights.skipped} bytes of multi-token-prediction weights not loaded")
    if weights.repack:
        notes.append(f"{weights.repack} bytes of host weights are repacked (CPU_REPACK); their "
                     "mmap'd file pages stay counted in model_host_bytes as llama.cpp does, "
                     "though the OS may reclaim them after loading")
    on_dev = weights.per_layer_device

    kv = _kv_caches(layout, c, type_k, type_v, swa_full, on_dev)
    rec = _recurrent(layout, c, n_rs_seq, on_dev)

    # Why: the output buffer holds F32 logits for every output row the context can return
    # at once: n_vocab x max(n_outputs_max, n_seq_max); llama-server allows one per sequence.
    n_out = max(int(n_outputs_max or c.n_seq), c.n_seq)
    output = 4 * layout.n_vocab * n_out

    compute = _compute_bytes(header_like, layout, c, kv, type_k, type_v, n_out)
    if n_gpu == 0:
        compute_host, compute_device = compute, 0
    elif n_gpu >= n_all + 1:
        # Full offload: the graph runs on the device; the host keeps the embedding lookup
        # (token_embd is host-resident) and the graph inputs.
        compute_device = compute
        compute_host = 3 * 4 * layout.n_embd * min(c.n_ctx, c.n_ubatch)
        notes.append("device compute buffer and its host part not checked against a GPU log")
    else:
        # Partial offload: both sides reserve their share of the worst-case graph, and large
        # batches copy a host layer's weights to the device to multiply there.
        compute_host = compute
        compute_device = compute + (weights.largest_host_layer if c.n_ubatch >= 32 else 0)
        notes.append("partial offload: compute buffers are rough (both sides assumed full)")

    kv_host = sum(d.host_bytes for d in kv)
    kv_dev = sum(d.device_bytes for d in kv)
    return MemoryPlan(
        model_host_bytes=weights.host, model_device_bytes=weights.device,
        model_repack_bytes=weights.repack,
        kv_bytes=kv_host + kv_dev, kv_detail=kv,
        recurrent_bytes=rec.host_bytes + rec.device_bytes if rec else 0, recurrent_detail=rec,
        output_bytes=output, compute_bytes=compute_host + compute_device,
        compute_host_bytes=compute_host, compute_device_bytes=compute_device,
        kv_host_bytes=kv_host, kv_device_bytes=kv_dev,
        recurrent_host_bytes=rec.host_bytes if rec else 0,
        recurrent_device_bytes=rec.device_bytes if rec else 0,
        n_ctx=c.n_ctx, n_ctx_seq=c.n_ctx_seq, n_batch=c.n_batch, n_ubatch=c.n_ubatch,
        flash_attn=fa, n_gpu_layers=n_gpu, layout=layout, settings=settings, notes=notes,
        _header=header_like)
