"""The backend interface and the registry of backends by name.

A backend is one model's server: its lifecycle (start, stop, alive, version, log) and its
dialect (the request-body fields it needs, how it hears a reasoning setting, how it takes a
JSON schema, how it counts tokens). Everything engine-specific lives in the backend's own
module; the client, the phases and the judge ask the backend and never test engine names.

Backends register by name (``@register``). Built-in ones are imported on first use; other
packages add theirs through the ``kurabe.backends`` entry-point group.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from kurabe import KurabeError
from kurabe.records import ChatRequest, Endpoint, EngineInfo, StreamRecord

if TYPE_CHECKING:
    from collections.abc import Callable

    import httpx

    from kurabe.config import ModelConfig
    from kurabe.modelfiles.resolve import ResolvedModel


class EngineError(KurabeError):
    """The engine could not start, or died: the message names the model and the log."""


class Backend(ABC):
    """One model's server as kurabe sees it. Subclasses set ``kind`` (the registry name)."""

    kind: ClassVar[str]
    name: str
    #: Called with (pid, argv) as soon as ``start`` has spawned a process, before it is
    #: ready, so the run can record it (``kurabe.processes``); set by the orchestrator.
    on_spawn: Callable[[int, list[str]], None] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    @classmethod
    @abstractmethod
    def from_config(cls, model: ModelConfig, resolved: ResolvedModel, log_dir: Path) -> Backend:
        """The backend for one configured model (``log_dir``: the run's engines/ folder)."""

    @abstractmethod
    def start(self) -> Endpoint:
        """Make the server ready (start it, or check that it answers) and say where it is."""

    def stop(self) -> None:  # noqa: B027 (optional: most backends start nothing)
        """Stop what ``start`` started; safe to call twice or before ``start``."""

    def alive(self) -> bool:
        return True

    @abstractmethod
    def info(self) -> EngineInfo: ...

    @property
    @abstractmethod
    def endpoint(self) -> Endpoint: ...

    @property
    def pid(self) -> int | None:
        """The engine's process id when kurabe started one."""
        return None

    def transport(self) -> httpx.AsyncBaseTransport | None:
        """An in-process transport for the client (scripted backends); None: the network."""
        return None

    # -- dialect: OpenAI-compatible defaults -----------------------------------------------

    def request_body(self, req: ChatRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "messages": req.messages,
            "max_tokens": req.max_tokens,
            "temperature": req.temperature,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if self.endpoint.model_id:
            body["model"] = self.endpoint.model_id
        if req.seed is not None:
            body["seed"] = req.seed
        if req.fixed_length:
            body["ignore_eos"] = True  # llama.cpp and vLLM honour it
        body.update(req.extra_body)
        return body

    @classmethod
    def reasoning_fields(cls, setting: str | int | None) -> dict[str, Any]:
        """Request-body fields that apply a reasoning setting (``kurabe.config`` parses it):
        the chat-template switches and the OpenAI-style top-level ``reasoning_effort``."""
        if setting is None:
            return {}
        kwargs: dict[str, Any] = {}
        body: dict[str, Any] = {}
        if setting == "off":
            kwargs["enable_thinking"] = False
            body["reasoning_effort"] = "none"
        elif setting == "unlimited":
            kwargs["enable_thinking"] = True
        elif isinstance(setting, int):
            # No portable per-request token budget: say so rather than pretend.
            raise KurabeError(
                f"a reasoning token budget ({setting}) needs a llama.cpp engine; "
                "use off/low/medium/high/unlimited for this endpoint")
        else:  # low / medium / high
            kwargs["enable_thinking"] = True
            kwargs["reasoning_effort"] = setting
            body["reasoning_effort"] = setting
        body["chat_template_kwargs"] = kwargs
        return body

    @classmethod
    def structured_output(cls, schema: dict[str, Any]) -> dict[str, Any]:
        """Fields that constrain the answer to ``schema`` (OpenAI's json_schema format)."""
        return {"response_format": {"type": "json_schema",
                                    "json_schema": {"name": "verdict", "schema": schema,
                                                    "strict": True}}}

    @classmethod
    def refused_structured_output(cls, record: StreamRecord) -> bool:
        """Did the server reject the structured-output fields (so the caller asks again
        without them)?"""
        return bool(record.error) and record.http_status in (400, 422) and any(
            word in (record.error or "").lower()
            for word in ("response_format", "json_schema", "schema", "grammar"))

    async def count_tokens(self, http: httpx.AsyncClient, text: str) -> int | None:
        """Tokens of ``text`` by the model's own tokenizer, when the server can say."""
        return None

    async def count_prompt_tokens(self, http: httpx.AsyncClient,
                                  messages: list[dict[str, str]]) -> int | None:
        """Tokens of the prompt ``messages`` become (chat template applied), by the model's
        own tokenizer, when the server can say."""
        return None

    async def context_size(self, http: httpx.AsyncClient) -> int | None:
        """Tokens one request may hold (prompt and answer), when the server can say."""
        return None


# -- registry ------------------------------------------------------------------------------

_REGISTRY: dict[str, type[Backend]] = {}
_BUILT_IN = ("kurabe.backends.llamacpp", "kurabe.backends.openai", "kurabe.backends.ollama",
             "kurabe.backends.scripted")
_loaded = False


def register(cls: type[Backend]) -> type[Backend]:
    """Class decorator: make a backend available by its ``kind``."""
    _REGISTRY[cls.kind] = cls
    return cls


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in _BUILT_IN:
        importlib.import_module(module)
    from importlib.metadata import entry_points

    for ep in entry_points(group="kurabe.backends"):
        ep.load()


def known_backends() -> list[str]:
    _load()
    return sorted(_REGISTRY)


def backend_class(kind: str) -> type[Backend]:
    _load()
    try:
        return _REGISTRY[kind]
    except KeyError:
        raise KurabeError(f"unknown backend '{kind}' (known: {', '.join(known_backends())})"
                          ) from None


def default_kind(model: ModelConfig) -> str:
    """The backend a model gets unless its config names one."""
    if model.engine.backend:
        return model.engine.backend
    return {"builtin": "llama.cpp", "file": "llama.cpp", "scripted": "scripted"}.get(
        model.kind, "auto")


def create_backend(model: ModelConfig, resolved: ResolvedModel, log_dir: Path) -> Backend:
    """The backend for one configured model. An endpoint whose backend is not named ("auto")
    is asked which server it is: each registered backend with a ``probe`` gets to say."""
    kind = default_kind(model)
    if kind == "auto":
        from kurabe.backends.openai import detect_kind

        _load()
        kind = detect_kind(model, [cls for cls in _REGISTRY.values() if hasattr(cls, "probe")])
    return backend_class(kind).from_config(model, resolved, Path(log_dir))
