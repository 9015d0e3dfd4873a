"""An OpenAI-compatible endpoint run by someone else (vLLM, SGLang, LM Studio, any server).

The plain dialect: what every OpenAI-compatible server accepts. Servers with their own
extras (llama-server, Ollama) subclass it in their own modules and say how to recognise
them (``probe``), so an endpoint URL alone is enough to pick the right dialect.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from kurabe.backends.base import Backend, EngineError, register
from kurabe.records import Endpoint, EngineInfo
from kurabe.redact import redact

if TYPE_CHECKING:
    from kurabe.config import ModelConfig
    from kurabe.modelfiles.resolve import ResolvedModel

PROBE_TIMEOUT_S = 5.0
# The most kurabe reads of an answer to /v1/models or a probe: a list of models is a few KiB.
MAX_PROBE_BYTES = 1 << 20


def _base_url(url: str) -> str:
    url = url.rstrip("/")
    return url if url.endswith("/v1") else url + "/v1"


def _one_line(text: str, limit: int = 200) -> str:
    """Outside text fit for one line of a message: printable, collapsed, cut."""
    text = "".join(c if c.isprintable() else " " for c in text)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def read_limited(http: httpx.Client, url: str, limit: int = MAX_PROBE_BYTES,
                 deadline_s: float = 30.0) -> tuple[int, bytes]:
    """(status, the body) of a GET: at most ``limit`` + 1 bytes (more means too long),
    within ``deadline_s`` in all (a server that trickles bytes does not hold kurabe).
    Raises httpx.HTTPError (httpx.ReadTimeout past the deadline)."""
    deadline = time.monotonic() + deadline_s
    with http.stream("GET", url) as resp:
        body = bytearray()
        for part in resp.iter_bytes():
            body += part
            if len(body) > limit:
                break
            if time.monotonic() > deadline:
                raise httpx.ReadTimeout(f"no whole answer within {deadline_s:g} s")
        return resp.status_code, bytes(body[:limit + 1])


def probe_json(http: httpx.Client, url: str) -> Any:
    """The JSON a probe URL answers with HTTP 200, or None for anything else (an error
    status, a body that is not UTF-8 JSON, or one over ``MAX_PROBE_BYTES``). Raises
    httpx.HTTPError when the server cannot be reached."""
    status, body = read_limited(http, url)
    if status != 200 or len(body) > MAX_PROBE_BYTES:
        return None
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None


def safe_probe(cls: type[Backend], http: httpx.Client, root: str) -> str | None:
    """``cls.probe`` that never raises for what a server answers: a server that answers
    garbage is not of that kind. A version string is cut to one short line."""
    try:
        version = cls.probe(http, root)  # type: ignore[attr-defined]
    except httpx.HTTPError:
        raise
    except Exception:  # an answer the probe could not read (bad JSON, wrong shape, bytes)
        return None
    return None if version is None else _one_line(str(version), 120) or None


def detect_kind(model: ModelConfig, candidates: list[type[Backend]]) -> str:
    """The kind of server at ``model.source``: the first candidate whose probe recognises
    it, else plain "openai" (an unreachable server is reported by ``start``)."""
    root = _base_url(model.source).removesuffix("/v1")
    key = os.environ.get(model.engine.api_key_env) if model.engine.api_key_env else None
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        with httpx.Client(timeout=PROBE_TIMEOUT_S, headers=headers) as http:
            for cls in candidates:
                if safe_probe(cls, http, root) is not None:
                    return cls.kind
    except (httpx.HTTPError, httpx.InvalidURL, ValueError):
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
        url = f"{self.base_url}/models"
        where = f"model '{self.name}': the server at {self.base_url}"
        try:
            with httpx.Client(timeout=10.0, headers=headers) as client:
                status, body = read_limited(client, url)
                self._read_models(status, body, where)
                self._version = safe_probe(type(self), client, root) or self._version
        except httpx.InvalidURL as exc:
            raise EngineError(f"model '{self.name}': {self.base_url} is not a valid URL: "
                              f"{redact(str(exc), key)}") from None
        except (httpx.ReadTimeout, httpx.WriteTimeout, httpx.PoolTimeout) as exc:
            raise EngineError(f"{where} did not answer /v1/models in time "
                              f"({_one_line(redact(str(exc), key)) or type(exc).__name__})"
                              ) from None
        except httpx.HTTPError as exc:
            reason = redact(str(exc), key) or type(exc).__name__
            raise EngineError(f"model '{self.name}': cannot reach {self.base_url}: "
                              f"{_one_line(reason)}") from None
        return self.endpoint

    def _read_models(self, status: int, body: bytes, where: str) -> None:
        """Check the answer to GET /v1/models and take the first model's id when none is
        configured. Every answer that is not a list of models is one clear error."""
        if status in (401, 403):
            raise EngineError(f"{where} refused the API key (HTTP {status} for /v1/models)")
        if status == 404:
            raise EngineError(f"{where} answered HTTP 404 for /v1/models: not an "
                              "OpenAI-compatible endpoint?")
        if status != 200:
            detail = _one_line(redact(body[:2000].decode("utf-8", "replace"), self._api_key))
            raise EngineError(f"{where} answered HTTP {status} for /v1/models"
                              + (f": {detail}" if detail else ""))
        if len(body) > MAX_PROBE_BYTES:
            raise EngineError(f"{where} answered /v1/models with over "
                              f"{MAX_PROBE_BYTES >> 20} MiB: not an OpenAI-compatible endpoint?")
        try:
            listing = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise EngineError(f"{where} answered /v1/models with something that is not JSON "
                              f"({len(body)} bytes): not an OpenAI-compatible endpoint?"
                              ) from None
        data = listing.get("data", []) if isinstance(listing, dict) else None
        if not isinstance(data, list):
            shape = type(listing).__name__ if data is None else f"a 'data' {type(data).__name__}"
            raise EngineError(f"{where} answered /v1/models with JSON of the wrong shape "
                              f"({shape}; expected an object whose 'data' lists the models): "
                              "not an OpenAI-compatible endpoint?")
        if self.model_id is None:
            ids = [m["id"] for m in data
                   if isinstance(m, dict) and isinstance(m.get("id"), str) and m["id"]]
            self.model_id = ids[0] if ids else None

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint(base_url=self.base_url, model_id=self.model_id, api_key=self._api_key)

    def info(self) -> EngineInfo:
        return EngineInfo(kind=f"external ({self.label})", version=self._version,
                          command=None, base_url=self.base_url)
