"""The run's phases: each decides what to send, sends it, and stores each result as it lands.

A phase is a small unit the orchestrator runs in order on one event loop: it says how much
of its work is still missing (so a resumed run does exactly that), which models it needs
running, and does the work with the backends and the store it is handed. Phases know
nothing about processes, signals or the CLI.
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
