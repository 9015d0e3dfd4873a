"""Known relatives of a GGUF model, for checking the lineage method: the same weights
re-quantized, perturbed (a stand-in for a fine-tune) or with heads and experts permuted (the
same function, reordered). Written as a stream, tensor by tensor and a bounded number of
rows at a time, so a multi-GB model is never held in memory.

* ``quant``: every matrix stored in this type (one gguf-py can write: Q8_0, Q5_0, Q5_1,
  Q4_0, Q4_1, F16, BF16, F32; a matrix already of that type and otherwise unchanged is
  copied as it is); None keeps each tensor's type where gguf-py can write it and uses Q8_0
  where it cannot (the K and IQ types) for the tensors that change;
* ``perturb``: Gaussian noise of ``perturb`` times each tensor's standard deviation added to
  every value (norms and biases included). The noise is read at random offsets from a pool
  of 2**23 normal samples drawn once (a multi-GB model is perturbed at memory speed); each
  value's noise is still N(0, 1) times the scale, which is all a similarity measures;
* ``permute_heads``: in every layer the KV heads are permuted, and the query heads within
  each KV group, consistently in Q, K, V (rows) and the attention output (columns): the model
  computes exactly what it did;
* ``permute_experts``: in every layer the experts are permuted, consistently in the router
  (``ffn_gate_inp`` rows), its bias and every ``*_exps`` tensor.

The metadata is copied with its types (``general.name`` gets a note of what changed).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from kurabe.lineage.files import LineageError, ModelFile, open_gguf
from kurabe.twin.gguf_out import GGUFStream, TensorEntry, Typed, read_typed_metadata

QT = gguf.GGMLQuantizationType
VT = gguf.GGUFValueType

CHUNK_FLOATS = 1 << 22  # values processed at a time (16 MiB of float32)
WRITABLE = (QT.F32, QT.F16, QT.BF16, QT.Q8_0, QT.Q5_0, QT.Q5_1, QT.Q4_0, QT.Q4_1)
_LAYER = re.compile(r"^blk\.(\d+)\.(.+)$")


@dataclass
class VariantResult:
    path: Path
    file_bytes: int
    changed: list[str]  # tensors whose values or type changed
    permutations: dict[str, list[int]]  # "blk.N.heads" / "blk.N.experts" -> new order


def _quant_type(name: str | None) -> QT | None:
    if name is None:
        return None
    try:
        qtype = QT.__members__[name.strip().upper()]
    except KeyError:
        raise LineageError(f"unknown quant type {name!r} (one of "
                           f"{', '.join(t.name for t in WRITABLE)})") from None
    if qtype not in WRITABLE:
        raise LineageError(f"gguf-py cannot write {qtype.name} (one of "
                           f"{', '.join(t.name for t in WRITABLE)})")
    return qtype


def _not_identity(rng: np.random.Generator, n: int) -> np.ndarray:
    if n < 2:
        return np.arange(n)
    while True:
        perm = rng.permutation(n)
        if (perm != np.arange(n)).any():
            return perm


def _int(model: ModelFile, key: str, layer: int) -> int | None:
    value = model.hparam(key)
    if isinstance(value, list) and 0 <= layer < len(value):
        value = value[layer]
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 \
        else None


class _Plan:
    """Row and column orders per tensor."""

    def __init__(self, model: ModelFile, rng: np.random.Generator, heads: bool,
                 experts: bool) -> None:
        self.rows: dict[str, np.ndarray] = {}
        self.cols: dict[str, np.ndarray] = {}
        self.permutations: dict[str, list[int]] = {}
        layers = sorted({int(m.group(1)) for n in model.tensors if (m := _LAYER.match(n))})
        for layer in layers:
            if heads:
                self._heads(model, layer, rng)
            if experts:
                self._experts(model, layer, rng)

    def _heads(self, model: ModelFile, layer: int, rng: np.random.Generator) -> None:
        n_head = _int(model, "attention.head_count", layer)
        n_kv = _int(model, "attention.head_count_kv", layer) or n_head
        q = model.tensors.get(f"blk.{layer}.attn_q.weight")
        if not n_head or not n_kv or q is None or n_head % n_kv or q.n_rows % n_head:
            return
        group = n_head // n_kv
        kv_order = _not_identity(rng, n_kv) if n_kv > 1 else np.arange(1)
        head_order = np.concatenate([kv * group + _not_identity(rng, group)
                                     for kv in kv_order]) if group > 1 else kv_order
        if (head_order == np.arange(n_head)).all():
            return
        self.permutations[f"blk.{layer}.heads"] = head_order.tolist()
        self.permutations[f"blk.{layer}.kv_heads"] = kv_order.tolist()

        def blocks(order: np.ndarray, size: int) -> np.ndarray:
            return (order[:, None] * size + np.arange(size)[None, :]).ravel()

        hd_q = q.n_rows // n_head
        for suffix in ("weight", "bias"):
            self._set(model, f"blk.{layer}.attn_q.{suffix}", blocks(head_order, hd_q))
        for kind in ("attn_k", "attn_v"):
            t = model.tensors.get(f"blk.{layer}.{kind}.weight")
            if t is not None and t.n_rows % n_kv == 0:
                for suffix in ("weight", "bias"):
                    self._set(model, f"blk.{layer}.{kind}.{suffix}",
                              blocks(kv_order, t.n_rows // n_kv))
        out = model.tensors.get(f"blk.{layer}.attn_output.weight")
        if out is not None and out.row_len % n_head == 0:
            self.cols[out.name] = blocks(head_order, out.row_len // n_head)

    def _set(self, model: ModelFile, name: str, order: np.ndarray) -> None:
        """``order`` along a tensor's output axis: its rows, or a bias's values."""
        t = model.tensors.get(name)
        if t is None:
            return
        if t.n_rows == 1:
            self.cols[name] = order
        else:
            self.rows[name] = order

    def _experts(self, model: ModelFile, layer: int, rng: np.random.Generator) -> None:
        router = model.tensors.get(f"blk.{layer}.ffn_gate_inp.weight")
        if router is None or router.n_rows < 2:
            return
        n = router.n_rows
        order = _not_identity(rng, n)
        self.permutations[f"blk.{layer}.experts"] = order.tolist()
        self.rows[router.name] = order
        for name, t in model.tensors.items():
            if not name.startswith(f"blk.{layer}."):
                continue
            if name.endswith(("_exps.weight", "_exps.bias")) and len(t.shape) >= 2 \
                    and t.shape[-1] == n:
                per = t.n_rows // n
                self.rows[name] = (order[:, None] * per + np.arange(per)[None, :]).ravel()
            elif name.startswith((f"blk.{layer}.exp_probs_b", f"blk.{layer}.ffn_gate_inp.b")) \
                    and t.n_rows == 1 and t.row_len == n:
                self.cols[name] = order


def write_variant(source: str | Path, out: str | Path, *, quant: str | None = None,
                  perturb: float = 0.0, permute_heads: bool = False,
                  permute_experts: bool = False, seed: int = 0,
                  progress: Callable[[int, int], None] | None = None) -> VariantResult:
    """Write a relative of the GGUF ``source`` to ``out`` (see the module text).
    ``progress(tensors_done, tensors_total)``."""
    source = Path(source)
    model = open_gguf(source)
    qtype = _quant_type(quant)
    rng = np.random.default_rng(seed)
    plan = _Plan(model, rng, permute_heads, permute_experts)
    typed = read_typed_metadata(source)
    changes = [what for what, on in (
        (f"re-quantized to {qtype.name}" if qtype else "", qtype is not None),
        (f"perturbed by {perturb:g} std", perturb > 0), ("heads permuted", permute_heads),
        ("experts permuted", permute_experts)) if on and what]
    name = typed.get("general.name", (source.stem, VT.STRING, None))[0]
    metadata: dict[str, Typed] = dict(typed)
    metadata["general.name"] = (f"{name} ({', '.join(changes) or 'copy'})", VT.STRING, None)

    entries, kinds = [], {}
    for t in model.tensors.values():
        changes_values = perturb > 0 or t.name in plan.rows or t.name in plan.cols
        new_type = t.ggml_type
        is_matrix = t.n_rows > 1 and t.row_len > 1
        if qtype is not None and is_matrix and qtype != t.ggml_type:
            new_type = qtype
        elif changes_values and t.ggml_type not in WRITABLE:
            new_type = QT.Q8_0
        block, _ = gguf.GGML_QUANT_SIZES[new_type]
        if t.row_len % block:
            new_type = QT.F16 if t.ggml_type not in (QT.F32,) else QT.F32
        kinds[t.name] = (new_type, changes_values or new_type != t.ggml_type)
        entries.append(TensorEntry(t.name, t.shape, new_type))
    if "general.file_type" in metadata and qtype is not None:
        ftype = {QT.F32: "ALL_F32"}.get(qtype, f"MOSTLY_{qtype.name}")
        if ftype in gguf.LlamaFileType.__members__:
            metadata["general.file_type"] = (int(gguf.LlamaFileType[ftype]), VT.UINT32, None)

    out = Path(out)
    partial = out.with_name(out.name + ".part")
    stream = GGUFStream(partial, metadata, entries)
    changed = []
    try:
        stream.open()
        for i, t in enumerate(model.tensors.values()):
            new_type, differs = kinds[t.name]
            if differs:
                changed.append(t.name)
                stream.write(t.name, _changed(model, t.name, new_type, perturb, plan, seed))
            else:
                stream.write(t.name, _copied(model, t.name))
            if progress is not None:
                progress(i + 1, len(entries))
        size = stream.close()
        os.replace(partial, out)
    except BaseException:
        stream.abort()
        partial.unlink(missing_ok=True)
        raise
    return VariantResult(out, size, changed, plan.permutations)


def _copied(model: ModelFile, name: str):
    t = model.tensors[name]
    for seg in t.segments:
        step = max(1, (CHUNK_FLOATS * 4) // max(1, seg.row_bytes))
        for first in range(0, seg.rows, step):
            n = min(step, seg.rows - first)
            begin = seg.offset + first * seg.row_bytes
            yield np.asarray(seg.mm[begin:begin + n * seg.row_bytes])


_POOLS: dict[int, np.ndarray] = {}
POOL_FLOATS = 1 << 23  # 32 MiB of N(0, 1) samples, twice a chunk


def _noise(rng: np.random.Generator, seed: int, n: int) -> np.ndarray:
    """``n`` N(0, 1) values: a random slice of the seed's pool (a fresh draw when ``n`` is
    larger than half the pool)."""
    if n > POOL_FLOATS // 2:
        return rng.standard_normal(n, dtype=np.float32)
    pool = _POOLS.get(seed)
    if pool is None:
        pool = np.random.default_rng([seed, 2]).standard_normal(POOL_FLOATS, dtype=np.float32)
        _POOLS.clear()
        _POOLS[seed] = pool
    at = int(rng.integers(0, POOL_FLOATS - n + 1))
    return pool[at:at + n]


def _changed(model: ModelFile, name: str, new_type: QT, perturb: float, plan: _Plan,
             seed: int):
    import zlib

    t = model.tensors[name]
    order = plan.rows.get(name)
    cols = plan.cols.get(name)
    rng = np.random.default_rng([seed, 1, zlib.crc32(name.encode())])
    std = 0.0
    if perturb > 0:
        probe = np.sort(rng.choice(t.n_rows, min(t.n_rows, 256), replace=False))
        std = float(model.rows(name, probe).std())
    step = max(1, CHUNK_FLOATS // max(1, t.row_len))
    for first in range(0, t.n_rows, step):
        index = np.arange(first, min(t.n_rows, first + step))
        values = model.rows(name, order[index] if order is not None else index)
        if cols is not None:
            values = values[:, cols]
        if perturb > 0 and std > 0:
            values += _noise(rng, seed, values.size).reshape(values.shape) * np.float32(
                perturb * std)
        yield np.ascontiguousarray(gguf.quants.quantize(values, new_type)).view(np.uint8)
