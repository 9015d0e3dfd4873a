"""`kurabe plan`: a model's memory at given settings, for one quant or a ranked list."""

from __future__ import annotations

import re
from typing import Any

from kurabe import KurabeError
from kurabe.modelfiles.card import load_model_header, quantized_view
from kurabe.simulator.memory import plan_memory

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "kib": 2**10, "m": 10**6, "mb": 10**6,
          "mib": 2**20, "g": 10**9, "gb": 10**9, "gib": 2**30, "t": 10**12, "tb": 10**12,
          "tib": 2**40}


def parse_size(text: str, what: str = "memory budget") -> int:
    """'48GiB', '48 GB', '512MiB', '1e9' -> bytes (GB = 10^9, GiB = 2^30)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([a-zA-Z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _UNITS:
        raise KurabeError(f"{what} {text!r}: expected a size such as 48GiB, 48GB or 512MiB")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def machine_gpus() -> list[str]:
    """The GPUs found on this machine (name, memory, driver), as runs record them."""
    from kurabe.machine import machine_info

    return list(machine_info()["gpus"])


def resolve_placement(gpu: bool | None, ngl: int | None) -> tuple[bool, str, str]:
    """(gpu, basis, reason) for a plan: whether it assumes a GPU, whether that was "asked"
    or read from this "machine", and why, in words.

    ``gpu`` None plans for this machine: a GPU when one is found, none otherwise. Asking for
    layers to be offloaded (``ngl`` other than None or 0) assumes a GPU, so a plan for a GPU
    box can be made on a CPU-only laptop; ``ngl`` 0 keeps every layer in host memory."""
    offload = ngl is not None and ngl != 0
    if gpu is False:
        if offload:
            raise KurabeError(f"offloading layers (ngl {ngl}) needs a GPU, but the plan was "
                              "asked to assume none")
        return False, "asked", "no GPU assumed, as asked"
    if gpu is True:
        return True, "asked", "a GPU assumed, as asked"
    if offload:
        what = "every layer" if ngl is not None and ngl < 0 else f"{ngl} layers"
        return True, "asked", f"{what} offloaded to a GPU, as asked"
    gpus = machine_gpus()
    if ngl == 0:
        return bool(gpus), "asked", "no layers offloaded, as asked"
    if gpus:
        return True, "machine", f"GPU found on this machine: {'; '.join(gpus)}"
    return False, "machine", "no GPU found on this machine"


def plan_model(spec: str, *, ctx: int = 4096, cache_type_k: str = "f16", cache_type_v: str = "f16",
               parallel: int = 1, ngl: int | None = None, ubatch: int = 512,
               flash_attn: str = "auto", quant: str | None = None, budget: str | None = None,
               gpu: bool | None = None) -> dict[str, Any]:
    """The memory plan of one model. Placement: see :func:`resolve_placement`; the result
    says which was assumed (``placement``, ``gpu_assumed``, ``n_gpu_layers`` of
    ``n_layers_offloadable``) and why (``placement_basis``, ``placement_reason``)."""
    return _plan(spec, resolve_placement(gpu, ngl), ctx=ctx, cache_type_k=cache_type_k,
                 cache_type_v=cache_type_v, parallel=parallel, ngl=ngl, ubatch=ubatch,
                 flash_attn=flash_attn, quant=quant, budget=budget)


def _plan(spec: str, placement: tuple[bool, str, str], *, ctx: int = 4096,
          cache_type_k: str = "f16", cache_type_v: str = "f16", parallel: int = 1,
          ngl: int | None = None, ubatch: int = 512, flash_attn: str = "auto",
          quant: str | None = None, budget: str | None = None) -> dict[str, Any]:
    gpu, basis, reason = placement
    header, kind = load_model_header(spec)
    budget_bytes = parse_size(budget) if budget else None
    file_bytes = getattr(header, "file_bytes", None)
    quant_name = getattr(header, "file_type_name", None)
    if quant:
        header, prediction = quantized_view(header, quant.upper())
        file_bytes, quant_name = prediction.file_bytes, quant.upper()
    elif kind == "hf-config":
        quant_name = quant_name or "F16/BF16 (as converted)"
    plan = plan_memory(header, ctx=ctx, cache_type_k=cache_type_k, cache_type_v=cache_type_v,
                       parallel=parallel, ngl=ngl, ubatch=ubatch, flash_attn=flash_attn,
                       gpu=gpu)
    out = plan.to_dict(budget_bytes)
    out.update({"model": spec, "quant": quant_name, "file_bytes": file_bytes,
                "ctx": ctx, "cache_type_k": cache_type_k, "cache_type_v": cache_type_v,
                "parallel": parallel, "ngl": ngl, "placement_basis": basis,
                "placement_reason": reason})
    return out


def rank_quants(spec: str, quants: list[str], *, budget: str | None, gpu: bool | None = None,
                ngl: int | None = None, **settings: Any) -> dict[str, Any]:
    """Plan each quant; the recommendation is the largest file whose total fits the budget.
    Every quant is planned with the same placement (decided once, as for :func:`plan_model`),
    repeated at the top level of the result."""
    if not budget:
        raise KurabeError("ranking quants needs a memory budget (e.g. 48GiB)")
    placement = resolve_placement(gpu, ngl)
    rows = [_plan(spec, placement, quant=q, budget=budget, ngl=ngl, **settings) for q in quants]
    rows.sort(key=lambda r: r["file_bytes"] or 0)
    fitting = [r for r in rows if r["fits"]]
    best = max(fitting, key=lambda r: r["file_bytes"] or 0)["quant"] if fitting else None
    return {"model": spec, "budget_bytes": parse_size(budget), "quants": rows, "best": best,
            "gpu_assumed": placement[0], "ngl": ngl,
            "placement": rows[0]["placement"] if rows else None,
            "placement_basis": placement[1], "placement_reason": placement[2]}
