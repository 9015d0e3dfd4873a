"""Model files opened for a lineage comparison: metadata, tokenizer and tensors, with rows of
any tensor read on demand (memory-mapped, only the bytes of the rows asked for) and
dequantized to float32 by gguf-py.

Two kinds of model:

* a GGUF file: the header is read by kurabe's own reader (:mod:`kurabe.modelfiles.gguf_header`
  for the tensor list and offsets, :func:`kurabe.twin.gguf_out.read_typed_metadata` for the
  complete metadata arrays). gguf-py's ``GGUFReader`` builds a NumPy view for every item of
  every metadata array, which takes seconds for a 262,144-token vocabulary; kurabe's reader
  takes a tenth of a second. Tensor data is a ``numpy.memmap`` of the file, and each
  quantized row is whole blocks, so the raw bytes of chosen rows are sliced out and handed to
  ``gguf.quants.dequantize``.
* a Hugging Face folder: ``config.json`` beside ``*.safetensors`` files (sharded or not).
  The safetensors format is an 8-byte header length, a JSON header (name -> dtype, shape,
  byte range) and raw little-endian arrays, so it is read here with ``numpy.memmap`` too
  (no extra dependency, and the same row slicing as for GGUF). Tensor names are mapped to
  GGUF names with gguf-py's ``TensorNameMap`` (``model.layers.3.self_attn.q_proj.weight`` ->
  ``blk.3.attn_q.weight``), per-expert matrices are stacked into the GGUF ``*_exps`` tensor,
  and for the architectures whose converter reorders the rows of Q and K (llama and its
  family, for llama.cpp's rotary layout) the same reordering is applied when rows are read,
  so a folder and its GGUF conversion compare row for row.

Shapes are GGML's (``ne[0]`` first): a row is ``ne[0]`` values, a tensor has
``prod(ne[1:])`` rows (experts flattened: expert ``e``'s rows are ``e*ne[1] ...``).
"""

from __future__ import annotations

import functools
import json
import mmap
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from kurabe import KurabeError

QT = gguf.GGMLQuantizationType


class LineageError(KurabeError):
    """A model that cannot be compared (missing, not a model file, unreadable)."""


@dataclass
class Segment:
    """A run of whole rows of one tensor in one file: ``rows`` rows starting at byte
    ``offset`` of ``mm``, each ``row_bytes`` long."""

    mm: np.ndarray
    offset: int
    rows: int
    row_bytes: int
    # rows read in another order (llama's Q/K rotary reordering): stored row of logical row i
    order: np.ndarray | None = None


@dataclass
class TensorRef:
    """One tensor of a model: GGML shape, storage type, and where its rows are."""

    name: str
    shape: tuple[int, ...]
    ggml_type: QT
    segments: list[Segment] = field(default_factory=list)

    @property
    def n_rows(self) -> int:
        n = 1
        for d in self.shape[1:]:
            n *= int(d)
        return n

    @property
    def row_len(self) -> int:
        return int(self.shape[0])

    @property
    def type_name(self) -> str:
        return self.ggml_type.name

    @property
    def nbytes(self) -> int:
        return sum(s.rows * s.row_bytes for s in self.segments)


def _row_bytes(ne0: int, qtype: QT, name: str, path: Path) -> int:
    try:
        block, size = gguf.GGML_QUANT_SIZES[qtype]
    except KeyError:
        raise LineageError(f"{path}: tensor {name} has an unknown type {qtype}") from None
    if ne0 % block:
        raise LineageError(f"{path}: tensor {name}: a row of {ne0} is not whole "
                           f"{qtype.name} blocks")
    return ne0 // block * size


class ModelFile:
    """A model opened for comparison (see the module text). ``kind`` is "gguf" or
    "safetensors"; ``metadata`` holds GGUF keys (a folder's config.json is translated to the
    few GGUF keys lineage reads, plus ``hf.*`` keys); ``tensors`` is by GGUF name."""

    def __init__(self, path: Path, kind: str, metadata: dict[str, Any],
                 tensors: dict[str, TensorRef], *, file_bytes: int,
                 tokenizer: dict[str, Any] | None = None, notes: list[str] | None = None
                 ) -> None:
        self.path = path
        self.kind = kind
        self.metadata = metadata
        self.tensors = tensors
        self.file_bytes = file_bytes
        self.tokenizer = tokenizer or {}
        self.notes = notes or []
        self._touched: dict[str, set[int]] = {}  # rows read, per tensor

    @property
    def bytes_read(self) -> int:
        """Bytes of the distinct rows read so far (a row read twice counts once)."""
        return sum(len(rows) * self._row_bytes(name) for name, rows in self._touched.items())

    def _row_bytes(self, name: str) -> int:
        segments = self.tensors[name].segments
        return segments[0].row_bytes if segments else 0

    @property
    def label(self) -> str:
        return self.path.name

    @property
    def architecture(self) -> str | None:
        arch = self.metadata.get("general.architecture")
        return arch if isinstance(arch, str) else None

    def hparam(self, key: str) -> Any:
        """``{arch}.{key}`` from the metadata (e.g. ``attention.head_count``)."""
        arch = self.architecture
        return self.metadata.get(f"{arch}.{key}") if arch else None

    def rows(self, name: str, index: np.ndarray) -> np.ndarray:
        """Rows ``index`` (sorted or not) of tensor ``name``, dequantized: float32 of shape
        ``(len(index), ne[0])``. Only those rows' bytes are read."""
        t = self.tensors[name]
        index = np.asarray(index, dtype=np.int64)
        self._touched.setdefault(name, set()).update(index.tolist())
        out = np.empty((len(index), t.row_len), dtype=np.float32)
        start = 0
        for seg in t.segments:
            mask = (index >= start) & (index < start + seg.rows)
            if mask.any():
                local = index[mask] - start
                if seg.order is not None:
                    local = seg.order[local]
                table = seg.mm[seg.offset:seg.offset + seg.rows * seg.row_bytes].reshape(
                    seg.rows, seg.row_bytes)
                raw = np.ascontiguousarray(table[local])
                out[mask] = _dequantize(raw, t.ggml_type, t.name, self.path)
            start += seg.rows
        return out


def _dequantize(raw: np.ndarray, qtype: QT, name: str, path: Path) -> np.ndarray:
    try:
        values = gguf.quants.dequantize(raw, qtype)
    except NotImplementedError:
        raise LineageError(f"{path}: tensor {name}: gguf-py cannot dequantize "
                           f"{qtype.name}") from None
    return np.asarray(values, dtype=np.float32).reshape(raw.shape[0], -1)


@functools.cache
def can_dequantize(qtype: QT) -> bool:
    """Whether gguf-py has a dequantizer for ``qtype`` (tried on one zero block)."""
    try:
        _block, size = gguf.GGML_QUANT_SIZES[qtype]
        gguf.quants.dequantize(np.zeros((1, size), dtype=np.uint8), qtype)
    except (KeyError, NotImplementedError, ValueError):
        return False
    return True


def map_file(path: Path) -> np.ndarray:
    """The file as a read-only uint8 array, memory-mapped for random access: the kernel is
    told not to read ahead (``MADV_RANDOM``), so reading a row brings in the pages of that
    row, not the megabytes around it (otherwise sampling 1% of a cold multi-GB file reads
    most of it from disk)."""
    try:
        with open(path, "rb") as fh:
            if os.fstat(fh.fileno()).st_size == 0:
                return np.zeros(0, dtype=np.uint8)
            mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError) as exc:
        raise LineageError(f"{path}: cannot map the file: "
                           f"{getattr(exc, 'strerror', None) or exc}") from None
    if hasattr(mmap, "MADV_RANDOM"):
        try:
            mapped.madvise(mmap.MADV_RANDOM)
        except OSError:
            pass  # advice only
    return np.frombuffer(mapped, dtype=np.uint8)


# --------------------------------------------------------------------------------------------
# GGUF
# --------------------------------------------------------------------------------------------


def _gguf_header(path: Path) -> tuple[dict[str, Any], list[tuple[str, tuple[int, ...], int, int]],
                                     int, int]:
    """Metadata (arrays complete), tensor infos (name, shape, type, offset), the header's
    length and the file's, in one pass (kurabe's bounded GGUF reader)."""
    from kurabe.modelfiles.gguf_header import (
        MAGIC,
        MAX_DIMS,
        MAX_KV,
        MAX_TENSORS,
        SUPPORTED_VERSIONS,
        GGUFError,
        _Reader,
    )
    from kurabe.twin.gguf_out import _typed_read

    try:
        fh = open(path, "rb")
    except (OSError, ValueError) as exc:
        raise LineageError(f"{path}: cannot open: {getattr(exc, 'strerror', None) or exc}"
                           ) from None
    with fh:
        r = _Reader(fh, path)
        try:
            magic = fh.read(4)
            if magic != MAGIC:
                raise LineageError(f"{path}: not a GGUF file (magic {magic!r}, expected "
                                   "b'GGUF')")
            version = r.unpack("<I")
            if version not in SUPPORTED_VERSIONS:
                raise LineageError(f"{path}: unsupported GGUF version {version}")
            n_tensors, n_kv = r.unpack("<q"), r.unpack("<q")
            if not 0 <= n_tensors <= MAX_TENSORS or not 0 <= n_kv <= MAX_KV:
                raise LineageError(f"{path}: corrupt GGUF header ({n_tensors} tensors, {n_kv} "
                                   "metadata keys)")
            metadata: dict[str, Any] = {}
            for _ in range(n_kv):
                key = r.string()
                metadata[key] = _typed_read(r, r.unpack("<I"))
            infos = []
            for _ in range(n_tensors):
                name = r.string()
                n_dims = r.unpack("<I")
                if n_dims > MAX_DIMS:
                    raise LineageError(f"{path}: corrupt GGUF header (tensor {name!r} has "
                                       f"{n_dims} dims)")
                shape = tuple(int(r.unpack("<Q")) for _ in range(n_dims))
                infos.append((name, shape, int(r.unpack("<I")), int(r.unpack("<Q"))))
            header_bytes = fh.tell()
            file_bytes = fh.seek(0, 2)
        except GGUFError as exc:
            raise LineageError(str(exc)) from None
        except (struct.error, ValueError, UnicodeDecodeError) as exc:
            raise LineageError(f"{path}: corrupt GGUF header ({exc})") from None
    return metadata, infos, header_bytes, file_bytes


def open_gguf(path: Path) -> ModelFile:
    metadata, infos, header_bytes, file_bytes = _gguf_header(Path(path))
    align = metadata.get("general.alignment", gguf.GGUF_DEFAULT_ALIGNMENT)
    if not isinstance(align, int) or align <= 0 or align & (align - 1):
        raise LineageError(f"{path}: general.alignment {align!r} is not a power of two")
    data_start = (header_bytes + align - 1) // align * align
    mm = map_file(path)
    tensors: dict[str, TensorRef] = {}
    for name, dims, ggml_type, rel in infos:
        try:
            qtype = QT(ggml_type)
        except ValueError:
            raise LineageError(f"{path}: tensor {name} has an unknown type {ggml_type}"
                               ) from None
        ref = TensorRef(name, dims or (1,), qtype)
        row_bytes = _row_bytes(ref.shape[0], qtype, name, path)
        offset = data_start + rel
        if offset + ref.n_rows * row_bytes > len(mm):
            raise LineageError(f"{path}: tensor {name} runs past the end of the file "
                               "(a partial download?)")
        ref.segments.append(Segment(mm, offset, ref.n_rows, row_bytes))
        tensors[name] = ref
    tokenizer = {k.removeprefix("tokenizer.ggml."): v for k, v in metadata.items()
                 if k.startswith("tokenizer.ggml.")}
    return ModelFile(path, "gguf", metadata, tensors, file_bytes=file_bytes,
                     tokenizer=tokenizer)


# --------------------------------------------------------------------------------------------
# Hugging Face folders: config.json + safetensors
# --------------------------------------------------------------------------------------------

_ST_TYPES = {"F32": QT.F32, "F16": QT.F16, "BF16": QT.BF16}
_MAX_ST_HEADER = 1 << 27  # 128 MiB of JSON header: far beyond any real file


def _safetensors_header(path: Path) -> tuple[dict[str, Any], int]:
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) != 8:
                raise LineageError(f"{path}: not a safetensors file (too short)")
            (n,) = struct.unpack("<Q", head)
            if n > _MAX_ST_HEADER:
                raise LineageError(f"{path}: not a safetensors file (a {n}-byte header)")
            text = fh.read(n)
    except OSError as exc:
        raise LineageError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        header = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        raise LineageError(f"{path}: not a safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise LineageError(f"{path}: not a safetensors file (its header is not an object)")
    return header, 8 + n


# Architectures whose llama.cpp converter reorders the rows of Q and K within each head
# (``LlamaModel.permute``: the rotary halves interleaved).
_ROPE_PERMUTED = {"llama", "mistral", "mixtral", "granite", "granitemoe", "deci", "smollm3"}
_EXPERT = re.compile(r"^(.*\.experts)\.(\d+)\.(.*)$")
_HF_ARCH = {"mistral": "llama", "mixtral": "llama", "qwen2_moe": "qwen2moe",
            "qwen3_moe": "qwen3moe", "gemma3_text": "gemma3", "smollm3": "smollm3"}


def _config(folder: Path) -> dict[str, Any]:
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise LineageError(f"{folder / 'config.json'}: cannot read: "
                           f"{getattr(exc, 'strerror', None) or exc}") from None
    if not isinstance(config, dict):
        raise LineageError(f"{folder / 'config.json'}: not a JSON object")
    text = config.get("text_config")
    if isinstance(text, dict):
        config = {**config, **text}
    return config


def _gguf_arch(model_type: str) -> gguf.MODEL_ARCH | None:
    name = _HF_ARCH.get(model_type, model_type)
    for arch, arch_name in gguf.MODEL_ARCH_NAMES.items():
        if arch_name == name:
            return arch
    return None


def _rope_order(rows: int, n_head: int) -> np.ndarray | None:
    """For logical (GGUF) row r of Q or K, the stored (Hugging Face) row: llama.cpp's
    converter reshapes to (heads, 2, head_dim/2) and swaps the last two axes."""
    if n_head <= 0 or rows % n_head or (rows // n_head) % 2:
        return None
    hd = rows // n_head
    return np.arange(rows).reshape(n_head, 2, hd // 2).swapaxes(1, 2).reshape(-1)


def open_hf_folder(folder: Path) -> ModelFile:
    config = _config(folder)
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise LineageError(f"{folder}: config.json without *.safetensors weights (lineage "
                           "compares weights: download them, or give GGUF files)")
    model_type = str(config.get("model_type") or "")
    arch = _gguf_arch(model_type)
    n_layers = int(config.get("num_hidden_layers") or 0)
    name_map = gguf.get_tensor_name_map(arch, max(n_layers, 1)) if arch is not None else None
    arch_name = gguf.MODEL_ARCH_NAMES[arch] if arch is not None else (model_type or "unknown")
    n_head = int(config.get("num_attention_heads") or 0)
    n_head_kv = int(config.get("num_key_value_heads") or n_head)
    notes: list[str] = []
    if name_map is None:
        notes.append(f"{folder.name}: model_type {model_type!r} has no GGUF name map; its "
                     "tensors keep their Hugging Face names")

    raw: dict[str, tuple[str, tuple[int, ...], QT, Segment]] = {}
    total = 0
    for path in files:
        header, data_start = _safetensors_header(path)
        total += path.stat().st_size
        mm = map_file(path)
        for hf_name, entry in header.items():
            if hf_name == "__metadata__" or not isinstance(entry, dict):
                continue
            dtype = _ST_TYPES.get(str(entry.get("dtype")))
            dims = [int(d) for d in entry.get("shape") or []]
            begin, end = (int(x) for x in entry.get("data_offsets") or (0, 0))
            if dtype is None or not dims:
                continue  # integer buffers, scalars, fp8 scales: not weights lineage compares
            ggml_shape = tuple(reversed(dims))
            row_bytes = _row_bytes(ggml_shape[0], dtype, hf_name, path)
            n_rows = int(np.prod(ggml_shape[1:], dtype=np.int64)) if len(dims) > 1 else 1
            if end - begin != n_rows * row_bytes or data_start + end > len(mm):
                raise LineageError(f"{path}: tensor {hf_name}: its byte range does not fit "
                                   "its shape (a damaged or partial file?)")
            raw[hf_name] = (hf_name, ggml_shape, dtype,
                            Segment(mm, data_start + begin, n_rows, row_bytes))

    def gguf_name(hf_name: str) -> str:
        if name_map is None:
            return hf_name
        mapped = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        return mapped or hf_name

    tensors: dict[str, TensorRef] = {}
    experts: dict[str, list[tuple[int, str]]] = {}
    for hf_name in raw:
        m = _EXPERT.match(hf_name)
        if m is not None:
            experts.setdefault(f"{m.group(1)}.{m.group(3)}", []).append((int(m.group(2)),
                                                                         hf_name))
            continue
        _, shape, dtype, seg = raw[hf_name]
        name = gguf_name(hf_name)
        if arch_name in _ROPE_PERMUTED and name.endswith((".attn_q.weight", ".attn_k.weight")):
            heads = n_head if ".attn_q." in name else n_head_kv
            order = _rope_order(seg.rows, heads)
            if order is not None:
                seg = Segment(seg.mm, seg.offset, seg.rows, seg.row_bytes, order)
        tensors[name] = TensorRef(name, shape, dtype, [seg])
    for key, members in experts.items():
        members.sort()
        first = raw[members[0][1]]
        if [e for e, _ in members] != list(range(len(members))) or any(
                raw[n][1] != first[1] or raw[n][2] != first[2] for _, n in members):
            notes.append(f"{folder.name}: experts of {key} are not a complete set of one "
                         "shape; left out")
            continue
        # the stacked name: ...experts.gate_proj.weight -> blk.N.ffn_gate_exps.weight
        name = gguf_name(key)
        tensors[name] = TensorRef(name, (*first[1], len(members)), first[2],
                                  [raw[n][3] for _, n in members])
    metadata: dict[str, Any] = {"general.architecture": arch_name,
                                "hf.model_type": model_type or None,
                                "hf.architectures": config.get("architectures"),
                                "hf.name_or_path": config.get("_name_or_path"),
                                "general.license": _readme_field(folder, "license")}
    base = _readme_field(folder, "base_model")
    if base:
        bases = base if isinstance(base, list) else [base]
        metadata["general.base_model.count"] = len(bases)
        for i, b in enumerate(bases):
            metadata[f"general.base_model.{i}.repo_url"] = f"https://huggingface.co/{b}"
            metadata[f"general.base_model.{i}.name"] = str(b).split("/")[-1]
            if "/" in str(b):
                metadata[f"general.base_model.{i}.organization"] = str(b).split("/")[0]
    metadata["general.name"] = folder.name
    for key, gkey in (("num_attention_heads", "attention.head_count"),
                      ("num_key_value_heads", "attention.head_count_kv"),
                      ("num_hidden_layers", "block_count"),
                      ("hidden_size", "embedding_length")):
        if config.get(key) is not None:
            metadata[f"{arch_name}.{gkey}"] = config[key]
    return ModelFile(folder, "safetensors", {k: v for k, v in metadata.items()
                                             if v is not None},
                     tensors, file_bytes=total, tokenizer=_hf_tokenizer(folder), notes=notes)


def _readme_field(folder: Path, key: str) -> Any:
    """A key of the model card's YAML front matter (README.md), read for the simple forms
    Hugging Face writes: ``key: value`` and ``key:`` followed by ``- item`` lines."""
    try:
        text = (folder / "README.md").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    if not text.startswith("---"):
        return None
    front = text[3:].split("\n---", 1)[0].splitlines()
    for i, line in enumerate(front):
        if line.startswith(f"{key}:"):
            value = line.split(":", 1)[1].strip().strip("'\"")
            if value:
                return value
            items = []
            for more in front[i + 1:]:
                if more.strip().startswith("- "):
                    items.append(more.strip()[2:].strip().strip("'\""))
                elif more.strip():
                    break
            return items or None
    return None


def _hf_tokenizer(folder: Path) -> dict[str, Any]:
    """tokenizer.json's vocabulary (tokens by id), merges and special tokens, in the GGUF
    keys' terms (``tokens``, ``merges``, ``model``, ``*_token_id``)."""
    path = folder / "tokenizer.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    model = data.get("model") if isinstance(data, dict) else None
    if not isinstance(model, dict):
        return {}
    out: dict[str, Any] = {"model": {"BPE": "gpt2", "Unigram": "llama"}.get(
        str(model.get("type")), str(model.get("type")).lower())}
    vocab = model.get("vocab")
    by_id: dict[int, str] = {}
    if isinstance(vocab, dict):
        by_id = {int(i): str(t) for t, i in vocab.items()}
    elif isinstance(vocab, list):
        by_id = {i: str(item[0] if isinstance(item, list) else item)
                 for i, item in enumerate(vocab)}
    for added in data.get("added_tokens") or []:
        if isinstance(added, dict) and "id" in added:
            by_id[int(added["id"])] = str(added.get("content"))
    if by_id:
        out["tokens"] = [by_id.get(i, "") for i in range(max(by_id) + 1)]
    merges = model.get("merges")
    if isinstance(merges, list):
        out["merges"] = [" ".join(m) if isinstance(m, list) else str(m) for m in merges]
    try:
        tcfg = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        tcfg = {}
    ids = {t: i for i, t in by_id.items()}
    for role in ("bos", "eos", "pad", "unk"):
        token = tcfg.get(f"{role}_token") if isinstance(tcfg, dict) else None
        if isinstance(token, dict):
            token = token.get("content")
        if isinstance(token, str) and token in ids:
            out[f"{'unknown' if role == 'unk' else 'padding' if role == 'pad' else role}"
                "_token_id"] = ids[token]
    return out


# --------------------------------------------------------------------------------------------
# Opening either
# --------------------------------------------------------------------------------------------


def open_model(spec: str | Path) -> ModelFile:
    """A GGUF file, ``builtin:NAME``, or a folder with config.json and safetensors (or a
    config.json in such a folder). A LineageError names the path otherwise."""
    text = str(spec)
    if text.startswith("builtin:"):
        from kurabe.modelfiles.builtin import builtin_path

        return open_gguf(builtin_path(text))
    path = Path(text).expanduser()
    if path.is_dir():
        if (path / "config.json").is_file():
            return open_hf_folder(path)
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return open_gguf(ggufs[0])
        raise LineageError(f"{path}: a folder without config.json or a single .gguf file")
    if not path.exists():
        raise LineageError(f"{path}: no such file")
    if path.name == "config.json":
        return open_hf_folder(path.parent)
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise LineageError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if magic != b"GGUF":
        raise LineageError(f"{path}: not a GGUF file (magic {magic!r}, expected b'GGUF'), "
                           "nor a folder with config.json and safetensors weights")
    return open_gguf(path)
