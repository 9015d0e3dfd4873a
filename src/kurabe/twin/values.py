"""Starting values per kind of tensor: what keeps a random-weight model finite.

Weight matrices are normal with standard deviation 0.02 (the usual initialisation), the
token embedding 1/sqrt(n_embd) (rows of about unit length). Tensors whose value has a meaning
beyond "some weight" get a fixed rule, the one that keeps every layer's activations finite:

==================  ==========================================================================
norms               1 (``*_norm``, ``nextn.enorm``/``hnorm``; llama.cpp's converters already
                    fold Gemma's and Qwen3.5's ``1 + w`` into the stored value)
biases              0 (``*.bias``), except the gated-delta-net time step below
``ssm_a``           -U(0.5, 1.5): negative decay rates (``-exp(A_log)``)
``ssm_dt.bias``     U(-1, 1)
``ssm_conv1d``      normal, standard deviation 0.3 (a short convolution over 4 steps)
``rope_freqs``      1 (frequency factors: 0 would divide by zero)
``attn_sinks``      0
==================  ==========================================================================
"""

from __future__ import annotations

import math

import numpy as np

WEIGHT_STD = 0.02

# kinds whose values are not normal samples (they need a float type)
FIXED_KINDS = ("norm", "bias", "ssm_a", "ssm_dt", "rope_freqs", "attn_sinks")


def tensor_kind(name: str) -> str:
    """The rule a tensor's starting values follow: one of :data:`FIXED_KINDS`,
    ``token_embd`` or ``weight``."""
    base = name.rsplit(".", 1)[0] if name.endswith((".weight", ".bias")) else name
    kind = base.split(".")[-1]
    if "norm" in kind:
        return "norm"
    if kind == "ssm_a":
        return "ssm_a"
    if kind == "ssm_dt":  # ssm_dt.bias (the time-step bias of gated delta nets)
        return "ssm_dt"
    if kind == "ssm_conv1d":
        return "ssm_conv1d"
    if kind == "rope_freqs":
        return "rope_freqs"
    if kind == "attn_sinks":
        return "attn_sinks"
    if name.endswith(".bias") or kind == "exp_probs_b":
        return "bias"
    if kind in ("token_embd", "per_layer_token_embd"):
        return "token_embd"
    return "weight"


def weight_std(kind: str, n_embd: int) -> float:
    """Standard deviation of a normal kind's values."""
    if kind == "token_embd":
        return 1.0 / math.sqrt(max(1, n_embd))
    if kind == "ssm_conv1d":
        return 0.3
    return WEIGHT_STD


def initial_values(name: str, shape: tuple[int, ...], rng: np.random.Generator,
                   n_embd: int) -> np.ndarray:
    """Starting values (float32) of tensor ``name`` with NumPy ``shape`` (the reverse of
    the GGML shape)."""
    kind = tensor_kind(name)
    if kind in ("norm", "rope_freqs"):
        return np.ones(shape, dtype=np.float32)
    if kind in ("bias", "attn_sinks"):
        return np.zeros(shape, dtype=np.float32)
    if kind == "ssm_a":
        return -rng.uniform(0.5, 1.5, size=shape).astype(np.float32)
    if kind == "ssm_dt":
        return rng.uniform(-1.0, 1.0, size=shape).astype(np.float32)
    std = weight_std(kind, n_embd)
    return (rng.standard_normal(shape, dtype=np.float32) * np.float32(std))
