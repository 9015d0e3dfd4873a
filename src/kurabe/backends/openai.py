"""An OpenAI-compatible endpoint run by someone else (vLLM, SGLang, LM Studio, any server).

The plain dialect: what every OpenAI-compatible server accepts. Servers with their own
extras (llama-server, Ollama) subclass it in their own modules and say how to recognise
them (``probe``), so an endpoint URL alone is enough to pick the right dialect.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from kurabe.backends.base import Backend, EngineError, register
from kurabe.records import Endpoint, EngineInfo

if TYPE_CHECKING:
    from kurabe.config import ModelConfig
    from kurabe.modelfiles.resolve import ResolvedModel

PROBE_TIMEOUT_S = 5.0


def _base_url(url: str) -> str:
    url = url.rstrip("/")
    return url if url.endswith("/v1") else url + "/v1"


def detect_kind(model: ModelConfig, candidates: list[type[Backend]]) -> str:
    """The kind of server at ``model.source``: the first candidate whose probe recognises
    it, else plain "openai" (an unreachable server is reported by ``start``)."""
    root = _base_url(model.source).removesuffix("/v1")
    key = os.environ.get(model.engine.api_key_env) if model.engine.api_key_env else None
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        with httpx.Client(timeout=PROBE_TIMEOUT_S, headers=headers) as http:
            for cls in candidates:
                if cls.probe(http, root) is not None:  # type: ignore[attr-defined]
                    return cls.kind
    except httpx.HTTPError:
        pass
    return "openai"


@register
class OpenAIEndpoint(Backend):
    kind = "openai"
    label = "OpenAI-compatible"

    def __init__(self, name: str, base_url: str, *, api_key_env: str | None = None,
                 model_id: str | None = None) -> None:
        self.name = name
        self.base_url = _base_url(base_url)
        self.api_key_env = api_key_env
        self.model_id = model_id
        self._version = "unknown"
        self._api_key: str | None = None

    @classmethod
    def from_config(cls, model: ModelConfig, resolved: ResolvedModel, log_dir: Path
                    ) -> OpenAIEndpoint:
        return cls(model.name, model.source, api_key_env=model.engine.api_key_env,
                   model_id=model.engine.model_id)

    @classmethod
    def probe(cls, http: httpx.Client, root: str) -> str | None:
        """The server's version when the server at ``root`` is of this kind, else None."""
        return None

    def _read_api_key(self) -> str | None:
        if not self.api_key_env:
            return None
        value = os.environ.get(self.api_key_env)
        if not value:
            raise EngineError(
                f"model '{self.name}': api_key_env names ${self.api_key_env}, which is not set"
            )
        return value

    def start(self) -> Endpoint:
        key = self._read_api_key()
        self._api_key = key
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        root = self.base_url.removesuffix("/v1")
        try:
            with httpx.Client(timeout=10.0, headers=headers) as client:
                models = client.get(f"{self.base_url}/models")
                if models.status_code in (401, 403):
                    raise EngineError(
                        f"model '{self.name}': {self.base_url} refused the API key "
                        f"(HTTP {models.status_code})"
                    )
                models.raise_for_status()
                data = models.json().get("data") or []
                if self.model_id is None and data:
                    self.model_id = data[0].get("id")
                self._version = self.probe(client, root) or self._version
        except httpx.HTTPError as exc:
            raise EngineError(f"model '{self.name}': cannot reach {self.base_url}: {exc}") from exc
        return self.endpoint

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint(base_url=self.base_url, model_id=self.model_id, api_key=self._api_key)

    def info(self) -> EngineInfo:
        return EngineInfo(kind=f"external ({self.label})", version=self._version,
                          command=None, base_url=self.base_url)
