"""The judge's diagnostics, asked after the round, and the grades of the reasoning sweep.

``JudgeProbesPhase`` runs after the judging phase on a deterministic sample of the single
grades that were scored (``[quality] probe_sample``, drawn with ``[quality] seed``):

* ``free``: the same prompt without the grammar (no ``response_format``), parsed from the
  text. A judge whose grades exist only because a grammar forced them shows it here: its
  free answers are unscored, or disagree with the forced grade.
* ``consistency``: the same prompt with the grammar, ``consistency_repeats`` more times at
  ``consistency_temperature``, each with its own seed: how far its grades spread.
* ``refusal`` (``[quality] refusal_judge``): for every answer the refusal patterns were run
  on, a yes/no "does this answer refuse the request?" with its own schema.

``SweepJudgingPhase`` single-grades every answer of the reasoning sweep (the sweep's judge,
else the quality judge), so the sweep can weigh quality against thinking time.

Every answer is stored in ``judge_probes`` as it lands (the latest row of a key counts); a
failed probe is retried on resume, one whose prompt does not fit the judge's context is
stored as ``context_exceeded`` and is not.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from kurabe.config import QualityConfig, ShootoutConfig
from kurabe.evals import judge as J
from kurabe.evals.refusal_judge import REFUSAL_SCHEMA, parse_refusal, refusal_prompt
from kurabe.inputs import prompts_of
from kurabe.phases import Phase, PhaseContext
from kurabe.phases.judge_context import PromptToCheck, context_exceeded
from kurabe.phases.quality import GenerationPhase, JudgingPhase, QualityPlan
from kurabe.phases.speed import run_schedule
from kurabe.records import (
    AnswerRow,
    ChatRequest,
    GradeRow,
    ProbeRow,
    RequestRow,
    Snapshot,
    StreamRecord,
)
from kurabe.store import Store
from kurabe.thinking import JUDGED_OUTCOMES, Split, split_content, split_stream

# (probe, item_id, repeat, model, setting, attempt): a probe's key in the store
ProbeKey = tuple[str, str, int, str, str, int]


def sample_answers(keys: list[tuple[str, str, int]], n: int, seed: int
                   ) -> list[tuple[str, str, int]]:
    """``n`` of the (model, item, repeat) keys, chosen by a seeded hash of each key: the same
    keys and seed give the same sample in any order, and a key added later (a resumed
    round) displaces at most one, never reshuffles the rest."""
    def rank(key: tuple[str, str, int]) -> str:
        text = f"{seed}\x00{key[0]}\x00{key[1]}\x00{key[2]}"
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    return sorted(sorted(set(keys), key=rank)[:n])


def latest_single_grades(store: Store, judge: str) -> dict[tuple[str, str, int], GradeRow]:
    """The judge's latest single grade of each answer, by (model, item, repeat)."""
    return {(g.model, g.item_id, g.repeat): g for g in store.grades(judge)
            if g.kind == "single"}


@dataclass
class JudgeAnswer:
    """What the judge answered: its text (reasoning apart), or the request's error."""

    record: StreamRecord
    split: Split


async def ask_judge(ctx: PhaseContext, judge: str, messages: list[dict[str, str]], *,
                    max_tokens: int, temperature: float, seed: int,
                    extra: dict[str, Any], schema: dict[str, Any] | None) -> JudgeAnswer:
    """One request to the judge: with the grammar when ``schema`` is given (asked again
    without it when the engine refuses structured output), else as plain text."""
    client, backend = ctx.clients[judge], ctx.backends[judge]
    structured = backend.structured_output(schema) if schema is not None else {}
    req = ChatRequest(messages=messages, max_tokens=max_tokens, temperature=temperature,
                      seed=seed, extra_body={**extra, **structured})
    record = await client.stream_chat(req)
    if structured and backend.refused_structured_output(record):
        req.extra_body = dict(extra)
        record = await client.stream_chat(req)
    return JudgeAnswer(record, split_stream(record.timed_chunks()).split)


def _no_grade_detail(split: Split) -> str:
    return ("judge thinking used the whole budget" if not split.answer and split.reasoning
            else "no grade found in the judge's answer")


class _ProbingPhase(Phase):
    """What the probe phases share: the judge, its settings, storing each answer."""

    judge: str | None
    q: QualityConfig
    judge_prompts: dict[str, Any]
    model_cfg: dict[str, Any]

    def plan_tasks(self, store: Store) -> list[ProbeKey]:
        raise NotImplementedError

    def missing(self, store: Store) -> list[ProbeKey]:
        if not self.judge:
            return []
        done = store.probed_keys(self.judge)
        return [t for t in self.plan_tasks(store) if t not in done]

    def pending(self, store: Store) -> int:
        return len(self.missing(store))

    def _extra(self, ctx: PhaseContext) -> dict[str, Any]:
        assert self.judge is not None
        cfg = self.model_cfg[self.judge]
        return {**cfg.extra_body,
                **ctx.backends[self.judge].reasoning_fields(self.q.judge_reasoning)}

    def _store(self, ctx: PhaseContext, key: ProbeKey, status: str, **fields: Any) -> None:
        assert self.judge is not None
        probe, item_id, repeat, model, setting, attempt = key
        ctx.store.add_probe(ProbeRow(judge=self.judge, probe=probe, item_id=item_id,
                                     repeat=repeat, model=model, setting=setting,
                                     attempt=attempt, status=status, **fields))

    async def _grade(self, ctx: PhaseContext, key: ProbeKey, messages: list[dict[str, str]],
                     *, schema: dict[str, Any] | None, temperature: float, seed: int,
                     refusal: bool = False) -> None:
        """Ask, parse and store one probe (a prompt too long for the judge is not sent)."""
        assert self.judge is not None
        judge = self.judge
        if not ctx.check_engine(judge, self.name):
            self._store(ctx, key, "error", error_kind="engine_exited",
                        detail=ctx.skipped_because(judge))
            return
        too_long = await context_exceeded(ctx, judge, messages, self.q.judge_max_tokens)
        if too_long:
            self._store(ctx, key, "error", error_kind="context_exceeded", detail=too_long)
            return
        got = await ask_judge(ctx, judge, messages, max_tokens=self.q.judge_max_tokens,
                              temperature=temperature, seed=seed, extra=self._extra(ctx),
                              schema=schema)
        if got.record.error:
            self._store(ctx, key, "error", detail=got.record.error,
                        error_kind=got.record.error_kind)
            ctx.check_engine(judge, self.name)
            return
        text = got.split.answer
        if refusal:
            verdict = parse_refusal(text)
            self._store(ctx, key, verdict.status, raw_output=text,
                        verdict=(None if verdict.refused is None else
                                 "refused" if verdict.refused else "not_refused"),
                        explanation=verdict.explanation,
                        detail=f"parsed from {verdict.how}" if verdict.how
                        else _no_grade_detail(got.split))
        else:
            grade = J.parse_single(text)
            self._store(ctx, key, grade.status, score=grade.score, raw_output=text,
                        explanation=grade.explanation,
                        detail=f"parsed from {grade.how}" if grade.how
                        else _no_grade_detail(got.split))


class JudgeProbesPhase(_ProbingPhase):
    """Forced against free grades, consistency and refusal confirmation (module docs)."""

    name = "judge probes"

    def __init__(self, plan: QualityPlan, judge: str | None) -> None:
        self.plan = plan
        self.judge = judge
        self.q = plan.q
        self.judge_prompts = plan.judge_prompts
        self.model_cfg = plan.model_cfg

    @property
    def enabled(self) -> bool:
        return bool(self.judge) and (self.q.probe_sample > 0 or self.q.refusal_judge)

    def sample(self, store: Store) -> list[tuple[str, str, int]]:
        """The answers whose scored single grade is probed: (model, item, repeat)."""
        if not self.judge or not self.q.probe_sample:
            return []
        scored = [k for k, g in latest_single_grades(store, self.judge).items()
                  if g.status == "scored" and k[1] in self.plan.by_id]
        return sample_answers(scored, self.q.probe_sample, self.q.seed)

    def plan_tasks(self, store: Store) -> list[ProbeKey]:
        tasks: list[ProbeKey] = []
        for model, item_id, r in self.sample(store):
            tasks.append(("free", item_id, r, model, "", 0))
            tasks += [("consistency", item_id, r, model, "", k)
                      for k in range(1, self.q.consistency_repeats + 1)]
        if self.q.refusal_judge:
            seen = set()
            for c in store.checks():
                key = (c.model, c.item_id, c.repeat)
                if (c.name == "refusal" and c.passed is not None and c.item_id in self.plan.by_id
                        and key not in seen):
                    seen.add(key)
                    tasks.append(("refusal", c.item_id, c.repeat, c.model, "", 0))
        return tasks

    def models_needed(self, store: Store) -> list[str]:
        if not self.enabled:
            return []
        assert self.judge is not None
        later = (GenerationPhase(self.plan).pending(store)
                 or JudgingPhase(self.plan, self.judge).pending(store))
        return [self.judge] if later or self.pending(store) else []

    async def run(self, ctx: PhaseContext) -> None:
        assert self.judge is not None
        backend = ctx.backends[self.judge]
        answers = {a.key: a for a in ctx.store.answers()}
        missing = self.missing(ctx.store)
        total = len(self.plan_tasks(ctx.store))
        done = total - len(missing)
        schema = self.judge_prompts["single_schema"]
        for key in missing:
            probe, item_id, r, model, _setting, attempt = key
            ctx.progress(f"judge probe {probe} {model} · {item_id}", done, total)
            done += 1
            answer = answers.get((model, item_id, r))
            if answer is None:
                self._store(ctx, key, "skipped", detail="the answer is not stored")
                continue
            if probe == "refusal":
                await self._grade(ctx, key, self._refusal_messages(answer),
                                  schema=self.judge_prompts.get("refusal_schema",
                                                                REFUSAL_SCHEMA),
                                  temperature=0.0, seed=self.q.seed, refusal=True)
                continue
            messages = self._single_messages(answer)
            if probe == "free":
                if not backend.structured_output(schema):
                    # This engine takes no grammar: its main grades were free already.
                    self._store(ctx, key, "skipped",
                                detail="the judge's engine takes no structured output")
                    continue
                await self._grade(ctx, key, messages, schema=None, temperature=0.0,
                                  seed=self.q.seed)
            else:
                await self._grade(ctx, key, messages, schema=schema,
                                  temperature=self.q.consistency_temperature,
                                  seed=self.q.seed + attempt)
        ctx.progress("judge probes", total, total)

    def _single_messages(self, answer: AnswerRow) -> list[dict[str, str]]:
        item = self.plan.by_id[answer.item_id]
        return J.single_prompt(
            turns=[t["question"] for t in answer.turns],
            answers=[t["answer"] for t in answer.turns], lang=item.lang,
            category=item.category, rubric=item.rubric, reference=item.reference,
            prompts=self.judge_prompts)

    def _refusal_messages(self, answer: AnswerRow) -> list[dict[str, str]]:
        item = self.plan.by_id[answer.item_id]
        return refusal_prompt(turns=[t["question"] for t in answer.turns],
                              answers=[t["answer"] for t in answer.turns], lang=item.lang,
                              prompts=self.judge_prompts)


def sweep_answer(row: RequestRow) -> str:
    """A sweep request's answer, its reasoning split off as the metrics split it."""
    chunks = row.record.get("chunks") or []  # [t, content, reasoning(, n_tokens)]
    content = "".join(c[1] for c in chunks)
    server_reasoning = "".join(c[2] for c in chunks)
    m = row.metrics
    fmt = m.get("reasoning_format")
    opened = (True if fmt == "think-opened" or m.get("outcome") == "answered_without_thinking"
              else None if fmt is None else False)
    return split_content(content, server_reasoning, starts_in_reasoning=opened,
                         finish_reason=m.get("finish_reason")).answer


class SweepJudgingPhase(_ProbingPhase):
    """A single grade (category, no reference) of every answer of the reasoning sweep."""

    name = "sweep judging"

    def __init__(self, config: ShootoutConfig, snapshot: Snapshot) -> None:
        self.config = config
        self.judge = config.sweep_judge
        self.q = config.quality or QualityConfig()
        self.judge_prompts = snapshot.judge_prompts or J.judge_prompts()
        self.model_cfg = {m.name: m for m in [*config.models, *config.judges]}
        self.prompts = {p.id: p for p in prompts_of(snapshot)}
        self.snapshot = snapshot
        sweep = config.reasoning_sweep
        self.max_tokens = (sweep.max_tokens if sweep and sweep.max_tokens
                           else config.run.max_tokens)

    def _rows(self, store: Store) -> list[RequestRow]:
        return [r for r in store.requests(phase="sweep", status="ok")
                if r.prompt_id in self.prompts]

    def plan_tasks(self, store: Store) -> list[ProbeKey]:
        if not self.judge:
            return []
        return [("sweep", r.prompt_id, r.repeat, r.model, r.setting, 0)
                for r in self._rows(store)]

    def _sweep_to_come(self, store: Store) -> list[Any]:
        done = store.completed_seqs()
        return [s for s in run_schedule(self.config, self.snapshot)
                if s.phase == "sweep" and s.seq not in done]

    def models_needed(self, store: Store) -> list[str]:
        if not self.judge:
            return []
        return [self.judge] if self.pending(store) or self._sweep_to_come(store) else []

    def _messages(self, prompt_id: str, answer: str) -> list[dict[str, str]]:
        p = self.prompts[prompt_id]
        return J.single_prompt(turns=[p.text], answers=[answer], lang=p.lang,
                               category=p.category, rubric=None, reference=None,
                               prompts=self.judge_prompts)

    def prompts_to_check(self, store: Store) -> list[PromptToCheck]:
        """Every prompt this phase will send: stored answers as they are, answers still to
        come bounded by the sweep's ``max_tokens``."""
        if not self.judge:
            return []
        done = store.probed_keys(self.judge)
        out = []
        for row in self._rows(store):
            key = ("sweep", row.prompt_id, row.repeat, row.model, row.setting, 0)
            if key not in done and row.metrics.get("outcome") in JUDGED_OUTCOMES:
                out.append(PromptToCheck("sweep", self._messages(row.prompt_id,
                                                                 sweep_answer(row))))
        for s in self._sweep_to_come(store):
            out.append(PromptToCheck("sweep", self._messages(s.prompt_id, ""), self.max_tokens))
        return out

    async def run(self, ctx: PhaseContext) -> None:
        assert self.judge is not None
        rows = {("sweep", r.prompt_id, r.repeat, r.model, r.setting, 0): r
                for r in self._rows(ctx.store)}
        missing = self.missing(ctx.store)
        total = len(rows)
        done = total - len(missing)
        for key in missing:
            row = rows[key]
            ctx.progress(f"judge sweep {row.model} [{row.setting}] · {row.prompt_id}", done,
                         total)
            done += 1
            outcome = row.metrics.get("outcome")
            if outcome not in JUDGED_OUTCOMES:
                # As in the quality round, only answers are graded.
                self._store(ctx, key, "skipped", detail=f"{row.model}: {outcome}")
                continue
            await self._grade(ctx, key, self._messages(row.prompt_id, sweep_answer(row)),
                              schema=self.judge_prompts["single_schema"], temperature=0.0,
                              seed=self.q.seed)
        ctx.progress("sweep judging", total, total)


def sweep_judging_phases(config: ShootoutConfig, snapshot: Snapshot) -> list[Phase]:
    """The sweep's grading, when the run has a sweep and a judge for it."""
    if config.reasoning_sweep is None or not config.sweep_judge:
        return []
    return [SweepJudgingPhase(config, snapshot)]
