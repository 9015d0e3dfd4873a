"""The run's phases: each decides what to send, sends it, and stores each result as it lands.

A phase is a small unit the orchestrator runs in order on one event loop: it says how much
of its work is still missing (so a resumed run does exactly that), which models it needs
running, and does the work with the backends and the store it is handed. Phases know
nothing about processes, signals or the CLI.

A failed request is stored with its error kind and the phase goes on with the rest. When a
model's engine exits, its remaining work in this run is stored as skipped (error kind
``engine_exited``) and the other models go on: a resume retries exactly the failed and
skipped work.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from kurabe.backends.base import Backend
from kurabe.client import ChatClient
from kurabe.config import ShootoutConfig
from kurabe.records import Snapshot
from kurabe.store import Store

ProgressHook = Callable[[str, int, int], None]  # (description, done, total)


def no_progress(_description: str, _done: int, _total: int) -> None:
    return None


def warn_through(progress: ProgressHook, message: str) -> None:
    """Say ``message`` before work starts: through the progress hook's ``warn(message)``
    method where it has one (the CLI's progress bar prints it above the bar)."""
    warn = getattr(progress, "warn", None)
    if callable(warn):
        warn(message)


@dataclass
class PhaseContext:
    """What a phase works with: the run's store and inputs, and the running backends."""

    store: Store
    config: ShootoutConfig
    snapshot: Snapshot
    run_dir: Path
    backends: dict[str, Backend] = field(default_factory=dict)
    clients: dict[str, ChatClient] = field(default_factory=dict)
    # Whether each model's chat template opens a think block itself (None: unknown).
    starts_in_reasoning: dict[str, bool | None] = field(default_factory=dict)
    progress: ProgressHook = no_progress
    # Models whose engine exited in this run: model -> why (their remaining work is skipped).
    exited: dict[str, str] = field(default_factory=dict)
    # Each judge's context as its server reported it (None: unknown), asked once per run.
    context_sizes: dict[str, int | None] = field(default_factory=dict)

    def check_engine(self, model: str, phase: str) -> bool:
        """Whether the model's engine still runs; the first time it is found dead, the exit
        is recorded (an ``engine_exited`` event naming the log) and its work from here on is
        skipped."""
        if model in self.exited:
            return False
        backend = self.backends.get(model)
        if backend is None or backend.alive():
            return True
        log = backend.info().log_path
        why = (f"model '{model}': the engine exited during the {phase} phase; its remaining "
               "work in this run is skipped" + (f" (log: {log})" if log else ""))
        self.exited[model] = why
        self.store.add_event("engine_exited", why)
        return False

    @staticmethod
    def skipped_because(model: str) -> str:
        return f"not sent: the engine of model '{model}' had exited earlier in the run"


class Phase(ABC):
    """One unit of a run. ``pending`` counts missing work from the store alone."""

    name: str

    @abstractmethod
    def pending(self, store: Store) -> int: ...

    @abstractmethod
    def models_needed(self, store: Store) -> list[str]:
        """Models whose backends must be running for the pending work."""

    @abstractmethod
    async def run(self, ctx: PhaseContext) -> None: ...
