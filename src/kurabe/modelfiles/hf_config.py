"""The GGUF a Hugging Face model would convert to, from its ``config.json`` alone.

``read_hf_config(path)`` reads ``config.json`` (a file, or a folder holding one) and
synthesizes what llama.cpp's converter (``convert_hf_to_gguf.py``) would write at F16/BF16:
the ``{arch}.*`` metadata keys and the tensor list with GGUF names and shapes (GGML order,
``ne[0]`` first). The result looks like a :class:`~kurabe.modelfiles.gguf_header.GGUFHeader`
(``.metadata``, ``.tensors``, ``.header_bytes``, ``.file_bytes``), so
:func:`kurabe.simulator.quantize.predict_quant` and the rest of kurabe can use it before anything
is downloaded.

Also read when present in the same folder:

* ``model.safetensors.index.json``: the checkpoint's total size and tensor names (tied or
  separate output layer, multi-token-prediction layers);
* ``tokenizer.json`` / ``tokenizer_config.json`` / ``chat_template.jinja``: the exact size
  of the vocabulary arrays and chat template in the header.

Multimodal releases nest the text model under ``text_config`` (Gemma 3, Qwen3.5); only the
text model is synthesized (the vision tower goes to a separate mmproj file).

Header size: the metadata keys and tensor infos are sized exactly; the tokenizer arrays
(tokens, token types, merges or scores), which dominate the header (several MB for a 128k-
250k vocabulary), are sized from ``tokenizer.json`` when present, else from the measured
sizes of the same tokenizer family (Llama 3, Qwen, Gemma 3 vocabularies) or, for an unknown
one, ~16.7 bytes per token string and ~18.3 per merge (averages of published vocabularies).
Free-form ``general.*`` keys (name, license, tags) and an absent chat template are guesses.

Supported (GGUF arch <- HF architectures / model_type): llama (Llama, Mistral, Mixtral),
qwen2, qwen3, qwen3moe, gemma3 (text of Gemma 3), gpt-oss, qwen3next, qwen35 and qwen35moe
(Qwen3.5 hybrids).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kurabe import KurabeError
from kurabe.modelfiles.gguf_header import SkippedArray, TensorInfo
from kurabe.simulator.quantize import (
    GGUF_DEFAULT_ALIGNMENT,
    ggml_type,
    kv_bytes,
    tensor_info_bytes,
    tensor_nbytes,
)


class HFConfigError(KurabeError):
    pass


# HF "architectures" entry -> GGUF architecture
ARCHITECTURES: dict[str, str] = {
    "LlamaForCausalLM": "llama", "LLaMAForCausalLM": "llama", "MistralForCausalLM": "llama",
    "MixtralForCausalLM": "llama",
    "Qwen2ForCausalLM": "qwen2", "Qwen2Model": "qwen2",
    "Qwen3ForCausalLM": "qwen3", "Qwen3Model": "qwen3",
    "Qwen3MoeForCausalLM": "qwen3moe",
    "Gemma3ForCausalLM": "gemma3", "Gemma3ForConditionalGeneration": "gemma3",
    "GptOssForCausalLM": "gpt-oss",
    "Qwen3NextForCausalLM": "qwen3next",
    "Qwen3_5ForCausalLM": "qwen35", "Qwen3_5ForConditionalGeneration": "qwen35",
    "Qwen3_5MoeForCausalLM": "qwen35moe", "Qwen3_5MoeForConditionalGeneration": "qwen35moe",
}
# HF model_type -> GGUF architecture (used when "architectures" is missing or unknown)
MODEL_TYPES: dict[str, str] = {
    "llama": "llama", "mistral": "llama", "mixtral": "llama",
    "qwen2": "qwen2", "qwen3": "qwen3", "qwen3_moe": "qwen3moe",
    "gemma3": "gemma3", "gemma3_text": "gemma3",
    "gpt_oss": "gpt-oss",
    "qwen3_next": "qwen3next",
    "qwen3_5": "qwen35", "qwen3_5_text": "qwen35",
    "qwen3_5_moe": "qwen35moe", "qwen3_5_moe_text": "qwen35moe",
}
SUPPORTED_ARCHS = ("llama", "qwen2", "qwen3", "qwen3moe", "gemma3", "gpt-oss", "qwen3next",
                   "qwen35", "qwen35moe")

# Tokenizer arrays of known vocabularies, measured on published GGUFs:
# n_vocab -> (family, bytes of the token strings incl. 8-byte lengths, merges, merge bytes)
_KNOWN_VOCABS: dict[int, tuple[str, int, int, int]] = {
    128256: ("llama-bpe", 2_099_493, 280_147, 5_204_765),
    151936: ("qwen2", 2_588_196, 151_387, 2_731_548),
    262144: ("gemma3-spm", 4_412_518, 0, 0),
}
_TOKEN_BYTES_AVG = 16.7   # per token string, length prefix included
_MERGE_BYTES_AVG = 18.3   # per merge string, length prefix included
_CHAT_TEMPLATE_GUESS = 4096
_GENERAL_KEYS_GUESS = 1024  # general.name/basename/size_label/license/tags/languages...


@dataclass
class HFModelHeader:
    """A GGUF header synthesized from a Hugging Face config (F16/BF16 conversion)."""

    path: Path
    model_type: str
    hf_architecture: str
    metadata: dict[str, Any]
    tensors: list[TensorInfo] = field(default_factory=list)
    header_bytes: int = 0
    header_estimated: bool = True
    source_bytes: int | None = None      # total_size of model.safetensors.index.json
    notes: list[str] = field(default_factory=list)
    version: int = 3

    def get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(key, default)

    @property
    def architecture(self) -> str:
        return self.metadata["general.architecture"]

    @property
    def file_type_name(self) -> str:
        return "BF16" if self.metadata.get("general.file_type") == 32 else "F16"

    @property
    def n_params(self) -> int:
        total = 0
        for t in self.tensors:
            n = 1
            for d in t.shape:
                n *= d
            total += n
        return total

    @property
    def tensor_bytes(self) -> int:
        return sum(tensor_nbytes(t.ggml_type, t.shape) for t in self.tensors)

    @property
    def file_bytes(self) -> int:
        """Predicted size of the converted F16/BF16 GGUF."""
        pad = GGUF_DEFAULT_ALIGNMENT
        data = sum(-(-tensor_nbytes(t.ggml_type, t.shape) // pad) * pad for t in self.tensors)
        return -(-self.header_bytes // pad) * pad + data


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise HFConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HFConfigError(f"{path}: not valid JSON ({exc})") from None
    except RecursionError:
        raise HFConfigError(f"{path}: not valid JSON (nested too deeply)") from None


# Whole-number hyperparameters and the range a real model's value lies in. A value outside
# is refused with its name (a config.json is outside input: a layer count of 10**20 must
# not become a loop that never ends).
_INT_RANGES: dict[str, tuple[int, int]] = {
    "num_hidden_layers": (1, 2048), "hidden_size": (1, 1 << 20),
    "intermediate_size": (1, 1 << 24), "moe_intermediate_size": (1, 1 << 24),
    "shared_expert_intermediate_size": (0, 1 << 24),
    "num_attention_heads": (1, 1 << 14), "num_key_value_heads": (1, 1 << 14),
    "head_dim": (1, 1 << 16), "vocab_size": (1, 1 << 22),
    "num_local_experts": (0, 1 << 16), "num_experts": (0, 1 << 16),
    "num_experts_per_tok": (0, 1 << 16), "max_position_embeddings": (0, 1 << 40),
    "sliding_window": (0, 1 << 40), "decoder_sparse_step": (0, 2048),
    "full_attention_interval": (0, 2048), "mtp_num_hidden_layers": (0, 64),
    "linear_num_key_heads": (1, 1 << 14), "linear_num_value_heads": (1, 1 << 14),
    "linear_key_head_dim": (1, 1 << 16), "linear_value_head_dim": (1, 1 << 16),
    "linear_conv_kernel_dim": (1, 1024),
}
_NUMBER_KEYS = ("rms_norm_eps", "rope_theta", "final_logit_softcapping", "rope_local_base_freq",
                "partial_rotary_factor")
_OBJECT_KEYS = ("rope_scaling", "rope_parameters", "quantization_config")


def _shown(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 40 else text[:39] + "…"


def _check_hparams(hp: dict[str, Any], path: Path) -> None:
    """Refuse, by name, a hyperparameter of the wrong type or out of any real model's range."""
    for key, (lo, hi) in _INT_RANGES.items():
        value = hp.get(key)
        if value is None:
            continue
        whole = (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer())
        if not whole or not lo <= value <= hi:
            raise HFConfigError(f"{path}: {key} is {_shown(value)}: expected a whole number "
                                f"from {lo} to {hi:,}")
    for key in _NUMBER_KEYS:
        value = hp.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise HFConfigError(f"{path}: {key} is {_shown(value)}: expected a number")
    for key in _OBJECT_KEYS:
        value = hp.get(key)
        if value is not None and not isinstance(value, dict):
            raise HFConfigError(f"{path}: {key} is {_shown(value)}: expected an object")
    layer_types = hp.get("layer_types")
    if layer_types is not None and not (isinstance(layer_types, list)
                                        and all(isinstance(t, str) for t in layer_types)):
        raise HFConfigError(f"{path}: layer_types is {_shown(layer_types)}: expected a list "
                            "of layer type names")
    dense = hp.get("mlp_only_layers")
    if dense is not None and not (isinstance(dense, list) and all(
            isinstance(i, int) and not isinstance(i, bool) for i in dense)):
        raise HFConfigError(f"{path}: mlp_only_layers is {_shown(dense)}: expected a list of "
                            "layer numbers")


def _resolve_arch(config: dict[str, Any], path: Path) -> tuple[str, str, str]:
    """(gguf arch, hf architecture, model_type)."""
    archs = config.get("architectures") or []
    if not isinstance(archs, list) or not all(isinstance(a, str) for a in archs):
        raise HFConfigError(f"{path}: architectures is {_shown(archs)}: expected a list of "
                            "class names")
    text_config = config.get("text_config")
    text: dict[str, Any] = text_config if isinstance(text_config, dict) else {}
    for where in (config, text):
        if where.get("model_type") is not None and not isinstance(where["model_type"], str):
            raise HFConfigError(f"{path}: model_type is {_shown(where['model_type'])}: "
                                "expected a name")
    model_type = str(text.get("model_type") or config.get("model_type") or "")
    for a in archs:
        if a in ARCHITECTURES:
            return ARCHITECTURES[a], a, model_type
    for mt in (text.get("model_type"), config.get("model_type")):
        if mt in MODEL_TYPES:
            return MODEL_TYPES[mt], (archs[0] if archs else ""), str(mt)
    shown = model_type or "(none)"
    raise HFConfigError(
        f"{path}: model_type {shown!r}"
        + (f" (architectures {', '.join(map(str, archs))})" if archs else "")
        + f" is not supported; known GGUF architectures: {', '.join(SUPPORTED_ARCHS)}")


def read_hf_config(path: str | Path, *, dtype: str | None = None,
                   mtp: bool = True, config: dict[str, Any] | None = None) -> HFModelHeader:
    """Synthesize the F16/BF16 GGUF header llama.cpp's converter would produce.

    ``path``: a ``config.json`` or a folder holding one. ``dtype``: "F16" or "BF16"
    (default: BF16 when the config says bfloat16, as the converter's ``auto``; the size is
    the same). ``mtp``: keep multi-token-prediction layers (the converter's default; its
    ``--no-mtp`` drops them). ``config``: the loaded ``config.json`` to use instead of the
    file's text (e.g. with hyperparameters changed); ``path`` still names it in messages and
    its folder's tokenizer files are still read.
    """
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    cfg_path = path / "config.json" if path.is_dir() else path
    if config is None:
        if not cfg_path.is_file():
            raise HFConfigError(f"{cfg_path}: no such file")
        config = _load_json(cfg_path)
    if not isinstance(config, dict):
        raise HFConfigError(f"{cfg_path}: expected a JSON object")
    arch, hf_arch, model_type = _resolve_arch(config, cfg_path)

    hp = dict(config)
    if isinstance(config.get("text_config"), dict):
        hp.update(config["text_config"])
    _check_hparams(hp, cfg_path)

    index: dict[str, Any] | None = None
    index_path = folder / "model.safetensors.index.json"
    if index_path.is_file():
        loaded = _load_json(index_path)
        if not isinstance(loaded, dict):
            raise HFConfigError(f"{index_path}: expected a JSON object")
        index = loaded
    weight_map = (index or {}).get("weight_map") or {}
    weight_names = {n for n in weight_map if isinstance(n, str)} if isinstance(
        weight_map, dict | list) else set()

    if dtype is None:
        torch_dtype = str(hp.get("torch_dtype") or hp.get("dtype") or "")
        dtype = "BF16" if torch_dtype == "bfloat16" else "F16"
    dtype = dtype.upper()
    if dtype not in ("F16", "BF16"):
        raise HFConfigError(f"dtype must be F16 or BF16, not {dtype!r}")

    b = _Builder(arch, hp, dtype, cfg_path, weight_names, folder, mtp)
    try:
        _BUILDERS[arch](b)
        header = b.finish(hf_arch, model_type)
    except HFConfigError:
        raise
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, ZeroDivisionError,
            OverflowError) as exc:
        # A value of a shape no converter would accept, deeper than _check_hparams looks.
        raise HFConfigError(f"{cfg_path}: cannot read the model's layout from it "
                            f"({type(exc).__name__}: {_shown(str(exc))})") from None
    if index is not None:
        metadata = index.get("metadata")
        total = metadata.get("total_size") if isinstance(metadata, dict) else None
        if isinstance(total, int) and not isinstance(total, bool):
            header.source_bytes = total
            synthesized = header.tensor_bytes
            if synthesized and abs(total - synthesized) > 0.05 * synthesized:
                header.notes.append(
                    f"the checkpoint holds {total:,} bytes, the synthesized text model "
                    f"{synthesized:,} at {dtype} (a vision tower, extra layers or another "
                    "storage type would explain it)")
    return header


# --------------------------------------------------------------------------------------------
# Layout builder
# --------------------------------------------------------------------------------------------

# GGUF tensor kinds the converter always writes as F32 (besides vectors and norms).
_F32_KINDS = ("ffn_gate_inp", "ffn_gate_inp_shexp", "position_embd", "token_types",
              "ssm_conv1d")


class _Builder:
    def __init__(self, arch: str, hp: dict[str, Any], dtype: str, path: Path,
                 weight_names: set[str], folder: Path, mtp: bool) -> None:
        self.arch, self.hp, self.dtype, self.path = arch, hp, dtype, path
        self.weight_names, self.folder, self.mtp = weight_names, folder, mtp
        self.meta: dict[str, Any] = {}
        self.tensors: list[TensorInfo] = []
        self.notes: list[str] = []
        self.n_vocab = 0

    # -- hparams ---------------------------------------------------------------------------
    def find(self, *keys: str, default: Any = None, required: bool = True) -> Any:
        for k in keys:
            if self.hp.get(k) is not None:
                return self.hp[k]
        if default is not None or not required:
            return default
        raise HFConfigError(f"{self.path}: missing {keys[0]!r} (needed for {self.arch})")

    def tied(self, default: bool) -> bool:
        if self.weight_names:
            return not any(n.endswith("lm_head.weight") for n in self.weight_names)
        value = self.hp.get("tie_word_embeddings")
        return default if value is None else bool(value)

    # -- output ----------------------------------------------------------------------------
    def key(self, name: str, value: Any) -> None:
        self.meta[name.format(arch=self.arch)] = value

    def t(self, name: str, *shape: int, force_f32: bool = False) -> None:
        parts = name.split(".")
        kind = parts[2] if name.startswith("blk.") and len(parts) > 2 else parts[0]
        vector = len(shape) <= 1
        f32 = (force_f32 or vector or name.endswith("_norm.weight")
               or not name.endswith(".weight") or kind in _F32_KINDS)
        qtype = ggml_type("F32" if f32 else self.dtype)
        self.tensors.append(TensorInfo(name, tuple(int(s) for s in shape), qtype.id, 0))

    def raw(self, name: str, shape: tuple[int, ...], type_name: str) -> None:
        self.tensors.append(TensorInfo(name, shape, ggml_type(type_name).id, 0))

    # -- common pieces ---------------------------------------------------------------------
    def common_keys(self, n_layer: int) -> None:
        hp = self.hp
        self.key("general.architecture", self.arch)
        self.key("general.type", "model")
        self.key("{arch}.block_count", n_layer)
        if (ctx := self.find("max_position_embeddings", required=False)) is not None:
            self.key("{arch}.context_length", int(ctx))
        self.key("{arch}.embedding_length", int(self.find("hidden_size")))
        if (ff := self.find("intermediate_size", required=False)) is not None:
            self.key("{arch}.feed_forward_length", int(ff))
        if (nh := self.find("num_attention_heads", required=False)) is not None:
            self.key("{arch}.attention.head_count", int(nh))
        if (nkv := self.find("num_key_value_heads", required=False)) is not None:
            self.key("{arch}.attention.head_count_kv", int(nkv))
        rope = hp.get("rope_parameters") or hp.get("rope_scaling") or {}
        rope = rope.get("full_attention", rope) if isinstance(rope, dict) else {}
        rope_type = rope.get("rope_type") or rope.get("type")
        factor = rope.get("factor")
        if rope_type == "linear" and factor is not None:
            self.key("{arch}.rope.scaling.type", "linear")
            self.key("{arch}.rope.scaling.factor", float(factor))
        elif rope_type == "yarn" and factor is not None:
            self.key("{arch}.rope.scaling.type", "yarn")
            self.key("{arch}.rope.scaling.factor", float(factor))
            self.key("{arch}.rope.scaling.original_context_length",
                     int(rope.get("original_max_position_embeddings", 0)))
            for src, dst in (("beta_fast", "yarn_beta_fast"), ("beta_slow", "yarn_beta_slow")):
                if rope.get(src) is not None:
                    self.key("{arch}.rope.scaling." + dst, float(rope[src]))
        theta = rope.get("rope_theta", hp.get("rope_theta"))
        if theta is not None:
            self.key("{arch}.rope.freq_base", float(theta))
        if (eps := self.find("rms_norm_eps", required=False)) is not None:
            self.key("{arch}.attention.layer_norm_rms_epsilon", float(eps))
        if (ne := self.find("num_local_experts", "num_experts", required=False)) is not None:
            self.key("{arch}.expert_count", int(ne))
        if (nu := self.find("num_experts_per_tok", required=False)) is not None:
            self.key("{arch}.expert_used_count", int(nu))
        if (hd := hp.get("head_dim")) is not None:
            self.key("{arch}.attention.key_length", int(hd))
            self.key("{arch}.attention.value_length", int(hd))
        self.key("general.file_type", 32 if self.dtype == "BF16" else 1)
        self.key("general.quantization_version", 2)

    def embeddings(self, n_vocab: int, *, tied: bool) -> None:
        E = int(self.find("hidden_size"))
        self.n_vocab = n_vocab
        self.t("token_embd.weight", E, n_vocab)
        self.t("output_norm.weight", E)
        if not tied:
            self.t("output.weight", E, n_vocab)

    def attention(self, p: str, *, n_head: int, n_kv: int, head_dim: int, q_mult: int = 1,
                  qkv_bias: bool = False, out_bias: bool = False, qk_norm: bool = False
                  ) -> None:
        E = int(self.find("hidden_size"))
        q, kv = n_head * head_dim, n_kv * head_dim
        self.t(p + "attn_q.weight", E, q * q_mult)
        self.t(p + "attn_k.weight", E, kv)
        self.t(p + "attn_v.weight", E, kv)
        self.t(p + "attn_output.weight", q, E)
        if qkv_bias:
            self.t(p + "attn_q.bias", q * q_mult)
            self.t(p + "attn_k.bias", kv)
            self.t(p + "attn_v.bias", kv)
        if out_bias:
            self.t(p + "attn_output.bias", E)
        if qk_norm:
            self.t(p + "attn_q_norm.weight", head_dim)
            self.t(p + "attn_k_norm.weight", head_dim)

    def dense_ffn(self, p: str, n_ff: int, *, bias: bool = False) -> None:
        E = int(self.find("hidden_size"))
        self.t(p + "ffn_gate.weight", E, n_ff)
        self.t(p + "ffn_up.weight", E, n_ff)
        self.t(p + "ffn_down.weight", n_ff, E)
        if bias:
            self.t(p + "ffn_gate.bias", n_ff)
            self.t(p + "ffn_up.bias", n_ff)
            self.t(p + "ffn_down.bias", E)

    def moe_ffn(self, p: str, n_expert: int, n_ff_exp: int) -> None:
        E = int(self.find("hidden_size"))
        self.t(p + "ffn_gate_inp.weight", E, n_expert)
        self.t(p + "ffn_gate_exps.weight", E, n_ff_exp, n_expert)
        self.t(p + "ffn_up_exps.weight", E, n_ff_exp, n_expert)
        self.t(p + "ffn_down_exps.weight", n_ff_exp, E, n_expert)

    # -- tokenizer and header --------------------------------------------------------------
    def tokenizer_bytes(self) -> tuple[int, str]:
        """Bytes of the tokenizer.* keys (arrays, ids, template) and how they were sized."""
        n = self.n_vocab
        spm = self.arch == "gemma3"
        size = kv_bytes("tokenizer.ggml.model", "llama" if spm else "gpt2")
        size += kv_bytes("tokenizer.ggml.pre", "default")
        for k in ("bos_token_id", "eos_token_id", "padding_token_id"):
            size += kv_bytes("tokenizer.ggml." + k, 0)
        size += kv_bytes("tokenizer.ggml.add_bos_token", True)
        size += kv_bytes("tokenizer.ggml.add_eos_token", False)
        arrays = 3 * (len("tokenizer.ggml.token_type") + 8 + 4 + 4 + 8)
        size += arrays + 4 * n  # token types (i32 each) + the three arrays' key/type/length
        if spm:
            size += 4 * n  # scores (f32 each)
        how = ""
        tok_json = self.folder / "tokenizer.json"
        counted = _count_tokenizer_json(tok_json, n) if tok_json.is_file() else None
        if counted is not None:
            tok_bytes, merge_bytes = counted
            how = "tokenizer.json"
        elif n in _KNOWN_VOCABS and (_KNOWN_VOCABS[n][2] == 0) == spm:
            family, tok_bytes, _n_merges, merge_bytes = _KNOWN_VOCABS[n]
            how = f"measured {family} vocabulary"
        else:
            tok_bytes = int(n * _TOKEN_BYTES_AVG)
            merge_bytes = 0 if spm else int(n * _MERGE_BYTES_AVG)
            how = "average token and merge lengths"
        size += tok_bytes + merge_bytes
        template = _chat_template(self.folder)
        if template is not None:
            size += kv_bytes("tokenizer.chat_template", template)
        else:
            size += _CHAT_TEMPLATE_GUESS
            how += "; chat template guessed"
        return size, how

    def finish(self, hf_arch: str, model_type: str) -> HFModelHeader:
        tok_bytes, how = self.tokenizer_bytes()
        header = 4 + 4 + 8 + 8
        header += sum(kv_bytes(k, v) for k, v in self.meta.items())
        header += _GENERAL_KEYS_GUESS + tok_bytes
        header += sum(tensor_info_bytes(t.name, t.shape) for t in self.tensors)
        self.notes.append(f"header size estimated (tokenizer: {how})")
        meta = dict(self.meta)
        meta["tokenizer.ggml.tokens"] = SkippedArray(8, self.n_vocab)
        return HFModelHeader(self.path, model_type, hf_arch, meta, self.tensors, header,
                             True, None, self.notes)


def _count_tokenizer_json(path: Path, n_vocab: int) -> tuple[int, int] | None:
    """(token string bytes, merge string bytes) as the converter would store them."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        model = data["model"]
        vocab: dict[str, int] = dict(model.get("vocab") or {})
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return None
    added = data.get("added_tokens") or []
    for tok in added if isinstance(added, list) else []:
        if isinstance(tok, dict) and "content" in tok and "id" in tok:
            vocab[str(tok["content"])] = tok["id"]
    # Only string tokens with ids the vocabulary can hold count; anything else (a file of
    # another shape) means the sizes cannot be read from it.
    if not all(isinstance(s, str) and isinstance(i, int) and not isinstance(i, bool)
               and 0 <= i < (1 << 22) for s, i in vocab.items()):
        return None
    by_id = {i: s for s, i in vocab.items()}
    total = max(n_vocab, len(by_id))
    tok_bytes = 0
    for i in range(total):
        s = by_id.get(i, f"[PAD{i}]")
        tok_bytes += 8 + len(s.encode("utf-8", "surrogatepass"))
    merges = model.get("merges") or []
    if not isinstance(merges, list):
        return None
    merge_bytes = 0
    for m in merges:
        s = " ".join(map(str, m)) if isinstance(m, list) else str(m)
        merge_bytes += 8 + len(s.encode("utf-8", "surrogatepass"))
    return tok_bytes, merge_bytes


def _chat_template(folder: Path) -> str | None:
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        try:
            return jinja.read_text(encoding="utf-8")
        except OSError:
            return None
    cfg = folder / "tokenizer_config.json"
    if cfg.is_file():
        try:
            value = json.loads(cfg.read_text(encoding="utf-8")).get("chat_template")
        except (OSError, ValueError, AttributeError, RecursionError):
            return None
        if isinstance(value, str):
            return value
        if isinstance(value, list):  # named templates: the converter stores each one
            return "".join(str(v.get("template", "")) for v in value if isinstance(v, dict))
    return None


# --------------------------------------------------------------------------------------------
# Architectures
# --------------------------------------------------------------------------------------------


def _heads(b: _Builder) -> tuple[int, int, int]:
    n_head = int(b.find("num_attention_heads"))
    n_kv = int(b.find("num_key_value_heads", default=n_head))
    head_dim = int(b.hp.get("head_dim") or int(b.find("hidden_size")) // n_head)
    return n_head, n_kv, head_dim


def _llama(b: _Builder) -> None:
    L = int(b.find("num_hidden_layers"))
    n_head, n_kv, hd = _heads(b)
    n_vocab = int(b.find("vocab_size"))
    b.common_keys(L)
    b.key("{arch}.vocab_size", n_vocab)
    b.key("{arch}.rope.dimension_count", hd)
    b.embeddings(n_vocab, tied=b.tied(False))
    rope = b.hp.get("rope_parameters") or b.hp.get("rope_scaling") or {}
    if str(rope.get("rope_type", rope.get("type", ""))).lower() == "llama3":
        b.t("rope_freqs.weight", hd // 2)
    n_expert = int(b.find("num_local_experts", default=0))
    bias = bool(b.hp.get("attention_bias"))
    for i in range(L):
        p = f"blk.{i}."
        b.t(p + "attn_norm.weight", int(b.find("hidden_size")))
        b.attention(p, n_head=n_head, n_kv=n_kv, head_dim=hd, qkv_bias=bias, out_bias=bias)
        b.t(p + "ffn_norm.weight", int(b.find("hidden_size")))
        if n_expert > 1:
            b.moe_ffn(p, n_expert, int(b.find("intermediate_size")))
        else:
            b.dense_ffn(p, int(b.find("intermediate_size")), bias=bool(b.hp.get("mlp_bias")))


def _qwen2(b: _Builder) -> None:
    L = int(b.find("num_hidden_layers"))
    n_head, n_kv, hd = _heads(b)
    n_vocab = int(b.find("vocab_size"))
    E = int(b.find("hidden_size"))
    b.common_keys(L)
    b.embeddings(n_vocab, tied=b.tied(False))
    for i in range(L):
        p = f"blk.{i}."
        b.t(p + "attn_norm.weight", E)
        b.attention(p, n_head=n_head, n_kv=n_kv, head_dim=hd, qkv_bias=True)
        b.t(p + "ffn_norm.weight", E)
        b.dense_ffn(p, int(b.find("intermediate_size")))


def _qwen3(b: _Builder) -> None:
    L = int(b.find("num_hidden_layers"))
    n_head, n_kv, hd = _heads(b)
    n_vocab = int(b.find("vocab_size"))
    E = int(b.find("hidden_size"))
    moe = b.arch == "qwen3moe"
    b.common_keys(L)
    if moe and (ffe := b.find("moe_intermediate_size", required=False)) is not None:
        b.key("{arch}.expert_feed_forward_length", int(ffe))
    b.embeddings(n_vocab, tied=b.tied(False))
    n_expert = int(b.find("num_experts", default=0)) if moe else 0
    sparse_step = int(b.hp.get("decoder_sparse_step") or 1)
    dense_layers = set(b.hp.get("mlp_only_layers") or [])
    bias = bool(b.hp.get("attention_bias"))
    for i in range(L):
        p = f"blk.{i}."
        b.t(p + "attn_norm.weight", E)
        b.attention(p, n_head=n_head, n_kv=n_kv, head_dim=hd, qkv_bias=bias, out_bias=bias,
                    qk_norm=True)
        b.t(p + "ffn_norm.weight", E)
        if n_expert > 0 and i not in dense_layers and (i + 1) % sparse_step == 0:
            b.moe_ffn(p, n_expert, int(b.find("moe_intermediate_size")))
        else:
            b.dense_ffn(p, int(b.find("intermediate_size")))


# Gemma3TextConfig defaults (the multimodal configs leave most text fields out).
_GEMMA3_DEFAULTS = {"num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256,
                    "max_position_embeddings": 131072, "rms_norm_eps": 1e-6,
                    "sliding_window": 4096, "rope_theta": 1_000_000.0,
                    "query_pre_attn_scalar": 256}
_GEMMA3_VOCAB = 262144  # Gemma 3's tokenizer.model; the embedding is cut to it


def _gemma3(b: _Builder) -> None:
    for k, v in _GEMMA3_DEFAULTS.items():
        b.hp.setdefault(k, v)
    L = int(b.find("num_hidden_layers"))
    n_head, n_kv, hd = _heads(b)
    E = int(b.find("hidden_size"))
    n_vocab = b.hp.get("vocab_size")
    if n_vocab is None:
        tok_json = b.folder / "tokenizer.json"
        n_vocab = _GEMMA3_VOCAB
        if tok_json.is_file():
            try:
                data = json.loads(tok_json.read_text(encoding="utf-8"))
                n_vocab = len(data["model"]["vocab"]) + len(data.get("added_tokens") or [])
            except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
                pass
    b.common_keys(L)
    b.key("{arch}.attention.key_length", hd)
    b.key("{arch}.attention.value_length", hd)
    if (cap := b.hp.get("final_logit_softcapping")):
        b.key("{arch}.final_logit_softcapping", float(cap))
    if b.hp.get("sliding_window_pattern") != 1:
        b.key("{arch}.attention.sliding_window", int(b.hp["sliding_window"]))
    if (local := b.hp.get("rope_local_base_freq")) is not None:
        b.key("{arch}.rope.freq_base_swa", float(local))
    b.embeddings(int(n_vocab), tied=b.tied(True))
    for i in range(L):
        p = f"blk.{i}."
        b.t(p + "attn_norm.weight", E)
        b.attention(p, n_head=n_head, n_kv=n_kv, head_dim=hd, qk_norm=True)
        b.t(p + "post_attention_norm.weight", E)
        b.t(p + "ffn_norm.weight", E)
        b.dense_ffn(p, int(b.find("intermediate_size")))
        b.t(p + "post_ffw_norm.weight", E)


def _gpt_oss(b: _Builder) -> None:
    L = int(b.find("num_hidden_layers"))
    n_head, n_kv, hd = _heads(b)
    E = int(b.find("hidden_size"))
    n_vocab = int(b.find("vocab_size"))
    n_expert = int(b.find("num_local_experts", "num_experts"))
    n_ff = int(b.find("intermediate_size"))
    b.common_keys(L)
    b.key("{arch}.attention.sliding_window", int(b.find("sliding_window", default=128)))
    b.key("{arch}.expert_feed_forward_length", n_ff)
    b.embeddings(n_vocab, tied=b.tied(False))
    quant = b.hp.get("quantization_config") or {}
    mxfp4 = quant.get("quant_method") == "mxfp4"
    if mxfp4:
        b.notes.append("experts stay MXFP4 as published (the converter repacks them)")
    for i in range(L):
        p = f"blk.{i}."
        b.t(p + "attn_norm.weight", E)
        b.attention(p, n_head=n_head, n_kv=n_kv, head_dim=hd, qkv_bias=True, out_bias=True)
        b.t(p + "attn_sinks.weight", n_head)
        b.t(p + "post_attention_norm.weight", E)
        b.t(p + "ffn_gate_inp.weight", E, n_expert)
        b.t(p + "ffn_gate_inp.bias", n_expert)
        for kind, shape in (("ffn_gate_exps", (E, n_ff, n_expert)),
                            ("ffn_up_exps", (E, n_ff, n_expert)),
                            ("ffn_down_exps", (n_ff, E, n_expert))):
            if mxfp4:
                b.raw(p + kind + ".weight", shape, "MXFP4")
            else:
                b.t(p + kind + ".weight", *shape)
            b.t(p + kind + ".bias", shape[1], n_expert)


def _mtp_layers(b: _Builder) -> int:
    if not b.mtp:
        return 0
    n = int(b.hp.get("mtp_num_hidden_layers") or 0)
    if n == 0 and b.weight_names:
        ids = {int(parts[2]) for name in b.weight_names
               if (parts := name.removeprefix("model.").split("."))[0] == "mtp"
               and len(parts) > 3 and parts[1] == "layers" and parts[2].isdecimal()}
        n = max(ids) + 1 if ids else 0
    elif n == 0 and b.arch == "qwen3next":
        n = 1  # Qwen3-Next ships one MTP layer but does not say so in config.json
        b.notes.append("assumed 1 MTP layer (no checkpoint index to check)")
    return n


def _qwen_hybrid(b: _Builder) -> None:
    hp = b.hp
    L = int(b.find("num_hidden_layers"))
    n_head, n_kv, hd = _heads(b)
    E = int(b.find("hidden_size"))
    n_vocab = int(b.find("vocab_size"))
    moe = b.arch in ("qwen3next", "qwen35moe")
    n_mtp = _mtp_layers(b)
    n_block = L + n_mtp
    nk, nv = int(b.find("linear_num_key_heads")), int(b.find("linear_num_value_heads"))
    dk, dv = int(b.find("linear_key_head_dim")), int(b.find("linear_value_head_dim"))
    d_conv = int(b.find("linear_conv_kernel_dim"))
    interval = int(hp.get("full_attention_interval") or 4)
    layer_types = hp.get("layer_types")
    if layer_types is not None and len(layer_types) != L:
        raise HFConfigError(f"{b.path}: layer_types has {len(layer_types)} entries for "
                            f"{L} layers")
    if layer_types is None:
        recurrent = [(i + 1) % interval != 0 for i in range(L)]
    else:
        recurrent = [t == "linear_attention" for t in layer_types]

    b.common_keys(n_block)
    if moe:
        b.key("{arch}.expert_feed_forward_length", int(b.find("moe_intermediate_size")))
        if (fs := hp.get("shared_expert_intermediate_size")) is not None:
            b.key("{arch}.expert_shared_feed_forward_length", int(fs))
    b.key("{arch}.ssm.conv_kernel", d_conv)
    b.key("{arch}.ssm.state_size", dk)
    b.key("{arch}.ssm.group_count", nk)
    b.key("{arch}.ssm.time_step_rank", nv)
    b.key("{arch}.ssm.inner_size", dv * nv)
    if layer_types is not None:
        b.key("{arch}.attention.recurrent_layers", recurrent + [False] * n_mtp)
    b.key("{arch}.full_attention_interval", interval)
    rope = hp.get("rope_parameters") or hp.get("rope_scaling") or {}
    partial = float(rope.get("partial_rotary_factor", hp.get("partial_rotary_factor", 0.25)))
    b.key("{arch}.rope.dimension_count", int(hd * partial))
    if b.arch in ("qwen35", "qwen35moe"):
        section = list(rope.get("mrope_section") or [11, 11, 10])
        b.key("{arch}.rope.dimension_sections", (section + [0, 0, 0, 0])[:4])
    if n_mtp:
        b.key("{arch}.nextn_predict_layers", n_mtp)

    b.embeddings(n_vocab, tied=b.tied(False))
    conv_dim = 2 * nk * dk + nv * dv
    n_expert = int(b.find("num_experts", default=0)) if moe else 0
    for i in range(n_block):
        p = f"blk.{i}."
        b.t(p + "attn_norm.weight", E)
        b.t(p + "post_attention_norm.weight", E)
        if i < L and recurrent[i]:
            b.t(p + "attn_qkv.weight", E, conv_dim)
            b.t(p + "attn_gate.weight", E, nv * dv)
            b.t(p + "ssm_conv1d.weight", d_conv, conv_dim)
            b.t(p + "ssm_dt.bias", nv)
            b.t(p + "ssm_a", nv)
            if b.arch == "qwen3next":
                b.t(p + "ssm_ba.weight", E, 2 * nv)
            else:
                b.t(p + "ssm_beta.weight", E, nv)
                b.t(p + "ssm_alpha.weight", E, nv)
            b.t(p + "ssm_norm.weight", dv)
            b.t(p + "ssm_out.weight", nv * dv, E)
        else:
            b.attention(p, n_head=n_head, n_kv=n_kv, head_dim=hd, q_mult=2, qk_norm=True)
        if i >= L:  # multi-token-prediction block
            b.t(p + "nextn.eh_proj.weight", 2 * E, E)
            b.t(p + "nextn.enorm.weight", E)
            b.t(p + "nextn.hnorm.weight", E)
            b.t(p + "nextn.shared_head_norm.weight", E)
        if moe:
            b.moe_ffn(p, n_expert, int(b.find("moe_intermediate_size")))
            fs = int(b.find("shared_expert_intermediate_size"))
            b.t(p + "ffn_gate_inp_shexp.weight", E, 1)
            b.t(p + "ffn_gate_shexp.weight", E, fs)
            b.t(p + "ffn_up_shexp.weight", E, fs)
            b.t(p + "ffn_down_shexp.weight", fs, E)
        else:
            b.dense_ffn(p, int(b.find("intermediate_size")))


_BUILDERS: dict[str, Callable[[_Builder], None]] = {
    "llama": _llama, "qwen2": _qwen2, "qwen3": _qwen3, "qwen3moe": _qwen3, "gemma3": _gemma3,
    "gpt-oss": _gpt_oss, "qwen3next": _qwen_hybrid, "qwen35": _qwen_hybrid,
    "qwen35moe": _qwen_hybrid,
}
