"""Speed summary, paired comparisons and fairness guards over stored request rows."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import combinations
from statistics import mean, median
from typing import Any

import numpy as np

from kurabe.analysis.stats import Estimate, Ratio, median_ci, paired_ratio
from kurabe.store import RequestRow

# Metrics summarised per model: key -> (label, unit, higher_is_better)
SUMMARY_METRICS: dict[str, tuple[str, str, bool]] = {
    "decode_tokens_per_s": ("decode", "tokens/s", True),
    "prompt_tokens_per_s": ("prompt", "tokens/s", True),
    "ttft_s": ("time to first token", "s", False),
    "e2e_s": ("end-to-end latency", "s", False),
    "itl_per_token_s": ("inter-token latency (per token)", "s", False),
    "itl_per_chunk_median_s": ("inter-chunk latency (median gap)", "s", False),
    "chars_per_s": ("answer characters/s", "chars/s", True),
    "bytes_per_s": ("answer UTF-8 bytes/s", "bytes/s", True),
    "chars_per_token": ("characters per token", "chars/token", True),
    "output_tokens": ("output tokens", "tokens", True),
    "answer_chars": ("answer characters", "chars", True),
    "server_decode_tokens_per_s": ("decode (server's own clock)", "tokens/s", True),
    "server_prompt_tokens_per_s": ("prompt (server's own clock)", "tokens/s", True),
    "reasoning_tokens": ("reasoning tokens", "tokens", False),
    "thinking_s": ("time spent thinking", "s", False),
    "reasoning_decode_tokens_per_s": ("decode while reasoning", "tokens/s", True),
    "answer_decode_tokens_per_s": ("decode while answering", "tokens/s", True),
}
# Shown only when some model reasoned.
REASONING_METRICS = ("reasoning_tokens", "thinking_s", "reasoning_decode_tokens_per_s",
                     "answer_decode_tokens_per_s")
COMPARED_METRICS = ("decode_tokens_per_s", "chars_per_s", "prompt_tokens_per_s", "ttft_s")

LENGTH_TOLERANCE = 0.10  # output lengths differing by more than this are flagged
REASONING_SHARE_TOLERANCE = 0.10  # absolute difference in reasoning share
CLOCK_TOLERANCE = 0.05  # client vs server decode rate
CLOCK_MIN_TOKENS = 32


@dataclass
class Comparison:
    a: str
    b: str
    metric: str
    ratio: Ratio

    def sentence(self) -> str:
        label, _, higher_better = SUMMARY_METRICS[self.metric]
        r = self.ratio
        if r.ratio is None:
            return f"{self.a} vs {self.b}: no matched pairs for {label}"
        verb = {"decode_tokens_per_s": "decodes", "chars_per_s": "writes answer characters",
                "prompt_tokens_per_s": "processes prompts"}.get(self.metric)
        fast, slow, factor, lo, hi = self.a, self.b, r.ratio, r.ci_low, r.ci_high
        if not higher_better:  # a smaller time is better: a/b < 1 means a wins
            factor, lo, hi = 1 / factor, (1 / hi if hi else None), (1 / lo if lo else None)
        if factor < 1:
            fast, slow = slow, fast
            factor, lo, hi = 1 / factor, (1 / hi if hi else None), (1 / lo if lo else None)
        ci = f"95% CI {lo:.2f}–{hi:.2f}, n={r.n}" if lo is not None else f"n={r.n}, no interval"
        if r.no_verdict is not None:  # too few prompts: the figure, but no verdict
            return (f"no clear winner in {label}: {r.no_verdict}; {fast} vs {slow} = "
                    f"{factor:.2f}× ({ci})")
        if not r.decided:
            return (f"no clear winner in {label}: {fast} vs {slow} = {factor:.2f}× "
                    f"({ci}; the interval includes 1.0)")
        if verb is None:
            return f"{fast} has {factor:.2f}× lower {label} than {slow} ({ci})"
        return f"{fast} {verb} {factor:.2f}× faster than {slow} ({ci})"

    def to_dict(self) -> dict:
        return {"a": self.a, "b": self.b, "metric": self.metric, **self.ratio.to_dict(),
                "sentence": self.sentence()}


@dataclass
class FairnessWarning:
    code: str
    message: str

    def to_dict(self) -> dict:
        return {"code": self.code, "message": self.message}


@dataclass
class SpeedAnalysis:
    models: list[str]
    per_model: dict[str, dict[str, Estimate]]
    per_prompt: list[dict[str, Any]]
    comparisons: list[Comparison]
    warnings: list[FairnessWarning]
    counts: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def any_reasoning(self) -> bool:
        return any((self.per_model[m]["reasoning_tokens"].median or 0) > 0
                   or self.counts[m].get("thinking_exhausted") for m in self.models)

    def shown_metrics(self) -> list[str]:
        """Summary rows worth printing: reasoning rows only when some model reasoned."""
        return [k for k in SUMMARY_METRICS
                if (self.any_reasoning or k not in REASONING_METRICS)
                and any(self.per_model[m][k].median is not None for m in self.models)]

    def headline(self) -> list[str]:
        return [c.sentence() for c in self.comparisons if c.metric == "decode_tokens_per_s"]


def _values(rows: Iterable[RequestRow], key: str) -> list[float]:
    values = (r.metrics.get(key) for r in rows)
    return [v for v in values if v is not None]


def _by_prompt(rows: Iterable[RequestRow], key: str) -> tuple[list[float], list[str]]:
    """The values of one metric and the prompt each came from (the cluster of each value)."""
    pairs = [(v, r.prompt_id) for r in rows if (v := r.metrics.get(key)) is not None]
    return [v for v, _ in pairs], [p for _, p in pairs]


def _median(values: list[float]) -> float | None:
    finite = [v for v in values if np.isfinite(v)]
    return float(np.median(finite)) if finite else None


def analyse_speed(models: list[str], rows: list[RequestRow], *, fixed_length: bool = False,
                  errors: list[RequestRow] | None = None,
                  twins: list[str] | None = None) -> SpeedAnalysis:
    """``rows``: measured, successful requests; ``errors``: failed measured requests;
    ``twins``: the models that are synthetic twins (random weights, a stand-in tokenizer).

    Intervals treat prompts as the sampled units (each value's cluster is its prompt id) and
    no figure depends on the order of ``rows``."""
    by_model = {m: [r for r in rows if r.model == m] for m in models}
    per_model = {
        m: {k: median_ci(*_by_prompt(by_model[m], k)) for k in SUMMARY_METRICS} for m in models
    }
    prompt_ids = list(dict.fromkeys(r.prompt_id for r in rows))
    per_prompt = []
    for pid in prompt_ids:
        for m in models:
            sel = [r for r in by_model[m] if r.prompt_id == pid]
            if not sel:
                continue
            per_prompt.append({
                "prompt_id": pid, "model": m, "n": len(sel),
                **{k: _median(_values(sel, k)) for k in SUMMARY_METRICS},
                "finish_reasons": sorted({r.metrics.get("finish_reason") or "?" for r in sel}),
            })
    comparisons = []
    for a, b in combinations(models, 2):
        pairs_a = {(r.prompt_id, r.repeat): r for r in by_model[a]}
        pairs_b = {(r.prompt_id, r.repeat): r for r in by_model[b]}
        keys = [k for k in pairs_a if k in pairs_b]
        for metric in COMPARED_METRICS:
            xs: list[float] = []
            ys: list[float] = []
            prompts: list[str] = []
            for k in keys:
                x, y = pairs_a[k].metrics.get(metric), pairs_b[k].metrics.get(metric)
                if x and y:
                    xs.append(x)
                    ys.append(y)
                    prompts.append(k[0])
            comparisons.append(Comparison(a, b, metric, paired_ratio(xs, ys, clusters=prompts)))
    errors = errors or []
    counts = {m: {"ok": len(by_model[m]), "error": sum(1 for e in errors if e.model == m)}
              for m in models}
    for m in models:
        for r in by_model[m]:
            key = r.metrics.get("outcome") or "answered"
            counts[m][key] = counts[m].get(key, 0) + 1
    warnings = fairness_warnings(models, by_model, per_model, fixed_length, counts, errors,
                                 twins=twins)
    return SpeedAnalysis(models, per_model, per_prompt, comparisons, warnings, counts)


def fairness_warnings(models: list[str], by_model: dict[str, list[RequestRow]],
                      per_model: dict[str, dict[str, Estimate]], fixed_length: bool,
                      counts: dict[str, dict[str, int]],
                      errors: list[RequestRow] | None = None,
                      twins: list[str] | None = None) -> list[FairnessWarning]:
    out: list[FairnessWarning] = []
    failed_kinds: dict[str, dict[str, int]] = {m: {} for m in models}
    for e in errors or []:
        if e.model in failed_kinds:
            kind = e.error_kind or "unknown"
            failed_kinds[e.model][kind] = failed_kinds[e.model].get(kind, 0) + 1
    present = [m for m in models if by_model[m]]

    # 1. Output lengths: the same work only if the models wrote about as much. A model whose
    #    requests carry no token count at all (no usage from the server and nothing streamed)
    #    has no length to compare: that is said instead.
    def _mean(m: str, key: str) -> float | None:
        values = _values(by_model[m], key)
        return mean(values) if values else None

    lengths = {m: _mean(m, "output_tokens") for m in present}
    for m in present:
        if lengths[m] is None:
            out.append(FairnessWarning(
                "output_length_unknown",
                f"{m}: none of its {len(by_model[m])} requests has an output token count "
                "(the server reported no usage and no text was streamed), so its output "
                "length, and every rate built on it, cannot be compared",
            ))
    for a, b in combinations([m for m in present if lengths[m] is not None], 2):
        la, lb = lengths[a], lengths[b]
        assert la is not None and lb is not None
        ca, cb = _mean(a, "answer_chars"), _mean(b, "answer_chars")
        chars_a = f"{ca:.0f} chars" if ca is not None else "chars unknown"
        chars_b = f"{cb:.0f} chars" if cb is not None else "chars unknown"
        lo, hi = min(la, lb), max(la, lb)
        if hi > 0 and (lo == 0 or hi / lo - 1 > LENGTH_TOLERANCE):
            by = "one wrote nothing" if lo == 0 else f"{hi / lo - 1:.0%}"
            out.append(FairnessWarning(
                "output_length_mismatch",
                f"output lengths differ by {by}: {a} wrote "
                f"{la:.0f} tokens ({chars_a}) on average, {b} {lb:.0f} tokens "
                f"({chars_b}); use fixed-length mode (run.fixed_length) to compare the same work",
            ))

    # 2. Reasoning share: thinking tokens are not answer tokens.
    shares = {m: median([v for v in _values(by_model[m], "reasoning_share")] or [0.0])
              for m in present}
    for a, b in combinations(present, 2):
        if abs(shares[a] - shares[b]) > REASONING_SHARE_TOLERANCE:
            out.append(FairnessWarning(
                "reasoning_share_mismatch",
                f"reasoning share differs: {a} {shares[a]:.0%} of output characters were "
                f"reasoning, {b} {shares[b]:.0%}; compare answer characters/s, not tokens/s",
            ))

    # 3. Length-capped stops (expected, and so not flagged, in fixed-length mode).
    if not fixed_length:
        for m in present:
            capped = sum(1 for r in by_model[m] if r.metrics.get("length_capped"))
            if capped:
                out.append(FairnessWarning(
                    "length_capped",
                    f"{m}: {capped} of {len(by_model[m])} requests stopped at max_tokens, "
                    "so their answers are cut short",
                ))

    # 4. Rankings by tokens/s and characters/s disagree (different tokenizers). A twin's
    #    characters mean nothing (random tokens of a stand-in vocabulary), so twins are left
    #    out of the characters/s ranking: among twins, decode tokens/s is the comparison.
    real = [m for m in present if m not in set(twins or ())]
    tok = {m: v for m in real if (v := per_model[m]["decode_tokens_per_s"].median) is not None}
    chars = {m: v for m in real if (v := per_model[m]["chars_per_s"].median) is not None}
    if len(real) >= 2 and all(m in tok and m in chars for m in real):
        by_tok = sorted(real, key=lambda m: -tok[m])
        by_chars = sorted(real, key=lambda m: -chars[m])
        if by_tok != by_chars:
            out.append(FairnessWarning(
                "ranking_disagreement",
                "tokens/s ranks " + " > ".join(by_tok) + " but characters/s ranks "
                + " > ".join(by_chars) + "; tokens of different tokenizers are not the same "
                "unit, so characters/s is the fairer speed comparison",
            ))

    # 5. Prompt-cache hits: repeats must measure the same work.
    for m in present:
        hits = [r for r in by_model[m] if (r.metrics.get("cached_prompt_tokens") or 0) > 0]
        if hits:
            out.append(FairnessWarning(
                "prompt_cache_hits",
                f"{m}: {len(hits)} of {len(by_model[m])} requests reused cached prompt tokens; "
                "their prompt speed and TTFT are not comparable",
            ))

    # 6. Client clock vs the server's own clock, on outputs long enough that one late first
    #    chunk (a few ms of HTTP) cannot move the rate by itself.
    for m in present:
        pairs = [(r.metrics["decode_tokens_per_s"], r.metrics["server_decode_tokens_per_s"])
                 for r in by_model[m]
                 if r.metrics.get("decode_tokens_per_s") and r.metrics.get("server_decode_tokens_per_s")
                 and (r.metrics.get("output_tokens") or 0) >= CLOCK_MIN_TOKENS]
        if pairs:
            dev = median([c / s - 1 for c, s in pairs])
            if abs(dev) > CLOCK_TOLERANCE:
                out.append(FairnessWarning(
                    "clock_disagreement",
                    f"{m}: client-measured decode rate differs from the server's own clock by "
                    f"{dev:+.1%} (median); streaming or network overhead is distorting the figures",
                ))

    # 7. Outcomes that say something went wrong with thinking: the whole budget used,
    #    stopping inside the reasoning, a template-opened block never used, leaked markers.
    for m in present:
        exhausted = [r for r in by_model[m] if r.metrics.get("outcome") == "thinking_exhausted"]
        if exhausted:
            used = max((r.metrics.get("reasoning_tokens") or 0) for r in exhausted)
            out.append(FairnessWarning(
                "thinking_exhausted",
                f"{m}: {len(exhausted)} of {len(by_model[m])} requests spent the whole token "
                f"limit thinking ({used} reasoning tokens) and returned no answer; these are not "
                "refusals. Raise max_tokens well above the reasoning length, or cap thinking "
                "(llama-server --reasoning-budget N, or chat_template_kwargs "
                "enable_thinking=false / a lower reasoning_effort)",
            ))
        stopped = [r for r in by_model[m] if r.metrics.get("outcome") == "stopped_in_thinking"]
        if stopped:
            out.append(FairnessWarning(
                "stopped_in_thinking",
                f"{m}: {len(stopped)} of {len(by_model[m])} requests reasoned and then stopped "
                "on their own (not at the token limit) without an answer; these are not "
                "refusals and are never graded. The model may end its turn inside its "
                "reasoning, or its chat template or stop tokens may not match the model",
            ))
        unthinking = [r for r in by_model[m]
                      if r.metrics.get("outcome") == "answered_without_thinking"]
        if unthinking:
            out.append(FairnessWarning(
                "answered_without_thinking",
                f"{m}: {len(unthinking)} of {len(by_model[m])} answers came without thinking: "
                "the chat template opened a think block that the model never closed. They are "
                "read and graded as answers, but this model did not reason, so its speed is "
                "not that of a thinking model (it may not be one, or thinking was skipped)",
            ))
        leaked = [r for r in by_model[m] if r.metrics.get("outcome") == "leaked"]
        if leaked:
            markers = sorted({mk for r in leaked for mk in (r.metrics.get("leaked_markers") or [])})
            out.append(FairnessWarning(
                "reasoning_leaked",
                f"{m}: {len(leaked)} of {len(by_model[m])} answers contain reasoning markers "
                f"({', '.join(markers)}); the server's reasoning parser does not match this "
                "model's template (try --reasoning-format, or a matching --chat-template)",
            ))

    # 8. Failed requests, by kind.
    for m in models:
        if counts[m]["error"]:
            kinds = ", ".join(f"{kind} ×{n}" for kind, n in failed_kinds[m].items())
            out.append(FairnessWarning(
                "failed_requests",
                f"{m}: {counts[m]['error']} measured request"
                f"{'s' if counts[m]['error'] > 1 else ''} failed ({kinds}) and "
                f"{'are' if counts[m]['error'] > 1 else 'is'} not in the figures; a resume "
                "retries them",
            ))
    out += clock_warnings(models, by_model)
    return out


# More output tokens per text chunk than this, with no server clock and no per-chunk counts,
# and the client's clock cannot tell where the first chunk's tokens fell.
CLOCK_TOKENS_PER_CHUNK = 1.5


def clock_warnings(models: list[str], by_model: dict[str, list[RequestRow]]
                   ) -> list[FairnessWarning]:
    """Say which clock each model's decode rate (and so the headline) is on, wherever the
    client's clock could not resolve the tokens (``decode_clock``, docs/metrics.md)."""
    from kurabe.metrics import CLOCK_AGREEMENT_TOLERANCE

    out: list[FairnessWarning] = []
    for m in models:
        rows = by_model.get(m) or []
        on_server = [r.metrics for r in rows if r.metrics.get("decode_clock") == "server"]
        if on_server:
            ratios = sorted(x["clock_agreement"] for x in on_server if x.get("clock_agreement"))
            seen = (f"client/server decode {ratios[0]:.2f}–{ratios[-1]:.2f}×" if ratios
                    else "the client's clock gave no rate")
            chunks = median([x.get("n_chunks") or 0 for x in on_server])
            tokens = median([x.get("output_tokens") or 0 for x in on_server])
            which = ("the server's own clock" if len(on_server) == len(rows) else
                     "the server's own clock for those requests and the client's for the rest")
            out.append(FairnessWarning(
                "clock_fallback",
                f"{m}: on {len(on_server)} of {len(rows)} requests the client's clock could not "
                f"resolve the tokens ({seen}, beyond ±{CLOCK_AGREEMENT_TOLERANCE:.0%}; median "
                f"{chunks:.0f} chunks for {tokens:.0f} tokens); its decode rate and the headline "
                f"use {which} (timings.predicted_per_second)",
            ))
        unchecked = [r.metrics for r in rows
                     if r.metrics.get("decode_clock") == "client"
                     and r.metrics.get("clock_agreement") is None
                     and r.metrics.get("token_attribution") == "assumed"
                     and (r.metrics.get("output_tokens") or 0)
                     > CLOCK_TOKENS_PER_CHUNK * (r.metrics.get("n_chunks") or 0)]
        if unchecked:
            chunks = median([x.get("n_chunks") or 0 for x in unchecked])
            tokens = median([x.get("output_tokens") or 0 for x in unchecked])
            out.append(FairnessWarning(
                "clock_unverified",
                f"{m}: {len(unchecked)} of {len(rows)} requests streamed far fewer chunks than "
                f"tokens (median {chunks:.0f} chunks for {tokens:.0f} tokens) and the server "
                "reports no clock of its own; the decode rate uses the client's clock, assuming "
                "the first chunk held one token, which nothing can check here",
            ))
    return out
