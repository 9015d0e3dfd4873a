"""Quantized-size prediction: llama-quantize's per-tensor rules and Hugging Face configs.

1. ``predict_quant`` against recorded llama-quantize output (``tests/data/
   quant_ground_truth.json``, written by ``tests/data/make_quant_fixtures.py`` with a real
   llama.cpp build): every tensor's type must match, and the file size must match to the
   byte (the output header is the input header plus two known keys, and every tensor is
   padded to 32 bytes; nothing is estimated when the input is a real GGUF header).
2. ``read_hf_config`` on realistic ``config.json`` files, checked against parameter and
   tensor counts computed by hand (derivations in the comments).
3. Predicted Q4_K_M sizes of two real models against their published GGUF files.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from kurabe.modelfiles.gguf_header import SkippedArray, TensorInfo
from kurabe.modelfiles.hf_config import HFConfigError, read_hf_config
from kurabe.simulator.quantize import (
    QUANT_TYPES,
    QuantizeError,
    file_order,
    ggml_type,
    predict_quant,
    tensor_nbytes,
)

DATA = Path(__file__).parent / "data" / "quant_ground_truth.json"
TRUTH = json.loads(DATA.read_text())
CODES = TRUTH["type_codes"]


# --------------------------------------------------------------------------------------------
# 1. Recorded llama-quantize output
# --------------------------------------------------------------------------------------------


def _digest(tensors) -> str:
    # Same definition as make_quant_fixtures.tensor_digest.
    h = hashlib.sha256()
    for name, shape, type_ in sorted(tensors, key=lambda t: t[0]):
        h.update(f"{name} {','.join(map(str, shape))} {type_}\n".encode())
    return h.hexdigest()


def _expand(layout) -> list[list]:
    tensors = [list(t) for t in layout["globals"]]
    for group in layout["blocks"]:
        for layer in group["layers"]:
            tensors += [[f"blk.{layer}.{s}", shape, t] for s, shape, t in group["tensors"]]
    return tensors


_HEADERS: dict[str, SimpleNamespace] = {}


def _input_header(model: dict, tmp_root: Path) -> SimpleNamespace:
    """The recorded F16 input as a header-like object (tensor list checked by digest)."""
    if model["name"] in _HEADERS:
        return _HEADERS[model["name"]]
    if "hf_config" in model:
        folder = tmp_root / model["name"].replace(":", "_")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps(model["hf_config"]))
        synth = read_hf_config(folder, dtype="F16")
        tensors = [[t.name, list(t.shape), ggml_type(t.ggml_type).name] for t in synth.tensors]
    else:
        tensors = _expand(model["tensors"])
    assert len(tensors) == model["n_tensors"]
    assert _digest(tensors) == model["tensor_digest"], f"{model['name']}: tensor list differs"
    infos = [TensorInfo(n, tuple(s), ggml_type(t).id, 0) for n, s, t in tensors]
    header = SimpleNamespace(metadata=model["metadata"], tensors=infos,
                             header_bytes=model["header_bytes"])
    _HEADERS[model["name"]] = header
    return header


CASES = [(m["name"], ftype) for m in TRUTH["models"] for ftype in m["quants"]]
MODELS = {m["name"]: m for m in TRUTH["models"]}


def test_ground_truth_covers_the_brief():
    archs = {m["arch"] for m in TRUTH["models"]}
    assert {"llama", "qwen2", "qwen3", "qwen3moe", "gemma3", "gpt-oss", "qwen3next",
            "qwen35moe"} <= archs
    for ftype in ("Q3_K_M", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0", "MXFP4_MOE"):
        assert sum(ftype in m["quants"] for m in TRUTH["models"]) >= 10
    assert set(QUANT_TYPES) == set(MODELS["tiny:llama-8L"]["quants"])
    assert TRUTH["llama_cpp"]["version"].startswith("version: ")
    # the synthesized layouts were loaded by llama.cpp itself when recorded
    assert all(m["loads_in_llama_cpp"] for m in TRUTH["models"] if "hf_config" in m)


@pytest.mark.parametrize("name,ftype", CASES)
def test_prediction_matches_llama_quantize(name, ftype, tmp_path_factory):
    model = MODELS[name]
    real = model["quants"][ftype]
    header = _input_header(model, tmp_path_factory.getbasetemp() / "hf")
    pred = predict_quant(header, ftype)

    order = "\n".join(t.name for t in pred.tensors)
    assert hashlib.sha256(order.encode()).hexdigest() == model["output_order_digest"]
    real_types = [CODES[c] for c in real["types"]]
    mismatches = [(t.name, t.type, r) for t, r in zip(pred.tensors, real_types, strict=False)
                  if t.type != r]
    assert not mismatches, f"{len(mismatches)} of {len(real_types)}: {mismatches[:8]}"
    # Exact: the header length is known and every tensor's size follows from its type.
    assert pred.file_bytes == real["file_bytes"]
    assert not pred.header_estimated


def test_quant_mix_and_bits_per_weight():
    header = _input_header(MODELS["tiny:llama-8L"], Path("/nonexistent"))
    pred = predict_quant(header, "Q4_K_M")
    mix = pred.bytes_by_type
    assert set(mix) == {"Q4_K", "Q6_K", "F32"}
    assert sum(mix.values()) == pred.tensor_bytes
    # layers 0, 3, 6, 7 of 8 "use more bits": attn_v and ffn_down there are Q6_K
    q6 = sorted(t.name for t in pred.tensors if t.type == "Q6_K")
    assert q6 == sorted(["output.weight"] + [f"blk.{i}.{k}.weight" for i in (0, 3, 6, 7)
                                               for k in ("attn_v", "ffn_down")])
    assert 4.5 < pred.bits_per_weight < 6.5
    assert pred.data_bytes >= pred.tensor_bytes


def test_fallback_types_for_rows_not_divisible_by_the_block():
    header = _input_header(MODELS["tiny:gemma3-288"], Path("/nonexistent"))
    types = predict_quant(header, "Q4_K_M").types
    assert types["token_embd.weight"] == "Q8_0"       # tied, 288 % 256 != 0
    assert types["blk.1.attn_q.weight"] == "Q5_0"     # Q4_K -> Q5_0 (288 % 32 == 0)
    assert types["blk.1.ffn_down.weight"] == "F16"    # 600 % 32 != 0
    assert types["blk.1.attn_output.weight"] == "Q4_K"  # 256 columns: no fallback
    assert types["blk.1.attn_norm.weight"] == "F32"   # 1-D: never quantized


def test_unknown_ftype_and_missing_arch():
    header = _input_header(MODELS["tiny:llama-8L"], Path("/nonexistent"))
    with pytest.raises(QuantizeError, match="Q4_K_M"):
        predict_quant(header, "Q4_K_X")
    with pytest.raises(QuantizeError, match="architecture"):
        predict_quant(SimpleNamespace(metadata={}, tensors=[]), "Q8_0")


def test_file_order_is_the_loaders():
    names = ["blk.10.attn_q.weight", "blk.2.attn_q.weight", "output.weight",
             "blk.2.attn_k.weight", "token_embd.weight"]
    assert file_order(names) == ["output.weight", "token_embd.weight", "blk.2.attn_k.weight",
                                 "blk.2.attn_q.weight", "blk.10.attn_q.weight"]


def test_tensor_nbytes():
    assert tensor_nbytes("Q4_K", (4096, 4096)) == 4096 * 4096 // 256 * 144
    assert tensor_nbytes("Q8_0", (64, 3)) == 3 * 2 * 34
    assert tensor_nbytes("F32", (7,)) == 28


# --------------------------------------------------------------------------------------------
# 2. Hugging Face configs (values as published in each model's config.json)
# --------------------------------------------------------------------------------------------

LLAMA_31_8B = {
    "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "hidden_act": "silu",
    "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 14336,
    "max_position_embeddings": 131072, "mlp_bias": False, "model_type": "llama",
    "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
    "pretraining_tp": 1, "rms_norm_eps": 1e-05,
    "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "rope_theta": 500000.0, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "transformers_version": "4.43.0.dev0", "use_cache": True, "vocab_size": 128256,
}

QWEN3_30B_A3B = {
    "architectures": ["Qwen3MoeForCausalLM"], "attention_bias": False,
    "attention_dropout": 0.0, "bos_token_id": 151643, "decoder_sparse_step": 1,
    "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu", "hidden_size": 2048,
    "initializer_range": 0.02, "intermediate_size": 6144, "max_position_embeddings": 40960,
    "max_window_layers": 48, "mlp_only_layers": [], "model_type": "qwen3_moe",
    "moe_intermediate_size": 768, "norm_topk_prob": True, "num_attention_heads": 32,
    "num_experts": 128, "num_experts_per_tok": 8, "num_hidden_layers": 48,
    "num_key_value_heads": 4, "output_router_logits": False, "rms_norm_eps": 1e-06,
    "rope_scaling": None, "rope_theta": 1000000.0, "router_aux_loss_coef": 0.001,
    "sliding_window": None, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "transformers_version": "4.51.0", "use_cache": True, "use_sliding_window": False,
    "vocab_size": 151936,
}

# gemma-3-4b-it: the text model nested under text_config, which leaves most values to
# Gemma3TextConfig's defaults (8 heads, 4 KV heads, head_dim 256, 131072 context) and has
# no vocab_size (the converter then uses the 262144-entry tokenizer).
GEMMA3_4B = {
    "architectures": ["Gemma3ForConditionalGeneration"], "boi_token_index": 255999,
    "eoi_token_index": 256000, "eos_token_id": [1, 106], "image_token_index": 262144,
    "initializer_range": 0.02, "mm_tokens_per_image": 256, "model_type": "gemma3",
    "text_config": {"hidden_size": 2560, "intermediate_size": 10240,
                    "model_type": "gemma3_text", "num_hidden_layers": 34,
                    "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
                    "sliding_window": 1024},
    "torch_dtype": "bfloat16", "transformers_version": "4.50.0.dev0",
    "vision_config": {"hidden_size": 1152, "image_size": 896, "intermediate_size": 4304,
                      "model_type": "siglip_vision_model", "num_attention_heads": 16,
                      "num_hidden_layers": 27, "patch_size": 14, "vision_use_head": False},
}

GPT_OSS_20B = {
    "architectures": ["GptOssForCausalLM"], "attention_bias": True, "attention_dropout": 0.0,
    "eos_token_id": 200002, "experts_per_token": 4, "head_dim": 64, "hidden_act": "silu",
    "hidden_size": 2880, "initial_context_length": 4096, "initializer_range": 0.02,
    "intermediate_size": 2880,
    "layer_types": ["sliding_attention", "full_attention"] * 12,
    "max_position_embeddings": 131072, "model_type": "gpt_oss", "num_attention_heads": 64,
    "num_experts_per_tok": 4, "num_hidden_layers": 24, "num_key_value_heads": 8,
    "num_local_experts": 32, "output_router_logits": False, "pad_token_id": 199999,
    "quantization_config": {"modules_to_not_convert": ["model.layers.*.self_attn",
                                                       "model.layers.*.mlp.router",
                                                       "model.embed_tokens", "lm_head"],
                            "quant_method": "mxfp4"},
    "rms_norm_eps": 1e-05,
    "rope_scaling": {"beta_fast": 32.0, "beta_slow": 1.0, "factor": 32.0,
                     "original_max_position_embeddings": 4096, "rope_type": "yarn",
                     "truncate": False},
    "rope_theta": 150000, "router_aux_loss_coef": 0.9, "sliding_window": 128,
    "swiglu_limit": 7.0, "tie_word_embeddings": False, "transformers_version": "4.55.0.dev0",
    "use_cache": True, "vocab_size": 201088,
}

QWEN3_NEXT_80B_A3B = {
    "architectures": ["Qwen3NextForCausalLM"], "attention_bias": False,
    "attention_dropout": 0.0, "bos_token_id": 151643, "decoder_sparse_step": 1,
    "eos_token_id": 151645, "full_attention_interval": 4, "head_dim": 256,
    "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02,
    "intermediate_size": 5120, "linear_conv_kernel_dim": 4, "linear_key_head_dim": 128,
    "linear_num_key_heads": 16, "linear_num_value_heads": 32, "linear_value_head_dim": 128,
    "max_position_embeddings": 262144, "mlp_only_layers": [], "model_type": "qwen3_next",
    "moe_intermediate_size": 512, "norm_topk_prob": True, "num_attention_heads": 16,
    "num_experts": 512, "num_experts_per_tok": 10, "num_hidden_layers": 48,
    "num_key_value_heads": 2, "output_router_logits": False, "partial_rotary_factor": 0.25,
    "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 10000000,
    "router_aux_loss_coef": 0.001, "shared_expert_intermediate_size": 512,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "transformers_version": "4.57.0.dev0", "use_cache": True, "use_sliding_window": False,
    "vocab_size": 151936,
}

QWEN35_35B_A3B = {
    "architectures": ["Qwen3_5MoeForConditionalGeneration"], "image_token_id": 248056,
    "model_type": "qwen3_5_moe", "tie_word_embeddings": False,
    "text_config": {
        "attention_bias": False, "attention_dropout": 0.0, "attn_output_gate": True,
        "dtype": "bfloat16", "eos_token_id": 248044, "full_attention_interval": 4,
        "head_dim": 256, "hidden_act": "silu", "hidden_size": 2048,
        "layer_types": ["linear_attention"] * 3 + ["full_attention"] + (
            ["linear_attention"] * 3 + ["full_attention"]) * 9,
        "linear_conv_kernel_dim": 4, "linear_key_head_dim": 128, "linear_num_key_heads": 16,
        "linear_num_value_heads": 32, "linear_value_head_dim": 128,
        "max_position_embeddings": 262144, "model_type": "qwen3_5_moe_text",
        "moe_intermediate_size": 512, "mtp_num_hidden_layers": 1,
        "num_attention_heads": 16, "num_experts": 256, "num_experts_per_tok": 8,
        "num_hidden_layers": 40, "num_key_value_heads": 2, "rms_norm_eps": 1e-06,
        "rope_parameters": {"mrope_interleaved": True, "mrope_section": [11, 11, 10],
                            "partial_rotary_factor": 0.25, "rope_theta": 10000000,
                            "rope_type": "default"},
        "shared_expert_intermediate_size": 512, "vocab_size": 248320},
    "transformers_version": "4.57.0.dev0",
    "vision_config": {"depth": 27, "hidden_size": 1152, "model_type": "qwen3_5_moe"},
}


def _write(tmp_path: Path, config: dict, name: str = "m") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_llama_31_8b(tmp_path):
    h = read_hf_config(_write(tmp_path, LLAMA_31_8B))
    # Published parameter count 8,030,261,248:
    #   embeddings 128256*4096 = 525,336,576, twice (untied output) = 1,050,673,152
    #   per layer: q 4096*4096 = 16,777,216; k, v 4096*1024 = 4,194,304 each;
    #              o 16,777,216; gate/up/down 3*4096*14336 = 176,160,768; 2 norms 8,192
    #              = 218,112,000; * 32 layers = 6,979,584,000
    #   output_norm 4,096 -> 8,030,261,248
    # The GGUF adds rope_freqs (head_dim/2 = 64 Llama 3 rope factors): 8,030,261,312.
    assert h.n_params == 8_030_261_248 + 64
    # 3 global tensors + rope_freqs + 32 layers * 9 = 292 (as in the published GGUFs)
    assert len(h.tensors) == 292
    assert h.architecture == "llama"
    md = h.metadata
    assert md["llama.block_count"] == 32
    assert md["llama.embedding_length"] == 4096
    assert md["llama.feed_forward_length"] == 14336
    assert md["llama.attention.head_count"] == 32
    assert md["llama.attention.head_count_kv"] == 8
    assert md["llama.context_length"] == 131072
    assert md["llama.vocab_size"] == 128256
    assert md["llama.rope.dimension_count"] == 128
    shapes = {t.name: t.shape for t in h.tensors}
    assert shapes["token_embd.weight"] == (4096, 128256)
    assert shapes["blk.0.attn_k.weight"] == (4096, 1024)
    assert shapes["blk.31.ffn_down.weight"] == (14336, 4096)
    assert h.file_type_name == "BF16"
    # F16/BF16 file: 2 bytes per weight (norms and rope factors in F32) plus the header
    assert h.file_bytes == pytest.approx(2 * 8_030_261_248 + h.header_bytes, rel=1e-3)


def test_qwen3_30b_a3b(tmp_path):
    h = read_hf_config(_write(tmp_path, QWEN3_30B_A3B))
    # embeddings 2048*151936 = 311,164,928, twice (untied) = 622,329,856
    # per layer: q 2048*4096 = 8,388,608; k, v 2048*512 = 1,048,576 each; o 8,388,608
    #            (18,874,368); q/k norms 2*128; 2 norms 4,096; router 2048*128 = 262,144;
    #            experts 3*128*2048*768 = 603,979,776 -> 623,120,640; * 48 = 29,909,790,720
    # output_norm 2,048 -> 30,532,122,624 (Qwen: "30.5B")
    assert h.n_params == 30_532_122_624
    assert len(h.tensors) == 3 + 48 * 12
    md = h.metadata
    assert md["qwen3moe.expert_count"] == 128
    assert md["qwen3moe.expert_used_count"] == 8
    assert md["qwen3moe.expert_feed_forward_length"] == 768
    assert md["qwen3moe.feed_forward_length"] == 6144
    assert md["qwen3moe.attention.key_length"] == 128
    shapes = {t.name: t.shape for t in h.tensors}
    assert shapes["blk.0.ffn_down_exps.weight"] == (768, 2048, 128)
    assert shapes["blk.0.ffn_gate_inp.weight"] == (2048, 128)
    types = {t.name: ggml_type(t.ggml_type).name for t in h.tensors}
    assert types["blk.0.ffn_gate_inp.weight"] == "F32"  # routers stay F32
    assert types["blk.0.ffn_up_exps.weight"] == "BF16"


def test_gemma3_text_config_nesting(tmp_path):
    h = read_hf_config(_write(tmp_path, GEMMA3_4B))
    # text model only (the vision tower goes to mmproj); tied embeddings
    #   embeddings 2560*262144 = 671,088,640
    #   per layer: q 2560*(8*256) = 5,242,880; k, v 2560*(4*256) = 2,621,440 each;
    #              o 5,242,880 (15,728,640); q/k norms 2*256; 4 norms 4*2560 = 10,240;
    #              ffn 3*2560*10240 = 78,643,200 -> 94,382,592; * 34 = 3,209,008,128
    #   output_norm 2,560 -> 3,880,099,328
    assert h.n_params == 3_880_099_328
    assert len(h.tensors) == 2 + 34 * 13  # no output.weight
    assert h.architecture == "gemma3"
    md = h.metadata
    assert md["gemma3.attention.head_count"] == 8
    assert md["gemma3.attention.head_count_kv"] == 4
    assert md["gemma3.attention.key_length"] == 256
    assert md["gemma3.attention.sliding_window"] == 1024
    assert md["gemma3.context_length"] == 131072
    assert md["gemma3.rope.scaling.type"] == "linear"
    assert not any(t.name.startswith(("v.", "mm.")) for t in h.tensors)


def test_gpt_oss_20b(tmp_path):
    h = read_hf_config(_write(tmp_path, GPT_OSS_20B))
    # embeddings 2880*201088 = 579,133,440, twice = 1,158,266,880
    # per layer: q 2880*4096 + 4096; k, v 2880*512 + 512 each; o 4096*2880 + 2880;
    #            sinks 64 -> 26,550,144; 2 norms 5,760; router 2880*32 + 32 = 92,192;
    #            experts gate+up 2*32*2880*2880 = 530,841,600 (+ bias 2*32*2880),
    #            down 32*2880*2880 = 265,420,800 (+ bias 32*2880) -> 796,538,880
    #            -> 823,186,976; * 24 = 19,756,487,424
    # output_norm 2,880 -> 20,914,757,184 (OpenAI: 20.91B)
    assert h.n_params == 20_914_757_184
    assert len(h.tensors) == 3 + 24 * 19  # 459, as in the published GGUF
    md = h.metadata
    assert md["gpt-oss.expert_count"] == 32
    assert md["gpt-oss.expert_used_count"] == 4
    assert md["gpt-oss.attention.sliding_window"] == 128
    assert md["gpt-oss.rope.scaling.type"] == "yarn"
    types = {t.name: ggml_type(t.ggml_type).name for t in h.tensors}
    assert types["blk.0.ffn_down_exps.weight"] == "MXFP4"  # kept as published
    assert types["blk.0.ffn_down_exps.bias"] == "F32"
    assert types["blk.0.attn_sinks.weight"] == "F32"
    # MXFP4_MOE keeps the experts, the rest becomes Q8_0; other mixes re-quantize them
    assert not predict_quant(h, "MXFP4_MOE").notes[:-1]
    assert "--allow-requantize" in predict_quant(h, "Q4_K_M").notes[0]


def test_qwen3_next_80b_a3b(tmp_path):
    h = read_hf_config(_write(tmp_path, QWEN3_NEXT_80B_A3B))
    # 48 layers: every 4th full attention (12), the rest gated delta net (36); plus one
    # multi-token-prediction block (the converter keeps it by default).
    #   both: attn_norm + post_attention_norm 4,096
    #         MoE: router 2048*512 = 1,048,576; experts 3*512*2048*512 = 1,610,612,736;
    #              shared-expert gate 2,048; shared expert 3*2048*512 = 3,145,728
    #              -> 1,614,809,088
    #   linear: qkv 2048*(2*16*128 + 32*128) = 16,777,216; gate 2048*4096 = 8,388,608;
    #           conv 4*8192 = 32,768; dt 32; A 32; beta/alpha 2048*64 = 131,072;
    #           norm 128; out 4096*2048 = 8,388,608 -> 33,718,464
    #           layer 1,648,531,648 * 36 = 59,347,139,328
    #   full:   q (with output gate) 2048*8192 = 16,777,216; k, v 2048*512 each;
    #           o 4096*2048 = 8,388,608; q/k norms 2*256 -> 27,263,488
    #           layer 1,642,076,672 * 12 = 19,704,920,064
    #   MTP:    a full layer + eh_proj 4096*2048 = 8,388,608 + 3 norms 6,144
    #           = 1,650,471,424
    #   embeddings 2 * 2048*151936 = 622,329,856; output_norm 2,048
    #   -> 81,324,862,720 (79,674,391,296 without the MTP block)
    assert h.n_params == 81_324_862_720
    assert read_hf_config(_write(tmp_path, QWEN3_NEXT_80B_A3B, "nomtp"),
                          mtp=False).n_params == 79_674_391_296
    # tensors: 3 global; every layer 2 norms + 8 MoE (router, 3 experts, shared gate and 3
    # shared); linear + 8 (qkv, gate, conv, dt, A, ba, norm, out) = 18; full + 6 (q, k, v, o,
    # q/k norms) = 16; MTP 16 + 4 -> 3 + 36*18 + 12*16 + 20 = 863
    assert len(h.tensors) == 3 + 36 * 18 + 12 * 16 + 20
    md = h.metadata
    assert md["qwen3next.block_count"] == 49
    assert md["qwen3next.nextn_predict_layers"] == 1
    assert md["qwen3next.ssm.conv_kernel"] == 4
    assert md["qwen3next.ssm.state_size"] == 128
    assert md["qwen3next.ssm.group_count"] == 16
    assert md["qwen3next.ssm.time_step_rank"] == 32
    assert md["qwen3next.ssm.inner_size"] == 4096
    assert md["qwen3next.full_attention_interval"] == 4
    assert md["qwen3next.rope.dimension_count"] == 64
    assert md["qwen3next.expert_shared_feed_forward_length"] == 512
    names = {t.name for t in h.tensors}
    assert "blk.0.ssm_ba.weight" in names and "blk.3.attn_v.weight" in names
    assert "blk.48.nextn.eh_proj.weight" in names


def test_qwen35_moe_hybrid(tmp_path):
    h = read_hf_config(_write(tmp_path, QWEN35_35B_A3B))
    # 40 layers (30 gated delta net, 10 full attention) + 1 MTP block
    #   MoE: router 2048*256 = 524,288; experts 3*256*2048*512 = 805,306,368;
    #        shared gate 2,048; shared expert 3,145,728 -> 808,978,432
    #   linear layer: 4,096 + 33,718,464 (beta and alpha split, same size as Next's ba)
    #                 + 808,978,432 = 842,700,992; * 30 = 25,281,029,760
    #   full layer:   4,096 + 27,263,488 + 808,978,432 = 836,246,016; * 10 = 8,362,460,160
    #   MTP:          836,246,016 + 8,388,608 + 6,144 = 844,640,768
    #   embeddings 2 * 2048*248320 = 1,017,118,720; output_norm 2,048
    #   -> 35,505,251,456
    assert h.n_params == 35_505_251_456
    # as Qwen3-Next but beta and alpha are two tensors: 3 + 30*19 + 10*16 + 20 = 753
    assert len(h.tensors) == 3 + 30 * 19 + 10 * 16 + 20
    md = h.metadata
    assert h.architecture == "qwen35moe"
    assert md["qwen35moe.block_count"] == 41
    assert md["qwen35moe.rope.dimension_sections"] == [11, 11, 10, 0]
    assert md["qwen35moe.attention.recurrent_layers"][:4] == [True, True, True, False]
    assert len(md["qwen35moe.attention.recurrent_layers"]) == 41
    names = {t.name for t in h.tensors}
    assert {"blk.0.ssm_beta.weight", "blk.0.ssm_alpha.weight"} <= names


def test_index_json_decides_tying_and_mtp(tmp_path):
    cfg = dict(QWEN3_NEXT_80B_A3B)
    folder = _write(tmp_path, cfg)
    weights = {"model.embed_tokens.weight": "a", "model.layers.0.input_layernorm.weight": "a"}
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": 123}, "weight_map": weights}))
    h = read_hf_config(folder)
    # no lm_head.weight -> tied; no mtp.* tensors -> no MTP block
    assert "output.weight" not in {t.name for t in h.tensors}
    assert "qwen3next.nextn_predict_layers" not in h.metadata
    assert h.source_bytes == 123


def test_tokenizer_json_sizes_the_header(tmp_path):
    cfg = dict(QWEN3_30B_A3B, vocab_size=300)
    folder = _write(tmp_path, cfg)
    guessed = read_hf_config(folder).header_bytes
    vocab = {f"tok{i}": i for i in range(298)}
    (folder / "tokenizer.json").write_text(json.dumps(
        {"model": {"vocab": vocab, "merges": ["t o", "to k"]},
         "added_tokens": [{"id": 298, "content": "<|im_start|>"},
                          {"id": 299, "content": "<|im_end|>"}]}))
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": "x" * 100}))
    counted = read_hf_config(folder)
    tokens = sum(8 + len(f"tok{i}") for i in range(298)) + 8 + 12 + 8 + 10
    merges = (8 + 3) + (8 + 4)
    template = 8 + len("tokenizer.chat_template") + 4 + 8 + 100
    base = guessed - int(300 * 16.7) - int(300 * 18.3) - 4096
    assert counted.header_bytes == base + tokens + merges + template
    assert "tokenizer.json" in counted.notes[-1]


def test_unknown_model_type_names_file_and_type(tmp_path):
    folder = _write(tmp_path, {"architectures": ["FooForCausalLM"], "model_type": "foo"})
    with pytest.raises(HFConfigError) as err:
        read_hf_config(folder)
    assert str(folder / "config.json") in str(err.value)
    assert "'foo'" in str(err.value)
    with pytest.raises(HFConfigError, match="no such file"):
        read_hf_config(tmp_path / "missing")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(HFConfigError, match="not valid JSON"):
        read_hf_config(tmp_path / "bad.json")


def test_header_like_interface(tmp_path):
    h = read_hf_config(_write(tmp_path, QWEN3_30B_A3B))
    assert h.get("general.architecture") == "qwen3moe"
    assert isinstance(h.metadata["tokenizer.ggml.tokens"], SkippedArray)
    assert h.metadata["tokenizer.ggml.tokens"].length == 151936
    assert all(t.offset == 0 for t in h.tensors)
    assert h.header_estimated


# --------------------------------------------------------------------------------------------
# 3. Published files
# --------------------------------------------------------------------------------------------


def test_llama_31_8b_q4_k_m_matches_the_published_file(tmp_path):
    # Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf as published on Hugging Face (e.g. bartowski's
    # quants): 4.92 GB, 4,920,734,112 bytes.
    pred = predict_quant(read_hf_config(_write(tmp_path, LLAMA_31_8B)), "Q4_K_M")
    assert pred.file_bytes == pytest.approx(4_920_734_112, rel=0.02)
    # In fact the tensor data is exact and only the header is estimated (~7.8 MB of
    # tokenizer, template and general.* keys): the difference is a few KB.
    assert abs(pred.file_bytes - 4_920_734_112) < 100_000
    assert pred.bytes_by_type["Q6_K"] == 1_256_693_760  # output + 16 attn_v + 16 ffn_down


def test_qwen3_30b_a3b_q4_k_m_matches_the_published_file(tmp_path):
    # Qwen3-30B-A3B-Q4_K_M.gguf (Qwen's own GGUF release and unsloth's): listed as 18.6 GB.
    pred = predict_quant(read_hf_config(_write(tmp_path, QWEN3_30B_A3B)), "Q4_K_M")
    assert pred.file_bytes == pytest.approx(18.6e9, rel=0.02)
