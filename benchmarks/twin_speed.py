"""Does a twin decode as fast as the real model? The claim under test: a twin's decode speed
is within 5% of the real model's on the same engine and flags (the figures measured, and
what was found on the way: docs/twins.md, "Measured").

Where a file's pages land in memory moves a small model's decode rate on some machines by
several percent and, on a 2-core cloud guest, by up to about 30% between two files in one run,
whatever their content (docs/twins.md). One shootout of one twin against one real file
measures that draw as much as the content. So the benchmark runs ``--rounds`` rounds per
built-in model (SmolLM2-135M at Q4_1, Gemma-3-270M at Q4_K_M); every round writes a new twin
(its own seed, the model's own tensor types: ``make_twin(..., quant=None)``) and a fresh byte
copy of the real file, and runs ONE kurabe shootout of the two with identical engine flags
(``ctx``, ``threads``), ``fixed_length = true`` (every request generates exactly
``--max-tokens`` tokens, whatever a random model samples), several prompts, repeats and a
warm-up, alternating the two models request by request (A B, B A, ...). It prints each
round's rates and paired ratio, then the ratio over all rounds: the geometric mean of every
(prompt, repeat, round) pair with a t interval that treats the rounds, each a new draw of
files, as the sampled units (:func:`kurabe.analysis.stats.paired_ratio` with rounds as
clusters), and whether it lies within 5%.

Before each shootout every file of the round is written to disk and dropped from the page
cache (``fsync`` then ``POSIX_FADV_DONTNEED``), so each engine maps pages read back from disk
the same way. Without that, how a file was written decides how its page cache is laid out:
on this machine (Linux 6.18, ext4) a file written in big chunks from Python is mapped with
2 MiB pages where a ``cp`` copy is not, and the same bytes then decoded up to ~6% apart
(docs/twins.md). ``--page-cache keep`` leaves the files as written, to see that effect.

``--control`` adds a second fresh copy of the real file to every round (``real-2``): the same
bytes, so ``real-2/real`` is the placement noise floor measured the same way.

Run folders are kept (their paths are printed; ``kurabe report DIR`` reads them); the files
are deleted unless ``--keep``. Run it on a quiet machine (``uptime``): each round's machine
load line says whether it was.

Run (from the repository root; about 2 minutes per Gemma round, 1 per SmolLM2 round, on an
idle 2-core machine):

    .venv/bin/python benchmarks/twin_speed.py --control
    .venv/bin/python benchmarks/twin_speed.py --models gemma3-270m --rounds 8

Options: ``--rounds`` (rounds of fresh files, 5 or more for a verdict), ``--repeats``
(measured requests per prompt and model), ``--max-tokens`` (tokens generated per request),
``--prompts`` (how many of the built-in speed prompts), ``--threads`` (llama.cpp threads,
default: the usable cores), ``--ctx``, ``--models`` (comma-separated built-in names),
``--control`` (a second copy of the real file), ``--out`` (work folder, default a new
temporary one), ``--keep`` (keep the twins and copies).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pagecache import evict  # benchmarks/ (the script's folder) is on sys.path

from kurabe import api
from kurabe.analysis.run import RunAnalysis
from kurabe.analysis.stats import Estimate, Ratio, paired_ratio
from kurabe.config import parse_config
from kurabe.inputs import load_prompt_set
from kurabe.modelfiles.builtin import builtin_model, builtin_path

MODELS = ("smollm2-135m", "gemma3-270m")
TOLERANCE = 0.05


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def est(e: Estimate, fmt: str = "{:.1f}") -> str:
    if e.median is None:
        return "-"
    if e.ci_low is None or e.ci_high is None:
        return f"{fmt.format(e.median)} (no interval, n={e.n})"
    return (f"{fmt.format(e.median)} [{fmt.format(e.ci_low)}, {fmt.format(e.ci_high)}] "
            f"(n={e.n}, {e.clusters} prompts)")


def ratio_text(r: Ratio) -> str:
    if r.ratio is None:
        return f"- ({r.no_verdict})"
    ci = (f"95% CI [{r.ci_low:.4f}, {r.ci_high:.4f}]" if r.ci_low is not None
          and r.ci_high is not None else "no interval")
    note = f"; {r.no_verdict}" if r.no_verdict else ""
    return f"{r.ratio:.4f} ({ci}, {r.n} pairs, {r.clusters} prompts{note})"


def within(r: Ratio) -> str:
    if r.ratio is None:
        return "not measured"
    point = abs(r.ratio - 1) < TOLERANCE
    if r.ci_low is None or r.ci_high is None:
        return f"{'yes' if point else 'NO'} (ratio {r.ratio - 1:+.2%}; no interval)"
    whole = 1 - TOLERANCE < r.ci_low and r.ci_high < 1 + TOLERANCE
    outside = r.ci_high < 1 - TOLERANCE or r.ci_low > 1 + TOLERANCE
    # yes: the whole interval inside; NO: the whole interval outside; else undecided.
    verdict = "yes" if whole else "NO" if outside else "undecided"
    return (f"{verdict}: ratio {r.ratio - 1:+.2%} (point {'inside' if point else 'outside'}), "
            f"95% interval {r.ci_low - 1:+.2%} to {r.ci_high - 1:+.2%}")


def comparison(analysis: RunAnalysis, a: str, b: str, metric: str) -> Ratio:
    """The run's own paired comparison a/b (the config lists the twin first: twin/real)."""
    for c in analysis.speed.comparisons:
        if (c.a, c.b, c.metric) == (a, b, metric):
            return c.ratio
    # The run compares models in the order listed (real/real-2); the control reads
    # real-2/real, from the same pairs, clustered by prompt like the run's own.
    rows = pairs(analysis, a, b, metric)
    if not rows:
        raise SystemExit(f"the run has no {metric} pairs of {a} with {b}")
    return paired_ratio([x for x, _, _ in rows], [y for _, y, _ in rows],
                        clusters=[c for _, _, c in rows])


def weights_line(analysis: RunAnalysis, model: str) -> str:
    for load in analysis.loading:
        if load.get("model") != model:
            continue
        for row in load.get("rows", []):
            if row.get("buffer") == "model weights" and row.get("observed_bytes") is not None:
                return f"{row['observed_bytes'] / 2**20:.2f} MiB"
    return "-"


def mean_of(analysis: RunAnalysis, model: str, key: str) -> str:
    values = [r.metrics[key] for r in analysis.measured
              if r.model == model and r.metrics.get(key) is not None]
    if not values:
        return "-"
    lo, hi = min(values), max(values)
    return f"{lo:g}" if lo == hi else f"{lo:g}–{hi:g}"


def shootout(name: str, twin: Path, copies: list[Path], run_dir: Path,
             opts: argparse.Namespace, prompts: list[dict[str, Any]]) -> RunAnalysis:
    engine = {"ctx": opts.ctx, "threads": opts.threads}
    # The twin first: the run compares each model with every later one as first/second, so
    # the comparisons read twin/real (and real-2/real for the control copy).
    models = [{"name": "twin", "source": str(twin), "engine": engine}]
    # A file is served with its own template; the real model's (Gemma's) goes with it.
    template = builtin_model(name).chat_template
    for label, copy in zip(("real", "real-2"), copies, strict=False):
        copy_engine = dict(engine)
        if template:
            template_file = copy.with_suffix(".jinja")
            template_file.write_text(template, encoding="utf-8")
            copy_engine["chat_template_file"] = str(template_file)
        models.append({"name": label, "source": str(copy), "engine": copy_engine})
    config = parse_config({
        "run": {"name": f"twin-speed-{name}", "repeats": opts.repeats, "warmup": opts.warmup,
                "max_tokens": opts.max_tokens, "fixed_length": True},
        "models": models,
        "prompts": prompts,
    }, "twin_speed")
    last = [0.0]

    def progress(description: str, done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] > 10 or done == total:
            last[0] = now
            print(f"  {done}/{total} {description}", file=sys.stderr, flush=True)

    return api.run_shootout(config, run_dir, progress=progress)


def pairs(analysis: RunAnalysis, a: str, b: str, metric: str
          ) -> list[tuple[float, float, str]]:
    """(a, b, prompt) per matched (prompt, repeat) of one run."""
    by = {m: {(r.prompt_id, r.repeat): r.metrics.get(metric) for r in analysis.measured
              if r.model == m} for m in (a, b)}
    return [(x, y, key[0]) for key, x in by[a].items()
            if (y := by[b].get(key)) is not None and x is not None]


def report(name: str, analysis: RunAnalysis, run_dir: Path, seconds: float,
           round_no: int) -> None:
    speed = analysis.speed
    print(f"\n== builtin:{name}, round {round_no} ({seconds:.0f} s; run folder {run_dir})")
    if not analysis.complete:
        print(f"  run {analysis.run.status}; failures: {analysis.failures}")
    models = [m for m in ("real", "real-2", "twin") if m in speed.per_model]
    for m in models:
        pm = speed.per_model[m]
        print(f"  {m:9s} decode {est(pm['decode_tokens_per_s'])} tokens/s")
        print(f"  {'':9s} prompt {est(pm['prompt_tokens_per_s'])} tokens/s")
        print(f"  {'':9s} output tokens {mean_of(analysis, m, 'output_tokens')}, "
              f"prompt tokens {mean_of(analysis, m, 'prompt_tokens')}, "
              f"weights loaded {weights_line(analysis, m)}")
    compared = [("twin", "real")]
    if "real-2" in models:
        compared += [("real-2", "real")]
    for a, b in compared:
        label = f"{a}/{b}"
        decode = comparison(analysis, a, b, "decode_tokens_per_s")
        prompt = comparison(analysis, a, b, "prompt_tokens_per_s")
        print(f"  {label} decode: {ratio_text(decode)}")
        print(f"  {label} prompt: {ratio_text(prompt)}")
        print(f"  {label} decode within {TOLERANCE:.0%}: {within(decode)}")
    for w in speed.warnings:
        print(f"  warning [{w.code}]: {w.message}")
    if analysis.machine_load is not None:
        print(f"  machine: {analysis.machine_load.sentence()}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=2, help="measured requests per prompt")
    p.add_argument("--warmup", type=int, default=1, help="unmeasured requests per model")
    p.add_argument("--max-tokens", type=int, default=96, help="tokens generated per request")
    p.add_argument("--prompts", type=int, default=6,
                   help="how many of the built-in speed prompts (5 or more for a verdict)")
    p.add_argument("--threads", type=int, default=usable_cores(), help="llama.cpp threads")
    p.add_argument("--ctx", type=int, default=2048, help="context size")
    p.add_argument("--models", default=",".join(MODELS), help="built-in model names")
    p.add_argument("--out", type=Path, default=None, help="work folder (default: temporary)")
    p.add_argument("--rounds", type=int, default=5,
                   help="rounds, each with freshly written files (5 or more for a verdict)")
    p.add_argument("--control", action="store_true",
                   help="add a second fresh copy of the real file (the placement noise floor)")
    p.add_argument("--keep", action="store_true", help="keep the twins and copies")
    p.add_argument("--page-cache", choices=("evict", "keep"), default="evict",
                   help="drop every file's pages before its shootout (default), or keep "
                        "them as the writes left them")
    opts = p.parse_args()

    every = load_prompt_set("builtin:speed")
    prompts = [{"id": q.id, "text": q.text, "category": q.category, "lang": q.lang}
               for q in every[:max(1, opts.prompts)]]
    work = opts.out or Path(tempfile.mkdtemp(prefix="kurabe-twin-speed-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"engine flags: ctx {opts.ctx}, threads {opts.threads}; fixed_length, "
          f"{opts.max_tokens} tokens, {len(prompts)} prompts x {opts.repeats} repeats, "
          f"{opts.warmup} warm-up; page cache: {opts.page_cache}; "
          f"load average at start {os.getloadavg()[0]:.2f} "
          f"({usable_cores()} usable cores)")
    run_dirs = []
    summaries = []
    for name in [m.strip() for m in opts.models.split(",") if m.strip()]:
        pooled: dict[str, list[tuple[float, float, str]]] = {}
        for round_no in range(1, opts.rounds + 1):
            # Fresh files every round: a new twin (its own seed) and fresh byte copies of
            # the real file, so each round draws a new placement for every file.
            twin = work / f"{name}-twin-r{round_no}.gguf"
            written = api.make_twin(f"builtin:{name}", twin, seed=round_no)
            copies = [work / f"{name}-real-r{round_no}.gguf"]
            if opts.control:
                copies.append(work / f"{name}-real2-r{round_no}.gguf")
            for copy in copies:
                shutil.copyfile(builtin_path(f"builtin:{name}"), copy)
            if opts.page_cache == "evict":
                for f in (twin, *copies):
                    evict(f)
            print(f"round {round_no}: twin of builtin:{name} (seed {round_no}, "
                  f"{written.file_bytes / 2**20:.1f} MiB, {written.seconds:.1f} s) and "
                  f"{len(copies)} fresh cop{'ies' if len(copies) > 1 else 'y'} of the real "
                  "file", flush=True)
            run_dir = work / f"run-{name}-r{round_no}"
            started = time.monotonic()
            try:
                analysis = shootout(name, twin, copies, run_dir, opts, prompts)
            finally:
                if not opts.keep:
                    for f in (twin, *copies):
                        f.unlink(missing_ok=True)
                        f.with_suffix(".jinja").unlink(missing_ok=True)
            report(name, analysis, run_dir, time.monotonic() - started, round_no)
            run_dirs.append(run_dir)
            for a, b in (("twin", "real"), ("real-2", "real")):
                for metric in ("decode_tokens_per_s", "prompt_tokens_per_s"):
                    if a in analysis.speed.per_model:
                        pooled.setdefault(f"{a}/{b} {metric}", []).extend(
                            (x, y, f"r{round_no}") for x, y, _ in pairs(analysis, a, b, metric))
        summaries.append((name, pooled))
    print(f"\n== over {opts.rounds} rounds (each round's files are the sampled unit: the "
          "ratio is the geometric mean of every pair, its interval a t interval with rounds "
          "as clusters)")
    for name, pooled in summaries:
        for label, rows in pooled.items():
            r = paired_ratio([x for x, _, _ in rows], [y for _, y, _ in rows],
                             clusters=[c for _, _, c in rows])
            print(f"  {name} {label}: {ratio_text(r).replace(' prompts', ' rounds')}")
            if label.endswith("decode_tokens_per_s"):
                print(f"  {name} {label.split()[0]} decode within {TOLERANCE:.0%}: {within(r)}")
    print("\nrun folders:")
    for d in run_dirs:
        print(f"  {d}")
    if opts.keep:
        print(f"twins kept in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
