"""Record llama-quantize's real output on tiny models: ``tests/data/quant_ground_truth.json``.

Run by hand (not in CI: it needs a llama.cpp build), from the repository root::

    python tests/data/make_quant_fixtures.py --llama-cpp /path/to/llama.cpp [--keep DIR]

``--llama-cpp`` is a llama.cpp checkout with ``build/bin/llama-quantize`` (and
``build/bin/llama-bench`` for the load check) built; or pass ``--quantize``/``--bench``.

What it does:

1. Writes tiny F16 models (random weights, a byte-level BPE vocabulary) of several
   architectures. Dimensions are chosen so the K-quant rules are exercised: hidden sizes of
   256 (256-element blocks fit), 8 to 80 layers (the "use more bits" layer schedules, the
   70B-class attention V rule at 80 layers), 8 experts (the 8-expert special cases) and other
   expert counts, and some rows that are NOT multiples of 256 (or not even of 32) so the
   fallback types appear.

   * ``tiny:*`` models come from ``tests/tiny_models.py`` (llama, qwen3 with tied
     embeddings, qwen3moe, gemma3, qwen3next, qwen35moe); their tensor lists are recorded
     explicitly.
   * ``hf:*`` models are synthesized from a small Hugging Face ``config.json`` by
     ``kurabe.modelfiles.hf_config`` (llama with 80 layers, qwen2, qwen3, qwen3moe, gemma3 with
     ``text_config`` nesting, gpt-oss, qwen3next, qwen35, qwen35moe), written as F16, and must
     load in llama.cpp (``llama-bench`` runs one prompt and one generated token on it): this
     checks the synthesized GGUF names, shapes and metadata against llama.cpp's own loader.
     The config and a digest of the tensor list are recorded; the test re-synthesizes the
     list and checks the digest.

2. Quantizes every model with the real ``llama-quantize`` to every mix in
   ``kurabe.simulator.quantize.QUANT_TYPES`` (the 80-layer model: the mixes its size class
   changes) and records, per output file: the GGML type of each tensor (one character per
   tensor, see ``type_codes``, in the output file's tensor order), and the exact file size;
   per model, a digest of the output files' tensor order (the same for every mix). The
   llama.cpp version line is recorded once.

3. Records the input facts the predictor needs: the scalar metadata, the tensor list
   (tensors outside blocks, then groups of identical blocks), a digest of the list, and
   the input header length (so the test needs neither the binary nor the model files).

The output is a few tens of KB. Re-run it after updating llama.cpp; ``tests/test_quantize.py``
then shows any rule change as a per-tensor mismatch.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE.parent))  # tests/: tiny_models
sys.path.insert(0, str(ROOT / "src"))

from kurabe.modelfiles.gguf_header import SkippedArray, read_header  # noqa: E402
from kurabe.modelfiles.hf_config import read_hf_config  # noqa: E402
from kurabe.simulator.quantize import QUANT_TYPES, ggml_type  # noqa: E402
from kurabe.twin import write_twin  # noqa: E402

import tiny_models  # noqa: E402

OUT = HERE / "quant_ground_truth.json"

# One character per GGML type in the recorded per-tensor type strings.
TYPE_CODES = {"F32": "a", "F16": "b", "BF16": "c", "Q4_0": "d", "Q4_1": "e", "Q5_0": "f",
              "Q5_1": "g", "Q8_0": "h", "Q2_K": "i", "Q3_K": "j", "Q4_K": "k", "Q5_K": "l",
              "Q6_K": "m", "IQ4_NL": "n", "IQ4_XS": "o", "MXFP4": "p"}

TINY_VOCAB = 512  # tokens (byte-level BPE, padded) in every tiny model

# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------

# name -> keyword arguments of tiny_models.write_model
TINY_MODELS: dict[str, dict[str, Any]] = {
    # dense, 8 layers: use_more_bits picks layers 0, 3, 6, 7; 2 query heads per KV head
    "tiny:llama-8L": dict(arch="llama", n_layers=8, n_embd=256, n_head=4, n_head_kv=2,
                          head_dim=64, n_ff=512),
    # tied embeddings (token_embd takes the output rules); ffn rows of 384 (not /256);
    # 16 layers (Q3_K_M's first-1/16 rule); 4 query heads per KV head (Q2_K, IQ4 rules)
    "tiny:qwen3-16L-tied": dict(arch="qwen3", n_layers=16, n_embd=256, n_head=8, n_head_kv=2,
                                head_dim=32, n_ff=384, tie_embeddings=True),
    # exactly 8 experts: attention V/K -> Q8_0, attn_output -> Q5_K; expert rows of 160
    "tiny:qwen3moe-8x": dict(arch="qwen3moe", n_layers=4, n_embd=256, n_head=4, n_head_kv=2,
                             head_dim=64, n_ff=512, n_expert=8, n_expert_used=2, n_ff_exp=160),
    # 16 experts, 8 layers: the ffn_down schedule follows block numbers
    "tiny:qwen3moe-16x": dict(arch="qwen3moe", n_layers=8, n_embd=256, n_head=4, n_head_kv=1,
                              head_dim=64, n_ff=512, n_expert=16, n_expert_used=4,
                              n_ff_exp=256),
    # hidden 288 (not /256: fallbacks everywhere, tied token_embd -> Q8_0); ffn rows of 600
    # (not even /32: F16)
    "tiny:gemma3-288": dict(arch="gemma3", n_layers=6, n_embd=288, n_head=4, n_head_kv=1,
                            head_dim=64, n_ff=600, tie_embeddings=True),
    # hybrid: linear-attention layers carry attn_qkv (counted with attention V)
    "tiny:qwen3next-8L": dict(arch="qwen3next", n_layers=8, n_embd=256, n_head=4, n_head_kv=2,
                              head_dim=64, n_expert=16, n_expert_used=2, n_ff_exp=256,
                              n_ff_shexp=512, ssm_d_state=64, ssm_n_group=2, ssm_dt_rank=4),
    # hybrid with 8 experts; expert rows of 128 and ssm_out rows of 128 (not /256)
    "tiny:qwen35moe-8x": dict(arch="qwen35moe", n_layers=4, n_embd=256, n_head=4, n_head_kv=2,
                              head_dim=64, n_expert=8, n_expert_used=2, n_ff_exp=128,
                              n_ff_shexp=256, ssm_d_state=32, ssm_n_group=2, ssm_dt_rank=4),
}

# name -> config.json (tiny dimensions, real key layout)
HF_MODELS: dict[str, dict[str, Any]] = {
    # 80 layers with grouped-query attention: llama.cpp's "70B" label (attention V bump),
    # Llama 3 rope scaling (a rope_freqs tensor)
    "hf:llama-80L": {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 256,
        "intermediate_size": 256, "num_hidden_layers": 80, "num_attention_heads": 4,
        "num_key_value_heads": 1, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5,
        "rope_theta": 500000.0, "tie_word_embeddings": False, "vocab_size": TINY_VOCAB,
        "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 1024, "rope_type": "llama3"},
        "torch_dtype": "bfloat16"},
    "hf:qwen2-tied": {
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 256,
        "intermediate_size": 640, "num_hidden_layers": 12, "num_attention_heads": 4,
        "num_key_value_heads": 2, "max_position_embeddings": 4096, "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0, "tie_word_embeddings": True, "vocab_size": TINY_VOCAB},
    "hf:qwen3": {
        "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": 256,
        "intermediate_size": 512, "num_hidden_layers": 4, "num_attention_heads": 8,
        "num_key_value_heads": 2, "head_dim": 64, "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "tie_word_embeddings": False,
        "vocab_size": TINY_VOCAB},
    "hf:qwen3moe": {
        "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe",
        "hidden_size": 256, "intermediate_size": 512, "moe_intermediate_size": 256,
        "num_experts": 12, "num_experts_per_tok": 2, "decoder_sparse_step": 1,
        "mlp_only_layers": [], "num_hidden_layers": 4, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 64, "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "tie_word_embeddings": False,
        "vocab_size": TINY_VOCAB},
    # multimodal layout: the text model under text_config, most keys left to defaults
    "hf:gemma3-mm": {
        "architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3",
        "text_config": {"model_type": "gemma3_text", "hidden_size": 256,
                        "intermediate_size": 1024, "num_hidden_layers": 6,
                        "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 128,
                        "sliding_window": 512, "vocab_size": TINY_VOCAB,
                        "rope_local_base_freq": 10000.0,
                        "rope_scaling": {"factor": 8.0, "rope_type": "linear"}},
        "vision_config": {"model_type": "siglip_vision_model", "hidden_size": 64}},
    "hf:gpt-oss": {
        "architectures": ["GptOssForCausalLM"], "model_type": "gpt_oss", "hidden_size": 256,
        "intermediate_size": 256, "num_hidden_layers": 4, "num_attention_heads": 8,
        "num_key_value_heads": 2, "head_dim": 64, "num_local_experts": 4,
        "num_experts_per_tok": 2, "sliding_window": 128, "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-5, "rope_theta": 150000.0, "tie_word_embeddings": False,
        "layer_types": ["sliding_attention", "full_attention"] * 2,
        "rope_scaling": {"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0,
                         "beta_slow": 1.0, "original_max_position_embeddings": 4096},
        "vocab_size": TINY_VOCAB},
    # Qwen3-Next: no text_config, no mtp_num_hidden_layers (one MTP layer is assumed)
    "hf:qwen3next": {
        "architectures": ["Qwen3NextForCausalLM"], "model_type": "qwen3_next",
        "hidden_size": 256, "intermediate_size": 512, "moe_intermediate_size": 256,
        "shared_expert_intermediate_size": 256, "num_experts": 8, "num_experts_per_tok": 2,
        "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
        "head_dim": 64, "linear_conv_kernel_dim": 4, "linear_key_head_dim": 32,
        "linear_value_head_dim": 32, "linear_num_key_heads": 4, "linear_num_value_heads": 8,
        "full_attention_interval": 4, "partial_rotary_factor": 0.25,
        "max_position_embeddings": 4096, "rms_norm_eps": 1e-6, "rope_theta": 10000000.0,
        "tie_word_embeddings": False, "vocab_size": TINY_VOCAB},
    "hf:qwen35": {
        "architectures": ["Qwen3_5ForConditionalGeneration"], "model_type": "qwen3_5",
        "tie_word_embeddings": False,
        "text_config": {"model_type": "qwen3_5_text", "hidden_size": 256,
                        "intermediate_size": 768, "num_hidden_layers": 4,
                        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64,
                        "linear_conv_kernel_dim": 4, "linear_key_head_dim": 32,
                        "linear_value_head_dim": 32, "linear_num_key_heads": 4,
                        "linear_num_value_heads": 8, "full_attention_interval": 4,
                        "layer_types": ["linear_attention"] * 3 + ["full_attention"],
                        "mtp_num_hidden_layers": 1, "max_position_embeddings": 4096,
                        "rms_norm_eps": 1e-6, "vocab_size": TINY_VOCAB,
                        "rope_parameters": {"rope_theta": 10000000.0,
                                            "partial_rotary_factor": 0.25,
                                            "mrope_section": [3, 3, 2]}}},
    "hf:qwen35moe": {
        "architectures": ["Qwen3_5MoeForConditionalGeneration"], "model_type": "qwen3_5_moe",
        "tie_word_embeddings": False,
        "text_config": {"model_type": "qwen3_5_moe_text", "hidden_size": 256,
                        "moe_intermediate_size": 256, "shared_expert_intermediate_size": 256,
                        "num_experts": 16, "num_experts_per_tok": 4, "num_hidden_layers": 8,
                        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64,
                        "linear_conv_kernel_dim": 4, "linear_key_head_dim": 32,
                        "linear_value_head_dim": 32, "linear_num_key_heads": 4,
                        "linear_num_value_heads": 8, "full_attention_interval": 4,
                        "layer_types": (["linear_attention"] * 3 + ["full_attention"]) * 2,
                        "mtp_num_hidden_layers": 1, "max_position_embeddings": 4096,
                        "rms_norm_eps": 1e-6, "vocab_size": TINY_VOCAB,
                        "rope_parameters": {"rope_theta": 10000000.0,
                                            "partial_rotary_factor": 0.25}}},
}


# The 80-layer model only for the mixes its size class changes (and two references), to
# keep the recorded file small.
HF_FTYPES = {"hf:llama-80L": ("Q2_K", "Q3_K_S", "Q3_K_M", "Q4_K_S", "Q4_K_M", "Q5_K_M",
                              "Q8_0")}

# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def tensor_digest(tensors) -> str:
    """sha256 over "name shape type" lines sorted by name (the test computes the same)."""
    h = hashlib.sha256()
    for t in sorted(tensors, key=lambda t: t[0]):
        h.update(f"{t[0]} {','.join(map(str, t[1]))} {t[2]}\n".encode())
    return h.hexdigest()


def compress_layout(tensors) -> dict[str, Any]:
    """The tensor list as tensors outside blocks plus groups of identical blocks
    (same tensor suffixes, shapes and types): a few lines instead of hundreds."""
    globals_, per_block = [], {}
    for name, shape, type_ in tensors:
        m = re.match(r"blk\.(\d+)\.(.*)$", name)
        if m is None:
            globals_.append([name, shape, type_])
        else:
            per_block.setdefault(int(m.group(1)), []).append([m.group(2), shape, type_])
    groups: list[dict[str, Any]] = []
    for layer in sorted(per_block):
        content = sorted(per_block[layer])
        for g in groups:
            if g["tensors"] == content:
                g["layers"].append(layer)
                break
        else:
            groups.append({"layers": [layer], "tensors": content})
    return {"globals": globals_, "blocks": groups}


def order_digest(names) -> str:
    return hashlib.sha256("\n".join(names).encode()).hexdigest()


def scalar_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """The metadata worth recording: everything but long arrays (vocabulary)."""
    out = {}
    for k, v in metadata.items():
        if isinstance(v, SkippedArray) or k.startswith("tokenizer.ggml."):
            continue
        if isinstance(v, list) and len(v) > 128:
            continue
        out[k] = v
    return out


def write_synthesized(path: Path, header, seed: int) -> None:
    """Write a synthesized header as a real F16 GGUF: kurabe's twin writer (random weights,
    a byte-level BPE vocabulary of the config's size)."""
    write_twin(header, path, seed=seed)


def llama_cpp_version(quantize: Path, sample: Path, tmp: Path) -> dict[str, str]:
    r = subprocess.run([str(quantize), str(sample), str(tmp / "v.gguf"), "Q8_0", "1"],
                       capture_output=True, text=True)
    text = r.stdout + r.stderr
    version = re.search(r"^version: .*$", text, re.M)
    built = re.search(r"^built with .*$", text, re.M)
    return {"version": version.group(0) if version else "unknown",
            "built_with": built.group(0) if built else "unknown"}


def load_check(bench: Path | None, path: Path) -> bool | None:
    if bench is None:
        return None
    r = subprocess.run([str(bench), "-m", str(path), "-p", "4", "-n", "1", "-r", "1",
                        "-t", "2", "-o", "json"], capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        tail = "\n".join((r.stdout + r.stderr).splitlines()[-15:])
        raise SystemExit(f"llama.cpp cannot load {path.name}:\n{tail}")
    return True


def quantize_all(quantize: Path, src: Path, tmp: Path, ftypes=QUANT_TYPES) -> dict[str, Any]:
    quants: dict[str, Any] = {}
    order = None
    for ftype in ftypes:
        out = tmp / f"{src.stem}-{ftype}.gguf"
        r = subprocess.run([str(quantize), str(src), str(out), ftype, "2"],
                           capture_output=True, text=True)
        if r.returncode != 0:
            tail = "\n".join((r.stdout + r.stderr).splitlines()[-8:])
            print(f"  {ftype}: llama-quantize failed\n{tail}", file=sys.stderr)
            quants[ftype] = {"error": tail.splitlines()[-1] if tail else "failed"}
            continue
        h = read_header(out)
        codes = [TYPE_CODES[ggml_type(t.ggml_type).name] for t in h.tensors]
        this_order = order_digest([t.name for t in h.tensors])
        if order is None:
            order = this_order
        elif order != this_order:
            raise SystemExit(f"{src.name}: tensor order differs between outputs")
        quants[ftype] = {"file_bytes": h.file_bytes, "types": "".join(codes)}
        out.unlink()
    return {"output_order_digest": order, "quants": quants}


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--llama-cpp", type=Path, help="llama.cpp checkout with build/bin built")
    ap.add_argument("--quantize", type=Path, help="llama-quantize binary")
    ap.add_argument("--bench", type=Path, help="llama-bench binary (load check)")
    ap.add_argument("--keep", type=Path, help="keep the F16 inputs in this folder")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    quantize = args.quantize or (args.llama_cpp / "build/bin/llama-quantize"
                                 if args.llama_cpp else None)
    bench = args.bench or (args.llama_cpp / "build/bin/llama-bench" if args.llama_cpp else None)
    if quantize is None or not quantize.is_file():
        raise SystemExit("need --llama-cpp DIR (with build/bin/llama-quantize) or --quantize")
    if bench is not None and not bench.is_file():
        bench = None
        print("llama-bench not found: skipping the load check", file=sys.stderr)

    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(args.keep) if args.keep else Path(tmpdir)
        tmp.mkdir(parents=True, exist_ok=True)
        models: list[dict[str, Any]] = []
        version = None

        for seed, (name, kwargs) in enumerate(TINY_MODELS.items()):
            kwargs = dict(kwargs)
            arch = kwargs.pop("arch")
            path = tmp / (name.replace(":", "_") + ".gguf")
            tiny_models.write_model(path, arch, seed=seed, pad_vocab_to=TINY_VOCAB, **kwargs)
            if version is None:
                version = llama_cpp_version(quantize, path, tmp)
            h = read_header(path)
            tensors = [[t.name, list(t.shape), ggml_type(t.ggml_type).name] for t in h.tensors]
            entry = {"name": name, "source": "tests/tiny_models.py", "arch": arch,
                     "metadata": scalar_metadata(h.metadata), "header_bytes": h.header_bytes,
                     "input_file_bytes": h.file_bytes, "n_tensors": len(tensors),
                     "tensors": compress_layout(tensors),
                     "tensor_digest": tensor_digest(tensors)}
            entry.update(quantize_all(quantize, path, tmp))
            models.append(entry)
            print(f"{name}: {len(tensors)} tensors, {time.time() - t0:.1f}s", file=sys.stderr)

        for seed, (name, config) in enumerate(HF_MODELS.items(), start=100):
            folder = tmp / name.replace(":", "_")
            folder.mkdir(exist_ok=True)
            (folder / "config.json").write_text(json.dumps(config, indent=1))
            synth = read_hf_config(folder, dtype="F16")
            path = tmp / (name.replace(":", "_") + ".gguf")
            write_synthesized(path, synth, seed)
            loads = load_check(bench, path)
            h = read_header(path)
            tensors = [[t.name, list(t.shape), ggml_type(t.ggml_type).name] for t in h.tensors]
            synth_list = [[t.name, list(t.shape), ggml_type(t.ggml_type).name]
                          for t in synth.tensors]
            if tensors != synth_list:
                raise SystemExit(f"{name}: written tensors differ from the synthesized list")
            entry = {"name": name, "source": "kurabe.modelfiles.hf_config", "arch": h.architecture,
                     "hf_config": config, "metadata": scalar_metadata(h.metadata),
                     "header_bytes": h.header_bytes, "input_file_bytes": h.file_bytes,
                     "n_tensors": len(tensors), "tensor_digest": tensor_digest(tensors),
                     "loads_in_llama_cpp": loads}
            entry.update(quantize_all(quantize, path, tmp, HF_FTYPES.get(name, QUANT_TYPES)))
            models.append(entry)
            print(f"{name}: {len(tensors)} tensors, loads={loads}, {time.time() - t0:.1f}s",
                  file=sys.stderr)

    doc = {
        "about": "llama-quantize output on tiny F16 models; written by "
                 "tests/data/make_quant_fixtures.py, checked by tests/test_quantize.py",
        "llama_cpp": version,
        "type_codes": {v: k for k, v in TYPE_CODES.items()},
        "models": models,
    }
    args.out.write_text(json.dumps(doc, separators=(",", ":")) + "\n")
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes) in {time.time() - t0:.1f}s",
          file=sys.stderr)


if __name__ == "__main__":
    main()
