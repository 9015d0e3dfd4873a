"""The Python API under the CLI: every command is a thin layer over one of these."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from kurabe import KurabeError
from kurabe.config import (EngineConfig, ModelConfig, QualityConfig, RunConfig, ShootoutConfig,
                           parse_config)
from kurabe.phases import ProgressHook

if TYPE_CHECKING:
    from kurabe.analysis.run import RunAnalysis
    from kurabe.orchestrator import Orchestrator

DEFAULT_RUNS_DIR = Path("kurabe-runs")


def default_run_dir(name: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return DEFAULT_RUNS_DIR / f"{name}-{stamp}"


def demo_config(*, repeats: int = 3, max_tokens: int = 96, warmup: int = 1,
                quality: bool = True, per_category: int = 1,
                quality_max_tokens: int = 96) -> ShootoutConfig:
    """The built-in shootout: SmolLM2-135M vs Gemma-3-270M on the built-in speed prompts, and
    a small quality round judged by the built-in SmolLM2 (a demonstration of the method: a
    135M judge's grades mean little, and the report says so)."""
    engine = EngineConfig(ctx=2048)
    return ShootoutConfig(
        run=RunConfig(name="demo", repeats=repeats, warmup=warmup, max_tokens=max_tokens),
        models=[ModelConfig(name="smollm2-135m", source="builtin:smollm2-135m", engine=engine),
                ModelConfig(name="gemma3-270m", source="builtin:gemma3-270m", engine=engine)],
        quality=QualityConfig(
            suites=["builtin:ja_core", "builtin:code", "builtin:cutoff", "builtin:safety"],
            per_category=per_category, max_tokens=quality_max_tokens, judge="smollm2-135m",
            judge_max_tokens=64,
        ) if quality else None,
    )


def parse_model_spec(flag: str) -> tuple[str, str]:
    """``NAME=SPEC``, or a bare SPEC named after its file, built-in name or host."""
    head, sep, tail = flag.partition("=")
    if sep and head and not any(ch in head for ch in "/:"):
        name, spec = head, tail
    else:
        spec = flag
        if "://" in spec:
            name = spec.split("://", 1)[1].split("/")[0].replace(":", "-")
        else:
            name = Path(spec.removeprefix("builtin:")).stem
    if not name or not spec:
        raise KurabeError(f"model {flag!r}: expected NAME=SPEC, e.g. a=path/to/a.gguf")
    return name, spec


def bench_config(models: list[str], *, repeats: int, warmup: int, max_tokens: int,
                 fixed_length: bool, prompts: str | None, engine: dict) -> ShootoutConfig:
    if not models:
        raise KurabeError("no models: give at least one model (NAME=SPEC)")
    entries = []
    for flag in models:
        name, spec = parse_model_spec(flag)
        entries.append({"name": name, "source": spec, "engine": engine})
    data = {"run": {"name": "bench", "repeats": repeats, "warmup": warmup,
                    "max_tokens": max_tokens, "fixed_length": fixed_length},
            "models": entries}
    if prompts:
        data["run"]["prompt_set"] = prompts
    return parse_config(data, "command line")


def _execute(run: Orchestrator, run_dir: Path) -> RunAnalysis:
    from kurabe.report import render_run

    try:
        run.execute()
    finally:
        run.store.close()
        # An interrupted or failed run still gets its partial report.
        analysis, _ = render_run(run_dir)
    return analysis


def run_shootout(config: ShootoutConfig, run_dir: Path, *, command: list[str] | None = None,
                 progress: ProgressHook | None = None) -> RunAnalysis:
    """Create a run folder for ``config``, run it, and write its report."""
    from kurabe.orchestrator import Orchestrator

    return _execute(Orchestrator.create(config, run_dir, command=command, progress=progress),
                    run_dir)


def resume_shootout(run_dir: Path, *, progress: ProgressHook | None = None) -> RunAnalysis:
    """Finish an interrupted run from its folder alone: only the missing work is done."""
    from kurabe.orchestrator import Orchestrator

    return _execute(Orchestrator.reopen(run_dir, progress=progress), run_dir)


def rejudge(run_dir: Path, judge: str | None = None, *, progress: ProgressHook | None = None
            ) -> RunAnalysis:
    """Grade a run's stored answers again, with another judge (``NAME=SPEC``) or the
    configured one, without regenerating anything."""
    from kurabe.store import Store

    with Store.open(run_dir) as store:
        config = ShootoutConfig.from_json(store.run().config_json)
        if config.quality is None:
            raise KurabeError(f"{run_dir}: this run has no quality round to judge")
        if judge:
            name, spec = parse_model_spec(judge)
            known = {m.name: m for m in [*config.models, *config.judges]}
            if name in known and known[name].source != spec:
                raise KurabeError(f"judge {judge}: the name '{name}' is already used for "
                                  f"{known[name].source}; choose another name")
            if name not in known:
                config.judges.append(ModelConfig(name=name, source=spec))
            config.quality.judge = name
            store.update_config(config.to_json(), f"judge set to {name} ({spec})")
        elif not config.quality.judge:
            raise KurabeError(f"{run_dir}: this run has no judge configured; name one "
                              "(NAME=SPEC)")
    return resume_shootout(run_dir, progress=progress)
