"""The synthetic-twin writer: valid random blocks for every type, a tokenizer of any size,
streaming GGUF output, and twins that a real llama.cpp server loads, runs and plans exactly."""

from __future__ import annotations

import hashlib
import json
import math
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import gguf
import httpx
import numpy as np
import pytest
from gguf.quants import dequantize

from kurabe.backends.llamacpp import LlamaCppServer
from kurabe.modelfiles.builtin import builtin_model
from kurabe.modelfiles.card import load_model_header
from kurabe.modelfiles.gguf_header import SkippedArray, TensorInfo, read_header
from kurabe.modelfiles.hf_config import read_hf_config
from kurabe.simulator.loadlog import ObservedBuffers, parse_load_log_file
from kurabe.simulator.memory import MemoryPlan, plan_memory
from kurabe.simulator.quantize import QUANT_TYPES, ggml_type, predict_quant
from kurabe.twin import TwinError, TwinResult, is_twin, write_twin
from kurabe.twin.blocks import SUPPORTED_TYPES, BlockPool, _read_scale, random_blocks
from kurabe.twin.gguf_out import read_typed_metadata
from kurabe.twin.tokenizer import CHATML_TEMPLATE, bpe_text, byte_to_unicode, synthesize
from kurabe.twin.values import initial_values, tensor_kind, weight_std

import tiny_models as tm  # tests/ is on sys.path

QT = gguf.GGMLQuantizationType
VT = gguf.GGUFValueType


# --------------------------------------------------------------------------------------------
# Blocks
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("qtype", SUPPORTED_TYPES, ids=lambda t: t.name)
def test_random_blocks_dequantize_finite_centred_and_at_the_asked_scale(qtype):
    rng = np.random.default_rng(5)
    for std in (0.02, 0.1):
        blocks = random_blocks(qtype, 1024, rng, std)
        assert blocks.dtype == np.uint8
        assert blocks.shape == (1024, gguf.GGML_QUANT_SIZES[qtype][1])
        values = dequantize(blocks.reshape(-1), qtype).astype(np.float64)
        assert values.size == 1024 * gguf.GGML_QUANT_SIZES[qtype][0]
        assert np.isfinite(values).all()
        assert abs(values.mean()) < 0.05 * std, (qtype.name, values.mean())
        # MXFP4's scale is a power of two: within a factor sqrt(2) of the asked value
        low, high = (0.7, 1.42) if qtype == QT.MXFP4 else (0.93, 1.07)
        assert low * std < values.std() < high * std, (qtype.name, values.std())
        assert np.abs(values).max() < 12 * std  # nothing wild a forward pass could blow up


@pytest.mark.parametrize("qtype", [t for t in SUPPORTED_TYPES
                                   if t not in (QT.F32, QT.F16, QT.BF16, QT.MXFP4)],
                         ids=lambda t: t.name)
def test_block_scales_differ_from_block_to_block(qtype):
    # One fp16 scale for a whole tensor made llama.cpp decode a twin up to 12% slower than the
    # real file (docs/twins.md): the scales spread over a factor of 4, like trained blocks'.
    blocks = random_blocks(qtype, 4096, np.random.default_rng(9), 0.02)
    magnitudes = np.abs(_read_scale(qtype, blocks))
    # (Q6_K's and IQ4_XS's scales are fp16 subnormals, as in real files: fewer steps there)
    assert len(np.unique(magnitudes)) > 200
    assert magnitudes.max() / magnitudes.min() > 3.5
    assert magnitudes.max() / magnitudes.min() < 4.1  # and no further (the fp16 rounding)
    # each block's own spread: the block maxima vary as much
    values = dequantize(blocks.reshape(-1), qtype).reshape(4096, -1)
    peaks = np.abs(values).max(axis=1)
    assert np.percentile(peaks, 90) / np.percentile(peaks, 10) > 2


def test_every_type_the_quantizer_chooses_can_be_written():
    # a layout whose rows hit the fallbacks (rows of 160 and 96 are not multiples of 256)
    layout = tm.model_layout("qwen3moe", n_layers=8, n_embd=256, head_dim=64, n_ff=512,
                             n_expert=8, n_ff_exp=160, pad_vocab_to=512)
    dense = tm.model_layout("qwen3", n_layers=4, n_embd=256, n_ff=96 * 4, head_dim=64,
                            pad_vocab_to=512)
    chosen: set[str] = set()
    for model in (layout, dense):
        header = _header_of(model)
        for ftype in QUANT_TYPES:
            chosen |= {t.type for t in predict_quant(header, ftype).tensors}
    assert {"Q4_K", "Q6_K", "Q5_0", "Q8_0", "MXFP4", "IQ4_XS", "IQ4_NL"} <= chosen
    supported = {t.name for t in SUPPORTED_TYPES}
    assert chosen <= supported, chosen - supported


def test_block_pool_serves_whole_blocks_from_rotating_offsets():
    pools = BlockPool(seed=3, pool_bytes=144 * 100)  # 100 Q4_K blocks
    rng = np.random.default_rng(0)
    chunks = list(pools.chunks(QT.Q4_K, 0.02, 144 * 250, rng))
    data = b"".join(bytes(c) for c in chunks)
    assert len(data) == 144 * 250 and len(chunks) >= 3  # wraps around the pool
    values = dequantize(np.frombuffer(data, dtype=np.uint8), QT.Q4_K)
    assert np.isfinite(values).all() and 0.015 < values.std() < 0.025
    again = b"".join(bytes(c) for c in pools.chunks(QT.Q4_K, 0.02, 144 * 250, rng))
    assert again != data  # another start in the pool for the next tensor
    with pytest.raises(ValueError, match="whole number of Q4_K blocks"):
        list(pools.chunks(QT.Q4_K, 0.02, 100, rng))


def test_starting_values_per_kind_of_tensor():
    rng = np.random.default_rng(0)
    assert (initial_values("blk.0.attn_norm.weight", (64,), rng, 64) == 1).all()
    assert (initial_values("blk.3.ssm_norm.weight", (16,), rng, 64) == 1).all()
    assert (initial_values("rope_freqs.weight", (32,), rng, 64) == 1).all()
    assert (initial_values("blk.0.attn_q.bias", (8,), rng, 64) == 0).all()
    a = initial_values("blk.0.ssm_a", (1000,), rng, 64)
    assert (a <= -0.5).all() and (a >= -1.5).all()
    dt = initial_values("blk.0.ssm_dt.bias", (1000,), rng, 64)
    assert (np.abs(dt) <= 1).all() and dt.std() > 0.3
    assert tensor_kind("blk.0.ssm_dt.bias") == "ssm_dt"
    assert abs(initial_values("blk.0.ssm_conv1d.weight", (4, 500), rng, 64).std() - 0.3) < 0.03
    assert abs(initial_values("token_embd.weight", (300, 256), rng, 256).std() - 1 / 16) < 0.005
    assert abs(initial_values("blk.0.ffn_up.weight", (300, 256), rng, 256).std() - 0.02) < 0.002


# --------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_vocab", [263, 300, 1000, 32768, 151936])
def test_synthesized_vocabulary_has_exactly_the_size_and_builds_every_token(n_vocab):
    t = synthesize(n_vocab, chat_template=CHATML_TEMPLATE)
    assert t.n_vocab == len(t.types) == n_vocab
    assert len(set(t.tokens)) == n_vocab
    assert t.tokens[:256] == [byte_to_unicode()[b] for b in range(256)]
    # every merge joins two tokens into a token (so the merges can build every NORMAL token)
    vocab = set(t.tokens)
    for merge in t.merges:
        a, b = merge.split(" ")
        assert a in vocab and b in vocab and a + b in vocab, merge
    built = {m.replace(" ", "") for m in t.merges}
    normal = {tok for tok, ty in zip(t.tokens, t.types, strict=True) if ty == gguf.TokenType.NORMAL}
    assert normal - built == set(t.tokens[:256])
    assert t.tokens[t.eos_id] == "<|im_end|>" and t.tokens[t.bos_id] == "<|endoftext|>"
    if n_vocab >= 32768:  # room for kana and CJK: one token per character
        assert bpe_text("東") in vocab and bpe_text("の") in vocab


def test_synthesized_vocabulary_takes_the_templates_special_tokens():
    template = ("{% for m in messages %}<|start_header_id|>{{ m.role }}<|end_header_id|>"
                "{{ m.content }}<|eot_id|>{% endfor %}")
    t = synthesize(1000, chat_template=template)
    for special in ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"):
        i = t.tokens.index(special)
        assert t.types[i] == gguf.TokenType.CONTROL
    assert t.tokens[t.eos_id] == "<|eot_id|>"
    gemma = synthesize(1000, chat_template=builtin_model("gemma3-270m").chat_template,
                       add_bos=True)
    assert gemma.tokens[gemma.eos_id] == "<end_of_turn>" and gemma.add_bos
    with pytest.raises(ValueError, match="cannot hold the 256 byte tokens"):
        synthesize(260)


# --------------------------------------------------------------------------------------------
# The file
# --------------------------------------------------------------------------------------------


@dataclass
class _Header:
    path: Path | None
    metadata: dict
    tensors: list


def _header_of(model: tm.TinyModel) -> _Header:
    md = {k: v[0] for k, v in model.metadata.items()}
    return _Header(None, md, [TensorInfo(t.name, t.shape, int(t.ggml_type), 0)
                              for t in model.tensors])


def test_twin_of_a_header_only_file_keeps_shapes_types_and_metadata_types(tmp_path):
    model = tm.model_layout("qwen35moe", n_layers=4, n_embd=256, head_dim=64, n_expert=8,
                            n_ff_exp=256, ssm_d_state=32, pad_vocab_to=6000,
                            metadata_overrides={"qwen35moe.rope.scaling.factor": 2.0,
                                                "general.size_label": "tiny",
                                                "kurabe.test.signed": (-3, VT.INT32),
                                                "kurabe.test.big": (1, VT.UINT64)})
    src = tmp_path / "src.gguf"
    tm.write_header_only(src, model.metadata, model.tensors)
    header = read_header(src)
    assert isinstance(header.metadata["tokenizer.ggml.tokens"], SkippedArray)  # > 4096 items
    seen: list[tuple[int, int]] = []
    result = write_twin(header, tmp_path / "twin.gguf", marks={"kurabe.twin.source": "src"},
                        progress=lambda done, total: seen.append((done, total)))
    assert isinstance(result, TwinResult) and result.n_tensors == len(model.tensors)
    assert not (tmp_path / "twin.gguf.part").exists()
    twin = read_header(result.path)
    assert result.file_bytes == twin.file_bytes == result.path.stat().st_size
    assert [(t.name, t.shape, t.ggml_type) for t in twin.tensors] == [
        (t.name, t.shape, t.ggml_type) for t in header.tensors]
    # data: header padded to 32, then each tensor padded to 32
    data = sum(-(-tm.TensorSpec(t.name, t.shape, QT(t.ggml_type)).n_bytes // 32) * 32
               for t in twin.tensors)
    assert twin.file_bytes == -(-twin.header_bytes // 32) * 32 + data
    # the model's own keys and value types; the vocabulary (read back from the file) reused
    typed_src, typed_twin = read_typed_metadata(src), read_typed_metadata(result.path)
    for key, (value, vtype, sub) in typed_src.items():
        if key != "general.name":
            assert typed_twin[key] == (value, vtype, sub), key
    assert typed_twin["general.name"][0] == "twin of tiny-qwen35moe"
    assert typed_twin["kurabe.twin"] == (True, VT.BOOL, None)
    assert typed_twin["kurabe.twin.source"] == ("src", VT.STRING, None)
    assert typed_twin["tokenizer.chat_template"][0] == CHATML_TEMPLATE
    assert is_twin(twin) and not is_twin(header)
    # progress: from the header to the whole file, never backwards
    assert seen[0][0] > 0 and seen[-1] == (result.file_bytes, result.file_bytes)
    assert all(a[0] <= b[0] for a, b in zip(seen, seen[1:], strict=False))


def test_twin_data_is_valid_per_kind_and_seeded(tmp_path):
    model = tm.model_layout("qwen3next", n_layers=4, n_embd=256, head_dim=64, n_expert=8,
                            n_ff_exp=256, ssm_d_state=32, pad_vocab_to=512)
    header = _header_of(model)
    types = {t.name: (QT.Q4_K if t.name.endswith("exps.weight") else QT.Q8_0)
             for t in model.tensors if len(t.shape) > 1 and "ssm_conv1d" not in t.name
             and "gate_inp" not in t.name}
    a = write_twin(header, tmp_path / "a.gguf", types=types, seed=1)
    b = write_twin(header, tmp_path / "b.gguf", types=types, seed=1)
    c = write_twin(header, tmp_path / "c.gguf", types=types, seed=2)
    digest = [hashlib.sha256(p.path.read_bytes()).hexdigest() for p in (a, b, c)]
    assert digest[0] == digest[1] != digest[2]
    reader = gguf.GGUFReader(a.path)
    # named after the layers' main type, as llama-quantize names a mix
    assert reader.fields["general.file_type"].contents() == gguf.LlamaFileType.MOSTLY_Q4_K_M
    assert reader.fields["general.quantization_version"].contents() == 2
    for t in reader.tensors:
        values = dequantize(t.data, t.tensor_type).astype(np.float64)
        assert np.isfinite(values).all(), t.name
        kind = tensor_kind(t.name)
        if kind == "norm":
            assert (values == 1).all(), t.name
        elif kind == "ssm_a":
            assert (values < 0).all()
        elif t.name in types:
            assert t.tensor_type == types[t.name]
            std = weight_std(kind, 256)
            assert 0.8 * std < values.std() < 1.2 * std, t.name


def test_file_type_names_the_mix(tmp_path):
    model = tm.model_layout("llama", n_layers=2, n_embd=256, head_dim=64, n_ff=512,
                            pad_vocab_to=512)
    types = {t.name: int(QT.Q5_K) for t in model.tensors if len(t.shape) > 1}

    def file_type(header) -> int:
        path = write_twin(header, tmp_path / "t.gguf", types=types).path
        return read_typed_metadata(path)["general.file_type"][0]

    header = _header_of(model)  # states F16 (1): not this mix
    assert file_type(header) == gguf.LlamaFileType.MOSTLY_Q5_K_M
    header.metadata["general.file_type"] = int(gguf.LlamaFileType.MOSTLY_Q5_K_S)
    assert file_type(header) == gguf.LlamaFileType.MOSTLY_Q5_K_S  # names the mix: kept
    assert read_typed_metadata(write_twin(
        header, tmp_path / "m.gguf", types=types, marks={"general.file_type": 17}).path
    )["general.file_type"][0] == 17
    # Gemma-3-270M at Q4_K_M: its 640-wide rows fall back to Q5_0, which then holds more
    # bytes than Q4_K; the mix still holds Q4_K matrices, so the stated Q4_K_M is kept.
    gemma_like = {name: int(QT.Q5_0) if i % 3 else int(QT.Q4_K)
                  for i, name in enumerate(types)}
    header.metadata["general.file_type"] = int(gguf.LlamaFileType.MOSTLY_Q4_K_M)
    kept = write_twin(header, tmp_path / "g.gguf", types=gemma_like).path
    assert read_typed_metadata(kept)["general.file_type"][0] == gguf.LlamaFileType.MOSTLY_Q4_K_M
    header.metadata["general.file_type"] = int(gguf.LlamaFileType.MOSTLY_Q8_0)  # not held
    renamed = write_twin(header, tmp_path / "r.gguf", types=gemma_like).path
    assert read_typed_metadata(renamed)["general.file_type"][0] == gguf.LlamaFileType.MOSTLY_Q5_0


def test_a_big_tensor_is_streamed_not_built_in_memory(tmp_path):
    # 2 x 96 MiB of F16 weights: the writer's memory stays at its pool size
    header = _Header(None, {"general.architecture": "llama", "llama.embedding_length": 4096,
                            "llama.block_count": 1},
                     [TensorInfo("token_embd.weight", (4096, 12288), int(QT.F16), 0),
                      TensorInfo("blk.0.ffn_up.weight", (4096, 12288), int(QT.F16), 0)])
    tracemalloc.start()
    try:
        result = write_twin(header, tmp_path / "big.gguf")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.file_bytes > 2 * 96 * 2**20
    assert peak < 48 * 2**20, peak / 2**20
    row = gguf.GGUFReader(result.path).tensors[1].data[:4]
    assert np.isfinite(row).all() and row.std() > 0


def test_write_errors_are_one_line_and_leave_no_file(tmp_path):
    model = tm.model_layout("llama", n_embd=96)
    header = _header_of(model)
    out = tmp_path / "twin.gguf"
    with pytest.raises(TwinError, match=r"tensor blk\.0\.attn_q\.weight: a row of 96 does "
                                        r"not split into Q4_K blocks of 256"):
        write_twin(header, out, types={"blk.0.attn_q.weight": int(QT.Q4_K)})
    with pytest.raises(TwinError, match="types given for tensors the model does not have: "
                                        "nope.weight"):
        write_twin(header, out, types={"nope.weight": int(QT.Q8_0)})
    with pytest.raises(TwinError, match=r"blk\.0\.attn_norm\.weight: its starting values "
                                        r"\(norm\) need a float type, not Q8_0"):
        write_twin(_header_of(tm.model_layout("llama", n_embd=64)), out,
                   types={"blk.0.attn_norm.weight": int(QT.Q8_0)})
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------
# Real llama.cpp loads
# --------------------------------------------------------------------------------------------

SMALL_CONFIGS = {
    "qwen3moe": {
        "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe",
        "hidden_size": 256, "intermediate_size": 512, "moe_intermediate_size": 256,
        "num_experts": 16, "num_experts_per_tok": 4, "num_hidden_layers": 4,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64,
        "max_position_embeddings": 4096, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
        "tie_word_embeddings": False, "vocab_size": 4096},
    "qwen35moe": {
        "architectures": ["Qwen3_5MoeForConditionalGeneration"], "model_type": "qwen3_5_moe",
        "tie_word_embeddings": False,
        "text_config": {"model_type": "qwen3_5_moe_text", "hidden_size": 256,
                        "moe_intermediate_size": 256, "shared_expert_intermediate_size": 256,
                        "num_experts": 16, "num_experts_per_tok": 4, "num_hidden_layers": 4,
                        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64,
                        "linear_conv_kernel_dim": 4, "linear_key_head_dim": 32,
                        "linear_value_head_dim": 32, "linear_num_key_heads": 4,
                        "linear_num_value_heads": 8, "full_attention_interval": 4,
                        "layer_types": ["linear_attention"] * 3 + ["full_attention"],
                        "max_position_embeddings": 4096, "rms_norm_eps": 1e-6,
                        "vocab_size": 4096,
                        "rope_parameters": {"rope_theta": 10000000.0,
                                            "partial_rotary_factor": 0.25}}},
}


@dataclass
class TwinLoad:
    source_plan: MemoryPlan | None
    plan: MemoryPlan
    obs: ObservedBuffers
    completion: dict
    chat: dict
    twin: TwinResult
    source_tokens: list | None


CTX = 1024


def _serve(name: str, path: Path, log_dir: Path, chat_template: str | None
           ) -> tuple[ObservedBuffers, dict, dict]:
    log = log_dir / f"{name}.log"
    server = LlamaCppServer(name, path, ctx=CTX, log_path=log, chat_template=chat_template,
                            startup_timeout_s=120)
    server.start()
    try:
        url = f"http://127.0.0.1:{server.port}"
        completion = httpx.post(url + "/completion", timeout=120, json={
            "prompt": "日本の首都はどこですか。The capital of Japan is", "n_predict": 12,
            "n_probs": 5, "temperature": 0, "cache_prompt": False}).json()
        chat = httpx.post(url + "/v1/chat/completions", timeout=120, json={
            "messages": [{"role": "user", "content": "こんにちは"}], "max_tokens": 8}).json()
    finally:
        server.stop()
    return parse_load_log_file(log), completion, chat


@pytest.fixture(scope="module")
def twin_loads(tmp_path_factory) -> dict[str, TwinLoad]:
    work = tmp_path_factory.mktemp("twins")
    jobs = []
    for spec in ("builtin:smollm2-135m", "builtin:gemma3-270m"):
        header, _ = load_model_header(spec)
        name = spec.removeprefix("builtin:")
        template = builtin_model(name).chat_template
        twin = write_twin(header, work / f"{name}-twin.gguf", chat_template=template)
        tokens = read_typed_metadata(header.path)["tokenizer.ggml.tokens"][0]
        source_plan = plan_memory(header, ctx=CTX, gpu=False)
        jobs.append((name, twin, template, source_plan, tokens))
    for name, config in SMALL_CONFIGS.items():
        folder = work / name
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(config))
        header = read_hf_config(folder)
        types = {t.name: ggml_type(t.type).id for t in predict_quant(header, "Q4_K_M").tensors}
        twin = write_twin(header, work / f"{name}-Q4_K_M-twin.gguf", types=types)
        jobs.append((name, twin, None, None, None))
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(_serve, name, twin.path, work, template)
                   for name, twin, template, _, _ in jobs]
        out = {}
        for (name, twin, _, source_plan, tokens), future in zip(jobs, futures, strict=True):
            obs, completion, chat = future.result()
            plan = plan_memory(read_header(twin.path), ctx=CTX, gpu=False)
            out[name] = TwinLoad(source_plan, plan, obs, completion, chat, twin, tokens)
    return out


def _close(planned: int, logged: int, obs: ObservedBuffers) -> bool:
    return abs(planned - logged) <= max(0.001 * logged, obs.tolerance(1))


def _logprobs(completion: dict) -> list:
    found = []

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("logprob", "prob"):
                    found.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(completion.get("completion_probabilities") or completion.get("probs") or [])
    return found


@pytest.mark.engine
@pytest.mark.parametrize("name", ["smollm2-135m", "gemma3-270m", *SMALL_CONFIGS])
def test_twin_loads_generates_finite_numbers_and_matches_the_plan(twin_loads, name):
    load = twin_loads[name]
    obs, plan = load.obs, load.plan
    assert obs.errors == [], obs.errors
    # generation: text came out, every probability is a finite number
    completion = load.completion
    n_tokens = completion.get("tokens_predicted", 0)
    assert n_tokens >= 1 and isinstance(completion["content"], str), completion
    probs = _logprobs(completion)
    assert len(probs) >= n_tokens * 5, completion
    assert all(isinstance(p, (int, float)) and math.isfinite(p) for p in probs), probs[:20]
    assert load.chat["choices"][0]["message"]["role"] == "assistant"
    assert load.chat["usage"]["completion_tokens"] >= 1
    # memory: the buffers llama.cpp logged are the planner's
    assert _close(plan.model_host_bytes, obs.model_buffers["CPU_Mapped"], obs)
    assert _close(plan.model_repack_bytes, obs.model_buffers.get("CPU_REPACK", 0), obs)
    assert _close(plan.kv_bytes, obs.kv_bytes, obs)
    assert _close(plan.recurrent_bytes, obs.recurrent_bytes, obs)
    assert _close(plan.output_bytes, obs.output_bytes, obs)
    if load.source_plan is not None:  # a twin of a real file: the real model's plan
        assert (plan.model_host_bytes, plan.model_repack_bytes, plan.kv_bytes) == (
            load.source_plan.model_host_bytes, load.source_plan.model_repack_bytes,
            load.source_plan.kv_bytes)
        twin_tokens = read_typed_metadata(load.twin.path)["tokenizer.ggml.tokens"][0]
        assert twin_tokens == load.source_tokens  # the model's own vocabulary


@pytest.mark.engine
def test_config_twin_has_the_predicted_quant_mix(twin_loads):
    load = twin_loads["qwen35moe"]
    twin = read_header(load.twin.path)
    assert is_twin(twin)
    mix = {ggml_type(t.ggml_type).name for t in twin.tensors}
    assert {"Q4_K", "Q6_K", "F32"} <= mix
    assert load.obs.recurrent_bytes > 0  # the gated-delta-net state of the hybrid
