"""Shared fixtures: real built-in models and real llama.cpp servers."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kurabe.backends.llamacpp import LlamaCppServer
from kurabe.modelfiles.builtin import builtin_model, builtin_path

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    # Model assembly and hash caches go to a per-session folder, not the user's home.
    if "KURABE_CACHE_DIR" not in os.environ:
        os.environ["KURABE_CACHE_DIR"] = str(tmp_path_factory.mktemp("kurabe-cache"))
    yield


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    return builtin_path("builtin:smollm2-135m")


@pytest.fixture(scope="session")
def gemma_path() -> Path:
    return builtin_path("builtin:gemma3-270m")


@pytest.fixture(scope="session")
def smollm2_server(smollm2_path, tmp_path_factory):
    """One real llama.cpp server for SmolLM2, shared by the tests that only send requests."""
    log_dir = tmp_path_factory.mktemp("smollm2-engine")
    server = LlamaCppServer("smollm2", smollm2_path, ctx=2048, log_path=log_dir / "smollm2.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def gemma_server(gemma_path, tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("gemma-engine")
    server = LlamaCppServer("gemma", gemma_path, ctx=2048, log_path=log_dir / "gemma.log",
                            chat_template=builtin_model("gemma3-270m").chat_template)
    server.start()
    yield server
    server.stop()


def run_kurabe(*args: str, timeout: float = 600, check: bool = False, env=None,
               **kw) -> subprocess.CompletedProcess:
    """Run the real CLI in its own process, as a user would."""
    done = subprocess.run([sys.executable, "-m", "kurabe", *args], capture_output=True,
                          text=True, timeout=timeout, env=env, **kw)
    if check and done.returncode != 0:
        raise AssertionError(f"kurabe {' '.join(args)} exited {done.returncode}:\n"
                             f"{done.stdout}\n{done.stderr}")
    return done


CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def browser():
    """Debian's headless Chromium driven by Playwright (installed by scripts/ensure-chromium.sh).

    Module scope: Playwright's sync API keeps an event loop running while it is open, which
    would stop later modules' own asyncio.run calls."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield b
        b.close()


class PageWatch:
    """A fresh page that records dialogs, console errors and every request leaving it."""

    def __init__(self, browser):
        self.context = browser.new_context(viewport={"width": 1200, "height": 900})
        self.page = self.context.new_page()
        self.dialogs, self.errors, self.requests = [], [], []
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

        def route(r):
            if r.request.url.startswith("file://"):
                r.continue_()
            else:
                self.requests.append(r.request.url)
                r.abort()
        self.context.route("**/*", route)

    def close(self):
        self.context.close()


@pytest.fixture
def page_watch(browser):
    watch = PageWatch(browser)
    yield watch
    watch.close()


_script_names = itertools.count()


@pytest.fixture
def script():
    """script(reply, replies or fn(body) -> reply) -> 'scripted:NAME': a model of the
    in-process scripted backend, unregistered after the test."""
    from kurabe.backends.scripted import register_script, unregister_script

    made = []

    def make(behaviour) -> str:
        name = f"t{next(_script_names)}"
        made.append(name)
        return register_script(name, behaviour)

    yield make
    for name in made:
        unregister_script(name)
