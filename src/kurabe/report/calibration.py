"""The small report of a run that only calibrated a judge (``kurabe judge --calibrate``):
report.md and report.html with the calibration table, the verdict and every item."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kurabe.analysis.run import RunAnalysis
from kurabe.report.markdown import resume_command, run_complete, run_failures

# No script, no network, nothing but inline styles.
CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'none'; "
       "base-uri 'none'; form-action 'none'; connect-src 'none'; frame-src 'none'")


def _values(a: RunAnalysis, run_dir: Path) -> dict[str, Any]:
    q = a.config.quality
    judge = q.judge if q is not None and q.judge else ""
    source = next((m.source for m in [*a.config.models, *a.config.judges] if m.name == judge),
                  "")
    return {"a": a, "c": a.calibration, "run": a.run, "cfg": a.config, "judge": judge,
            "judge_source": source, "resume": resume_command(run_dir),
            "complete": run_complete(a), "failures": run_failures(a)}


def render_calibration_markdown(a: RunAnalysis, run_dir: Path) -> str:
    from kurabe.report.markdown import _env

    return _env().get_template("calibration_report.md.j2").render(**_values(a, run_dir))


def render_calibration_html(a: RunAnalysis, run_dir: Path) -> str:
    from kurabe.report.html import _env

    return _env().get_template("calibration_report.html.j2").render(csp=CSP,
                                                                     **_values(a, run_dir))
