"""report.md: the comparison a careful reviewer would write."""

from __future__ import annotations

import re
import shlex
from importlib import resources
from pathlib import Path

import jinja2

from kurabe.analysis.run import RunAnalysis
from kurabe.analysis.speed import SUMMARY_METRICS
from kurabe.metrics import METRIC_DOCS


class MdSafe(str):
    """Text that is already Markdown (kurabe's own figures, escaped text): printed as is."""


def fmt(value, digits: int = 3) -> str:
    """Three significant figures (thousands grouped), so 0.0061 s and 164 t/s both read well."""
    if value is None:
        return MdSafe("–")
    if isinstance(value, float):
        if abs(value) >= 1000:
            return MdSafe(f"{value:,.0f}")
        return MdSafe(f"{value:.{digits}g}")
    if isinstance(value, int):
        return MdSafe(str(value))
    return str(value)


def fmt_est(est) -> str:
    """A median or mean with its interval: "164 [160–166]"."""
    value = getattr(est, "median", getattr(est, "mean", None)) if est is not None else None
    if value is None:
        return MdSafe("–")
    if est.ci_low is None:
        return MdSafe(f"{fmt(value)} (n={est.n})")
    return MdSafe(f"{fmt(value)} [{fmt(est.ci_low)}–{fmt(est.ci_high)}]")


def fmt_acc(acc) -> str:
    """A proportion with its interval (``kurabe.analysis.calibration.Accuracy``):
    "75% [55–88%] (18/24)"."""
    return MdSafe("–" if acc is None else acc.text())


def fmt_bytes(n) -> str:
    if n is None:
        return MdSafe("–")
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return MdSafe(f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}")
        n /= 1024
    return MdSafe(str(n))


# Characters no report line should carry: control characters (a terminal would obey them),
# bidirectional overrides (they reorder what is shown), surrogates (not text).
_UNPRINTABLE = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f\u202a-\u202e\u2066-\u2069"
                          "\ud800-\udfff]")
_LINE_BREAKS = re.compile("[\t\n\v\f\r\x85\u2028\u2029]+")
# Inline Markdown punctuation, escaped with a backslash wherever it appears ("_" only where it
# could open or close emphasis: not between two letters or digits, as in snake_case).
_INLINE = re.compile(r"[\\`*\[\]|~$#]|(?<![^\W_])_|_(?![^\W_])")
_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
# What starts a block at the start of a line: a list item ("-", "+", "1." or "1)" and a space,
# or nothing after), a thematic break or a setext underline (a line of "-" or "=").
_BULLET = re.compile(r"[-+](?=\s|$)")
_ORDERED = re.compile(r"\d{1,9}(?=[.)](?:\s|$))")
_RULE = re.compile(r"[-=][-=\s]*$")


def md_text(value) -> str:
    """Any outside string (model-written text, names, paths, machine facts, messages) as
    Markdown that reads as the same text and can forge nothing: no heading, list, quote,
    table row or cell, link, image, emphasis, code, HTML or entity. One line: line breaks
    become spaces."""
    text = _UNPRINTABLE.sub("\ufffd", str(value))
    text = _LINE_BREAKS.sub(" ", text).strip()
    text = _INLINE.sub(lambda m: "\\" + m.group(0), text)
    text = re.sub("[&<>]", lambda m: _ENTITIES[m.group(0)], text)
    # "#", ">", "*" and "_" are escaped above; these start a block only at the start of a
    # line, where a value may stand (a list item, a paragraph)
    if _BULLET.match(text) or _RULE.match(text):
        text = "\\" + text
    elif m := _ORDERED.match(text):
        text = f"{text[:m.end()]}\\{text[m.end():]}"
    return MdSafe(text)


md_cell = md_text  # a table cell needs nothing more: "|" and line breaks are escaped too


def md_code(value) -> str:
    """An outside string as one inline code span (a command line to copy): shown verbatim,
    fenced by more backticks than it holds, on one line."""
    text = _LINE_BREAKS.sub(" ", _UNPRINTABLE.sub("\ufffd", str(value))).strip()
    if not text:
        return MdSafe("–")
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    pad = " " if text[0] in "` " or text[-1] in "` " else ""
    return MdSafe(f"{fence}{pad}{text}{pad}{fence}")


def _finalize(value) -> str:
    """Every ``{{ … }}`` of a Markdown template goes through here: kurabe's own figures
    (numbers, ``MdSafe``) as they are, everything else escaped by :func:`md_text`."""
    if isinstance(value, MdSafe):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return md_text(value)


def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FunctionLoader(
            lambda name: resources.files("kurabe.report").joinpath("templates", name).read_text("utf-8")
        ),
        autoescape=False, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined, finalize=_finalize,
    )
    env.filters.update(fmt=fmt, est=fmt_est, bytes=fmt_bytes, cell=md_cell, code=md_code,
                       acc=fmt_acc)
    return env


def resume_command(run_dir: Path) -> str:
    """The command that finishes a run, with its folder quoted for a POSIX shell."""
    return f"kurabe run --resume {shlex.quote(str(Path(run_dir).resolve()))}"


def render_markdown(a: RunAnalysis, run_dir: Path) -> str:
    """report.md of the run in ``run_dir``. Every outside string in it is escaped."""
    settings = {m.name: m.settings for m in a.models}
    return _env().get_template("report.md.j2").render(
        a=a, run=a.run, machine=a.run.machine, cfg=a.config, models=a.models,
        settings=settings, speed=a.speed, metrics=SUMMARY_METRICS, metric_docs=METRIC_DOCS,
        measured_count=len(a.measured), resume=resume_command(run_dir),
        complete=run_complete(a), failures=run_failures(a),
    )


def run_complete(a: RunAnalysis) -> bool:
    """Complete: finished, and nothing failed or was left out."""
    complete = getattr(a, "complete", None)
    return a.run.status == "complete" if complete is None else bool(complete)


def run_failures(a: RunAnalysis) -> list[dict]:
    """The work whose latest attempt failed, one row per (model, phase, error kind)."""
    return list(getattr(a, "failures", None) or [])
