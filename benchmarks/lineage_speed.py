"""How long `kurabe lineage` takes on two multi-GB files.

Writes a synthetic twin of a model (default: LLM-jp-4-32B-A3B's config with 8 experts, a
3.8 B-parameter qwen3moe, Q8_0: about 4 GB), a perturbed copy of it (noise of 0.05 times each
tensor's standard deviation, written tensor by tensor: a stand-in for a fine-tune) and a
second twin with another seed (independent weights of the same shapes). Then it evicts the
files from the page cache (``posix_fadvise(DONTNEED)``; ``fincore`` shows what was left)
and times ``compare_lineage`` on each pair twice, cold and warm, printing the seconds, the
bytes the sample read and the verdict. The files are deleted unless ``--keep``.

Run: .venv/bin/python benchmarks/lineage_speed.py [--dir /tmp] [--set num_experts=16]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

from pagecache import evict  # benchmarks/ (the script's folder) is on sys.path

from kurabe.lineage import DEFAULT_SAMPLE, FAST_SAMPLE, Sample, compare_lineage
from kurabe.lineage.variants import write_variant
from kurabe.twin.make import make_twin

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "examples" / "article-models" / "llm-jp-4-32b-a3b.config.json"
GB = 1e9


def cached(path: Path) -> str:
    """How much of a file is in the page cache, by util-linux's fincore (if installed)."""
    if shutil.which("fincore") is None:
        return "unknown (no fincore)"
    done = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
                          capture_output=True, text=True)
    try:
        resident = int(done.stdout.split()[0])
    except (IndexError, ValueError):
        return "unknown"
    return f"{resident / GB:.2f} GB ({100 * resident / path.stat().st_size:.1f}%)"


def timed_compare(a: Path, b: Path, sample: Sample, label: str) -> None:
    for state in ("cold", "warm"):
        if state == "cold":
            evict(a)
            evict(b)
        print(f"  {label}, {state}: in page cache before: A {cached(a)}, B {cached(b)}")
        start = time.perf_counter()
        result = compare_lineage(a, b, sample=sample)
        seconds = time.perf_counter() - start
        read = result.sample["bytes_read"]
        print(f"    {seconds:.1f} s: {result.verdict} ({result.reason})")
        print(f"    read {read['a'] / 1e6:.1f} MB of A, {read['b'] / 1e6:.1f} MB of B "
              f"({100 * result.sample['fraction_read']['b']:.2f}% of B); "
              f"{result.sample['tensors_compared']} tensors in "
              f"{result.sample['layers_compared']} of {result.sample['layers_in_model']} layers")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(CONFIG), help="the model's config.json")
    parser.add_argument("--set", dest="sets", action="append", default=None,
                        metavar="KEY=VALUE", help="what-if changes (default: num_experts=8)")
    parser.add_argument("--quant", default="Q8_0", help="the twin's quant type (default Q8_0)")
    parser.add_argument("--dir", type=Path, default=Path("/tmp"), help="where to write")
    parser.add_argument("--keep", action="store_true", help="keep the files")
    parser.add_argument("--reuse", action="store_true",
                        help="compare the files a --keep run left, without writing them")
    opts = parser.parse_args()

    sets = dict(s.split("=", 1) for s in (opts.sets or ["num_experts=8"]))
    work = opts.dir / "kurabe-lineage-bench"
    work.mkdir(parents=True, exist_ok=True)
    twin, copy, other = work / "twin.gguf", work / "twin-perturbed.gguf", work / "other.gguf"
    try:
        if not (opts.reuse and twin.exists() and copy.exists() and other.exists()):
            write_files(opts, sets, twin, copy, other)
        for name, sample in (("default sample", DEFAULT_SAMPLE),
                             ("a shootout's sample", FAST_SAMPLE)):
            print(f"{name}: {sample.to_dict()}")
            timed_compare(twin, copy, sample, "twin vs perturbed copy")
            timed_compare(twin, other, sample, "twin vs independent twin")
    finally:
        if not opts.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def write_files(opts: argparse.Namespace, sets: dict[str, str], twin: Path, copy: Path,
                other: Path) -> None:
    start = time.perf_counter()
    written = make_twin(opts.config, twin, quant=opts.quant, sets=sets, seed=0)
    print(f"twin: {written.file_bytes / GB:.2f} GB in {time.perf_counter() - start:.1f} s "
          f"({Path(opts.config).name}, {opts.quant}, {sets})")
    start = time.perf_counter()
    variant = write_variant(twin, copy, perturb=0.05, seed=1)
    print(f"perturbed copy: {variant.file_bytes / GB:.2f} GB in "
          f"{time.perf_counter() - start:.1f} s ({len(variant.changed)} tensors changed)")
    start = time.perf_counter()
    make_twin(opts.config, other, quant=opts.quant, sets=sets, seed=1)
    print(f"independent twin (seed 1): in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    sys.exit(main())
