"""A synthetic twin from a model's description: ``make_twin(spec, out, quant=..., sets=...)``.

``spec`` is a ``config.json`` (or its folder), a GGUF file (only its header is read) or
``builtin:NAME``. The header is the one the planner reads (:mod:`kurabe.modelfiles.card`),
the tensor types the ones the planner predicts for the quant
(:func:`kurabe.modelfiles.card.quantized_view`), so a twin's buffers are the plan's.

What-if variants (``sets``) change the config's own keys (``num_experts``,
``num_hidden_layers``, ``layer_types``, ...) in the text model, under ``text_config`` when the
config nests it. A list that follows the layer count (a hybrid's ``layer_types``) is extended
or cut along its repeating pattern when only the count changes, and rebuilt when
``full_attention_interval`` changes. A key that changes nothing in the synthesized model (a
name this architecture does not read) is refused, so an ablation never compares a variant
with itself by mistake.
"""

from __future__ import annotations

import copy
import difflib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kurabe import KurabeError

if TYPE_CHECKING:
    from kurabe.twin import TwinResult

# Keys the config.json reader (kurabe.modelfiles.hf_config) reads, whether a config has them
# or not; with the keys a config does have, these are the names a variant may change.
READ_KEYS = frozenset({
    "attention_bias", "decoder_sparse_step", "final_logit_softcapping",
    "full_attention_interval", "head_dim", "hidden_size", "intermediate_size", "layer_types",
    "linear_conv_kernel_dim", "linear_key_head_dim", "linear_num_key_heads",
    "linear_num_value_heads", "linear_value_head_dim", "max_position_embeddings", "mlp_bias",
    "mlp_only_layers", "moe_intermediate_size", "mtp_num_hidden_layers",
    "num_attention_heads", "num_experts", "num_experts_per_tok", "num_hidden_layers",
    "num_key_value_heads", "num_local_experts", "partial_rotary_factor", "rms_norm_eps",
    "rope_local_base_freq", "rope_parameters", "rope_scaling", "rope_theta",
    "shared_expert_intermediate_size", "sliding_window", "sliding_window_pattern",
    "tie_word_embeddings", "torch_dtype", "vocab_size", "query_pre_attn_scalar",
})
# Keys that say what the model is, not how big: not hyperparameters a variant changes.
_FIXED_KEYS = frozenset({"architectures", "model_type", "text_config", "auto_map",
                         "transformers_version"})
# Two names of one count: a config uses one of them, and a change must use the same one.
_ALIASES = {"num_local_experts": "num_experts", "num_experts": "num_local_experts"}
_GGUF_MAGIC = b"GGUF"


class TwinInputError(KurabeError):
    """Input to :func:`make_twin` it cannot use. ``option`` names the input ("quant", "set",
    "out"), ``value`` the value given (for a change: ``KEY=VALUE``)."""

    def __init__(self, message: str, *, option: str, value: str) -> None:
        super().__init__(message)
        self.option = option
        self.value = value


def parse_value(text: str) -> Any:
    """A change's value: JSON when it parses (256, 1e-6, true, [..]), else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_sets(items: list[str] | tuple[str, ...]) -> dict[str, str]:
    """``["num_experts=256", ...]`` -> ``{"num_experts": "256", ...}``; a KurabeError
    (:class:`TwinInputError`, option "set") for an item without ``=`` or a key given twice."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise TwinInputError(f"expected KEY=VALUE (e.g. num_experts=256), not {item!r}",
                                 option="set", value=item)
        if key in out:
            raise TwinInputError(f"{key} is changed twice ({key}={out[key]} and {item})",
                                 option="set", value=item)
        out[key] = value.strip()
    return out


def _shown(sets: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in sets.items())


def _config_path(spec: str) -> Path | None:
    """The config.json ``spec`` names (a file or a folder holding one), else None."""
    from kurabe.config import source_kind

    if source_kind(spec) != "file":
        return None
    path = Path(spec).expanduser()
    if path.is_dir():
        return path / "config.json" if (path / "config.json").is_file() else None
    if not path.is_file() or path.suffix.lower() != ".json":
        return None
    try:
        with open(path, "rb") as fh:
            if fh.read(4) == _GGUF_MAGIC:
                return None
    except OSError:
        return None
    return path


def _source_name(spec: str, cfg_path: Path | None) -> str:
    """The twin's source as its GGUF records it: a file name (or the model folder's name for
    a plain config.json), never the folders it came from."""
    if cfg_path is not None:
        if cfg_path.name == "config.json":
            return cfg_path.parent.resolve().name or cfg_path.name
        return cfg_path.name
    if spec.startswith("builtin:"):
        return spec
    return Path(spec).name


# --------------------------------------------------------------------------------------------
# What-if changes to a config.json
# --------------------------------------------------------------------------------------------


def _text_model(config: dict[str, Any]) -> dict[str, Any]:
    nested = config.get("text_config")
    return nested if isinstance(nested, dict) else config


def _known_keys(config: dict[str, Any]) -> set[str]:
    text = _text_model(config)
    present = {k for where in (config, text) for k, v in where.items()
               if k not in _FIXED_KEYS and not (k.endswith("_config") and isinstance(v, dict)
                                                and k != "quantization_config")}
    return present | READ_KEYS


def _current(config: dict[str, Any], key: str) -> Any:
    text = _text_model(config)
    return text[key] if key in text else config.get(key)


def _period(items: list[Any]) -> int | None:
    """The shortest p < len(items) with items[i] == items[i % p] for every i, else None."""
    n = len(items)
    for p in range(1, n):
        if all(items[i] == items[i % p] for i in range(n)):
            return p
    return None


def _whole(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def apply_sets(config: dict[str, Any], sets: Mapping[str, Any], origin: str
               ) -> dict[str, Any]:
    """A copy of ``config`` with ``sets`` (parsed values) applied to its text model, the lists
    that follow a changed count re-derived, and the combinations llama.cpp cannot load
    refused. ``origin`` names the config in messages."""
    known = _known_keys(config)
    for key, value in sets.items():
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
            raise TwinInputError(
                f"unknown key {key!r} in {origin}" + (f"; did you mean {close[0]!r}?" if close
                                                      else "; use the config's own key names"),
                option="set", value=_shown({key: value}))
        alias = _ALIASES.get(key)
        if alias and _current(config, key) is None and _current(config, alias) is not None:
            raise TwinInputError(f"{origin} names this count {alias!r}, not {key!r}",
                                 option="set", value=_shown({key: value}))
    out = copy.deepcopy(config)
    text = _text_model(out)
    for key, value in sets.items():
        text[key] = value
    _derive_layer_types(text, sets, origin)
    _check_combination(out, sets, origin)
    return out


def _derive_layer_types(text: dict[str, Any], sets: Mapping[str, Any], origin: str) -> None:
    """A hybrid's ``layer_types`` follows the layer count and the full-attention interval."""
    layer_types = text.get("layer_types")
    if "layer_types" in sets or not isinstance(layer_types, list) or not layer_types:
        return
    n_layers = _whole(text.get("num_hidden_layers"))
    if n_layers is None or n_layers < 1:
        return
    if "full_attention_interval" in sets:
        interval = _whole(sets["full_attention_interval"])
        names = set(layer_types)
        if interval is None or interval < 1 or not names <= {"linear_attention",
                                                             "full_attention"}:
            raise TwinInputError(
                f"{origin}: layer_types ({', '.join(sorted(map(str, names)))}) cannot be "
                f"rebuilt for full_attention_interval {sets['full_attention_interval']!r}; "
                "change layer_types too", option="set",
                value=_shown({"full_attention_interval": sets["full_attention_interval"]}))
        text["layer_types"] = ["full_attention" if (i + 1) % interval == 0
                               else "linear_attention" for i in range(n_layers)]
        return
    if "num_hidden_layers" in sets and len(layer_types) != n_layers:
        period = _period(layer_types)
        if period is None:
            raise TwinInputError(
                f"{origin}: layer_types lists {len(layer_types)} layers with no repeating "
                f"pattern to follow to {n_layers}; change layer_types too", option="set",
                value=_shown({"num_hidden_layers": sets["num_hidden_layers"]}))
        text["layer_types"] = [layer_types[i % period] for i in range(n_layers)]


def _check_combination(config: dict[str, Any], sets: Mapping[str, Any], origin: str) -> None:
    """Refuse, naming the key to change as well, what the changes make inconsistent."""
    hp = dict(config)
    hp.update(_text_model(config))

    def refuse(message: str, *keys: str) -> None:
        given = {k: sets[k] for k in keys if k in sets}
        raise TwinInputError(f"{origin}: {message}", option="set", value=_shown(given))

    layers = _whole(hp.get("num_hidden_layers"))
    layer_types = hp.get("layer_types")
    if layers is not None and isinstance(layer_types, list) and len(layer_types) != layers \
            and ("layer_types" in sets or "num_hidden_layers" in sets):
        other = "num_hidden_layers" if "layer_types" in sets else "layer_types"
        refuse(f"layer_types lists {len(layer_types)} layers but num_hidden_layers is "
               f"{layers}; change {other} too", "layer_types", "num_hidden_layers")
    experts_key = "num_local_experts" if hp.get("num_local_experts") is not None \
        else "num_experts"
    experts, used = _whole(hp.get(experts_key)), _whole(hp.get("num_experts_per_tok"))
    if experts and used is not None and used > experts \
            and (experts_key in sets or "num_experts_per_tok" in sets):
        other = "num_experts_per_tok" if experts_key in sets else experts_key
        refuse(f"num_experts_per_tok ({used}) is more than {experts_key} ({experts}); "
               f"change {other} too", experts_key, "num_experts_per_tok")
    heads, kv = _whole(hp.get("num_attention_heads")), _whole(hp.get("num_key_value_heads"))
    if heads and kv and heads % kv and ("num_attention_heads" in sets
                                        or "num_key_value_heads" in sets):
        other = "num_attention_heads" if "num_key_value_heads" in sets \
            else "num_key_value_heads"
        refuse(f"num_attention_heads ({heads}) is not a multiple of num_key_value_heads "
               f"({kv}); change {other} too", "num_attention_heads", "num_key_value_heads")
    lk, lv = _whole(hp.get("linear_num_key_heads")), _whole(hp.get("linear_num_value_heads"))
    if lk and lv and lv % lk and ("linear_num_key_heads" in sets
                                  or "linear_num_value_heads" in sets):
        refuse(f"linear_num_value_heads ({lv}) is not a multiple of linear_num_key_heads "
               f"({lk}); change the other one too", "linear_num_key_heads",
               "linear_num_value_heads")


def _signature(header: Any) -> tuple[Any, ...]:
    return (header.metadata, [(t.name, tuple(t.shape), t.ggml_type) for t in header.tensors])


def _check_each_change_counts(cfg_path: Path, config: dict[str, Any],
                              sets: Mapping[str, Any], changed: Any, dtype: str | None) -> None:
    """Every change of a value must change the synthesized model: a key this architecture
    does not read (num_experts where the config says num_local_experts) is refused."""
    from kurabe.modelfiles.hf_config import HFConfigError, read_hf_config

    whole = _signature(changed)
    for key, value in sets.items():
        if _current(config, key) == value:
            continue  # the value it already has: nothing to change
        others = {k: v for k, v in sets.items() if k != key}
        try:
            without = read_hf_config(cfg_path, dtype=dtype,
                                     config=_apply_quietly(config, others))
        except (HFConfigError, TwinInputError):
            continue  # the model is not even valid without it: it matters
        if _signature(without) == whole:
            present = sorted(k for k in _known_keys(config) - READ_KEYS if k != key)
            close = difflib.get_close_matches(key, present, n=1, cutoff=0.5)
            raise TwinInputError(
                f"{key} changes nothing in the {changed.architecture} model built from "
                f"{cfg_path.name}" + (f"; this config names it {close[0]!r}" if close else
                                      f" ({changed.architecture} does not read it)"),
                option="set", value=_shown({key: value}))


def _apply_quietly(config: dict[str, Any], sets: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(config)
    text = _text_model(out)
    for k, v in sets.items():
        text[k] = v
    _derive_layer_types(text, sets, "")
    return out


# --------------------------------------------------------------------------------------------
# The twin
# --------------------------------------------------------------------------------------------


def twin_header(spec: str, *, quant: str | None = None, sets: Mapping[str, str] = {}
                ) -> tuple[Any, Path | None]:
    """The header a twin copies: ``spec``'s (a GGUF header, or the one synthesized from its
    config.json with ``sets`` applied), and the config.json it came from (None for a GGUF).
    A config.json without ``quant`` is synthesized at F16."""
    from kurabe.modelfiles.card import load_model_header
    from kurabe.modelfiles.hf_config import HFConfigError, read_hf_config

    cfg_path = _config_path(spec)
    if cfg_path is None:
        if sets:
            first = next(iter(sets.items()))
            raise TwinInputError(
                f"{spec} is a GGUF model, whose layout is copied as it is; what-if changes "
                "need the model's config.json", option="set", value=f"{first[0]}={first[1]}")
        header, _kind = load_model_header(spec)
        return header, None
    dtype = None if quant else "F16"
    header = read_hf_config(cfg_path, dtype=dtype)  # the config as it is must be readable
    if not sets:
        return header, cfg_path
    config = json.loads(cfg_path.read_text(encoding="utf-8"))
    parsed = {k: parse_value(v) for k, v in sets.items()}
    changed_config = apply_sets(config, parsed, str(cfg_path))
    try:
        changed = read_hf_config(cfg_path, dtype=dtype, config=changed_config)
    except HFConfigError as exc:
        raise TwinInputError(f"{exc} (after the changes)", option="set",
                             value=_shown(parsed)) from None
    _check_each_change_counts(cfg_path, config, parsed, changed, dtype)
    return changed, cfg_path


def _check_out(out: Path) -> None:
    if out.is_dir():
        raise TwinInputError(f"{out}: is a folder; give the GGUF file to write",
                             option="out", value=str(out))
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise TwinInputError(f"{out}: the folder {parent} does not exist", option="out",
                             value=str(out))
    if not os.access(parent, os.W_OK | os.X_OK) or (out.exists()
                                                    and not os.access(out, os.W_OK)):
        raise TwinInputError(f"{out}: cannot write there (permission denied)", option="out",
                             value=str(out))


def _file_type(ftype: str) -> int | None:
    """llama.cpp's general.file_type for a quant name (what llama-quantize writes)."""
    try:
        import gguf

        return int(gguf.LlamaFileType["MOSTLY_" + ftype].value)
    except (ImportError, KeyError):
        return None


def make_twin(spec: str, out: Path, *, quant: str | None, sets: Mapping[str, str] = {},
              progress: Callable[[int, int], None] | None = None, seed: int = 0
              ) -> TwinResult:
    """Write a random-weight twin of ``spec`` to ``out``.

    ``spec``: a config.json, its folder, a .gguf (header only) or ``builtin:NAME``.
    ``quant``: the llama-quantize type whose per-tensor types the twin gets (the planner's
    prediction); None keeps a GGUF's own types and makes a config.json's twin F16. ``sets``:
    what-if changes to the config's keys (``{"num_experts": "256"}``; values are JSON when
    they parse). The GGUF records the source's file name, the quant and the changes
    (``kurabe.twin.source``, ``kurabe.twin.quant``, ``kurabe.twin.sets``)."""
    from kurabe.modelfiles.card import quantized_view
    from kurabe.simulator.quantize import QUANT_TYPES
    from kurabe.twin import write_twin

    key = None
    if quant is not None:
        key = quant.strip().upper().removeprefix("MOSTLY_")
        if key not in QUANT_TYPES:
            close = difflib.get_close_matches(key, QUANT_TYPES, n=1, cutoff=0.6)
            raise TwinInputError(
                f"unknown quant type {quant!r}" + (f"; did you mean {close[0]}?" if close else "")
                + f" (one of {', '.join(QUANT_TYPES)})", option="quant", value=quant)
    out = Path(out)
    _check_out(out)
    header, cfg_path = twin_header(spec, quant=key, sets=sets)
    types: dict[str, int] | None = None
    if key is not None:
        view, _prediction = quantized_view(header, key)
        types = {t.name: int(t.ggml_type) for t in view.tensors}
        file_type = _file_type(key)
        if file_type is not None:
            header.metadata = {**header.metadata, "general.file_type": file_type}
    quant_name = key or getattr(header, "file_type_name", None) or "F16"
    parsed = {k: parse_value(v) for k, v in sets.items()}
    marks = {"kurabe.twin.source": _source_name(spec, cfg_path),
             "kurabe.twin.quant": quant_name,
             "kurabe.twin.sets": json.dumps(parsed, ensure_ascii=False)}
    return write_twin(header, out, types=types, chat_template=_own_chat_template(
        spec, header, cfg_path), marks=marks, progress=progress, seed=seed)


def _own_chat_template(spec: str, header: Any, cfg_path: Path | None) -> str | None:
    """The chat template the real model is served with: for ``builtin:NAME`` the one kurabe
    supplies (Gemma's turn format), for a config.json its folder's ``chat_template.jinja``
    or ``tokenizer_config.json``, else the GGUF's own. None when the model has none (the
    twin then gets a ChatML one)."""
    if cfg_path is not None:
        from kurabe.modelfiles.hf_config import _chat_template

        return _chat_template(cfg_path.parent) or None
    if spec.startswith("builtin:"):
        from kurabe.modelfiles.builtin import builtin_model

        supplied = builtin_model(spec).chat_template
        if supplied:
            return supplied
    own = getattr(header, "metadata", {}).get("tokenizer.chat_template")
    return own if isinstance(own, str) and own else None
