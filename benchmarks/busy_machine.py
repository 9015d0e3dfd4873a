"""Does a run on a loaded machine say so? The demo, with every usable core kept busy.

A speed figure measured while another process used the CPU is lower than the model's speed,
and not by the same amount for each model, so a shootout on a busy machine can report a
ratio that does not hold on a quiet one. kurabe samples the machine during every run and
warns (``busy_machine``) when other processes used more than 10% of the usable cores in more
than 20% of the samples taken while speed was measured (docs/metrics.md, Machine load).

This script starts one CPU-burning process per usable core, runs

    python -m kurabe demo --no-quality --repeats 1 --max-tokens 24 --out RUN_DIR

(the two built-in models on llama.cpp), stops the burners, and checks that report.md and
report.html both carry the warning. It prints what the burners were measured to use (psutil,
from outside the run) beside what the run sampled (other processes, engines, kurabe, load
average), and exits 1 when a report lacks the warning.

Run (from the repository root, with the project's virtual environment active):

    python benchmarks/busy_machine.py                 # a run folder under a temp dir
    python benchmarks/busy_machine.py --out DIR       # keep the run folder
    python benchmarks/busy_machine.py --burners 1     # load one core only
    python benchmarks/busy_machine.py --existing DIR  # re-render and check a run folder

With ``--burners 0`` it runs the demo on the machine as it is and reports the verdict,
which on a quiet machine should be no warning.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from kurabe.analysis.machine import machine_load
from kurabe.sampler import usable_cpus
from kurabe.store import Store

BURN = "while True: pass"


def cpu_s(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        t = p.cpu_times()
        total += t.user + t.system
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="run folder to create (default: a temp dir)")
    parser.add_argument("--burners", type=int, default=len(usable_cpus()),
                        help="CPU-burning processes to start (default: one per usable core)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds for the demo")
    parser.add_argument("--existing", type=Path,
                        help="no new run: re-render this run folder's reports and check them")
    args = parser.parse_args()
    if args.existing is not None:
        done = subprocess.run([sys.executable, "-m", "kurabe", "report", str(args.existing)],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(done.stdout[-2000:], done.stderr[-2000:], sep="\n")
            return 1
        return check(args.existing, loaded=True)
    run_dir = args.out or Path(tempfile.mkdtemp(prefix="kurabe-busy-")) / "run"
    command = [sys.executable, "-m", "kurabe", "demo", "--no-quality", "--repeats", "1",
               "--max-tokens", "24", "--out", str(run_dir)]
    print(f"usable cores: {len(usable_cpus())}; burners: {args.burners}")
    print("running:", " ".join(command[1:]))
    burners = [subprocess.Popen([sys.executable, "-c", BURN]) for _ in range(args.burners)]
    try:
        procs = [psutil.Process(b.pid) for b in burners]
        time.sleep(0.5)
        used0, t0 = cpu_s(procs), time.monotonic()
        demo = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout,
                              check=False)
        wall = time.monotonic() - t0
        burned = cpu_s(procs) - used0
    finally:
        for b in burners:
            b.kill()
            b.wait(timeout=10)
    print(f"demo exit code {demo.returncode}, {wall:.1f} s; the burners used "
          f"{burned:.1f} CPU-s ({burned / wall:.2f} cores on average)")
    if demo.returncode != 0:
        print(demo.stdout[-2000:], demo.stderr[-2000:], sep="\n")
        return 1
    print(demo.stdout.strip())
    return check(run_dir, loaded=args.burners > 0)


def check(run_dir: Path, *, loaded: bool) -> int:
    """Print what the run sampled and whether its reports carry the warning."""
    with Store.open(run_dir) as store:
        load = machine_load(store)
        samples = store.machine_samples()
    if load is None:
        print("FAIL: the run stored no machine samples")
        return 1
    print(f"\nsamples: {load.n_samples} (every {load.interval_s:.2f} s), "
          f"{load.n_window} while speed was measured")
    print(f"sampled while measuring: {load.sentence()}")
    per = [(s.other_cpu_s / s.interval_s, s.engine_cpu_s / s.interval_s,
            s.kurabe_cpu_s / s.interval_s) for s in samples]
    print("whole run, cores (median / max): other "
          f"{statistics.median(p[0] for p in per):.2f} / {max(p[0] for p in per):.2f}, "
          f"engines {statistics.median(p[1] for p in per):.2f} / {max(p[1] for p in per):.2f}, "
          f"kurabe {statistics.median(p[2] for p in per):.2f} / {max(p[2] for p in per):.2f}")

    md = (run_dir / "report.md").read_text(encoding="utf-8")
    html = (run_dir / "report.html").read_text(encoding="utf-8")
    in_md = "**busy_machine**" in md
    in_html = "<strong>busy_machine</strong>" in html
    print(f"\nbusy_machine warning: report.md {'yes' if in_md else 'no'}, "
          f"report.html {'yes' if in_html else 'no'}")
    for line in md.splitlines():
        if "busy_machine" in line or "busy machine" in line:
            print("  report.md:", line.strip())
    print(f"run folder: {run_dir}")
    if loaded and not (in_md and in_html):
        print("FAIL: the loaded run's reports do not both carry the busy-machine warning")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
