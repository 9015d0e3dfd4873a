"""The speed phase: warm-ups, measured rounds and the reasoning sweep, one request at a time,
in the schedule's alternating order, each request committed as it lands (a failed one with
its error kind; the run goes on)."""

from __future__ import annotations

import time

from kurabe import KurabeError
from kurabe.backends.base import Backend
from kurabe.config import ModelConfig, PromptConfig, ShootoutConfig
from kurabe.inputs import prompts_of
from kurabe.metrics import speed_metrics
from kurabe.phases import Phase, PhaseContext
from kurabe.phases.schedule import Scheduled, SweepPlan, build_schedule
from kurabe.records import ChatRequest, RequestRow, Snapshot, StreamRecord
from kurabe.store import Store
from kurabe.thinking import split_stream


def chat_request(config: ShootoutConfig, prompt: PromptConfig, model: ModelConfig,
                 backend: Backend, item: Scheduled | None = None) -> ChatRequest:
    messages = []
    if prompt.system:
        messages.append({"role": "system", "content": prompt.system})
    messages.append({"role": "user", "content": prompt.text})
    sweeping = item is not None and item.phase == "sweep"
    setting = item.setting if sweeping and item is not None else model.reasoning
    extra = {**model.extra_body, **backend.reasoning_fields(setting)}
    max_tokens = config.run.max_tokens
    if sweeping and config.reasoning_sweep is not None and config.reasoning_sweep.max_tokens:
        max_tokens = config.reasoning_sweep.max_tokens
    return ChatRequest(messages=messages, max_tokens=max_tokens,
                       temperature=config.run.temperature, seed=config.run.seed,
                       fixed_length=config.run.fixed_length and not sweeping, extra_body=extra)


def sweep_plan(config: ShootoutConfig, prompt_ids: list[str]) -> SweepPlan | None:
    sweep = config.reasoning_sweep
    if sweep is None:
        return None
    names = [m.name for m in config.models]
    models = sweep.models or names
    unknown = [m for m in models if m not in names]
    missing = [p for p in (sweep.prompts or []) if p not in prompt_ids]
    if unknown or missing:
        what = ([f"models {unknown}"] if unknown else []) + (
            [f"prompts {missing}"] if missing else [])
        raise KurabeError("reasoning_sweep: unknown " + ", ".join(what))
    return SweepPlan(models, sweep.prompts or prompt_ids, list(sweep.settings), sweep.repeats)


def run_schedule(config: ShootoutConfig, snapshot: Snapshot) -> list[Scheduled]:
    prompt_ids = [p.id for p in prompts_of(snapshot)]
    return build_schedule([m.name for m in config.models], prompt_ids, config.run.repeats,
                          config.run.warmup, sweep_plan(config, prompt_ids))


def describe(item: Scheduled) -> str:
    setting = f" [{item.setting}]" if item.setting is not None else ""
    return f"{item.phase} {item.model} · {item.prompt_id}{setting}"


class SpeedPhase(Phase):
    name = "speed"

    def __init__(self, config: ShootoutConfig, snapshot: Snapshot) -> None:
        self.config = config
        self.prompts = {p.id: p for p in prompts_of(snapshot)}
        self.models = {m.name: m for m in config.models}
        self.schedule = run_schedule(config, snapshot)

    def missing(self, store: Store) -> list[Scheduled]:
        done = store.completed_seqs()
        return [s for s in self.schedule if s.seq not in done]

    def pending(self, store: Store) -> int:
        return len(self.missing(store))

    def models_needed(self, store: Store) -> list[str]:
        return list(dict.fromkeys(s.model for s in self.missing(store)))

    async def run(self, ctx: PhaseContext) -> None:
        pending = self.missing(ctx.store)
        total = len(self.schedule)
        done = total - len(pending)
        for item in pending:
            ctx.progress(describe(item), done, total)
            if ctx.check_engine(item.model, self.name):
                record = await self._send(ctx, item)
                if record.error:
                    ctx.check_engine(item.model, self.name)
            else:
                self._skip(ctx, item)
            done += 1
            ctx.progress(describe(item), done, total)

    def _skip(self, ctx: PhaseContext, item: Scheduled) -> None:
        """Store a request that was not sent because its engine had exited."""
        req = chat_request(self.config, self.prompts[item.prompt_id], self.models[item.model],
                           ctx.backends[item.model], item)
        record = StreamRecord(sent_at_unix_s=time.time(), t_done_s=0.0, attempts=0,
                              error=ctx.skipped_because(item.model), error_kind="engine_exited")
        self._store(ctx, item, req, record, speed_metrics(record).to_dict())

    def _store(self, ctx: PhaseContext, item: Scheduled, req: ChatRequest,
               record: StreamRecord, metrics: dict) -> None:
        ctx.store.add_request(RequestRow(
            seq=item.seq, model=item.model, prompt_id=item.prompt_id, repeat=item.repeat,
            phase=item.phase, setting="" if item.setting is None else str(item.setting),
            status="error" if record.error else "ok", error=record.error,
            error_kind=record.error_kind if record.error else None,
            sent_at_unix_s=record.sent_at_unix_s, request=req.to_dict(),
            record=record.to_dict(), metrics=metrics,
        ))

    async def _send(self, ctx: PhaseContext, item: Scheduled) -> StreamRecord:
        backend, client = ctx.backends[item.model], ctx.clients[item.model]
        req = chat_request(self.config, self.prompts[item.prompt_id], self.models[item.model],
                           backend, item)
        record = await client.stream_chat(req)
        if record.error_kind == "engine_exited":
            record.error = f"engine exited: {record.error}"
        opened = ctx.starts_in_reasoning.get(item.model)
        split = split_stream(record.timed_chunks(), starts_in_reasoning=opened).split
        counted = answer_counted = None
        if split.reasoning and not record.error:
            counted = await client.count_tokens(split.reasoning)
            answer_counted = await client.count_tokens(split.answer)
        metrics = speed_metrics(
            record, starts_in_reasoning=opened, reasoning_tokens=counted,
            reasoning_tokens_source="tokenizer" if counted is not None else None,
            answer_phase_tokens=answer_counted)
        self._store(ctx, item, req, record, metrics.to_dict())
        return record
