"""Load levels: throughput, latency percentiles, goodput, the knee of a sweep, whether the
client was the limit, and the engine's own counters beside the client's.

Everything is computed from the store's ``load_levels`` and ``load_requests`` rows alone
(definitions and thresholds: docs/metrics.md, "Load"). A level's statistics cover its
measured window: the requests sent after its warm-up. Throughput here is END-TO-END system
throughput (tokens over the window's wall time, first-token waits and gaps included), never
the decode speed of a stream, which is reported apart, per stream.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from statistics import median
from typing import Any

from kurabe.analysis.stats import percentiles
from kurabe.records import LoadLevelRow, LoadRequestRow
from kurabe.store import Store

# A level is client-bound when one of these fired (docs/metrics.md, "Is the client the
# limit?"): a 10 ms timer firing 20 ms late means responses wait that long to be read; an
# open-loop send 50 ms behind schedule means the arrival profile was not the one asked for;
# a worker process using 90% of a core has no headroom left to read more streams.
LOOP_LAG_P99_LIMIT_S = 0.020
SEND_LAG_P99_LIMIT_S = 0.050
# The client's own delay before it began writing a request (send_delay_s): past this at the
# 99th percentile the client held requests back, and the server saw less load than asked.
SEND_DELAY_P99_LIMIT_S = 0.050
WORKER_CPU_LIMIT_CORES = 0.9
# The client takes CPU from a local engine when it used more than this share of one core
# while the engine used at least half of what the client left.
COMPETES_CLIENT_CORES = 0.10
COMPETES_ENGINE_SHARE = 0.5
# The knee: the next level raises end-to-end output tokens/s by less than this factor.
KNEE_GAIN = 1.10
# Server cross-check tolerances: token counts and the decode rate on the server's clock.
TOKENS_TOLERANCE = 0.02
RATE_TOLERANCE = 0.05
TIMELINE_BUCKET_S = 1.0
OPEN_LOOP = ("rate", "poisson")

LLAMACPP_TOKENS = "llamacpp:tokens_predicted_total"
LLAMACPP_SECONDS = "llamacpp:tokens_predicted_seconds_total"
LLAMACPP_PROMPT = "llamacpp:prompt_tokens_total"
VLLM_TOKENS = "vllm:generation_tokens_total"
VLLM_PROMPT = "vllm:prompt_tokens_total"
VLLM_SUCCESS = "vllm:request_success_total"
VLLM_TPOT_SUM = "vllm:time_per_output_token_seconds_sum"
VLLM_TPOT_COUNT = "vllm:time_per_output_token_seconds_count"


@dataclass
class LoadWarning:
    code: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


@dataclass
class ModelLoad:
    levels: list[dict[str, Any]]
    knee: dict[str, Any] | None
    knee_sentence: str = ""  # the report's sentence about the knee


@dataclass
class LoadAnalysis:
    models: dict[str, ModelLoad] = field(default_factory=dict)
    warnings: list[LoadWarning] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"models": {name: {"levels": m.levels, "knee": m.knee}
                           for name, m in self.models.items()},
                "warnings": [w.to_dict() for w in self.warnings]}


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _rate(amount: float, wall_s: float | None) -> float | None:
    return amount / wall_s if wall_s else None


def _metric(row: LoadRequestRow, key: str) -> float | None:
    return _num(row.metrics.get(key))


def _level_label(level: LoadLevelRow) -> str:
    if level.profile in OPEN_LOOP:
        return f"{level.model} at {level.rate_per_s:g} req/s" if level.rate_per_s else level.model
    return f"{level.model} at concurrency {level.concurrency}"


def meets_slo(row: LoadRequestRow, slo: dict[str, Any]) -> bool:
    """A completed request meets every configured SLO: its TTFT, its own per-token ITL (one
    figure per request: 1 / its decode rate) and its end-to-end latency. A bound that is not
    configured is not checked; a figure that is missing fails its bound."""
    if row.status != "ok":
        return False
    for key, metric in (("ttft_s", "ttft_s"), ("itl_s", "itl_per_token_s"), ("e2e_s", "e2e_s")):
        bound = _num(slo.get(key))
        if bound is None:
            continue
        value = _metric(row, metric)
        if value is None or value > bound:
            return False
    return True


def _client_checks(level: LoadLevelRow, send_delay_p99: float | None = None
                   ) -> tuple[float | None, bool, list[str]]:
    """client_cpu_cores, client_bound and the reasons it fired."""
    client = level.client or {}
    wall = _num(client.get("wall_s"))
    cpu = _num(client.get("cpu_s"))
    cores = cpu / wall if cpu is not None and wall else None
    reasons: list[str] = []
    lag = _num((client.get("loop_lag_s") or {}).get("p99"))
    if lag is not None and lag > LOOP_LAG_P99_LIMIT_S:
        reasons.append(f"event-loop lag p99 {lag * 1000:.1f} ms > "
                       f"{LOOP_LAG_P99_LIMIT_S * 1000:.0f} ms")
    send = _num((client.get("send_lag_s") or {}).get("p99"))
    if level.profile in OPEN_LOOP and send is not None and send > SEND_LAG_P99_LIMIT_S:
        reasons.append(f"send lag p99 {send * 1000:.1f} ms > "
                       f"{SEND_LAG_P99_LIMIT_S * 1000:.0f} ms behind schedule")
    if send_delay_p99 is not None and send_delay_p99 > SEND_DELAY_P99_LIMIT_S:
        reasons.append(f"send delay p99 {send_delay_p99 * 1000:.1f} ms > "
                       f"{SEND_DELAY_P99_LIMIT_S * 1000:.0f} ms before requests were written")
    for i, worker_cpu in enumerate(client.get("per_worker_cpu_s") or []):
        busy = _num(worker_cpu)
        if busy is not None and wall and busy / wall >= WORKER_CPU_LIMIT_CORES:
            reasons.append(f"worker {i} used {busy / wall:.2f} cores (≥ "
                           f"{WORKER_CPU_LIMIT_CORES:g} of one core)")
    return cores, bool(reasons), reasons


def _engine_cpu_taken(level: LoadLevelRow) -> tuple[float | None, LoadWarning | None]:
    """The client's CPU seconds the engine could not have had from idle cores, when the
    engine is a local process; a warning when the client competed with it."""
    client = level.client or {}
    engine = _num(client.get("engine_cpu_s"))
    cpu, wall = _num(client.get("cpu_s")), _num(client.get("wall_s"))
    cores = _num(client.get("usable_cores"))
    if engine is None or cpu is None or not wall or not cores:
        return None, None
    idle_s = max(0.0, cores * wall - engine - cpu)
    taken = max(0.0, cpu - idle_s)
    client_cores, engine_cores = cpu / wall, engine / wall
    if client_cores > COMPETES_CLIENT_CORES and \
            engine_cores >= COMPETES_ENGINE_SHARE * (cores - client_cores):
        return taken, LoadWarning("client_competes_with_server", (
            f"{_level_label(level)}: the client used {client_cores:.2f} of {cores:g} cores "
            f"while the engine on the same machine used {engine_cores:.2f}; "
            f"{taken:.2f} CPU-s of the client's could not have come from idle cores, so the "
            "server was measured slower than it runs alone"))
    return taken, None


def _tokens_of_chunks(row: LoadRequestRow) -> list[tuple[float, int]]:
    """(seconds from the level's start, tokens) for each chunk of a request: the server's
    running count where the chunk carries one, else one token per chunk; tokens the server
    reported but no chunk accounted for are put on the last chunk."""
    chunks = row.record.get("chunks") or []
    out: list[tuple[float, int]] = []
    previous = 0
    for chunk in chunks:  # [t, content, reasoning(, n_tokens)]
        if not (chunk[1] or chunk[2]):
            continue
        count = chunk[3] if len(chunk) > 3 and isinstance(chunk[3], int) else None
        if count is not None:
            out.append((row.sent_s + chunk[0], max(0, count - previous)))
            previous = count
        else:
            out.append((row.sent_s + chunk[0], 1))
            previous += 1
    reported = _metric(row, "output_tokens")
    if out and reported is not None and reported > previous:
        t, n = out[-1]
        out[-1] = (t, n + int(reported) - previous)
    return out


def _request_end_s(row: LoadRequestRow, level_end_s: float | None) -> float:
    record = row.record
    done = _num(record.get("t_done_s"))
    if done is not None:
        return row.sent_s + done
    chunks = record.get("chunks") or []
    if row.status == "cancelled" and level_end_s is not None:
        return max(row.sent_s, level_end_s)
    return row.sent_s + (chunks[-1][0] if chunks else 0.0)


def timeline(level: LoadLevelRow, rows: list[LoadRequestRow]) -> list[dict[str, float]]:
    """Per-second buckets from the level's start: output tokens that arrived in the bucket
    and the mean number of requests in flight over it (time-weighted); warm-up included."""
    wall = _num((level.client or {}).get("wall_s"))
    ends = [(r.sent_s, _request_end_s(r, wall)) for r in rows]
    last = max([e for _, e in ends] + [wall or 0.0], default=0.0)
    n = max(1, math.ceil(last / TIMELINE_BUCKET_S))
    tokens = [0] * n
    busy = [0.0] * n
    for row in rows:
        for t, k in _tokens_of_chunks(row):
            tokens[min(n - 1, max(0, int(t // TIMELINE_BUCKET_S)))] += k
    for start, end in ends:
        for i in range(max(0, int(start // TIMELINE_BUCKET_S)), n):
            lo, hi = i * TIMELINE_BUCKET_S, (i + 1) * TIMELINE_BUCKET_S
            if lo >= end:
                break
            busy[i] += max(0.0, min(hi, end) - max(lo, start))
    return [{"t_s": i * TIMELINE_BUCKET_S, "output_tokens": tokens[i],
             "in_flight": busy[i] / TIMELINE_BUCKET_S} for i in range(n)]


def _delta(level: LoadLevelRow, name: str) -> float | None:
    before = (level.server_before or {}).get("samples") or {}
    after = (level.server_after or {}).get("samples") or {}
    a, b = _num(after.get(name)), _num(before.get(name))
    return a - b if a is not None and b is not None else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def server_check(level: LoadLevelRow, rows: list[LoadRequestRow]
                 ) -> tuple[dict[str, Any] | None, LoadWarning | None]:
    """The engine's metrics counters (after − before the level) beside the client's totals
    over the whole level, warm-up included (the engine counted those too)."""
    if not level.server_before or not level.server_after:
        return None, None
    done = [r for r in rows if r.status == "ok"]
    client_out = sum(int(_metric(r, "output_tokens") or 0) for r in done)
    client_prompt = sum(int(_metric(r, "prompt_tokens") or 0)
                        - int(_metric(r, "cached_prompt_tokens") or 0) for r in done)
    # per-stream decode, token-weighted as the engine's counters are: the tokens after each
    # request's first over the time from its first to its last token
    decoded, decode_s = 0.0, 0.0
    for r in done:
        n, rate = _metric(r, "output_tokens"), _metric(r, "decode_tokens_per_s")
        if n is not None and n > 1 and rate:
            decoded += n - 1
            decode_s += (n - 1) / rate
    client_rate = decoded / decode_s if decode_s else None
    notes: list[str] = []
    if _delta(level, LLAMACPP_TOKENS) is not None:
        engine = "llama.cpp"
        server_out = _delta(level, LLAMACPP_TOKENS)
        server_prompt = _delta(level, LLAMACPP_PROMPT)
        seconds = _delta(level, LLAMACPP_SECONDS)
        server_requests = None
        # llama.cpp counts each request's first token but does not time it: one token per
        # completed request comes off before dividing by its decode seconds
        server_rate = ((server_out - len(done)) / seconds
                       if server_out is not None and seconds else None)
        notes.append("server decode rate = (tokens_predicted_total − one first token per "
                     "completed request) / tokens_predicted_seconds_total")
    elif _delta(level, VLLM_TOKENS) is not None:
        engine = "vLLM"
        server_out = _delta(level, VLLM_TOKENS)
        server_prompt = _delta(level, VLLM_PROMPT)
        server_requests = _delta(level, VLLM_SUCCESS)
        tpot_sum, tpot_n = _delta(level, VLLM_TPOT_SUM), _delta(level, VLLM_TPOT_COUNT)
        server_rate = tpot_n / tpot_sum if tpot_sum and tpot_n else None
        notes.append("server decode rate = 1 / mean time_per_output_token_seconds")
    else:
        return None, None
    unfinished = sum(1 for r in rows if r.status != "ok")
    if unfinished:
        notes.append(f"{unfinished} request(s) failed or were cancelled: the engine may have "
                     "counted some of their tokens, the client counts none")
    tokens_ratio = _ratio(server_out, client_out)
    rate_ratio = _ratio(client_rate, server_rate)
    disagree = []
    if tokens_ratio is not None and abs(tokens_ratio - 1) > TOKENS_TOLERANCE and not unfinished:
        disagree.append(f"output tokens: engine {server_out:g}, client {client_out} "
                        f"(×{tokens_ratio:.3f})")
    if rate_ratio is not None and abs(rate_ratio - 1) > RATE_TOLERANCE:
        disagree.append(f"decode rate: client {client_rate:.1f}, engine {server_rate:.1f} "
                        f"tokens/s (×{rate_ratio:.3f})")
    if server_requests is not None and server_requests != len(done):
        disagree.append(f"completed requests: engine {server_requests:g}, client {len(done)}")
    check = {
        "engine": engine, "url": level.server_after.get("url"),
        "client_output_tokens": client_out, "server_output_tokens": server_out,
        "output_tokens_ratio": tokens_ratio,
        "client_prompt_tokens": client_prompt, "server_prompt_tokens": server_prompt,
        "client_decode_tokens_per_s": client_rate, "server_decode_tokens_per_s": server_rate,
        "decode_ratio": rate_ratio,
        "client_requests": len(done), "server_requests": server_requests,
        "agrees": not disagree, "notes": notes,
    }
    warning = LoadWarning("server_disagrees", f"{_level_label(level)}: the engine's "
                          f"{engine} metrics disagree with the client's: " + "; ".join(disagree)
                          ) if disagree else None
    return check, warning


def analyse_level(level: LoadLevelRow, rows: list[LoadRequestRow]
                  ) -> tuple[dict[str, Any], list[LoadWarning]]:
    """One level's JSON (docs/metrics.md, "Load") and its warnings."""
    warnings: list[LoadWarning] = []
    label = _level_label(level)
    measured = [r for r in rows if not r.warmup]
    warm = [r for r in rows if r.warmup]
    statuses = Counter(r.status for r in measured)
    completed = [r for r in measured if r.status == "ok"]
    failed = [r for r in measured if r.status == "error"]
    sent = len(measured)
    unknown = sent - statuses["ok"] - statuses["error"] - statuses["cancelled"]
    reported_sent = (level.client or {}).get("sent")
    if unknown or (isinstance(reported_sent, int) and reported_sent != len(rows)):
        what = []
        if unknown:
            what.append(f"{unknown} stored request(s) are neither completed, failed nor "
                        "cancelled")
        if isinstance(reported_sent, int) and reported_sent != len(rows):
            what.append(f"the client sent {reported_sent} request(s) but {len(rows)} are "
                        "stored")
        warnings.append(LoadWarning("requests_unaccounted", f"{label}: " + "; ".join(what)))
    if level.status != "complete":
        warnings.append(LoadWarning("level_incomplete", f"{label}: the level is "
                                    f"{level.status}; its figures cover what was stored"))
    wall = _num(level.wall_s)
    out_tokens = sum(_metric(r, "output_tokens") or 0.0 for r in completed)
    prompt_tokens = sum(_metric(r, "prompt_tokens") or 0.0 for r in completed)
    slo = (level.spec or {}).get("slo") or {}
    has_slo = any(_num(slo.get(k)) is not None for k in ("ttft_s", "itl_s", "e2e_s"))
    good = sum(1 for r in completed if meets_slo(r, slo)) if has_slo else None
    decode = [v for r in completed if (v := _metric(r, "decode_tokens_per_s")) is not None]
    send_delay = percentiles([_metric(r, "send_delay_s") for r in measured
                              if r.status != "cancelled"])
    cores, bound, reasons = _client_checks(level, _num((send_delay or {}).get("p99")))
    if bound:
        warnings.append(LoadWarning("client_bound", f"{label}: the client, not the server, "
                                    "may have been the limit: " + "; ".join(reasons)))
    taken, competes = _engine_cpu_taken(level)
    if competes is not None:
        warnings.append(competes)
    check, disagrees = server_check(level, rows)
    if disagrees is not None:
        warnings.append(disagrees)
    series = {key: [_metric(r, metric) for r in completed]
              for key, metric in (("ttft_s", "ttft_s"), ("itl_s", "itl_per_token_s"),
                                  ("e2e_s", "e2e_s"))}
    errors = Counter(r.error_kind or "unknown" for r in failed)
    warm_failed = sum(1 for r in warm if r.status == "error")
    if failed or warm_failed:
        kinds = ", ".join(f"{k} ×{n}" for k, n in sorted(errors.items()))
        warnings.append(LoadWarning("failed_requests", f"{label}: {len(failed)} measured "
                                    f"request(s) failed ({kinds or 'none'}), "
                                    f"{warm_failed} in the warm-up"))
    level_json: dict[str, Any] = {
        "level": level.level,
        "profile": level.profile,
        "status": level.status,
        "concurrency": level.concurrency,
        "rate_per_s": level.rate_per_s,
        "warmup_s": level.warmup_s,
        "wall_s": wall,
        "output_tokens_per_s": _rate(out_tokens, wall),
        "total_tokens_per_s": _rate(out_tokens + prompt_tokens, wall),
        "decode_tokens_per_s": float(median(decode)) if decode else None,
        "requests_per_s": _rate(len(completed), wall),
        "ttft_s": percentiles(series["ttft_s"]),
        "itl_s": percentiles(series["itl_s"]),
        "e2e_s": percentiles(series["e2e_s"]),
        "send_delay_s": send_delay,
        "samples": {k: sum(1 for v in vs if v is not None) for k, vs in series.items()},
        "errors": dict(sorted(errors.items())),
        "sent": sent,
        "completed": len(completed),
        "failed": len(failed),
        "cancelled": statuses["cancelled"],
        "warmup_sent": len(warm),
        "goodput_requests_per_s": _rate(good, wall) if good is not None else None,
        "goodput_share": good / sent if good is not None and sent else None,
        "slo": {k: _num(slo.get(k)) for k in ("ttft_s", "itl_s", "e2e_s")},
        "client_cpu_cores": cores,
        "client_bound": bound,
        "client_bound_reasons": reasons,
        "engine_cpu_taken_s": taken,
        "server_check": check,
        "timeline": timeline(level, rows),
    }
    return level_json, warnings


def _x(level: dict[str, Any]) -> float:
    value = level["rate_per_s"] if level["profile"] in OPEN_LOOP else level["concurrency"]
    return float(value) if value is not None else math.inf


def find_knee(levels: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The lowest level after which the next (higher concurrency or rate) raises end-to-end
    output tokens/s by less than 10%, or lowers goodput; None with fewer than two levels of
    one kind or while throughput still rises at the last level."""
    closed = [lv for lv in levels if lv["profile"] not in OPEN_LOOP]
    opened = [lv for lv in levels if lv["profile"] in OPEN_LOOP]
    group = closed if len(closed) >= len(opened) else opened
    curve = sorted((lv for lv in group if lv["output_tokens_per_s"] is not None), key=_x)
    for here, after in zip(curve, curve[1:], strict=False):
        gain = after["output_tokens_per_s"] / here["output_tokens_per_s"] \
            if here["output_tokens_per_s"] else math.inf
        good_here, good_after = here["goodput_requests_per_s"], after["goodput_requests_per_s"]
        goodput_falls = good_here is not None and good_after is not None \
            and good_after < good_here
        if gain < KNEE_GAIN or goodput_falls:
            return {"level": here["level"], "profile": here["profile"],
                    "concurrency": here["concurrency"], "rate_per_s": here["rate_per_s"],
                    "output_tokens_per_s": here["output_tokens_per_s"],
                    "ttft_p99_s": here["ttft_s"]["p99"],
                    "next_gain": gain, "reason": "goodput" if goodput_falls and
                    gain >= KNEE_GAIN else "throughput"}
    return None


def knee_sentence(model: str, knee: dict[str, Any] | None, levels: int) -> str:
    """The report's sentence about a model's knee."""
    if knee is None:
        return (f"{model}: one level, no knee to find" if levels < 2 else
                f"{model}: end-to-end throughput still rose by 10% or more at every step; "
                "no knee within the levels run")
    where = (f"{knee['rate_per_s']:g} requests/s" if knee["profile"] in OPEN_LOOP
             else f"concurrency {knee['concurrency']}")
    why = ("goodput fell at the next level" if knee["reason"] == "goodput" else
           f"the next level added only {(knee['next_gain'] - 1) * 100:.0f}% output tokens/s")
    ttft = knee["ttft_p99_s"]
    ttft_text = f", p99 TTFT {ttft:.3g} s" if ttft is not None else ""
    return (f"{model}: knee at {where}: {knee['output_tokens_per_s']:.3g} output tokens/s "
            f"end-to-end{ttft_text}; {why}")


def analyse_load(store: Store) -> LoadAnalysis:
    """Every load level of the run, per model, in the order they were run."""
    analysis = LoadAnalysis()
    by_model: dict[str, list[dict[str, Any]]] = {}
    for level in store.load_levels():
        # A level rerun after an interruption keeps the earlier attempt's rows; only this
        # attempt's (sent after the level row's start) are analysed.
        rows = [r for r in store.load_requests(model=level.model, level=level.level)
                if r.sent_at_unix_s >= level.started_at_unix_s]
        level_json, warnings = analyse_level(level, rows)
        by_model.setdefault(level.model, []).append(level_json)
        analysis.warnings += warnings
    for model, levels in by_model.items():
        knee = find_knee(levels)
        analysis.models[model] = ModelLoad(levels=levels, knee=knee,
                                           knee_sentence=knee_sentence(model, knee, len(levels)))
    return analysis
