"""Memory plans: layout rules, hand-worked arithmetic at 30B scale, and real llama.cpp loads.

Three kinds of checks:

* unit tests of the layout and plan rules on small header-only files (no server);
* header-only files with the real tensor lists of a 30B-class MoE and an 80B hybrid, whose
  KV / recurrent / weight sizes are worked out by hand in the test;
* real loads: a llama.cpp server from the xllamacpp wheel is started (once per setting,
  stopped straight after loading), its ``-lv 4`` log is parsed with
  :mod:`kurabe.simulator.loadlog`, and the plan must match every buffer: weights, KV, recurrent
  state and output within max(0.1 %, 0.005 MiB) - the log prints MiB with two decimals, so a
  figure is only known to within half its 0.01 MiB step - and the compute buffer, the
  planner's replay of ggml's graph allocator, to the MiB.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import gguf
import pytest

from kurabe.backends.llamacpp import LlamaCppServer
from kurabe.modelfiles.builtin import builtin_path
from kurabe.modelfiles.gguf_header import read_header
from kurabe.simulator.layout import FULL, NONE, RECURRENT, SWA, derive_layout
from kurabe.simulator.loadlog import MIB, ObservedBuffers, parse_load_log_file
from kurabe.simulator.memory import MemoryPlan, PlanError, plan_memory, row_bytes, tensor_bytes

import tiny_models as tm  # tests/ is on sys.path
from conftest import run_kurabe

QT = gguf.GGMLQuantizationType
GIB = 1024 * MIB
Q4_K = 144 / 256  # bytes per element: 256-element blocks of 144 bytes
Q6_K = 210 / 256


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def header_file(tmp_path: Path, name: str, metadata: dict, tensors) -> object:
    """A header-only GGUF (metadata + tensor infos, no data) read back with read_header."""
    path = tmp_path / f"{name}.gguf"
    tm.write_header_only(path, metadata, tensors)
    return read_header(path)


def tiny_header(tmp_path: Path, arch: str, name: str | None = None, **layout):
    model = tm.model_layout(arch, **layout)
    return header_file(tmp_path, name or arch, model.metadata, model.tensors), model


def synthetic(tmp_path: Path, arch: str, keys: dict, tensors=(), n_vocab: int = 300):
    """A header for an architecture tiny_models does not write: keys are relative to arch."""
    md = {"general.architecture": arch, f"{arch}.context_length": 8192,
          "tokenizer.ggml.tokens": [f"t{i}" for i in range(n_vocab)]}
    md.update({f"{arch}.{k}": v for k, v in keys.items()})
    e = keys.get("embedding_length", 256)
    base = [("token_embd.weight", (e, n_vocab), "F16"), ("output_norm.weight", (e,), "F32"),
            ("output.weight", (e, n_vocab), "F16")]
    return header_file(tmp_path, arch.replace("-", "_"), md, [*base, *tensors])


# --------------------------------------------------------------------------------------------
# Type sizes
# --------------------------------------------------------------------------------------------


def test_cache_and_weight_type_sizes_follow_ggml_blocks():
    # 512 K/V values per token: f16 2 bytes each; q8_0 32-value blocks of 34 bytes (34/32
    # bytes per value, not 1.0); q4_0 and iq4_nl 18/32; q5_0 22/32; q5_1 24/32; q4_1 20/32.
    assert row_bytes("f16", 512) == 1024
    assert row_bytes("f32", 512) == 2048
    assert row_bytes("q8_0", 512) == 512 // 32 * 34 == 544
    assert row_bytes("q4_0", 512) == row_bytes("iq4_nl", 512) == 288
    assert row_bytes("q5_0", 512) == 352 and row_bytes("q5_1", 512) == 384
    assert row_bytes("q4_1", 512) == 320
    # weights: elements / block * block bytes (Q4_K 144/256, Q6_K 210/256, MXFP4 17/32)
    assert tensor_bytes((2048, 4096), QT.Q4_K) == 2048 * 4096 * 144 // 256
    assert tensor_bytes((768, 2048, 128), QT.Q6_K) == 768 * 2048 * 128 * 210 // 256
    assert tensor_bytes((2880, 64), QT.MXFP4) == 2880 * 64 * 17 // 32
    with pytest.raises(PlanError):
        row_bytes("q8_0", 100)  # not a whole number of 32-value blocks


# --------------------------------------------------------------------------------------------
# Layout rules
# --------------------------------------------------------------------------------------------


def test_layout_of_the_builtin_models(smollm2_path, gemma_path):
    smol = derive_layout(read_header(smollm2_path).metadata)
    assert (smol.arch, smol.n_layer, smol.n_embd, smol.n_vocab) == ("llama", 30, 576, 49152)
    assert smol.sliding_window is None and smol.recurrent is None and smol.experts is None
    first = smol.layers[0]
    assert (first.kind, first.n_head, first.n_head_kv, first.head_dim_k) == (FULL, 9, 3, 64)
    assert first.k_row_elements == 192  # 3 KV heads x 64
    assert smol.unknown == []

    gemma = derive_layout(read_header(gemma_path).metadata)
    # Gemma 3: 512-token window on 5 of every 6 layers (the 6th, 12th, 18th are global);
    # head size 256 from attention.key_length, not n_embd / n_head = 160.
    assert gemma.sliding_window.window_tokens == 512
    assert gemma.full_layers == [5, 11, 17]
    assert len(gemma.swa_layers) == 15
    assert gemma.layers[0].head_dim_k == 256 and gemma.layers[0].n_head_kv == 1
    assert gemma.layers[0].kind == SWA and gemma.layers[5].kind == FULL


def test_per_layer_head_counts_are_read_for_every_layer(tmp_path):
    header, _ = tiny_header(tmp_path, "deci", n_head_kv=[2, 0, 4], head_dim=32)
    layout = derive_layout(header.metadata)
    assert [ly.n_head_kv for ly in layout.layers] == [2, 0, 4]  # not [2, 2, 2]
    assert [ly.k_row_elements for ly in layout.layers] == [64, 0, 128]
    # a zero-head block still gets an (empty) K/V pair in llama.cpp
    assert layout.kv_layers == [0, 1, 2]


def test_gemma3_sliding_window_pattern_forms(tmp_path):
    scalar, _ = tiny_header(tmp_path, "gemma3", "g_scalar", n_layers=6, swa_pattern=3)
    assert derive_layout(scalar.metadata).full_layers == [2, 5]  # every 3rd layer global
    flags = [True, False, True, True, False, True]
    array, _ = tiny_header(tmp_path, "gemma3", "g_array", n_layers=6, swa_pattern=flags)
    assert derive_layout(array.metadata).swa_layers == [0, 2, 3, 5]
    none, _ = tiny_header(tmp_path, "gemma3", "g_none", n_layers=6, sliding_window=0)
    layout = derive_layout(none.metadata)
    assert layout.sliding_window is None and layout.swa_layers == []


def test_hybrid_recurrent_layers_and_state_sizes(tmp_path):
    header, model = tiny_header(tmp_path, "qwen35moe", n_layers=8, ssm_d_state=32,
                                ssm_dt_rank=8, ssm_n_group=4)
    layout = derive_layout(header.metadata)
    # every 4th layer is full attention, the other 3 of 4 are gated delta nets
    assert layout.kv_layers == [3, 7]
    assert layout.recurrent_layers == [0, 1, 2, 4, 5, 6]
    assert [ly.kind for ly in layout.layers[:4]] == [RECURRENT] * 3 + [FULL]
    rec = layout.recurrent
    # conv: (d_conv - 1) * (d_inner + 2 * n_group * d_state) = 3 * (256 + 256)
    # ssm:  d_state * d_inner = 32 * 256
    assert (rec.d_inner, rec.conv_floats_per_seq, rec.ssm_floats_per_seq) == (256, 1536, 8192)
    assert (rec.conv_floats_per_seq, rec.ssm_floats_per_seq) == model.recurrent_state_floats()
    assert layout.experts.n_expert == 8 and layout.experts.n_expert_used == 2

    explicit = dict(model.metadata)
    explicit["qwen35moe.attention.recurrent_layers"] = (
        [True, False] * 4, gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.BOOL)
    header2 = header_file(tmp_path, "q35_explicit", explicit, model.tensors)
    assert derive_layout(header2.metadata).kv_layers == [1, 3, 5, 7]


def test_other_architectures_layout_rules(tmp_path):
    # Jamba / LFM2: a layer is recurrent exactly when its head_count_kv is 0.
    jamba = derive_layout(synthetic(tmp_path, "jamba", {
        "block_count": 4, "embedding_length": 256, "attention.head_count": 4,
        "attention.head_count_kv": [0, 0, 2, 0], "ssm.conv_kernel": 4, "ssm.inner_size": 512,
        "ssm.state_size": 16, "ssm.time_step_rank": 16}).metadata)
    assert jamba.kv_layers == [2] and jamba.recurrent_layers == [0, 1, 3]
    assert jamba.recurrent.conv_floats_per_seq == 3 * 512  # no groups: (4-1) * d_inner
    assert jamba.recurrent.ssm_floats_per_seq == 16 * 512
    lfm2 = derive_layout(synthetic(tmp_path, "lfm2", {
        "block_count": 4, "embedding_length": 256, "attention.head_count": 4,
        "attention.head_count_kv": [0, 2, 0, 2], "shortconv.l_cache": 3}).metadata)
    assert lfm2.recurrent_layers == [0, 2]
    assert lfm2.recurrent.conv_floats_per_seq == 256 * 2  # n_embd * (l_cache - 1)
    # Falcon-H1: every layer has both attention KV and an SSM state.
    fh1 = derive_layout(synthetic(tmp_path, "falcon-h1", {
        "block_count": 2, "embedding_length": 256, "attention.head_count": 4,
        "attention.head_count_kv": 2, "ssm.conv_kernel": 4, "ssm.inner_size": 512,
        "ssm.state_size": 16, "ssm.time_step_rank": 8, "ssm.group_count": 1}).metadata)
    assert fh1.kv_layers == [0, 1] and fh1.recurrent_layers == [0, 1]
    # Nemotron-H: SSM, attention and FFN-only blocks (the last hold no cache at all).
    nemo = derive_layout(synthetic(tmp_path, "nemotron_h", {
        "block_count": 4, "embedding_length": 256, "attention.head_count": 4,
        "attention.head_count_kv": [0, 2, 0, 0], "feed_forward_length": [0, 0, 512, 0],
        "ssm.conv_kernel": 4, "ssm.inner_size": 512, "ssm.state_size": 64,
        "ssm.time_step_rank": 8, "ssm.group_count": 2}).metadata)
    assert [ly.kind for ly in nemo.layers] == [RECURRENT, FULL, NONE, RECURRENT]
    # Mamba-2: all layers recurrent, conv over d_inner + 2 * n_group * d_state channels.
    mamba = derive_layout(synthetic(tmp_path, "mamba2", {
        "block_count": 2, "embedding_length": 256, "ssm.conv_kernel": 4,
        "ssm.inner_size": 512, "ssm.state_size": 64, "ssm.time_step_rank": 8,
        "ssm.group_count": 1}).metadata)
    assert mamba.recurrent_layers == [0, 1] and mamba.kv_layers == []
    assert mamba.recurrent.conv_floats_per_seq == 3 * (512 + 2 * 64)
    # gpt-oss: every other layer slides (even ones); llama4: 3 chunked of 4, 8192 tokens.
    oss = derive_layout(synthetic(tmp_path, "gpt-oss", {
        "block_count": 4, "embedding_length": 256, "attention.head_count": 4,
        "attention.head_count_kv": 2, "attention.sliding_window": 128}).metadata)
    assert oss.swa_layers == [0, 2] and oss.sliding_window.window_tokens == 128
    llama4 = derive_layout(synthetic(tmp_path, "llama4", {
        "block_count": 8, "embedding_length": 256, "attention.head_count": 4}).metadata)
    assert llama4.full_layers == [3, 7] and llama4.sliding_window.kind == "chunked"
    # DeepSeek-style MLA: one latent K row of kv_lora_rank + rope dims, no V.
    ds = derive_layout(synthetic(tmp_path, "deepseek2", {
        "block_count": 2, "embedding_length": 256, "attention.head_count": 4,
        "attention.head_count_kv": 1, "attention.key_length": 576,
        "attention.value_length": 512, "attention.key_length_mla": 192,
        "attention.value_length_mla": 128, "attention.kv_lora_rank": 512,
        "rope.dimension_count": 64, "expert_count": 8, "expert_used_count": 2,
        "expert_shared_count": 1, "leading_dense_block_count": 1}).metadata)
    assert ds.mla.cache_k_elements_per_token == 576
    assert ds.layers[0].k_row_elements == 576 and ds.layers[0].v_row_elements == 0
    assert ds.experts.n_expert_shared == 1 and ds.experts.leading_dense_layers == 1
    # multi-token-prediction blocks sit after the trunk and are not run (no KV)
    glm = derive_layout(synthetic(tmp_path, "glm4moe", {
        "block_count": 3, "nextn_predict_layers": 1, "embedding_length": 256,
        "attention.head_count": 4, "attention.head_count_kv": 2}).metadata)
    assert (glm.n_layer, glm.n_layer_nextn, glm.kv_layers) == (2, 1, [0, 1])


def test_unknown_architecture_gets_generic_fields_and_says_what_it_does_not_know(tmp_path):
    header = synthetic(tmp_path, "mystery", {
        "block_count": 3, "embedding_length": 256, "attention.head_count": 8,
        "attention.head_count_kv": [2, 4, 2], "feed_forward_length": 512,
        "attention.sliding_window": 128, "expert_count": 4, "expert_used_count": 2})
    layout = derive_layout(header.metadata)
    assert not layout.known_arch
    assert layout.n_layer == 3 and layout.n_embd == 256 and layout.n_vocab == 300
    assert [ly.n_head_kv for ly in layout.layers] == [2, 4, 2]
    assert layout.layers[0].head_dim_k == 32  # n_embd / n_head
    assert layout.experts.n_expert == 4
    assert any("not known" in u for u in layout.unknown)
    assert any("sliding_window" in u for u in layout.unknown)
    plan = plan_memory(header, ctx=1024, gpu=False)  # still plans, with the generic rules
    assert plan.kv_bytes == 2 * 1024 * (2 + 4 + 2) * 32 * 2
    assert any("not known" in n for n in plan.notes)


# --------------------------------------------------------------------------------------------
# KV / context rules
# --------------------------------------------------------------------------------------------


def test_context_padding_and_parallel_split(tmp_path):
    header, _ = tiny_header(tmp_path, "llama", head_dim=32, n_head_kv=2)
    # -c 1000 -> 1024 cells; -np 3: 1024/3 = 341 -> 512 per sequence -> n_ctx 1536
    one = plan_memory(header, ctx=1000, gpu=False)
    assert (one.n_ctx, one.n_ctx_seq) == (1024, 1024)
    three = plan_memory(header, ctx=1000, parallel=3, gpu=False)
    assert (three.n_ctx, three.n_ctx_seq) == (1536, 512)
    [cache] = three.kv_detail
    assert (cache.cells, cache.streams) == (512, 3)
    # -np splits the context, it does not multiply it: same KV for 1 and 4 sequences
    a = plan_memory(header, ctx=4096, gpu=False)
    b = plan_memory(header, ctx=4096, parallel=4, gpu=False)
    unified = plan_memory(header, ctx=4096, parallel=4, kv_unified=True, gpu=False)
    per_cell = 2 * 2 * (2 * 32) * 2  # 2 layers x (K + V) x 64 values x 2 bytes
    assert a.kv_bytes == b.kv_bytes == unified.kv_bytes == 4096 * per_cell
    assert unified.kv_detail[0].streams == 1 and unified.kv_detail[0].cells == 4096
    # batch and ubatch are capped by the context
    small = plan_memory(header, ctx=256, batch=2048, ubatch=512, gpu=False)
    assert (small.n_batch, small.n_ubatch) == (256, 256)


def test_sliding_window_cache_size_rule(tmp_path):
    header, _ = tiny_header(tmp_path, "gemma3", n_layers=6, sliding_window=1000)
    # SWA cells = min(n_ctx_seq, pad256(window * (seqs sharing a stream) + ubatch))
    plan = plan_memory(header, ctx=8192, gpu=False)
    assert {d.label: d.cells for d in plan.kv_detail} == {"full": 8192, "swa": 1536}
    # non-unified -np 2: each stream holds one sequence -> 1000 + 512 -> 1536 per stream
    two = plan_memory(header, ctx=8192, parallel=2, gpu=False)
    assert {d.label: (d.cells, d.streams) for d in two.kv_detail} == {
        "full": (4096, 2), "swa": (1536, 2)}
    # unified: the window is needed once per sequence in the one stream: 2000 + 512 -> 2560
    uni = plan_memory(header, ctx=8192, parallel=2, kv_unified=True, gpu=False)
    assert {d.label: d.cells for d in uni.kv_detail} == {"full": 8192, "swa": 2560}
    # never more than the full cache; --swa-full makes it the full size
    assert {d.cells for d in plan_memory(header, ctx=1024, gpu=False).kv_detail} == {1024}
    full = plan_memory(header, ctx=8192, swa_full=True, gpu=False)
    assert {d.cells for d in full.kv_detail} == {8192}


def test_v_rows_padded_without_flash_attention_and_quantized_v_needs_it(tmp_path):
    header, _ = tiny_header(tmp_path, "deci", n_head_kv=[2, 0, 4], head_dim=32)
    fa = plan_memory(header, ctx=1024, flash_attn="on", gpu=False)
    nofa = plan_memory(header, ctx=1024, flash_attn="off", gpu=False)
    k = 1024 * (2 + 0 + 4) * 32 * 2
    assert fa.kv_detail[0].k_bytes == nofa.kv_detail[0].k_bytes == k
    assert fa.kv_detail[0].v_bytes == k
    # transposed V: every layer (even the 0-head one) padded to the widest row, 4 x 32
    assert nofa.kv_detail[0].v_bytes == 3 * 1024 * 4 * 32 * 2
    with pytest.raises(PlanError, match="flash attention"):
        plan_memory(header, ctx=1024, cache_type_v="q8_0", flash_attn="off", gpu=False)
    with pytest.raises(PlanError):
        plan_memory(header, ctx=1024, cache_type_k="q3_k", gpu=False)


def test_mla_cache_holds_only_the_latent(tmp_path):
    header = synthetic(tmp_path, "deepseek2", {
        "block_count": 3, "embedding_length": 256, "attention.head_count": 4,
        "attention.head_count_kv": 1, "attention.key_length": 576,
        "attention.value_length": 512, "attention.key_length_mla": 192,
        "attention.value_length_mla": 128, "attention.kv_lora_rank": 512,
        "rope.dimension_count": 64, "feed_forward_length": 512})
    plan = plan_memory(header, ctx=4096, gpu=False)
    # 3 layers x 4096 cells x (512 latent + 64 rope) x 2 bytes, no V
    assert plan.kv_detail[0].k_bytes == 3 * 4096 * 576 * 2
    assert plan.kv_detail[0].v_bytes == 0


# --------------------------------------------------------------------------------------------
# Placement (-ngl), budgets, serialisation
# --------------------------------------------------------------------------------------------


def test_layer_placement_offloads_the_output_layer_first(tmp_path):
    header, model = tiny_header(tmp_path, "llama", n_layers=4, head_dim=32)
    sizes = {t.name: t.n_bytes for t in model.tensors}
    embd = sizes["token_embd.weight"]
    out = sizes["output.weight"] + sizes["output_norm.weight"]
    layer = sum(v for k, v in sizes.items() if k.startswith("blk.3."))
    total = sum(sizes.values())
    everything = plan_memory(header, ctx=512)
    assert everything.model_host_bytes == embd  # the input embedding always stays on the host
    assert everything.model_device_bytes == total - embd
    assert everything.n_gpu_layers == 5  # 4 blocks + the output layer
    assert everything.kv_host_bytes == 0 and everything.kv_device_bytes == everything.kv_bytes
    none = plan_memory(header, ctx=512, ngl=0)
    assert none.model_host_bytes == total and none.device_bytes == 0
    # -ngl 1 moves only the output layer; -ngl 2 adds the last block
    one = plan_memory(header, ctx=512, ngl=1)
    assert one.model_device_bytes == out
    two = plan_memory(header, ctx=512, ngl=2)
    assert two.model_device_bytes == out + layer
    assert two.kv_device_bytes == two.kv_bytes // 4  # only block 3's KV is on the device
    # a CPU machine keeps everything in host memory whatever -ngl says
    cpu = plan_memory(header, ctx=512, gpu=False)
    assert cpu.device_bytes == 0 and cpu.model_host_bytes == total
    assert plan_memory(header, ctx=512, ngl=3, gpu=False).device_bytes == 0
    # every plan says where its layers went, counted as llama.cpp's "offloaded N/M layers"
    assert [(p.placement, p.gpu_assumed, p.n_layers_offloadable) for p in (
        everything, two, none, cpu)] == [
        ("all 5/5 layers on the GPU", True, 5), ("2/5 layers on the GPU, 3 on the CPU", True, 5),
        ("CPU only: 0/5 layers on the GPU", True, 5), ("CPU only", False, 5)]
    d = cpu.to_dict()
    assert (d["placement"], d["gpu_assumed"], d["n_gpu_layers"], d["n_layers_offloadable"]) == (
        "CPU only", False, 0, 5)
    # tied embeddings: the offloaded output layer gets its own copy of token_embd
    tied, tied_model = tiny_header(tmp_path, "llama", "tied", n_layers=4, head_dim=32,
                                   tie_embeddings=True)
    t_sizes = {t.name: t.n_bytes for t in tied_model.tensors}
    full = plan_memory(tied, ctx=512)
    assert full.model_host_bytes == t_sizes["token_embd.weight"]
    assert full.model_device_bytes == sum(t_sizes.values())  # everything else + the copy


def test_fits_headroom_max_ctx_and_to_dict(tmp_path):
    header, _ = tiny_header(tmp_path, "llama", head_dim=32)
    plan = plan_memory(header, ctx=4096, gpu=False)
    assert plan.fits(plan.total_bytes) and not plan.fits(plan.total_bytes - 1)
    assert plan.headroom(plan.total_bytes + 10) == 10
    assert plan.total_bytes == plan.host_bytes + plan.device_bytes
    assert plan.total_bytes == (plan.model_host_bytes + plan.model_repack_bytes
                                + plan.kv_bytes + plan.output_bytes + plan.compute_bytes)
    budget = plan.total_bytes
    best = plan.max_ctx(budget)
    assert best is not None and best % 256 == 0
    assert plan.replan(ctx=best).fits(budget)
    assert not plan.replan(ctx=best + 256).fits(budget)
    assert best >= 4096
    assert plan.max_ctx(1000) is None  # not even 256 tokens fit in 1000 bytes
    d = plan.to_dict()
    for key in ("model_host_bytes", "model_device_bytes", "kv_bytes", "recurrent_bytes",
                "output_bytes", "compute_bytes", "total_bytes"):
        assert isinstance(d[key], int)
    assert "fits" not in d
    with_budget = plan.to_dict(budget)
    assert with_budget["fits"] is True and with_budget["max_ctx"] == best


# --------------------------------------------------------------------------------------------
# 30B-class header-only fixtures, hand-worked
# --------------------------------------------------------------------------------------------


def _q4_k_m_like(specs, n_layer: int):
    """Q4_K_M-style types: Q4_K matrices, Q6_K output, attention V and every other layer's
    FFN down projection in Q6_K; vectors stay F32."""
    out = []
    for s in specs:
        qtype = s.ggml_type
        if qtype != QT.F32:
            layer = int(s.name.split(".")[1]) if s.name.startswith("blk.") else None
            six = (s.name == "output.weight" or s.name.endswith("attn_v.weight")
                   or ("ffn_down" in s.name and layer is not None and layer % 2 == 0))
            qtype = QT.Q6_K if six else QT.Q4_K
        out.append(tm.TensorSpec(s.name, s.shape, qtype))
    return out


@pytest.fixture(scope="module")
def qwen3_30b(tmp_path_factory):
    # Qwen3-30B-A3B: 48 layers, hidden 2048, 32 query heads and 4 KV heads of 128, 128
    # experts (8 used) of width 768, vocabulary 151936, trained at 40960 tokens.
    model = tm.model_layout("qwen3moe", n_layers=48, n_embd=2048, n_head=32, n_head_kv=4,
                            head_dim=128, n_ff=6144, n_expert=128, n_expert_used=8,
                            n_ff_exp=768, n_ctx_train=40960, pad_vocab_to=151936)
    path = tmp_path_factory.mktemp("q30b") / "qwen3-30b-a3b.gguf"
    tm.write_header_only(path, model.metadata, _q4_k_m_like(model.tensors, 48))
    return read_header(path)


def test_qwen3_30b_a3b_kv_hand_worked(qwen3_30b):
    assert qwen3_30b.file_bytes < 8 * MIB  # header only: no tensor data
    f16 = plan_memory(qwen3_30b, ctx=65536)
    # KV = 48 layers * 65536 cells * 4 KV heads * 128 dims * 2 (K and V) * 2 bytes = 6 GiB
    assert 48 * 65536 * 4 * 128 * 2 * 2 == 6 * GIB
    assert f16.kv_bytes == 6 * GIB
    assert (f16.kv_detail[0].layers, f16.kv_detail[0].cells) == (48, 65536)
    # q8_0: a 512-value row is 16 blocks of 34 bytes = 544 bytes (34/32 per value)
    q8 = plan_memory(qwen3_30b, ctx=65536, cache_type_k="q8_0", cache_type_v="q8_0")
    assert q8.kv_bytes == 48 * 65536 * (512 // 32 * 34) * 2 == 3_422_552_064
    assert q8.kv_bytes == 6 * GIB * 34 // 64  # 6 GiB * (34/32) / 2
    # q4_0: 16 blocks of 18 bytes = 288 bytes a row
    q4 = plan_memory(qwen3_30b, ctx=65536, cache_type_k="q4_0", cache_type_v="q4_0")
    assert q4.kv_bytes == 48 * 65536 * 288 * 2 == 1_811_939_328
    # mixed K q8_0 / V f16
    mixed = plan_memory(qwen3_30b, ctx=65536, cache_type_k="q8_0", cache_type_v="f16")
    assert mixed.kv_bytes == 48 * 65536 * (544 + 1024)
    # -np 4 splits 65536 into 4 x 16384 cells: the same total
    np4 = plan_memory(qwen3_30b, ctx=65536, parallel=4)
    assert np4.kv_bytes == 6 * GIB
    assert (np4.kv_detail[0].cells, np4.kv_detail[0].streams) == (16384, 4)
    # logits buffer: 151936 floats per output row, one row per sequence
    assert f16.output_bytes == 151936 * 4
    assert np4.output_bytes == 4 * 151936 * 4
    assert f16.recurrent_bytes == 0


def test_qwen3_30b_a3b_weights_hand_worked(qwen3_30b):
    E, V, H, KV, D, NE, FE = 2048, 151936, 32, 4, 128, 128, 768
    embd = E * V * Q4_K  # token_embd, Q4_K: 175,030,272 bytes
    output = E * V * Q6_K + E * 4  # output.weight Q6_K + output_norm F32
    attn = (E * H * D * Q4_K  # attn_q 2048 x 4096
            + E * KV * D * Q4_K  # attn_k 2048 x 512
            + E * KV * D * Q6_K  # attn_v 2048 x 512 (Q6_K)
            + H * D * E * Q4_K)  # attn_output 4096 x 2048
    vectors = 2 * E * 4 + 2 * D * 4 + E * NE * 4  # 2 norms, q/k norms, router (F32)
    gate_up = 2 * E * FE * NE * Q4_K  # ffn_gate_exps + ffn_up_exps
    down_q6 = FE * E * NE * Q6_K  # ffn_down_exps, even layers
    down_q4 = FE * E * NE * Q4_K  # odd layers
    layer_even = attn + vectors + gate_up + down_q6
    layer_odd = attn + vectors + gate_up + down_q4
    total = embd + output + 24 * layer_even + 24 * layer_odd
    assert embd == 175_030_272
    assert total == sum(tensor_bytes(t.shape, t.ggml_type) for t in qwen3_30b.tensors)
    assert 17 * GIB < total < 18 * GIB  # a ~17.2 GB file, as Q4_K_M builds of it are

    all_dev = plan_memory(qwen3_30b, ctx=4096)  # -ngl all: only the embedding stays home
    assert all_dev.model_host_bytes == embd
    assert all_dev.model_device_bytes == total - embd
    cpu = plan_memory(qwen3_30b, ctx=4096, ngl=0)
    assert cpu.model_host_bytes == total and cpu.model_device_bytes == 0
    # on x86 AVX2 the Q4_K matrices in host memory get a repacked copy (rows % 8 == 0)
    q4k_matrices = 24 * (attn - E * KV * D * Q6_K + gate_up) \
        + 24 * (attn - E * KV * D * Q6_K + gate_up + down_q4)
    assert cpu.model_repack_bytes == q4k_matrices
    assert plan_memory(qwen3_30b, ctx=4096, ngl=0, cpu_repack=False).model_repack_bytes == 0
    # -ngl 10: the output layer and the last 9 blocks (39..47: 5 odd, 4 even) on the device
    ten = plan_memory(qwen3_30b, ctx=4096, ngl=10)
    assert ten.model_device_bytes == output + 5 * layer_odd + 4 * layer_even


@pytest.fixture(scope="module")
def qwen3_next_80b(tmp_path_factory):
    # Qwen3-Next-80B-A3B: 48 layers, hidden 2048; full attention (16 query heads, 2 KV heads
    # of 256) every 4th layer; the other 36 are gated delta nets with 16 key heads and 32
    # value heads of 128 (d_inner 4096), conv kernel 4; 512 experts (10 used) of width 512
    # plus a shared expert of 512.
    model = tm.model_layout("qwen3next", n_layers=48, n_embd=2048, n_head=16, n_head_kv=2,
                            head_dim=256, n_ff=5120, n_expert=512, n_expert_used=10,
                            n_ff_exp=512, n_ff_shexp=512, ssm_d_conv=4, ssm_d_state=128,
                            ssm_n_group=16, ssm_dt_rank=32, full_attention_interval=4,
                            n_ctx_train=262144, pad_vocab_to=151936, dtype=QT.Q4_K)
    path = tmp_path_factory.mktemp("qnext") / "qwen3-next-80b-a3b.gguf"
    tm.write_header_only(path, model.metadata, model.tensors)
    return read_header(path)


def test_qwen3_next_80b_kv_and_recurrent_hand_worked(qwen3_next_80b):
    plan = plan_memory(qwen3_next_80b, ctx=65536)
    assert plan.layout.kv_layers == [3, 7, 11, 15, 19, 23, 27, 31, 35, 39, 43, 47]
    # KV only on the 12 full-attention layers (charging all 48 would be 4x too much):
    # 12 * 65536 cells * 2 KV heads * 256 * 2 (K and V) * 2 bytes = 1.5 GiB
    assert plan.kv_bytes == 12 * 65536 * 2 * 256 * 2 * 2 == 3 * GIB // 2
    q8 = plan_memory(qwen3_next_80b, ctx=65536, cache_type_k="q8_0", cache_type_v="q8_0")
    assert q8.kv_bytes == 12 * 65536 * (512 // 32 * 34) * 2
    # recurrent state per sequence and layer, F32:
    #   conv: (4 - 1) * (4096 + 2 * 16 * 128) = 24,576 floats
    #   ssm:  128 * 4096                     = 524,288 floats
    per_layer_seq = 4 * ((4 - 1) * (4096 + 2 * 16 * 128) + 128 * 4096)
    assert per_layer_seq == 2_195_456
    assert plan.recurrent_bytes == 36 * per_layer_seq == 79_036_416
    assert plan.recurrent_detail.r_bytes == 36 * 4 * 24_576
    # it does not depend on the context, but scales with parallel sequences
    assert plan_memory(qwen3_next_80b, ctx=4096).recurrent_bytes == 36 * per_layer_seq
    np4 = plan_memory(qwen3_next_80b, ctx=65536, parallel=4)
    assert np4.recurrent_bytes == 4 * 36 * per_layer_seq
    assert np4.kv_bytes == plan.kv_bytes  # while the KV is only split
    # (with -np 3, 65536 / 3 = 21845.3 cells is padded to 22016 per sequence)
    np3 = plan_memory(qwen3_next_80b, ctx=65536, parallel=3)
    assert np3.n_ctx == 3 * 22016 and np3.kv_bytes == 12 * 3 * 22016 * 2048
    assert np3.recurrent_bytes == 3 * 36 * per_layer_seq


def test_qwen3_next_80b_weights_hand_worked(qwen3_next_80b):
    E, V, NE, FE, FS = 2048, 151936, 512, 512, 512
    key_dim, value_dim = 128 * 16, 128 * 32  # d_state * key heads, d_state * value heads
    moe = (E * NE * 4  # router, F32
           + 3 * E * FE * NE * Q4_K  # gate/up/down expert stacks
           + E * 4  # shared-expert gate, F32
           + 3 * E * FS * Q4_K)  # shared expert gate/up/down
    norms = 2 * E * 4  # attn_norm + post_attention_norm
    linear = (E * (2 * key_dim + value_dim) * Q4_K  # attn_qkv
              + E * value_dim * Q4_K  # attn_gate (z)
              + 4 * (2 * key_dim + value_dim) * 4  # ssm_conv1d, F32
              + 32 * 4 * 2  # ssm_dt bias and ssm_a, F32
              + E * 2 * 32 * Q4_K  # ssm_ba
              + 128 * 4  # ssm_norm
              + value_dim * E * Q4_K)  # ssm_out
    full = (E * 2 * 16 * 256 * Q4_K  # attn_q with its output gate
            + 2 * E * 2 * 256 * Q4_K  # attn_k, attn_v
            + 16 * 256 * E * Q4_K  # attn_output
            + 2 * 256 * 4)  # q/k norms
    total = E * V * Q4_K * 2 + E * 4 + 36 * (linear + moe + norms) + 12 * (full + moe + norms)
    assert total == sum(tensor_bytes(t.shape, t.ggml_type) for t in qwen3_next_80b.tensors)
    plan = plan_memory(qwen3_next_80b, ctx=4096)
    assert plan.model_host_bytes == E * V * Q4_K
    assert plan.model_host_bytes + plan.model_device_bytes == total


# CPU compute buffers llama.cpp logged (benchmarks/twin_full_size.py, -c 4096, ubatch 512)
# loading Q4_K_M twins of the article's Qwen3.5-35B-A3B config cut to 4 layers, by what-if.
QWEN35_MOE_LOGGED_COMPUTE_MIB = [
    ({}, 80.02),  # 256 experts, 8 used, expert FF 512: the routed experts' down matrix peaks
    ({"num_experts": "32"}, 80.02),  # the router tensors sit in a hole: no change
    ({"num_experts": "128"}, 80.02),
    ({"moe_intermediate_size": "256"}, 68.02),  # gate, up and their product halve
    ({"num_experts_per_tok": "4"}, 58.02),  # now the gated delta net peaks
]


@pytest.mark.parametrize("sets,logged", QWEN35_MOE_LOGGED_COMPUTE_MIB)
def test_qwen35_moe_compute_buffer_matches_the_logged_one(sets, logged):
    # The peak falls in layer 0 and depends on where the early inputs leave holes: the mixed
    # embedding input (freed once copied) makes room low in the buffer for the MoE router's
    # tensors and the SSM state rows, which build_rs gathers before the convolution.
    from kurabe.twin.make import twin_header

    config = Path(__file__).resolve().parent.parent / \
        "examples/article-models/qwen3.5-35b-a3b.config.json"
    header, _ = twin_header(str(config), quant="Q4_K_M",
                            sets={"num_hidden_layers": "4", **sets})
    plan = plan_memory(header, ctx=4096, gpu=False)
    assert abs(plan.compute_bytes / MIB - logged) <= 0.005, plan.compute_bytes / MIB


# --------------------------------------------------------------------------------------------
# Real loads
# --------------------------------------------------------------------------------------------


@dataclass
class Load:
    name: str
    path: Path
    settings: dict
    obs: ObservedBuffers
    plan: MemoryPlan


# (name, model: builtin name or (arch, tiny_models keywords), server settings)
REAL_LOADS = [
    ("smollm2-f16", "builtin:smollm2-135m", dict(ctx=4096)),
    ("gemma3-f16", "builtin:gemma3-270m", dict(ctx=4096)),  # `kurabe plan`'s defaults
    ("smollm2-q8-np2", "builtin:smollm2-135m",
     dict(ctx=3000, ctk="q8_0", ctv="q8_0", parallel=2, ub=256)),
    ("smollm2-nofa", "builtin:smollm2-135m", dict(ctx=2048, fa="off")),
    ("gemma3-q4", "builtin:gemma3-270m", dict(ctx=4096, ctk="q4_0", ctv="q4_0")),
    ("gemma3-np2-nofa", "builtin:gemma3-270m", dict(ctx=2048, parallel=2, fa="off", ub=256)),
    ("tiny-llama", ("llama", dict(n_layers=4, n_embd=128, head_dim=32, n_ff=256)),
     dict(ctx=1024, fa="on")),
    ("tiny-qwen3-np3", ("qwen3", dict(n_layers=3, n_embd=128, head_dim=32)),
     dict(ctx=2048, parallel=3, ctk="q8_0", ctv="q8_0")),
    ("tiny-qwen3moe", ("qwen3moe", dict(n_layers=3, n_embd=128, n_ff_exp=128)),
     dict(ctx=4096, ctk="q4_0", ctv="q4_0", ub=256)),
    ("tiny-gemma3", ("gemma3", dict(n_layers=7, sliding_window=100,
                                    swa_pattern=[True, True, False, True, True, True, False])),
     dict(ctx=4096, parallel=2)),
    ("tiny-qwen35moe", ("qwen35moe", dict(ssm_d_state=32, ssm_dt_rank=8, ssm_n_group=4,
                                          full_attention_interval=2)),
     dict(ctx=2048, parallel=2)),
    ("tiny-qwen3next", ("qwen3next", dict(ssm_d_state=32, ssm_dt_rank=8, ssm_n_group=4)),
     dict(ctx=1024, parallel=4, ctk="q8_0", ctv="f16")),
    ("tiny-deci-nofa", ("deci", dict(n_head_kv=[2, 0, 1])), dict(ctx=1024, fa="off")),
]


def _start(name: str, path: Path, log_dir: Path, s: dict) -> ObservedBuffers:
    log = log_dir / f"{name}.log"
    extra = ["-ub", str(s["ub"])] if "ub" in s else []
    server = LlamaCppServer(name, path, ctx=s["ctx"], parallel=s.get("parallel", 1),
                            cache_type_k=s.get("ctk"), cache_type_v=s.get("ctv"),
                            flash_attn=s.get("fa"), log_path=log, extra_args=extra,
                            startup_timeout_s=120)
    try:
        server.start()
    finally:
        server.stop()
    return parse_load_log_file(log)


@pytest.fixture(scope="module")
def real_loads(tmp_path_factory) -> dict[str, Load]:
    work = tmp_path_factory.mktemp("plan-loads")
    jobs = []
    for name, model, settings in REAL_LOADS:
        if isinstance(model, str):
            path = builtin_path(model)
        else:
            arch, kw = model
            path = tm.write_model(work / f"{name}.gguf", arch, **kw).path
        jobs.append((name, path, settings))
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 2)) as pool:
        futures = {name: pool.submit(_start, name, path, work, s) for name, path, s in jobs}
        out = {}
        for name, path, s in jobs:
            obs = futures[name].result()
            plan = plan_memory(read_header(path), ctx=s["ctx"], parallel=s.get("parallel", 1),
                               cache_type_k=s.get("ctk", "f16"),
                               cache_type_v=s.get("ctv", "f16"), ubatch=s.get("ub", 512),
                               flash_attn=s.get("fa", "auto"), gpu=False)
            out[name] = Load(name, path, s, obs, plan)
        return out


COMPUTE_TOLERANCE = 1 << 20  # "to the MiB"


def _close(planned: int, logged: int, obs: ObservedBuffers, n_figures: int = 1) -> bool:
    # 0.1 % of the logged figure, but never tighter than the log's own rounding (half of its
    # 0.01 MiB step per figure summed).
    return abs(planned - logged) <= max(0.001 * logged, obs.tolerance(n_figures))


@pytest.mark.engine
@pytest.mark.parametrize("name", [n for n, _, _ in REAL_LOADS])
def test_plan_matches_real_load(real_loads, name):
    load = real_loads[name]
    obs, plan = load.obs, load.plan
    assert obs.errors == [], obs.errors
    # the context llama.cpp settled on is the one planned
    assert (obs.n_ctx, obs.n_ctx_seq, obs.n_ubatch) == (plan.n_ctx, plan.n_ctx_seq,
                                                          plan.n_ubatch)
    assert obs.flash_attn_enabled == plan.flash_attn

    # weights: everything mmap'd on a CPU machine, plus the CPU_REPACK copy
    assert _close(plan.model_host_bytes, obs.model_buffers["CPU_Mapped"], obs)
    assert _close(plan.model_repack_bytes, obs.model_buffers.get("CPU_REPACK", 0), obs)
    assert plan.model_device_bytes == 0

    # KV: per cache (full / swa) cells, streams, layers, K and V bytes
    assert _close(plan.kv_bytes, obs.kv_bytes, obs, len(obs.kv_buffers))
    got = {c.label: c for c in obs.kv_caches}
    assert set(got) == {d.label for d in plan.kv_detail}
    for d in plan.kv_detail:
        c = got[d.label]
        assert (c.cells, c.layers, c.streams) == (d.cells, d.layers, d.streams), d.label
        assert (c.k_type, c.v_type) == (d.k_type, d.v_type)
        assert _close(d.k_bytes, c.k_bytes, obs) and _close(d.v_bytes, c.v_bytes, obs)

    # recurrent state (hybrids only)
    assert _close(plan.recurrent_bytes, obs.recurrent_bytes, obs)
    if plan.recurrent_detail is not None:
        [rs] = obs.recurrent
        assert rs.cells == plan.recurrent_detail.cells

    # logits output buffer, and the compute buffer to the MiB (all but a quantized-KV Gemma
    # load match it exactly; that one is 0.27 MiB low)
    assert _close(plan.output_bytes, obs.output_bytes, obs)
    compute = obs.compute_buffers["CPU"]
    assert abs(plan.compute_bytes - compute) < COMPUTE_TOLERANCE, (plan.compute_bytes / MIB,
                                                                   compute / MIB)
    # and so the total
    assert abs(plan.total_bytes - obs.total_bytes) < COMPUTE_TOLERANCE + obs.tolerance(
        obs.n_figures) + 0.001 * obs.total_bytes


@pytest.mark.engine
def test_plan_command_on_a_cpu_machine_matches_the_cpu_load(real_loads, tmp_path):
    # `kurabe plan MODEL` with no placement flags plans for the machine it runs on: with no GPU
    # nothing is offloaded, and the total is what llama.cpp allocated loading the same model
    # at the same (default) settings on the CPU. Where this machine has a GPU, an nvidia-smi
    # that finds none stands in for a CPU-only one.
    from kurabe.machine import machine_info

    env = None
    if machine_info()["gpus"]:
        (tmp_path / "nvidia-smi").write_text("#!/bin/sh\nexit 0\n")
        (tmp_path / "nvidia-smi").chmod(0o755)
        env = {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"}
    load = real_loads["gemma3-f16"]
    plan = json.loads(run_kurabe("plan", "builtin:gemma3-270m", "--json", env=env,
                                 check=True).stdout)
    assert (plan["gpu_assumed"], plan["n_gpu_layers"], plan["model_device_bytes"]) == (
        False, 0, 0)
    assert (plan["placement"], plan["placement_basis"], plan["placement_reason"]) == (
        "CPU only", "machine", "no GPU found on this machine")
    assert plan["n_layers_offloadable"] == 19  # 18 blocks + the output layer
    assert plan["total_bytes"] == load.plan.total_bytes  # the plan the load test checks
    obs = load.obs
    assert abs(plan["total_bytes"] - obs.total_bytes) < COMPUTE_TOLERANCE + obs.tolerance(
        obs.n_figures) + 0.001 * obs.total_bytes, (plan["total_bytes"], obs.total_bytes)
    # weights: the file's tensors, mmap'd, as logged (no device copy of the tied output)
    assert _close(plan["model_host_bytes"], obs.model_buffers["CPU_Mapped"], obs)
