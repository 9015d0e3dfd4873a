"""Run a speed shootout: start engines, send the schedule, commit each request as it lands."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
import signal
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from kurabe import KurabeError, __version__
from kurabe.phases.prompts import load_prompt_set
from kurabe.phases.schedule import Scheduled, build_schedule
from kurabe.client import ChatClient, ChatRequest
from kurabe.config import ModelConfig, PromptConfig, ShootoutConfig
from kurabe.reasoning import request_fields
from kurabe.backends.base import Endpoint, Engine, EngineError, build_engine
from kurabe.machine import machine_info
from kurabe.metrics import speed_metrics
from kurabe.modelfiles.resolve import ResolvedModel, resolve_model
from kurabe.store import RequestRow, Store
from kurabe.thinking import split_stream, template_opens_thinking

ProgressHook = Callable[[str, int, int], None]  # (description, done, total)


def prompts_of(config: ShootoutConfig) -> list[PromptConfig]:
    if config.prompts:
        return config.prompts
    if not config.run.prompt_set:
        raise KurabeError("no prompts: add [[prompts]] or set run.prompt_set")
    return load_prompt_set(config.run.prompt_set)


def chat_request(config: ShootoutConfig, prompt: PromptConfig, model: ModelConfig,
                 engine_kind: str, item: Scheduled | None = None) -> ChatRequest:
    messages = []
    if prompt.system:
        messages.append({"role": "system", "content": prompt.system})
    messages.append({"role": "user", "content": prompt.text})
    sweeping = item is not None and item.phase == "sweep"
    setting = item.setting if sweeping else model.reasoning
    extra = {**model.extra_body, **request_fields(setting, engine_kind)}
    max_tokens = config.run.max_tokens
    if sweeping and config.reasoning_sweep.max_tokens:
        max_tokens = config.reasoning_sweep.max_tokens
    return ChatRequest(messages=messages, max_tokens=max_tokens,
                       temperature=config.run.temperature, seed=config.run.seed,
                       fixed_length=config.run.fixed_length and not sweeping, extra_body=extra)


def sweep_plan(config: ShootoutConfig, prompt_ids: list[str]):
    sweep = config.reasoning_sweep
    if sweep is None:
        return None
    names = [m.name for m in config.models]
    models = sweep.models or names
    unknown = [m for m in models if m not in names]
    missing = [p for p in (sweep.prompts or []) if p not in prompt_ids]
    if unknown or missing:
        raise KurabeError("reasoning_sweep: unknown " + ", ".join(
            ([f"models {unknown}"] if unknown else []) + ([f"prompts {missing}"] if missing else [])))
    return (models, sweep.prompts or prompt_ids, sweep.settings, sweep.repeats)


def _card_and_plan(model: ModelConfig, resolved: ResolvedModel, engine: Engine
                   ) -> tuple[str | None, str | None]:
    """The model card and the memory plan for the settings this engine was started with.
    A model the planner cannot handle still runs: the plan records why it is missing."""
    from kurabe.modelfiles.card import model_card
    from kurabe.modelfiles.gguf_header import read_header
    from kurabe.simulator.memory import plan_memory

    header = read_header(resolved.file_path)
    card = json.dumps(model_card(header, model.source, "gguf").to_dict(), ensure_ascii=False)
    eng = model.engine
    try:
        # The xllamacpp wheel is a CPU build: everything stays in host memory.
        gpu = eng.server != "xllamacpp" and bool(machine_info()["gpus"])
        plan = plan_memory(header, ctx=eng.ctx, cache_type_k=eng.cache_type_k or "f16",
                           cache_type_v=eng.cache_type_v or "f16", parallel=eng.parallel,
                           ngl=eng.ngl, flash_attn=eng.flash_attn or "auto", gpu=gpu)
        plan_json = json.dumps(plan.to_dict())
    except KurabeError as exc:
        plan_json = json.dumps({"error": str(exc)})
    return card, plan_json


def _describe(item: Scheduled) -> str:
    setting = f" [{item.setting}]" if item.setting is not None else ""
    return f"{item.phase} {item.model} · {item.prompt_id}{setting}"


class _Terminated(Exception):
    pass


def _raise_terminated(*_: object) -> None:
    raise _Terminated("terminated by SIGTERM")


class Shootout:
    """One run folder: ``results.sqlite``, ``engines/*.log``, and the exported results."""

    def __init__(self, config: ShootoutConfig, run_dir: Path, store: Store,
                 progress: ProgressHook | None = None) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        self.store = store
        self.progress = progress or (lambda *_: None)
        self.prompts = {p.id: p for p in prompts_of(config)}
        self.starts_in_reasoning: dict[str, bool | None] = {}
        self.models = {m.name: m for m in config.models}
        self.schedule = build_schedule([m.name for m in config.models], list(self.prompts),
                                       config.run.repeats, config.run.warmup,
                                       sweep_plan(config, list(self.prompts)))

    @classmethod
    def create(cls, config: ShootoutConfig, run_dir: Path, command: list[str] | None = None,
               progress: ProgressHook | None = None) -> Shootout:
        # Fail on bad prompts or model files before creating anything.
        sweep_plan(config, [p.id for p in prompts_of(config)])
        for model in config.models:
            resolve_model(model.name, model.source, model.kind, model.engine.chat_template_file)
        store = Store.create(run_dir)
        store.write_run(kurabe_version=__version__,
                        command=shlex.join(command if command is not None else sys.argv),
                        config_json=config.to_json(), machine=machine_info())
        return cls(config, run_dir, store, progress)

    @classmethod
    def resume(cls, run_dir: Path, progress: ProgressHook | None = None) -> Shootout:
        store = Store.open(run_dir)
        config = ShootoutConfig.from_json(store.run()["config_json"])
        return cls(config, run_dir, store, progress)

    def pending(self) -> list[Scheduled]:
        done = self.store.completed_seqs()
        return [s for s in self.schedule if s.seq not in done]

    # -- running ---------------------------------------------------------------------------

    def execute(self) -> None:
        pending = self.pending()
        quality = self._quality()
        q_pending = quality.pending(self.config.quality.judge) if quality else {}
        if not pending and not any(q_pending.values()):
            self.store.set_status("complete")
            return
        needed = list(dict.fromkeys(s.model for s in pending))
        if q_pending.get("generate"):
            needed += [m for m in quality.models if m not in needed]
        judge = self.config.quality.judge if quality else None
        if judge and (q_pending.get("judge") or q_pending.get("generate")) and judge not in needed:
            needed.append(judge)
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
        engines: dict[str, Engine] = {}
        endpoints: dict[str, Endpoint] = {}
        try:
            with contextlib.ExitStack() as stack:
                wanted = [m for m in [*self.config.models, *self.config.judges] if m.name in needed]
                for i, model in enumerate(wanted):
                    self.progress(f"starting {model.name}", i, len(wanted))
                    resolved = resolve_model(model.name, model.source, model.kind,
                                             model.engine.chat_template_file)
                    template = resolved.chat_template or resolved.gguf_chat_template
                    self.starts_in_reasoning[model.name] = (
                        template_opens_thinking(template) if template else None)
                    engine = build_engine(model, resolved, self.run_dir / "engines")
                    stack.callback(engine.stop)
                    endpoints[model.name] = engine.start()
                    engines[model.name] = engine
                    self._record_model(model, resolved, engine)
                    self.store.add_event("engine_started", f"{model.name}: {engine.info().version}")
                if pending:
                    asyncio.run(self._send_all(pending, engines, endpoints))
                if quality:
                    quality.starts_in_reasoning = self.starts_in_reasoning
                    self._run_quality(quality, engines, endpoints)
            self.store.set_status("complete")
        except (KeyboardInterrupt, _Terminated):
            self.store.set_status("interrupted")
            self.store.add_event("interrupted", "stopped by the user")
            raise
        except KurabeError as exc:
            self.store.set_status("failed")
            self.store.add_event("engine_error" if isinstance(exc, EngineError) else "error",
                                 str(exc))
            raise
        finally:
            signal.signal(signal.SIGTERM, previous)

    def _quality(self):
        if self.config.quality is None:
            return None
        from kurabe.phases.quality import QualityRound

        return QualityRound(self.config, self.store, self.progress)

    def _run_quality(self, quality, engines: dict[str, Engine],
                     endpoints: dict[str, Endpoint]) -> None:
        async def generate():
            clients = {m: ChatClient(endpoints[m], timeout_s=self.config.run.request_timeout_s)
                       for m in quality.models}
            try:
                await quality.generate(clients)
            finally:
                for c in clients.values():
                    await c.aclose()

        async def judge(name):
            client = ChatClient(endpoints[name], timeout_s=self.config.run.request_timeout_s)
            try:
                await quality.judge(name, client)
            finally:
                await client.aclose()

        pending = quality.pending(self.config.quality.judge)
        if pending["generate"]:
            asyncio.run(generate())
            self._check_engines(engines, quality.models)
        quality.check()  # deterministic checks, code checks in a browser (outside asyncio)
        name = self.config.quality.judge
        if name and quality.pending(name)["judge"]:
            asyncio.run(judge(name))
            self._check_engines(engines, [name])

    def _check_engines(self, engines: dict[str, Engine], names: list[str]) -> None:
        dead = [n for n in names if n in engines and not engines[n].alive()]
        if dead:
            raise EngineError(
                f"model '{dead[0]}': the engine exited during the quality round. Everything "
                f"stored so far is kept; finish with: kurabe run --resume {self.run_dir}")

    def _record_model(self, model, resolved: ResolvedModel, engine: Engine) -> None:
        info = engine.info()
        card_json = plan_json = observed_json = None
        if resolved.file_path is not None:
            card_json, plan_json = _card_and_plan(model, resolved, engine)
        if info.log_path:
            from kurabe.simulator.loadlog import parse_load_log_file

            observed = parse_load_log_file(info.log_path)
            if not observed.empty:
                observed_json = json.dumps(observed.to_dict())

        self.store.upsert_model({
            "name": model.name, "source": model.source, "kind": model.kind,
            "file_path": str(resolved.file_path) if resolved.file_path else None,
            "file_bytes": resolved.file_bytes, "file_sha256": resolved.file_sha256,
            "quant": resolved.quant, "architecture": resolved.architecture,
            "engine_kind": info.kind, "engine_version": info.version,
            "engine_command_json": json.dumps(info.command),
            "engine_base_url": info.base_url,
            "engine_log": (str(Path(info.log_path).relative_to(self.run_dir))
                           if info.log_path else None),
            "settings_json": model.engine.model_dump_json(),
            "card_json": card_json, "plan_json": plan_json, "observed_json": observed_json,
        })

    async def _send_all(self, pending: list[Scheduled], engines: dict[str, Engine],
                        endpoints: dict[str, Endpoint]) -> None:
        clients = {name: ChatClient(ep, timeout_s=self.config.run.request_timeout_s)
                   for name, ep in endpoints.items()}
        total = len(self.schedule)
        done = total - len(pending)
        try:
            for item in pending:
                self.progress(_describe(item), done, total)
                req = chat_request(self.config, self.prompts[item.prompt_id],
                                   self.models[item.model], endpoints[item.model].engine_kind, item)
                record = await clients[item.model].stream_chat(req)
                engine = engines[item.model]
                if record.error and not engine.alive():
                    record.error = f"engine exited: {record.error}"
                opened = self.starts_in_reasoning.get(item.model)
                split = split_stream([(c.t_s, c.content, c.reasoning) for c in record.chunks],
                                     starts_in_reasoning=opened).split
                counted = answer_counted = None
                if split.reasoning:
                    counted = await clients[item.model].count_tokens(split.reasoning)
                    answer_counted = await clients[item.model].count_tokens(split.answer)
                metrics = speed_metrics(record, starts_in_reasoning=opened,
                                        reasoning_tokens=counted,
                                        reasoning_tokens_source="tokenizer" if counted is not None else None,
                                        answer_phase_tokens=answer_counted)
                self.store.add_request(RequestRow(
                    seq=item.seq, model=item.model, prompt_id=item.prompt_id,
                    repeat=item.repeat, phase=item.phase,
                    setting="" if item.setting is None else str(item.setting),
                    status="error" if record.error else "ok", error=record.error,
                    sent_at_unix_s=record.sent_at_unix_s,
                    request=asdict(req), record=record.to_json(), metrics=metrics.as_dict(),
                ))
                done += 1
                self.progress(_describe(item), done, total)
                if record.error and not engine.alive():
                    remaining = len(self.pending())
                    log = getattr(engine, "log_path", None)
                    raise EngineError(
                        f"model '{item.model}': the engine exited during the run "
                        f"({remaining} of {total} requests still to do"
                        + (f"; log: {log}" if log else "") + "). Everything measured so far is "
                        f"stored; finish with: kurabe run --resume {self.run_dir}"
                    )
        finally:
            for client in clients.values():
                await client.aclose()
