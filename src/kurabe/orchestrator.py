"""The orchestrator: one run folder, one event loop, engines and signals in one place.

A run is created from a config (its inputs are resolved into the snapshot first, so bad
input fails before anything is written) or reopened from its folder alone. ``execute``
starts the backends the pending work needs, runs the phases in order (speed and sweep,
load, quality generation, checks, judging) and stops every backend it started on success, error,
Ctrl-C or SIGTERM. Each phase stores its results as they land, so an interrupted run is
finished by executing it again: only the missing work is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kurabe import KurabeError, __version__, eventloop
from kurabe.backends.base import Backend, EngineError, backend_class, create_backend, default_kind
from kurabe.chat_template import model_opens_thinking
from kurabe.client import ChatClient
from kurabe.config import ModelConfig, ShootoutConfig
from kurabe.inputs import build_snapshot, run_snapshot
from kurabe.modelfiles.resolve import ResolvedModel, resolve_model
from kurabe.phases import Phase, PhaseContext, ProgressHook, no_progress
from kurabe.phases.judge_context import check_before_round
from kurabe.phases.judge_probes import sweep_judging_phases
from kurabe.phases.quality import quality_phases
from kurabe.phases.speed import SpeedPhase, sweep_plan
from kurabe.records import ModelRow, RunRow, Snapshot
from kurabe.store import Store


class RunTerminated(Exception):
    """The run was stopped by SIGTERM (everything stored so far is kept)."""


def refuse_twins_in_quality(config: ShootoutConfig, resolved: dict[str, ResolvedModel]
                            ) -> None:
    """A synthetic twin (random weights, kurabe.twin) measures speed and memory only: one
    that would answer or judge in the quality round is refused. ``resolved``: the models
    resolved so far, by name (others are not checked)."""
    if config.quality is None:
        return
    from kurabe.twin import is_twin

    def twin(name: str) -> bool:
        model = resolved.get(name)
        return model is not None and model.header is not None and is_twin(model.header)

    for name in config.quality.models or [m.name for m in config.models]:
        if twin(name):
            raise KurabeError(f"model '{name}' is a synthetic twin (random weights): it has "
                              "no answers worth grading; leave it out of [quality] or use "
                              "the real model file")
    judge = config.quality.judge
    if judge and twin(judge):
        raise KurabeError(f"model '{judge}' is a synthetic twin (random weights): it cannot "
                          "grade answers; choose another quality judge")


class Orchestrator:
    """Runs one run folder's phases to completion."""

    def __init__(self, run_dir: Path, store: Store, progress: ProgressHook | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.store = store
        self.progress = progress or no_progress
        self.snapshot = run_snapshot(store)
        self.config = ShootoutConfig.model_validate(self.snapshot.config)
        from kurabe.load.phase import LoadPhase

        self.phases: list[Phase] = [*([SpeedPhase(self.config, self.snapshot)]
                                      if self.config.run.speed else []),
                                    *([LoadPhase(self.config, self.snapshot)]
                                      if self.config.load is not None else []),
                                    *quality_phases(self.config, self.snapshot),
                                    *sweep_judging_phases(self.config, self.snapshot)]
        self._terminated = False
        self._resolved: dict[str, ResolvedModel] = {}  # models already resolved (at creation)
        self._owner_row: int | None = None  # this kurabe's row in the run's processes
        self._engine_rows: list[int] = []  # the engines it spawned
        self.reaped: list[str] = []  # engines a killed kurabe had left running, now stopped

    # -- creating and reopening ------------------------------------------------------------

    @classmethod
    def create(cls, config: ShootoutConfig, run_dir: Path, *, command: list[str] | None = None,
               progress: ProgressHook | None = None, snapshot: Snapshot | None = None
               ) -> Orchestrator:
        """A new run folder. Every input is read and every model file checked first.
        ``snapshot``: the run's inputs, already resolved (default: resolved from ``config``)."""
        from kurabe.machine import machine_info

        snapshot = snapshot or build_snapshot(config)
        sweep_plan(config, [p["id"] for p in snapshot.prompts])
        resolved = {m.name: resolve_model(m.name, m.source, m.kind, m.engine.chat_template_file)
                    for m in [*config.models, *config.judges]}
        for m in [*config.models, *config.judges]:
            if default_kind(m) != "auto":
                try:
                    backend_class(default_kind(m))
                except KurabeError as exc:
                    raise KurabeError(f"model '{m.name}': engine.backend: {exc}") from None
        refuse_twins_in_quality(config, resolved)
        for m in [*config.models, *config.judges]:
            model_opens_thinking(m, resolved[m.name])  # an unsafe chat template stops here
            if default_kind(m) == "llama.cpp":
                from kurabe.backends.llamacpp import server_command

                try:  # a server program that is not there stops the run here, not later
                    server_command(m.engine.server)
                except KurabeError as exc:
                    raise KurabeError(f"model '{m.name}': {exc}") from None
        store = Store.create(run_dir, url=config.run.store)
        store.write_run(RunRow(
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            kurabe_version=__version__,
            command=shlex.join(command if command is not None else sys.argv),
            config_json=config.to_json(), machine=machine_info(), status="running"))
        store.write_snapshot(snapshot)
        from kurabe.lineage.run import store_lineage

        # local files of the same shapes: do they share weights? (the report's model cards)
        store_lineage(store, config.models, resolved, progress)
        run = cls(run_dir, store, progress)
        run._resolved = resolved
        return run

    @classmethod
    def reopen(cls, run_dir: Path, progress: ProgressHook | None = None) -> Orchestrator:
        return cls(run_dir, Store.open(run_dir), progress)

    # -- running ---------------------------------------------------------------------------

    def pending(self) -> dict[str, int]:
        return {phase.name: phase.pending(self.store) for phase in self.phases}

    def execute(self) -> None:
        """Run every phase's missing work. A request that fails, or a model whose engine exits,
        does not stop the run: it ends "incomplete" and a resume retries exactly that work.
        Raises KeyboardInterrupt / RunTerminated when stopped, EngineError when an engine
        cannot start; the store is left consistent in all cases.
        Raises RunInUseError (before touching anything) when another kurabe executes it."""
        self._claim()
        try:
            eventloop.run(self._main())
            self._finish()
        except (KeyboardInterrupt, RunTerminated):
            self.store.set_status("interrupted")
            self.store.add_event("interrupted", "stopped by the user")
            raise
        except KurabeError as exc:
            self.store.set_status("failed")
            self.store.add_event("engine_error" if isinstance(exc, EngineError) else "error",
                                 str(exc))
            raise
        except Exception as exc:
            self.store.set_status("failed")
            self.store.add_event("error", f"{type(exc).__name__}: {exc}")
            raise

    def _finish(self) -> None:
        """Complete, or incomplete when work failed or was skipped (a resume retries it)."""
        left = {name: n for name, n in self.pending().items() if n}
        if not left:
            self.store.set_status("complete")
            return
        self.store.set_status("incomplete")
        self.store.add_event("incomplete", "failed or skipped, to retry on resume: " + ", ".join(
            f"{name} {n}" for name, n in left.items()))

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None

        def on_sigterm() -> None:
            self._terminated = True
            task.cancel()

        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGTERM, on_sigterm)  # main thread only
        try:
            await self._run_phases()
        except asyncio.CancelledError:
            if self._terminated:
                raise RunTerminated("terminated by SIGTERM") from None
            raise
        finally:
            self._release()
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(signal.SIGTERM)

    async def _run_phases(self) -> None:
        needed: list[str] = []
        for phase in self.phases:
            needed += [m for m in phase.models_needed(self.store) if m not in needed]
        if not any(self.pending().values()):
            return
        ctx = PhaseContext(store=self.store, config=self.config, snapshot=self.snapshot,
                           run_dir=self.run_dir, progress=self.progress)
        async with contextlib.AsyncExitStack() as stack:
            wanted = [m for m in [*self.config.models, *self.config.judges] if m.name in needed]
            for i, model in enumerate(wanted):
                self.progress(f"starting {model.name}", i, len(wanted))
                backend = await self._start(model, ctx)
                stack.callback(backend.stop)
                client = ChatClient.for_run(backend, self.config.run)
                stack.push_async_callback(client.aclose)
                ctx.backends[model.name], ctx.clients[model.name] = backend, client
            self._sample_machine(stack, ctx)
            # Said before any work: judge prompts too long for the judge's context.
            await check_before_round(ctx, self.phases)
            for phase in self.phases:
                if phase.pending(self.store):
                    await phase.run(ctx)
                    self._check_alive(ctx, phase)

    def _sample_machine(self, stack: contextlib.AsyncExitStack, ctx: PhaseContext) -> None:
        """Sample the machine (kurabe.sampler) until the phases end, on a store connection of
        the sampler's own; stopped before the engines are."""
        from kurabe.sampler import MachineSampler

        writer = Store.open(self.run_dir)
        stack.callback(writer.close)
        sampler = MachineSampler(writer.add_machine_samples,
                                 [b.pid for b in ctx.backends.values()])

        def stop() -> None:
            sampler.stop()
            if sampler.error:
                self.store.add_event("machine_sampler", sampler.error)

        sampler.start()
        stack.callback(stop)

    async def _start(self, model: ModelConfig, ctx: PhaseContext) -> Backend:
        resolved = self._resolved.get(model.name) or resolve_model(
            model.name, model.source, model.kind, model.engine.chat_template_file)
        # Rendered only in the sandbox; an unsafe template stops the run here.
        ctx.starts_in_reasoning[model.name] = model_opens_thinking(model, resolved)
        backend = create_backend(model, resolved, self.run_dir / "engines")

        def spawned(pid: int, argv: list[str]) -> None:
            from kurabe import processes

            self._engine_rows.append(processes.record(self.store, "engine", pid, argv,
                                                      model.name))

        backend.on_spawn = spawned
        # Started on the loop's own thread: nothing else runs meanwhile, and Ctrl-C lands in
        # start(), which stops what it began (a SIGTERM is handled once the engine is up).
        try:
            backend.start()
        except BaseException:
            backend.stop()
            raise
        self.store.upsert_model(self._model_row(model, resolved, backend))
        self.store.add_event("engine_started", f"{model.name}: {backend.info().version}")
        return backend

    def _claim(self) -> None:
        """Own the run (refused while another live kurabe does) and stop the engines a
        killed kurabe left running (``kurabe.processes``)."""
        from kurabe import processes

        self._owner_row = processes.claim(self.store, self.run_dir, sys.argv)
        self.reaped = processes.reap(self.store)

    def _release(self) -> None:
        """The engines were stopped (the exit stack ran) and this kurabe is done."""
        for row_id in self._engine_rows:
            self.store.end_process(row_id, "stopped")
        self._engine_rows.clear()
        if self._owner_row is not None:
            self.store.end_process(self._owner_row, "finished")
            self._owner_row = None

    def _check_alive(self, ctx: PhaseContext, phase: Phase) -> None:
        """An engine that exited is recorded; its work in later phases is skipped."""
        for name in ctx.backends:
            ctx.check_engine(name, phase.name)

    def _model_row(self, model: ModelConfig, resolved: ResolvedModel, backend: Backend
                   ) -> ModelRow:
        from kurabe.modelfiles.card import model_card

        info = backend.info()
        row = ModelRow(
            name=model.name, source=model.source, kind=model.kind,
            settings=model.engine.model_dump(mode="json"),
            file_path=str(resolved.file_path) if resolved.file_path else None,
            file_bytes=resolved.file_bytes, file_sha256=resolved.file_sha256,
            quant=resolved.quant, architecture=resolved.architecture,
            engine_kind=info.kind, engine_version=info.version, engine_command=info.command,
            engine_base_url=info.base_url,
            engine_log=(str(Path(info.log_path).relative_to(self.run_dir))
                        if info.log_path else None))
        if resolved.header is not None:
            row.card = model_card(resolved.header, model.source, "gguf").to_dict()
            row.plan = self._plan(model, resolved)
        if info.log_path:
            from kurabe.simulator.loadlog import parse_load_log_file

            observed = parse_load_log_file(info.log_path)
            if not observed.empty:
                row.observed = observed.to_dict()
        return row

    @staticmethod
    def _plan(model: ModelConfig, resolved: ResolvedModel) -> dict[str, Any]:
        """The memory plan for the settings this engine was started with. A model the
        planner cannot handle still runs: the plan records why it is missing."""
        from kurabe.machine import machine_info
        from kurabe.simulator.memory import plan_memory

        eng = model.engine
        try:
            # The xllamacpp wheel is a CPU build: everything stays in host memory.
            gpus = machine_info()["gpus"]
            gpu = eng.server != "xllamacpp" and bool(gpus)
            plan = plan_memory(resolved.header, ctx=eng.ctx,
                               cache_type_k=eng.cache_type_k or "f16",
                               cache_type_v=eng.cache_type_v or "f16", parallel=eng.parallel,
                               ngl=eng.ngl, flash_attn=eng.flash_attn or "auto", gpu=gpu)
            reason = ("the xllamacpp wheel is a CPU build" if eng.server == "xllamacpp" else
                      f"GPU found on this machine: {'; '.join(gpus)}" if gpus else
                      "no GPU found on this machine")
            return plan.to_dict() | {"ngl": eng.ngl, "placement_basis": "engine",
                                     "placement_reason": reason}
        except KurabeError as exc:
            return {"error": str(exc)}
