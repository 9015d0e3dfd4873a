"""Will the judge's prompts fit its context? Checked before the round, and before each send.

A judge prompt holds the question, the rubric, the reference and one or two answers; against
a judge with a small context a long one (two code pages side by side) fails on the server.
Before the judging phases start, every prompt they will send is counted (``ContextCheck``):
with the judge engine's own tokenizer where the server has one (llama.cpp's /apply-template
and /tokenize), else by an estimate (``estimate_prompt_tokens``); an answer not generated
yet counts as its model's ``max_tokens``. The result is said before the round and stored as
a ``judge_context`` event. When the time comes, a prompt whose exact count does not fit
(with ``judge_max_tokens`` kept for the verdict) is not sent: it is stored as an error of
kind ``context_exceeded``, which a resume does not retry.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from kurabe.phases import PhaseContext, warn_through
from kurabe.thinking import JUDGED_OUTCOMES

if TYPE_CHECKING:
    from kurabe.client import ChatClient
    from kurabe.phases import Phase
    from kurabe.store import Store

# The estimate where the judge's server has no tokenizer to ask: UTF-8 bytes / 2 per message,
# plus a few tokens of chat markers. Tokenizers of current models need fewer tokens than
# that for English (about 4 bytes a token) and Japanese (3 bytes a character, about one
# character a token); only a byte-level fallback needs more.
ESTIMATE_BYTES_PER_TOKEN = 2
MESSAGE_OVERHEAD_TOKENS = 8

KINDS = ("single", "pairwise", "sweep")


def estimate_prompt_tokens(messages: list[dict[str, str]]) -> int:
    return sum(math.ceil(len(str(m.get("content", "")).encode("utf-8"))
                         / ESTIMATE_BYTES_PER_TOKEN) + MESSAGE_OVERHEAD_TOKENS
               for m in messages)


async def count_prompt(client: ChatClient, messages: list[dict[str, str]]
                       ) -> tuple[int, bool]:
    """(tokens, exact): by the judge's own tokenizer where its server can say, else the
    estimate (exact False)."""
    counted = await client.count_prompt_tokens(messages)
    if counted is not None:
        return counted, True
    return estimate_prompt_tokens(messages), False


async def judge_context_size(ctx: PhaseContext, judge: str) -> int | None:
    """The judge's context, asked of its server once per run (None: it does not say)."""
    if judge not in ctx.context_sizes:
        client = ctx.clients.get(judge)
        ctx.context_sizes[judge] = await client.context_size() if client else None
    return ctx.context_sizes[judge]


def exceeded_detail(tokens: int, ctx_size: int, reserve: int) -> str:
    return (f"not sent: the prompt is {tokens} tokens, the judge's context {ctx_size} "
            f"tokens with {reserve} of them kept for its verdict (judge_max_tokens)")


async def context_exceeded(ctx: PhaseContext, judge: str, messages: list[dict[str, str]],
                           reserve: int) -> str | None:
    """Why the prompt is not to be sent (its exact count does not fit the judge's context
    with ``reserve`` tokens kept for the verdict), or None: it fits, or nobody can say."""
    size = await judge_context_size(ctx, judge)
    if size is None:
        return None
    tokens, exact = await count_prompt(ctx.clients[judge], messages)
    if not exact or tokens + reserve <= size:
        return None
    return exceeded_detail(tokens, size, reserve)


# -- the check before the round -------------------------------------------------------------


@dataclass
class PromptToCheck:
    """One prompt a judging phase will send; ``bound`` tokens are added for answers that do
    not exist yet (their model's ``max_tokens`` each: ``messages`` hold them empty)."""

    kind: str  # single | pairwise | sweep
    messages: list[dict[str, str]]
    bound: int = 0


@dataclass
class KindCount:
    checked: int = 0
    over: int = 0  # will not fit (every answer in it exists)
    may_exceed: int = 0  # may not fit, if the answers still to come run to max_tokens
    largest: int = 0  # tokens of the longest prompt (answers to come at their bound)


@dataclass
class ContextCheck:
    judge: str
    ctx: int | None  # None: the judge's server does not say
    reserve: int  # tokens kept for the verdict (judge_max_tokens)
    counted_by: str  # tokenizer | estimate
    kinds: dict[str, KindCount] = field(default_factory=dict)

    @property
    def checked(self) -> int:
        return sum(k.checked for k in self.kinds.values())

    @property
    def over(self) -> int:
        return sum(k.over for k in self.kinds.values())

    @property
    def may_exceed(self) -> int:
        return sum(k.may_exceed for k in self.kinds.values())

    def message(self) -> str:
        """One line: what will not fit, or that everything fits, or that nobody can say."""
        if self.ctx is None:
            return (f"judge {self.judge}: its server does not say its context size, so "
                    f"{self.checked} judge prompt{'s' if self.checked != 1 else ''} could not "
                    "be checked against it; a prompt too long for it fails as an error")
        head = f"judge {self.judge} (ctx {self.ctx}, {self.reserve} kept for the verdict)"
        estimated = self.counted_by == "estimate"
        parts = []
        for kind, c in self.kinds.items():
            if c.over:
                parts.append(f"{c.over} of {c.checked} {kind} prompts "
                             + ("are estimated not to fit" if estimated else "will not fit"))
            if c.may_exceed:
                parts.append(f"{c.may_exceed} of {c.checked} {kind} prompts may not fit if "
                             "their answers run to max_tokens")
        if not parts:
            return f"{head}: all {self.checked} judge prompts fit"
        if estimated:
            tail = ("counted by an estimate (UTF-8 bytes / 2): the judge's server has no "
                    "tokenizer to ask, so they are sent anyway")
        else:
            tail = ("prompts that do not fit are not sent: they are stored as errors "
                    "(context_exceeded)")
        return f"{head}: {'; '.join(parts)}; {tail}"

    @property
    def warns(self) -> bool:
        return self.ctx is None or bool(self.over or self.may_exceed)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "message": self.message()}


async def check_prompts(ctx: PhaseContext, judge: str, reserve: int,
                        prompts: list[PromptToCheck]) -> ContextCheck:
    size = await judge_context_size(ctx, judge)
    check = ContextCheck(judge, size, reserve, "tokenizer")
    seen: dict[str, tuple[int, bool]] = {}
    for p in prompts:
        counts = check.kinds.setdefault(p.kind, KindCount())
        counts.checked += 1
        key = json.dumps(p.messages, ensure_ascii=False)
        if key not in seen:
            seen[key] = await count_prompt(ctx.clients[judge], p.messages)
        tokens, exact = seen[key]
        if not exact:
            check.counted_by = "estimate"
        tokens += p.bound
        counts.largest = max(counts.largest, tokens)
        if size is not None and tokens + reserve > size:
            if p.bound:
                counts.may_exceed += 1
            else:
                counts.over += 1
    return check


def quality_prompts(phase: Any, store: Store) -> list[PromptToCheck]:
    """Every prompt the judging phase (``kurabe.phases.quality.JudgingPhase``) will send in
    this round: its missing grades, answers to come bounded by ``[quality] max_tokens``."""
    from kurabe.evals import judge as J
    from kurabe.evals.suites import DETERMINISTIC_CATEGORIES

    plan = phase.plan
    q = plan.q
    done = store.graded_keys(phase.judge)
    answers = {a.key: a for a in store.answers()}
    out: list[PromptToCheck] = []

    def side(model: str, item_id: str, r: int, n_turns: int) -> tuple[list[str], int] | None:
        """(the answer's turns, the tokens to add); None: it will not be graded."""
        answer = answers.get((model, item_id, r))
        if answer is None:
            return [""] * n_turns, n_turns * q.max_tokens
        if answer.outcome not in JUDGED_OUTCOMES:
            return None  # stored as skipped, never sent
        return [t["answer"] for t in answer.turns], 0

    for item in plan.items:
        if item.category in DETERMINISTIC_CATEGORIES:
            continue
        n = len(item.turns)
        for r in range(q.repeats):
            for m in plan.models:
                got = side(m, item.id, r, n)
                if got is None or ("single", item.id, r, m, "", "") in done:
                    continue
                out.append(PromptToCheck("single", J.single_prompt(
                    turns=item.turns, answers=got[0], lang=item.lang, category=item.category,
                    rubric=item.rubric, reference=item.reference, prompts=plan.judge_prompts),
                    got[1]))
            if not q.pairwise:
                continue
            for i, a in enumerate(plan.models):
                for b in plan.models[i + 1:]:
                    sa, sb = side(a, item.id, r, n), side(b, item.id, r, n)
                    if sa is None or sb is None:
                        continue
                    for pos, (first, second) in (("ab", (sa, sb)), ("ba", (sb, sa))):
                        if ("pairwise", item.id, r, a, b, pos) in done:
                            continue
                        out.append(PromptToCheck("pairwise", J.pair_prompt(
                            turns=item.turns, answers_a=first[0], answers_b=second[0],
                            lang=item.lang, category=item.category, rubric=item.rubric,
                            reference=item.reference, prompts=plan.judge_prompts),
                            first[1] + second[1]))
    return out


async def check_before_round(ctx: PhaseContext, phases: list[Phase]) -> list[ContextCheck]:
    """Count every prompt each judging phase will send against its judge's context; say
    what will not fit (``progress.warn``) and store it (a ``judge_context`` event)."""
    from kurabe.phases.judge_probes import SweepJudgingPhase
    from kurabe.phases.quality import JudgingPhase

    wanted: dict[tuple[str, int], list[PromptToCheck]] = {}
    for phase in phases:
        if isinstance(phase, JudgingPhase) and phase.judge in ctx.clients:
            wanted.setdefault((phase.judge, phase.plan.q.judge_max_tokens), []).extend(
                quality_prompts(phase, ctx.store))
        elif isinstance(phase, SweepJudgingPhase) and phase.judge in ctx.clients:
            wanted.setdefault((phase.judge, phase.q.judge_max_tokens), []).extend(
                phase.prompts_to_check(ctx.store))
    checks = []
    for (judge, reserve), prompts in wanted.items():
        if not prompts:
            continue
        check = await check_prompts(ctx, judge, reserve, prompts)
        ctx.store.add_event("judge_context", json.dumps(check.to_dict(), ensure_ascii=False))
        if check.warns:
            warn_through(ctx.progress, check.message())
        checks.append(check)
    return checks
