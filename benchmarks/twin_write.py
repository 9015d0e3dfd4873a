"""How fast a synthetic twin is written.

Writes the twin of MODEL (a ``config.json``, its folder, a GGUF file or ``builtin:NAME``)
with the tensor types llama-quantize would give for ``--quant`` (default: the model's own
types) and prints the file size, the seconds and MB/s (fsync included), beside a plain sequential
write of the same number of bytes to the same folder (the disk's speed: what the writer can
reach at best; ``--disk-bytes`` to cap it). Deletes both files unless ``--keep``.

Run: .venv/bin/python benchmarks/twin_write.py config.json --quant Q4_K_M -o /tmp/twin.gguf
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from kurabe.modelfiles.card import load_model_header
from kurabe.simulator.quantize import ggml_type, predict_quant
from kurabe.twin import write_twin

MB = 1e6


def disk_write_speed(folder: Path, nbytes: int) -> float:
    """MB/s of writing ``nbytes`` zero-free bytes sequentially in 16 MiB chunks (flushed)."""
    path = folder / ".kurabe-disk-speed.tmp"
    chunk = os.urandom(16 << 20)
    start = time.perf_counter()
    try:
        with open(path, "wb") as fh:
            left = nbytes
            while left > 0:
                left -= fh.write(chunk[:min(left, len(chunk))])
            fh.flush()
            os.fsync(fh.fileno())
        return nbytes / MB / (time.perf_counter() - start)
    finally:
        path.unlink(missing_ok=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="config.json, its folder, a .gguf or builtin:NAME")
    parser.add_argument("--quant", help="llama-quantize type (e.g. Q4_K_M); default: as is")
    parser.add_argument("-o", "--out", type=Path, required=True, help="twin file to write")
    parser.add_argument("--keep", action="store_true", help="keep the twin")
    parser.add_argument("--disk-bytes", type=float, default=None,
                        help="bytes of the plain-write comparison (default: the twin's size)")
    opts = parser.parse_args()

    header, kind = load_model_header(opts.model)
    types = None
    if opts.quant:
        prediction = predict_quant(header, opts.quant)
        types = {t.name: ggml_type(t.type).id for t in prediction.tensors}
    last = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.perf_counter()
        if now - last[0] > 2 or done == total:
            last[0] = now
            print(f"  {done / MB:10.1f} / {total / MB:.1f} MB", file=sys.stderr)

    start = time.perf_counter()
    result = write_twin(header, opts.out, types=types, progress=progress)
    with open(result.path, "rb+") as fh:
        os.fsync(fh.fileno())
    seconds = time.perf_counter() - start
    print(f"twin of {opts.model} ({kind}, {opts.quant or 'own types'}): {result.path}")
    print(f"  {result.n_tensors} tensors, {result.file_bytes / MB:,.1f} MB "
          f"({result.file_bytes / 2**30:.2f} GiB)")
    print(f"  {seconds:.2f} s with fsync ({result.seconds:.2f} s written), "
          f"{result.file_bytes / MB / seconds:,.0f} MB/s")
    if not opts.keep:
        result.path.unlink()
    n = int(opts.disk_bytes) if opts.disk_bytes else result.file_bytes
    disk = disk_write_speed(result.path.parent, n)
    print(f"  plain sequential write of {n / MB:,.0f} MB to the same folder: {disk:,.0f} MB/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
