"""report.html: one self-contained file, safe to open although it is full of model text.

Everything is escaped by the template engine (autoescape); model answers travel as JSON in a
data block and are shown with textContent; a Content-Security-Policy forbids any network
access and allows only the page's own script, identified by its hash.
"""

from __future__ import annotations

import base64
import hashlib
import json
from importlib import resources
from pathlib import Path

import jinja2

from kurabe.analysis.run import RunAnalysis
from kurabe.analysis.speed import SUMMARY_METRICS
from kurabe.metrics import METRIC_DOCS
from kurabe.report import charts
from kurabe.report.markdown import (
    fmt,
    fmt_bytes,
    fmt_est,
    resume_command,
    run_complete,
    run_failures,
)


def _json_for_script(data) -> str:
    """JSON that cannot end its <script> block or open a comment."""
    text = json.dumps(data, ensure_ascii=False)
    return (text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def csp(script: str) -> str:
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode()
    return ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
            f"script-src 'sha256-{digest}'; base-uri 'none'; form-action 'none'; "
            "connect-src 'none'; frame-src 'none'")


def _ablation_chart(a: RunAnalysis) -> str:
    """Each ablation step's ratio (later / earlier model) with its interval."""
    if a.ablation is None:
        return ""
    label, unit, higher = SUMMARY_METRICS[a.ablation.metric]
    rows = [(f"{s.before} → {s.after}", s.ratio.ratio, s.ratio.ci_low, s.ratio.ci_high)
            for s in a.ablation.steps]
    return charts.interval_bars(f"{label}: ratio of each step (1.0 = no change)", "×", rows,
                                higher_is_better=higher)


def _speed_charts(a: RunAnalysis) -> list[str]:
    keys = ["decode_tokens_per_s", "chars_per_s", "ttft_s"]
    if a.speed.any_reasoning:
        keys += ["reasoning_decode_tokens_per_s", "answer_decode_tokens_per_s"]
    out = []
    for key in keys:
        label, unit, higher = SUMMARY_METRICS[key]
        rows = [(m, a.speed.per_model[m][key].median, a.speed.per_model[m][key].ci_low,
                 a.speed.per_model[m][key].ci_high) for m in a.speed.models]
        svg = charts.interval_bars(label, unit, rows, higher_is_better=higher)
        if svg:
            out.append(svg)
    prompts = list(dict.fromkeys(p["prompt_id"] for p in a.speed.per_prompt))
    values = {(p["prompt_id"], p["model"]): p["decode_tokens_per_s"] for p in a.speed.per_prompt}
    svg = charts.grouped_bars("decode tokens/s per prompt", "tokens/s", prompts, a.speed.models,
                              values)
    if svg:
        out.append(svg)
    return out


def _quality_chart(a: RunAnalysis) -> str:
    q = a.quality
    if q is None or not q.judge:
        return ""
    rows = [(m, q.scores[m]["overall"].mean, q.scores[m]["overall"].ci_low,
             q.scores[m]["overall"].ci_high) for m in q.models]
    return charts.interval_bars("judge score, all categories", "1–10", rows)


def _loading_chart(a: RunAnalysis) -> str:
    """Observed buffers per model, stacked, against the memory budget when one is set."""
    rows = []
    for loaded in a.loading:
        parts = [(r["buffer"], r["observed_bytes"] / 2**30) for r in loaded["rows"]
                 if r["buffer"] != "total" and r["observed_bytes"]]
        if parts:
            rows.append((loaded["model"], parts))
    budget = a.memory_budget_bytes / 2**30 if a.memory_budget_bytes else None
    return charts.stacked_bar("memory llama.cpp allocated", rows, budget, unit="GiB")


def _machine_chart(a: RunAnalysis) -> str:
    """CPU use over the run in cores: other processes (against the busy threshold), the
    engines and kurabe, with the span in which the speed was measured shaded."""
    load = a.machine_load
    if load is None or not load.series:
        return ""
    pts = load.series
    inside = [p for p in pts if p["in_window"]]
    span = (inside[0]["t_s"] - inside[0]["interval_s"], inside[-1]["t_s"]) if inside else None
    return charts.timeline(
        "CPU use during the run", "cores",
        [(label, [(p["t_s"], p[key]) for p in pts])
         for label, key in (("other processes", "other_cores"), ("engines", "engine_cores"),
                            ("kurabe", "kurabe_cores"))],
        ymax=float(load.usable_cores), threshold=(load.threshold_cores, "busy above"),
        span=span, span_label="speed measured")


def _load_charts(a: RunAnalysis) -> list[str]:
    """Throughput–latency curves (one line per model, points labelled with the concurrency
    or rate) and, per model, output tokens and requests in flight over its highest level."""
    if a.load is None:
        return []
    out = []
    for y_key, y_label in (("ttft_s", "p99 TTFT (s)"), ("itl_s", "p50 ITL (s)")):
        pick = "p99" if y_key == "ttft_s" else "p50"
        series = [(model, [(lv["output_tokens_per_s"], lv[y_key][pick],
                            f"{lv['rate_per_s']:g}/s" if lv["profile"] in ("rate", "poisson")
                            else f"c={lv['concurrency']}")
                           for lv in m.levels if lv["output_tokens_per_s"] is not None
                           and lv[y_key][pick] is not None])
                  for model, m in a.load.models.items()]
        out.append(charts.xy_curves(f"throughput–latency: {y_label} against output tokens/s "
                                    "(end-to-end)", "output tokens/s (end-to-end)", y_label,
                                    series))
    for model, m in a.load.models.items():
        top = max(m.levels, key=lambda lv: (lv["concurrency"] or 0, lv["rate_per_s"] or 0))
        pts = top["timeline"]
        end = top["warmup_s"] + (top["wall_s"] or 0)
        where = (f"{top['rate_per_s']:g} req/s" if top["profile"] in ("rate", "poisson")
                 else f"concurrency {top['concurrency']}")
        out.append(charts.timeline(
            f"{model}, {where}: output tokens and requests in flight over time", "per second",
            [("output tokens/s", [(p["t_s"], float(p["output_tokens"])) for p in pts]),
             ("requests in flight (mean)", [(p["t_s"], p["in_flight"]) for p in pts])],
            span=(top["warmup_s"], end), span_label="measured window"))
    return [svg for svg in out if svg]


def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FunctionLoader(lambda name: resources.files("kurabe.report").joinpath(
            "templates", name).read_text("utf-8")),
        autoescape=True, trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined,
    )
    env.filters.update(fmt=fmt, est=fmt_est, bytes=fmt_bytes)
    return env


def render_html(a: RunAnalysis, run_dir: Path) -> str:
    """report.html of the run in ``run_dir``."""
    script = resources.files("kurabe.report").joinpath("viewer.js").read_text("utf-8")
    data = {"models": a.speed.models, "prompts": a.prompts, "responses": a.responses}
    settings = {m.name: m.settings for m in a.models}
    return _env().get_template("report.html.j2").render(
        a=a, run=a.run, machine=a.run.machine, cfg=a.config, models=a.models,
        settings=settings, speed=a.speed, metrics=SUMMARY_METRICS, metric_docs=METRIC_DOCS,
        speed_charts=[_markup(svg) for svg in _speed_charts(a)],
        loading_chart=_markup(_loading_chart(a)),
        ablation_chart=_markup(_ablation_chart(a)),
        machine_chart=_markup(_machine_chart(a)),
        quality_chart=_markup(_quality_chart(a)),
        load_charts=[_markup(svg) for svg in _load_charts(a)],
        data_json=_markup(_json_for_script(data)), script=_markup(script), csp=csp(script),
        resume=resume_command(run_dir), complete=run_complete(a), failures=run_failures(a),
    )


def _markup(text: str):
    from markupsafe import Markup

    return Markup(text)
