"""The Python API under the CLI: every command is a thin layer over one of these."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from kurabe import KurabeError
from kurabe.analysis.run import RunAnalysis
from kurabe.bench.runner import ProgressHook, Shootout
from kurabe.config import EngineConfig, ModelConfig, RunConfig, ShootoutConfig, parse_config
from kurabe.report import render_run

DEFAULT_RUNS_DIR = Path("kurabe-runs")


def default_run_dir(name: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return DEFAULT_RUNS_DIR / f"{name}-{stamp}"


def demo_config(*, repeats: int = 3, max_tokens: int = 96, warmup: int = 1) -> ShootoutConfig:
    """The built-in shootout: SmolLM2-135M vs Gemma-3-270M on the built-in speed prompts."""
    engine = EngineConfig(ctx=2048)
    return ShootoutConfig(
        run=RunConfig(name="demo", repeats=repeats, warmup=warmup, max_tokens=max_tokens),
        models=[ModelConfig(name="smollm2-135m", source="builtin:smollm2-135m", engine=engine),
                ModelConfig(name="gemma3-270m", source="builtin:gemma3-270m", engine=engine)],
    )


def parse_model_flag(flag: str) -> tuple[str, str]:
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
        raise KurabeError(f"--model {flag!r}: expected NAME=SPEC, e.g. a=path/to/a.gguf")
    return name, spec


def bench_config(models: list[str], *, repeats: int, warmup: int, max_tokens: int,
                 fixed_length: bool, prompts: str | None, engine: dict) -> ShootoutConfig:
    if not models:
        raise KurabeError("--model: give at least one model (NAME=SPEC)")
    entries = []
    for flag in models:
        name, spec = parse_model_flag(flag)
        entries.append({"name": name, "source": spec, "engine": engine})
    data = {"run": {"name": "bench", "repeats": repeats, "warmup": warmup,
                    "max_tokens": max_tokens, "fixed_length": fixed_length},
            "models": entries}
    if prompts:
        data["run"]["prompt_set"] = prompts
    return parse_config(data, "command line")


def run_shootout(config: ShootoutConfig, run_dir: Path, *, command: list[str] | None = None,
                 progress: ProgressHook | None = None) -> RunAnalysis:
    shootout = Shootout.create(config, run_dir, command=command, progress=progress)
    try:
        shootout.execute()
    finally:
        analysis, _ = render_run(run_dir)  # an interrupted run still gets its partial report
        shootout.store.close()
    return analysis


def resume_shootout(run_dir: Path, *, progress: ProgressHook | None = None) -> RunAnalysis:
    shootout = Shootout.resume(run_dir, progress=progress)
    try:
        shootout.execute()
    finally:
        analysis, _ = render_run(run_dir)
        shootout.store.close()
    return analysis
