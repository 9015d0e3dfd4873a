"""The order requests are sent in: warm-ups first, then interleaved rounds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple


@dataclass(frozen=True)
class Scheduled:
    seq: int
    model: str
    prompt_id: str
    repeat: int
    phase: str  # warmup | measure | sweep
    setting: str | int | None = None  # reasoning setting (sweep requests)


class SweepPlan(NamedTuple):
    """The reasoning sweep: these models answer these prompts at each setting."""

    models: list[str]
    prompt_ids: list[str]
    settings: list[str | int]
    repeats: int


def build_schedule(models: list[str], prompt_ids: list[str], repeats: int, warmup: int,
                   sweep: SweepPlan | None = None
                   ) -> list[Scheduled]:
    """Deterministic, so a resumed run knows exactly which requests are still missing.

    Each model gets ``warmup`` unmeasured requests. Then, for every repeat and prompt, each
    model answers once; the model order alternates between rounds (A B, B A, ...) so that
    slow drift (heat, background load) does not favour whoever always goes first.
    """
    out: list[Scheduled] = []
    for m in models:
        for w in range(warmup):
            out.append(Scheduled(len(out), m, prompt_ids[w % len(prompt_ids)], w, "warmup"))
    round_no = 0
    for r in range(repeats):
        for pid in prompt_ids:
            order = models if round_no % 2 == 0 else list(reversed(models))
            for m in order:
                out.append(Scheduled(len(out), m, pid, r, "measure"))
            round_no += 1
    if sweep is not None:
        # The reasoning sweep: every (prompt, setting) for each swept model, same alternation.
        s_models, s_prompts, settings, s_repeats = sweep
        for r in range(s_repeats):
            for pid in s_prompts:
                for setting in settings:
                    order = s_models if round_no % 2 == 0 else list(reversed(s_models))
                    for m in order:
                        out.append(Scheduled(len(out), m, pid, r, "sweep", setting))
                    round_no += 1
    return out
