"""`kurabe lineage`: whether one model was built from another's weights, from real files.

The built-in Gemma-3-270M against (a) itself re-quantized to another type, (b) a perturbed
and re-quantized copy (a stand-in for a fine-tune), (c) a copy with its attention heads
permuted, (d) its synthetic twin (random weights, the same shapes and tokenizer) and (e)
SmolLM2-135M (another architecture); a small MoE against a copy with its experts permuted;
a vocabulary-extended copy; a Hugging Face folder against its GGUF; the command line; and a
shootout whose report shows the lineage of its models of the same shape.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from kurabe import KurabeError, api
from kurabe.cli import app
from kurabe.lineage import FAST_SAMPLE, MATCH_SCORE, LineageError, Sample, compare_lineage
from kurabe.lineage.files import _rope_order, open_gguf
from kurabe.lineage.variants import write_variant
from kurabe.lineage.weights import best_match, paired
from kurabe.records import LineageRow
from kurabe.store import Store
from kurabe.twin.make import make_twin

from tiny_models import model_layout, write_model


def invoke(*args: str):
    return CliRunner().invoke(app, list(args), prog_name="kurabe")


def one_clear_error(result, *needles: str) -> str:
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    err = result.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def evidence(result, kind: str, strength: str | None = None, suggests: str | None = None
             ) -> list[str]:
    return [e.finding for e in result.evidence if e.kind == kind
            and (strength is None or e.strength == strength)
            and (suggests is None or e.suggests == suggests)]


def layer_tensors(result):
    return [t for layer in result.weights.layers for t in layer.tensors]


# -- the files ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def gemma_relatives(gemma_path, tmp_path_factory):
    """Gemma-3-270M's relatives, written once per session."""
    folder = tmp_path_factory.mktemp("lineage-gemma")
    return {
        "requantized": write_variant(gemma_path, folder / "requantized.gguf", quant="Q8_0"),
        "perturbed": write_variant(gemma_path, folder / "perturbed.gguf", perturb=0.1,
                                   quant="Q8_0", seed=1),
        "heads": write_variant(gemma_path, folder / "heads.gguf", permute_heads=True, seed=2),
        "twin": make_twin("builtin:gemma3-270m", folder / "twin.gguf", quant=None),
    }


_results: dict[str, object] = {}


@pytest.fixture(scope="session")
def compared(gemma_path, smollm2_path, gemma_relatives):
    """compared(name) -> the lineage of Gemma-3-270M and that relative (computed once)."""
    def get(name: str):
        if name not in _results:
            other = smollm2_path if name == "smollm2" else gemma_relatives[name].path
            _results[name] = compare_lineage(gemma_path, other)
        return _results[name]
    return get


# -- Gemma-3-270M and its relatives ---------------------------------------------------------


def test_a_requantized_copy_is_derived(compared, gemma_relatives):
    r = compared("requantized")
    assert r.verdict == "derived", r.reason
    assert r.reason.startswith("weights: 18 of 18 layers match") and "same tokenizer" in r.reason
    tensors = layer_tensors(r)
    assert len(tensors) == 18 * 7
    # the Q4_K, Q5_0 and Q6_K matrices are Q8_0 now (most Vs were already), and match
    assert {t.types[1] for t in tensors} == {"Q8_0"}
    assert {tuple(t.types) for t in tensors} == {("Q4_K", "Q8_0"), ("Q5_0", "Q8_0"),
                                                 ("Q6_K", "Q8_0"), ("Q8_0", "Q8_0")}
    assert sum(t.types[0] != t.types[1] for t in tensors) == 117  # of 126
    assert all(t.matched and t.method == "rows in place" and t.similarity > 0.99
               for t in tensors)
    assert all(layer.score > 0.99 for layer in r.weights.layers)
    assert evidence(r, "weights", "strong", "derived") == [
        f"18 of 18 layers match (median best |cos| {r.weights.median('similarity'):.3f} vs "
        f"{r.weights.median('null'):.3f} expected for independent weights; median score "
        f"{r.weights.median('score'):.2f})"]
    embd = next(t for t in r.weights.other if t.name == "token_embd.weight")
    assert embd.matched and embd.types == ["Q8_0", "Q8_0"]
    # sampled: a small fraction of either file was read
    assert 0 < r.sample["fraction_read"]["a"] < 0.05
    assert r.sample["layers_compared"] == r.sample["layers_in_model"] == 18


def test_a_perturbed_copy_is_derived_with_the_noise_visible(compared):
    r = compared("perturbed")
    assert r.verdict == "derived", r.reason
    tensors = layer_tensors(r)
    assert all(t.matched for t in tensors)
    # noise of 0.1 std: |cos| about 1/sqrt(1.01) = 0.995 (less for rows smaller than the
    # tensor's typical row), far above chance, below identity
    sims = [t.similarity for t in tensors]
    assert 0.95 < min(sims) and max(sims) < 0.999 and 0.99 < float(np.median(sims))
    assert all(t.null < 0.1 for t in tensors)
    assert 0.97 < r.score < 0.999
    assert [f for f in evidence(r, "tokenizer", "weak", "derived")
            if f.startswith("identical vocabulary (262,144 tokens")]


def test_a_copy_with_heads_permuted_is_derived_and_the_permutation_found(compared,
                                                                       gemma_relatives):
    r = compared("heads")
    assert r.verdict == "derived", r.reason
    assert "; heads permuted; same tokenizer" in r.reason
    assert evidence(r, "weights", "strong", "derived")[1] == (
        "some tensors match only after reordering (columns searched across heads; rows "
        "searched across heads (all 1024)): heads permuted")
    assert len(gemma_relatives["heads"].permutations) == 36  # query heads and KV heads
    for layer in r.weights.layers:
        assert layer.matched and layer.score > 0.99
        by = {t.name.split(".")[2]: t for t in layer.tensors}
        order = gemma_relatives["heads"].permutations[f"blk.{layer.layer}.heads"]
        moved = sum(i != h for i, h in enumerate(order))
        # Q's rows and the output's columns moved with the heads: found by searching
        assert by["attn_q"].method.startswith("rows searched") and by["attn_q"].score > 0.99
        assert by["attn_output"].method == "columns searched across heads"
        assert by["attn_output"].score > 0.99
        if moved == len(order):  # no head kept its place: in place, only what heads share
            assert by["attn_q"].tried["rows in place"] < 0.5
        # Gemma-3-270M has one KV head: K and V did not move
        assert by["attn_k"].method == by["attn_v"].method == "rows in place"


def test_the_synthetic_twin_is_independent_despite_its_tokenizer_and_shapes(compared):
    r = compared("twin")
    assert r.verdict == "independent", r.reason
    assert r.reason.startswith("weights: none of 18 layers match")
    assert all(not layer.matched and layer.score < 0.05 for layer in r.weights.layers)
    assert all(not t.matched for t in layer_tensors(r) + r.weights.other)
    # the weaker evidence points the other way, and is shown as weak
    assert evidence(r, "tokenizer", "weak", "derived")  # the twin keeps Gemma's tokenizer
    assert evidence(r, "shapes", "weak")[0].startswith("the same tensor-shape signature")
    assert r.shapes["identical"] is True
    assert evidence(r, "declared", "moderate", "independent") == [
        "twin.gguf declares itself a kurabe synthetic twin of builtin:gemma3-270m: random "
        "weights with that model's shapes, not gemma-3-270m-q4_k_m.gguf's weights"]
    assert evidence(r, "weights", "strong", "independent")


def test_smollm2_is_independent_with_no_tensor_to_compare(compared):
    r = compared("smollm2")
    assert r.verdict == "independent", r.reason
    assert r.reason.startswith("no tensor could be compared (different shapes), different "
                               "tokenizers (")
    assert r.weights.layers == [] and r.sample["tensors_compared"] == 0
    assert r.sample["bytes_read"] == {"a": 0, "b": 0}
    assert evidence(r, "tokenizer", "strong", "independent")[0].startswith(
        "different tokenizers:")
    assert r.tokenizer["identical"] is False and r.tokenizer["containment"] < 0.5
    assert evidence(r, "shapes", suggests="independent")[0].startswith(
        "no tensor has the same name and shape in both (gemma3, 18 layers of width 640 vs "
        "llama, 30 layers of width 576)")
    assert evidence(r, "declared", "weak", "independent")[0].startswith(
        "different architectures (gemma3 vs llama)")


def test_the_json_carries_every_piece_of_evidence_per_layer(compared):
    data = json.loads(json.dumps(compared("heads").to_dict()))
    assert {"verdict", "reason", "evidence", "layers", "sample", "seconds"} <= set(data)
    assert all(set(e) == {"kind", "finding", "strength", "suggests"} for e in data["evidence"])
    assert {e["kind"] for e in data["evidence"]} == {"weights", "tokenizer", "shapes",
                                                    "declared"}
    assert [layer["layer"] for layer in data["layers"]] == list(range(18))
    tensor = data["layers"][0]["tensors"][0]
    assert {"name", "method", "similarity", "null", "score", "matched", "tried"} <= set(tensor)
    assert data["sample"]["rows"] == 64 and data["seconds"] > 0


# -- permutations of experts, vocabulary extension, Hugging Face folders ---------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lineage-tiny")
    moe = write_model(folder / "moe.gguf", "qwen3moe", seed=1)
    return {
        "folder": folder, "moe": moe.path,
        "moe-permuted": write_variant(moe.path, folder / "moe-permuted.gguf",
                                      permute_experts=True, permute_heads=True,
                                      perturb=0.05, seed=3),
        "moe-other": write_model(folder / "moe-other.gguf", "qwen3moe", seed=2).path,
        "llama": write_model(folder / "llama.gguf", "llama", seed=0, name="tiny-base"),
        "llama-other": write_model(folder / "llama-other.gguf", "llama", seed=5).path,
    }


def test_experts_permuted_are_found_in_a_moe(tiny):
    # few candidates, so that the experts are searched at a few offsets each, as in big files
    sample = Sample(candidates=64)
    r = compare_lineage(tiny["moe"], tiny["moe-permuted"].path, sample=sample)
    assert r.verdict == "derived", r.reason
    assert "; experts and heads permuted; same tokenizer" in r.reason
    for layer in r.weights.layers:
        by = {t.name.split(".")[2]: t for t in layer.tensors}
        for kind in ("ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"):
            assert by[kind].method == "rows searched across experts", by[kind]
            assert by[kind].matched and by[kind].tried["rows in place"] < MATCH_SCORE
        assert by["ffn_gate_inp"].method == "rows searched across experts (all 8)"
        assert by["ffn_gate_inp"].matched
        assert by["attn_q"].method == "rows searched across heads" and by["attn_q"].matched
        assert by["attn_output"].method == "columns searched across heads"
    other = compare_lineage(tiny["moe"], tiny["moe-other"], sample=sample)
    assert other.verdict == "independent", other.reason
    assert all(layer.score < MATCH_SCORE for layer in other.weights.layers)


def test_a_vocabulary_extended_copy_matches_by_token(tiny):
    """New tokens appended before the special tokens (which move to new ids); each old
    token's embedding row kept, wherever its id now is; the layers as they were."""
    base = open_gguf(tiny["llama"].path)
    tokens_a = base.tokenizer["tokens"]
    extra = [f" word{i}" for i in range(12)]
    tokens_b = list(model_layout("llama", vocab_extra=extra).tokens)
    rng = np.random.default_rng(9)
    overrides = {}
    for name in ("token_embd.weight", "output.weight"):
        old = base.rows(name, np.arange(len(tokens_a)))
        new = rng.standard_normal((len(tokens_b), 64)).astype(np.float32) * 0.125
        for i, token in enumerate(tokens_a):
            new[tokens_b.index(token)] = old[i]
        overrides[name] = new
    extended = write_model(tiny["folder"] / "extended.gguf", "llama", seed=0,
                           vocab_extra=extra, tensor_overrides=overrides)
    moved = [t for i, t in enumerate(tokens_a) if tokens_b.index(t) != i]
    assert moved  # compared by id, these rows would be paired with other tokens' rows
    r = compare_lineage(tiny["llama"].path, extended.path)
    assert r.verdict == "derived", r.reason
    for name in ("token_embd.weight", "output.weight"):
        embd = next(t for t in r.weights.other if t.name == name)
        assert embd.method == "rows by token" and embd.similarity > 0.999
        assert embd.note == f"{len(tokens_a):,} tokens in both vocabularies"
        assert embd.shape == [[64, len(tokens_a)], [64, len(tokens_b)]]
    assert evidence(r, "tokenizer", "weak", "derived")[0].startswith(
        "extended.gguf's vocabulary holds 100% of llama.gguf's")
    assert evidence(r, "shapes", "none")[0].startswith("19 of 21 tensors have the same name and "
                                                       "shape; 2 differ (output.weight")


def _write_safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    header, blobs, offset = {}, [], 0
    for name, array in tensors.items():
        data = np.ascontiguousarray(array).tobytes()
        header[name] = {"dtype": {np.dtype(np.float16): "F16", np.dtype(np.float32): "F32"}[
            array.dtype], "shape": list(array.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))


_HF_NAMES = {"token_embd": "model.embed_tokens", "output": "lm_head", "output_norm": "model.norm",
             "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
             "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
             "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
             "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"}


def test_a_hugging_face_folder_compares_with_its_gguf(tiny):
    """A llama folder (config.json + safetensors) holding the tiny GGUF's weights as the
    Hugging Face checkpoint would: Q and K rows in the order llama.cpp's converter undoes."""
    gguf_model = open_gguf(tiny["llama"].path)
    folder = tiny["folder"] / "hf-llama"
    folder.mkdir()
    tensors = {}
    for name, t in gguf_model.tensors.items():
        values = gguf_model.rows(name, np.arange(t.n_rows))
        values = values.reshape(tuple(reversed(t.shape))) if len(t.shape) > 1 else values[0]
        parts = name.removesuffix(".weight").split(".")
        if parts[0] == "blk":
            hf = f"model.layers.{parts[1]}.{_HF_NAMES[parts[2]]}.weight"
            if parts[2] in ("attn_q", "attn_k"):
                heads = 4 if parts[2] == "attn_q" else 2
                stored = np.empty_like(values)
                stored[_rope_order(values.shape[0], heads)] = values
                values = stored
        else:
            hf = f"{_HF_NAMES[parts[0]]}.weight"
        tensors[hf] = values.astype(np.float16 if t.type_name == "F16" else np.float32)
    _write_safetensors(folder / "model.safetensors", tensors)
    (folder / "config.json").write_text(json.dumps({
        "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 64,
        "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 2}))
    (folder / "README.md").write_text("---\nlicense: apache-2.0\nbase_model:\n"
                                      "- someone/tiny-base\n---\n# a fine-tune\n")
    r = compare_lineage(folder, tiny["llama"].path)
    assert r.verdict == "derived", r.reason
    assert all(t.method == "rows in place" and t.similarity == 1.0 for t in layer_tensors(r))
    assert len(layer_tensors(r)) == 2 * 7
    assert evidence(r, "declared", "moderate", "derived") == [
        "hf-llama declares https://huggingface.co/someone/tiny-base as its base model, which "
        "names llama.gguf (tiny-base); a declaration, not proof"]
    other = compare_lineage(folder, tiny["llama-other"])
    assert other.verdict == "independent", other.reason
    assert not evidence(other, "declared", "moderate")  # its base is not llama-other.gguf


# -- the statistics -------------------------------------------------------------------------


def test_the_null_is_what_unrelated_vectors_score():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((64, 1024)), rng.standard_normal((64, 1024))
    stat = paired(a, b, rng)
    assert stat is not None and stat.score < 0.05 and abs(stat.similarity - stat.null) < 0.02
    assert stat.null == pytest.approx(0.674 / np.sqrt(1024), rel=0.3)
    found = best_match(a, rng.standard_normal((512, 1024)), rng)
    assert found is not None and found.null == pytest.approx(np.sqrt(2 * np.log(512) / 1024),
                                                             rel=0.2)
    # noise as large as the weights: |cos| 1/sqrt(2), still a clear match
    noisy = paired(a, a + rng.standard_normal(a.shape), rng)
    assert noisy is not None and noisy.similarity == pytest.approx(0.707, abs=0.03)
    assert noisy.score > 0.65
    # a sign flipped with its partner's matches too
    assert paired(a, -a, rng).score == pytest.approx(1.0)


def test_the_sample_is_deterministic_and_bounded(tiny):
    one = compare_lineage(tiny["moe"], tiny["moe-other"], sample=Sample(seed=4))
    two = compare_lineage(tiny["moe"], tiny["moe-other"], sample=Sample(seed=4))
    assert one.to_dict()["layers"] == two.to_dict()["layers"]
    few = compare_lineage(tiny["moe"], tiny["moe-other"], sample=Sample(max_layers=1))
    assert few.sample["layers_compared"] == 1 and few.sample["layers_in_model"] == 2
    assert "(1 of 2 layers sampled)" in evidence(few, "weights", "strong")[0]


# -- the command line -----------------------------------------------------------------------


def test_the_command_prints_the_verdict_evidence_and_layers(tiny):
    result = invoke("lineage", str(tiny["moe"]), str(tiny["moe-permuted"].path))
    assert result.exit_code == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "verdict: derived (weights: 2 of 2 layers match" in text
    assert "experts and heads permuted" in text
    for needle in ("evidence", "weights per layer", "sample: 64 rows per tensor (seed 0), 2 of "
                   "2 layers"):
        assert needle in text
    bar = re.search(r"compared\s.*?(\d+)/(\d+)", result.stderr)  # the progress bar
    assert bar is not None and bar.group(1) == bar.group(2) == "18", result.stderr

    result = invoke("lineage", str(tiny["moe"]), str(tiny["moe-other"]), "--json",
                    "--sample", "16", "--layers", "1")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["verdict"] == "independent" and data["reason"].startswith(
        "weights: none of 1 sampled layers match")
    assert data["sample"]["rows"] == 16 and data["sample"]["max_layers"] == 1
    assert len(data["layers"]) == 1 and data["layers"][0]["layer"] == 0
    assert all(set(e) == {"kind", "finding", "strength", "suggests"} for e in data["evidence"])


def test_names_from_the_files_cannot_drive_the_terminal(tiny, tmp_path):
    evil = tmp_path / "evil\x1b[2J.gguf"
    evil.write_bytes(Path(tiny["moe-other"]).read_bytes())
    result = invoke("lineage", str(tiny["moe"]), str(evil))
    assert result.exit_code == 0, result.stderr
    assert "\x1b" not in result.stdout and "evil\\x1b[2J.gguf" in result.stdout


def test_command_line_errors_are_one_line(tiny, tmp_path):
    missing = tmp_path / "missing.gguf"
    one_clear_error(invoke("lineage", str(tiny["moe"]), str(missing)),
                    f"{missing}: no such file")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    one_clear_error(invoke("lineage", str(text), str(tiny["moe"])),
                    f"{text}: not a GGUF file")
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(Path(tiny["moe"]).read_bytes()[:200_000])
    one_clear_error(invoke("lineage", str(tiny["moe"]), str(cut)),
                    f"{cut}: tensor", "runs past the end of the file")
    one_clear_error(invoke("lineage", str(tiny["moe"]), str(tiny["moe"]), "--sample", "1"),
                    "--sample 1: give at least 2 rows per tensor")
    one_clear_error(invoke("lineage", str(tiny["moe"]), str(tiny["moe"]), "--layers", "0"),
                    "--layers 0: give at least 1 layer")
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "llama"}')
    one_clear_error(invoke("lineage", str(folder), str(tiny["moe"])),
                    f"{folder}: config.json without *.safetensors weights")
    # the library names no flag
    with pytest.raises(KurabeError) as err:
        api.lineage(tiny["moe"], tiny["moe"], rows=1)
    assert str(err.value) == "a sample of 1 rows per tensor: give at least 2"
    with pytest.raises(LineageError, match="no such file"):
        compare_lineage(missing, tiny["moe"])


# -- a shootout's report --------------------------------------------------------------------


def test_the_store_keeps_lineage_rows(tmp_path):
    with Store.create(tmp_path / "run") as store:
        store.add_lineage(LineageRow("a", "b", "derived", "weights: 2 of 2 layers match", 0.97,
                                     {"verdict": "derived", "layers": []}))
        rows = store.lineage()
    assert [(r.model_a, r.model_b, r.verdict, r.score, r.result["verdict"]) for r in rows] == [
        ("a", "b", "derived", 0.97, "derived")]


@pytest.mark.engine
def test_a_shootout_of_same_shape_files_shows_their_lineage(tiny, tmp_path):
    from kurabe.config import parse_config

    folder = tiny["folder"]
    copy = write_variant(tiny["llama"].path, folder / "llama-tuned.gguf", perturb=0.1,
                         permute_heads=True, seed=7)
    engine = {"ctx": 256, "threads": 1}
    config = parse_config({
        "run": {"name": "lineage", "repeats": 1, "warmup": 0, "max_tokens": 4,
                "fixed_length": True},
        "models": [{"name": "base", "source": str(tiny["llama"].path), "engine": engine},
                   {"name": "tuned", "source": str(copy.path), "engine": engine},
                   {"name": "other", "source": str(tiny["llama-other"]), "engine": engine}],
        "prompts": [{"id": "p", "text": "hello"}]}, "test")
    run_dir = tmp_path / "run"
    analysis = api.run_shootout(config, run_dir)
    assert [(p["a"], p["b"], p["verdict"]) for p in analysis.lineage] == [
        ("base", "tuned", "derived"), ("base", "other", "independent"),
        ("tuned", "other", "independent")]
    assert analysis.summary_json()["lineage"] == analysis.lineage
    with Store.open(run_dir, read_only=True) as store:
        stored = store.lineage()
    assert stored[0].result["sample"]["rows"] == FAST_SAMPLE.rows
    report = (run_dir / "report.md").read_text(encoding="utf-8")
    row = next(line for line in report.splitlines() if line.startswith("| lineage |"))
    cells = [c.strip() for c in row.split("|")[2:-1]]
    assert re.fullmatch(r"derived: shares weights with tuned \(score (0\.9\d|1\.00)\); "
                        r"independent of other \(score 0\.0\d\)", cells[0]), cells[0]
    assert re.fullmatch(r"independent of base \(score 0\.0\d\); independent of tuned "
                        r"\(score 0\.0\d\)", cells[2]), cells[2]
    assert "- base and tuned: derived (weights: 2 of 2 layers match" in report
    html = (run_dir / "report.html").read_text(encoding="utf-8")
    assert "<tr><td>lineage</td><td>derived: shares weights with tuned" in html
