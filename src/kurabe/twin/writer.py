"""Write a synthetic twin: a random-weight GGUF with exactly a model's architecture.

The twin has the model's metadata (with its own value types when the model is a GGUF file),
tensor names, shapes and per-tensor types, valid random data for every type
(:mod:`kurabe.twin.blocks`) with starting values that keep a forward pass finite
(:mod:`kurabe.twin.values`), a tokenizer of exactly the model's vocabulary size
(:mod:`kurabe.twin.tokenizer`, or the model's own when its header holds all of it) and a chat
template. Decode speed and memory do not depend on what the weights are, so a twin measures
an architecture's speed and memory on real hardware without downloading the weights.

It is written as a stream (header, then every tensor in chunks from a pool of random blocks)
into ``OUT.part``, renamed to ``OUT`` once complete.
"""

from __future__ import annotations

import os
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from kurabe import KurabeError
from kurabe.modelfiles.gguf_header import GGUFError, SkippedArray
from kurabe.twin import tokenizer as tok
from kurabe.twin.blocks import FLOAT_TYPES, BlockError, BlockPool, encode_floats, random_blocks
from kurabe.twin.gguf_out import (
    GGUFStream,
    TensorEntry,
    Typed,
    read_typed_metadata,
    retype,
    typed_value,
)
from kurabe.twin.values import FIXED_KINDS, initial_values, tensor_kind, weight_std

QT = gguf.GGMLQuantizationType
VT = gguf.GGUFValueType

TWIN_KEY = "kurabe.twin"

# Tensors up to this size get fresh random data of their own; bigger ones are served from the
# block pools (:class:`BlockPool`).
FRESH_BYTES = 1 << 20
CHUNK_BYTES = 4 << 20  # rows of fixed-value tensors generated at a time

# Keys not carried over: the writer sets them, or they describe another file.
_DROPPED_PREFIXES = ("split.", "GGUF.")
_SET_LATER = ("general.architecture", "general.name", "general.file_type",
              "general.quantization_version", TWIN_KEY)


class TwinError(KurabeError):
    pass


@dataclass
class TwinResult:
    path: Path
    file_bytes: int
    seconds: float
    n_tensors: int


def is_twin(header: Any) -> bool:
    """Whether a model header (GGUF or synthesized) is a twin's: ``kurabe.twin`` is true."""
    value = getattr(header, "metadata", {}).get(TWIN_KEY)
    return value is True or (isinstance(value, (int, np.integer)) and not isinstance(
        value, bool) and int(value) == 1)


# --------------------------------------------------------------------------------------------
# Planning
# --------------------------------------------------------------------------------------------


def _type_of(value: Any, name: str) -> QT:
    if isinstance(value, str):
        try:
            return QT.__members__[value.upper()]
        except KeyError:
            raise TwinError(f"tensor {name}: unknown GGML type {value!r}") from None
    try:
        return QT(int(value))
    except ValueError:
        raise TwinError(f"tensor {name}: unknown GGML type id {value}") from None


def _entries(header: Any, types: Mapping[str, Any] | None) -> list[TensorEntry]:
    tensors = list(getattr(header, "tensors", []) or [])
    if not tensors:
        raise TwinError(f"{_label(header)}: the model lists no tensors")
    names = [t.name for t in tensors]
    if len(set(names)) != len(names):
        raise TwinError(f"{_label(header)}: duplicate tensor names")
    if types:
        unknown = sorted(set(types) - set(names))
        if unknown:
            raise TwinError(f"{_label(header)}: types given for tensors the model does not "
                            f"have: {', '.join(unknown[:5])}")
    out = []
    for t in tensors:
        qtype = _type_of(types[t.name] if types and t.name in types else t.ggml_type, t.name)
        shape = tuple(int(d) for d in t.shape)
        block, _ = gguf.GGML_QUANT_SIZES[qtype]
        if shape[0] % block:
            raise TwinError(f"tensor {t.name}: a row of {shape[0]} does not split into "
                            f"{qtype.name} blocks of {block}")
        out.append(TensorEntry(t.name, shape, qtype))
    return out


def _label(header: Any) -> str:
    path = getattr(header, "path", None)
    return str(path) if path is not None else "model"


def _n_vocab(metadata: Mapping[str, Any], arch: str, entries: list[TensorEntry]) -> int:
    for e in entries:
        if e.name == "token_embd.weight" and len(e.shape) >= 2:
            return int(e.shape[1])
    value = metadata.get(f"{arch}.vocab_size")
    if isinstance(value, int) and value > 0:
        return value
    tokens = metadata.get("tokenizer.ggml.tokens")
    if isinstance(tokens, SkippedArray):
        return tokens.length
    if isinstance(tokens, list) and tokens:
        return len(tokens)
    raise TwinError(f"cannot tell the vocabulary size of the {arch} model (no token_embd "
                    f"tensor, no {arch}.vocab_size)")


def _source_metadata(header: Any) -> dict[str, Typed]:
    """The typed metadata of the GGUF file behind ``header``, if it is one and readable."""
    path = getattr(header, "path", None)
    if path is None or not Path(path).is_file():
        return {}
    try:
        return read_typed_metadata(path)
    except (OSError, GGUFError, ValueError, UnicodeDecodeError):
        return {}


def _own_tokenizer(metadata: Mapping[str, Any], source: Mapping[str, Typed],
                   n_vocab: int) -> dict[str, Typed] | None:
    """The header's own tokenizer keys, when its arrays are complete and fit the model."""
    def full(key: str) -> Any:
        value = metadata.get(key)
        if isinstance(value, SkippedArray) or value is None:
            src = source.get(key)
            if src is None or (isinstance(value, SkippedArray)
                               and len(src[0]) != value.length):
                return None
            return src[0]
        return value

    model = metadata.get("tokenizer.ggml.model")
    tokens = full("tokenizer.ggml.tokens")
    if not isinstance(model, str) or not isinstance(tokens, list) or len(tokens) != n_vocab:
        return None
    if model == "gpt2" and not isinstance(full("tokenizer.ggml.merges"), list):
        return None
    out: dict[str, Typed] = {}
    for key, value in metadata.items():
        if not key.startswith("tokenizer.") or key == "tokenizer.chat_template":
            continue
        value = full(key)
        if value is None:
            continue
        if isinstance(value, list) and len(value) != n_vocab and key in (
                "tokenizer.ggml.token_type", "tokenizer.ggml.scores"):
            return None
        if isinstance(value, int) and not isinstance(value, bool) and key.endswith(
                "_token_id") and not 0 <= value < n_vocab:
            continue
        out[key] = retype(value, source.get(key))
    return out


def _main_type(entries: list[TensorEntry]) -> QT | None:
    """The type holding most of the bytes of the layers' matrices (the embedding and output
    layer follow their own rules)."""
    by_type: dict[QT, int] = {}
    for e in entries:
        if len(e.shape) >= 2 and e.name not in ("token_embd.weight", "output.weight"):
            by_type[e.ggml_type] = by_type.get(e.ggml_type, 0) + e.nbytes
    return max(by_type, key=lambda t: by_type[t]) if by_type else None


def _file_type(entries: list[TensorEntry], stated: Any) -> int | None:
    """llama.cpp's general.file_type for the twin's mix: the one ``stated`` (the header's)
    when the mix holds the type it names (Q4_K_M for a mix with Q4_K matrices, even where
    fallbacks such as Q5_0 for rows not divisible by 256 hold more bytes, as in Gemma-3-270M
    at Q4_K_M), else one named after the main type."""
    main = _main_type(entries)
    if isinstance(stated, int) and not isinstance(stated, bool):
        try:
            name = gguf.LlamaFileType(stated).name.removeprefix("MOSTLY_").removeprefix("ALL_")
        except ValueError:
            name = ""
        held = {QT(e.ggml_type).name for e in entries if len(e.shape) >= 2}
        if main is None or name.startswith(main.name) or any(
                name == t or name.startswith(t + "_") for t in held):
            return stated
    if main is None:
        return None
    if main == QT.F32:
        return int(gguf.LlamaFileType.ALL_F32)
    for name in (f"MOSTLY_{main.name}", f"MOSTLY_{main.name}_M"):
        if name in gguf.LlamaFileType.__members__:
            return int(gguf.LlamaFileType[name])
    return None


def _model_name(metadata: Mapping[str, Any], header: Any) -> str:
    for key in ("general.name", "general.basename"):
        value = metadata.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    path = getattr(header, "path", None)
    if path is not None:
        p = Path(path)
        stem = p.name.removesuffix(".json").removesuffix(".gguf").removesuffix(".config")
        return p.parent.name if stem == "config" else stem
    return str(metadata.get("general.architecture"))


def twin_metadata(header: Any, entries: list[TensorEntry], *,
                  chat_template: str | None = None,
                  marks: Mapping[str, Any] | None = None) -> dict[str, Typed]:
    """The twin's metadata, typed: the header's keys (its own types where the header is a
    readable GGUF), a tokenizer, the chat template, ``general.name`` = "twin of NAME",
    ``general.file_type`` of the mix (the header's when it names the mix's main type),
    ``kurabe.twin`` = true, then ``marks``."""
    metadata = dict(header.metadata)
    arch = metadata.get("general.architecture")
    if not isinstance(arch, str) or not arch:
        raise TwinError(f"{_label(header)}: the model has no general.architecture")
    source = _source_metadata(header)
    n_vocab = _n_vocab(metadata, arch, entries)

    md: dict[str, Typed] = {"general.architecture": (arch, VT.STRING, None)}
    md["general.name"] = (f"twin of {_model_name(metadata, header)}", VT.STRING, None)
    for key, value in metadata.items():
        if key.startswith(_DROPPED_PREFIXES) or key.startswith("tokenizer.") \
                or key in _SET_LATER:
            continue
        if isinstance(value, SkippedArray):
            src = source.get(key)
            if src is None or len(src[0]) != value.length:
                continue  # an array the header reader skipped and the file cannot give back
            value = src[0]
        if isinstance(value, list) and not value:
            continue
        md[key] = retype(value, source.get(key))

    own = _own_tokenizer(metadata, source, n_vocab)
    template = chat_template
    if template is None:
        existing = metadata.get("tokenizer.chat_template")
        template = existing if isinstance(existing, str) and existing else None
    if template is None:
        template = tok.CHATML_TEMPLATE
    if own is not None:
        md.update(own)
    else:
        add_bos = arch.startswith("gemma")
        md.update(tok.synthesize(n_vocab, chat_template=template, add_bos=add_bos).metadata())
    md["tokenizer.chat_template"] = (template, VT.STRING, None)

    file_type = _file_type(entries, metadata.get("general.file_type"))
    if file_type is not None:
        md["general.file_type"] = (file_type, VT.UINT32, None)
    version = metadata.get("general.quantization_version")
    if isinstance(version, int) and not isinstance(version, bool):
        md["general.quantization_version"] = retype(
            version, source.get("general.quantization_version"))
    elif any(e.ggml_type not in FLOAT_TYPES for e in entries):
        md["general.quantization_version"] = (gguf.GGML_QUANT_VERSION, VT.UINT32, None)
    md[TWIN_KEY] = (True, VT.BOOL, None)
    for key, value in (marks or {}).items():
        md[key] = typed_value(value)
    return md


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def tensor_rng(seed: int, name: str) -> np.random.Generator:
    """The random generator of one tensor: depends only on the seed and the tensor's name."""
    return np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])


class TensorData:
    """Random data for the tensors of one file (see the module text)."""

    def __init__(self, n_embd: int, seed: int = 0) -> None:
        self.n_embd = n_embd
        self.seed = seed
        self.pools = BlockPool(seed)

    def chunks(self, entry: TensorEntry) -> Iterator[Any]:
        kind = tensor_kind(entry.name)
        rng = tensor_rng(self.seed, entry.name)
        qtype = entry.ggml_type
        if kind in FIXED_KINDS:
            if qtype not in FLOAT_TYPES:
                raise TwinError(f"tensor {entry.name}: its starting values ({kind}) need a "
                                f"float type, not {qtype.name}")
            yield from self._fixed(entry, rng)
            return
        std = weight_std(kind, self.n_embd)
        nbytes = entry.nbytes
        block, _ = gguf.GGML_QUANT_SIZES[qtype]
        if nbytes <= FRESH_BYTES:
            yield random_blocks(qtype, entry.n_elements // block, rng, std).reshape(-1)
            return
        yield from self.pools.chunks(qtype, std, nbytes, rng)

    def _fixed(self, entry: TensorEntry, rng: np.random.Generator) -> Iterator[Any]:
        rows = entry.n_elements // entry.shape[0]
        per_chunk = max(1, (CHUNK_BYTES // 4) // entry.shape[0])
        done = 0
        while done < rows:
            n = min(per_chunk, rows - done)
            values = initial_values(entry.name, (n, entry.shape[0]), rng, self.n_embd)
            yield encode_floats(values, entry.ggml_type)
            done += n


def _n_embd(metadata: Mapping[str, Any], arch: str, entries: list[TensorEntry]) -> int:
    value = metadata.get(f"{arch}.embedding_length")
    if isinstance(value, int) and value > 0:
        return value
    for e in entries:
        if e.name == "token_embd.weight":
            return int(e.shape[0])
    return 1


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def write_twin(header: Any, out: Path, *, types: Mapping[str, int] | None = None,
               chat_template: str | None = None, marks: Mapping[str, Any] | None = None,
               progress: Callable[[int, int], None] | None = None,
               seed: int = 0) -> TwinResult:
    """Write a random-weight GGUF with exactly ``header``'s architecture metadata and tensor
    names/shapes (``header``: a kurabe.modelfiles GGUFHeader from read_header, or an
    HFModelHeader from read_hf_config: ``.metadata`` dict, ``.tensors`` with name, shape in
    GGML order, ggml_type). ``types``: ggml type id (or name) per tensor name (e.g. from
    kurabe.simulator.quantize.predict_quant(header, "Q4_K_M")); default: each tensor's own
    ggml_type. A tokenizer of exactly the vocabulary size the header declares is written
    (the header's own tokenizer arrays are reused when complete, else synthesized); the chat
    template given (or the header's, or a ChatML default). ``marks``: extra metadata keys;
    write_twin always adds ``kurabe.twin = True``. ``progress(bytes_done, bytes_total)``.
    Streams tensor data to disk, never holding the model in memory."""
    started = time.monotonic()
    out = Path(out)
    entries = _entries(header, types)
    md = twin_metadata(header, entries, chat_template=chat_template, marks=marks)
    arch = str(md["general.architecture"][0])
    data = TensorData(_n_embd(header.metadata, arch, entries), seed)

    partial = out.with_name(out.name + ".part")
    stream = GGUFStream(partial, md, entries)
    try:
        stream.open()
        total = stream.header_bytes + stream.data_bytes
        done = stream.header_bytes
        if progress is not None:
            progress(done, total)
        for entry in entries:
            def counted(chunks: Iterator[Any]) -> Iterator[Any]:
                nonlocal done
                for chunk in chunks:
                    yield chunk
                    done += len(chunk)
                    if progress is not None:
                        progress(min(done, total), total)
            stream.write(entry.name, counted(data.chunks(entry)))
            done = min(total, _aligned_after(done, stream.alignment))
        size = stream.close()
        os.replace(partial, out)
    except BaseException as exc:
        stream.abort()
        partial.unlink(missing_ok=True)
        if isinstance(exc, (BlockError, ValueError, TypeError)) \
                and not isinstance(exc, TwinError):
            raise TwinError(f"{out}: {exc}") from None
        if isinstance(exc, OSError):
            raise TwinError(f"{out}: cannot write: {exc.strerror or exc}") from None
        raise
    if progress is not None:
        progress(size, size)
    return TwinResult(out, size, time.monotonic() - started, len(entries))


def _aligned_after(n: int, align: int) -> int:
    return (n + align - 1) // align * align
