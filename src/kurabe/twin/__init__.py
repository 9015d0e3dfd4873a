"""Synthetic twins: random-weight GGUF files with exactly a real model's architecture.

Decode speed and memory depend on a model's shapes and storage types, not on what its
weights are. A twin has the real model's metadata, tensor names, shapes and per-tensor GGML
types (those llama-quantize would give, via :func:`kurabe.simulator.quantize.predict_quant`),
valid random data for every type, a tokenizer of the right vocabulary size and a chat
template, and is marked ``kurabe.twin = true``. A real engine serves it like the real model.

* :func:`write_twin` writes one (streaming, near disk speed);
* :func:`is_twin` tells a twin's header from a real model's.
"""

from kurabe.twin.writer import TWIN_KEY, TwinError, TwinResult, is_twin, write_twin

__all__ = ["TWIN_KEY", "TwinError", "TwinResult", "is_twin", "write_twin"]
