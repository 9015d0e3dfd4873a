"""Read a GGUF header (metadata and tensor list) without touching the tensor data.

Streams the file with bounded reads, so a truncated file that still holds the whole header
works, and a corrupt one (absurd counts or lengths) fails fast with a one-line error instead
of a huge allocation. Large arrays (tokenizer vocabularies) are skipped, keeping their length.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from kurabe import KurabeError

MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
MAX_STRING_BYTES = 1 << 24  # 16 MiB: a chat template is a few KiB
MAX_KV = 1 << 16
MAX_TENSORS = 1 << 20
MAX_DIMS = 8
KEEP_ARRAY_ITEMS = 4096  # longer arrays are skipped and summarised by their length
MAX_ARRAY_DEPTH = 16  # arrays of arrays: real files nest one level, if at all

# GGUF value types -> struct format (None: string / array)
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
            10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


class GGUFError(KurabeError):
    pass


@dataclass
class SkippedArray:
    """An array too long to keep (e.g. tokenizer.ggml.tokens): only its length."""

    item_type: int
    length: int


@dataclass
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int


@dataclass
class GGUFHeader:
    path: Path
    version: int
    metadata: dict[str, Any]
    tensors: list[TensorInfo] = field(default_factory=list)
    header_bytes: int = 0
    file_bytes: int = 0

    def get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(key, default)

    @property
    def architecture(self) -> str | None:
        return self.metadata.get("general.architecture")

    @property
    def file_type_name(self) -> str | None:
        """llama.cpp's name of the file's quant (e.g. Q4_K_M), from general.file_type."""
        value = self.metadata.get("general.file_type")
        if value is None:
            return None
        try:
            import gguf

            return gguf.LlamaFileType(int(value)).name.removeprefix("MOSTLY_")
        except (ImportError, ValueError):
            return f"file_type {value}"


class _Reader:
    def __init__(self, fh: BinaryIO, path: Path) -> None:
        self.fh = fh
        self.path = path

    def read(self, n: int) -> bytes:
        data = self.fh.read(n)
        if len(data) != n:
            raise GGUFError(f"{self.path}: truncated GGUF header (ends at byte {self.fh.tell()})")
        return data

    def unpack(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.read(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        n = self.unpack("<Q")
        if n > MAX_STRING_BYTES:
            raise GGUFError(f"{self.path}: corrupt GGUF header (a {n}-byte string)")
        return self.read(n).decode("utf-8", errors="replace")

    def skip_string(self) -> None:
        n = self.unpack("<Q")
        if n > MAX_STRING_BYTES:
            raise GGUFError(f"{self.path}: corrupt GGUF header (a {n}-byte string)")
        self.fh.seek(n, 1)

    def value(self, vtype: int, depth: int = 0) -> Any:
        if vtype in _SCALARS:
            return self.unpack(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            if depth >= MAX_ARRAY_DEPTH:
                raise GGUFError(
                    f"{self.path}: corrupt GGUF header (arrays nested over {MAX_ARRAY_DEPTH} deep)"
                )
            item_type = self.unpack("<I")
            length = self.unpack("<Q")
            if length > (1 << 34):
                raise GGUFError(f"{self.path}: corrupt GGUF header (an array of {length} items)")
            if length > KEEP_ARRAY_ITEMS:
                self.skip_array(item_type, length, depth + 1)
                return SkippedArray(item_type, length)
            return [self.value(item_type, depth + 1) for _ in range(length)]
        raise GGUFError(f"{self.path}: corrupt GGUF header (unknown value type {vtype})")

    def skip_array(self, item_type: int, length: int, depth: int) -> None:
        if item_type in _SCALARS:
            self.fh.seek(struct.calcsize(_SCALARS[item_type]) * length, 1)
        elif item_type == _STRING:
            for _ in range(length):
                self.skip_string()
        else:
            for _ in range(length):
                self.value(item_type, depth)


def read_header(path: str | Path) -> GGUFHeader:
    path = Path(path)
    try:
        fh = open(path, "rb")
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        raise GGUFError(f"{path}: cannot open: {getattr(exc, 'strerror', None) or exc}") from None
    with fh:
        r = _Reader(fh, path)
        magic = fh.read(4)
        if magic != MAGIC:
            raise GGUFError(f"{path}: not a GGUF file (magic {magic!r}, expected b'GGUF')")
        version = r.unpack("<I")
        if version not in SUPPORTED_VERSIONS:
            raise GGUFError(f"{path}: unsupported GGUF version {version}")
        n_tensors, n_kv = r.unpack("<q"), r.unpack("<q")
        if not 0 <= n_tensors <= MAX_TENSORS or not 0 <= n_kv <= MAX_KV:
            raise GGUFError(
                f"{path}: corrupt GGUF header ({n_tensors} tensors, {n_kv} metadata keys)"
            )
        metadata: dict[str, Any] = {}
        for _ in range(n_kv):
            key = r.string()
            metadata[key] = r.value(r.unpack("<I"))
        tensors = []
        for _ in range(n_tensors):
            name = r.string()
            n_dims = r.unpack("<I")
            if n_dims > MAX_DIMS:
                raise GGUFError(
                    f"{path}: corrupt GGUF header (tensor {name!r} has {n_dims} dims)"
                )
            shape = tuple(r.unpack("<Q") for _ in range(n_dims))  # uint64 per the spec
            tensors.append(TensorInfo(name, shape, r.unpack("<I"), r.unpack("<Q")))
        header_bytes = fh.tell()
        file_bytes = fh.seek(0, 2)
        if header_bytes > file_bytes:  # a skipped array at the end ran past the file's end
            raise GGUFError(f"{path}: truncated GGUF header (ends at byte {file_bytes})")
    return GGUFHeader(path, version, metadata, tensors, header_bytes, file_bytes)
