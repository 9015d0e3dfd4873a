"""llama.cpp: a managed server (started with the configured flags, logged, always stopped),
and an external llama-server, sharing one dialect.

The dialect: ``cache_prompt: false`` so repeats measure the same work, the server's running
token count in every chunk (``timings_per_token``), a per-request reasoning token budget
(``reasoning_budget_tokens``), and the model's own tokenizer (``/tokenize``) for counting
reasoning and answer tokens.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import httpx

from kurabe.backends.base import Backend, EngineError, register
from kurabe.backends.openai import OpenAIEndpoint
from kurabe.records import ChatRequest, Endpoint, EngineInfo

if TYPE_CHECKING:
    from kurabe.config import ModelConfig
    from kurabe.modelfiles.resolve import ResolvedModel

XLLAMACPP = "xllamacpp"
# -lv 4 is the verbosity at which llama.cpp logs its buffer sizes (model, KV, compute).
LOG_VERBOSITY = 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_command(server: str) -> list[str]:
    """The program to run for ``server``: the xllamacpp wheel, a name on PATH, or a path."""
    if server == XLLAMACPP:
        return [sys.executable, "-m", "kurabe.backends.xllamacpp_server"]
    if os.sep in server or server.startswith("."):
        path = Path(server).expanduser()
        if not path.is_file() or not os.access(path, os.X_OK):
            raise EngineError(f"engine.server: {server} is not an executable file")
        return [str(path.resolve())]
    found = shutil.which(server)
    if found is None:
        raise EngineError(
            f"engine.server: '{server}' was not found on PATH; give its full path, "
            f"or use server = \"{XLLAMACPP}\" (installed with kurabe)"
        )
    return [found]


def server_version(command: list[str]) -> str:
    try:
        done = subprocess.run(
            [*command, "--version"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EngineError(f"could not run {command[-1]} --version: {exc}") from exc
    text = (done.stdout + "\n" + done.stderr).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    # llama-server prints "version: 1234 (abcdef)" then "built with ...".
    wanted = [ln for ln in lines if ln.startswith(("version:", "xllamacpp", "built with"))]
    return "; ".join(wanted or lines[:2]) or "unknown"


class LlamaCppDialect(Backend):
    """What llama-server understands beyond the OpenAI API."""

    def request_body(self, req: ChatRequest) -> dict[str, Any]:
        body = super().request_body(req)
        # Repeats must measure the same work: never serve the prompt from llama.cpp's cache.
        body["cache_prompt"] = False
        # The server's running token count in every chunk: a chunk can carry several tokens.
        body["timings_per_token"] = True
        body.update(req.extra_body)
        return body

    @classmethod
    def reasoning_fields(cls, setting: str | int | None) -> dict[str, Any]:
        if setting is None:
            return {}
        if setting == "off":
            return {"chat_template_kwargs": {"enable_thinking": False},
                    "reasoning_budget_tokens": 0}
        if setting == "unlimited":
            return {"chat_template_kwargs": {"enable_thinking": True},
                    "reasoning_budget_tokens": -1}
        if isinstance(setting, int):
            return {"chat_template_kwargs": {"enable_thinking": setting > 0},
                    "reasoning_budget_tokens": setting}
        return super().reasoning_fields(setting)

    async def count_tokens(self, http: httpx.AsyncClient, text: str) -> int | None:
        """Tokens of ``text`` by the model's own tokenizer (llama.cpp's /tokenize)."""
        if not text:
            return None
        for _attempt in range(2):  # a pooled connection the server closed: retry once
            try:
                resp = await http.post(f"{self.endpoint.server_root}/tokenize",
                                       json={"content": text, "add_special": False})
                if resp.status_code != 200:
                    return None
                return len(resp.json().get("tokens") or [])
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
                continue
            except (httpx.HTTPError, ValueError, AttributeError, TypeError):
                return None  # no answer, or not {"tokens": [...]}: no count
        return None

    async def count_prompt_tokens(self, http: httpx.AsyncClient,
                                  messages: list[dict[str, str]]) -> int | None:
        """The prompt as the server renders it (/apply-template), then tokenized with its
        special tokens (/tokenize)."""
        root = self.endpoint.server_root
        for _attempt in range(2):  # a pooled connection the server closed: retry once
            try:
                resp = await http.post(f"{root}/apply-template", json={"messages": messages})
                prompt = resp.json().get("prompt") if resp.status_code == 200 else None
                if not isinstance(prompt, str):
                    return None
                resp = await http.post(f"{root}/tokenize",
                                       json={"content": prompt, "add_special": True})
                tokens = resp.json().get("tokens") if resp.status_code == 200 else None
                return len(tokens) if isinstance(tokens, list) else None
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
                continue
            except (httpx.HTTPError, ValueError, AttributeError, TypeError):
                return None
        return None

    async def context_size(self, http: httpx.AsyncClient) -> int | None:
        """One slot's context (llama-server's /props ``default_generation_settings.n_ctx``,
        or an older server's top-level ``n_ctx``)."""
        try:
            resp = await http.get(f"{self.endpoint.server_root}/props")
            props = resp.json() if resp.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return None
        if not isinstance(props, dict):
            return None
        settings = props.get("default_generation_settings")
        for value in ((settings or {}).get("n_ctx") if isinstance(settings, dict) else None,
                      props.get("n_ctx")):
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
        return None


@register
class LlamaCppEndpoint(LlamaCppDialect, OpenAIEndpoint):
    """A llama-server somebody else runs."""

    kind = "llama-server"
    label = "llama.cpp"

    @classmethod
    def probe(cls, http: httpx.Client, root: str) -> str | None:
        # llama-server answers /props with its build; other servers do not.
        resp = http.get(f"{root}/props")
        if resp.status_code == 200 and "build_info" in resp.text:
            return str(resp.json().get("build_info"))
        return None


@register
class LlamaCppServer(LlamaCppDialect):
    """One llama.cpp server process for one model."""

    kind = "llama.cpp"

    def __init__(
        self,
        name: str,
        model_path: Path,
        *,
        server: str = XLLAMACPP,
        ctx: int = 4096,
        cache_type_k: str | None = None,
        cache_type_v: str | None = None,
        flash_attn: str | None = None,
        threads: int | None = None,
        parallel: int = 1,
        ngl: int | None = None,
        extra_args: list[str] | None = None,
        chat_template: str | None = None,
        reasoning_format: str | None = None,
        reasoning_budget: int | None = None,
        log_path: Path,
        api_key: str | None = None,
        startup_timeout_s: float = 300.0,
    ) -> None:
        self.name = name
        self.model_path = Path(model_path)
        self.server = server
        self.log_path = Path(log_path)
        self.startup_timeout_s = startup_timeout_s
        self._api_key = api_key
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_fh: IO[bytes] | None = None
        self.port = free_port()
        self._program = server_command(server)
        self._version: str | None = None
        args = ["-m", str(self.model_path), "--host", "127.0.0.1", "--port", str(self.port),
                "-c", str(ctx), "-np", str(parallel), "--metrics", "--jinja",
                "-lv", str(LOG_VERBOSITY)]
        if cache_type_k:
            args += ["-ctk", cache_type_k]
        if cache_type_v:
            args += ["-ctv", cache_type_v]
        if flash_attn:
            args += ["-fa", flash_attn]
        if threads:
            args += ["-t", str(threads)]
        if ngl is not None:
            args += ["-ngl", str(ngl)]
        if reasoning_format:
            args += ["--reasoning-format", reasoning_format]
        if reasoning_budget is not None:
            args += ["--reasoning-budget", str(reasoning_budget)]
        if chat_template:
            template_path = self.log_path.with_suffix(".chat-template.jinja")
            template_path.parent.mkdir(parents=True, exist_ok=True)
            template_path.write_text(chat_template, encoding="utf-8")
            args += ["--chat-template-file", str(template_path)]
        self.args = args + list(extra_args or [])

    @classmethod
    def from_config(cls, model: ModelConfig, resolved: ResolvedModel, log_dir: Path
                    ) -> LlamaCppServer:
        eng = model.engine
        if resolved.file_path is None:
            raise EngineError(f"model '{model.name}': a managed llama.cpp server needs a "
                              f"GGUF file, not {model.source}")
        return cls(
            model.name, resolved.file_path, server=eng.server, ctx=eng.ctx,
            cache_type_k=eng.cache_type_k, cache_type_v=eng.cache_type_v,
            flash_attn=eng.flash_attn, threads=eng.threads, parallel=eng.parallel, ngl=eng.ngl,
            extra_args=eng.extra_args, chat_template=resolved.chat_template,
            reasoning_format=eng.reasoning_format, reasoning_budget=eng.reasoning_budget,
            log_path=log_dir / f"{model.name}.log", startup_timeout_s=eng.startup_timeout_s,
        )

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Endpoint:
        if not self.model_path.is_file():
            raise EngineError(f"model '{self.name}': file not found: {self.model_path}")
        self._version = server_version(self._program)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_fh = open(self.log_path, "ab")
        argv = [*self._program, *self.args]
        if self.server == XLLAMACPP:
            # The wheel's server ends itself when kurabe dies (even by SIGKILL).
            argv += ["--exit-with-parent"]
        shown = list(argv)
        if self._api_key:
            argv += ["--api-key", self._api_key]
        # Own session: the server and anything it spawns are stopped as one group.
        self._proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=self._log_fh, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if self.on_spawn is not None:
            self.on_spawn(self._proc.pid, shown)
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self.endpoint

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint(base_url=f"http://127.0.0.1:{self.port}/v1", model_id=self.name,
                        api_key=self._api_key)

    def _wait_healthy(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout_s
        url = f"http://127.0.0.1:{self.port}/health"
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                code = self._proc.poll()
                if code is not None:
                    raise EngineError(
                        f"model '{self.name}': llama.cpp exited with code {code} while loading "
                        f"{self.model_path.name}: {self.log_tail()} (full log: {self.log_path})"
                    )
                try:
                    if client.get(url).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
        raise EngineError(
            f"model '{self.name}': llama.cpp did not become healthy within "
            f"{self.startup_timeout_s:.0f} s (log: {self.log_path})"
        )

    def log_tail(self, lines: int = 3) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "no log"
        useful = [ln.strip() for ln in text.splitlines() if ln.strip()]
        errors = [ln for ln in useful if " E " in ln or "error" in ln.lower()]
        return " | ".join((errors or useful)[-lines:]) or "empty log"

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            for sig, wait_s in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=wait_s)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if proc is not None:
            try:  # reap leftovers of the group (children of the server)
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None

    def info(self) -> EngineInfo:
        return EngineInfo(
            kind=f"llama.cpp ({'xllamacpp wheel' if self.server == XLLAMACPP else 'llama-server'})",
            version=self._version or "unknown",
            command=[*self._program, *self.args],
            base_url=f"http://127.0.0.1:{self.port}/v1",
            log_path=str(self.log_path),
            pid=self.pid,
        )
