"""The quality round, in three stored phases: generate, check, judge.

Each phase reads what the previous one stored, so a judge can be swapped without
regenerating (``kurabe judge``), and an interrupted round resumes where it stopped. The
items and the judge's instructions come from the run's snapshot.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from itertools import combinations
from typing import Any

from kurabe.config import QualityConfig, ShootoutConfig
from kurabe.evals import judge as J
from kurabe.evals.suites import DETERMINISTIC_CATEGORIES
from kurabe.inputs import items_of
from kurabe.metrics import speed_metrics
from kurabe.phases import Phase, PhaseContext, ProgressHook
from kurabe.phases.judge_context import context_exceeded
from kurabe.records import (
    AnswerRow,
    ChatRequest,
    CheckRow,
    GradeRow,
    Snapshot,
    StreamRecord,
    SuiteItem,
)
from kurabe.store import Store
from kurabe.thinking import JUDGED_OUTCOMES, Split, split_stream

# (kind, item, repeat, model, model_b, position)
JudgeTask = tuple[str, SuiteItem, int, str, str, str]


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


class QualityPlan:
    """The round's items, models and the order of its work (deterministic, for resume)."""

    def __init__(self, config: ShootoutConfig, snapshot: Snapshot) -> None:
        assert config.quality is not None
        self.config = config
        self.q: QualityConfig = config.quality
        self.items = items_of(snapshot)
        self.by_id = {i.id: i for i in self.items}
        self.models = self.q.models or [m.name for m in config.models]
        self.model_cfg = {m.name: m for m in [*config.models, *config.judges]}
        self.judge_prompts = snapshot.judge_prompts or J.judge_prompts()

    def generation_plan(self) -> list[tuple[SuiteItem, int, str]]:
        plan: list[tuple[SuiteItem, int, str]] = []
        turn = 0
        for r in range(self.q.repeats):
            for item in self.items:
                order = self.models if turn % 2 == 0 else list(reversed(self.models))
                plan.extend((item, r, m) for m in order)
                turn += 1
        return plan

    def judge_plan(self, store: Store) -> list[JudgeTask]:
        answers = store.answered_keys()
        plan: list[JudgeTask] = []
        for item in self.items:
            if item.category in DETERMINISTIC_CATEGORIES:
                continue
            for r in range(self.q.repeats):
                for m in self.models:
                    if (m, item.id, r) in answers:
                        plan.append(("single", item, r, m, "", ""))
                if self.q.pairwise:
                    for a, b in combinations(self.models, 2):
                        if (a, item.id, r) in answers and (b, item.id, r) in answers:
                            plan.append(("pairwise", item, r, a, b, "ab"))
                            plan.append(("pairwise", item, r, a, b, "ba"))
        return plan


class GenerationPhase(Phase):
    name = "quality generation"

    def __init__(self, plan: QualityPlan) -> None:
        self.plan = plan

    def missing(self, store: Store) -> list[tuple[SuiteItem, int, str]]:
        done = store.answered_keys()
        return [(i, r, m) for i, r, m in self.plan.generation_plan() if (m, i.id, r) not in done]

    def pending(self, store: Store) -> int:
        return len(self.missing(store))

    def models_needed(self, store: Store) -> list[str]:
        return list(self.plan.models) if self.pending(store) else []

    async def run(self, ctx: PhaseContext) -> None:
        total = len(self.plan.generation_plan())
        missing = self.missing(ctx.store)
        done = total - len(missing)
        for item, repeat, model in missing:
            ctx.progress(f"answer {model} · {item.id}", done, total)
            if ctx.check_engine(model, self.name):
                if not await self._answer(ctx, model, item, repeat):
                    ctx.check_engine(model, self.name)
            else:
                self._skip(ctx, model, item, repeat)
            done += 1
        ctx.progress("answers", done, total)

    @staticmethod
    def _skip(ctx: PhaseContext, model: str, item: SuiteItem, repeat: int) -> None:
        """Store an answer that was not asked for because its engine had exited."""
        record = StreamRecord(sent_at_unix_s=time.time(), t_done_s=0.0, attempts=0,
                              error=ctx.skipped_because(model), error_kind="engine_exited")
        ctx.store.add_answer(AnswerRow(
            model=model, item_id=item.id, suite=item.suite, category=item.category,
            repeat=repeat, status="error", error=record.error, error_kind=record.error_kind,
            outcome="error", answer="", reasoning="", turns=[],
            metrics=speed_metrics(record).to_dict()))

    async def _answer(self, ctx: PhaseContext, model: str, item: SuiteItem, repeat: int
                      ) -> bool:
        """Ask one item (every turn) and store the answer; False when it failed."""
        cfg = self.plan.model_cfg[model]
        client, backend = ctx.clients[model], ctx.backends[model]
        extra = {**cfg.extra_body, **backend.reasoning_fields(cfg.reasoning)}
        opened = ctx.starts_in_reasoning.get(model)
        messages: list[dict[str, str]] = []
        turns: list[dict[str, Any]] = []
        record: StreamRecord | None = None
        split: Split | None = None
        for question in item.turns:
            messages.append({"role": "user", "content": question})
            req = ChatRequest(messages=list(messages), max_tokens=self.plan.q.max_tokens,
                              temperature=self.plan.config.run.temperature,
                              seed=self.plan.q.seed, extra_body=extra)
            record = await client.stream_chat(req)
            if record.error_kind == "engine_exited":
                record.error = f"engine exited: {record.error}"
            split = split_stream(record.timed_chunks(), starts_in_reasoning=opened,
                                 finish_reason=record.finish_reason).split
            turns.append({"question": question, "answer": split.answer,
                          "reasoning": split.reasoning, "record": record.to_dict()})
            if record.error:
                break
            messages.append({"role": "assistant", "content": split.answer})
        assert record is not None and split is not None  # an item has at least one turn
        metrics = speed_metrics(record, starts_in_reasoning=opened)
        ctx.store.add_answer(AnswerRow(
            model=model, item_id=item.id, suite=item.suite, category=item.category,
            repeat=repeat, status="error" if record.error else "ok", error=record.error,
            error_kind=record.error_kind if record.error else None,
            outcome=metrics.outcome, answer=split.answer,
            reasoning="\n\n".join(t["reasoning"] for t in turns if t["reasoning"]),
            turns=turns, metrics=metrics.to_dict()))
        return not record.error


class ChecksPhase(Phase):
    """Deterministic checks of every answer, and code checks in a headless browser."""

    name = "checks"

    def __init__(self, plan: QualityPlan) -> None:
        self.plan = plan

    def missing(self, store: Store) -> list[AnswerRow]:
        checked = store.checked_keys()
        return [a for a in store.answers() if a.key not in checked and a.item_id in self.plan.by_id]

    def pending(self, store: Store) -> int:
        return len(self.missing(store))

    def models_needed(self, store: Store) -> list[str]:
        return []

    async def run(self, ctx: PhaseContext) -> None:
        # Playwright's sync API and the checks are blocking: they run on a worker thread
        # while the event loop waits (the store is not used concurrently).
        await asyncio.to_thread(self.check_all, ctx.store, ctx.progress)

    def check_all(self, store: Store, progress: ProgressHook) -> None:
        from kurabe.evals import checks as C
        from kurabe.evals.cutoff import classify_fact_answer

        answers = self.missing(store)
        code_jobs = []
        for i, a in enumerate(answers):
            progress(f"check {a.model} · {a.item_id}", i, len(answers))
            item = self.plan.by_id[a.item_id]
            text, outcome = a.answer, a.outcome
            rows: list[tuple[str, bool | None, float | None, str | None]] = [
                ("outcome", None, None, outcome)]
            if text.strip():
                ratio = C.japanese_ratio(text)
                rows.append(("japanese_ratio", None, ratio.ratio, None))
                if item.lang in ("ja", "en"):
                    lang = C.language_mismatch(text, item.lang)
                    rows.append(("language", lang.passed, lang.ratio, lang.reason))
            limits = item.checks or {}
            if limits.get("max_chars") or limits.get("min_chars"):
                res = C.length_check(text, max_chars=limits.get("max_chars"),
                                     min_chars=limits.get("min_chars"))
                rows.append(("length", res.passed, res.chars, None))
            if outcome not in C.NOT_ANSWERED and text.strip():
                refusal = C.detect_refusal(text, item.lang, outcome)
                # passed = True means "refused" for this check: a finding, not a grade.
                rows.append(("refusal", refusal.refused, None,
                             ", ".join(refusal.patterns) or refusal.reason or None))
            if item.category == "cutoff":
                cls = classify_fact_answer(text, (item.meta or {}).get("accepted", []),
                                           item.lang, outcome=outcome)
                rows.append(("cutoff", cls == "correct", None, str(cls)))
            if limits.get("html_app") and self.plan.q.code_checks:
                code_jobs.append((a, item))
            for name, passed, value, detail in rows:
                store.add_check(CheckRow(model=a.model, item_id=a.item_id, repeat=a.repeat,
                                         name=name, passed=passed, value=value, detail=detail))
        if code_jobs:
            self._code_checks(store, progress, code_jobs)

    def _code_checks(self, store: Store, progress: ProgressHook,
                     jobs: list[tuple[AnswerRow, SuiteItem]]) -> None:
        from kurabe.evals.checks import NOT_ANSWERED
        from kurabe.evals.codecheck import check_app, extract_html

        def record(a: AnswerRow, name: str, passed: bool | None, detail: str) -> None:
            store.add_check(CheckRow(model=a.model, item_id=a.item_id, repeat=a.repeat,
                                     name=name, passed=passed, detail=detail))

        chromium = find_chromium()
        try:
            from playwright.sync_api import sync_playwright
        except ImportError:
            sync_playwright = None  # type: ignore[assignment]
        if chromium is None or sync_playwright is None:
            why = "no Chromium found" if chromium is None else "playwright is not installed"
            for a, _ in jobs:
                record(a, "code:skipped", None, why)
            return
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"])
            try:
                for n, (a, item) in enumerate(jobs):
                    progress(f"code check {a.model} · {a.item_id}", n, len(jobs))
                    if a.outcome in NOT_ANSWERED:
                        # No answer to try (NOT_ANSWERED): not a failed page.
                        record(a, "code:skipped", None, f"{a.outcome}: no answer to check")
                        continue
                    kind = item.checks["html_app"]
                    html = extract_html(a.answer)
                    if html is None:
                        record(a, "code:extracted", False, "no HTML document in the answer")
                        continue
                    result = check_app(kind, html, browser=browser)
                    record(a, "code:extracted", True, f"{len(html)} characters of HTML")
                    for sub in result.checks:
                        record(a, f"code:{sub.name}", sub.passed, sub.detail)
            finally:
                browser.close()


class JudgingPhase(Phase):
    name = "judging"

    def __init__(self, plan: QualityPlan, judge: str | None) -> None:
        self.plan = plan
        self.judge = judge

    def missing(self, store: Store) -> list[JudgeTask]:
        if not self.judge:
            return []
        done = store.graded_keys(self.judge)
        return [t for t in self.plan.judge_plan(store)
                if (t[0], t[1].id, t[2], t[3], t[4], t[5]) not in done]

    def pending(self, store: Store) -> int:
        return len(self.missing(store))

    def models_needed(self, store: Store) -> list[str]:
        # Answers still to generate will need grading in this run too.
        gen = GenerationPhase(self.plan).pending(store)
        return [self.judge] if self.judge and (gen or self.pending(store)) else []

    async def run(self, ctx: PhaseContext) -> None:
        assert self.judge is not None
        judge = self.judge
        client, backend = ctx.clients[judge], ctx.backends[judge]
        answers = {a.key: a for a in ctx.store.answers()}
        done = ctx.store.graded_keys(judge)
        plan = self.plan.judge_plan(ctx.store)
        prompts = self.plan.judge_prompts
        total = len(plan)
        judge_cfg = self.plan.model_cfg[judge]
        extra = {**judge_cfg.extra_body, **backend.reasoning_fields(self.plan.q.judge_reasoning)}
        for finished, (kind, item, r, m, mb, pos) in enumerate(plan, start=1):
            if (kind, item.id, r, m, mb, pos) in done:
                continue
            ctx.progress(f"judge {kind} {m}{' vs ' + mb if mb else ''} · {item.id}",
                         finished, total)
            base: dict[str, Any] = {"judge": judge, "kind": kind, "item_id": item.id,
                                    "repeat": r, "model": m, "model_b": mb or None,
                                    "position": pos or None}
            sides = [answers[(m, item.id, r)]] + ([answers[(mb, item.id, r)]] if mb else [])
            not_answered = [s for s in sides if s.outcome not in JUDGED_OUTCOMES]
            if not_answered:
                # Only answers are graded: never thinking_exhausted / stopped_in_thinking /
                # empty / leaked ones.
                ctx.store.add_grade(GradeRow(**base, status="skipped", detail=", ".join(
                    f"{s.model}: {s.outcome}" for s in not_answered)))
                continue
            if not ctx.check_engine(judge, self.name):
                ctx.store.add_grade(GradeRow(**base, status="error", error_kind="engine_exited",
                                             detail=ctx.skipped_because(judge)))
                continue
            questions = [t["question"] for t in sides[0].turns]
            if kind == "single":
                messages = J.single_prompt(
                    turns=questions, answers=[t["answer"] for t in sides[0].turns],
                    lang=item.lang, category=item.category, rubric=item.rubric,
                    reference=item.reference, prompts=prompts)
                schema = prompts["single_schema"]
            else:
                first, second = (sides[0], sides[1]) if pos == "ab" else (sides[1], sides[0])
                messages = J.pair_prompt(
                    turns=questions, answers_a=[t["answer"] for t in first.turns],
                    answers_b=[t["answer"] for t in second.turns], lang=item.lang,
                    category=item.category, rubric=item.rubric, reference=item.reference,
                    prompts=prompts)
                schema = prompts["pair_schema"]
            too_long = await context_exceeded(ctx, judge, messages, self.plan.q.judge_max_tokens)
            if too_long:  # never sent: a resume does not retry it
                ctx.store.add_grade(GradeRow(**base, status="error", detail=too_long,
                                             error_kind="context_exceeded"))
                continue
            req = ChatRequest(messages=messages, max_tokens=self.plan.q.judge_max_tokens,
                              temperature=0.0, seed=self.plan.q.seed,
                              extra_body={**extra, **backend.structured_output(schema)})
            record = await client.stream_chat(req)
            if backend.refused_structured_output(record):
                # The engine refused structured output: ask again, parse the text.
                req.extra_body = extra
                record = await client.stream_chat(req)
            split = split_stream(record.timed_chunks()).split
            if record.error:
                ctx.store.add_grade(GradeRow(**base, status="error", detail=record.error,
                                             error_kind=record.error_kind))
                ctx.check_engine(judge, self.name)
                continue
            verdict = (J.parse_single(split.answer) if kind == "single"
                       else J.parse_pair(split.answer))
            ctx.store.add_grade(GradeRow(
                **base, status=verdict.status, score=verdict.score, verdict=verdict.winner,
                explanation=verdict.explanation, raw_output=split.answer,
                judge_reasoning=split.reasoning,
                detail=f"parsed from {verdict.how}" if verdict.how else
                ("judge thinking used the whole budget" if not split.answer and split.reasoning
                 else "no grade found in the judge's answer"),
            ))
        ctx.progress("judging", total, total)


def quality_phases(config: ShootoutConfig, snapshot: Snapshot) -> list[Phase]:
    if config.quality is None:
        return []
    plan = QualityPlan(config, snapshot)
    phases: list[Phase] = [GenerationPhase(plan), ChecksPhase(plan)]
    if config.quality.judge and config.quality.calibrate:
        # The judge grades known-good and known-bad answers before it grades the models.
        from kurabe.phases.calibration import CalibrationPhase

        phases.append(CalibrationPhase(config, snapshot, config.quality.judge))
    from kurabe.phases.judge_probes import JudgeProbesPhase

    return [*phases, JudgingPhase(plan, config.quality.judge),
            JudgeProbesPhase(plan, config.quality.judge)]
