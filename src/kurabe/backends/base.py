"""Engines: the servers kurabe talks to, each in its own OS process.

One interface, two implementations: a managed llama.cpp server that kurabe starts and stops,
and an external OpenAI-compatible endpoint that somebody else runs. Nothing outside
``kurabe.client`` knows about HTTP framing; nothing outside this package knows about processes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from kurabe import KurabeError


class EngineError(KurabeError):
    """The engine could not start, or died: the message names the model and the log."""


@dataclass
class Endpoint:
    """Where requests go. The API key lives only in memory."""

    base_url: str  # ends with /v1
    engine_kind: str  # "llama.cpp" or "openai"
    model_id: str | None = None  # the "model" field to send, when the server needs one
    api_key: str | None = field(default=None, repr=False)

    @property
    def server_root(self) -> str:
        return self.base_url.removesuffix("/").removesuffix("/v1")


@dataclass
class EngineInfo:
    """What the store and the report record about an engine (never a secret)."""

    kind: str
    version: str
    command: list[str] | None
    base_url: str
    log_path: str | None = None
    pid: int | None = None


class Engine(Protocol):
    name: str

    def start(self) -> Endpoint: ...

    def stop(self) -> None: ...

    def alive(self) -> bool: ...

    def info(self) -> EngineInfo: ...


def build_engine(model, resolved, log_dir) -> Engine:
    """The engine for one configured model (``kurabe.config.ModelConfig``)."""
    from pathlib import Path

    from kurabe.backends.openai import ExternalEndpoint
    from kurabe.backends.llamacpp import LlamaCppServer

    eng = model.engine
    if model.kind == "endpoint":
        return ExternalEndpoint(model.name, model.source, api_key_env=eng.api_key_env,
                                model_id=eng.model_id)
    return LlamaCppServer(
        model.name, resolved.file_path, server=eng.server, ctx=eng.ctx,
        cache_type_k=eng.cache_type_k, cache_type_v=eng.cache_type_v,
        flash_attn=eng.flash_attn, threads=eng.threads, parallel=eng.parallel, ngl=eng.ngl,
        extra_args=eng.extra_args, chat_template=resolved.chat_template,
        reasoning_format=eng.reasoning_format, reasoning_budget=eng.reasoning_budget,
        log_path=Path(log_dir) / f"{model.name}.log", startup_timeout_s=eng.startup_timeout_s,
    )
