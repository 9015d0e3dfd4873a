"""Writing GGUF files as a stream: header first (gguf-py's ``GGUFWriter``), then tensor data
chunk by chunk, so no tensor is ever held whole in memory.

Also: typing metadata values the way llama.cpp expects them (it refuses a key of the wrong
type), and reading a GGUF's metadata *with* its value types and complete arrays (the header
reader of :mod:`kurabe.modelfiles.gguf_header` keeps neither), so a model's own tokenizer and
key types carry over to a file written from its header.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import gguf
import numpy as np

from kurabe.modelfiles.gguf_header import MAGIC, SUPPORTED_VERSIONS, GGUFError, _Reader

VT = gguf.GGUFValueType
QT = gguf.GGMLQuantizationType

Typed = tuple[Any, VT, VT | None]

DEFAULT_ALIGNMENT = gguf.GGUF_DEFAULT_ALIGNMENT


# --------------------------------------------------------------------------------------------
# Metadata types
# --------------------------------------------------------------------------------------------


def typed_value(value: Any) -> Typed:
    """A metadata value with its GGUF type, as llama.cpp's converters type them: an explicit
    ``(value, type[, sub_type])`` tuple is kept; otherwise bool -> BOOL, int -> UINT32
    (INT32 if negative, 64-bit if large), float -> FLOAT32, str -> STRING, list -> ARRAY of
    its items' type."""
    if isinstance(value, tuple) and len(value) in (2, 3) and isinstance(value[1], VT):
        return (value[0], value[1], value[2] if len(value) == 3 else None)
    if isinstance(value, (bool, np.bool_)):
        return bool(value), VT.BOOL, None
    if isinstance(value, (int, np.integer)):
        value = int(value)
        if value < 0:
            return value, (VT.INT32 if value >= -(2**31) else VT.INT64), None
        return value, (VT.UINT32 if value < 2**32 else VT.UINT64), None
    if isinstance(value, (float, np.floating)):
        return float(value), VT.FLOAT32, None
    if isinstance(value, str):
        return value, VT.STRING, None
    if isinstance(value, (list, np.ndarray)):
        items = list(value.tolist() if isinstance(value, np.ndarray) else value)
        if not items:
            raise ValueError("GGUF arrays cannot be empty")
        if all(isinstance(v, bool) for v in items):
            sub = VT.BOOL
        elif all(isinstance(v, int) for v in items):
            sub = VT.INT32 if min(items) < 0 else VT.UINT32
        elif all(isinstance(v, (int, float)) for v in items):
            sub, items = VT.FLOAT32, [float(v) for v in items]
        elif all(isinstance(v, str) for v in items):
            sub = VT.STRING
        else:
            raise ValueError(f"mixed-type GGUF array: {items[:5]!r}")
        return items, VT.ARRAY, sub
    raise TypeError(f"cannot store {type(value).__name__} in GGUF metadata")


def retype(value: Any, like: Typed | None) -> Typed:
    """``value`` typed as ``like`` (the same key's typed value in a source file) when it
    fits that type, else as :func:`typed_value` types it."""
    if like is not None:
        _, vtype, sub = like
        if vtype == VT.ARRAY and isinstance(value, list) and value:
            if sub == VT.STRING and all(isinstance(v, str) for v in value):
                return value, vtype, sub
            if sub in _INT_TYPES and all(isinstance(v, int) for v in value):
                return value, vtype, sub
            if sub in (VT.FLOAT32, VT.FLOAT64) and all(isinstance(v, (int, float))
                                                        and not isinstance(v, bool)
                                                        for v in value):
                return [float(v) for v in value], vtype, sub
            if sub == VT.BOOL and all(isinstance(v, bool) for v in value):
                return value, vtype, sub
        elif vtype == VT.BOOL and isinstance(value, bool):
            return value, vtype, None
        elif vtype in _INT_TYPES and isinstance(value, int) and not isinstance(value, bool):
            return value, vtype, None
        elif vtype in (VT.FLOAT32, VT.FLOAT64) and isinstance(value, (int, float)) \
                and not isinstance(value, bool):
            return float(value), vtype, None
        elif vtype == VT.STRING and isinstance(value, str):
            return value, vtype, None
    return typed_value(value)


_INT_TYPES = (VT.UINT8, VT.INT8, VT.UINT16, VT.INT16, VT.UINT32, VT.INT32, VT.UINT64,
              VT.INT64)


# --------------------------------------------------------------------------------------------
# Reading typed metadata
# --------------------------------------------------------------------------------------------

_NUMPY = {0: np.uint8, 1: np.int8, 2: np.uint16, 3: np.int16, 4: np.uint32, 5: np.int32,
          6: np.float32, 7: np.bool_, 10: np.uint64, 11: np.int64, 12: np.float64}
_STRING, _ARRAY = 8, 9


def _typed_read(r: _Reader, vtype: int, depth: int = 0) -> Any:
    if vtype in _NUMPY:
        dtype = np.dtype(_NUMPY[vtype]).newbyteorder("<")
        return np.frombuffer(r.read(dtype.itemsize), dtype=dtype)[0].item()
    if vtype == _STRING:
        return r.string()
    if vtype == _ARRAY:
        if depth > 4:
            raise GGUFError(f"{r.path}: corrupt GGUF header (arrays nested too deep)")
        item = r.unpack("<I")
        n = r.unpack("<Q")
        if n > (1 << 26):
            raise GGUFError(f"{r.path}: corrupt GGUF header (an array of {n} items)")
        if item in _NUMPY:
            dtype = np.dtype(_NUMPY[item]).newbyteorder("<")
            return np.frombuffer(r.read(dtype.itemsize * n), dtype=dtype).tolist()
        if item == _STRING:
            out = []
            read, unpack = r.fh.read, struct.Struct("<Q").unpack
            for _ in range(n):
                (length,) = unpack(read(8))
                data = read(length)
                if len(data) != length:
                    raise GGUFError(f"{r.path}: truncated GGUF header")
                out.append(data.decode("utf-8", errors="replace"))
            return out
        return [_typed_read(r, item, depth + 1) for _ in range(n)]
    raise GGUFError(f"{r.path}: corrupt GGUF header (unknown value type {vtype})")


def read_typed_metadata(path: str | Path) -> dict[str, Typed]:
    """Every metadata key of a GGUF file with its value (arrays complete) and GGUF type
    (arrays: element type as sub-type). Reads only the metadata section."""
    path = Path(path)
    with open(path, "rb") as fh:
        r = _Reader(fh, path)
        if fh.read(4) != MAGIC:
            raise GGUFError(f"{path}: not a GGUF file")
        if r.unpack("<I") not in SUPPORTED_VERSIONS:
            raise GGUFError(f"{path}: unsupported GGUF version")
        _n_tensors, n_kv = r.unpack("<q"), r.unpack("<q")
        if not 0 <= n_kv <= (1 << 16):
            raise GGUFError(f"{path}: corrupt GGUF header ({n_kv} metadata keys)")
        out: dict[str, Typed] = {}
        for _ in range(n_kv):
            key = r.string()
            vtype = r.unpack("<I")
            sub = None
            if vtype == _ARRAY:
                pos = fh.tell()
                sub = VT(r.unpack("<I"))
                fh.seek(pos)
            out[key] = (_typed_read(r, vtype), VT(vtype), sub)
    return out


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of a file being written: name, GGML shape (``ne[0]`` first), GGML type."""

    name: str
    shape: tuple[int, ...]
    ggml_type: QT

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= int(d)
        return n

    @property
    def nbytes(self) -> int:
        block, size = gguf.GGML_QUANT_SIZES[self.ggml_type]
        if self.shape[0] % block:
            raise ValueError(f"tensor {self.name}: a row of {self.shape[0]} does not split "
                             f"into {self.ggml_type.name} blocks of {block}")
        return self.n_elements // block * size


def _pad(n: int, align: int) -> int:
    return (n + align - 1) // align * align


class GGUFStream:
    """A GGUF file written in order: ``open()`` writes metadata and tensor infos (gguf-py's
    writer), then :meth:`write` takes each tensor's data, in the order the tensors were
    given, as any number of byte chunks; :meth:`close` checks everything was written.

    ``metadata``: key -> typed value (:func:`typed_value`), ``general.architecture``
    included. ``general.alignment`` (if present) sets the data alignment."""

    def __init__(self, path: str | Path, metadata: Mapping[str, Typed],
                 tensors: Sequence[TensorEntry]) -> None:
        self.path = Path(path)
        md = dict(metadata)
        arch = md.pop("general.architecture", None)
        if arch is None:
            raise ValueError("metadata needs general.architecture")
        self.arch = str(arch[0])
        align = md.get("general.alignment")
        self.alignment = int(align[0]) if align is not None else DEFAULT_ALIGNMENT
        if self.alignment <= 0 or self.alignment & (self.alignment - 1):
            raise ValueError(f"general.alignment {self.alignment} is not a power of two")
        self.metadata = md
        self.tensors = list(tensors)
        self._fh: BinaryIO | None = None
        self._next = 0
        self.data_start = 0

    @property
    def data_bytes(self) -> int:
        return sum(_pad(t.nbytes, self.alignment) for t in self.tensors)

    def open(self, *, header_only: bool = False) -> None:
        writer = gguf.GGUFWriter(self.path, self.arch)
        writer.data_alignment = self.alignment
        for key, (value, vtype, sub) in self.metadata.items():
            writer.add_key_value(key, value, vtype, sub_type=sub)
        for t in self.tensors:
            writer.add_tensor_info(t.name, tuple(reversed(t.shape)), np.dtype(np.float32),
                                   t.nbytes, raw_dtype=t.ggml_type)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        writer.write_header_to_file(self.path)
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        assert writer.fout is not None
        fh = writer.fout[0]
        writer.fout = None  # the stream owns the file from here on
        if header_only:
            fh.close()
            return
        pos = fh.tell()
        fh.write(bytes(_pad(pos, self.alignment) - pos))
        self.data_start = fh.tell()
        self._fh = fh

    @property
    def header_bytes(self) -> int:
        return self.data_start

    def write(self, name: str, chunks: Iterable[Any]) -> int:
        """Write tensor ``name`` (the next one) from byte chunks; returns its byte count."""
        if self._fh is None:
            raise ValueError(f"{self.path}: not open for tensor data")
        if self._next >= len(self.tensors) or self.tensors[self._next].name != name:
            expected = (self.tensors[self._next].name if self._next < len(self.tensors)
                        else "none")
            raise ValueError(f"{self.path}: tensor {name} written out of order "
                             f"(next is {expected})")
        entry = self.tensors[self._next]
        done = 0
        for chunk in chunks:
            done += self._fh.write(chunk)
        if done != entry.nbytes:
            raise ValueError(f"tensor {name}: {done} bytes written, {entry.nbytes} expected")
        self._fh.write(bytes(_pad(done, self.alignment) - done))
        self._next += 1
        return done

    def close(self) -> int:
        """Finish the file; returns its size."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None
            if self._next != len(self.tensors):
                raise ValueError(f"{self.path}: {len(self.tensors) - self._next} tensor(s) "
                                 "were not written")
        return os.path.getsize(self.path)

    def abort(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def write_header_only(path: str | Path, metadata: Mapping[str, Typed],
                      tensors: Sequence[TensorEntry]) -> int:
    """A GGUF file that stops after its header (metadata and tensor infos, no data): the
    part :func:`kurabe.modelfiles.gguf_header.read_header` needs. Returns its size."""
    stream = GGUFStream(path, metadata, tensors)
    stream.open(header_only=True)
    return os.path.getsize(path)
