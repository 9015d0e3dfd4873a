"""Lineage: whether one model was built from another's weights, from the two files.

:func:`compare_lineage` gathers four kinds of evidence, each with its strength
(:mod:`kurabe.lineage.evidence`):

* **declared** (:mod:`~kurabe.lineage.declared`): architecture, declared base models,
  license, names, a synthetic twin's mark;
* **tokenizer** (:mod:`~kurabe.lineage.tokenizer`): the same vocabulary, overlap of tokens and
  merges, special tokens;
* **shapes** (:mod:`~kurabe.lineage.shapes`): the tensor-shape signature;
* **weights** (:mod:`~kurabe.lineage.weights`): per-tensor similarity of sampled rows after
  dequantizing, robust to quant types and to permutations of heads and experts, per layer;

and decides ``derived``, ``independent`` or ``inconclusive`` (:mod:`~kurabe.lineage.verdict`).
The method, thresholds and sampling are described in docs/lineage.md.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kurabe.lineage.evidence import Evidence
from kurabe.lineage.files import LineageError, ModelFile, open_model
from kurabe.lineage.shapes import file_signature
from kurabe.lineage.weights import (
    DEFAULT_SAMPLE,
    FAST_SAMPLE,
    MATCH_SCORE,
    ProgressHook,
    Sample,
    WeightsResult,
)

VERDICTS = ("derived", "independent", "inconclusive")

__all__ = ["DEFAULT_SAMPLE", "FAST_SAMPLE", "MATCH_SCORE", "VERDICTS", "Evidence",
           "LineageError", "LineageResult", "Sample", "compare_lineage", "file_signature",
           "open_model"]


@dataclass
class LineageResult:
    a: str  # the paths compared
    b: str
    verdict: str  # one of VERDICTS
    reason: str  # one sentence
    evidence: list[Evidence]
    weights: WeightsResult | None
    sample: dict[str, Any]
    seconds: float
    declared: dict[str, Any] = field(default_factory=dict)
    tokenizer: dict[str, Any] = field(default_factory=dict)
    shapes: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def score(self) -> float | None:
        """The median layer score (None when no layer was compared)."""
        return self.weights.median("score") if self.weights is not None else None

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` object (keys defined in docs/lineage.md)."""
        w = self.weights
        return {
            "a": self.a, "b": self.b, "verdict": self.verdict, "reason": self.reason,
            "evidence": [e.to_dict() for e in self.evidence],
            "layers": [layer.to_dict() for layer in w.layers] if w is not None else [],
            "sample": self.sample, "seconds": round(self.seconds, 3),
            "score": self.score,
            "weights": w.to_dict() if w is not None else None,
            "declared": self.declared, "tokenizer": self.tokenizer, "shapes": self.shapes,
            "notes": self.notes,
        }


def compare_lineage(a: str | Path | ModelFile, b: str | Path | ModelFile, *,
                    sample: Sample = DEFAULT_SAMPLE, progress: ProgressHook | None = None
                    ) -> LineageResult:
    """Whether ``b`` was built from ``a``'s weights or the other way round (lineage has no
    direction here: a derived pair is derived either way). ``a``/``b``: a GGUF file,
    ``builtin:NAME``, or a folder with config.json and safetensors weights (or an opened
    :class:`~kurabe.lineage.files.ModelFile`). ``progress(description, done, total)`` is
    called per tensor compared. A :class:`LineageError` names a file that cannot be read."""
    from kurabe.lineage.declared import declared_evidence
    from kurabe.lineage.shapes import shapes_evidence
    from kurabe.lineage.tokenizer import token_map, tokenizer_evidence
    from kurabe.lineage.verdict import decide, weight_evidence
    from kurabe.lineage.weights import compare_weights

    started = time.monotonic()
    ma = a if isinstance(a, ModelFile) else open_model(a)
    mb = b if isinstance(b, ModelFile) else open_model(b)
    evidence: list[Evidence] = []
    declared, declared_facts = declared_evidence(ma, mb)
    tok_ev, tok_facts = tokenizer_evidence(ma.tokenizer, mb.tokenizer, ma.label, mb.label)
    shape_ev, shape_facts = shapes_evidence(ma, mb)

    token_ids = None
    if tok_facts.get("identical") is False:
        token_ids = token_map(ma.tokenizer["tokens"], mb.tokenizer["tokens"])
    weights = compare_weights(ma, mb, sample, token_ids=token_ids, progress=progress)
    w_ev = weight_evidence(weights)
    evidence = [*w_ev, *tok_ev, *shape_ev, *declared]
    verdict, reason = decide(weights, evidence, tok_facts, shape_facts)
    rows = sum(t.vectors for layer in weights.layers for t in layer.tensors) + \
        sum(t.vectors for t in weights.other)
    total_b = weights.bytes_total
    read = weights.bytes_read
    sample_facts = {
        **sample.to_dict(),
        "layers_in_model": weights.layers_in_model,
        "layers_compared": len(weights.compared),
        "tensors_compared": sum(len(layer.tensors) for layer in weights.layers)
        + len(weights.other),
        "vectors_compared": rows,
        "bytes_read": read,
        "bytes_total": total_b,
        "fraction_read": {k: round(read[k] / total_b[k], 5) if total_b[k] else None
                          for k in read},
    }
    return LineageResult(
        a=str(ma.path), b=str(mb.path), verdict=verdict, reason=reason, evidence=evidence,
        weights=weights, sample=sample_facts, seconds=time.monotonic() - started,
        declared=declared_facts, tokenizer=tok_facts, shapes=shape_facts,
        notes=[*ma.notes, *mb.notes])
