"""Endpoints are outside input: whatever a server answers, kurabe says what is wrong in one
line (never a traceback), probing which server it is never fails, and the API key never
reaches the store, the report, the exports, the logs or the console.

Every server here is a real HTTP server on a local port (``FakeServer``), so the requests
go through the same HTTP stack as against vLLM or llama-server.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from kurabe.backends.base import EngineError, create_backend
from kurabe.backends.llamacpp import LlamaCppEndpoint
from kurabe.backends.ollama import OllamaEndpoint
from kurabe.backends.openai import MAX_PROBE_BYTES, OpenAIEndpoint
from kurabe.config import parse_config
from kurabe.modelfiles.resolve import resolve_model
from kurabe.redact import redact

from conftest import run_kurabe

# -- a real local HTTP server with canned answers ------------------------------------------


@dataclass
class Canned:
    status: int = 200
    body: bytes | list[bytes] = b""  # a list: sent chunked, flushed after each part
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0  # before each part of a chunked body


@dataclass
class FakeRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class FakeServer:
    """``routes`` maps "METHOD /path" or "/path" to a ``Canned`` answer or to a function of
    the ``FakeRequest``; anything else is a 404. Every request is kept in ``requests``."""

    def __init__(self, routes: dict[str, Canned | Callable[[FakeRequest], Canned]]
                 | None = None) -> None:
        self.routes = dict(routes or {})
        self.requests: list[FakeRequest] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                req = FakeRequest(self.command, self.path, dict(self.headers.items()),
                                  self.rfile.read(length))
                fake.requests.append(req)
                route = fake.routes.get(f"{self.command} {self.path}") or fake.routes.get(
                    self.path)
                canned = (Canned(404, b"404 page not found") if route is None else
                          route if isinstance(route, Canned) else route(req))
                self.send_response(canned.status)
                for name, value in canned.headers.items():
                    self.send_header(name, value)
                if isinstance(canned.body, list):
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for part in canned.body:
                        time.sleep(canned.delay_s)
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                        self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")
                else:
                    self.send_header("Content-Length", str(len(canned.body)))
                    self.end_headers()
                    self.wfile.write(canned.body)
                self.wfile.flush()

            def handle_one_request(self) -> None:
                try:
                    super().handle_one_request()
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client gave up: nothing to answer

            do_GET = do_POST = answer  # noqa: N815

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def __enter__(self) -> FakeServer:
        threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def _json(value: object, status: int = 200) -> Canned:
    return Canned(status, json.dumps(value).encode(), {"Content-Type": "application/json"})


GARBAGE = bytes(range(256)) * 8 + b"\xff\xfe\xc3("  # not UTF-8, not JSON


def _endpoint(url: str, **kw) -> OpenAIEndpoint:
    return OpenAIEndpoint("m", url + "/v1", **kw)


# -- /v1/models: every wrong answer is one clear line --------------------------------------

MODELS_ANSWERS = {
    "random bytes": (Canned(200, GARBAGE), "answered /v1/models with something that is not "
                     "JSON (2052 bytes): not an OpenAI-compatible endpoint?"),
    "404": (Canned(404, b"404 page not found"),
            "answered HTTP 404 for /v1/models: not an OpenAI-compatible endpoint?"),
    "500 with a body": (Canned(500, b"upstream\n\x00exploded"),
                        "answered HTTP 500 for /v1/models: upstream exploded"),
    "401": (Canned(401, b"no"), "refused the API key (HTTP 401 for /v1/models)"),
    "HTML": (Canned(200, b"<html><body>router login</body></html>"),
             "answered /v1/models with something that is not JSON (38 bytes)"),
    "a JSON list": (_json([{"id": "m"}]), "answered /v1/models with JSON of the wrong shape "
                    "(list; expected an object whose 'data' lists the models)"),
    "data not a list": (_json({"data": "m"}), "JSON of the wrong shape (a 'data' str;"),
    "a JSON number": (_json(7), "JSON of the wrong shape (int;"),
    "deep nesting": (Canned(200, b"[" * 100_000 + b"]" * 100_000), "not JSON"),
    "over the size limit": (Canned(200, [b'{"data": ["' + b"x" * 65536] * 20),
                            "answered /v1/models with over 1 MiB"),
}


@pytest.mark.parametrize("case", list(MODELS_ANSWERS))
def test_a_wrong_answer_to_models_is_one_clear_error(case):
    canned, needle = MODELS_ANSWERS[case]
    with FakeServer({"GET /v1/models": canned}) as server:
        with pytest.raises(EngineError) as info:
            _endpoint(server.url).start()
    message = str(info.value)
    assert message.startswith(f"model 'm': the server at {server.url}/v1 "), message
    assert needle in message and "\n" not in message, message
    assert "cannot reach" not in message


def test_an_unreachable_server_is_named_as_such():
    with FakeServer() as server:
        url = server.url
    with pytest.raises(EngineError, match=rf"^model 'm': cannot reach {url}/v1: "):
        _endpoint(url).start()


@pytest.mark.parametrize(("listing", "model_id"), [
    ({"data": [5, {"id": 7}, {"id": ""}, {"id": "second"}, {"id": "third"}]}, "second"),
    ({"object": "list"}, None),  # no list at all: nothing to pick, the model field is left out
    ({"data": []}, None),
])
def test_ill_formed_entries_of_a_model_list_are_passed_over(listing, model_id):
    with FakeServer({"GET /v1/models": _json(listing)}) as server:
        endpoint = _endpoint(server.url).start()
    assert endpoint.model_id == model_id


def test_a_configured_model_id_is_kept():
    with FakeServer({"GET /v1/models": _json({"data": [{"id": "other"}]})}) as server:
        assert _endpoint(server.url, model_id="mine").start().model_id == "mine"


# -- probing which server it is ------------------------------------------------------------

PROBE_ANSWERS = {
    "garbage everywhere": ({"/props": Canned(200, b"build_info" + GARBAGE),
                            "/api/version": Canned(200, b'"version"' + GARBAGE)}, "openai"),
    "JSON of the wrong shape": ({"/props": _json(["build_info"]),
                                 "/api/version": _json({"version": {"nested": 1}})}, "openai"),
    "probe endpoints 500": ({"/props": Canned(500, b"build_info"),
                             "/api/version": Canned(500, b"version")}, "openai"),
    "a real llama-server": ({"/props": _json({"build_info": "b6000-abc"})}, "llama-server"),
    "a real Ollama": ({"/api/version": _json({"version": "0.11.4"})}, "ollama"),
}


@pytest.mark.parametrize("case", list(PROBE_ANSWERS))
def test_probing_never_fails_on_what_a_server_answers(case, tmp_path):
    routes, kind = PROBE_ANSWERS[case]
    with FakeServer({"GET /v1/models": _json({"data": [{"id": "x"}]}), **routes}) as server:
        config = parse_config({"models": [{"name": "m", "source": server.url}],
                               "prompts": [{"id": "p", "text": "t"}]}, "test")
        model = config.models[0]
        backend = create_backend(model, resolve_model("m", model.source, model.kind), tmp_path)
        assert backend.kind == kind
        backend.start()  # reads the version through the same probe: never raises
    assert "\n" not in backend.info().version


def test_a_version_string_from_a_server_is_cut_to_one_short_line(tmp_path):
    build = "b1\n# forged heading\n" + "x" * 500
    with FakeServer({"GET /v1/models": _json({"data": []}),
                     "/props": _json({"build_info": build})}) as server:
        backend = LlamaCppEndpoint("m", server.url)
        backend.start()
    version = backend.info().version
    assert version.startswith("b1 # forged heading x") and len(version) <= 120


@pytest.mark.parametrize(("answer", "version"), [
    (Canned(200, GARBAGE), None), (_json({"version": 3}), None), (_json(["version"]), None),
    (Canned(200, b'{"version": "0.1"' + b" " * MAX_PROBE_BYTES + b"}"), None),
    (_json({"version": "0.11.4"}), "ollama 0.11.4")])
def test_ollama_probe_reads_only_a_version_string(answer, version):
    import httpx

    with FakeServer({"/api/version": answer}) as server, httpx.Client() as http:
        assert OllamaEndpoint.probe(http, server.url) == version


# -- the API key never leaves memory -------------------------------------------------------

KEY = "sk-kurabe-test-7f3a9c1e5d2b4a6f"
KEY_ENV = "KURABE_TEST_API_KEY"


def _chat(req: FakeRequest) -> Canned:
    """A streaming chat server that checks the key, and whose error answers echo it (as some
    servers do: "Incorrect API key provided: sk-...")."""
    if req.headers.get("Authorization") != f"Bearer {KEY}":
        return _json({"error": {"message": "missing key"}}, 401)
    body = json.loads(req.body)
    prompt = body["messages"][-1]["content"]
    if "FAIL" in prompt:
        return _json({"error": {"message": f"Incorrect API key provided: {KEY}"}}, 400)

    def event(payload: dict) -> bytes:
        return b"data: " + json.dumps(payload).encode() + b"\n\n"

    parts = [event({"choices": [{"index": 0, "delta": {"content": word}}]})
             for word in ("答えは", "四", "です。")]
    if "ENGINE" in prompt:
        parts.append(event({"error": {"message": f"engine failure for key {KEY}",
                                      "type": "server_error"}}))
    else:
        parts += [event({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                         "usage": {"prompt_tokens": 5, "completion_tokens": 3}}),
                  b"data: [DONE]\n\n"]
    return Canned(200, parts, {"Content-Type": "text/event-stream"})


def test_the_api_key_reaches_no_artifact_of_a_run(tmp_path):
    routes = {"GET /v1/models": lambda req: (
        _json({"data": [{"id": "served-model"}]})
        if req.headers.get("Authorization") == f"Bearer {KEY}" else Canned(401, b"")),
              "POST /v1/chat/completions": _chat}
    with FakeServer(routes) as server:
        config = tmp_path / "shootout.toml"
        config.write_text(f"""
[run]
name = "keys"
repeats = 1
warmup = 0
max_tokens = 16
max_retries = 0

[[models]]
name = "remote"
source = "{server.url}/v1"
[models.engine]
api_key_env = "{KEY_ENV}"

[[prompts]]
id = "ok"
text = "2+2は？"
[[prompts]]
id = "rejected"
text = "FAIL this one"
[[prompts]]
id = "engine"
text = "ENGINE error mid-stream"
""", encoding="utf-8")
        run_dir = tmp_path / "run"
        done = run_kurabe("run", str(config), "--out", str(run_dir), timeout=120,
                          env={**os.environ, KEY_ENV: KEY})
        chats = [r for r in server.requests if r.path == "/v1/chat/completions"]
    # The key was used: every request carried it.
    assert len(chats) == 3 and all(r.headers["Authorization"] == f"Bearer {KEY}" for r in chats)
    assert "Traceback" not in done.stderr, done.stderr
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"results.sqlite", "report.md", "report.html", "results.jsonl",
            "results.csv"} <= names, names
    # The server's error text reached the store (so redaction, not loss, kept the key out).
    jsonl = (run_dir / "results.jsonl").read_text(encoding="utf-8")
    assert "Incorrect API key provided" in jsonl and "engine failure for key" in jsonl
    for path in files:
        data = path.read_bytes()
        assert KEY.encode() not in data, f"the API key is in {path.relative_to(run_dir)}"
        assert KEY.encode("utf-16-le") not in data, path
    assert KEY not in done.stdout and KEY not in done.stderr
    # Both failures are counted, not hidden; the whole run is not lost.
    assert done.returncode == 3, (done.returncode, done.stdout, done.stderr)


def test_a_key_echoed_in_a_start_up_error_is_not_repeated(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    with FakeServer({"GET /v1/models": Canned(500, f"bad key {KEY}".encode())}) as server:
        with pytest.raises(EngineError) as info:
            _endpoint(server.url, api_key_env=KEY_ENV).start()
    assert KEY not in str(info.value) and "bad key [API key]" in str(info.value)
    assert KEY not in repr(_endpoint(server.url, api_key_env=KEY_ENV).endpoint)


def test_redaction_masks_the_key_and_a_piece_of_it_left_by_a_cut():
    assert redact(f"a {KEY} b {KEY}", KEY) == "a [API key] b [API key]"
    assert redact(f"HTTP 400: key {KEY[:12]}", KEY) == "HTTP 400: key [API key]"
    assert redact("sk-ku", KEY) == "sk-ku"  # too short a piece to be the key
    assert redact("no secret here", None) == "no secret here"


@pytest.mark.parametrize("answer", [_json([1, 2]), _json({"tokens": 5}), Canned(200, GARBAGE),
                                    _json({"tokens": [1, 2, 3]})])
def test_a_token_count_answer_of_another_shape_is_no_count(answer):
    import asyncio

    import httpx

    async def count() -> int | None:
        async with httpx.AsyncClient() as http:
            return await backend.count_tokens(http, "テキスト")

    with FakeServer({"POST /tokenize": answer}) as server:
        backend = LlamaCppEndpoint("m", server.url)
        got = asyncio.run(count())
    assert got == (3 if answer.body == b'{"tokens": [1, 2, 3]}' else None)


def test_a_server_that_trickles_its_answer_is_given_up_on(monkeypatch):
    import functools

    from kurabe.backends import openai

    monkeypatch.setattr(openai, "read_limited",
                        functools.partial(openai.read_limited, deadline_s=0.3))
    trickle = Canned(200, [b'{"data": ['] + [b" "] * 50, delay_s=0.05)
    with FakeServer({"GET /v1/models": trickle}) as server:
        started = time.perf_counter()
        with pytest.raises(EngineError, match=(
                rf"^model 'm': the server at {server.url}/v1 did not answer /v1/models in time "
                r"\(no whole answer within 0.3 s\)$")):
            _endpoint(server.url).start()
    assert time.perf_counter() - started < 2.0
