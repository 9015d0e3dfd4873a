"""kurabe's load client against GuideLLM and AIPerf, on a server whose timing is known exactly.

Starts the synthetic streaming server (``kurabe.load.synthetic``: first token after
``--ttft-ms``, then one token every ``--itl-ms``; it records when it wrote every token), then
runs each tool against a fresh server at each concurrency level (same prompt length, same
output length, ``--rounds`` requests per stream) and compares what the tool reported for each
request with what the server did:

- TTFT error = tool's TTFT − server's (first token written − request received), per request;
- ITL error = tool's per-request inter-token latency − server's ((last − first) / (n − 1));
- requests: completed and failed as the tool reports them, and lost = requests the server
  completed that the tool does not report;
- client CPU per 1000 tokens: CPU seconds of the tool's whole process tree (psutil, sampled
  every 0.25 s) between the server's first request and its last token, per 1000 tokens the
  server wrote in that window;
- server busy: the requests the server had in flight, on average over that window, as a
  share of the level's streams (a client that queues requests or stalls between them leaves
  the server idle);
- kept up: the server's own tokens per second per stream within 5% of its set rate (a
  client that takes the CPU slows the server it shares a machine with), the server busy with
  at least 80% of the streams, the client's |ITL error| p99 below 10 ms, and no request failed
  or lost.

Requests are paired with the server's records by order of sending (the tools' start times)
and of arrival (the server's): peers do not report a response id for every request. Every
request gets the same schedule from the server, so a mispaired neighbour differs only by the
server's own jitter.

GuideLLM and AIPerf are installed from PyPI, each into its own virtual environment under
``--cache`` (default ~/.cache/kurabe-bench/peers); both need a Hugging Face tokenizer for
synthetic prompts, so a word-level one over the server's vocabulary is saved locally (every
word the server writes is exactly one token in it). A peer that cannot be installed or run
is reported and skipped. The run takes about 10-20 minutes on 2 cores. Prints a table; with
``--json FILE`` also writes every figure.

    python benchmarks/load_vs_peers.py [--levels 1,64,256,1024] [--tools kurabe,guidellm,aiperf]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from kurabe.load.synthetic import spawn, tokenizer_json

PEERS = {"guidellm": "guidellm==0.8.1", "aiperf": "aiperf==0.13.0"}
KEPT_UP_RATE_TOLERANCE = 0.05  # the server's per-stream token rate within 5% of its set rate
KEPT_UP_ITL_P99_S = 0.010  # the client's ITL error p99 below 10 ms
KEPT_UP_BUSY_SHARE = 0.8  # the server held on average at least 80% of the level's streams


@dataclass
class ClientRequest:
    """One request as a tool reported it (seconds)."""

    start_unix_s: float
    ok: bool
    ttft_s: float | None = None
    itl_s: float | None = None
    output_tokens: int | None = None


@dataclass
class ToolRun:
    requests: list[ClientRequest] = field(default_factory=list)
    cpu_series: list[tuple[float, float]] = field(default_factory=list)  # (unix s, CPU s)
    wall_s: float = 0.0
    returncode: int | None = None
    problem: str | None = None  # why the tool gave no figures


# -- installing the peers -----------------------------------------------------------------


def ensure_peer(name: str, cache: Path) -> Path | str:
    """The peer's virtual environment (installing it when missing), or why it cannot be."""
    venv = cache / name
    exe = venv / "bin" / name
    if exe.exists():
        return venv
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True,
                       capture_output=True, timeout=300)
        done = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", PEERS[name]],
                              capture_output=True, text=True, timeout=1800)
    except (subprocess.SubprocessError, OSError) as exc:
        return f"could not create its environment: {exc}"
    if done.returncode != 0 or not exe.exists():
        return f"pip install {PEERS[name]} failed: {done.stderr.strip()[-400:]}"
    return venv


def write_tokenizer(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer_json()))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "unk_token": "[UNK]",
         "model_max_length": 1 << 20}))
    return folder


# -- running a tool under watch -----------------------------------------------------------


def _tree_cpu_s(root: psutil.Process, seen: dict[int, float]) -> float:
    """CPU seconds (user + system) of ``root`` and its descendants; processes that have
    exited keep their last reading in ``seen``."""
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        procs = []
    for p in procs:
        try:
            t = p.cpu_times()
            seen[p.pid] = t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            pass
    return sum(seen.values())


def watch(cmd: list[str], *, cwd: Path, env: dict[str, str], timeout_s: float, log: Path
          ) -> tuple[int | None, list[tuple[float, float]], float]:
    """Run ``cmd``; returns its exit status (None: killed at the timeout), its process
    tree's CPU over time, and its wall time."""
    t0 = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        root = psutil.Process(proc.pid)
        seen: dict[int, float] = {}
        series: list[tuple[float, float]] = []
        code: int | None = None
        while True:
            series.append((time.time(), _tree_cpu_s(root, seen)))
            code = proc.poll()
            if code is not None:
                break
            if time.monotonic() - t0 > timeout_s:
                os.killpg(proc.pid, 9)
                proc.wait()
                code = None
                break
            time.sleep(0.25)
    return code, series, time.monotonic() - t0


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    return {**env, **(extra or {})}


def run_kurabe(url: str, streams: int, n: int, args: argparse.Namespace, work: Path
               ) -> ToolRun:
    cmd = [sys.executable, "-m", "kurabe", "load", "--model", f"synthetic={url}",
           "--concurrency", str(streams), "--requests", str(n), "--max-tokens",
           str(args.tokens), "--prompt-tokens", str(args.prompt_tokens),
           "--workers", str(args.kurabe_workers), "--json"]
    log = work / "kurabe.log"
    code, series, wall = watch(cmd, cwd=work, env=_env(), timeout_s=args.timeout_s, log=log)
    run = ToolRun(cpu_series=series, wall_s=wall, returncode=code)
    text = log.read_text(errors="replace")
    start = text.find("{")
    try:
        report = json.loads(text[start:text.rfind("}") + 1]) if start >= 0 else None
    except ValueError:
        report = None
    if not report or "run_dir" not in report:
        run.problem = f"kurabe load gave no JSON (exit {code}): {text.strip()[-400:]}"
        return run
    from kurabe.store import Store
    store = Store.open(Path(report["run_dir"]) if Path(report["run_dir"]).is_absolute()
                       else work / report["run_dir"], read_only=True)
    try:
        for row in store.load_requests():
            if row.warmup:
                continue
            m = row.metrics or {}
            run.requests.append(ClientRequest(
                row.sent_at_unix_s, row.status == "ok", m.get("ttft_s"),
                m.get("itl_per_token_s"), m.get("output_tokens")))
    finally:
        store.close()
    return run


def run_guidellm(venv: Path, url: str, streams: int, n: int, args: argparse.Namespace,
                 work: Path, tokenizer: Path) -> ToolRun:
    out = work / "guidellm.json"
    cmd = [str(venv / "bin" / "guidellm"), "run",
           "--backend", f"kind=openai_http,target={url.removesuffix('/v1')}",
           "--profile", f"kind=concurrent,streams={streams}",
           "--constraint", f"kind=max_requests,count={n}",
           "--data", f"kind=synthetic_text,prompt_tokens={args.prompt_tokens},"
                     f"output_tokens={args.tokens}",
           "--tokenizer", f"kind=huggingface_auto,model={tokenizer}",
           "--output", f"kind=json,path={out}", "--disable-console-interactive"]
    code, series, wall = watch(cmd, cwd=work, env=_env(), timeout_s=args.timeout_s,
                               log=work / "guidellm.log")
    run = ToolRun(cpu_series=series, wall_s=wall, returncode=code)
    if not out.exists():
        tail = (work / "guidellm.log").read_text(errors="replace").strip()[-400:]
        run.problem = f"no report (exit {code}): {tail}"
        return run
    bench = json.loads(out.read_text())["benchmarks"][0]
    for status, rows in bench["requests"].items():
        if not isinstance(rows, list):
            continue
        for r in rows:
            ok = status == "successful"
            ttft = r.get("time_to_first_token_ms")
            itl = r.get("inter_token_latency_ms")
            run.requests.append(ClientRequest(
                r["request_start_time"], ok, ttft / 1e3 if ttft is not None else None,
                itl / 1e3 if itl is not None else None, r.get("output_tokens")))
    return run


def run_aiperf(venv: Path, url: str, streams: int, n: int, args: argparse.Namespace,
               work: Path, tokenizer: Path) -> ToolRun:
    out = work / "aiperf"
    cmd = [str(venv / "bin" / "aiperf"), "profile", "-m", "synthetic",
           "--url", url.removesuffix("/v1"), "--endpoint-type", "chat", "--streaming",
           "--concurrency", str(streams), "--request-count", str(n),
           "--synthetic-input-tokens-mean", str(args.prompt_tokens),
           "--synthetic-input-tokens-stddev", "0",
           "--output-tokens-mean", str(args.tokens), "--output-tokens-stddev", "0",
           "--extra-inputs", "ignore_eos:true", "--tokenizer", str(tokenizer),
           "--artifact-dir", str(out), "--ui-type", "none"]
    code, series, wall = watch(cmd, cwd=work, env=_env(), timeout_s=args.timeout_s,
                               log=work / "aiperf.log")
    run = ToolRun(cpu_series=series, wall_s=wall, returncode=code)
    export = out / "profile_export.jsonl"
    if not export.exists():
        tail = (work / "aiperf.log").read_text(errors="replace").strip()[-400:]
        run.problem = f"no profile_export.jsonl (exit {code}): {tail}"
        return run
    for line in export.read_text().splitlines():
        r = json.loads(line)
        meta, metrics = r.get("metadata", {}), r.get("metrics", {})
        if meta.get("benchmark_phase", "profiling") != "profiling":
            continue

        def ms(name: str, metrics: dict[str, Any] = metrics) -> float | None:
            v = metrics.get(name, {}).get("value")
            return v / 1e3 if isinstance(v, int | float) else None
        osl = metrics.get("output_sequence_length", {}).get("value")
        ok = not r.get("error") and not meta.get("was_cancelled")
        run.requests.append(ClientRequest(meta["request_start_ns"] / 1e9, ok,
                                          ms("time_to_first_token"),
                                          ms("inter_token_latency"), osl))
    return run


# -- comparing with the server ------------------------------------------------------------


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def _cpu_at(series: list[tuple[float, float]], t: float) -> float:
    """The tree's CPU seconds at unix time ``t`` (linear between samples)."""
    if not series:
        return 0.0
    if t <= series[0][0]:
        return series[0][1]
    for (ta, ca), (tb, cb) in zip(series, series[1:], strict=False):
        if ta <= t <= tb:
            return ca + (cb - ca) * ((t - ta) / (tb - ta) if tb > ta else 0.0)
    return series[-1][1]


def compare(run: ToolRun, truth: dict[str, Any], *, streams: int, n: int,
            args: argparse.Namespace) -> dict[str, Any]:
    offset = truth["perf_to_unix_offset_s"]
    served = sorted((r for r in truth["requests"]
                     if r["stream"] and r["planned_tokens"] == args.tokens),
                    key=lambda r: r["received_perf_s"])
    done = [r for r in served if r["status"] == "completed"]
    client = sorted(run.requests, key=lambda r: r.start_unix_s)
    ok = [c for c in client if c.ok]
    ttft_err: list[float] = []
    itl_err: list[float] = []
    for c, s in zip(client, served, strict=False):
        times = s["token_perf_s"]
        if not (c.ok and times):
            continue
        if c.ttft_s is not None:
            ttft_err.append(c.ttft_s - (times[0] - s["received_perf_s"]))
        if c.itl_s is not None and len(times) > 1:
            itl_err.append(c.itl_s - (times[-1] - times[0]) / (len(times) - 1))
    # The server's own per-stream rate: tokens after the first over the first-to-last time.
    server_itl = [(r["token_perf_s"][-1] - r["token_perf_s"][0]) / (len(r["token_perf_s"]) - 1)
                  for r in done if len(r["token_perf_s"]) > 1]
    rate_share = (args.itl_ms / 1e3) / statistics.median(server_itl) if server_itl else None
    tokens = sum(len(r["token_perf_s"]) for r in done)
    cpu_per_1000 = window_s = None
    if done:
        w0 = min(r["received_perf_s"] for r in done) + offset
        w1 = max(r["end_perf_s"] for r in done) + offset
        window_cpu = _cpu_at(run.cpu_series, w1) - _cpu_at(run.cpu_series, w0)
        cpu_per_1000 = window_cpu / tokens * 1000 if tokens else None
        window_s = w1 - w0
    busy = _mean_in_flight(done, window_s) / streams if done and window_s else None
    failed = len(client) - len(ok)
    lost = max(0, len(done) - len(ok))
    itl_p99 = _pct([abs(e) for e in itl_err], 0.99)
    kept_up = bool(
        run.problem is None and rate_share is not None
        and abs(rate_share - 1) <= KEPT_UP_RATE_TOLERANCE
        and busy is not None and busy >= KEPT_UP_BUSY_SHARE
        and itl_p99 is not None and itl_p99 < KEPT_UP_ITL_P99_S
        and failed == 0 and lost == 0 and len(ok) == n)
    return {
        "streams": streams, "requests_planned": n, "server_received": len(served),
        "server_completed": len(done), "client_completed": len(ok), "client_failed": failed,
        "lost": lost, "ttft_err_p50_ms": _ms(_pct(ttft_err, 0.5)),
        "ttft_err_p99_ms": _ms(_pct(ttft_err, 0.99)), "itl_err_p50_ms": _ms(_pct(itl_err, 0.5)),
        "itl_err_p99_ms": _ms(_pct(itl_err, 0.99)),
        "server_rate_share": rate_share, "server_busy_share": busy,
        "cpu_s_per_1000_tokens": cpu_per_1000,
        "window_s": window_s, "tool_wall_s": run.wall_s, "kept_up": kept_up,
        "problem": run.problem,
    }


def _mean_in_flight(done: list[dict[str, Any]], window_s: float) -> float:
    """Requests the server had in flight, on average over the window (request-seconds
    from received to end, over the window's length)."""
    return sum(r["end_perf_s"] - r["received_perf_s"] for r in done) / window_s


def _ms(v: float | None) -> float | None:
    return None if v is None else v * 1e3


def _server_cpu(proc: subprocess.Popen[str]) -> float:
    t = psutil.Process(proc.pid).cpu_times()
    return t.user + t.system


def one_level(tool: str, streams: int, args: argparse.Namespace, venvs: dict[str, Path],
              tokenizer: Path, work: Path) -> dict[str, Any]:
    n = streams * args.rounds
    level_dir = work / f"{tool}-{streams}"
    level_dir.mkdir(parents=True, exist_ok=True)
    proc, url = spawn(ttft_ms=args.ttft_ms, itl_ms=args.itl_ms, tokens=args.tokens)
    try:
        cpu0 = _server_cpu(proc)
        if tool == "kurabe":
            run = run_kurabe(url, streams, n, args, level_dir)
        elif tool == "guidellm":
            run = run_guidellm(venvs[tool], url, streams, n, args, level_dir, tokenizer)
        else:
            run = run_aiperf(venvs[tool], url, streams, n, args, level_dir, tokenizer)
        server_cpu = _server_cpu(proc) - cpu0
        truth = httpx.get(url.removesuffix("/v1") + "/ground_truth", timeout=60).json()
        (level_dir / "ground_truth.json").write_text(json.dumps(truth))
    finally:
        proc.terminate()
        proc.wait(10)
    row = compare(run, truth, streams=streams, n=n, args=args)
    row["tool"] = tool
    row["server_cpu_s"] = server_cpu
    return row


def _f(v: Any, fmt: str = "{:.1f}") -> str:
    return "—" if v is None else fmt.format(v)


def print_table(rows: list[dict[str, Any]]) -> None:
    head = ("| tool | streams | done/failed/lost (server done) | TTFT err p50/p99 ms | "
            "ITL err p50/p99 ms | server rate | server busy | client CPU s/1k tok | kept up |")
    print(head)
    print("|" + "---|" * 9)
    for r in rows:
        if r.get("problem") and not r.get("client_completed"):
            print(f"| {r['tool']} | {r['streams']} | {r['problem'][:120]} | | | | | | no |")
            continue
        share = r["server_rate_share"]
        print(f"| {r['tool']} | {r['streams']} | {r['client_completed']}/{r['client_failed']}/"
              f"{r['lost']} ({r['server_completed']}) | {_f(r['ttft_err_p50_ms'])}/"
              f"{_f(r['ttft_err_p99_ms'])} | {_f(r['itl_err_p50_ms'], '{:.2f}')}/"
              f"{_f(r['itl_err_p99_ms'], '{:.2f}')} | "
              f"{_f(None if share is None else share * 100, '{:.1f}%')} | "
              f"{_f(r['server_busy_share'], '{:.2f}')} | "
              f"{_f(r['cpu_s_per_1000_tokens'], '{:.3f}')} | {'yes' if r['kept_up'] else 'no'} |")
    print()
    tools = sorted({r["tool"] for r in rows}, key=lambda t: ["kurabe", *PEERS].index(t))
    for tool in tools:
        kept = [r["streams"] for r in rows if r["tool"] == tool and r["kept_up"]]
        print(f"{tool}: most streams sustained = {max(kept) if kept else 'none of the levels'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", default="1,64,256,1024",
                        help="concurrent streams per level (comma-separated)")
    parser.add_argument("--tools", default="kurabe,guidellm,aiperf")
    parser.add_argument("--kurabe-workers", default="auto",
                        help="kurabe load --workers (N or auto)")
    parser.add_argument("--ttft-ms", type=float, default=20.0)
    parser.add_argument("--itl-ms", type=float, default=50.0)
    parser.add_argument("--tokens", type=int, default=32, help="output tokens per request")
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2, help="requests per stream per level")
    parser.add_argument("--timeout-s", type=float, default=300.0, help="per tool and level")
    parser.add_argument("--cache", type=Path,
                        default=Path.home() / ".cache" / "kurabe-bench" / "peers")
    parser.add_argument("--json", type=Path, default=None, help="write every figure here")
    parser.add_argument("--keep", type=Path, default=None,
                        help="keep the tools' outputs in this folder")
    args = parser.parse_args()
    try:
        levels = [int(x) for x in args.levels.split(",") if x.strip()]
    except ValueError:
        parser.error(f"--levels {args.levels!r}: give whole numbers, e.g. 1,64,256,1024")
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    unknown = [t for t in tools if t != "kurabe" and t not in PEERS]
    if unknown:
        parser.error(f"--tools: unknown {', '.join(unknown)} (kurabe, guidellm, aiperf)")
    work = args.keep or Path(tempfile.mkdtemp(prefix="kurabe-load-vs-peers-"))
    work.mkdir(parents=True, exist_ok=True)
    tokenizer = write_tokenizer(work / "tokenizer")
    venvs: dict[str, Path] = {}
    for tool in tools:
        if tool in PEERS:
            got = ensure_peer(tool, args.cache)
            if isinstance(got, str):
                print(f"{tool}: skipped, {got}", flush=True)
                continue
            venvs[tool] = got
    runnable = [t for t in tools if t == "kurabe" or t in venvs]
    print(f"synthetic server: TTFT {args.ttft_ms:g} ms, ITL {args.itl_ms:g} ms, "
          f"{args.tokens} output tokens, {args.prompt_tokens} prompt tokens, "
          f"{args.rounds} requests per stream; {psutil.cpu_count()} cores", flush=True)
    rows: list[dict[str, Any]] = []
    try:
        for streams in levels:
            for tool in runnable:
                t0 = time.monotonic()
                try:
                    row = one_level(tool, streams, args, venvs, tokenizer, work)
                except Exception as exc:  # one broken run does not end the comparison
                    row = {"tool": tool, "streams": streams, "problem": f"{type(exc).__name__}: "
                           f"{exc}", "kept_up": False, "client_completed": 0}
                rows.append(row)
                print(f"  {tool} @ {streams}: {time.monotonic() - t0:.0f} s, "
                      f"kept up: {row['kept_up']}" + (f" ({row['problem'][:200]})"
                                                      if row.get("problem") else ""),
                      flush=True)
                if args.json:
                    args.json.write_text(json.dumps(rows, indent=1))
    except KeyboardInterrupt:
        print("interrupted: the levels measured so far", flush=True)
    print()
    print_table(rows)
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
