"""Lineage inside a shootout: when a run compares local model files of the same tensor shapes,
each pair is compared (with :data:`~kurabe.lineage.weights.FAST_SAMPLE`: a few seconds even
for multi-GB files) when the run is created, and the result is stored for the report's
model cards. Two entries of the same file (the same sha256) are not compared."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kurabe import KurabeError
from kurabe.records import LineageRow

ProgressHook = Callable[[str, int, int], None]


def same_shape_pairs(models: Sequence[Any], resolved: Mapping[str, Any]
                     ) -> list[tuple[str, str]]:
    """Pairs of model names (in config order) whose resolved files have the same tensor-shape
    signature and different contents. ``models``: config entries (``.name``); ``resolved``:
    name -> ResolvedModel (``file_path``, ``file_sha256``, ``header``)."""
    from kurabe.lineage.shapes import shape_signature

    files = []
    for m in models:
        r = resolved.get(m.name)
        if r is None or r.file_path is None or r.header is None:
            continue
        tensors = getattr(r.header, "tensors", None) or []
        if not tensors:
            continue
        files.append((m.name, r.file_sha256, shape_signature(
            {t.name: tuple(int(d) for d in t.shape) for t in tensors})))
    return [(a, b) for i, (a, sha_a, sig_a) in enumerate(files)
            for (b, sha_b, sig_b) in files[i + 1:] if sig_a == sig_b and sha_a != sha_b]


def store_lineage(store: Any, models: Sequence[Any], resolved: Mapping[str, Any],
                  progress: ProgressHook | None = None) -> list[LineageRow]:
    """Compare every same-shape pair of ``models`` and store each result (``store``: a
    :class:`kurabe.store.Store`). A pair that cannot be compared is recorded as an event
    and skipped: lineage never stops a run."""
    from kurabe.lineage import FAST_SAMPLE, compare_lineage

    rows = []
    for a, b in same_shape_pairs(models, resolved):
        def hook(description: str, done: int, total: int, a: str = a, b: str = b) -> None:
            if progress is not None:
                progress(f"lineage {a} vs {b}", done, total)

        try:
            result = compare_lineage(resolved[a].file_path, resolved[b].file_path,
                                     sample=FAST_SAMPLE, progress=hook)
        except (KurabeError, OSError, ValueError) as exc:
            store.add_event("lineage", f"{a} vs {b}: not compared: {exc}")
            continue
        row = LineageRow(model_a=a, model_b=b, verdict=result.verdict, reason=result.reason,
                         score=result.score, result=result.to_dict())
        store.add_lineage(row)
        rows.append(row)
    return rows
