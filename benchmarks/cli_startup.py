"""How fast the ``kurabe`` command starts.

Runs ``python -m kurabe --help`` and ``python -m kurabe --version`` as subprocesses, N times
each after one warm-up run (so the figures are for a warm disk and bytecode cache), and
prints min / median / max wall seconds; then times ``import kurabe.cli`` in this process.
Exits 1 when the median of ``--help`` is over the limit (0.3 s), so it can serve as a check.

Run: .venv/bin/python benchmarks/cli_startup.py [--runs 20] [--limit 0.3]
(stdlib only; about 10 s on 2 cores). ``python -X importtime -m kurabe --help`` shows where
the time goes when it is over.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import subprocess
import sys
import time


def wall_times(args: list[str], runs: int) -> list[float]:
    cmd = [sys.executable, "-m", "kurabe", *args]
    subprocess.run(cmd, check=True, capture_output=True)  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="timed runs per command")
    parser.add_argument("--limit", type=float, default=0.3, help="--help median limit, s")
    opts = parser.parse_args()

    print(f"kurabe start-up: {opts.runs} runs each after one warm-up, {sys.executable}")
    medians = {}
    for args in (["--help"], ["--version"]):
        times = wall_times(args, opts.runs)
        medians[args[0]] = statistics.median(times)
        print(f"  python -m kurabe {args[0]:<10} min {min(times):.3f}  "
              f"median {medians[args[0]]:.3f}  max {max(times):.3f} s")

    start = time.perf_counter()
    importlib.import_module("kurabe.cli")  # what every command pays before it runs
    print(f"  import kurabe.cli (in-process) {time.perf_counter() - start:.3f} s")

    ok = medians["--help"] <= opts.limit
    print(f"--help median {medians['--help']:.3f} s "
          f"{'within' if ok else 'OVER'} the {opts.limit:.3f} s limit")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
