"""Prompt sets: the built-in ones shipped as package data, or a user's TOML file."""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path

from pydantic import ValidationError

from kurabe import KurabeError
from kurabe.config import PromptConfig, format_validation_error

BUILTIN_SETS = {"speed": "speed_prompts.toml"}


def load_prompt_set(spec: str) -> list[PromptConfig]:
    """``builtin:speed`` or a path to a TOML file with ``[[prompts]]`` tables."""
    if spec.startswith("builtin:"):
        key = spec.removeprefix("builtin:")
        if key not in BUILTIN_SETS:
            raise KurabeError(f"unknown prompt set '{spec}' (known: "
                              + ", ".join(f"builtin:{k}" for k in BUILTIN_SETS) + ")")
        text = resources.files("kurabe.data").joinpath(BUILTIN_SETS[key]).read_text("utf-8")
        origin = spec
    else:
        path = Path(spec)
        try:
            text = path.read_text("utf-8")
        except OSError as exc:
            raise KurabeError(f"{path}: cannot read prompt set: {exc.strerror}") from None
        origin = str(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise KurabeError(f"{origin}: not valid TOML: {exc}") from None
    try:
        prompts = [PromptConfig.model_validate(p) for p in data.get("prompts", [])]
    except ValidationError as exc:
        raise KurabeError(format_validation_error(exc, origin)) from None
    if not prompts:
        raise KurabeError(f"{origin}: no [[prompts]] found")
    return prompts
