"""Load-log parser: real llama.cpp loads checked against hand arithmetic, plus literal excerpts.

Every real load below is a llama.cpp server from the xllamacpp wheel, started once per
session and stopped straight after loading; the parsed buffer figures are compared with
sizes worked out independently from the model's dimensions. Figures in the log are MiB with
two decimals, so comparisons allow half a step (``ObservedBuffers.tolerance``).
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import gguf
import httpx
import pytest

from kurabe.backends.llamacpp import LlamaCppServer
from kurabe.modelfiles.builtin import builtin_path
from kurabe.modelfiles.gguf_header import read_header
from kurabe.simulator.loadlog import (
    MIB,
    ObservedBuffers,
    mib_to_bytes,
    parse_load_log,
    parse_load_log_file,
    parse_load_logs,
)

import tiny_models as tm  # tests/ is on sys.path (pytest's rootdir-relative import)

# Bytes of one row of n elements: (elements per block, bytes per block).
BLOCKS = {"f32": (1, 4), "f16": (1, 2), "bf16": (1, 2), "q8_0": (32, 34), "q4_0": (32, 18),
          "q4_1": (32, 20), "q5_0": (32, 22), "q5_1": (32, 24), "iq4_nl": (32, 18)}


def row_bytes(type_name: str, n: int) -> int:
    block, size = BLOCKS[type_name]
    assert n % block == 0, (type_name, n)
    return n // block * size


def pad256(n: int) -> int:
    return (n + 255) // 256 * 256


def near(actual: int | None, expected: int, obs: ObservedBuffers, n_figures: int = 1) -> bool:
    return actual is not None and abs(actual - expected) <= obs.tolerance(n_figures)


def tensor_span(path: Path) -> int:
    """Bytes from the first tensor's data to the end of the last (what llama.cpp maps)."""
    header = read_header(path)
    ends, starts = [], []
    for t in header.tensors:
        block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(t.ggml_type)]
        n = 1
        for d in t.shape:
            n *= d
        starts.append(t.offset)
        ends.append(t.offset + n // block * size)
    return max(ends) - min(starts)


def assert_sums(obs: ObservedBuffers) -> None:
    groups = (obs.model_buffers, obs.kv_buffers, obs.recurrent_buffers, obs.output_buffers,
              obs.compute_buffers)
    assert obs.total_bytes == sum(sum(g.values()) for g in groups)
    assert obs.total_bytes == sum(obs.by_buffer().values())
    assert obs.kv_bytes == sum(c.buffer_bytes for c in obs.kv_caches)
    for cache in obs.kv_caches:
        assert near(cache.size_bytes, cache.k_bytes + cache.v_bytes, obs, 3)
        assert near(cache.buffer_bytes, cache.size_bytes, obs, 2)
    assert obs.recurrent_bytes == sum(r.buffer_bytes for r in obs.recurrent)


# --------------------------------------------------------------------------------------------
# Real loads, once per session
# --------------------------------------------------------------------------------------------


@dataclass
class Load:
    name: str
    path: Path
    ctx: int
    parallel: int
    ctk: str
    ctv: str
    obs: ObservedBuffers
    model: tm.TinyModel | None = None
    answer: dict | None = None  # tiny models: the reply to one chat request


QWEN3_STYLE_TEMPLATE = (
    "{%- for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
    "{%- endfor %}{%- if add_generation_prompt %}<|im_start|>assistant\n{%- endif %}"
)

# Tiny fixtures: (name, arch, server settings, model settings). Bigger SSM sizes for the
# hybrids so the recurrent state is well above the log's 0.01 MiB step.
TINY = [
    ("llama", "llama", dict(ctx=1024, parallel=1, ctk="f16", ctv="f16"), dict(dtype="f32")),
    ("qwen3", "qwen3", dict(ctx=2048, parallel=2, ctk="q8_0", ctv="q8_0"),
     dict(chat_template=QWEN3_STYLE_TEMPLATE)),
    ("qwen3moe", "qwen3moe", dict(ctx=4096, parallel=1, ctk="q4_0", ctv="q4_0"), {}),
    ("gemma3", "gemma3", dict(ctx=4096, parallel=2, ctk="f16", ctv="f16"), {}),
    ("qwen3next", "qwen3next", dict(ctx=1024, parallel=4, ctk="q8_0", ctv="f16"),
     dict(ssm_d_state=32, ssm_dt_rank=8, ssm_n_group=4)),
    ("qwen35moe", "qwen35moe", dict(ctx=2048, parallel=2, ctk="f16", ctv="f16"),
     dict(ssm_d_state=32, ssm_dt_rank=8, ssm_n_group=4, full_attention_interval=2)),
    ("deci", "deci", dict(ctx=1024, parallel=1, ctk="f16", ctv="f16"),
     dict(n_head_kv=[2, 0, 1])),
]


def _load(name: str, path: Path, log_dir: Path, ctx: int, parallel: int, ctk: str,
          ctv: str, ask: bool) -> tuple[ObservedBuffers, dict | None]:
    """Start a server, optionally send one chat request, stop it; parse its log."""
    log = log_dir / f"{name}.log"
    server = LlamaCppServer(name, path, ctx=ctx, parallel=parallel, cache_type_k=ctk,
                            cache_type_v=ctv, log_path=log, startup_timeout_s=120)
    answer = None
    try:
        endpoint = server.start()
        if ask:
            reply = httpx.post(f"{endpoint.base_url}/chat/completions", timeout=60, json={
                "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 4})
            reply.raise_for_status()
            answer = reply.json()
    finally:
        server.stop()
    return parse_load_log_file(log), answer


@pytest.fixture(scope="session")
def loads(tmp_path_factory) -> dict[str, Load]:
    os.environ.setdefault("KURABE_CACHE_DIR", str(tmp_path_factory.mktemp("kurabe-cache")))
    work = tmp_path_factory.mktemp("loadlog")
    jobs: list[tuple[str, Path, dict, tm.TinyModel | None]] = [
        ("smollm2", builtin_path("builtin:smollm2-135m"),
         dict(ctx=2048, parallel=1, ctk="f16", ctv="f16"), None),
        ("smollm2-np2", builtin_path("builtin:smollm2-135m"),
         dict(ctx=2048, parallel=2, ctk="q8_0", ctv="q4_0"), None),
        ("gemma3-270m", builtin_path("builtin:gemma3-270m"),
         dict(ctx=4096, parallel=1, ctk="f16", ctv="f16"), None),
    ]
    for name, arch, settings, model_kw in TINY:
        model = tm.write_model(work / f"{name}.gguf", arch, **model_kw)
        jobs.append((name, model.path, settings, model))
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {name: pool.submit(_load, name, path, work, ask=model is not None,
                                     **settings)
                   for name, path, settings, model in jobs}
        out = {}
        for name, path, settings, model in jobs:
            obs, answer = futures[name].result()
            out[name] = Load(name, path, obs=obs, model=model, answer=answer, **settings)
        return out


# --------------------------------------------------------------------------------------------
# Built-in models, hand-worked
# --------------------------------------------------------------------------------------------


@pytest.mark.engine
def test_smollm2_f16_kv_hand_worked(loads):
    load = loads["smollm2"]
    obs = load.obs
    header = read_header(load.path)
    # SmolLM2-135M: 30 layers, 9 query heads of 64 (576 wide), 3 KV heads, 49152 tokens.
    assert header.get("llama.block_count") == 30
    assert header.get("llama.attention.head_count_kv") == 3
    assert header.get("llama.embedding_length") // header.get("llama.attention.head_count") == 64
    assert obs.n_ctx == 2048 and obs.n_ctx_seq == 2048 and obs.n_seq_max == 1
    assert obs.n_ubatch == 512 and obs.flash_attn == "auto"

    # f16 KV = 2 (K and V) * 30 layers * 2048 cells * 3 heads * 64 * 2 bytes = 45 MiB
    kv = 2 * 30 * 2048 * 3 * 64 * 2
    assert kv == 47_185_920 == 45 * MIB
    assert obs.kv_buffers == {"CPU": kv}  # 45.00 MiB is exact
    [cache] = obs.kv_caches
    assert (cache.label, cache.cells, cache.layers, cache.seqs, cache.streams) == \
        ("full", 2048, 30, 1, 1)
    assert (cache.k_type, cache.v_type) == ("f16", "f16")
    assert cache.k_bytes == cache.v_bytes == kv // 2

    # logits for one output: 49152 floats = 0.1875 MiB, printed as 0.19
    assert near(obs.output_buffers["CPU"], 49152 * 4, obs)
    # weights: the mmap'd span of tensor data in the file
    assert list(obs.model_buffers) == ["CPU_Mapped"]
    assert near(obs.model_buffers["CPU_Mapped"], tensor_span(load.path), obs)
    assert obs.compute_buffers["CPU"] > 0
    assert obs.recurrent == [] and obs.recurrent_buffers == {}
    assert obs.layers_offloaded is None  # CPU build: no offload line
    assert obs.errors == []
    assert_sums(obs)


@pytest.mark.engine
def test_smollm2_two_sequences_quantized_cache(loads):
    obs = loads["smollm2-np2"].obs
    assert obs.n_ctx == 2048 and obs.n_seq_max == 2 and obs.n_ctx_seq == 1024
    [cache] = obs.kv_caches
    # two streams of 1024 cells: the context is split between sequences, not multiplied
    assert (cache.cells, cache.seqs, cache.streams) == (1024, 2, 2)
    # K q8_0: a 192-wide row is 6 blocks of 34 bytes; V q4_0: 6 blocks of 18 bytes
    k = 30 * 2048 * (192 // 32 * 34)
    v = 30 * 2048 * (192 // 32 * 18)
    assert (cache.k_type, cache.v_type) == ("q8_0", "q4_0")
    assert near(cache.k_bytes, k, obs) and near(cache.v_bytes, v, obs)
    assert near(obs.kv_bytes, k + v, obs)
    assert obs.flash_attn == "enabled"  # a quantized V cache needs flash attention
    assert obs.flash_attn_enabled is True
    assert near(obs.output_buffers["CPU"], 2 * 49152 * 4, obs)  # one output per sequence
    assert_sums(obs)


@pytest.mark.engine
def test_gemma3_270m_keeps_both_kv_caches(loads):
    load = loads["gemma3-270m"]
    obs = load.obs
    header = read_header(load.path)
    # Gemma 3 270M: 18 layers, every 6th global (3), the rest sliding-window (15);
    # 1 KV head of 256; window 512; 262144 tokens.
    assert header.get("gemma3.block_count") == 18
    assert header.get("gemma3.attention.sliding_window") == 512
    assert header.get("gemma3.attention.head_count_kv") == 1
    assert header.get("gemma3.attention.key_length") == 256
    assert obs.n_ctx == 4096 and obs.n_ubatch == 512
    full, swa = obs.kv_cache("full"), obs.kv_cache("swa")
    assert [c.label for c in obs.kv_caches] == ["full", "swa"]
    # global layers: 2 * 3 * 4096 * 256 * 2 bytes = 12 MiB
    assert (full.cells, full.layers, full.planned_cells) == (4096, 3, 4096)
    assert full.size_bytes == full.buffer_bytes == 2 * 3 * 4096 * 256 * 2 == 12 * MIB
    # local layers: window + ubatch = 1024 cells (< 4096, already a multiple of 256)
    assert (swa.cells, swa.layers, swa.planned_cells) == (1024, 15, 1024)
    assert swa.size_bytes == swa.buffer_bytes == 2 * 15 * 1024 * 256 * 2 == 15 * MIB
    assert obs.kv_buffers == {"CPU": 27 * MIB}
    assert obs.output_buffers == {"CPU": 262144 * 4}  # exactly 1.00 MiB
    assert near(obs.model_buffers["CPU_Mapped"], tensor_span(load.path), obs)
    assert_sums(obs)


# --------------------------------------------------------------------------------------------
# Tiny models of every fixture architecture
# --------------------------------------------------------------------------------------------


def expected_caches(model: tm.TinyModel, load: Load) -> dict[str, tuple[int, list[int]]]:
    """label -> (cells per stream, layers in the cache), worked out from the dimensions."""
    n_ctx_seq = pad256(load.ctx // load.parallel)
    cache_layers = [il for il in range(model.n_layer) if il not in model.recurrent_layers]
    swa = [il for il in cache_layers if il in model.swa_layers]
    full = [il for il in cache_layers if il not in swa]
    out = {"full": (n_ctx_seq, full)}
    if swa:
        out["swa"] = (min(n_ctx_seq, pad256(model.n_swa + 512)), swa)
    return out


@pytest.mark.engine
@pytest.mark.parametrize("name", [t[0] for t in TINY])
def test_tiny_model_buffers(loads, name):
    load = loads[name]
    obs, model = load.obs, load.model
    assert obs.errors == []
    assert obs.n_ctx == load.ctx and obs.n_seq_max == load.parallel
    assert obs.n_ctx_seq == pad256(load.ctx // load.parallel)

    expected = expected_caches(model, load)
    assert [c.label for c in obs.kv_caches] == list(expected)
    total_kv = 0
    for cache in obs.kv_caches:
        cells, layers = expected[cache.label]
        assert (cache.cells, cache.layers, cache.streams) == (cells, len(layers), load.parallel)
        assert (cache.k_type, cache.v_type) == (load.ctk, load.ctv)
        n_cells = cells * load.parallel
        k = sum(row_bytes(load.ctk, model.n_head_kv[il] * model.head_dim) for il in layers)
        v = sum(row_bytes(load.ctv, model.n_head_kv[il] * model.head_dim) for il in layers)
        assert near(cache.k_bytes, k * n_cells, obs), (cache, k * n_cells)
        assert near(cache.v_bytes, v * n_cells, obs), (cache, v * n_cells)
        total_kv += (k + v) * n_cells
    assert near(obs.kv_bytes, total_kv, obs, len(obs.kv_caches))

    if model.recurrent_layers:
        [state] = obs.recurrent
        conv, ssm = model.recurrent_state_floats()
        n_rec, cells = len(model.recurrent_layers), max(1, load.parallel)
        # one state slot per sequence; llama.cpp prints the model's layer count here, but
        # only the recurrent layers hold state
        assert (state.cells, state.layers, state.seqs) == (cells, model.n_layer, load.parallel)
        assert (state.r_type, state.s_type) == ("f32", "f32")
        assert near(state.r_bytes, n_rec * cells * conv * 4, obs)
        assert near(state.s_bytes, n_rec * cells * ssm * 4, obs)
        assert near(obs.recurrent_bytes, n_rec * cells * (conv + ssm) * 4, obs)
    else:
        assert obs.recurrent == [] and obs.recurrent_buffers == {}

    assert list(obs.model_buffers) == ["CPU_Mapped"]
    assert near(obs.model_buffers["CPU_Mapped"], tensor_span(load.path), obs)
    assert near(obs.output_bytes, model.n_vocab * 4 * load.parallel, obs)
    assert obs.compute_buffers["CPU"] > 0
    assert_sums(obs)


@pytest.mark.engine
def test_tiny_models_answer_a_chat_request(loads):
    for name, *_ in TINY:
        answer = loads[name].answer
        assert answer["choices"][0]["message"]["role"] == "assistant", name
        assert answer["usage"]["completion_tokens"] >= 1, name


@pytest.mark.engine
def test_tiny_hybrid_kv_only_on_attention_layers(loads):
    # qwen35moe, 4 layers, every 2nd full attention: KV for 2 layers, state for 2 layers.
    load = loads["qwen35moe"]
    assert load.model.recurrent_layers == (0, 2)
    [cache] = load.obs.kv_caches
    assert cache.layers == 2
    # 2 layers * 2 (K, V) * 2048 cells (2 streams of 1024) * 2 heads * 32 * 2 bytes = 1 MiB
    assert cache.size_bytes == 2 * 2 * 2048 * 2 * 32 * 2 == MIB
    # per layer and sequence: conv 3 * (256 + 2*4*32) floats, state 32 * 256 floats
    r = 2 * 2 * 3 * (256 + 2 * 4 * 32) * 4
    s = 2 * 2 * 32 * 256 * 4
    state = load.obs.recurrent[0]
    assert near(state.r_bytes, r, load.obs) and near(state.s_bytes, s, load.obs)
    assert s == MIB // 8  # 0.125 MiB, printed with two decimals


@pytest.mark.engine
def test_tiny_per_layer_kv_heads(loads):
    # deci with head_count_kv = [2, 0, 1]: an estimator reading only the first element
    # would charge 3 * 2 heads; the real cache holds 2 + 0 + 1 heads of 32 per cell.
    obs = loads["deci"].obs
    [cache] = obs.kv_caches
    assert near(cache.size_bytes, 2 * 1024 * (2 + 0 + 1) * 32 * 2, obs)
    assert not near(cache.size_bytes, 2 * 1024 * 3 * 2 * 32 * 2, obs)


@pytest.mark.engine
def test_stored_and_reloaded(loads):
    for load in loads.values():
        data = json.loads(json.dumps(load.obs.to_dict()))
        assert data["total_bytes"] == load.obs.total_bytes
        assert ObservedBuffers.from_dict(data) == load.obs


# --------------------------------------------------------------------------------------------
# Literal excerpts
# --------------------------------------------------------------------------------------------

CUDA_EXCERPT = """\
llama_model_loader: loaded meta data with 30 key-value pairs and 291 tensors from m.gguf
load_tensors: loading model tensors, this can take a while... (mmap = true)
load_tensors: offloading output layer to GPU
load_tensors: offloading 25 repeating layers to GPU
load_tensors: offloaded 26/33 layers to GPU
load_tensors:        CUDA0 model buffer size =  3208.50 MiB
load_tensors:        CUDA1 model buffer size =   950.25 MiB
load_tensors:   CPU_Mapped model buffer size =  1302.11 MiB
llama_context: constructing llama_context
llama_context: n_seq_max     = 4
llama_context: n_ctx         = 16384
llama_context: n_ctx_seq     = 4096
llama_context: n_batch       = 2048
llama_context: n_ubatch      = 512
llama_context: causal_attn   = 1
llama_context: flash_attn    = enabled
llama_context: kv_unified    = false
llama_context:  CUDA_Host  output buffer size =     1.96 MiB
llama_kv_cache:      CUDA0 KV buffer size =  1664.00 MiB
llama_kv_cache:      CUDA1 KV buffer size =   256.00 MiB
llama_kv_cache:        CPU KV buffer size =   128.00 MiB
llama_kv_cache: size = 2048.00 MiB (  4096 cells,  32 layers,  4/4 seqs), K (f16): 1024.00 MiB, V (f16): 1024.00 MiB
sched_reserve:      CUDA0 compute buffer size =   304.00 MiB
sched_reserve:      CUDA1 compute buffer size =   120.50 MiB
sched_reserve:  CUDA_Host compute buffer size =    40.01 MiB
sched_reserve: graph nodes  = 1030
sched_reserve: graph splits = 3
"""


def test_cuda_excerpt_per_device():
    obs = parse_load_log(CUDA_EXCERPT)
    assert (obs.layers_offloaded, obs.layers_offloadable) == (26, 33)
    assert obs.model_buffers == {"CUDA0": mib_to_bytes("3208.50"),
                                 "CUDA1": mib_to_bytes("950.25"),
                                 "CPU_Mapped": mib_to_bytes("1302.11")}
    assert obs.kv_buffers == {"CUDA0": 1664 * MIB, "CUDA1": 256 * MIB, "CPU": 128 * MIB}
    [cache] = obs.kv_caches
    assert cache.buffers == obs.kv_buffers and cache.size_bytes == 2048 * MIB
    assert (cache.cells, cache.layers, cache.seqs, cache.streams) == (4096, 32, 4, 4)
    # 32 layers * 4096 cells * 4 streams * 8 heads * 128 * 2 bytes = 1024 MiB each for K, V
    assert cache.k_bytes == cache.v_bytes == 32 * 4096 * 4 * 8 * 128 * 2
    assert obs.output_buffers == {"CUDA_Host": mib_to_bytes("1.96")}
    assert obs.compute_buffers == {"CUDA0": 304 * MIB, "CUDA1": mib_to_bytes("120.50"),
                                   "CUDA_Host": mib_to_bytes("40.01")}
    assert (obs.n_ctx, obs.n_ctx_seq, obs.n_seq_max, obs.n_batch, obs.n_ubatch) == \
        (16384, 4096, 4, 2048, 512)
    assert obs.flash_attn == "enabled" and obs.flash_attn_enabled is True
    assert obs.kv_unified is False
    by_buffer = obs.by_buffer()
    assert by_buffer["CUDA0"] == mib_to_bytes("3208.50") + 1664 * MIB + 304 * MIB
    mib = [3208.50, 950.25, 1302.11, 1.96, 1664, 256, 128, 304, 120.50, 40.01]
    assert abs(obs.total_bytes - sum(mib) * MIB) <= len(mib)
    assert obs.n_figures == len(mib)
    assert obs.resolution_bytes == 10486 and obs.total_tolerance_bytes == 10 * 5244
    assert_sums(obs)


OLDER_EXCERPT = """\
llama_model_loader: loaded meta data with 41 key-value pairs and 459 tensors from j.gguf
load_tensors:   CPU_Mapped model buffer size =  5000.00 MiB
llama_context: n_ctx         = 8192
llama_context: n_ctx_per_seq = 8192
llama_context: n_batch       = 2048
llama_context: n_ubatch      = 512
llama_context: flash_attn    = 0
llama_context:        CPU  output buffer size =     0.49 MiB
llama_kv_cache_unified_iswa: creating non-SWA KV cache, size = 8192 cells
llama_kv_cache_unified:        CPU KV buffer size =   256.00 MiB
llama_kv_cache_unified: size =  256.00 MiB (  8192 cells,   4 layers,  1/ 1 seqs), K (q8_0):  136.00 MiB, V (f16):  120.00 MiB
llama_kv_cache_unified_iswa: creating     SWA KV cache, size = 1536 cells
llama_kv_cache_unified:        CPU KV buffer size =    96.00 MiB
llama_kv_cache_unified: size =   96.00 MiB (  1536 cells,  12 layers,  1/ 1 seqs), K (q8_0):   51.00 MiB, V (f16):   45.00 MiB
llama_memory_recurrent:        CPU RS buffer size =    24.75 MiB
llama_memory_recurrent: size =   24.75 MiB (     1 cells,  32 layers,  1 seqs), R (f32):    0.75 MiB, S (f32):   24.00 MiB
llama_context:        CPU compute buffer size =   300.01 MiB
llama_context: graph nodes  = 2000
some unrelated line = 12.00 MiB
"""


def test_older_format_swa_and_recurrent():
    obs = parse_load_log(OLDER_EXCERPT)
    assert obs.n_ctx_seq == 8192 and obs.flash_attn == "0" and obs.flash_attn_enabled is False
    full, swa = obs.kv_caches
    assert (full.label, full.cells, full.layers, full.seqs, full.streams) == \
        ("full", 8192, 4, 1, 1)
    assert (full.k_type, full.k_bytes, full.v_type, full.v_bytes) == \
        ("q8_0", 136 * MIB, "f16", 120 * MIB)
    assert (swa.label, swa.cells, swa.planned_cells, swa.layers) == ("swa", 1536, 1536, 12)
    assert obs.kv_buffers == {"CPU": 352 * MIB}
    [state] = obs.recurrent
    assert (state.cells, state.layers, state.seqs, state.rs_seq) == (1, 32, 1, None)
    assert (state.r_bytes, state.s_bytes, state.p_bytes) == (int(0.75 * MIB), 24 * MIB, None)
    assert obs.recurrent_buffers == {"CPU": mib_to_bytes("24.75")}
    assert obs.compute_buffers == {"CPU": mib_to_bytes("300.01")}
    assert obs.total_bytes == mib_to_bytes("5000") + mib_to_bytes("0.49") + 352 * MIB \
        + mib_to_bytes("24.75") + mib_to_bytes("300.01")
    assert ObservedBuffers.from_dict(json.loads(json.dumps(obs.to_dict()))) == obs


FAILED_EXCERPT = """\
0.00.011.157 I llama_model_loader: loaded meta data with 20 key-value pairs and 30 tensors from x.gguf
0.00.020.712 I load_tensors:   CPU_Mapped model buffer size =     0.22 MiB
0.00.024.094 I llama_context: constructing llama_context
0.00.024.272 I llama_context: n_ctx                 = 1000000
0.00.024.319 I llama_kv_cache:        CPU KV buffer size = 61440.00 MiB
0.00.024.401 E llama_init_from_model: failed to initialize the context: out of memory
0.00.024.402 E srv    load_model: failed to create_context with model 'x.gguf'
"""


def test_failed_load_gives_what_it_has():
    obs = parse_load_log(FAILED_EXCERPT)
    assert obs.model_buffers == {"CPU_Mapped": mib_to_bytes("0.22")}
    assert obs.n_ctx == 1_000_000 and obs.n_ubatch is None
    [cache] = obs.kv_caches  # a buffer line without its summary line
    assert cache.buffers == {"CPU": 60 * 1024 * MIB} and cache.cells is None
    assert obs.compute_buffers == {}
    assert obs.errors == [
        "llama_init_from_model: failed to initialize the context: out of memory",
        "srv    load_model: failed to create_context with model 'x.gguf'",
    ]
    assert obs.total_bytes == mib_to_bytes("0.22") + 60 * 1024 * MIB


def test_appended_log_holds_two_loads():
    first = CUDA_EXCERPT
    second = OLDER_EXCERPT
    loads = parse_load_logs(first + second)
    assert len(loads) == 2
    assert loads[0].layers_offloaded == 26 and loads[1].layers_offloaded is None
    assert parse_load_log(first + second) == parse_load_log(second)
    # a later load that failed before allocating anything does not hide the earlier one
    tail = "llama_model_loader: loaded meta data with 1 key-value pairs\nE boom\n"
    assert parse_load_log(second + tail) == parse_load_log(second)


def test_nothing_to_parse():
    obs = parse_load_log("hello\nworld = 3 MiB\n")
    assert obs.empty and obs.total_bytes == 0 and obs.errors == []
    assert ObservedBuffers.from_dict(obs.to_dict()) == obs


def test_precision_follows_the_log():
    obs = parse_load_log("sched_reserve:        CPU compute buffer size =    16.6406 MiB\n")
    assert obs.compute_buffers == {"CPU": round(16.6406 * MIB)}
    assert obs.resolution_bytes == 105  # 0.0001 MiB
    assert mib_to_bytes("0.19") == 199229 and mib_to_bytes(45) == 45 * MIB


# --------------------------------------------------------------------------------------------
# Header-only fixtures
# --------------------------------------------------------------------------------------------


def test_header_only_30b_class_layout(tmp_path):
    layout = tm.model_layout(
        "qwen3moe", n_layers=48, n_embd=2048, n_head=32, n_head_kv=4, head_dim=128,
        n_ff=6144, n_expert=128, n_expert_used=8, n_ff_exp=768, n_ctx_train=40960,
        dtype=gguf.GGMLQuantizationType.Q4_K, pad_vocab_to=151936)
    path = tmp_path / "qwen3moe-30b-header.gguf"
    size = tm.write_header_only(path, layout.metadata, layout.tensors)
    header = read_header(path)
    assert header.header_bytes == header.file_bytes == size  # no tensor data at all
    assert header.architecture == "qwen3moe" and header.get("qwen3moe.expert_count") == 128
    assert len(header.tensors) == len(layout.tensors) == 3 + 48 * 12  # as in the real Qwen3-30B-A3B
    down = next(t for t in header.tensors if t.name == "blk.7.ffn_down_exps.weight")
    assert down.shape == (768, 2048, 128)
    assert down.ggml_type == gguf.GGMLQuantizationType.Q4_K
    # about 17 GB of weights described by a few MB of header
    assert 16e9 < layout.tensor_bytes < 19e9 and size < 5e6
