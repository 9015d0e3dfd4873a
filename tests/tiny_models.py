"""Tiny GGUF models that llama.cpp really loads and serves, written with gguf-py.

Each model is a few hundred KB to about 2 MB (random, seeded weights), loads in a fraction
of a second and answers requests (with random text). The architectures cover the memory
layouts kurabe has to reason about:

==============  =============================================================================
``llama``       dense, grouped-query attention
``qwen3``       dense, Q/K norms
``qwen3moe``    mixture of experts (default 8 experts, 2 used)
``gemma3``      interleaved sliding-window (local) and full (global) attention layers
``qwen3next``   hybrid: gated-delta-net (recurrent) layers + gated full attention, MoE with
                a shared expert; fused ``ssm_ba`` projection
``qwen35moe``   the Qwen3.5 MoE hybrid: as ``qwen3next`` with split ``ssm_beta``/``ssm_alpha``
                and multi-section (IMRoPE) rotary embedding
``deci``        dense, with a per-layer ``head_count_kv`` array (0 = attention replaced by a
                linear layer, no KV for that layer)
==============  =============================================================================

Shapes follow GGML's convention (``ne[0]`` first): ``token_embd.weight`` is
``(n_embd, n_vocab)``. Arrays passed in or returned use NumPy's order, which is the
reverse (``token_embd.weight`` is a ``(n_vocab, n_embd)`` array, row ``i`` = token ``i``).

Default dimensions: hidden 64, 4 query heads of 32, 2 KV heads, FFN 128, 2-6 layers. The
tokenizer is GPT-2 style byte-level BPE (303 tokens by default): token ``b`` (0..255) is the
single byte ``b``, then the merge tokens of :data:`BASE_MERGES`, then ``vocab_extra`` (and
the results of ``merges_extra``), then the special tokens (:data:`DEFAULT_SPECIAL_TOKENS`).

kurabe itself does the work: :mod:`kurabe.twin` (the synthetic-twin writer) supplies the
byte-level vocabulary tools, the starting values per kind of tensor and the streaming GGUF
writer; this module adds the hand-sized layouts the tests reason about.

Main entry points:

* :func:`write_model` writes a loadable model and returns a :class:`TinyModel` describing it.
* :func:`model_layout` returns the metadata and tensor list without writing anything (no
  weights are generated), so large dimensions are cheap.
* :func:`write_header_only` writes only a GGUF header (metadata and tensor infos, no tensor
  data), e.g. a 30B-class fixture from ``model_layout(...)`` with big dimensions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from kurabe.twin.blocks import encode_floats
from kurabe.twin.gguf_out import GGUFStream, TensorEntry
from kurabe.twin.gguf_out import typed_value as _as_meta
from kurabe.twin.gguf_out import write_header_only as _write_header_only
from kurabe.twin.tokenizer import (  # noqa: F401  (re-exported for the tests)
    BASE_MERGES,
    DEFAULT_SPECIAL_TOKENS,
    VocabBuilder,
    bpe_text,
    byte_to_unicode,
    plain_text,
)
from kurabe.twin.values import initial_values
from kurabe.twin.writer import tensor_rng

VT = gguf.GGUFValueType
TT = gguf.TokenType
QT = gguf.GGMLQuantizationType

ARCHITECTURES = ("llama", "qwen3", "qwen3moe", "gemma3", "qwen3next", "qwen35moe", "deci")
HYBRID_ARCHS = ("qwen3next", "qwen35moe")
MOE_ARCHS = ("qwen3moe", "qwen3next", "qwen35moe")

# Layers per architecture when n_layers is not given. gemma3 gets 6 so that its default
# sliding-window pattern (every 6th layer global) yields 5 local layers and 1 global one.
DEFAULT_N_LAYERS = {"llama": 2, "qwen3": 2, "qwen3moe": 2, "gemma3": 6, "qwen3next": 4,
                    "qwen35moe": 4, "deci": 3}

_GGML_TYPES = {"f32": QT.F32, "f16": QT.F16}


# --------------------------------------------------------------------------------------------
# Description of a written model
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorSpec:
    """One tensor: name, GGML shape (ne[0] first) and GGML type."""

    name: str
    shape: tuple[int, ...]
    ggml_type: QT

    @property
    def n_elements(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def n_bytes(self) -> int:
        block, size = gguf.GGML_QUANT_SIZES[self.ggml_type]
        return self.n_elements // block * size


@dataclass
class TinyModel:
    """What :func:`write_model` / :func:`model_layout` built: enough for hand computations.

    ``n_head_kv`` is per layer (0 where a layer holds no KV). ``attention_layers`` are the
    layers with a KV cache, ``swa_layers`` those among them that use the sliding window,
    ``recurrent_layers`` the linear-attention layers of hybrids (fixed-size state instead).
    ``ssm`` holds ``d_conv``, ``d_inner``, ``d_state``, ``n_group``, ``dt_rank`` for hybrids.
    ``metadata`` maps key -> (value, GGUF value type, array element type or None).
    """

    arch: str
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: tuple[int, ...]
    head_dim: int
    n_ff: int
    n_ctx_train: int
    n_rot: int
    tokens: tuple[str, ...]
    token_types: tuple[int, ...]
    bos_token_id: int
    eos_token_id: int
    attention_layers: tuple[int, ...]
    swa_layers: tuple[int, ...] = ()
    n_swa: int = 0
    recurrent_layers: tuple[int, ...] = ()
    ssm: dict[str, int] = field(default_factory=dict)
    n_expert: int = 0
    n_expert_used: int = 0
    n_ff_exp: int = 0
    n_ff_shexp: int = 0
    weight_type: QT = QT.F16
    metadata: dict[str, tuple[Any, VT, VT | None]] = field(default_factory=dict)
    tensors: list[TensorSpec] = field(default_factory=list)
    path: Path | None = None

    @property
    def n_vocab(self) -> int:
        return len(self.tokens)

    @property
    def tensor_bytes(self) -> int:
        """Sum of the tensor data sizes (no padding)."""
        return sum(t.n_bytes for t in self.tensors)

    def tensor(self, name: str) -> TensorSpec:
        for t in self.tensors:
            if t.name == name:
                return t
        raise KeyError(name)

    def token_id(self, text: str) -> int:
        """Id of a token given as plain text (" the") or as stored ("Ġthe", "<|im_end|>")."""
        for candidate in (text, bpe_text(text)):
            try:
                return self.tokens.index(candidate)
            except ValueError:
                continue
        raise KeyError(text)

    def kv_bytes_f16(self, n_cells: int, layers: Iterable[int] | None = None) -> int:
        """K+V bytes of an f16 cache of ``n_cells`` cells over ``layers`` (default: all
        attention layers): 2 (K and V) * cells * n_head_kv[il] * head_dim * 2 bytes."""
        chosen = self.attention_layers if layers is None else tuple(layers)
        return sum(2 * n_cells * self.n_head_kv[il] * self.head_dim * 2 for il in chosen)

    def recurrent_state_floats(self) -> tuple[int, int]:
        """(conv floats, ssm floats) per recurrent layer and sequence, for hybrids."""
        if not self.ssm:
            return 0, 0
        s = self.ssm
        conv = (s["d_conv"] - 1) * (s["d_inner"] + 2 * s["n_group"] * s["d_state"])
        return conv, s["d_state"] * s["d_inner"]


# --------------------------------------------------------------------------------------------
# Layout (metadata + tensor list, no weights)
# --------------------------------------------------------------------------------------------


def _per_layer(value: int | Sequence[int], n_layer: int, what: str) -> tuple[int, ...]:
    if isinstance(value, (int, np.integer)):
        return (int(value),) * n_layer
    values = tuple(int(v) for v in value)
    if len(values) != n_layer:
        raise ValueError(f"{what}: {len(values)} values for {n_layer} layers")
    return values


def _vocabulary(vocab_extra, special_tokens, merges_extra):
    vb = VocabBuilder()

    def merge(pairs) -> None:
        for a, b in pairs:
            vb.merge(a, b)

    merge(BASE_MERGES)
    for item in vocab_extra:
        text, ttype = (item, TT.NORMAL) if isinstance(item, str) else (item[0], TT(item[1]))
        stored = bpe_text(text) if ttype == TT.NORMAL else text
        if stored in vb:
            raise ValueError(f"vocab_extra: {text!r} is already in the vocabulary")
        vb.add(stored, ttype)
    merge(merges_extra)  # results not in the vocabulary yet come after vocab_extra
    for text, ttype in special_tokens:
        if text in vb:
            raise ValueError(f"special token {text!r} is already in the vocabulary")
        vb.add(text, TT(ttype))
    return vb.tokens, vb.types, vb.merges


def _file_type(qtype: QT) -> int | None:
    """llama.cpp's general.file_type for a model whose matrices are all ``qtype``."""
    if qtype == QT.F32:
        return int(gguf.LlamaFileType.ALL_F32)
    for name in (f"MOSTLY_{qtype.name}", f"MOSTLY_{qtype.name}_M"):
        if name in gguf.LlamaFileType.__members__:
            return int(gguf.LlamaFileType[name])
    return None


def model_layout(
    arch: str,
    *,
    n_layers: int | None = None,
    n_embd: int = 64,
    n_head: int = 4,
    n_head_kv: int | Sequence[int] = 2,
    head_dim: int = 32,
    n_ff: int = 128,
    n_ctx_train: int = 4096,
    rope_dim: int | None = None,
    rope_freq_base: float = 10000.0,
    rms_eps: float = 1e-6,
    dtype: str | QT = "f16",
    n_expert: int = 8,
    n_expert_used: int = 2,
    n_ff_exp: int | None = None,
    n_ff_shexp: int | None = None,
    sliding_window: int = 64,
    swa_pattern: int | Sequence[bool] | None = None,
    full_attention_interval: int | None = None,
    ssm_d_conv: int = 4,
    ssm_d_state: int = 16,
    ssm_n_group: int = 2,
    ssm_dt_rank: int = 4,
    tie_embeddings: bool = False,
    vocab_extra: Sequence[str | tuple[str, int]] = (),
    merges_extra: Sequence[tuple[str, str]] = (),
    special_tokens: Sequence[tuple[str, int]] = DEFAULT_SPECIAL_TOKENS,
    pad_vocab_to: int | None = None,
    bos_token: str = "<|endoftext|>",
    eos_token: str | None = None,
    add_bos_token: bool | None = None,
    tokenizer_pre: str = "qwen2",
    chat_template: str | None = None,
    name: str | None = None,
    metadata_overrides: Mapping[str, Any] | None = None,
) -> TinyModel:
    """Describe a model (metadata and tensor list) without generating any weights.

    Parameters (all dimensions are small by default):

    * ``n_layers``: blocks; default per architecture (:data:`DEFAULT_N_LAYERS`).
    * ``n_embd``, ``n_head``, ``head_dim``, ``n_ff``: hidden size, query heads, head size
      (written as ``attention.key_length``/``value_length``), dense FFN width. The head size
      defaults to 32 because llama.cpp refuses a quantized K or V cache (q8_0, q4_0, ...)
      whose block size (32) does not divide the head size.
    * ``n_head_kv``: an int, or one value per layer (written as an array). Note: the
      llama, qwen3, qwen3moe, gemma3 and hybrid loaders size every layer's K/V tensors from
      layer 0, so a non-uniform array only loads with ``deci`` (where 0 also means "no
      attention, linear layer instead"). The tensors are always shaped per layer.
    * ``rope_dim``: rotary dimensions; default ``head_dim`` (``head_dim // 4`` for hybrids,
      as in the real Qwen3-Next/Qwen3.5).
    * ``dtype``: ``"f16"`` or ``"f32"`` (or a GGML type) for the weight matrices; norms,
      routers, SSM parameters and other vectors are always F32.
    * MoE (qwen3moe, qwen3next, qwen35moe): ``n_expert``, ``n_expert_used``, ``n_ff_exp``
      (default ``n_ff // 2``) and, for hybrids, ``n_ff_shexp`` (shared expert, default
      ``n_ff``).
    * gemma3: ``sliding_window`` (n_swa) and ``swa_pattern``: None (key not written:
      llama.cpp's default, every 6th layer global), an int N (every Nth layer global) or one
      bool per layer (True = sliding window).
    * hybrids: ``full_attention_interval`` (every Nth layer is full attention; default 4, or 2
      below 4 layers) and the gated-delta-net sizes ``ssm_d_conv``, ``ssm_d_state`` (head
      size), ``ssm_n_group`` (K heads), ``ssm_dt_rank`` (V heads); ``d_inner`` is
      ``d_state * dt_rank``.
    * ``tie_embeddings``: no ``output.weight`` (llama.cpp reuses ``token_embd.weight``).
    * vocabulary (ids in this order): the 256 bytes, the results of :data:`BASE_MERGES`,
      ``vocab_extra``, the results of ``merges_extra`` not already present, the special
      tokens, then ``pad_vocab_to`` padding. In ``vocab_extra`` a plain string is a NORMAL
      token (stored byte-level, e.g. " hello" -> "Ġhello"); the tokenizer only produces it
      from text when merges build it from what the base merges leave (" hello" becomes
      "Ġ", "he", "ll", "o"), e.g. ``merges_extra=[("Ġ", "he"), ("Ġhe", "ll"), ("Ġhell",
      "o")]`` (pairs of byte-level text, applied in list order; results become tokens).
      ``(text, gguf.TokenType.X)`` sets the type: USER_DEFINED tokens are matched literally
      in prompts, CONTROL tokens only where special tokens are parsed. ``pad_vocab_to``
      appends unused ``<|pad_N|>`` tokens up to that size (realistic header-only vocabularies).
      ``bos_token``/``eos_token`` name the BOS/EOS tokens (EOS default: ``<end_of_turn>``
      for gemma3, ``<|im_end|>`` otherwise). ``add_bos_token`` defaults to True for gemma3.
    * ``chat_template``: stored as ``tokenizer.chat_template`` when given.
    * ``metadata_overrides``: key -> value (``{arch}`` in a key is replaced by the
      architecture); a value of None deletes the key; a plain value gets a type as in
      :func:`write_header_only`, or pass ``(value, gguf.GGUFValueType.X)``.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {ARCHITECTURES}")
    n_layer = DEFAULT_N_LAYERS[arch] if n_layers is None else int(n_layers)
    if n_layer < 1:
        raise ValueError("n_layers must be >= 1")
    wtype = _GGML_TYPES[dtype.lower()] if isinstance(dtype, str) else QT(dtype)
    hybrid = arch in HYBRID_ARCHS
    moe = arch in MOE_ARCHS
    kv_per_layer = _per_layer(n_head_kv, n_layer, "n_head_kv")
    if rope_dim is None:
        rope_dim = max(2, head_dim // 4) if hybrid else head_dim
    n_ff_exp = (n_ff // 2) if n_ff_exp is None else n_ff_exp
    n_ff_shexp = n_ff if n_ff_shexp is None else n_ff_shexp
    if eos_token is None:
        eos_token = "<end_of_turn>" if arch == "gemma3" else "<|im_end|>"
    if add_bos_token is None:
        add_bos_token = arch == "gemma3"

    tokens, types, merges = _vocabulary(vocab_extra, special_tokens, merges_extra)
    if pad_vocab_to is not None:
        for i in range(len(tokens), pad_vocab_to):
            tokens.append(f"<|pad_{i}|>")
            types.append(TT.UNUSED)
    n_vocab = len(tokens)
    bos_id, eos_id = tokens.index(bos_token), tokens.index(eos_token)

    # Which layers hold what.
    recurrent: tuple[int, ...] = ()
    swa: tuple[int, ...] = ()
    interval = 0
    if hybrid:
        interval = full_attention_interval or (4 if n_layer >= 4 else 2)
        recurrent = tuple(il for il in range(n_layer) if (il + 1) % interval != 0)
    attention = tuple(il for il in range(n_layer)
                      if il not in recurrent and kv_per_layer[il] > 0)
    if arch == "gemma3" and sliding_window > 0:
        if swa_pattern is None or isinstance(swa_pattern, (int, np.integer)):
            period = 6 if swa_pattern is None else int(swa_pattern)
            swa = tuple(il for il in range(n_layer)
                        if period == 0 or il % period < period - 1)
        else:
            flags = [bool(v) for v in swa_pattern]
            if len(flags) != n_layer:
                raise ValueError(f"swa_pattern: {len(flags)} flags for {n_layer} layers")
            swa = tuple(il for il, f in enumerate(flags) if f)

    ssm: dict[str, int] = {}
    if hybrid:
        ssm = {"d_conv": ssm_d_conv, "d_state": ssm_d_state, "n_group": ssm_n_group,
               "dt_rank": ssm_dt_rank, "d_inner": ssm_d_state * ssm_dt_rank}

    # ---- metadata -------------------------------------------------------------------------
    md: dict[str, tuple[Any, VT, VT | None]] = {}

    def put(key: str, value: Any) -> None:
        md[key.format(arch=arch)] = _as_meta(value)

    put("general.architecture", arch)
    put("general.type", "model")
    put("general.name", name or f"tiny-{arch}")
    file_type = _file_type(wtype)
    if file_type is not None:
        put("general.file_type", file_type)
    put("{arch}.context_length", n_ctx_train)
    put("{arch}.embedding_length", n_embd)
    put("{arch}.block_count", n_layer)
    put("{arch}.feed_forward_length", n_ff)
    put("{arch}.attention.head_count", n_head)
    if isinstance(n_head_kv, (int, np.integer)):
        put("{arch}.attention.head_count_kv", int(n_head_kv))
    else:
        put("{arch}.attention.head_count_kv", list(kv_per_layer))
    put("{arch}.attention.key_length", head_dim)
    put("{arch}.attention.value_length", head_dim)
    put("{arch}.attention.layer_norm_rms_epsilon", float(rms_eps))
    put("{arch}.rope.freq_base", float(rope_freq_base))
    put("{arch}.rope.dimension_count", rope_dim)
    if moe:
        put("{arch}.expert_count", n_expert)
        put("{arch}.expert_used_count", n_expert_used)
        put("{arch}.expert_feed_forward_length", n_ff_exp)
    if hybrid:
        put("{arch}.expert_shared_feed_forward_length", n_ff_shexp)
        put("{arch}.ssm.conv_kernel", ssm["d_conv"])
        put("{arch}.ssm.state_size", ssm["d_state"])
        put("{arch}.ssm.group_count", ssm["n_group"])
        put("{arch}.ssm.time_step_rank", ssm["dt_rank"])
        put("{arch}.ssm.inner_size", ssm["d_inner"])
        put("{arch}.full_attention_interval", interval)
    if arch == "qwen35moe":
        # IMRoPE sections (text, height, width, extra) over rope_dim / 2 rotary pairs.
        pairs = rope_dim // 2
        first = (pairs + 2) // 3
        second = (pairs - first + 1) // 2
        put("{arch}.rope.dimension_sections", [first, second, pairs - first - second, 0])
    if arch == "gemma3":
        put("{arch}.attention.sliding_window", sliding_window)
        if swa_pattern is not None:
            if isinstance(swa_pattern, (int, np.integer)):
                put("{arch}.attention.sliding_window_pattern", int(swa_pattern))
            else:
                put("{arch}.attention.sliding_window_pattern", [bool(v) for v in swa_pattern])

    put("tokenizer.ggml.model", "gpt2")
    put("tokenizer.ggml.pre", tokenizer_pre)
    md["tokenizer.ggml.tokens"] = (tokens, VT.ARRAY, VT.STRING)
    md["tokenizer.ggml.token_type"] = ([int(t) for t in types], VT.ARRAY, VT.INT32)
    md["tokenizer.ggml.merges"] = (merges, VT.ARRAY, VT.STRING)
    put("tokenizer.ggml.bos_token_id", bos_id)
    put("tokenizer.ggml.eos_token_id", eos_id)
    put("tokenizer.ggml.add_bos_token", bool(add_bos_token))
    put("tokenizer.ggml.add_eos_token", False)
    if chat_template is not None:
        put("tokenizer.chat_template", chat_template)
    for key, value in (metadata_overrides or {}).items():
        key = key.format(arch=arch)
        if value is None:
            md.pop(key, None)
        else:
            md[key] = _as_meta(value)

    # ---- tensors --------------------------------------------------------------------------
    specs: list[TensorSpec] = []

    def t(name: str, *shape: int, vector: bool = False) -> None:
        specs.append(TensorSpec(name, tuple(int(s) for s in shape),
                                QT.F32 if vector else wtype))

    E, H, D = n_embd, n_head, head_dim
    t("token_embd.weight", E, n_vocab)
    t("output_norm.weight", E, vector=True)
    if not tie_embeddings:
        t("output.weight", E, n_vocab)

    for il in range(n_layer):
        p = f"blk.{il}."
        kv = kv_per_layer[il]
        t(p + "attn_norm.weight", E, vector=True)
        if arch in ("llama", "deci", "qwen3", "qwen3moe", "gemma3"):
            if kv > 0:
                t(p + "attn_q.weight", E, H * D)
                t(p + "attn_k.weight", E, kv * D)
                t(p + "attn_v.weight", E, kv * D)
                t(p + "attn_output.weight", H * D, E)
            else:  # deci: attention replaced by a linear layer
                t(p + "attn_output.weight", E, E)
            if arch in ("qwen3", "qwen3moe", "gemma3"):
                t(p + "attn_q_norm.weight", D, vector=True)
                t(p + "attn_k_norm.weight", D, vector=True)
            if arch == "gemma3":
                t(p + "post_attention_norm.weight", E, vector=True)
            t(p + "ffn_norm.weight", E, vector=True)
            if arch == "qwen3moe":
                t(p + "ffn_gate_inp.weight", E, n_expert, vector=True)
                t(p + "ffn_gate_exps.weight", E, n_ff_exp, n_expert)
                t(p + "ffn_up_exps.weight", E, n_ff_exp, n_expert)
                t(p + "ffn_down_exps.weight", n_ff_exp, E, n_expert)
            else:
                t(p + "ffn_gate.weight", E, n_ff)
                t(p + "ffn_up.weight", E, n_ff)
                t(p + "ffn_down.weight", n_ff, E)
            if arch == "gemma3":
                t(p + "post_ffw_norm.weight", E, vector=True)
            continue

        # hybrids
        t(p + "post_attention_norm.weight", E, vector=True)
        if il in recurrent:
            key_dim = ssm["d_state"] * ssm["n_group"]
            value_dim = ssm["d_state"] * ssm["dt_rank"]
            t(p + "attn_qkv.weight", E, 2 * key_dim + value_dim)
            t(p + "attn_gate.weight", E, value_dim)
            t(p + "ssm_conv1d.weight", ssm["d_conv"], 2 * key_dim + value_dim, vector=True)
            t(p + "ssm_dt.bias", ssm["dt_rank"], vector=True)
            t(p + "ssm_a", ssm["dt_rank"], vector=True)
            if arch == "qwen3next":
                t(p + "ssm_ba.weight", E, 2 * ssm["dt_rank"])
            else:
                t(p + "ssm_beta.weight", E, ssm["dt_rank"])
                t(p + "ssm_alpha.weight", E, ssm["dt_rank"])
            t(p + "ssm_norm.weight", ssm["d_state"], vector=True)
            t(p + "ssm_out.weight", value_dim, E)
        else:
            t(p + "attn_q.weight", E, 2 * H * D)  # query and output gate
            t(p + "attn_k.weight", E, kv * D)
            t(p + "attn_v.weight", E, kv * D)
            t(p + "attn_output.weight", H * D, E)
            t(p + "attn_q_norm.weight", D, vector=True)
            t(p + "attn_k_norm.weight", D, vector=True)
        t(p + "ffn_gate_inp.weight", E, n_expert, vector=True)
        t(p + "ffn_gate_exps.weight", E, n_ff_exp, n_expert)
        t(p + "ffn_up_exps.weight", E, n_ff_exp, n_expert)
        t(p + "ffn_down_exps.weight", n_ff_exp, E, n_expert)
        t(p + "ffn_gate_inp_shexp.weight", E, vector=True)
        t(p + "ffn_gate_shexp.weight", E, n_ff_shexp)
        t(p + "ffn_up_shexp.weight", E, n_ff_shexp)
        t(p + "ffn_down_shexp.weight", n_ff_shexp, E)

    return TinyModel(
        arch=arch, n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_head_kv=kv_per_layer,
        head_dim=head_dim, n_ff=n_ff, n_ctx_train=n_ctx_train, n_rot=rope_dim,
        tokens=tuple(tokens), token_types=tuple(int(x) for x in types),
        bos_token_id=bos_id, eos_token_id=eos_id, attention_layers=attention,
        swa_layers=tuple(il for il in swa if il in attention),
        n_swa=sliding_window if arch == "gemma3" else 0, recurrent_layers=recurrent, ssm=ssm,
        n_expert=n_expert if moe else 0, n_expert_used=n_expert_used if moe else 0,
        n_ff_exp=n_ff_exp if moe else 0, n_ff_shexp=n_ff_shexp if hybrid else 0,
        weight_type=wtype, metadata=md, tensors=specs,
    )


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def _initial_values(spec: TensorSpec, rng: np.random.Generator, n_embd: int) -> np.ndarray:
    """Seeded starting weights in NumPy order (reverse of the GGML shape): kurabe's twin
    rules (norms 1, hybrid/SSM parameters that keep the recurrence finite, weights N(0,
    0.02), the embedding N(0, 1/n_embd))."""
    return initial_values(spec.name, tuple(reversed(spec.shape)), rng, n_embd)


def write_model(
    path: str | Path,
    arch: str,
    *,
    seed: int = 0,
    tensor_overrides: Mapping[str, np.ndarray | None] | None = None,
    **layout: Any,
) -> TinyModel:
    """Write a tiny loadable model of ``arch`` to ``path`` and describe it.

    ``layout`` takes every keyword of :func:`model_layout` (dimensions, ``dtype``,
    ``vocab_extra``, ``chat_template``, ``metadata_overrides``, ...). Weights are random
    (each tensor's NumPy generator is seeded with ``seed`` and its name), with the starting
    values of :mod:`kurabe.twin.values` (norms 1, ...).

    ``tensor_overrides`` maps a tensor name to a NumPy array (NumPy order, i.e. the GGML
    shape reversed: ``token_embd.weight`` and ``output.weight`` are ``(n_vocab, n_embd)``)
    that replaces the generated values; its shape must match the layout unless the name is
    new, in which case the tensor is added. A float64/float32 array is stored in the
    tensor's type (weight matrices: ``dtype``; vectors: F32); a float16 array for a new
    tensor is stored as F16. ``None`` removes a tensor (e.g. ``"output.weight": None`` ties
    the output layer to the embedding).
    """
    model = model_layout(arch, **layout)
    overrides = dict(tensor_overrides or {})

    specs: list[TensorSpec] = []
    arrays: list[np.ndarray] = []
    for spec in model.tensors:
        if spec.name in overrides:
            given = overrides.pop(spec.name)
            if given is None:
                continue
            values = np.asarray(given)
            expected = tuple(reversed(spec.shape))
            if values.shape != expected:
                raise ValueError(f"tensor_overrides[{spec.name!r}]: shape {values.shape}, "
                                 f"expected {expected} (NumPy order)")
        else:
            # each tensor's generator depends only on the seed and its name
            values = _initial_values(spec, tensor_rng(seed, spec.name), model.n_embd)
        if spec.ggml_type not in (QT.F32, QT.F16):
            raise ValueError(f"write_model writes F32/F16 tensors only, not "
                             f"{spec.ggml_type.name}")
        specs.append(spec)
        arrays.append(values)
    for name, given in overrides.items():
        if given is None:
            raise KeyError(f"tensor_overrides: cannot remove {name!r}, it is not in the model")
        given = np.asarray(given)
        qtype = QT.F16 if given.dtype == np.float16 else QT.F32
        specs.append(TensorSpec(name, tuple(reversed(given.shape)), qtype))
        arrays.append(given)

    path = Path(path)
    stream = GGUFStream(path, model.metadata,
                        [TensorEntry(s.name, s.shape, s.ggml_type) for s in specs])
    stream.open()
    try:
        for spec, values in zip(specs, arrays, strict=True):
            stream.write(spec.name, [encode_floats(values, spec.ggml_type)])
    finally:
        stream.close()

    model.tensors = specs
    model.path = path
    return model


def write_header_only(
    path: str | Path,
    metadata: Mapping[str, Any],
    tensors: Iterable[tuple[str, Sequence[int], Any] | TensorSpec],
    *,
    alignment: int | None = None,
) -> int:
    """Write a GGUF file that stops after its header: metadata and tensor infos, no data.

    ``metadata`` maps key -> value; it must contain ``general.architecture``. A plain
    value is typed as: bool -> BOOL, int -> UINT32 (INT32 if negative, UINT64/INT64 if it
    does not fit), float -> FLOAT32, str -> STRING, list -> ARRAY of its items' type; to
    choose, pass ``(value, gguf.GGUFValueType.X)`` (arrays: ``(items, ARRAY, element type)``).
    The metadata of a :class:`TinyModel` (already typed) can be passed as is.

    ``tensors`` holds ``(name, shape, ggml_type)`` with the shape in GGML order (``ne[0]``
    first, as llama.cpp prints it) and the type as a ``gguf.GGMLQuantizationType``, its
    name (``"Q4_K"``) or value; or :class:`TensorSpec` objects. Offsets are laid out as a
    real file would have them (each tensor padded to the alignment, default 32). A shape
    whose first dimension is not a multiple of the type's block size is an error.

    Returns the file size in bytes (the header length).
    """
    md = {k: _as_meta(v) for k, v in metadata.items()}
    if "general.architecture" not in md:
        raise ValueError("metadata needs general.architecture")
    if alignment is not None:
        md["general.alignment"] = (int(alignment), VT.UINT32, None)
    entries = []
    for item in tensors:
        if isinstance(item, TensorSpec):
            name, shape, qtype = item.name, item.shape, item.ggml_type
        else:
            name, shape, qtype = item
            if isinstance(qtype, str):
                qtype = QT[qtype.upper()]
            qtype = QT(qtype)
        block, _size = gguf.GGML_QUANT_SIZES[qtype]
        if int(shape[0]) % block:
            raise ValueError(f"{name}: ne[0]={shape[0]} is not a multiple of {qtype.name}'s "
                             f"block size {block}")
        entries.append(TensorEntry(name, tuple(int(s) for s in shape), qtype))
    return _write_header_only(path, md, entries)
