"""Run llama.cpp's server from the ``xllamacpp`` wheel as a stand-alone process.

It accepts the subset of ``llama-server`` flags that kurabe passes, so a managed engine
builds one argument list whichever server it starts. Run as
``python -m kurabe.backends.xllamacpp_server -m model.gguf --port 8080 ...``.
A flag it does not know is an error, never silently dropped.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

FLASH_ATTN = {"on": "ENABLED", "off": "DISABLED", "auto": "AUTO"}
REASONING_FORMATS = {"none": "NONE", "auto": "AUTO", "deepseek": "DEEPSEEK",
                     "deepseek-legacy": "DEEPSEEK_LEGACY"}
CACHE_TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1")


def version_text() -> str:
    import xllamacpp

    build = getattr(xllamacpp, "BUILD_INFO", {}) or {}
    return (
        f"xllamacpp {xllamacpp.__version__} "
        f"(llama.cpp build {build.get('build_number', '?')} commit {build.get('commit', '?')})"
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xllamacpp-server", add_help=True)
    p.add_argument("--version", action="store_true")
    p.add_argument("-m", "--model")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("-c", "--ctx-size", type=int, default=0)
    p.add_argument("-ctk", "--cache-type-k", choices=CACHE_TYPES)
    p.add_argument("-ctv", "--cache-type-v", choices=CACHE_TYPES)
    p.add_argument("-fa", "--flash-attn", choices=sorted(FLASH_ATTN))
    p.add_argument("-t", "--threads", type=int)
    p.add_argument("-tb", "--threads-batch", type=int)
    p.add_argument("-np", "--parallel", type=int)
    p.add_argument("-ngl", "--n-gpu-layers", type=int)
    p.add_argument("-b", "--batch-size", type=int)
    p.add_argument("-ub", "--ubatch-size", type=int)
    p.add_argument("-lv", "--verbosity", type=int)
    p.add_argument("--metrics", action="store_true")
    p.add_argument("--jinja", action="store_true")
    p.add_argument("--chat-template-file")
    p.add_argument("--api-key")
    p.add_argument("--reasoning-format", choices=sorted(REASONING_FORMATS))
    p.add_argument("--reasoning-budget", type=int)
    p.add_argument("-s", "--seed", type=int)
    p.add_argument("--no-warmup", action="store_true")
    # Not a llama-server flag: end when the process that started this one is gone.
    p.add_argument("--exit-with-parent", action="store_true")
    return p


def build_params(args: argparse.Namespace):
    import xllamacpp as x

    params = x.CommonParams()
    params.model.path = args.model
    params.hostnames = [args.host]
    params.port = args.port
    params.n_ctx = args.ctx_size
    if args.cache_type_k:
        params.cache_type_k = x.ggml_type[f"GGML_TYPE_{args.cache_type_k.upper()}"]
    if args.cache_type_v:
        params.cache_type_v = x.ggml_type[f"GGML_TYPE_{args.cache_type_v.upper()}"]
    if args.flash_attn:
        params.flash_attn_type = x.llama_flash_attn_type[
            f"LLAMA_FLASH_ATTN_TYPE_{FLASH_ATTN[args.flash_attn]}"
        ]
    if args.threads:
        params.cpuparams.n_threads = args.threads
    threads_batch = args.threads_batch or args.threads
    if threads_batch:
        params.cpuparams_batch.n_threads = threads_batch
    if args.parallel:
        params.n_parallel = args.parallel
    if args.n_gpu_layers is not None:
        params.n_gpu_layers = args.n_gpu_layers
    if args.batch_size:
        params.n_batch = args.batch_size
    if args.ubatch_size:
        params.n_ubatch = args.ubatch_size
    if args.verbosity is not None:
        params.verbosity = args.verbosity
    params.endpoint_metrics = bool(args.metrics)
    params.use_jinja = True if args.jinja else params.use_jinja
    if args.chat_template_file:
        with open(args.chat_template_file, encoding="utf-8") as fh:
            params.chat_template = fh.read()
    if args.api_key:
        params.api_keys = [args.api_key]
    if args.reasoning_format:
        params.reasoning_format = x.common_reasoning_format[
            f"COMMON_REASONING_FORMAT_{REASONING_FORMATS[args.reasoning_format]}"
        ]
    if args.reasoning_budget is not None:
        params.sampling.reasoning_budget_tokens = args.reasoning_budget
    if args.seed is not None:
        params.sampling.seed = args.seed
    if args.no_warmup:
        params.warmup = False
    return params


def _watch_parent(stop: threading.Event, interval_s: float = 0.5) -> None:
    """Set ``stop`` once the parent is gone: an orphan is re-parented, so its parent pid
    changes. Polling works on every POSIX system, whatever killed the parent."""
    parent = os.getppid()

    def watch() -> None:
        while not stop.wait(interval_s):
            if os.getppid() != parent:
                print("kurabe: the kurabe that started this server is gone; stopping",
                      file=sys.stderr, flush=True)
                stop.set()

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    args, unknown = parser().parse_known_args(argv)
    if unknown:
        print(
            f"error: the xllamacpp server does not support {' '.join(unknown)}; "
            "use a llama-server binary (engine.server = \"llama-server\" or a path) for these flags",
            file=sys.stderr,
        )
        return 2
    if args.version:
        print(version_text())
        return 0
    if not args.model:
        print("error: -m/--model is required", file=sys.stderr)
        return 2

    import xllamacpp as x

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if args.exit_with_parent:
        _watch_parent(stop)
    print(version_text(), file=sys.stderr, flush=True)
    server = x.Server(build_params(args))  # loads the model and starts listening
    print(f"kurabe: listening on {server.listening_address}", file=sys.stderr, flush=True)
    stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
