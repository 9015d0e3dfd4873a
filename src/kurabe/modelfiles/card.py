"""The model card: what a model is, read off its GGUF header or its Hugging Face config.

Everything the card shows comes from the file (never from the model's name): parameters
counted from the tensor list, experts and the layer layout from the metadata via
``kurabe.simulator.layout``, the quant mix from the tensor types.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from kurabe import KurabeError
from kurabe.modelfiles.gguf_header import MAGIC, SkippedArray, read_header
from kurabe.simulator.layout import derive_layout
from kurabe.thinking import has_thinking_markers


def load_model_header(spec: str | Path):
    """A GGUF file (header only), a config.json or a folder holding one, or builtin:NAME."""
    from kurabe.config import source_kind

    text = str(spec)
    kind = source_kind(text)
    if kind == "builtin":
        from kurabe.modelfiles.builtin import builtin_path

        return read_header(builtin_path(text)), "gguf"
    if kind in ("endpoint", "scripted"):
        raise KurabeError(f"{text}: a served model has no file to read; give its GGUF file, "
                          "its config.json or builtin:NAME")
    path = Path(text).expanduser()
    if path.is_dir():
        if (path / "config.json").is_file():
            from kurabe.modelfiles.hf_config import read_hf_config

            return read_hf_config(path), "hf-config"
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return read_header(ggufs[0]), "gguf"
        raise KurabeError(f"{path}: a folder without config.json or a single .gguf file")
    if not path.exists():
        raise KurabeError(f"{path}: no such file")
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic == MAGIC:
        return read_header(path), "gguf"
    if path.suffix == ".json":
        from kurabe.modelfiles.hf_config import read_hf_config

        return read_hf_config(path), "hf-config"
    return read_header(path), "gguf"  # gives the one-line "not a GGUF file" error


def _type_name(ggml_type: int | str) -> str:
    if isinstance(ggml_type, str):
        return ggml_type
    try:
        import gguf

        return gguf.GGMLQuantizationType(ggml_type).name
    except (ImportError, ValueError):
        return f"type {ggml_type}"


def _tensor_bytes(shape, ggml_type) -> int:
    from kurabe.simulator.memory import tensor_bytes

    return tensor_bytes(shape, ggml_type)


def _elements(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _base_models(md: dict[str, Any]) -> list[dict[str, Any]]:
    count = md.get("general.base_model.count") or 0
    out = []
    for i in range(int(count)):
        prefix = f"general.base_model.{i}."
        entry = {k.removeprefix(prefix): v for k, v in md.items() if k.startswith(prefix)}
        if entry:
            out.append(entry)
    return out


@dataclass
class ModelCard:
    source: str
    source_kind: str  # gguf | hf-config
    name: str | None
    architecture: str
    known_architecture: bool
    params_total: int
    params_active: int
    n_layers: int
    n_embd: int
    n_head: int | None
    n_head_kv: int | list[int] | None
    head_dim_k: int | None
    head_dim_v: int | None
    n_experts: int | None
    n_experts_used: int | None
    n_experts_shared: int | None
    expert_activation_rate: float | None
    attention_layers: list[int]
    swa_layers: list[int]
    recurrent_layers: list[int]
    swa_window: int | None
    context_length: int | None
    vocab_size: int | None
    tokenizer: str | None
    chat_template: bool
    thinking_markers: bool
    quant: str | None
    quant_mix_bytes: dict[str, int]
    license: str | None
    base_models: list[dict[str, Any]]
    file_bytes: int | None
    unknown: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # A synthetic twin (random weights, kurabe.twin): source (file name), quant and the
    # what-if changes (key -> value) its GGUF records; None for a real model.
    twin: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def twin_marks(header) -> dict[str, Any] | None:
    """What a synthetic twin's GGUF records about it (``source``, ``quant``, ``sets``), or
    None when the model is not a twin."""
    from kurabe.twin import is_twin

    if not is_twin(header):
        return None
    md = header.metadata
    sets: Any = md.get("kurabe.twin.sets")
    if isinstance(sets, str):
        try:
            sets = json.loads(sets)
        except ValueError:
            pass
    source, quant = md.get("kurabe.twin.source"), md.get("kurabe.twin.quant")
    return {"source": source if isinstance(source, str) else None,
            "quant": quant if isinstance(quant, str) else None,
            "sets": sets if isinstance(sets, dict) else {}}


def twin_text(twin: dict[str, Any]) -> str:
    """'twin of qwen3.5.config.json at Q4_K_M (random weights), with num_experts=128'."""
    text = f"twin of {twin.get('source') or 'an unnamed model'}"
    if twin.get("quant"):
        text += f" at {twin['quant']}"
    text += " (random weights)"
    sets = twin.get("sets") or {}
    if sets:
        text += ", with " + " ".join(
            f"{k}={v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)}"
            for k, v in sets.items())
    return text


def model_card(header, source: str, source_kind: str) -> ModelCard:
    md = header.metadata
    arch = md.get("general.architecture") or "unknown"
    names = {t.name for t in header.tensors}
    layout = derive_layout(md, names)
    total = active = 0
    mix: dict[str, int] = {}
    exps_elements = 0
    for t in header.tensors:
        n = _elements(t.shape)
        total += n
        if "_exps" in t.name and "shexp" not in t.name:
            exps_elements += n
        name = _type_name(t.ggml_type)
        mix[name] = mix.get(name, 0) + _tensor_bytes(t.shape, t.ggml_type)
    experts = layout.experts
    notes = list(layout.notes)
    if experts and experts.n_expert:
        # Per token only n_expert_used of n_expert routed experts run; shared parts always do.
        active = total - exps_elements + exps_elements * experts.n_expert_used // experts.n_expert
    else:
        active = total
    trunk = layout.trunk
    heads_kv = [ly.n_head_kv for ly in trunk]
    kv_value: int | list[int] | None = None
    if heads_kv:
        kv_value = heads_kv[0] if len(set(heads_kv)) == 1 else heads_kv
    attn = [ly for ly in trunk if ly.has_kv]
    template = md.get("tokenizer.chat_template")
    tokens = md.get("tokenizer.ggml.tokens")
    vocab = (tokens.length if isinstance(tokens, SkippedArray) else
             len(tokens) if isinstance(tokens, list) else None) or layout.n_vocab or None
    file_type = getattr(header, "file_type_name", None)
    return ModelCard(
        source=source, source_kind=source_kind, name=md.get("general.name"), architecture=arch,
        known_architecture=layout.known_arch, params_total=total, params_active=active,
        n_layers=layout.n_layer, n_embd=layout.n_embd,
        n_head=trunk[0].n_head if trunk else None, n_head_kv=kv_value,
        head_dim_k=attn[0].head_dim_k if attn else None,
        head_dim_v=attn[0].head_dim_v if attn else None,
        n_experts=experts.n_expert if experts else None,
        n_experts_used=experts.n_expert_used if experts else None,
        n_experts_shared=experts.n_expert_shared if experts else None,
        expert_activation_rate=(experts.n_expert_used / experts.n_expert
                                if experts and experts.n_expert else None),
        attention_layers=layout.full_layers, swa_layers=layout.swa_layers,
        recurrent_layers=layout.recurrent_layers,
        swa_window=layout.sliding_window.window_tokens if layout.sliding_window else None,
        context_length=layout.n_ctx_train_tokens or None, vocab_size=vocab,
        tokenizer=md.get("tokenizer.ggml.model"), chat_template=bool(template),
        thinking_markers=has_thinking_markers(template),
        quant=file_type if source_kind == "gguf" else None,
        quant_mix_bytes=dict(sorted(mix.items(), key=lambda kv: -kv[1])),
        license=md.get("general.license"), base_models=_base_models(md),
        file_bytes=getattr(header, "file_bytes", None), unknown=list(layout.unknown), notes=notes,
        twin=twin_marks(header),
    )


def quantized_view(header, ftype: str):
    """The header llama-quantize would write for ``ftype`` (types per tensor), for planning."""
    from kurabe.modelfiles.gguf_header import TensorInfo
    from kurabe.simulator.quantize import ggml_type, predict_quant

    prediction = predict_quant(header, ftype)
    # TensorInfo holds the type id, as a GGUF file does (the prediction names the type).
    tensors = [TensorInfo(t.name, tuple(t.shape), ggml_type(t.type).id, 0)
               for t in prediction.tensors]
    view = SimpleNamespace(metadata=dict(header.metadata), tensors=tensors,
                           file_bytes=prediction.file_bytes)
    return view, prediction


def card_text(card: ModelCard) -> list[tuple[str, str]]:
    """Rows for a terminal or Markdown table."""
    def num(n):
        return "–" if n is None else (f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.1f} M")

    rows = [("twin", twin_text(card.twin))] if card.twin else []
    rows += [("architecture", card.architecture + ("" if card.known_architecture else " (unknown to kurabe: generic fields only)")),
            ("name", card.name or "–"),
            ("parameters", f"{num(card.params_total)} total, {num(card.params_active)} active per token")]
    if card.n_experts:
        rows.append(("experts", f"{card.n_experts} routed, {card.n_experts_used} active"
                     + (f", {card.n_experts_shared} shared" if card.n_experts_shared else "")
                     + f" ({card.expert_activation_rate:.1%} activation)"))
    rows += [("layers", f"{card.n_layers}: {len(card.attention_layers)} full attention, "
              f"{len(card.swa_layers)} sliding window"
              + (f" ({card.swa_window} tokens)" if card.swa_window else "")
              + f", {len(card.recurrent_layers)} recurrent / linear attention"),
             ("hidden size", str(card.n_embd)),
             ("heads", f"{card.n_head} query, {card.n_head_kv} KV, head dim "
              f"{card.head_dim_k}/{card.head_dim_v}"),
             ("trained context", f"{card.context_length:,}" if card.context_length else "–"),
             ("vocabulary", f"{card.vocab_size:,} ({card.tokenizer or '?'})" if card.vocab_size else "–"),
             ("chat template", ("yes" if card.chat_template else "no")
              + (", with thinking markers" if card.thinking_markers else "")),
             ("quant", card.quant or "–"),
             ("quant mix", ", ".join(f"{k} {v / 2**20:,.1f} MiB" for k, v in card.quant_mix_bytes.items())),
             ("license", card.license or "–"),
             ("base model", "; ".join(json.dumps(b, ensure_ascii=False) for b in card.base_models) or "–"),
             ("file size", f"{card.file_bytes:,} bytes" if card.file_bytes else "–")]
    if card.unknown:
        rows.append(("could not read", ", ".join(card.unknown)))
    return rows
