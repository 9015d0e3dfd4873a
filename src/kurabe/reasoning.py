"""Reasoning control: what to send so a model thinks less, more, or not at all.

A setting is ``off``, ``low``, ``medium``, ``high``, ``unlimited`` or a token budget (an
integer). Each engine hears it its own way: chat-template switches
(``chat_template_kwargs.enable_thinking`` for Qwen-style templates, ``reasoning_effort`` for
gpt-oss-style ones), llama.cpp's per-request ``reasoning_budget_tokens``, and the
OpenAI-style top-level ``reasoning_effort`` that vLLM's and Ollama's endpoints accept, and
Ollama's ``think``.
"""

from __future__ import annotations

from typing import Any

from kurabe import KurabeError

EFFORTS = ("low", "medium", "high")
NAMED = ("off", *EFFORTS, "unlimited")


def parse_setting(value: str | int) -> str | int:
    if isinstance(value, bool):
        raise KurabeError(f"reasoning setting {value!r}: use one of {', '.join(NAMED)} or a token budget")
    if isinstance(value, int):
        if value < 0:
            raise KurabeError(f"reasoning budget {value}: must be ≥ 0 tokens")
        return value
    text = str(value).strip().lower()
    if text.isdigit():
        return int(text)
    if text not in NAMED:
        raise KurabeError(f"reasoning setting {value!r}: use one of {', '.join(NAMED)} or a token budget")
    return text


def setting_label(value: str | int) -> str:
    return f"budget {value}" if isinstance(value, int) else str(value)


def request_fields(setting: str | int | None, engine_kind: str) -> dict[str, Any]:
    """Request-body fields that apply ``setting`` on an engine of ``engine_kind``."""
    if setting is None:
        return {}
    setting = parse_setting(setting)
    kwargs: dict[str, Any] = {}
    body: dict[str, Any] = {}
    if setting == "off":
        kwargs["enable_thinking"] = False
        if engine_kind == "llama.cpp":
            body["reasoning_budget_tokens"] = 0
        else:
            body["reasoning_effort"] = "none"
    elif setting == "unlimited":
        kwargs["enable_thinking"] = True
        if engine_kind == "llama.cpp":
            body["reasoning_budget_tokens"] = -1
    elif isinstance(setting, int):
        kwargs["enable_thinking"] = setting > 0
        if engine_kind == "llama.cpp":
            body["reasoning_budget_tokens"] = setting
        else:
            # No portable per-request token budget elsewhere: say so rather than pretend.
            raise KurabeError(
                f"a reasoning token budget ({setting}) needs a llama.cpp engine; "
                "use off/low/medium/high/unlimited for this endpoint")
    else:  # low / medium / high
        kwargs["enable_thinking"] = True
        kwargs["reasoning_effort"] = setting
        body["reasoning_effort"] = setting
    body["chat_template_kwargs"] = kwargs
    if engine_kind == "ollama":
        # Ollama's own switch: false/true, or an effort level for models that take one.
        body["think"] = {"off": False, "unlimited": True}.get(setting, setting)
    return body
