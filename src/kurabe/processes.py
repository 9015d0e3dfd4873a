"""The processes a run starts, recorded in the run so that a later command can find them.

A run records the kurabe process that executes it (its owner) and every engine it spawns,
each with its start time, the moment the process exists. A kurabe killed with SIGKILL
cannot stop its engines; the next command on the same run folder (a resume, a judge) finds
the recorded engines still running, checks that each is the same process (same pid and same
start time, so a reused pid is never touched) and stops it. A run whose owner is still alive
is in use: a second kurabe refuses to execute it rather than race the first.

The managed xllamacpp engine also ends itself when its kurabe dies (Linux
``PR_SET_PDEATHSIG``, see ``kurabe.backends.xllamacpp_server``); the records cover every
other engine program and every other operating system.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import psutil

from kurabe import KurabeError

if TYPE_CHECKING:
    from kurabe.store import Store

# Start times are compared to this precision: psutil reads them from /proc in clock ticks.
_SAME_START_S = 0.05


@dataclass
class ProcessRow:
    """One process a run started: ``role`` is "kurabe" (the owner) or "engine"."""

    id: int | None
    role: str
    model: str | None
    pid: int
    create_time: float  # the process's start time (psutil), to tell a reused pid apart
    command: list[str]
    started_at: str
    ended_at: str | None = None
    end_reason: str | None = None


class RunInUseError(KurabeError):
    """Another live kurabe process is executing this run folder."""


def create_time(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), or None if there is none."""
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, ValueError):
        return None


def is_running(row: ProcessRow) -> bool:
    """The recorded process is still the one running under its pid (and not a zombie)."""
    try:
        proc = psutil.Process(row.pid)
        if abs(proc.create_time() - row.create_time) > _SAME_START_S:
            return False
        return proc.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


def stop_process(row: ProcessRow, *, grace_s: float = 10.0) -> bool:
    """Stop a recorded engine: SIGTERM to its process group (an engine runs in a session of
    its own), then SIGKILL after ``grace_s``. True when it was running and is now gone."""
    if not is_running(row):
        return False
    try:
        proc = psutil.Process(row.pid)
        group = os.getpgid(row.pid)
    except (psutil.NoSuchProcess, ProcessLookupError):
        return False
    # Signal the group only when the engine leads it: never the group of somebody else.
    own_group = group == row.pid

    def send(sig: signal.Signals) -> None:
        try:
            if own_group:
                os.killpg(row.pid, sig)
            else:
                proc.send_signal(sig)
        except (ProcessLookupError, psutil.NoSuchProcess):
            pass

    send(signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except psutil.TimeoutExpired:
        send(signal.SIGKILL)
        try:
            proc.wait(timeout=5.0)
        except psutil.TimeoutExpired:
            return False
    if own_group:  # leftovers of the group (children of the engine)
        try:
            os.killpg(row.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return True


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def record(store: Store, role: str, pid: int, command: list[str], model: str | None = None
           ) -> int:
    """Record a process the run started (or the kurabe executing it); its row id."""
    return store.add_process(ProcessRow(
        id=None, role=role, model=model, pid=pid, create_time=create_time(pid) or time.time(),
        command=list(command), started_at=_now()))


def claim(store: Store, run_dir: object, command: list[str]) -> int:
    """Make this process the run's owner. Raises RunInUseError when another live kurabe
    owns it; an owner that is gone (killed, crashed) is marked so."""
    me = os.getpid()
    for row in store.processes(running_only=True):
        if row.role != "kurabe" or row.id is None:
            continue
        if row.pid != me and is_running(row):
            raise RunInUseError(
                f"{run_dir}: the run is being executed by another kurabe (pid {row.pid}, "
                f"started {row.started_at}); wait for it to end or stop it first")
        store.end_process(row.id, "gone (the kurabe that ran it was killed or crashed)")
    return record(store, "kurabe", me, command)


def reap(store: Store) -> list[str]:
    """Stop the engines a run started and never stopped (their kurabe was killed); mark
    those already gone. Returns one line per engine that was still running and is stopped.
    Call only as the run's owner (after ``claim``)."""
    stopped = []
    for row in store.processes(running_only=True):
        if row.role != "engine" or row.id is None:
            continue
        if is_running(row):
            stopped_now = stop_process(row)
            what = (f"stopped engine of model '{row.model}' (pid {row.pid}) left running by "
                    "an earlier kurabe") if stopped_now else (
                    f"could not stop engine of model '{row.model}' (pid {row.pid})")
            store.add_event("engine_reaped", what)
            stopped.append(what)
            store.end_process(row.id, "stopped by a later command" if stopped_now
                              else "could not be stopped")
        else:
            store.end_process(row.id, "gone (not running when the run was reopened)")
    return stopped
