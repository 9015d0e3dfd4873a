"""report.md: the comparison a careful reviewer would write."""

from __future__ import annotations

from importlib import resources

import jinja2

from kurabe.analysis.run import RunAnalysis
from kurabe.analysis.speed import SUMMARY_METRICS
from kurabe.metrics import METRIC_DOCS


def fmt(value, digits: int = 3) -> str:
    """Three significant figures (thousands grouped), so 0.0061 s and 164 t/s both read well."""
    if value is None:
        return "–"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.{digits}g}"
    return str(value)


def fmt_est(est) -> str:
    """A median or mean with its interval: "164 [160–166]"."""
    value = getattr(est, "median", getattr(est, "mean", None)) if est is not None else None
    if value is None:
        return "–"
    if est.ci_low is None:
        return f"{fmt(value)} (n={est.n})"
    return f"{fmt(value)} [{fmt(est.ci_low)}–{fmt(est.ci_high)}]"


def fmt_bytes(n) -> str:
    if n is None:
        return "–"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def md_cell(text) -> str:
    """Table cells hold model-written and user-written text: keep the table intact."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FunctionLoader(
            lambda name: resources.files("kurabe.report").joinpath("templates", name).read_text("utf-8")
        ),
        autoescape=False, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(fmt=fmt, est=fmt_est, bytes=fmt_bytes, cell=md_cell)
    return env


def render_markdown(a: RunAnalysis) -> str:
    settings = {m.name: m.settings for m in a.models}
    return _env().get_template("report.md.j2").render(
        a=a, run=a.run, machine=a.run.machine, cfg=a.config, models=a.models,
        settings=settings, speed=a.speed, metrics=SUMMARY_METRICS, metric_docs=METRIC_DOCS,
        measured_count=len(a.measured),
    )
