"""How close kurabe's memory plan comes to what llama.cpp allocates, on real loads.

Starts the built-in models with llama.cpp (the xllamacpp wheel) at several settings, parses
each load log, plans the same settings, and prints predicted vs observed per buffer with the
error. Run: python benchmarks/plan_accuracy.py   (about a minute on 2 cores)
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from kurabe.backends.llamacpp import LlamaCppServer
from kurabe.modelfiles.builtin import builtin_path
from kurabe.modelfiles.gguf_header import read_header
from kurabe.simulator.loadlog import parse_load_log_file
from kurabe.simulator.memory import plan_memory

SETTINGS = [  # (builtin, ctx, cache K, cache V, parallel, flash attention)
    ("smollm2-135m", 4096, "f16", "f16", 1, "auto"),
    ("smollm2-135m", 8192, "q8_0", "q8_0", 2, "on"),
    ("smollm2-135m", 2048, "f16", "f16", 1, "off"),
    ("gemma3-270m", 4096, "f16", "f16", 1, "auto"),
    ("gemma3-270m", 8192, "q4_0", "q4_0", 2, "on"),
    ("gemma3-270m", 2048, "q8_0", "f16", 1, "off"),
]
BUFFERS = [("weights", ("model_host_bytes", "model_device_bytes", "model_repack_bytes"), "model_bytes"),
           ("KV", ("kv_bytes",), "kv_bytes"), ("output", ("output_bytes",), "output_bytes"),
           ("compute", ("compute_bytes",), "compute_bytes"), ("total", ("total_bytes",), "total_bytes")]


def main() -> int:
    os.environ.setdefault("KURABE_CACHE_DIR", tempfile.mkdtemp(prefix="kurabe-bench-"))
    print(f"{'model':14} {'ctx':>6} {'K/V':>10} {'np':>3} {'fa':>4} " +
          " ".join(f"{name:>22}" for name, _, _ in BUFFERS))
    print(" " * 43 + " ".join(f"{'predicted/observed MiB err':>22}" for _ in BUFFERS))
    worst: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, ctx, ctk, ctv, np_, fa in SETTINGS:
            path = builtin_path(f"builtin:{name}")
            log = Path(tmp) / f"{name}-{ctx}-{ctk}-{np_}-{fa}.log"
            server = LlamaCppServer(name, path, ctx=ctx, cache_type_k=ctk, cache_type_v=ctv,
                                    parallel=np_, flash_attn=fa, log_path=log)
            server.start()
            server.stop()
            observed = parse_load_log_file(log)
            plan = plan_memory(read_header(path), ctx=ctx, cache_type_k=ctk, cache_type_v=ctv,
                               parallel=np_, flash_attn=fa, gpu=False).to_dict()
            cells = []
            for label, keys, obs_key in BUFFERS:
                predicted = sum(plan[k] for k in keys)
                seen = getattr(observed, obs_key)
                err = (predicted - seen) / seen if seen else 0.0
                worst[label] = max(worst.get(label, 0.0), abs(err))
                cells.append(f"{predicted / 2**20:8.2f}/{seen / 2**20:8.2f} {err:+5.1%}")
            print(f"{name:14} {ctx:>6} {ctk + '/' + ctv:>10} {np_:>3} {fa:>4} " + " ".join(
                f"{c:>22}" for c in cells))
    print("worst absolute error per buffer: " +
          ", ".join(f"{k} {v:.2%}" for k, v in worst.items()))
    print("(observed figures are the log's MiB to two decimals: ±0.005 MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
