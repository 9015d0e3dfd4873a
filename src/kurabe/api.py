"""The Python API under the CLI: every command is a thin layer over one of these.

Importing this module is cheap, because the CLI imports it before every command, its help
included: configs (pydantic), the statistics (numpy, scipy), the HTTP client and the report
templates are imported inside the functions that need them. Messages here never name a CLI
flag; the CLI adds those when it reports an error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kurabe import KurabeError

if TYPE_CHECKING:
    from kurabe.analysis.calibration import CalibrationResult
    from kurabe.analysis.run import RunAnalysis
    from kurabe.config import ShootoutConfig
    from kurabe.lineage import LineageResult
    from kurabe.modelfiles.card import ModelCard
    from kurabe.orchestrator import Orchestrator
    from kurabe.phases import ProgressHook
    from kurabe.twin import TwinResult

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
    from kurabe.config import EngineConfig, ModelConfig, QualityConfig, RunConfig, ShootoutConfig

    # 4096 tokens: the judge's pairwise prompt (two answers and the rubric) must fit.
    engine = EngineConfig(ctx=4096)
    return ShootoutConfig(
        run=RunConfig(name="demo", repeats=repeats, warmup=warmup, max_tokens=max_tokens),
        models=[ModelConfig(name="smollm2-135m", source="builtin:smollm2-135m", engine=engine),
                ModelConfig(name="gemma3-270m", source="builtin:gemma3-270m", engine=engine)],
        quality=QualityConfig(
            suites=["builtin:ja_core", "builtin:code", "builtin:cutoff", "builtin:safety"],
            per_category=per_category, max_tokens=quality_max_tokens, judge="smollm2-135m",
            judge_max_tokens=64,
            # One calibration item per kind of flaw (Japanese first): 24 judge requests.
            calibration_per_flaw=1,
        ) if quality else None,
    )


def parse_model_spec(flag: str) -> tuple[str, str]:
    """``NAME=SPEC``, or a bare SPEC named after its file, built-in name or host."""
    from kurabe.config import source_kind

    head, sep, tail = flag.partition("=")
    if sep and head and not any(ch in head for ch in "/:"):
        name, spec = head, tail
    else:
        spec = flag
        kind = source_kind(spec)
        if kind == "endpoint":
            name = spec.split("://", 1)[1].split("/")[0].replace(":", "-")
        elif kind in ("builtin", "scripted"):
            name = spec.split(":", 1)[1]
        else:
            name = Path(spec).stem
    if not name or not spec:
        raise KurabeError(f"model {flag!r}: expected NAME=SPEC, e.g. a=path/to/a.gguf")
    return name, spec


def bench_config(models: list[str], *, repeats: int, warmup: int, max_tokens: int,
                 fixed_length: bool, prompts: str | None, engine: dict,
                 limits: dict[str, Any] | None = None) -> ShootoutConfig:
    """The config of a quick speed comparison. ``limits``: [run] keys for timeouts and
    retries (``request_timeout_s``, ``stall_timeout_s``, ``max_retries``); None keeps the
    defaults."""
    from kurabe.config import parse_config

    if not models:
        raise KurabeError("no models: give at least one model (NAME=SPEC)")
    entries = []
    for flag in models:
        name, spec = parse_model_spec(flag)
        entries.append({"name": name, "source": spec, "engine": engine})
    data: dict[str, Any] = {"run": {"name": "bench", "repeats": repeats, "warmup": warmup,
                                    "max_tokens": max_tokens, "fixed_length": fixed_length,
                                    **{k: v for k, v in (limits or {}).items()
                                       if v is not None}},
                            "models": entries}
    if prompts:
        data["run"]["prompt_set"] = prompts
    return parse_config(data, "command line")


def load_config(path: str | Path) -> ShootoutConfig:
    """A shootout TOML file, validated (a KurabeError names the file and the bad keys)."""
    from kurabe.config import load_config as load

    return load(path)


def check_run_dir(run_dir: str | Path) -> None:
    """A new run can be written at ``run_dir``: it is a folder or does not exist yet, and the
    nearest existing folder above it can be written (a KurabeError names the path)."""
    import os

    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise KurabeError(f"{run_dir}: exists and is not a folder")
    parent = run_dir
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise KurabeError(f"{run_dir}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise KurabeError(f"{run_dir}: cannot create files in {parent} (permission denied)")


@contextmanager
def _reading(run_dir: str | Path, doing: str) -> Iterator[None]:
    """Reading a run's store to ``doing`` it: a store kurabe cannot read (a damaged file, a
    row that is not what kurabe wrote) is one KurabeError naming the folder and the row."""
    try:
        yield
    except KurabeError:
        raise
    except Exception as exc:
        from kurabe.store import damage_error

        error = damage_error(Path(run_dir), exc, doing)
        if error is exc:
            raise
        raise error from None


def _execute(run: Orchestrator, run_dir: Path) -> RunAnalysis:
    from kurabe.processes import RunInUseError
    from kurabe.report import render_run

    try:
        run.execute()
    except RunInUseError:
        # Another kurabe is executing this run: leave its folder alone.
        run.store.close()
        raise
    finally:
        if not run.store.closed:
            run.store.close()
            # An interrupted or failed run still gets its partial report.
            analysis, _ = render_run(run_dir)
    return analysis


def run_shootout(config: ShootoutConfig, run_dir: Path, *, command: list[str] | None = None,
                 progress: ProgressHook | None = None) -> RunAnalysis:
    """Create a run folder for ``config``, run it, and write its report."""
    from kurabe.orchestrator import Orchestrator

    check_run_dir(run_dir)
    return _execute(Orchestrator.create(config, run_dir, command=command, progress=progress),
                    run_dir)


# What each phase's pending count counts (``pending_work``).
_PHASE_UNITS = {"speed": "requests", "load": "levels", "quality generation": "answers",
                "checks": "checks",
                "judging": "grades", "judge probes": "probes", "sweep judging": "grades",
                "calibration": "grades"}
# The files a finished run's report consists of (``resume_shootout`` writes them only if
# one is missing).
_REPORT_FILES = ("report.md", "report.html", "results.jsonl", "results.csv")


def _finished(run: Orchestrator) -> bool:
    """The run is complete and nothing is left to do (no failed or missing work, no new
    judge's grades)."""
    return run.store.run().status == "complete" and not any(run.pending().values())


def pending_work(run_dir: str | Path) -> dict[str, Any]:
    """What resuming a run would do, from its store alone. ``status``: the stored status
    (running, complete, incomplete, interrupted or failed); ``finished``: complete with
    nothing left to do; ``phases``: one dict per phase with work left, in run order, each
    with ``phase``, ``pending``, ``total`` (all the phase's work, where known, else None)
    and ``unit`` (requests, answers, checks, grades); ``leftover_engines``: engines an
    earlier kurabe started and never stopped (it was killed), which the resume stops first,
    each as ``model`` and ``pid``."""
    from kurabe.orchestrator import Orchestrator
    from kurabe.phases.speed import SpeedPhase

    with _reading(run_dir, "resume"):
        run = Orchestrator.reopen(Path(run_dir))
    try:
        with _reading(run_dir, "resume"):
            pending = run.pending()
        phases = [{"phase": phase.name, "pending": pending[phase.name],
                   "total": len(phase.schedule) if isinstance(phase, SpeedPhase) else None,
                   "unit": _PHASE_UNITS.get(phase.name, "items")}
                  for phase in run.phases if pending.get(phase.name)]
        from kurabe import processes

        leftover = [{"model": p.model, "pid": p.pid}
                    for p in run.store.processes(running_only=True)
                    if p.role == "engine" and processes.is_running(p)]
        return {"status": run.store.run().status, "finished": _finished(run), "phases": phases,
                "leftover_engines": leftover}
    finally:
        run.store.close()


def resume_shootout(run_dir: Path, *, progress: ProgressHook | None = None) -> RunAnalysis:
    """Finish an interrupted or incomplete run from its folder alone: only the missing or
    failed work is done. A run already complete with nothing to do is left as it is (its
    status and finished time unchanged); only a missing report file is written again."""
    from kurabe.orchestrator import Orchestrator

    run_dir = Path(run_dir)
    with _reading(run_dir, "resume"):
        run = Orchestrator.reopen(run_dir, progress=progress)
        finished = _finished(run)
    if not finished:
        return _execute(run, run_dir)
    try:
        if any(not (run_dir / name).is_file() for name in _REPORT_FILES):
            run.store.close()
            from kurabe.report import render_run

            return render_run(run_dir)[0]
        from kurabe.analysis.run import analyse_run

        with _reading(run_dir, "resume"):
            return analyse_run(run.store, run.snapshot)
    finally:
        run.store.close()


def rejudge(run_dir: Path, judge: str | None = None, *, progress: ProgressHook | None = None
            ) -> RunAnalysis:
    """Grade a run's stored answers again, with another judge (``NAME=SPEC``) or the
    configured one, without regenerating anything."""
    from kurabe.config import ModelConfig, ShootoutConfig
    from kurabe.store import Store

    with Store.open(run_dir) as store, _reading(run_dir, "judge"):
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
                from kurabe.chat_template import model_opens_thinking
                from kurabe.modelfiles.resolve import resolve_model
                from kurabe.orchestrator import refuse_twins_in_quality

                judge_model = ModelConfig(name=name, source=spec)
                resolved = resolve_model(name, spec, judge_model.kind,
                                         judge_model.engine.chat_template_file)
                # Checked before the run is changed: an unsafe chat template or a synthetic
                # twin (random weights) stops here.
                model_opens_thinking(judge_model, resolved)
                asked = config.quality.model_copy(update={"judge": name})
                refuse_twins_in_quality(config.model_copy(update={"quality": asked}),
                                        {name: resolved})
                config.judges.append(judge_model)
            config.quality.judge = name
            store.update_config(config.to_json(), f"judge set to {name} ({spec})")
        elif not config.quality.judge:
            raise KurabeError(f"{run_dir}: this run has no judge configured; name one "
                              "(NAME=SPEC)")
        _add_calibration_items(store, config)
    return resume_shootout(run_dir, progress=progress)


def _add_calibration_items(store: Any, config: ShootoutConfig) -> None:
    """A run whose snapshot has no calibration items (made without a judge, or by an older
    kurabe) gets them now, so its judge is calibrated before it grades."""
    from kurabe.inputs import resolve_calibration_items, run_snapshot

    snapshot = run_snapshot(store)
    if snapshot.calibration_items:
        return
    items = resolve_calibration_items(config)
    if items:
        snapshot.calibration_items = [i.to_dict() for i in items]
        store.write_snapshot(snapshot)


def calibrate_judge(judge_spec: str, *, calibration_set: str | None = None,
                    per_flaw: int | None = None, out: Path | None = None,
                    threshold: float | None = None, ctx: int = 4096,
                    judge_max_tokens: int = 512, command: list[str] | None = None,
                    progress: ProgressHook | None = None) -> CalibrationResult:
    """Run a judge (``NAME=SPEC``: ``builtin:NAME``, a .gguf, an http(s) base URL) over the
    calibration set alone (default ``builtin:calibration``; ``per_flaw``: sample this many
    items per kind of flaw) in a new run folder ``out``, which keeps every raw verdict and a
    small report. ``threshold``: the pairwise accuracy to pass (default 0.75); ``ctx``: the
    context of a managed judge."""
    from kurabe.analysis.calibration import CalibrationResult
    from kurabe.config import QualityConfig, parse_config
    from kurabe.evals.calibration import BUILTIN_SET, resolve_calibration_items
    from kurabe.evals.judge import judge_prompts
    from kurabe.orchestrator import Orchestrator
    from kurabe.records import Snapshot

    name, spec = parse_model_spec(judge_spec)
    quality: dict[str, Any] = {"judge": name, "calibrate": True,
                               "calibration_set": calibration_set or BUILTIN_SET,
                               "calibration_per_flaw": per_flaw,
                               "judge_max_tokens": judge_max_tokens}
    if threshold is not None:
        quality["calibration_threshold"] = threshold
    config = parse_config({
        "run": {"name": "judge-calibration", "repeats": 1, "warmup": 0, "prompt_set": None},
        "models": [{"name": name, "source": spec, "engine": {"ctx": ctx}}],
        "quality": quality}, f"judge {judge_spec}")
    q: QualityConfig | None = config.quality
    assert q is not None
    if not Path(q.calibration_set).is_absolute() and not q.calibration_set.startswith(
            "builtin:"):
        q.calibration_set = str(Path(q.calibration_set).expanduser().resolve())
    items = resolve_calibration_items(q.calibration_set, q.calibration_per_flaw, q.seed)
    # No speed prompts and no quality items: the run is the calibration alone.
    snapshot = Snapshot(config=config.model_dump(mode="json"), prompts=[], suite_items=[],
                        judge_prompts=judge_prompts(),
                        calibration_items=[i.to_dict() for i in items])
    run_dir = Path(out) if out is not None else default_run_dir("judge-calibration")
    check_run_dir(run_dir)
    analysis = _execute(Orchestrator.create(config, run_dir, command=command,
                                            progress=progress, snapshot=snapshot), run_dir)
    return CalibrationResult(run_dir=run_dir, calibration=analysis.calibration,
                             analysis=analysis)


def report(run_dir: str | Path) -> tuple[RunAnalysis, list[Path]]:
    """Re-render a run's report.md, report.html, results.jsonl and results.csv from its store
    alone; returns the analysis and the files written."""
    from kurabe.report import render_run

    return render_run(run_dir)


def compare(before: str | Path, after: str | Path) -> dict[str, Any]:
    """What changed between two runs of the same models: ``setup_changes`` (engine version,
    file, quant, flags), ``changes`` (per metric, with intervals and a sentence) and
    ``notes``."""
    from kurabe.analysis.compare import compare_runs
    from kurabe.config import ShootoutConfig
    from kurabe.store import Store

    for run_dir in (before, after):  # a damaged store is named before anything is compared
        with Store.open(Path(run_dir), read_only=True) as store, _reading(run_dir, "compare"):
            ShootoutConfig.from_json(store.run().config_json)
            list(store.requests())
            store.models()
    return compare_runs(before, after)


def inspect_model(spec: str) -> ModelCard:
    """The model card of a .gguf file (header only), a config.json (or its folder) or
    ``builtin:NAME``; ``card.to_dict()`` is its JSON form."""
    from kurabe.modelfiles.card import load_model_header, model_card

    header, kind = load_model_header(spec)
    return model_card(header, spec, kind)


def model_card_rows(card: ModelCard) -> list[tuple[str, str]]:
    """A model card as (field, value) rows for a table."""
    from kurabe.modelfiles.card import card_text

    return card_text(card)


def parse_size(text: str, what: str = "memory budget") -> int:
    """'48GiB', '48 GB', '512MiB', '1e9' -> bytes; a KurabeError that names ``what``."""
    from kurabe.simulator.budget import parse_size as parse

    return parse(text, what)


def plan(spec: str, *, ctx: int = 4096, cache_type_k: str = "f16", cache_type_v: str = "f16",
         parallel: int = 1, ngl: int | None = None, ubatch: int = 512, flash_attn: str = "auto",
         quant: str | None = None, budget: str | None = None, gpu: bool | None = None
         ) -> dict[str, Any]:
    """llama.cpp's memory for a model, predicted: weights, KV cache, recurrent state, output
    and compute buffers; with a ``budget`` (e.g. "48GiB"), whether it fits and the largest
    context that does. ``quant`` plans the file llama-quantize would write for that type.

    Placement is planned for this machine unless told otherwise: with no GPU found nothing is
    offloaded, with one every layer is. ``gpu`` True or False assumes a GPU or none; ``ngl``
    (llama.cpp's -ngl: layers to offload, -1 all, 0 none) other than 0 assumes a GPU. The
    result says which placement was assumed and why: ``placement``, ``gpu_assumed``,
    ``n_gpu_layers`` of ``n_layers_offloadable``, ``placement_basis`` ("machine" or
    "asked") and ``placement_reason``."""
    from kurabe.simulator.budget import plan_model

    return plan_model(spec, ctx=ctx, cache_type_k=cache_type_k, cache_type_v=cache_type_v,
                      parallel=parallel, ngl=ngl, ubatch=ubatch, flash_attn=flash_attn,
                      quant=quant, budget=budget, gpu=gpu)


def rank_quants(spec: str, quants: list[str], *, budget: str, ctx: int = 4096,
                cache_type_k: str = "f16", cache_type_v: str = "f16", parallel: int = 1,
                ngl: int | None = None, ubatch: int = 512, flash_attn: str = "auto",
                gpu: bool | None = None) -> dict[str, Any]:
    """A memory plan for each quant type of a model, by file size, against ``budget``:
    ``quants`` holds the plans, ``best`` the largest type that fits (None when none does).
    Every quant is planned with the same placement, chosen as for :func:`plan` and repeated
    at the top level (``placement``, ``gpu_assumed``, ``placement_reason``)."""
    from kurabe.simulator.budget import rank_quants as rank

    return rank(spec, quants, budget=budget, ctx=ctx, cache_type_k=cache_type_k,
                cache_type_v=cache_type_v, parallel=parallel, ngl=ngl, ubatch=ubatch,
                flash_attn=flash_attn, gpu=gpu)


def make_twin(spec: str, out: str | Path, *, quant: str | None = None,
              sets: Mapping[str, str] | None = None,
              progress: Callable[[int, int], None] | None = None, seed: int = 0
              ) -> TwinResult:
    """Write a synthetic twin of a model: a random-weight GGUF with its architecture, tensor
    names and shapes, and the per-tensor types llama-quantize would give for ``quant`` (the
    planner's prediction; None keeps a GGUF's own types, F16 for a config.json). ``spec``: a
    config.json (or its folder), a .gguf (header only) or ``builtin:NAME``. ``sets``: what-if
    changes to the config's own keys, e.g. ``{"num_experts": "256"}`` (values read as JSON
    when they parse), applied to the text model. ``progress(bytes_done, bytes_total)``.
    Bad input raises :class:`kurabe.twin.make.TwinInputError`, whose ``option`` says which
    input ("quant", "set", "out")."""
    from kurabe.twin.make import make_twin as make

    return make(spec, Path(out), quant=quant, sets=dict(sets or {}), progress=progress,
                seed=seed)


def lineage(a: str | Path, b: str | Path, *, rows: int | None = None,
            max_layers: int | None = None, seed: int = 0,
            progress: ProgressHook | None = None) -> LineageResult:
    """Whether one model was built from the other's weights: ``derived``, ``independent``
    or ``inconclusive``, with the evidence (declared metadata, tokenizer, tensor shapes,
    per-layer weight similarity) and its strength. ``a``/``b``: a .gguf file,
    ``builtin:NAME``, or a folder with config.json and safetensors weights. ``rows``:
    vectors compared per tensor (default 64; the column search reads 4 times as many rows
    and the permutation search up to 16 times as many of B's); ``max_layers``: compare
    only this many layers, evenly spaced (default: all). ``progress(description, done,
    total)`` per tensor. ``result.to_dict()`` is the JSON form (docs/lineage.md)."""
    from kurabe.lineage import DEFAULT_SAMPLE, Sample, compare_lineage

    if rows is not None and rows < 2:
        raise KurabeError(f"a sample of {rows} rows per tensor: give at least 2")
    if max_layers is not None and max_layers < 1:
        raise KurabeError(f"a sample of {max_layers} layers: give at least 1")
    scale = (rows or DEFAULT_SAMPLE.rows) / DEFAULT_SAMPLE.rows
    sample = Sample(rows=rows or DEFAULT_SAMPLE.rows,
                    column_rows=max(2, round(DEFAULT_SAMPLE.column_rows * scale)),
                    candidates=max(2, round(DEFAULT_SAMPLE.candidates * scale)),
                    max_layers=max_layers, seed=seed)
    return compare_lineage(a, b, sample=sample, progress=progress)


def builtin_models() -> list[dict[str, Any]]:
    """The built-in models: spec, PyPI package, description, quant, and whether installed."""
    from kurabe.modelfiles.builtin import BUILTIN_MODELS, is_installed

    return [{"spec": m.spec, "package": m.package, "description": m.description,
             "quant": m.quant, "installed": is_installed(m)} for m in BUILTIN_MODELS.values()]


def config_models(path: str | Path) -> list[dict[str, Any]]:
    """The models a shootout TOML file names: name, source, kind (file, builtin, http, ...)
    and, for a file, whether it exists (None for other kinds)."""
    return [{"name": m.name, "source": m.source, "kind": m.kind,
             "file_found": Path(m.source).is_file() if m.kind == "file" else None}
            for m in load_config(path).models]


def split_thinking(text: str, finish_reason: str | None = None, *,
                   template_opens_thinking: bool | None = None,
                   origin: str = "saved response") -> dict[str, Any]:
    """Split a saved response (chat-completion JSON whose content is a string or a list of
    text parts, Ollama JSON or NDJSON, an SSE transcript, a JSON list of streamed chunks, or
    plain text) into reasoning and answer, and say its outcome. ``finish_reason`` overrides
    the stop reason the response records.

    ``template_opens_thinking``: whether the model's chat template opened a think block
    itself (True), opened none (False), or is unknown (None). When unknown and the two
    readings differ (a ``</think>`` with no ``<think>`` before it, a block that never
    closes), ``ambiguous`` is True, ``ambiguity`` says why and ``alternative`` holds the
    other reading (reasoning, answer, outcome, format). ``notes``: what the reading had to
    assume or repair (several choices, a stream that may be cut short, lone surrogates).

    Text kurabe cannot read truthfully raises a KurabeError that starts with ``origin``:
    text that starts like a JSON object but does not parse (a cut-off file), JSON of another
    shape, a field of the wrong type (content that is a number), a saved error answer."""
    from kurabe.thinking import SavedResponseError, parse_saved_response, read_response

    try:
        saved = parse_saved_response(text)
    except SavedResponseError as exc:
        raise KurabeError(f"{origin}: {exc}") from None
    finish = finish_reason or saved.finish_reason
    reading = read_response(saved.content, saved.reasoning, finish,
                            starts_in_reasoning=template_opens_thinking)
    split, other = reading.split, reading.alternative
    return {"reasoning": split.reasoning, "answer": split.answer,
            "outcome": reading.outcome, "leaked_markers": split.leaked_markers,
            "format": split.format, "finish_reason": finish, "input_kind": saved.kind,
            "template_opens_thinking": template_opens_thinking,
            "ambiguous": bool(reading.ambiguity), "ambiguity": reading.ambiguity or None,
            "alternative": None if other is None else {
                "reasoning": other.split.reasoning, "answer": other.split.answer,
                "outcome": other.outcome, "format": other.split.format},
            "notes": saved.notes}


def split_thinking_file(path: str | Path, finish_reason: str | None = None, *,
                        template_opens_thinking: bool | None = None) -> dict[str, Any]:
    """``split_thinking`` of a saved response file (UTF-8); errors name the file."""
    path = Path(path)
    limit = 64 << 20  # a saved response is a few KiB to a few MiB
    try:
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        raise KurabeError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}"
                          ) from None
    if len(data) > limit:
        raise KurabeError(f"{path}: over {limit >> 20} MiB: not a saved response")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise KurabeError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    return split_thinking(text, finish_reason, template_opens_thinking=template_opens_thinking,
                          origin=str(path))


def explain_metrics() -> tuple[dict[str, str], str]:
    """How every per-request metric is computed (name -> text), and how they are aggregated."""
    from kurabe.analysis.stats import MIN_PROMPTS, N_RESAMPLES
    from kurabe.metrics import METRIC_DOCS

    return dict(METRIC_DOCS), (
        "Aggregates treat prompts, not requests, as the sampled units (the repeats of a prompt "
        "are not independent). Median per model: a 95% interval from a two-stage cluster "
        f"bootstrap (prompts, then repeats within each; {N_RESAMPLES} resamples, fixed seed), "
        "expanded percentile for the number of prompts k (tails matched to t with k - 1 "
        "degrees of freedom); one prompt gives no interval. Comparisons: geometric mean of "
        "per-request ratios a/b paired on (prompt, repeat), with a 95% t interval on the mean "
        "log ratio, cluster-robust standard error over prompts, k - 1 degrees of freedom; an "
        "interval that contains 1.0 is no clear winner. Minimum sample: with fewer than "
        f"{MIN_PROMPTS} distinct prompts a ratio is shown with no verdict (\"too few requests "
        "to decide\", decided false). Figures do not depend on row order. "
        f"Full text: {metrics_reference()}")


def metrics_reference() -> Path:
    """The installed copy of the metrics reference (docs/metrics.md in the source tree): every
    figure's definition, clocks, outcomes and aggregates."""
    from importlib import resources

    return Path(str(resources.files("kurabe.data").joinpath("metrics.md")))


# -- load testing --------------------------------------------------------------------------


def parse_duration_s(text: str, what: str = "duration") -> float:
    """Seconds from ``30``, ``30s``, ``500ms``, ``2m`` or ``1h``."""
    import re

    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h)?\s*", str(text))
    if not found:
        raise KurabeError(f"{what} {text!r}: expected a time such as 30s, 500ms, 2m or 1h")
    value = float(found.group(1))
    factor = {"ms": 0.001, "s": 1.0, None: 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
    seconds = value * factor[found.group(2)]
    if seconds <= 0:
        raise KurabeError(f"{what} {text!r}: must be more than 0")
    return seconds


def load_test_config(models: list[str], *, concurrency: list[int] | None = None,
                     rate: list[float] | None = None, poisson: list[float] | None = None,
                     sweep: bool = False, max_concurrency: int = 64,
                     duration_s: float | None = None, requests: int | None = None,
                     warmup_s: float = 0.0, warmup_requests: int = 0, max_tokens: int = 128,
                     fixed_length: bool = False, prompts: str | None = None,
                     prompt_tokens: int | None = None, workers: str | int = "auto",
                     slo: dict[str, float | None] | None = None, seed: int = 0,
                     engine: dict[str, Any] | None = None,
                     limits: dict[str, Any] | None = None) -> ShootoutConfig:
    """The config of a load run (``kurabe load``): the models, a ``[load]`` section, and no
    speed phase. ``models``: ``NAME=SPEC``; a SPEC of several http(s) URLs separated by
    commas is one model served by several replicas. A managed llama.cpp server gets as many
    parallel slots as the largest level has streams, each with room for a prompt and its
    answer, unless ``engine`` says otherwise."""
    from kurabe.config import parse_config

    if not models:
        raise KurabeError("no models: give at least one model (NAME=SPEC)")
    streams = max(concurrency or [1]) if not sweep else max_concurrency
    if rate or poisson:
        streams = 4
    per_slot = max_tokens + (prompt_tokens or 512) + 128
    eng = {"parallel": streams, "ctx": max(4096, streams * per_slot), **(engine or {})}
    entries = []
    for flag in models:
        name, spec = parse_model_spec(flag)
        urls = [u.strip() for u in spec.split(",") if u.strip()]
        entry: dict[str, Any] = {"name": name, "source": urls[0] if urls else spec}
        if len(urls) > 1:
            entry["replicas"] = urls[1:]
        if entry["source"].startswith(("builtin:", "scripted:")) or "://" not in entry["source"]:
            entry["engine"] = eng
        entries.append(entry)
    load: dict[str, Any] = {"max_tokens": max_tokens, "fixed_length": fixed_length,
                            "warmup_s": warmup_s, "warmup_requests": warmup_requests,
                            "workers": workers, "seed": seed,
                            "slo": {k: v for k, v in (slo or {}).items() if v is not None}}
    if sweep:
        load |= {"sweep": True, "max_concurrency": max_concurrency}
    elif rate:
        load["rate"] = rate
    elif poisson:
        load["poisson"] = poisson
    else:
        load["concurrency"] = concurrency or [1]
    if duration_s is not None:
        load["duration_s"] = duration_s
    if requests is not None:
        load["requests"] = requests
    if prompt_tokens is not None:
        load |= {"prompt_tokens": prompt_tokens, "prompts": None}
    elif prompts:
        load["prompts"] = prompts
    data: dict[str, Any] = {"run": {"name": "load", "speed": False,
                                    **{k: v for k, v in (limits or {}).items()
                                       if v is not None}},
                            "models": entries, "load": load}
    return parse_config(data, "command line")


def load_results(run_dir: str | Path) -> dict[str, Any]:
    """A run's load levels as ``LoadAnalysis.to_json()`` (kurabe.analysis.load), with
    ``run_dir``."""
    from kurabe.store import Store

    with _reading(run_dir, "analyse the load levels"):
        store = Store.open(Path(run_dir))
        try:
            from kurabe.analysis.load import analyse_load

            result = analyse_load(store).to_json()
        finally:
            store.close()
    return result | {"run_dir": str(run_dir)}


def run_load(config: ShootoutConfig, run_dir: Path, *, command: list[str] | None = None,
             progress: ProgressHook | None = None) -> dict[str, Any]:
    """Create a run folder for ``config`` (with a ``[load]`` section), run it and write its
    report; returns ``load_results`` of it, with the run's ``status`` (complete,
    incomplete...)."""
    if config.load is None:
        raise KurabeError("no [load] section: nothing to load-test")
    analysis = run_shootout(config, Path(run_dir), command=command, progress=progress)
    return load_results(run_dir) | {"status": analysis.run.status}
