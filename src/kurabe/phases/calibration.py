"""The judge's calibration: it grades items whose good and bad answers are known, first.

Each item of the run's calibration set (kept in its snapshot) costs four judge requests: a
single grade of the good answer and of the bad one, and the pair in both orders. They are
made exactly as the judging phase makes its own (the snapshot's instructions and schemas,
structured output where the engine has it, plain text where it refuses it, temperature 0),
and each verdict is stored as it lands, so a resume sends only what is missing.
``kurabe.analysis.calibration`` reads them back.
"""

from __future__ import annotations

from typing import Any

from kurabe.config import QualityConfig, ShootoutConfig
from kurabe.evals import calibration as C
from kurabe.evals import judge as J
from kurabe.inputs import calibration_items_of
from kurabe.phases import Phase, PhaseContext
from kurabe.records import CalibrationGradeRow, CalibrationItem, ChatRequest, Snapshot
from kurabe.store import Store
from kurabe.thinking import split_stream


class CalibrationPhase(Phase):
    name = "calibration"

    def __init__(self, config: ShootoutConfig, snapshot: Snapshot, judge: str | None) -> None:
        assert config.quality is not None
        self.q: QualityConfig = config.quality
        self.judge = judge
        self.items: list[CalibrationItem] = calibration_items_of(snapshot)
        self.tasks = C.calibration_tasks(self.items)
        self.prompts = snapshot.judge_prompts or J.judge_prompts()
        self.model_cfg = {m.name: m for m in [*config.models, *config.judges]}

    def missing(self, store: Store) -> list[C.CalibrationTask]:
        if not self.judge:
            return []
        done = store.calibrated_keys(self.judge)
        return [t for t in self.tasks if (t[1].id, t[0], t[2]) not in done]

    def pending(self, store: Store) -> int:
        return len(self.missing(store))

    def models_needed(self, store: Store) -> list[str]:
        return [self.judge] if self.judge and self.pending(store) else []

    async def run(self, ctx: PhaseContext) -> None:
        from kurabe.phases.judge_context import context_exceeded

        assert self.judge is not None
        judge = self.judge
        client, backend = ctx.clients[judge], ctx.backends[judge]
        judge_cfg = self.model_cfg[judge]
        extra = {**judge_cfg.extra_body, **backend.reasoning_fields(self.q.judge_reasoning)}
        total = len(self.tasks)
        missing = self.missing(ctx.store)
        done = total - len(missing)
        for kind, item, position in missing:
            ctx.progress(f"calibrate {judge} {kind} · {item.id}", done, total)
            done += 1
            base: dict[str, Any] = {"judge": judge, "item_id": item.id, "kind": kind,
                                    "position": position}
            if not ctx.check_engine(judge, self.name):
                ctx.store.add_calibration(CalibrationGradeRow(
                    **base, status="error", error_kind="engine_exited",
                    detail=ctx.skipped_because(judge)))
                continue
            messages, schema = C.task_messages(kind, item, position, self.prompts)
            too_long = await context_exceeded(ctx, judge, messages, self.q.judge_max_tokens)
            if too_long:
                ctx.store.add_calibration(CalibrationGradeRow(
                    **base, status="error", error_kind="context_exceeded", detail=too_long))
                continue
            req = ChatRequest(messages=messages, max_tokens=self.q.judge_max_tokens,
                              temperature=0.0, seed=self.q.seed,
                              extra_body={**extra, **backend.structured_output(schema)})
            record = await client.stream_chat(req)
            if backend.refused_structured_output(record):
                # The engine refused structured output: ask again, parse the text.
                req.extra_body = extra
                record = await client.stream_chat(req)
            split = split_stream(record.timed_chunks()).split
            if record.error:
                ctx.store.add_calibration(CalibrationGradeRow(
                    **base, status="error", detail=record.error, error_kind=record.error_kind,
                    raw_output=split.answer or None, judge_reasoning=split.reasoning or None))
                ctx.check_engine(judge, self.name)
                continue
            verdict = C.parse_verdict(kind, split.answer)
            ctx.store.add_calibration(CalibrationGradeRow(
                **base, status=verdict.status, score=verdict.score, verdict=verdict.winner,
                explanation=verdict.explanation, raw_output=split.answer,
                judge_reasoning=split.reasoning,
                detail=f"parsed from {verdict.how}" if verdict.how else
                ("judge thinking used the whole budget" if not split.answer and split.reasoning
                 else "no grade found in the judge's answer")))
        ctx.progress("calibration", total, total)
