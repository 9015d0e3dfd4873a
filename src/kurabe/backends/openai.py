"""An OpenAI-compatible endpoint run by someone else (llama-server, vLLM, SGLang, Ollama, LM Studio)."""

from __future__ import annotations

import os

import httpx

from kurabe.backends.base import Endpoint, EngineError, EngineInfo


class ExternalEndpoint:
    def __init__(self, name: str, base_url: str, *, api_key_env: str | None = None,
                 model_id: str | None = None) -> None:
        self.name = name
        url = base_url.rstrip("/")
        self.base_url = url if url.endswith("/v1") else url + "/v1"
        self.api_key_env = api_key_env
        self.model_id = model_id
        self._version = "unknown"
        self._kind = "openai"

    def _api_key(self) -> str | None:
        if not self.api_key_env:
            return None
        value = os.environ.get(self.api_key_env)
        if not value:
            raise EngineError(
                f"model '{self.name}': api_key_env names ${self.api_key_env}, which is not set"
            )
        return value

    def start(self) -> Endpoint:
        key = self._api_key()
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
                # llama-server answers /props with its build, Ollama /api/version; others
                # have neither and are spoken to as plain OpenAI-compatible servers.
                props = client.get(f"{root}/props")
                if props.status_code == 200 and "build_info" in props.text:
                    self._kind = "llama.cpp"
                    self._version = str(props.json().get("build_info"))
                else:
                    version = client.get(f"{root}/api/version")
                    if version.status_code == 200 and "version" in version.text:
                        self._kind = "ollama"
                        self._version = f"ollama {version.json().get('version')}"
        except httpx.HTTPError as exc:
            raise EngineError(f"model '{self.name}': cannot reach {self.base_url}: {exc}") from exc
        return Endpoint(base_url=self.base_url, engine_kind=self._kind,
                        model_id=self.model_id, api_key=key)

    def stop(self) -> None:  # not ours to stop
        return None

    def alive(self) -> bool:
        return True

    def info(self) -> EngineInfo:
        return EngineInfo(kind=f"external ({self._kind})", version=self._version, command=None,
                          base_url=self.base_url)
