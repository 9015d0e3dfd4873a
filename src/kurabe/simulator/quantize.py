"""Predict what llama-quantize makes of a model before anyone downloads or quantizes it.

``predict_quant(header, "Q4_K_M")`` takes anything shaped like a GGUF header (the
:class:`~kurabe.modelfiles.gguf_header.GGUFHeader` of an F16/BF16 GGUF, or the synthesized view
of a Hugging Face ``config.json`` from :mod:`kurabe.modelfiles.hf_config`) and returns, per
tensor, the GGML type llama-quantize would choose, the bytes per type (the "quant mix") and
the size of the output file.

The per-tensor rules are llama.cpp's (``src/llama-quant.cpp``), re-stated here:

* Only tensors whose name ends in ``weight``, with at least 2 dimensions (trailing 1s do not
  count), are quantized. Norms (``*_norm.weight``), MoE routers (``ffn_gate_inp.weight``),
  SSM/short convolutions, positional and token-type embeddings, RWKV's small mixing
  matrices, T5's relative bias and a few multimodal tensors keep the type they have in the
  input file (F32 for vectors, as written by the converter).
* ``output.weight`` (and ``token_embd.weight`` when the model has no ``output.weight``, i.e.
  tied embeddings) becomes Q6_K for every K-quant/legacy mix except Q8_0 (stays Q8_0);
  Q8_0 when its row size is not a multiple of the block size; Q8_0 for MXFP4_MOE.
* MXFP4_MOE: every quantized 3-D tensor with more than one expert becomes MXFP4, every other
  quantized tensor Q8_0.
* attention V (and fused QKV / MLA ``attn_kv_b``, counted together in file order): Q3_K_M
  gives the first two Q5_K and the rest Q4_K; Q3_K_L gives Q5_K; Q4_K_M and Q5_K_M give Q6_K
  on the "use more bits" layers (the first 1/8, the last 1/8, and every third layer in
  between); Q4_K_S gives the first four Q5_K; Q2_K gives Q4_K (Q3_K below 4 query heads per
  KV head); IQ4_NL/IQ4_XS give Q5_K with 4+ query heads per KV head. A 70B-class model
  (llama or qwen2 with 80 layers, ...) bumps Q3_K/Q4_K attention V to Q5_K. A model with
  exactly 8 experts puts attention V and K at Q8_0.
* ffn_down (dense, MoE experts and shared experts; the layer is the tensor's block number
  for MoE models, the running count for dense ones): Q2_K -> Q3_K; Q3_K_M: Q5_K in the first
  1/16 of layers, else Q4_K; Q3_K_L -> Q5_K; Q4_K_M and Q5_K_M -> Q6_K on the "use more bits"
  layers; Q4_K_S -> Q5_K in the first 1/8; IQ4_NL/IQ4_XS -> Q5_K in the first 1/8. Falcon
  has its own variants.
* attn_output: Q2_K -> Q3_K, Q3_K_M -> Q4_K, Q3_K_L -> Q5_K; with 8 experts most low mixes
  use Q5_K.
* Shape fallback, applied last: when a row (``ne[0]``) is not a multiple of the chosen
  type's block size, Q2_K/Q3_K -> Q4_0, Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0,
  IQ4_XS -> IQ4_NL; if the row is not a multiple of 32 either, F16.

File size: the header of the output is the input's header (same keys and tensor infos;
llama-quantize only sets ``general.quantization_version`` and ``general.file_type``, and
writes a shape without its trailing dimensions of 1), padded to the alignment, then every
tensor's data padded to 32 bytes. From a real GGUF header this is exact; for a synthesized
header the header length is an estimate (see :mod:`kurabe.modelfiles.hf_config`), the tensor
data is exact.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kurabe import KurabeError

GGUF_DEFAULT_ALIGNMENT = 32


class QuantizeError(KurabeError):
    pass


# --------------------------------------------------------------------------------------------
# GGML tensor types: (name, id, elements per block, bytes per block)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GGMLType:
    name: str
    id: int
    block: int
    block_bytes: int

    @property
    def quantized(self) -> bool:
        return self.name not in _FLOAT_TYPES

    def row_bytes(self, n: int) -> int:
        return n // self.block * self.block_bytes


_FLOAT_TYPES = {"F32", "F16", "BF16", "F64", "I8", "I16", "I32", "I64"}

_TYPE_TABLE = (
    ("F32", 0, 1, 4), ("F16", 1, 1, 2), ("Q4_0", 2, 32, 18), ("Q4_1", 3, 32, 20),
    ("Q5_0", 6, 32, 22), ("Q5_1", 7, 32, 24), ("Q8_0", 8, 32, 34), ("Q8_1", 9, 32, 40),
    ("Q2_K", 10, 256, 84), ("Q3_K", 11, 256, 110), ("Q4_K", 12, 256, 144),
    ("Q5_K", 13, 256, 176), ("Q6_K", 14, 256, 210), ("Q8_K", 15, 256, 292),
    ("IQ2_XXS", 16, 256, 66), ("IQ2_XS", 17, 256, 74), ("IQ3_XXS", 18, 256, 98),
    ("IQ1_S", 19, 256, 50), ("IQ4_NL", 20, 32, 18), ("IQ3_S", 21, 256, 110),
    ("IQ2_S", 22, 256, 82), ("IQ4_XS", 23, 256, 136), ("I8", 24, 1, 1), ("I16", 25, 1, 2),
    ("I32", 26, 1, 4), ("I64", 27, 1, 8), ("F64", 28, 1, 8), ("IQ1_M", 29, 256, 56),
    ("BF16", 30, 1, 2), ("TQ1_0", 34, 256, 54), ("TQ2_0", 35, 256, 66),
    ("MXFP4", 39, 32, 17),
)
GGML_TYPES: dict[str, GGMLType] = {n: GGMLType(n, i, b, s) for n, i, b, s in _TYPE_TABLE}
_TYPES_BY_ID: dict[int, GGMLType] = {t.id: t for t in GGML_TYPES.values()}


def ggml_type(key: int | str) -> GGMLType:
    """A GGML type by id (as stored in a GGUF tensor info) or name ("Q4_K")."""
    if isinstance(key, str):
        try:
            return GGML_TYPES[key.upper()]
        except KeyError:
            raise QuantizeError(f"unknown GGML type {key!r}") from None
    try:
        return _TYPES_BY_ID[int(key)]
    except KeyError:
        try:  # a type newer than this table: ask gguf-py
            import gguf

            qt = gguf.GGMLQuantizationType(int(key))
            block, size = gguf.GGML_QUANT_SIZES[qt]
            return GGMLType(qt.name, qt.value, block, size)
        except (ImportError, ValueError, KeyError):
            raise QuantizeError(f"unknown GGML type id {key}") from None


def tensor_nbytes(type_: GGMLType | int | str, shape: Iterable[int]) -> int:
    """Bytes of a tensor of ``shape`` (GGML order, ne[0] first) stored as ``type_``."""
    t = type_ if isinstance(type_, GGMLType) else ggml_type(type_)
    dims = [int(d) for d in shape] or [1]
    rows = 1
    for d in dims[1:]:
        rows *= d
    return rows * t.row_bytes(dims[0])


def _pad(n: int, align: int) -> int:
    return (n + align - 1) // align * align


# --------------------------------------------------------------------------------------------
# llama.cpp file types ("ftype", the name given to llama-quantize)
# --------------------------------------------------------------------------------------------

# name -> (llama_ftype value written as general.file_type, default tensor type)
_FTYPES: dict[str, tuple[int, str]] = {
    "F16": (1, "F16"), "BF16": (32, "BF16"),
    "Q4_0": (2, "Q4_0"), "Q4_1": (3, "Q4_1"), "Q5_0": (8, "Q5_0"), "Q5_1": (9, "Q5_1"),
    "Q8_0": (7, "Q8_0"),
    "Q2_K": (10, "Q2_K"),
    "Q3_K_S": (11, "Q3_K"), "Q3_K_M": (12, "Q3_K"), "Q3_K_L": (13, "Q3_K"),
    "Q4_K_S": (14, "Q4_K"), "Q4_K_M": (15, "Q4_K"),
    "Q5_K_S": (16, "Q5_K"), "Q5_K_M": (17, "Q5_K"),
    "Q6_K": (18, "Q6_K"),
    "IQ4_NL": (25, "IQ4_NL"), "IQ4_XS": (30, "IQ4_XS"),
    "MXFP4_MOE": (38, "MXFP4"),
}

#: The quantization mixes ``predict_quant`` knows (llama-quantize's names). The IQ1/IQ2/IQ3
#: and Q2_K_S mixes are left out: llama-quantize refuses them without an importance matrix.
QUANT_TYPES: tuple[str, ...] = (
    "Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_0", "Q4_1", "Q4_K_S", "Q4_K_M",
    "Q5_0", "Q5_1", "Q5_K_S", "Q5_K_M", "Q6_K", "Q8_0", "IQ4_NL", "IQ4_XS",
    "MXFP4_MOE", "F16", "BF16",
)

# Fallback when a row does not split into whole blocks of the chosen type.
_FALLBACK = {"Q2_K": "Q4_0", "Q3_K": "Q4_0", "TQ1_0": "Q4_0", "TQ2_0": "Q4_0",
             "Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0",
             "IQ1_S": "IQ4_NL", "IQ1_M": "IQ4_NL", "IQ2_XXS": "IQ4_NL", "IQ2_XS": "IQ4_NL",
             "IQ2_S": "IQ4_NL", "IQ3_XXS": "IQ4_NL", "IQ3_S": "IQ4_NL", "IQ4_XS": "IQ4_NL"}

# Architectures and layer counts llama.cpp labels "70B" (the label changes attention V).
_70B_LAYERS = {"llama": 80, "qwen2": 80, "deci": 80, "olmo": 80, "jais2": 68}


# --------------------------------------------------------------------------------------------
# Tensor categories and the "may this be quantized" test
# --------------------------------------------------------------------------------------------

_OUTPUT, _TOKEN_EMBD, _QKV, _KV_B, _V, _K, _Q, _ATTN_OUT = (
    "output", "token_embd", "attn_qkv", "attn_kv_b", "attn_v", "attn_k", "attn_q", "attn_output")
_FFN_UP, _FFN_GATE, _FFN_DOWN, _OTHER = "ffn_up", "ffn_gate", "ffn_down", "other"
_ATTN_V_LIKE = (_V, _QKV, _KV_B)


def _category(name: str) -> str:
    if name == "output.weight":
        return _OUTPUT
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return _TOKEN_EMBD
    for needle, cat in (("attn_qkv.weight", _QKV), ("attn_kv_b.weight", _KV_B),
                        ("attn_v.weight", _V), ("attn_k.weight", _K), ("attn_q.weight", _Q),
                        ("attn_output.weight", _ATTN_OUT), ("ffn_up", _FFN_UP),
                        ("ffn_gate", _FFN_GATE), ("ffn_down", _FFN_DOWN)):
        if needle in name:
            return cat
    return _OTHER


# Substrings that keep a tensor out of quantization (besides norms and vectors).
_NEVER_QUANTIZED = (
    "ffn_gate_inp.weight", "ffn_gate_tid2eid.weight", "altup", "laurel",
    "per_layer_model_proj", "ssm_conv1d", "shortconv.conv.weight", "indexer.k_proj.weight",
    "indexer.q_proj.weight",
    "time_mix_first.weight", "time_mix_w0.weight", "time_mix_w1.weight", "time_mix_w2.weight",
    "time_mix_v0.weight", "time_mix_v1.weight", "time_mix_v2.weight", "time_mix_a0.weight",
    "time_mix_a1.weight", "time_mix_a2.weight", "time_mix_g1.weight", "time_mix_g2.weight",
    "time_mix_decay_w1.weight", "time_mix_decay_w2.weight", "time_mix_lerp_fused.weight",
    "attn_rel_b.weight",
    ".position_embd", "sam.pos_embd", "sam.neck.", "sam.net_", ".rel_pos", ".patch_embd",
    ".patch_merger", "a.rvq.codebook", "mm.a.code_embd",
)
_GLM5_NEXT_KEPT = (
    "hc_", "indexer.attn_q_b", "indexer.attn_k", "indexer.proj", "indexer_compressor_gate",
    "indexer_compressor_ape", "ssm_f_a.weight", "ssm_f_b.weight", "ssm_g_a.weight",
    "ssm_g_b.weight", "ssm_beta.weight", "attn_kv_a_mqa.weight", "attn_k_b.weight",
    "attn_v_b.weight",
)


def n_dims(shape: Iterable[int]) -> int:
    """GGML's dimension count: trailing dimensions of size 1 do not count (minimum 1)."""
    dims = [int(d) for d in shape]
    for i in range(len(dims) - 1, 0, -1):
        if dims[i] > 1:
            return i + 1
    return 1


def may_quantize(name: str, shape: Iterable[int], arch: str = "",
                 *, quantize_output: bool = True) -> bool:
    """Whether llama-quantize converts this tensor at all (else it is copied as is)."""
    if n_dims(shape) < 2 or not name.endswith("weight"):
        return False
    if "_norm.weight" in name:
        return False
    if name == "output.weight" and not quantize_output:
        return False
    if name in ("position_embd.weight", "token_types.weight"):
        return False
    if any(s in name for s in _NEVER_QUANTIZED):
        return False
    if arch == "glm5-next" and any(s in name for s in _GLM5_NEXT_KEPT):
        return False
    return True


_BLK = re.compile(r"blk\.\s*([+-]?\d+)")


def _block_of(name: str) -> int | None:
    m = _BLK.match(name)
    return int(m.group(1)) if m else None


def file_order(names: Iterable[str]) -> list[str]:
    """Tensor names in the order llama.cpp's loader (and so llama-quantize) walks them:
    by block number (tensors outside blocks first), then by name."""
    def key(n: str) -> tuple[int, str]:
        b = _block_of(n)
        return (-1 if b is None else b, n)
    return sorted(names, key=key)


# --------------------------------------------------------------------------------------------
# The rules
# --------------------------------------------------------------------------------------------


def _use_more_bits(i: int, n: int) -> bool:
    # C integer division; i >= n/8 whenever the modulo is reached, so it is never negative.
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def _first_int(value: Any, default: int = 0) -> int:
    if isinstance(value, (list, tuple)):
        value = value[0] if value else default
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


@dataclass
class _Model:
    arch: str
    n_layer_all: int
    n_expert: int
    n_gqa: int
    is_70b: bool


def _model_facts(metadata: Mapping[str, Any]) -> _Model:
    arch = str(metadata.get("general.architecture") or "")
    n_layer_all = _first_int(metadata.get(f"{arch}.block_count"))
    n_nextn = _first_int(metadata.get(f"{arch}.nextn_predict_layers"))
    n_expert = _first_int(metadata.get(f"{arch}.expert_count"))
    n_head = _first_int(metadata.get(f"{arch}.attention.head_count"))
    n_head_kv_raw = metadata.get(f"{arch}.attention.head_count_kv")
    n_head_kv = n_head if n_head_kv_raw is None else _first_int(n_head_kv_raw)
    n_gqa = n_head // n_head_kv if n_head_kv else 0
    n_layer = n_layer_all - n_nextn
    is_70b = _70B_LAYERS.get(arch) == n_layer
    if arch == "llama":
        is_70b = is_70b and n_expert != 8 and n_head != n_head_kv
    return _Model(arch, n_layer_all, n_expert, n_gqa, is_70b)


class _Chooser:
    """llama-quantize's per-tensor choice for one mix; call in file order (it counts)."""

    def __init__(self, model: _Model, ftype: str, names: list[str], *,
                 output_tensor_type: str | None, token_embedding_type: str | None,
                 pure: bool) -> None:
        self.m = model
        self.ftype = ftype
        self.default = _FTYPES[ftype][1]
        self.output_type = output_tensor_type
        self.token_embd_type = token_embedding_type
        self.pure = pure
        cats = [_category(n) for n in names]
        self.n_attn_v = sum(c in _ATTN_V_LIKE for c in cats)
        self.tied = _OUTPUT not in cats
        self.n_ffn = model.n_layer_all
        self.i_attn_v = self.i_ffn_down = self.i_ffn_gate = self.i_ffn_up = 0
        self.n_fallback = 0

    def _layer(self, counter: int, name: str) -> tuple[int, int]:
        if max(1, self.m.n_expert) > 1:
            layer = _block_of(name)
            if layer is None:
                raise QuantizeError(f"cannot tell the layer of tensor {name}")
            if not 0 <= layer < self.n_ffn:
                raise QuantizeError(f"tensor {name}: layer {layer} outside [0, {self.n_ffn})")
            return layer, self.n_ffn
        return counter, self.n_ffn

    def choose(self, name: str, shape: tuple[int, ...], source: str,
               *, quantize_output: bool = True) -> tuple[str, bool]:
        """(type, fell_back) for one tensor."""
        if not may_quantize(name, shape, self.m.arch, quantize_output=quantize_output):
            return source, False
        cat = _category(name)
        if self.token_embd_type and cat == _TOKEN_EMBD:
            return self.token_embd_type, False
        if self.output_type and cat == _OUTPUT:
            return self.output_type, False
        new = self.default
        if not ggml_type(new).quantized:
            return new, False
        if not self.pure:
            new = self._rules(name, cat, shape, new)
        return self._fallback(shape, new)

    def _fallback(self, shape: tuple[int, ...], chosen: str) -> tuple[str, bool]:
        ncols = int(shape[0])
        block = ggml_type(chosen).block
        if ncols % block == 0:
            return chosen, False
        self.n_fallback += 1
        if chosen in _FALLBACK:
            new = _FALLBACK[chosen]
        elif block <= 32:
            new = chosen
        else:
            raise QuantizeError(f"llama-quantize has no fallback for type {chosen}")
        if ncols % ggml_type(new).block != 0:
            new = "F16"
        return new, True

    def _rules(self, name: str, cat: str, shape: tuple[int, ...], new: str) -> str:
        f, m = self.ftype, self.m
        falcon = m.arch == "falcon"

        if cat == _OUTPUT or (self.tied and cat == _TOKEN_EMBD):
            if self.output_type:
                return self.output_type
            if f == "MXFP4_MOE" or falcon or int(shape[0]) % ggml_type(new).block != 0:
                return "Q8_0"
            return "Q6_K" if new != "Q8_0" else new

        if f == "MXFP4_MOE":
            ne2 = int(shape[2]) if len(shape) > 2 else 1
            expert_role = cat in (_FFN_UP, _FFN_GATE, _FFN_DOWN)
            if ne2 > 1 and (m.arch != "bailingmoe3" or expert_role):
                return "MXFP4"
            return "Q8_0"

        if cat == _TOKEN_EMBD:
            return self.token_embd_type or new

        if cat in _ATTN_V_LIKE:
            i, n = self.i_attn_v, self.n_attn_v
            if f == "Q2_K":
                new = "Q4_K" if m.n_gqa >= 4 else "Q3_K"
            elif f == "Q3_K_M":
                new = "Q5_K" if i < 2 else "Q4_K"
            elif f == "Q3_K_L":
                new = "Q5_K"
            elif f in ("IQ4_NL", "IQ4_XS") and m.n_gqa >= 4:
                new = "Q5_K"
            elif f in ("Q4_K_M", "Q5_K_M") and _use_more_bits(i, n):
                new = "Q6_K"
            elif f == "Q4_K_S" and i < 4:
                new = "Q5_K"
            if m.is_70b and new in ("Q3_K", "Q4_K"):
                new = "Q5_K"
            if m.n_expert == 8:
                new = "Q8_0"
            self.i_attn_v += 1
            return new

        if cat == _K:
            return "Q8_0" if m.n_expert == 8 else new

        if cat == _FFN_DOWN:
            i, n = self._layer(self.i_ffn_down, name)
            if f == "Q2_K":
                new = "Q3_K"
            elif f == "Q3_K_M":
                if i < n // 16:
                    new = "Q5_K"
                elif not falcon or _use_more_bits(i, n):
                    new = "Q4_K"
                else:
                    new = "Q3_K"
            elif f == "Q3_K_L":
                new = "Q4_K" if falcon else "Q5_K"
            elif f == "Q4_K_M":
                if falcon:
                    new = ("Q6_K" if i < n // 16 else
                           "Q5_K" if _use_more_bits(i, n) else "Q4_K")
                elif _use_more_bits(i, n):
                    new = "Q6_K"
            elif i < n // 8 and f in ("IQ4_NL", "IQ4_XS"):
                new = "Q5_K"
            elif f == "Q5_K_M" and _use_more_bits(i, n):
                new = "Q6_K"
            elif f == "Q4_K_S" and not falcon and i < n // 8:
                new = "Q5_K"
            self.i_ffn_down += 1
            return new

        if cat == _ATTN_OUT:
            if not falcon:
                if m.n_expert == 8:
                    if f in ("Q2_K", "Q3_K_S", "Q3_K_M", "IQ4_NL", "Q4_K_S", "Q4_K_M",
                             "IQ4_XS"):
                        new = "Q5_K"
                elif f == "Q2_K":
                    new = "Q3_K"
                elif f == "Q3_K_M":
                    new = "Q4_K"
                elif f == "Q3_K_L":
                    new = "Q5_K"
            elif f == "Q3_K_L":
                new = "Q4_K"
            return new

        if cat == _FFN_GATE:
            self._layer(self.i_ffn_gate, name)
            self.i_ffn_gate += 1
        elif cat == _FFN_UP:
            self._layer(self.i_ffn_up, name)
            self.i_ffn_up += 1
        return new


# --------------------------------------------------------------------------------------------
# Header size
# --------------------------------------------------------------------------------------------

_GGUF_STRING_AVG = 9  # bytes of text per item of an unread string array (tokens average ~9)


def _string_bytes(s: str) -> int:
    return 8 + len(s.encode("utf-8"))


def value_bytes(value: Any) -> int:
    """Serialized size of a metadata value as the converter types it (int: u32 unless it
    needs 64 bits, float: f32, bool: 1 byte), without the key and type tag."""
    from kurabe.modelfiles.gguf_header import SkippedArray  # local: avoid an import cycle

    if isinstance(value, SkippedArray):
        item = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
        each = item.get(value.item_type, 8 + _GGUF_STRING_AVG)
        return 4 + 8 + value.length * each
    if isinstance(value, bool):
        return 1
    if isinstance(value, int):
        return 8 if not -(2**31) <= value < 2**32 else 4
    if isinstance(value, float):
        return 4
    if isinstance(value, str):
        return _string_bytes(value)
    if isinstance(value, (list, tuple)):
        return 4 + 8 + sum(value_bytes(v) for v in value)
    raise QuantizeError(f"cannot size a metadata value of type {type(value).__name__}")


def kv_bytes(key: str, value: Any) -> int:
    """Bytes of one metadata pair: key string, u32 type tag, value."""
    return _string_bytes(key) + 4 + value_bytes(value)


def tensor_info_bytes(name: str, shape: Iterable[int]) -> int:
    """Bytes of one tensor info: name, u32 n_dims, i64 per dim, u32 type, u64 offset."""
    return _string_bytes(name) + 4 + 8 * len(tuple(shape)) + 4 + 8


def estimate_header_bytes(metadata: Mapping[str, Any], tensors: Iterable[Any]) -> int:
    """Unpadded GGUF header length from metadata values and tensor infos (exact for kept
    values; arrays skipped by the header reader count ~9 bytes of text per string item)."""
    size = 4 + 4 + 8 + 8
    size += sum(kv_bytes(k, v) for k, v in metadata.items())
    size += sum(tensor_info_bytes(t.name, t.shape) for t in tensors)
    return size


# Keys llama-quantize sets (added when absent) and removes.
_SET_KEYS = ("general.quantization_version", "general.file_type")
_SPLIT_KEYS = {"split.no": 2, "split.count": 2, "split.tensors.count": 4}


def _output_header_bytes(header: Any) -> tuple[int, bool]:
    metadata = header.metadata
    base = int(getattr(header, "header_bytes", 0) or 0)
    estimated = bool(getattr(header, "header_estimated", False))
    if base <= 0:
        base = estimate_header_bytes(metadata, header.tensors)
        estimated = True
    for key in _SET_KEYS:
        if key not in metadata:
            base += _string_bytes(key) + 4 + 4
    for key, width in _SPLIT_KEYS.items():
        if key in metadata:
            base -= _string_bytes(key) + 4 + width
    # ggml writes a tensor's dimensions without trailing 1s (a (2048, 1) gate is 1-D)
    for t in header.tensors:
        base -= 8 * (len(tuple(t.shape)) - n_dims(t.shape))
    align = _first_int(metadata.get("general.alignment"), GGUF_DEFAULT_ALIGNMENT) \
        or GGUF_DEFAULT_ALIGNMENT
    return _pad(base, align), estimated


# --------------------------------------------------------------------------------------------
# Prediction
# --------------------------------------------------------------------------------------------


@dataclass
class QuantTensor:
    name: str
    shape: tuple[int, ...]
    source_type: str
    type: str
    nbytes: int
    fallback: bool = False

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= int(d)
        return n


@dataclass
class QuantPrediction:
    """What llama-quantize would write for one mix.

    ``tensors`` are in the output file's order. ``bytes_by_type`` is the quant mix (tensor
    data per GGML type, without padding). ``file_bytes`` = ``header_bytes`` (padded to the
    alignment) + ``data_bytes`` (each tensor padded to 32 bytes).
    """

    ftype: str
    tensors: list[QuantTensor]
    header_bytes: int
    header_estimated: bool
    n_fallback: int
    notes: list[str] = field(default_factory=list)

    @property
    def types(self) -> dict[str, str]:
        return {t.name: t.type for t in self.tensors}

    @property
    def bytes_by_type(self) -> dict[str, int]:
        mix: dict[str, int] = {}
        for t in self.tensors:
            mix[t.type] = mix.get(t.type, 0) + t.nbytes
        return dict(sorted(mix.items(), key=lambda kv: -kv[1]))

    @property
    def tensor_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    @property
    def data_bytes(self) -> int:
        return sum(_pad(t.nbytes, GGUF_DEFAULT_ALIGNMENT) for t in self.tensors)

    @property
    def file_bytes(self) -> int:
        return self.header_bytes + self.data_bytes

    @property
    def n_elements(self) -> int:
        return sum(t.n_elements for t in self.tensors)

    @property
    def bits_per_weight(self) -> float:
        n = self.n_elements
        return 8.0 * self.tensor_bytes / n if n else 0.0


def _type_name(t: Any) -> str:
    if isinstance(t, str):
        return ggml_type(t).name
    return ggml_type(int(t)).name


def predict_quant(header: Any, ftype: str, *, pure: bool = False,
                  output_tensor_type: str | None = None,
                  token_embedding_type: str | None = None,
                  leave_output_tensor: bool = False) -> QuantPrediction:
    """Predict llama-quantize's output for ``header`` (a GGUF header or a synthesized one:
    ``.metadata``, ``.tensors`` with ``name``/``shape`` (GGML order)/``ggml_type``, and
    optionally ``.header_bytes``) quantized to ``ftype`` (one of :data:`QUANT_TYPES`).

    The keyword arguments mirror llama-quantize's ``--pure``, ``--output-tensor-type``,
    ``--token-embedding-type`` and ``--leave-output-tensor``.
    """
    key = ftype.upper().removeprefix("MOSTLY_")
    if key not in _FTYPES:
        raise QuantizeError(f"unknown quantization {ftype!r}; choose one of "
                            f"{', '.join(QUANT_TYPES)}")
    metadata = header.metadata
    if not metadata.get("general.architecture"):
        raise QuantizeError("the model has no general.architecture")
    model = _model_facts(metadata)
    if model.n_layer_all <= 0:
        raise QuantizeError(f"the model has no {model.arch}.block_count")
    out_t = _type_name(output_tensor_type) if output_tensor_type else None
    emb_t = _type_name(token_embedding_type) if token_embedding_type else None

    by_name = {t.name: t for t in header.tensors}
    if len(by_name) != len(header.tensors):
        raise QuantizeError("duplicate tensor names")
    names = file_order(by_name)
    chooser = _Chooser(model, key, names, output_tensor_type=out_t,
                       token_embedding_type=emb_t, pure=pure)
    out: list[QuantTensor] = []
    requantized: list[str] = []
    for name in names:
        info = by_name[name]
        shape = tuple(int(d) for d in info.shape)
        source = _type_name(info.ggml_type)
        chosen, fell_back = chooser.choose(name, shape, source,
                                           quantize_output=not leave_output_tensor)
        if chosen != source and ggml_type(source).quantized:
            requantized.append(name)
        out.append(QuantTensor(name, shape, source, chosen, tensor_nbytes(chosen, shape),
                               fell_back))
    header_bytes, estimated = _output_header_bytes(header)
    notes = []
    if requantized:
        notes.append(f"{len(requantized)} tensor(s) are already quantized in the input "
                     f"(e.g. {requantized[0]}): llama-quantize needs --allow-requantize")
    if chooser.n_fallback:
        notes.append(f"{chooser.n_fallback} tensor(s) fell back to another type because "
                     "their rows do not split into whole blocks")
    if estimated:
        notes.append("the header size is an estimate")
    return QuantPrediction(key, out, header_bytes, estimated, chooser.n_fallback, notes)
