"""Random, valid tensor data for every GGML storage type, generated fast.

A block of a quantized type holds packed quants plus one or more fp16 scales (``d``, and for
the types with a minimum ``dmin``/``m``). Random bytes are already valid quants and sub-block
scales for every type; what has to be chosen are the super-block scales, so that the
dequantized weights look like freshly initialised ones: mean about 0, a chosen standard
deviation (0.02 for a weight matrix), nothing that can overflow in a forward pass.

* Symmetric types (Q4_0, Q5_0, Q8_0, Q3_K, Q6_K, the IQ and TQ types) get a random sign on
  ``d``, which makes the mean exactly 0 in expectation whatever the quant grid.
* Types with a minimum (Q4_1, Q5_1, Q2_K, Q4_K, Q5_K) get the minimum that centres the quants
  (``m = -7.5 d`` for 4-bit quants, ...); the K types' packed 6-bit mins are set equal to
  their scales so that every sub-block is centred.
* Every fp16 scale is spread per block (log-uniform over a factor of 4, its root mean square
  kept), as trained weights' are: constant scales made the engine slower (see
  :func:`scale_spread`).
* MXFP4 has a power-of-two (E8M0) scale and a symmetric value table: one exponent for all.
* F32, F16 and BF16 are normal samples.

The block layouts (where each fp16 scale sits) are llama.cpp's ``block_*`` structs, as
gguf-py's ``gguf.quants`` dequantizers read them. The size of a unit-scale block's values is
measured once per type by dequantizing a sample with gguf-py, so the requested standard
deviation is met for every type, including the grid-based IQ types.

:class:`BlockPool` holds a few MiB of such data per (type, deviation) and hands out slices at
rotating offsets, so a multi-gigabyte tensor is written at disk speed without being built in
memory.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import gguf
import numpy as np

QT = gguf.GGMLQuantizationType

FLOAT_TYPES = (QT.F32, QT.F16, QT.BF16)


class BlockError(ValueError):
    pass


def _fp16_bits(value: float) -> np.uint16:
    return np.array([value], dtype=np.float16).view(np.uint16)[0]


def _put_fp16(blocks: np.ndarray, offset: int, values: np.ndarray) -> None:
    """Store fp16 ``values`` (one per block) at byte ``offset`` of each block."""
    blocks[:, offset:offset + 2] = values.astype(np.float16).reshape(-1, 1).view(np.uint8)


# --------------------------------------------------------------------------------------------
# Sub-block fix-ups (centre the types with minimums; keep sub-scales away from 0)
# --------------------------------------------------------------------------------------------


def _k_scales_equal_mins(blocks: np.ndarray, rng: np.random.Generator, at: int) -> None:
    """Q4_K/Q5_K: 8 sub-block scales and mins, 6 bits each, packed in 12 bytes at ``at``;
    scales random in 16..63 and each min equal to its scale."""
    n = blocks.shape[0]
    sc = rng.integers(16, 64, size=(n, 8), dtype=np.uint8)
    packed = np.empty((n, 12), dtype=np.uint8)
    packed[:, 0:4] = (sc[:, 0:4] & 63) | ((sc[:, 4:8] >> 4) << 6)
    packed[:, 4:8] = packed[:, 0:4]  # mins = scales
    packed[:, 8:12] = (sc[:, 4:8] & 15) | ((sc[:, 4:8] & 15) << 4)
    blocks[:, at:at + 12] = packed


def _q2_k_scales(blocks: np.ndarray, rng: np.random.Generator) -> None:
    """Q2_K: 16 bytes of (min << 4 | scale); scales random in 4..15, mins equal."""
    sc = rng.integers(4, 16, size=(blocks.shape[0], 16), dtype=np.uint8)
    blocks[:, 0:16] = sc | (sc << 4)


@dataclass(frozen=True)
class _Layout:
    d_at: int                     # byte offset of the fp16 super-block scale
    min_at: int | None = None     # byte offset of the fp16 minimum (dmin or m)
    min_per_d: float = 0.0        # the minimum as a multiple of d that centres the quants
    fix: Callable[[np.ndarray, np.random.Generator], None] | None = None


_LAYOUTS: dict[QT, _Layout] = {
    QT.Q4_0: _Layout(0),
    QT.Q4_1: _Layout(0, 2, -7.5),         # x = d*q + m, q in 0..15
    QT.Q5_0: _Layout(0),
    QT.Q5_1: _Layout(0, 2, -15.5),        # x = d*q + m, q in 0..31
    QT.Q8_0: _Layout(0),
    QT.Q2_K: _Layout(80, 82, 1.5, _q2_k_scales),   # x = d*sc*q - dmin*m, q in 0..3
    QT.Q3_K: _Layout(108),
    QT.Q4_K: _Layout(0, 2, 7.5, lambda b, r: _k_scales_equal_mins(b, r, 4)),
    QT.Q5_K: _Layout(0, 2, 15.5, lambda b, r: _k_scales_equal_mins(b, r, 4)),
    QT.Q6_K: _Layout(208),
    QT.IQ2_XXS: _Layout(0),
    QT.IQ2_XS: _Layout(0),
    QT.IQ2_S: _Layout(0),
    QT.IQ3_XXS: _Layout(0),
    QT.IQ3_S: _Layout(0),
    QT.IQ1_S: _Layout(0),
    QT.IQ4_NL: _Layout(0),
    QT.IQ4_XS: _Layout(0),
    QT.TQ1_0: _Layout(52),
    QT.TQ2_0: _Layout(64),
}
# Special scale encodings: IQ1_M spreads its fp16 scale over 4 nibbles, MXFP4 has E8M0.
_SPECIAL = (QT.IQ1_M, QT.MXFP4)

#: Every type random data can be written in.
SUPPORTED_TYPES: tuple[QT, ...] = (*FLOAT_TYPES, *_LAYOUTS, *_SPECIAL)


def block_size(qtype: QT) -> tuple[int, int]:
    """(elements, bytes) of one block."""
    return gguf.GGML_QUANT_SIZES[qtype]


def _check(qtype: QT) -> QT:
    qtype = QT(qtype)
    if qtype not in SUPPORTED_TYPES:
        raise BlockError(f"cannot write random {qtype.name} data (types with random data: "
                         f"{', '.join(t.name for t in SUPPORTED_TYPES)})")
    return qtype


def _raw_blocks(qtype: QT, n: int, rng: np.random.Generator) -> np.ndarray:
    _, size = block_size(qtype)
    return np.frombuffer(rng.bytes(n * size), dtype=np.uint8).reshape(n, size).copy()


def _set_scale(qtype: QT, blocks: np.ndarray, d: np.ndarray) -> None:
    """Write the per-block scale ``d`` (float32, sign included) into ``blocks``."""
    if qtype == QT.IQ1_M:
        bits = d.astype(np.float16).view(np.uint16)
        scales = blocks[:, 48:56].copy().view(np.uint16)  # 4 x uint16 after qs[32], qh[16]
        for j in range(4):
            nib = ((bits >> np.uint16(4 * j)) & np.uint16(0xF)) << np.uint16(12)
            scales[:, j] = (scales[:, j] & np.uint16(0x0FFF)) | nib
        blocks[:, 48:56] = scales.view(np.uint8)
        return
    layout = _LAYOUTS[qtype]
    _put_fp16(blocks, layout.d_at, d)
    if layout.min_at is not None:
        _put_fp16(blocks, layout.min_at, d * np.float32(layout.min_per_d))


def _unit_blocks(qtype: QT, n: int, rng: np.random.Generator, sign: bool) -> np.ndarray:
    """Blocks with valid random quants and |d| = 1 (MXFP4: scale 1)."""
    blocks = _raw_blocks(qtype, n, rng)
    if qtype == QT.MXFP4:
        blocks[:, 0] = 128  # E8M0 128 -> scale 2**(128-128) = 1 (ggml's "half" convention)
        return blocks
    if qtype in _LAYOUTS and _LAYOUTS[qtype].fix is not None:
        _LAYOUTS[qtype].fix(blocks, rng)  # type: ignore[misc]
    d = np.ones(n, dtype=np.float32)
    if sign:
        d = np.where(rng.random(n) < 0.5, -d, d).astype(np.float32)
    _set_scale(qtype, blocks, d)
    return blocks


@functools.cache
def unit_std(qtype: QT) -> float:
    """Standard deviation of the dequantized values of unit-scale random blocks."""
    from gguf.quants import dequantize

    qtype = _check(qtype)
    if qtype in FLOAT_TYPES:
        return 1.0
    rng = np.random.default_rng(0x7717)
    blocks = _unit_blocks(qtype, 512, rng, sign=True)
    values = dequantize(blocks.reshape(-1), qtype)
    return float(np.sqrt(np.mean(np.square(values.astype(np.float64)))))


def random_blocks(qtype: QT | int, n_blocks: int, rng: np.random.Generator,
                  std: float = 0.02) -> np.ndarray:
    """``n_blocks`` valid blocks of ``qtype`` (uint8, shape (n_blocks, block bytes)) whose
    dequantized values have mean ~0 and standard deviation ~``std``. Float types give
    normal samples."""
    qtype = _check(QT(qtype))
    if n_blocks < 0:
        raise BlockError("negative block count")
    if qtype in FLOAT_TYPES:
        return encode_floats(
            (rng.standard_normal(n_blocks, dtype=np.float32) * np.float32(std)), qtype
        ).reshape(n_blocks, -1)
    blocks = _unit_blocks(qtype, n_blocks, rng, sign=qtype != QT.MXFP4)
    factor = std / unit_std(qtype)
    if qtype == QT.MXFP4:
        exponent = 128 + round(math.log2(factor))
        blocks[:, 0] = min(254, max(2, exponent))
        return blocks
    signs = np.sign(_read_scale(qtype, blocks)).astype(np.float32)
    _set_scale(qtype, blocks, signs * np.float32(factor) * scale_spread(n_blocks, rng))
    return blocks


# Why: trained weights have a different scale in every block, and the engine's speed depends
# on it. ggml converts each block's fp16 scale to float through a lookup table; with one
# scale value for a whole tensor every block reads the same table entry, and a twin with
# constant scales decoded up to 12% slower than the real file (SmolLM2-135M, Q4_1, one
# thread), while the same twin with scales spread per block decoded as fast as the real one
# (docs/twins.md, "Where the gap came from, and the fix").
SPREAD = 2.0  # block scales spread log-uniformly over [1/SPREAD, SPREAD] x the mean
# E[f^2] of that spread, so the values' standard deviation stays the one asked for
_SPREAD_RMS = math.sqrt((SPREAD ** 2 - SPREAD ** -2) / (4 * math.log(SPREAD)))


def scale_spread(n_blocks: int, rng: np.random.Generator) -> np.ndarray:
    """Per-block magnitude factors for the scales: log-uniform over [1/SPREAD, SPREAD],
    normalised to a root mean square of 1 (so the requested deviation is kept)."""
    log_f = rng.uniform(-math.log(SPREAD), math.log(SPREAD), n_blocks)
    return (np.exp(log_f) / _SPREAD_RMS).astype(np.float32)


def _read_scale(qtype: QT, blocks: np.ndarray) -> np.ndarray:
    if qtype == QT.IQ1_M:
        scales = blocks[:, 48:56].copy().view(np.uint16)
        bits = np.zeros(blocks.shape[0], dtype=np.uint16)
        for j in range(4):
            bits |= ((scales[:, j] >> np.uint16(12)) & np.uint16(0xF)) << np.uint16(4 * j)
        return bits.view(np.float16).astype(np.float32)
    at = _LAYOUTS[qtype].d_at
    return blocks[:, at:at + 2].copy().view(np.float16).reshape(-1).astype(np.float32)


def encode_floats(values: np.ndarray, qtype: QT | int) -> np.ndarray:
    """Float values as the bytes of an F32, F16 or BF16 tensor (uint8, flat)."""
    qtype = QT(qtype)
    v = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
    if qtype == QT.F32:
        return v.view(np.uint8)
    if qtype == QT.F16:
        return v.astype(np.float16).view(np.uint8)
    if qtype == QT.BF16:
        bits = v.view(np.uint32).astype(np.uint64)
        rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16  # round to nearest even
        return rounded.astype(np.uint16).view(np.uint8)
    raise BlockError(f"{qtype.name} is not a float type")


# --------------------------------------------------------------------------------------------
# Pools: fast data for big tensors
# --------------------------------------------------------------------------------------------

POOL_BYTES = 16 << 20


class BlockPool:
    """A few MiB of random valid data per (type, deviation), handed out in slices.

    ``chunks(nbytes, rng)`` yields memoryviews that together hold ``nbytes`` bytes (a whole
    number of blocks), starting at a random block of the pool and wrapping around, so two big
    tensors get different data and nothing larger than the pool is ever built."""

    def __init__(self, seed: int = 0, pool_bytes: int = POOL_BYTES) -> None:
        self.seed = seed
        self.pool_bytes = pool_bytes
        self._pools: dict[tuple[int, float], np.ndarray] = {}

    def pool(self, qtype: QT, std: float) -> np.ndarray:
        key = (int(qtype), float(std))
        pool = self._pools.get(key)
        if pool is None:
            _, size = block_size(qtype)
            n = max(1, self.pool_bytes // size)
            rng = np.random.default_rng([self.seed, int(qtype), int(std * 1e9)])
            pool = np.empty(n * size, dtype=np.uint8)
            step = max(1, (1 << 20) // size)  # built 1 MiB at a time: no big temporaries
            for first in range(0, n, step):
                k = min(step, n - first)
                pool[first * size:(first + k) * size] = random_blocks(qtype, k, rng,
                                                                      std).reshape(-1)
            self._pools[key] = pool
        return pool

    def chunks(self, qtype: QT, std: float, nbytes: int,
               rng: np.random.Generator) -> Iterator[memoryview]:
        pool = self.pool(qtype, std)
        _, size = block_size(qtype)
        if nbytes % size:
            raise BlockError(f"{nbytes} bytes is not a whole number of {qtype.name} blocks")
        view = pool.data
        n_blocks = len(pool) // size
        at = int(rng.integers(n_blocks)) * size
        left = nbytes
        while left > 0:
            take = min(left, len(pool) - at)
            yield view[at:at + take]
            left -= take
            at = 0
