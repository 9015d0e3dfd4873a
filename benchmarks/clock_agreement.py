"""Does kurabe's client-clock decode rate agree with llama.cpp's own clock, request by request?

kurabe times decode on its own clock (the arrival of streamed chunks) and cross-checks it
against the server's ``timings.predicted_per_second`` for the same request. This script starts
a built-in model with kurabe's managed llama.cpp backend (``LlamaCppServer``, the xllamacpp
wheel), streams N fixed-length requests (``ignore_eos``) per prompt at each output length (a
Japanese and an English prompt, taking turns, after one unmeasured warm-up), and prints, per
model, length and prompt, and over both prompts, the distribution (min, p25, median, p75, max)
of the per-request difference

    client decode rate / server decode rate − 1

twice, from the same stored streams:

- ``before``: the old formula, (output_tokens − 1) / (t(last chunk) − t(first chunk)), which
  assumes the first text chunk holds the first token;
- ``after``: kurabe's formula (``kurabe.metrics.client_decode_rate``): the tokens generated
  after the first text chunk up to the last, by the server's running count sent with each
  chunk (llama.cpp's ``timings_per_token``), over the same time.

It also shows what the stream looked like (text chunks per request, and how many tokens the
first text chunk carried by the server's count) and on which clock kurabe's per-request
decode figure ends up (the server's beyond the ±10% tolerance, see docs/metrics.md).

Load on the machine slows both clocks alike, so the differences stay meaningful on a busy
machine while the rates do not. Single requests can still differ by a lot under load: a stall
in the server's first decode step (which the client cannot see when the first chunk carries
two tokens) or in the client's reading of the first chunks (the rest then arrive in a burst)
moves one clock and not the other. Those are the requests kurabe times on the server's clock.

Run (from the repository root; on an idle 2-core machine ``--gemma -n 5`` took 78 s, the
defaults about as long; a busy machine takes several times longer):

    .venv/bin/python benchmarks/clock_agreement.py                  # SmolLM2, N = 10 per prompt
    .venv/bin/python benchmarks/clock_agreement.py --gemma -n 5     # SmolLM2 and Gemma
    .venv/bin/python benchmarks/clock_agreement.py --lengths 16,64 --threads 2

Options: ``-n`` requests per prompt and length, ``--lengths``, ``--gemma`` (also
Gemma-3-270M), ``--threads`` (llama.cpp threads). Uses only the standard library and kurabe.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from pathlib import Path

from kurabe.backends.llamacpp import LlamaCppServer
from kurabe.client import ChatClient
from kurabe.metrics import CLOCK_AGREEMENT_TOLERANCE, client_decode_rate, speed_metrics
from kurabe.modelfiles.builtin import builtin_model, builtin_path
from kurabe.records import ChatRequest, StreamRecord

# Two prompts: SmolLM2 answers the Japanese one with characters split over two tokens (its
# first chunk carries two), the English one a token per chunk.
PROMPTS = {"ja": "富士山について教えて。", "en": "Explain how a bicycle stays upright."}


def old_decode_rate(rec: StreamRecord) -> float | None:
    """The formula kurabe used before: the first chunk is taken to hold the first token."""
    n = (rec.usage or {}).get("completion_tokens")
    if not rec.chunks or not n or n < 2:
        return None
    window = rec.chunks[-1].t_s - rec.chunks[0].t_s
    return (n - 1) / window if window > 0 else None


def line(label: str, cells: str) -> None:
    print(f"  {label:40s}{cells}")


def spread(values: list[float], fmt: str = "{:+.2%}") -> str:
    if not values:
        return "(none)"
    s = sorted(values)
    if len(s) >= 2:
        p25, _, p75 = statistics.quantiles(s, n=4, method="inclusive")
    else:
        p25 = p75 = s[0]
    cells = [s[0], p25, statistics.median(s), p75, s[-1]]
    return "  ".join(fmt.format(v).rjust(8) for v in cells)


async def measure(server: LlamaCppServer, n: int, max_tokens: int
                  ) -> dict[str, list[StreamRecord]]:
    """``n`` requests per prompt, the prompts taking turns, after one unmeasured warm-up."""
    out: dict[str, list[StreamRecord]] = {key: [] for key in PROMPTS}
    async with ChatClient(server) as client:
        await client.stream_chat(ChatRequest(
            messages=[{"role": "user", "content": PROMPTS["ja"]}], max_tokens=8))
        for _ in range(n):
            for key, text in PROMPTS.items():
                out[key].append(await client.stream_chat(ChatRequest(
                    messages=[{"role": "user", "content": text}], max_tokens=max_tokens,
                    fixed_length=True)))
    return out


def report(model: str, max_tokens: int, by_prompt: dict[str, list[StreamRecord]]) -> None:
    every = [r for records in by_prompt.values() for r in records]
    ok_all = [r for r in every if not r.error and r.timings]
    server_all = [r.timings["predicted_per_second"] for r in ok_all]  # type: ignore[index]
    print(f"\n{model}, {max_tokens} tokens, {len(ok_all)} of {len(every)} requests "
          f"(server decode median {statistics.median(server_all):.1f} tokens/s)")
    line("", "  ".join(h.rjust(8) for h in ("min", "p25", "median", "p75", "max")))
    for key, records in by_prompt.items():
        ok = [r for r in records if not r.error and r.timings]
        server = [r.timings["predicted_per_second"] for r in ok]  # type: ignore[index]
        before = [o / s - 1 for r, s in zip(ok, server, strict=True)
                  if (o := old_decode_rate(r)) is not None]
        after = [c / s - 1 for r, s in zip(ok, server, strict=True)
                 if (c := client_decode_rate(r)[0]) is not None]
        chunks = [float(len(r.chunks)) for r in ok]
        first = [float(r.chunks[0].n_tokens) for r in ok if r.chunks and r.chunks[0].n_tokens]
        line(f"{key} (n={len(ok)}) client/server − 1, before", spread(before))
        line(f"{key} (n={len(ok)}) client/server − 1, after", spread(after))
        line(f"{key} text chunks per request", spread(chunks, "{:.0f}"))
        line(f"{key} tokens in the first chunk", spread(first, "{:.0f}"))
    before = [o / s - 1 for r, s in zip(ok_all, server_all, strict=True)
              if (o := old_decode_rate(r)) is not None]
    after = [c / s - 1 for r, s in zip(ok_all, server_all, strict=True)
             if (c := client_decode_rate(r)[0]) is not None]
    line(f"all (n={len(ok_all)}) client/server − 1, before", spread(before))
    line(f"all (n={len(ok_all)}) client/server − 1, after", spread(after))
    headline = [speed_metrics(r).decode_clock for r in ok_all]
    print(f"  headline decode clock: {headline.count('client')} requests on the client's, "
          f"{headline.count('server')} on the server's "
          f"(beyond ±{CLOCK_AGREEMENT_TOLERANCE:.0%})", flush=True)


def run_model(name: str, args: argparse.Namespace, lengths: list[int], tmp: Path) -> None:
    if name == "smollm2":
        server = LlamaCppServer("smollm2", builtin_path("builtin:smollm2-135m"), ctx=2048,
                                threads=args.threads, log_path=tmp / "smollm2.log")
    else:
        server = LlamaCppServer("gemma", builtin_path("builtin:gemma3-270m"), ctx=2048,
                                threads=args.threads, log_path=tmp / "gemma.log",
                                chat_template=builtin_model("gemma3-270m").chat_template)
    server.start()
    try:
        print(f"\n== {name}: {server.info().version}")
        for length in lengths:
            report(name, length, asyncio.run(measure(server, args.n, length)))
    finally:
        server.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("-n", type=int, default=10, help="requests per prompt and length")
    p.add_argument("--lengths", default="16,64,128", help="output lengths, comma-separated")
    p.add_argument("--gemma", action="store_true", help="also Gemma-3-270M")
    p.add_argument("--threads", type=int, default=None, help="llama.cpp threads")
    args = p.parse_args()
    lengths = [int(x) for x in args.lengths.split(",") if x.strip()]
    print("difference = client decode rate / llama.cpp's timings.predicted_per_second − 1, "
          "per request")
    with tempfile.TemporaryDirectory(prefix="kurabe-clocks-") as tmp:
        for name in ["smollm2"] + (["gemma"] if args.gemma else []):
            run_model(name, args, lengths, Path(tmp))


if __name__ == "__main__":
    main()
