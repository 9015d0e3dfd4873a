"""The tensor-shape signature: tensor names and shapes (types left out, so a re-quantized
copy has its original's signature). Two models of the same signature can be compared tensor
by tensor; a twin or any model of that architecture and size shares it, so the same
signature says nothing about where the weights came from."""

from __future__ import annotations

import hashlib
from typing import Any

from kurabe.lineage.evidence import Evidence
from kurabe.lineage.files import ModelFile


def shape_signature(tensors: dict[str, tuple[int, ...]]) -> str:
    """sha256 of the sorted ``name:shape`` lines (trailing dimensions of 1 dropped, as
    llama-quantize writes shapes)."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        h.update(f"{name}:{'x'.join(map(str, _trim(tensors[name])))}\n".encode())
    return h.hexdigest()


def _trim(shape: tuple[int, ...]) -> tuple[int, ...]:
    out = list(shape)
    while len(out) > 1 and out[-1] == 1:
        out.pop()
    return tuple(out)


def file_signature(model: ModelFile) -> str:
    return shape_signature({n: t.shape for n, t in model.tensors.items()})


def shapes_evidence(a: ModelFile, b: ModelFile) -> tuple[list[Evidence], dict[str, Any]]:
    """Evidence and facts: which tensors have the same name and shape."""
    sa = {n: _trim(t.shape) for n, t in a.tensors.items()}
    sb = {n: _trim(t.shape) for n, t in b.tensors.items()}
    common = sorted(set(sa) & set(sb))
    same = [n for n in common if sa[n] == sb[n]]
    differ = [n for n in common if sa[n] != sb[n]]
    only_a, only_b = sorted(set(sa) - set(sb)), sorted(set(sb) - set(sa))
    facts: dict[str, Any] = {
        "signature_a": shape_signature(sa), "signature_b": shape_signature(sb),
        "tensors_a": len(sa), "tensors_b": len(sb), "same_shape": len(same),
        "different_shape": [{"name": n, "a": list(sa[n]), "b": list(sb[n])} for n in differ],
        "only_in_a": only_a, "only_in_b": only_b,
    }
    facts["identical"] = facts["signature_a"] == facts["signature_b"]
    if facts["identical"]:
        evidence = [Evidence("shapes", f"the same tensor-shape signature ({len(sa):,} tensors, "
                             f"sha256 {facts['signature_a'][:12]}): the weights compare "
                             "tensor by tensor; any model of this architecture and size "
                             "shares it", "weak")]
    elif not same:
        evidence = [Evidence("shapes", "no tensor has the same name and shape in both "
                             f"({_widths(a)} vs {_widths(b)}): the weights cannot be "
                             "compared tensor to tensor", "weak", "independent")]
    else:
        parts = [f"{len(same):,} of {len(set(sa) | set(sb)):,} tensors have the same name and "
                 "shape"]
        if differ:
            shown = ", ".join(f"{n} ({'x'.join(map(str, sa[n]))} vs "
                              f"{'x'.join(map(str, sb[n]))})" for n in differ[:3])
            parts.append(f"{len(differ)} differ ({shown}{', ...' if len(differ) > 3 else ''})")
        if only_a or only_b:
            parts.append(f"{len(only_a)} only in {a.label}, {len(only_b)} only in {b.label}")
        evidence = [Evidence("shapes", "; ".join(parts), "none")]
    return evidence, facts


def _widths(model: ModelFile) -> str:
    width = model.hparam("embedding_length")
    layers = model.hparam("block_count")
    if isinstance(width, int) and isinstance(layers, int):
        return f"{model.architecture}, {layers} layers of width {width}"
    return str(model.architecture or model.label)
