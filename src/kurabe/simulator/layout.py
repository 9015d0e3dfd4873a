"""Per-layer layout of a model, derived from its GGUF metadata the way llama.cpp reads it.

llama.cpp decides from ``{arch}.*`` keys (plus a few per-architecture rules) which layers hold
a full-context KV cache, which a sliding-window one, which a fixed-size recurrent state, and
how wide each layer's K and V rows are. :func:`derive_layout` reproduces those decisions from
the metadata dict of :func:`kurabe.modelfiles.gguf_header.read_header` so a memory plan needs only
the file header.

Units are in the field names: ``*_tokens`` are token counts, ``*_floats`` numbers of float32
values, ``*_elements`` tensor elements (the type decides the bytes), ``*_bytes`` bytes.

An architecture kurabe does not know still gets every generic field (head counts, head sizes,
experts, ...); what could not be settled for it (which layers slide, which are recurrent, ...)
is listed in :attr:`ModelLayout.unknown` and the generic assumption is used.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from kurabe.modelfiles.gguf_header import SkippedArray

FULL = "full"
SWA = "swa"
RECURRENT = "recurrent"
NONE = "none"  # no cache at all (e.g. an FFN-only or linear-replacement layer)

# Recurrent state kinds.
MAMBA = "mamba"
MAMBA2 = "mamba2"
GATED_DELTA_NET = "gated_delta_net"
SHORTCONV = "shortconv"
RWKV = "rwkv"
KDA = "kda"
LINEAR_ATTENTION = "linear_attention"

# Architectures whose every layer is recurrent (llama.cpp: llm_arch_is_recurrent).
RECURRENT_ARCHS = {"mamba": MAMBA, "mamba2": MAMBA2, "rwkv6": RWKV, "rwkv6qwen2": RWKV,
                   "rwkv7": RWKV, "arwkv7": RWKV}

# Hybrids where a layer is recurrent exactly when its head_count_kv is 0.
HEAD_KV_ZERO_IS_RECURRENT = {"jamba": MAMBA, "granitehybrid": MAMBA2, "plamo2": MAMBA2,
                             "lfm2": SHORTCONV, "lfm2moe": SHORTCONV, "kimi-linear": KDA}

# Hybrids where recurrent layers come from attention.recurrent_layers or a full-attention
# interval (every Nth layer is full attention, default 4).
INTERVAL_HYBRIDS = {"qwen3next": GATED_DELTA_NET, "qwen35": GATED_DELTA_NET,
                    "qwen35moe": GATED_DELTA_NET}

# Sliding-window rules: arch -> (default window tokens or None = key required,
# default pattern period, dense_first, needs the window key to turn SWA on, kind).
# Pattern period N means every Nth layer is full attention (llama.cpp set_swa_pattern); with
# dense_first the full layer opens each period instead of closing it.
SWA_RULES: dict[str, tuple[int | None, int, bool, bool, str]] = {
    "gemma2": (4096, 2, False, False, "standard"),
    "gemma3": (None, 6, False, True, "standard"),
    "gemma3n": (None, 5, False, False, "standard"),
    "gemma-embedding": (None, 6, False, False, "symmetric"),
    "cohere2": (None, 4, False, False, "standard"),
    "cohere2moe": (None, 4, True, False, "standard"),
    "gpt-oss": (None, 2, False, False, "standard"),
    "llama4": (8192, 4, False, False, "chunked"),
    "exaone4": (4096, 4, False, True, "standard"),
    "exaone-moe": (None, 4, False, False, "standard"),
    "afmoe": (None, 4, False, True, "standard"),
    "olmo2": (None, 4, False, True, "standard"),
    "mellum": (None, 4, False, True, "standard"),
    "smallthinker": (4096, 4, True, True, "standard"),
    "plamo3": (None, 8, False, True, "standard"),
    "laguna": (None, 4, True, True, "standard"),
    "muse-glimmer": (None, 4, False, False, "standard"),
}
# Architectures that take the per-layer SWA flags from an array key only.
SWA_ARRAY_ARCHS = {"granite-swa", "spark2-5", "step35", "mimo2", "maple", "gemma4"}
# Architectures that read a sliding window but run without one (llama.cpp disables it).
SWA_DISABLED_ARCHS = {"phi3", "phimoe"}


@dataclass(frozen=True)
class LayerLayout:
    """One block. ``kind``: ``full`` (KV over the whole context), ``swa`` (KV over a sliding
    window), ``recurrent`` (fixed-size state, no KV) or ``none`` (neither)."""

    index: int
    kind: str
    n_head: int
    n_head_kv: int
    head_dim_k: int  # elements per K head
    head_dim_v: int  # elements per V head (0 for MLA: the latent is stored once, as K)
    n_ff: int  # dense FFN width (0: MoE-only or no FFN)
    is_moe: bool = False
    n_expert_used: int = 0
    n_ff_expert: int = 0
    has_kv: bool = True
    has_recurrent_state: bool = False

    @property
    def k_row_elements(self) -> int:
        """K cache elements per token (all KV heads of this layer)."""
        return self.n_head_kv * self.head_dim_k

    @property
    def v_row_elements(self) -> int:
        return self.n_head_kv * self.head_dim_v


@dataclass(frozen=True)
class SlidingWindow:
    window_tokens: int
    kind: str  # "standard", "chunked" (llama4) or "symmetric"
    pattern: str  # how the per-layer flags were decided, in words


@dataclass(frozen=True)
class MLADims:
    """DeepSeek-style multi-head latent attention: one compressed K row per token."""

    kv_lora_rank: int
    rope_dim: int
    q_lora_rank: int
    key_length_mla: int  # per-head K size after decompression (nope + rope)
    value_length_mla: int

    @property
    def cache_k_elements_per_token(self) -> int:
        return self.kv_lora_rank + self.rope_dim


@dataclass(frozen=True)
class RecurrentDims:
    """State a recurrent layer keeps per sequence, in float32 values."""

    kind: str
    d_conv: int = 0
    d_inner: int = 0
    d_state: int = 0
    n_group: int = 0
    dt_rank: int = 0
    conv_floats_per_seq: int = 0  # llama.cpp's "R" state (conv window / token shift)
    ssm_floats_per_seq: int = 0  # llama.cpp's "S" state (SSM / delta-net / wkv state)

    @property
    def state_bytes_per_seq(self) -> int:
        """Bytes per recurrent layer and sequence (both states are F32)."""
        return 4 * (self.conv_floats_per_seq + self.ssm_floats_per_seq)


@dataclass(frozen=True)
class ExpertDims:
    n_expert: int
    n_expert_used: int
    n_expert_shared: int = 0
    n_ff_expert: int = 0
    n_ff_shared_expert: int = 0
    leading_dense_layers: int = 0
    n_expert_groups: int = 0
    n_group_used: int = 0


@dataclass
class ModelLayout:
    arch: str
    n_layer: int  # blocks run by the main graph
    n_layer_nextn: int  # extra multi-token-prediction blocks stored after them
    n_embd: int
    n_vocab: int
    n_ctx_train_tokens: int
    layers: tuple[LayerLayout, ...]
    sliding_window: SlidingWindow | None = None
    mla: MLADims | None = None
    recurrent: RecurrentDims | None = None
    experts: ExpertDims | None = None
    known_arch: bool = True
    unknown: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def n_layer_all(self) -> int:
        return self.n_layer + self.n_layer_nextn

    @property
    def trunk(self) -> tuple[LayerLayout, ...]:
        return self.layers[: self.n_layer]

    def layers_of(self, kind: str) -> list[int]:
        return [ly.index for ly in self.trunk if ly.kind == kind]

    @property
    def full_layers(self) -> list[int]:
        return self.layers_of(FULL)

    @property
    def swa_layers(self) -> list[int]:
        return self.layers_of(SWA)

    @property
    def recurrent_layers(self) -> list[int]:
        return [ly.index for ly in self.trunk if ly.has_recurrent_state]

    @property
    def kv_layers(self) -> list[int]:
        return [ly.index for ly in self.trunk if ly.has_kv]

    @property
    def is_hybrid(self) -> bool:
        return bool(self.recurrent_layers) and bool(self.kv_layers)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------------------------
# Metadata helpers
# --------------------------------------------------------------------------------------------


def _scalar(value: Any) -> Any:
    if isinstance(value, list):
        return value[0] if value else None
    return value


def _int(md: dict[str, Any], key: str, default: int | None = None) -> int | None:
    value = md.get(key)
    if value is None or isinstance(value, SkippedArray):
        return default
    value = _scalar(value)
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _per_layer(md: dict[str, Any], key: str, n: int, default: int | None,
               problems: list[str]) -> list[int] | None:
    """A scalar-or-array key as one value per layer (llama.cpp get_key_or_arr): a scalar is
    repeated, an array must have one value per layer."""
    value = md.get(key)
    if value is None:
        return None if default is None else [default] * n
    if isinstance(value, SkippedArray):
        problems.append(f"{key}: array of {value.length} values was not read")
        return None if default is None else [default] * n
    if isinstance(value, list):
        values = [int(v) for v in value]
        if len(values) < n:
            problems.append(f"{key}: {len(values)} values for {n} layers (rest taken as the last)")
            values += [values[-1] if values else 0] * (n - len(values))
        return values[:n]
    return [int(value)] * n


def _vocab_size(md: dict[str, Any], arch: str) -> int:
    n = _int(md, f"{arch}.vocab_size")
    if n:
        return n
    tokens = md.get("tokenizer.ggml.tokens")
    if isinstance(tokens, SkippedArray):
        return tokens.length
    if isinstance(tokens, list):
        return len(tokens)
    return 0


def _pattern_flags(n_layer_all: int, n_layer: int, period: int, dense_first: bool) -> list[bool]:
    # Why: llama.cpp's set_swa_pattern: period N makes every Nth layer full attention (the
    # last of each period, or the first with dense_first); 0 makes every layer SWA. Blocks
    # past the trunk (multi-token prediction) are never SWA.
    flags = []
    for il in range(n_layer_all):
        if il >= n_layer:
            flags.append(False)
        elif period == 0:
            flags.append(True)
        elif dense_first:
            flags.append(il % period != 0)
        else:
            flags.append(il % period < period - 1)
    return flags


# --------------------------------------------------------------------------------------------
# The derivation
# --------------------------------------------------------------------------------------------


def derive_layout(metadata: dict[str, Any], tensor_names: set[str] | None = None) -> ModelLayout:
    """The layer layout llama.cpp builds for a model with this GGUF metadata.

    ``tensor_names`` (optional) refines what metadata cannot say: which layers carry MoE
    routers (``blk.N.ffn_gate_inp.weight``) and whether multi-token-prediction blocks exist.
    """
    md = metadata
    arch = str(md.get("general.architecture") or "unknown")
    unknown: list[str] = []
    notes: list[str] = []
    p = f"{arch}."

    n_layer_all = _int(md, p + "block_count", 0) or 0
    if n_layer_all <= 0:
        unknown.append(f"{p}block_count is missing: no layers")
    # Why: llama.cpp stores multi-token-prediction blocks after the trunk and counts them in
    # block_count; the main graph runs only n_layer_all - nextn_predict_layers blocks.
    n_nextn = min(_int(md, p + "nextn_predict_layers", 0) or 0, n_layer_all)
    n_layer = n_layer_all - n_nextn
    n_embd = _int(md, p + "embedding_length", 0) or 0
    if not n_embd:
        unknown.append(f"{p}embedding_length is missing")
    n_vocab = _vocab_size(md, arch)
    if not n_vocab:
        unknown.append("vocabulary size (no vocab_size key, no tokenizer.ggml.tokens)")
    n_ctx_train = _int(md, p + "context_length", 0) or 0

    # Why: every per-layer count is read with get_key_or_arr (scalar repeated or one per
    # layer); head_count_kv defaults to head_count. All elements are used, not the first.
    n_head = (_per_layer(md, p + "attention.head_count", n_layer_all, 0, unknown)
              or [0] * n_layer_all)
    n_head_kv = _per_layer(md, p + "attention.head_count_kv", n_layer_all, None, unknown)
    if n_head_kv is None:
        n_head_kv = list(n_head)
    n_ff = _per_layer(md, p + "feed_forward_length", n_layer_all, 0, unknown) or [0] * n_layer_all

    # Why: K/V head sizes default to n_embd / n_head of layer 0 and are overridden by
    # attention.key_length / value_length; SWA layers may have their own (…_swa keys).
    head0 = n_head[0] if n_head else 0
    if head0 <= 0 and any(n_head):
        head0 = max(n_head)
        notes.append("layer 0 has no attention heads; head size derived from the widest layer")
    default_head = n_embd // head0 if head0 else 0
    head_k = _int(md, p + "attention.key_length", default_head) or 0
    head_v = _int(md, p + "attention.value_length", default_head) or 0
    head_k_swa = _int(md, p + "attention.key_length_swa", head_k) or 0
    head_v_swa = _int(md, p + "attention.value_length_swa", head_v) or 0
    if not head_k and any(n_head_kv):
        unknown.append("attention head size (no key_length and no head_count)")

    # ---- experts ------------------------------------------------------------------------
    n_expert = _int(md, p + "expert_count", 0) or 0
    n_used = _per_layer(md, p + "expert_used_count", n_layer_all, 0, unknown) or [0] * n_layer_all
    n_ff_exp = _per_layer(md, p + "expert_feed_forward_length", n_layer_all, 0, unknown) \
        or [0] * n_layer_all
    lead_dense = _int(md, p + "leading_dense_block_count", 0) or 0
    experts = None
    if n_expert > 0:
        experts = ExpertDims(
            n_expert=n_expert, n_expert_used=max(n_used) if n_used else 0,
            n_expert_shared=_int(md, p + "expert_shared_count", 0) or 0,
            n_ff_expert=max(n_ff_exp) if n_ff_exp else 0,
            n_ff_shared_expert=_int(md, p + "expert_shared_feed_forward_length", 0) or 0,
            leading_dense_layers=lead_dense,
            n_expert_groups=_int(md, p + "expert_group_count", 0) or 0,
            n_group_used=_int(md, p + "expert_group_used_count", 0) or 0)
    moe_layers: set[int] = set()
    if n_expert > 0:
        if tensor_names is not None and any(".ffn_gate_inp." in n for n in tensor_names):
            moe_layers = {il for il in range(n_layer_all)
                          if f"blk.{il}.ffn_gate_inp.weight" in tensor_names}
        else:
            step = _int(md, p + "interleave_moe_layer_step", 0) or 0
            every = _int(md, p + "moe_every_n_layers", 0) or 0
            for il in range(n_layer_all):
                if il < lead_dense:
                    continue
                if step > 1 and (il + 1) % step != 0:
                    continue
                if every > 1 and il % every != 0:
                    continue
                moe_layers.add(il)

    # ---- recurrent layers -----------------------------------------------------------------
    is_recr = [False] * n_layer_all
    recurrent = None
    rkind: str | None = None
    both = False  # falcon-h1: every layer has attention AND an SSM
    known_recurrent = True
    if arch in RECURRENT_ARCHS:
        rkind = RECURRENT_ARCHS[arch]
        is_recr = [True] * n_layer_all
    elif arch in HEAD_KV_ZERO_IS_RECURRENT:
        rkind = HEAD_KV_ZERO_IS_RECURRENT[arch]
        # Why: these loaders mark a layer recurrent exactly when its head_count_kv is 0.
        is_recr = [n_head_kv[il] == 0 for il in range(n_layer_all)]
    elif arch in ("nemotron_h", "nemotron_h_moe"):
        rkind = MAMBA2
        # Why: Nemotron-H layers are SSM (no KV heads, no FFN), attention (KV heads, no FFN)
        # or FFN-only (neither cache).
        is_recr = [il < n_layer and n_head_kv[il] == 0 and n_ff[il] == 0
                   for il in range(n_layer_all)]
    elif arch == "falcon-h1":
        rkind = MAMBA2
        is_recr = [True] * n_layer_all
        both = True
    elif arch in INTERVAL_HYBRIDS:
        rkind = INTERVAL_HYBRIDS[arch]
        flags = md.get(p + "attention.recurrent_layers")
        if isinstance(flags, list) and flags:
            vals = [bool(v) for v in flags][:n_layer_all]
            is_recr = vals + [False] * (n_layer_all - len(vals))
        else:
            # Why: without an explicit list, every full_attention_interval-th layer (default
            # 4) is full attention and the others are gated-delta-net; MTP blocks are dense.
            interval = _int(md, p + "full_attention_interval", 4) or 4
            is_recr = [il < n_layer and (il + 1) % interval != 0 for il in range(n_layer_all)]
    elif arch == "minimax-01":
        rkind = LINEAR_ATTENTION
        flags = md.get(p + "attention.recurrent_layers")
        if isinstance(flags, list) and flags:
            vals = [bool(v) for v in flags][:n_layer_all]
            is_recr = vals + [False] * (n_layer_all - len(vals))
        else:
            known_recurrent = False
    if rkind is None and (md.get(p + "ssm.conv_kernel") is not None
                          or md.get(p + "ssm.state_size") is not None):
        # An architecture kurabe does not know carries SSM keys: it has recurrent state, but
        # which layers hold it is not something the metadata says.
        rkind = MAMBA2
        known_recurrent = False
    if not known_recurrent:
        unknown.append("which layers are recurrent (SSM keys present; assumed: layers whose "
                       "head_count_kv is 0)")
        is_recr = [n_head_kv[il] == 0 for il in range(n_layer_all)]

    if rkind is not None:
        d_conv = _int(md, p + "ssm.conv_kernel", 0) or 0
        d_inner = _int(md, p + "ssm.inner_size", 0) or 0
        d_state = _int(md, p + "ssm.state_size", 0) or 0
        n_group = _int(md, p + "ssm.group_count", 0) or 0
        dt_rank = _int(md, p + "ssm.time_step_rank", 0) or 0
        wkv = _int(md, p + "wkv.head_size", 0) or 0
        l_cache = _int(md, p + "shortconv.l_cache", 0) or 0
        kda_dim = _int(md, p + "kda.head_dim", 0) or 0
        if wkv:
            # Why: RWKV keeps token_shift_count (default 2) shifted embeddings and an
            # n_embd x head_size wkv state per sequence.
            shift = _int(md, p + "token_shift_count", 2) or 2
            conv, ssm = shift * n_embd, n_embd * wkv
            rkind = RWKV
        elif l_cache:
            # Why: LFM2 short convolutions keep the last l_cache - 1 inputs (n_embd wide).
            conv, ssm = n_embd * (l_cache - 1), 0
            rkind = SHORTCONV
        elif kda_dim:
            # Why: Kimi delta attention: conv state for Q, K, V and a head_dim^2 state per head.
            conv = 3 * (d_conv - 1 if d_conv > 0 else 3) * head0 * kda_dim
            ssm = kda_dim * kda_dim * head0
            rkind = KDA
        else:
            # Why: Mamba-style conv window (d_conv - 1 columns of d_inner plus the B and C
            # group projections) and a d_state x d_inner SSM / delta-net state.
            conv = (d_conv - 1 if d_conv > 0 else 0) * (d_inner + 2 * n_group * d_state)
            ssm = d_state * d_inner
        recurrent = RecurrentDims(kind=rkind, d_conv=d_conv, d_inner=d_inner, d_state=d_state,
                                  n_group=n_group, dt_rank=dt_rank, conv_floats_per_seq=conv,
                                  ssm_floats_per_seq=ssm)
        if rkind == LINEAR_ATTENTION:
            unknown.append("linear-attention state size (MiniMax-01 head size key not read)")

    # ---- sliding window -------------------------------------------------------------------
    is_swa = [False] * n_layer_all
    sliding = None
    window = _int(md, p + "attention.sliding_window")
    pattern_value = md.get(p + "attention.sliding_window_pattern")
    if arch in SWA_DISABLED_ARCHS:
        if window:
            notes.append(f"{arch}: llama.cpp ignores the sliding window (all layers full)")
    elif arch in SWA_RULES or arch in SWA_ARRAY_ARCHS or arch == "lfm2":
        default_window, period, dense_first, needs_key, kind = SWA_RULES.get(
            arch, (None, 0, False, True, "standard"))
        if arch == "llama4":
            # Why: llama4 uses chunked attention over 8192-token chunks unless the file sets
            # sliding_window to 0.
            active = window != 0
            window_tokens = 8192
        elif arch == "smallthinker":
            # Why: smallthinker turns SWA on when the key is set but always uses 4096.
            active = bool(window)
            window_tokens = default_window or 0
        elif arch == "exaone4":
            # Why: only the 64-layer EXAONE 4 (32B) interleaves sliding layers.
            active = n_layer == 64 and window != 0
            window_tokens = window or default_window or 0
        else:
            active = bool(window) if needs_key else True
            window_tokens = window if window is not None else (default_window or 0)
        if active and window_tokens > 0:
            if arch == "lfm2":
                # Why: LFM2 with a window makes every attention (non-conv) layer sliding.
                is_swa = [not is_recr[il] and il < n_layer for il in range(n_layer_all)]
                how = "every attention layer (lfm2)"
            elif isinstance(pattern_value, list) and pattern_value:
                vals = [bool(v) for v in pattern_value][:n_layer_all]
                is_swa = vals + [False] * (n_layer_all - len(vals))
                how = "per-layer flags from attention.sliding_window_pattern"
            elif arch in SWA_ARRAY_ARCHS:
                unknown.append("sliding-window layers (the per-layer pattern array is missing)")
                how = "unknown (pattern array missing): all layers full"
            else:
                if isinstance(pattern_value, (int, float)) and not isinstance(pattern_value, bool):
                    period = int(pattern_value)
                    how = f"every {period}th layer full (attention.sliding_window_pattern)"
                else:
                    how = f"every {period}th layer full ({arch} default)"
                if dense_first:
                    how += ", starting with a full layer"
                is_swa = _pattern_flags(n_layer_all, n_layer, period, dense_first)
            sliding = SlidingWindow(window_tokens=window_tokens, kind=kind, pattern=how)
    elif window:
        # Architecture not known to use SWA. The array form of the pattern is generic; a
        # scalar period follows llama.cpp's set_swa_pattern; without either nothing is known.
        if isinstance(pattern_value, list) and pattern_value:
            vals = [bool(v) for v in pattern_value][:n_layer_all]
            is_swa = vals + [False] * (n_layer_all - len(vals))
            sliding = SlidingWindow(window, "standard", "per-layer flags (generic array key)")
            notes.append(f"{arch}: sliding window assumed from the generic per-layer array")
        elif isinstance(pattern_value, (int, float)) and not isinstance(pattern_value, bool):
            is_swa = _pattern_flags(n_layer_all, n_layer, int(pattern_value), False)
            sliding = SlidingWindow(window, "standard",
                                    f"every {int(pattern_value)}th layer full (generic key)")
            notes.append(f"{arch}: sliding window assumed from the generic pattern key")
        else:
            unknown.append(f"whether llama.cpp uses attention.sliding_window={window} for "
                           f"{arch} (assumed: every layer full context)")

    # ---- MLA ------------------------------------------------------------------------------
    mla = None
    k_mla = _int(md, p + "attention.key_length_mla", 0) or 0
    v_mla = _int(md, p + "attention.value_length_mla", 0) or 0
    kv_lora = _int(md, p + "attention.kv_lora_rank", 0) or 0
    if k_mla and v_mla:
        # Why: with both MLA keys llama.cpp caches one latent row per token (kv_lora_rank +
        # rope dims, stored as K with head_count_kv = 1) and no separate V.
        rope_dim = _int(md, p + "rope.dimension_count", 0) or 0
        mla = MLADims(kv_lora_rank=kv_lora, rope_dim=rope_dim,
                      q_lora_rank=_int(md, p + "attention.q_lora_rank", 0) or 0,
                      key_length_mla=k_mla, value_length_mla=v_mla)
        if kv_lora and head_k and head_k != kv_lora + rope_dim:
            notes.append(f"MLA key_length {head_k} != kv_lora_rank + rope dims "
                         f"{kv_lora + rope_dim}; using key_length")
    elif kv_lora:
        notes.append("kv_lora_rank without MLA head sizes: an older GGUF whose cache stores "
                     "full per-head K and V")

    # ---- KV sharing (gemma3n / gemma4) ----------------------------------------------------
    kv_from_start = None
    if arch == "gemma3n":
        kv_from_start = 20  # Why: gemma3n's last layers reuse the KV of layers 18/19.
    elif arch == "gemma4":
        shared = _int(md, p + "attention.shared_kv_layers", 0) or 0
        kv_from_start = n_layer_all - shared if shared else None
    if kv_from_start is not None:
        notes.append(f"layers from {kv_from_start} on reuse earlier layers' KV (no own cache)")

    if arch not in _KNOWN_ARCHS:
        unknown.append(f"architecture {arch!r} is not known to kurabe: generic transformer "
                       "rules (every layer full attention unless keys say otherwise)")

    layers = []
    for il in range(n_layer_all):
        if is_recr[il] and not both:
            kind = RECURRENT
        elif arch in ("nemotron_h", "nemotron_h_moe") and n_ff[il] > 0:
            kind = NONE
        elif is_swa[il]:
            kind = SWA
        else:
            kind = FULL
        has_kv = kind in (FULL, SWA)
        if kv_from_start is not None and il >= kv_from_start:
            has_kv = False
        swa_layer = kind == SWA
        hk = head_k_swa if swa_layer else head_k
        hv = head_v_swa if swa_layer else head_v
        if mla is not None:
            hv = 0
        layers.append(LayerLayout(
            index=il, kind=kind, n_head=n_head[il], n_head_kv=n_head_kv[il],
            head_dim_k=hk, head_dim_v=hv, n_ff=n_ff[il],
            is_moe=il in moe_layers, n_expert_used=n_used[il] if il in moe_layers else 0,
            n_ff_expert=n_ff_exp[il] if il in moe_layers else 0,
            has_kv=has_kv, has_recurrent_state=bool(is_recr[il]) and il < n_layer))

    return ModelLayout(
        arch=arch, n_layer=n_layer, n_layer_nextn=n_nextn, n_embd=n_embd, n_vocab=n_vocab,
        n_ctx_train_tokens=n_ctx_train, layers=tuple(layers), sliding_window=sliding, mla=mla,
        recurrent=recurrent, experts=experts, known_arch=arch in _KNOWN_ARCHS,
        unknown=unknown, notes=notes)


# Architectures whose layer rules are the generic ones (all layers full attention) or covered
# by the tables above.
_KNOWN_ARCHS = {
    "llama", "llama-embed", "deci", "mistral3", "mistral4", "qwen", "qwen2", "qwen2moe",
    "qwen2vl", "qwen3", "qwen3moe", "qwen3vl", "qwen3vlmoe", "phi2", "phi3", "phimoe",
    "gemma", "starcoder2", "command-r", "olmo", "olmoe", "granite", "granitemoe",
    "internlm2", "minicpm", "minicpm3", "deepseek", "deepseek2", "glm4", "glm4moe",
    "chatglm", "stablelm", "falcon", "gpt2", "gptneox", "bloom", "mpt", "baichuan",
    "xverse", "orion", "exaone", "nemotron", "arcee", "ernie4_5", "ernie4_5-moe",
    "hunyuan-moe", "hunyuan-dense", "seed_oss", "smollm3", "apertus", "dots1", "bailingmoe",
    "bailingmoe2", "grok", "dbrx", "arctic", "jais", "plm", "openelm", "refact", "codeshell",
    "bitnet", "chameleon", "t5", "t5encoder", "jina-bert-v2", "bert", "nomic-bert",
    *RECURRENT_ARCHS, *HEAD_KV_ZERO_IS_RECURRENT, *INTERVAL_HYBRIDS, "nemotron_h",
    "nemotron_h_moe", "falcon-h1", "minimax-01", *SWA_RULES, *SWA_ARRAY_ARCHS,
}
