"""Fuzzing every parser of outside input kurabe owns: a GGUF header, a Hugging Face
config.json, a saved response. Property: the parser returns a result or raises a
KurabeError (one line) — never another exception, never a hang.

Bounded for CI: a fixed seed (derandomize), no example database, a few hundred examples per
parser, small inputs; all of them together run in well under 20 s.
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kurabe import KurabeError, api
from kurabe.modelfiles.gguf_header import GGUFHeader, read_header
from kurabe.modelfiles.hf_config import HFModelHeader, read_hf_config
from kurabe.thinking import SavedResponse, parse_saved_response

FUZZ = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))
TIME_LIMIT_S = 2.0  # per example: a parser that takes longer is treated as hanging


def _check_error(exc: KurabeError) -> None:
    message = str(exc)
    assert message and "\n" not in message.strip(), message
    assert "Traceback" not in message


def _bounded(fn, *args, **kwargs):
    """``fn(...)``, or the KurabeError it raised; fails on any other exception or a hang."""
    started = time.perf_counter()
    try:
        result = fn(*args, **kwargs)
    except KurabeError as exc:
        _check_error(exc)
        result = exc
    assert time.perf_counter() - started < TIME_LIMIT_S, f"{fn.__name__} took too long"
    return result


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


# -- GGUF headers ----------------------------------------------------------------------------


def _s(text: str) -> bytes:
    raw = text.encode("utf-8")
    return struct.pack("<Q", len(raw)) + raw


def _kv(key: str, vtype: int, payload: bytes) -> bytes:
    return _s(key) + struct.pack("<I", vtype) + payload


def _array(item_type: int, items: list[bytes]) -> bytes:
    return struct.pack("<IQ", item_type, len(items)) + b"".join(items)


def valid_gguf() -> bytes:
    """A small, valid GGUF v3 header of a llama model: every value type, a nested array, a
    vocabulary, a chat template, and two tensors."""
    kvs = [
        _kv("general.architecture", 8, _s("llama")),
        _kv("general.name", 8, _s("fuzz モデル")),
        _kv("general.file_type", 4, struct.pack("<I", 15)),
        _kv("llama.block_count", 4, struct.pack("<I", 2)),
        _kv("llama.context_length", 4, struct.pack("<I", 4096)),
        _kv("llama.embedding_length", 4, struct.pack("<I", 64)),
        _kv("llama.feed_forward_length", 4, struct.pack("<I", 128)),
        _kv("llama.attention.head_count", 4, struct.pack("<I", 4)),
        _kv("llama.attention.head_count_kv", 4, struct.pack("<I", 2)),
        _kv("llama.rope.freq_base", 6, struct.pack("<f", 10000.0)),
        _kv("llama.attention.layer_norm_rms_epsilon", 6, struct.pack("<f", 1e-5)),
        _kv("llama.expert_used_count", 10, struct.pack("<Q", 0)),
        _kv("t.i8", 1, struct.pack("<b", -3)),
        _kv("t.i16", 3, struct.pack("<h", -300)),
        _kv("t.u16", 2, struct.pack("<H", 300)),
        _kv("t.i64", 11, struct.pack("<q", -(2 ** 40))),
        _kv("t.f64", 12, struct.pack("<d", 2.5)),
        _kv("t.bool", 7, b"\x01"),
        _kv("t.nested", 9, _array(9, [_array(5, [struct.pack("<i", 1), struct.pack("<i", 2)]),
                                      _array(5, [struct.pack("<i", 3)])])),
        _kv("tokenizer.ggml.model", 8, _s("gpt2")),
        _kv("tokenizer.ggml.tokens", 9, _array(8, [_s(t) for t in ("<s>", "a", "b", "ab", "</s>")])),
        _kv("tokenizer.ggml.token_type", 9, _array(5, [struct.pack("<i", 1)] * 5)),
        _kv("tokenizer.chat_template", 8,
            _s("{% for m in messages %}{{ m.content }}{% endfor %}<think>")),
    ]
    tensors = [
        _s("token_embd.weight") + struct.pack("<I", 2) + struct.pack("<QQ", 64, 5)
        + struct.pack("<IQ", 0, 0),
        _s("blk.0.attn_q.weight") + struct.pack("<I", 2) + struct.pack("<QQ", 64, 64)
        + struct.pack("<IQ", 1, 1280),
    ]
    head = b"GGUF" + struct.pack("<Iqq", 3, len(tensors), len(kvs))
    return head + b"".join(kvs) + b"".join(tensors) + b"\x00" * 64


VALID_GGUF = valid_gguf()
INTERESTING = [0, 1, 2, 7, 8, 9, 13, 255, 4096, 4097, 2 ** 16 + 1, 2 ** 24 + 1, 2 ** 31,
               2 ** 32 - 1, 2 ** 34 + 1, 2 ** 63 - 1, 2 ** 64 - 1]

_edit = st.one_of(
    st.tuples(st.just("xor"), st.integers(0, len(VALID_GGUF)), st.integers(1, 255)),
    st.tuples(st.just("u32"), st.integers(0, len(VALID_GGUF)),
              st.sampled_from([v for v in INTERESTING if v < 2 ** 32])),
    st.tuples(st.just("u64"), st.integers(0, len(VALID_GGUF)), st.sampled_from(INTERESTING)),
    st.tuples(st.just("insert"), st.integers(0, len(VALID_GGUF)), st.binary(min_size=1,
                                                                               max_size=9)),
    st.tuples(st.just("delete"), st.integers(0, len(VALID_GGUF)), st.integers(1, 9)),
)


def _mutate(data: bytes, edits: list, cut: int | None) -> bytes:
    buf = bytearray(data)
    for kind, pos, value in edits:
        pos %= len(buf) + 1
        if kind == "insert":
            buf[pos:pos] = value
        elif kind == "delete":
            del buf[pos:pos + value]
        elif kind == "xor":
            if pos < len(buf):
                buf[pos] ^= value
        else:
            buf[pos:pos + (4 if kind == "u32" else 8)] = value.to_bytes(
                4 if kind == "u32" else 8, "little")
    if cut is not None:
        del buf[cut % (len(buf) + 1):]
    return bytes(buf)


def test_the_valid_base_header_reads_as_built(folder):
    path = folder / "valid.gguf"
    path.write_bytes(VALID_GGUF)
    header = read_header(path)
    assert header.architecture == "llama" and len(header.tensors) == 2
    assert header.metadata["t.nested"] == [[1, 2], [3]]
    assert api.inspect_model(str(path)).architecture == "llama"


@FUZZ
@given(edits=st.lists(_edit, min_size=1, max_size=4), cut=st.none() | st.integers(0, 2 ** 12))
def test_mutated_gguf_headers_read_or_fail_cleanly(folder, edits, cut):
    path = folder / "mutated.gguf"
    data = _mutate(VALID_GGUF, edits, cut)
    path.write_bytes(data)
    header = _bounded(read_header, path)
    if isinstance(header, GGUFHeader):
        assert header.file_bytes == len(data) and header.header_bytes <= len(data)
        # What `kurabe inspect` makes of it: a card or one clear error.
        _bounded(api.inspect_model, str(path))


@FUZZ
@given(data=st.binary(max_size=256))
def test_random_bytes_after_the_magic_read_or_fail_cleanly(folder, data):
    path = folder / "random.gguf"
    path.write_bytes(b"GGUF" + data)
    _bounded(read_header, path)


# -- Hugging Face config.json ------------------------------------------------------------

_scalar = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70),
                    st.integers(-3, 300), st.floats(allow_nan=True, allow_infinity=True),
                    st.text(max_size=12))
_json_value = st.recursive(_scalar, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)

BASE_CONFIGS = {
    "llama": {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
              "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "vocab_size": 300, "max_position_embeddings": 2048,
              "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": False,
              "rope_scaling": {"rope_type": "llama3", "factor": 8.0}},
    "qwen3moe": {"architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe",
                 "hidden_size": 64, "intermediate_size": 128, "moe_intermediate_size": 32,
                 "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                 "head_dim": 16, "vocab_size": 300, "num_experts": 4, "num_experts_per_tok": 2,
                 "decoder_sparse_step": 1, "mlp_only_layers": [0],
                 "rope_scaling": {"type": "yarn", "factor": 4.0,
                                  "original_max_position_embeddings": 1024}},
    "gemma3": {"architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3",
               "text_config": {"model_type": "gemma3_text", "hidden_size": 64,
                               "intermediate_size": 128, "num_hidden_layers": 2,
                               "sliding_window": 512, "final_logit_softcapping": 30.0}},
    "gpt-oss": {"architectures": ["GptOssForCausalLM"], "model_type": "gpt_oss",
                "hidden_size": 64, "intermediate_size": 64, "num_hidden_layers": 2,
                "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
                "vocab_size": 300, "num_local_experts": 4, "num_experts_per_tok": 2,
                "quantization_config": {"quant_method": "mxfp4"}},
    "qwen35moe": {"architectures": ["Qwen3_5MoeForCausalLM"], "model_type": "qwen3_5_moe",
                  "hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4,
                  "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 300,
                  "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32,
                  "shared_expert_intermediate_size": 32, "linear_num_key_heads": 2,
                  "linear_num_value_heads": 4, "linear_key_head_dim": 16,
                  "linear_value_head_dim": 16, "linear_conv_kernel_dim": 4,
                  "full_attention_interval": 2, "mtp_num_hidden_layers": 1,
                  "rope_parameters": {"partial_rotary_factor": 0.25,
                                      "mrope_section": [2, 2, 2]}},
}
_KEYS = sorted({k for cfg in BASE_CONFIGS.values() for k in cfg}
               | {k for cfg in BASE_CONFIGS.values() for k in cfg.get("text_config", {})}
               | {"layer_types", "sliding_window_pattern", "rope_local_base_freq",
                  "partial_rotary_factor", "attention_bias", "torch_dtype", "dtype"})


@pytest.mark.parametrize("arch", list(BASE_CONFIGS))
def test_the_base_configs_read(folder, arch):
    path = folder / f"{arch}.json"
    path.write_text(json.dumps(BASE_CONFIGS[arch]), encoding="utf-8")
    assert read_hf_config(path).architecture == arch


@FUZZ
@given(arch=st.sampled_from(list(BASE_CONFIGS)),
       changes=st.dictionaries(st.sampled_from(_KEYS), _json_value, min_size=1, max_size=4),
       nested=st.booleans())
def test_mutated_configs_read_or_fail_cleanly(folder, arch, changes, nested):
    config = json.loads(json.dumps(BASE_CONFIGS[arch]))
    target = config["text_config"] if nested and "text_config" in config else config
    target.update(changes)
    path = folder / "config.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    header = _bounded(read_hf_config, path)
    if isinstance(header, HFModelHeader):
        assert header.header_bytes > 0
        _bounded(api.inspect_model, str(path))


@FUZZ
@given(value=_json_value)
def test_random_json_documents_read_or_fail_cleanly(folder, value):
    path = folder / "random-config.json"
    path.write_text(json.dumps(value), encoding="utf-8")
    _bounded(read_hf_config, path)


@FUZZ
@given(text=st.text(max_size=64) | st.binary(max_size=64).map(lambda b: b.decode("latin-1")),
       raw=st.binary(max_size=64))
def test_broken_json_files_fail_cleanly(folder, text, raw):
    path = folder / "broken.json"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    _bounded(read_hf_config, path)
    path.write_bytes(raw)
    _bounded(read_hf_config, path)


@FUZZ
@given(tokenizer=_json_value, index=_json_value, tokenizer_config=_json_value)
def test_files_beside_a_config_read_or_fail_cleanly(folder, tokenizer, index, tokenizer_config):
    model = folder / "model"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text(json.dumps(BASE_CONFIGS["llama"]), encoding="utf-8")
    (model / "tokenizer.json").write_text(json.dumps(tokenizer), encoding="utf-8")
    (model / "model.safetensors.index.json").write_text(json.dumps(index), encoding="utf-8")
    (model / "tokenizer_config.json").write_text(json.dumps(tokenizer_config),
                                                 encoding="utf-8")
    _bounded(read_hf_config, model)


# -- saved responses -----------------------------------------------------------------------

_content = st.one_of(_scalar, st.lists(st.one_of(
    st.text(max_size=8),
    st.fixed_dictionaries({"type": st.sampled_from(["text", "output_text", "refusal",
                                                    "image_url"]) | _scalar},
                          optional={"text": _scalar, "refusal": _scalar})), max_size=3))
_message = st.fixed_dictionaries({}, optional={
    "role": _scalar, "content": _content, "reasoning_content": _content,
    "reasoning": _content, "thinking": _content})
_choice = st.fixed_dictionaries({}, optional={
    "message": _message | _scalar, "delta": _message | _scalar, "text": _content,
    "finish_reason": st.sampled_from(["stop", "length"]) | _scalar})
_openai = st.fixed_dictionaries({"choices": st.lists(_choice | _scalar, max_size=2) | _scalar},
                                optional={"usage": _json_value, "error": _json_value})
_ollama = st.fixed_dictionaries({}, optional={
    "message": _message | _scalar, "response": _content, "thinking": _content,
    "done_reason": _scalar, "done": _scalar, "error": _json_value})
_document = st.one_of(_openai, _ollama, _json_value)


def _serialise(doc: object, form: str) -> str:
    if form == "json":
        return json.dumps(doc)
    if form == "ndjson":
        return "\n".join(json.dumps(doc) for _ in range(2))
    if form == "sse":
        return f"data: {json.dumps(doc)}\n\ndata: [DONE]\n\n"
    return json.dumps(doc)[: max(1, len(json.dumps(doc)) // 2)]  # cut in half


def _check_saved(saved: object) -> None:
    if isinstance(saved, SavedResponse):
        assert isinstance(saved.content, str) and isinstance(saved.reasoning, str)
        assert saved.finish_reason is None or isinstance(saved.finish_reason, str)
        for text in (saved.content, saved.reasoning):
            text.encode("utf-8")  # printable and storable: no lone surrogates


@FUZZ
@given(doc=_document, form=st.sampled_from(["json", "ndjson", "sse", "cut"]))
def test_saved_responses_of_any_shape_read_or_fail_cleanly(doc, form):
    text = _serialise(doc, form)
    _check_saved(_bounded(parse_saved_response, text))
    result = _bounded(api.split_thinking, text, origin="fuzz")
    if isinstance(result, dict):
        json.dumps(result)  # what --json prints
        assert result["outcome"]


@FUZZ
@given(text=st.text(max_size=200), prefix=st.sampled_from(["", "{", "[", "data: ", "data:{",
                                                            "event: error\n", '{"choices":']))
def test_random_text_reads_or_fails_cleanly(text, prefix):
    _check_saved(_bounded(parse_saved_response, prefix + text))
    _bounded(api.split_thinking, prefix + text)


@FUZZ
@given(lines=st.lists(st.one_of(
    st.sampled_from(["", ": comment", "event: message", "event: error", "id: 3", "retry: 10",
                     "data: [DONE]", 'data: {"choices": []}', "data:", "garbage"]),
    st.builds(lambda d: "data: " + json.dumps(d), _openai),
    st.builds(lambda d: "data: " + json.dumps(d)[:-1], _openai)), max_size=8))
def test_sse_transcripts_read_or_fail_cleanly(lines):
    text = "data: {}\n\n" + "\n".join(lines)
    _check_saved(_bounded(parse_saved_response, text))
