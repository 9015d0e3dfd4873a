"""A full-size twin, end to end: write it, load it in llama.cpp, check the plan, decode.

Writes the twin of MODEL (a ``config.json`` or its folder; default the article's
Qwen3.5-35B-A3B, ``examples/article-models/qwen3.5-35b-a3b.config.json``) at ``--quant``
with ``kurabe.twin.make.make_twin``, then starts the real llama.cpp server (the xllamacpp
wheel, memory-mapped file, CPU) on it, parses the load log and prints each buffer predicted by
``kurabe plan`` beside what llama.cpp logged, sends one request and prints the decode rate by
the server's own clock and whether every returned probability is a finite number. Deletes
the file unless ``--keep``.

Memory: the CPU build keeps a repacked copy of most weights in RAM (the plan's "repack"
figure, about 15 GiB for the 35B-A3B twin at Q4_K_M) besides the mapped file; the script says
so before loading and refuses when the machine has less memory available than that.

Run: .venv/bin/python benchmarks/twin_full_size.py [CONFIG] --quant Q4_K_M --dir /tmp
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

from kurabe.backends.llamacpp import LlamaCppServer
from kurabe.modelfiles.gguf_header import read_header
from kurabe.simulator.loadlog import parse_load_log_file
from kurabe.simulator.memory import plan_memory
from kurabe.twin.make import make_twin

MIB = 2**20
DEFAULT = Path(__file__).resolve().parent.parent / "examples/article-models/qwen3.5-35b-a3b.config.json"
BUFFERS = [  # label, plan keys, observed attribute
    ("weights", ("model_host_bytes", "model_device_bytes", "model_repack_bytes"), "model_bytes"),
    ("KV", ("kv_bytes",), "kv_bytes"), ("recurrent", ("recurrent_bytes",), "recurrent_bytes"),
    ("output", ("output_bytes",), "output_bytes"), ("compute", ("compute_bytes",), "compute_bytes"),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", nargs="?", default=str(DEFAULT))
    ap.add_argument("--quant", default="Q4_K_M")
    ap.add_argument("--ctx", type=int, default=4096)
    ap.add_argument("--tokens", type=int, default=8, help="tokens to decode")
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a what-if variant (as kurabe twin --set), e.g. to try it small")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    sets = dict(s.split("=", 1) for s in args.set)

    out = args.dir / f"{Path(args.model).stem}-twin-{args.quant}.gguf"
    print(f"writing the twin of {args.model} at {args.quant} to {out}")
    shown = [0.0]

    def progress(done: int, total: int) -> None:
        if done / total >= shown[0] + 0.1 or done == total:
            shown[0] = done / total
            print(f"  {done / 1e9:6.2f} / {total / 1e9:.2f} GB", flush=True)

    result = make_twin(args.model, out, quant=args.quant, sets=sets, progress=progress)
    print(f"written: {result.file_bytes / 1e9:.2f} GB, {result.n_tensors} tensors in "
          f"{result.seconds:.1f} s ({result.file_bytes / 1e6 / result.seconds:.0f} MB/s)")
    try:
        header = read_header(out)
        plan = plan_memory(header, ctx=args.ctx, gpu=False).to_dict()
        resident = plan["total_bytes"] - plan["model_host_bytes"]  # beyond the mapped file
        available = psutil.virtual_memory().available
        print(f"planned beyond the mapped file: {resident / MIB:,.0f} MiB; available now "
              f"{available / MIB:,.0f} MiB")
        if resident > available:
            print("not enough memory available to load it here; stopping")
            return 1
        log = args.dir / f"{out.stem}.log"
        server = LlamaCppServer("twin", out, ctx=args.ctx, log_path=log,
                                startup_timeout_s=1800)
        t0 = time.perf_counter()
        server.start()
        print(f"loaded by llama.cpp (memory-mapped) in {time.perf_counter() - t0:.1f} s")
        try:
            resp = httpx.post(f"http://127.0.0.1:{server.port}/completion", timeout=1800, json={
                "prompt": "The quick brown fox", "n_predict": args.tokens, "n_probs": 3,
                "ignore_eos": True, "cache_prompt": False})
            body = resp.json()
        finally:
            server.stop()
        observed = parse_load_log_file(log)
        print(f"{'buffer':10} {'planned MiB':>14} {'logged MiB':>14} {'difference':>12}")
        worst = 0.0
        for label, keys, attr in BUFFERS:
            predicted, seen = sum(plan[k] for k in keys), getattr(observed, attr)
            worst = max(worst, abs(predicted - seen) / MIB)
            print(f"{label:10} {predicted / MIB:14.2f} {seen / MIB:14.2f} "
                  f"{(predicted - seen) / MIB:+12.2f}")
        print(f"largest difference: {worst:.2f} MiB (the log gives MiB to two decimals)")
        probs = [p.get("prob", p.get("logprob")) for step in body.get("completion_probabilities", [])
                 for p in step.get("top_probs", step.get("top_logprobs", []))]
        timings = body.get("timings", {})
        print(f"decoded {timings.get('predicted_n')} tokens at "
              f"{timings.get('predicted_per_second', float('nan')):.2f} t/s (server clock); "
              f"prompt {timings.get('prompt_per_second', float('nan')):.2f} t/s; "
              f"{len(probs)} probabilities, all finite: "
              f"{bool(probs) and all(isinstance(p, float | int) and math.isfinite(p) for p in probs)}")
    finally:
        if not args.keep:
            out.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
