"""Ollama's OpenAI-compatible endpoint (``/v1``), with Ollama's own thinking switch."""

from __future__ import annotations

from typing import Any

import httpx

from kurabe.backends.base import register
from kurabe.backends.openai import OpenAIEndpoint, probe_json


@register
class OllamaEndpoint(OpenAIEndpoint):
    kind = "ollama"
    label = "ollama"

    @classmethod
    def probe(cls, http: httpx.Client, root: str) -> str | None:
        """Ollama answers /api/version with {"version": "0.x.y"}; anything else is not it."""
        answer = probe_json(http, f"{root}/api/version")
        version = answer.get("version") if isinstance(answer, dict) else None
        if isinstance(version, str) and version:
            return f"ollama {version}"
        return None

    @classmethod
    def reasoning_fields(cls, setting: str | int | None) -> dict[str, Any]:
        body = super().reasoning_fields(setting)
        if setting is not None:
            # Ollama's own switch: false/true, or an effort level for models that take one.
            body["think"] = {"off": False, "unlimited": True}.get(str(setting), setting)
        return body
