"""`kurabe twin`: what-if variants of a config.json, twins as ordinary models elsewhere, the
quality round's refusal, the examples, and a real speed shootout of scaled-down twins of both
article architectures (qwen3moe and the qwen35moe hybrid)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kurabe import KurabeError, api
from kurabe.backends.scripted import ScriptedReply
from kurabe.cli import app
from kurabe.config import load_config, parse_config
from kurabe.modelfiles.card import quantized_view
from kurabe.modelfiles.gguf_header import read_header
from kurabe.modelfiles.hf_config import read_hf_config
from kurabe.twin.make import TwinInputError, apply_sets, parse_sets, parse_value, twin_header

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
LLMJP = EXAMPLES / "article-models" / "llm-jp-4-32b-a3b.config.json"
QWEN35 = EXAMPLES / "article-models" / "qwen3.5-35b-a3b.config.json"

# The article's architectures, scaled down to a few MB: widths that still split into whole
# K-quant blocks (256), a handful of experts, a small vocabulary; the hybrid keeps its head
# size (the rotary sections are cut for it) and its 3 linear : 1 full layer pattern.
SMALL_LLMJP = {"hidden_size": "256", "num_hidden_layers": "2", "num_attention_heads": "4",
               "num_key_value_heads": "2", "head_dim": "64", "intermediate_size": "512",
               "moe_intermediate_size": "256", "num_experts": "8", "num_experts_per_tok": "2",
               "vocab_size": "4096"}
SMALL_QWEN35 = {"hidden_size": "256", "num_hidden_layers": "4", "num_attention_heads": "2",
                "num_key_value_heads": "1", "moe_intermediate_size": "256",
                "shared_expert_intermediate_size": "256", "num_experts": "8",
                "num_experts_per_tok": "2", "vocab_size": "4096", "linear_num_key_heads": "2",
                "linear_num_value_heads": "4", "linear_key_head_dim": "64",
                "linear_value_head_dim": "64"}


def invoke(*args: str, **kwargs):
    return CliRunner().invoke(app, list(args), prog_name="kurabe", **kwargs)


def one_clear_error(result, *needles: str) -> str:
    """Exit code 2, one line on stderr that names what is wrong, no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    err = result.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def signature(header):
    return header.metadata, [(t.name, tuple(t.shape), t.ggml_type) for t in header.tensors]


def edited(tmp_path: Path, source: Path, name: str, change) -> Path:
    """The config at ``source``, edited by hand with ``change(dict)``, as tmp_path/name."""
    config = json.loads(source.read_text(encoding="utf-8"))
    change(config)
    path = tmp_path / name
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


# -- --set: what the synthesized model becomes ----------------------------------------------


def test_set_on_a_flat_config_is_the_config_edited_by_hand(tmp_path):
    header, cfg = twin_header(str(LLMJP), quant="Q4_K_M",
                              sets={"num_experts": "256", "num_hidden_layers": "40"})
    assert cfg == LLMJP

    def change(c):
        c.update(num_experts=256, num_hidden_layers=40)
    by_hand = read_hf_config(edited(tmp_path, LLMJP, "config.json", change))
    assert signature(header) == signature(by_hand)
    base = read_hf_config(LLMJP)
    assert signature(header) != signature(base)
    assert header.metadata["qwen3moe.expert_count"] == 256
    assert header.metadata["qwen3moe.block_count"] == 40
    # what was not asked for is as it was: every base tensor of a layer that exists in both
    # keeps its shape unless it holds experts
    shapes = {t.name: tuple(t.shape) for t in header.tensors}
    for t in base.tensors:
        if "_exps" in t.name or "ffn_gate_inp" in t.name:
            assert shapes[t.name][-1] == 256 and shapes[t.name][:-1] == tuple(t.shape)[:-1]
        else:
            assert shapes[t.name] == tuple(t.shape), t.name


def test_set_on_a_nested_config_changes_the_text_model_and_follows_its_layout(tmp_path):
    header, _ = twin_header(str(QWEN35), quant="Q4_K_M",
                            sets={"num_experts": "128", "num_hidden_layers": "32"})

    def change(c):
        text = c["text_config"]
        text.update(num_experts=128, num_hidden_layers=32)
        # the 3 linear : 1 full pattern, written out for 32 layers
        text["layer_types"] = ["full_attention" if i % 4 == 3 else "linear_attention"
                               for i in range(32)]
    by_hand = read_hf_config(edited(tmp_path, QWEN35, "config.json", change))
    assert signature(header) == signature(by_hand)
    recurrent = header.metadata["qwen35moe.attention.recurrent_layers"]
    assert len(recurrent) == 32 and recurrent.count(False) == 8
    assert header.metadata["qwen35moe.expert_count"] == 128
    # the change goes to the text model only; the top level (vision tower included) and the
    # config it was given are left as they were
    config = json.loads(QWEN35.read_text(encoding="utf-8"))
    changed = apply_sets(config, {"num_experts": 128, "num_hidden_layers": 32}, "q.json")
    assert {k: v for k, v in changed.items() if k != "text_config"} == \
        {k: v for k, v in config.items() if k != "text_config"}
    assert "num_experts" not in changed and changed["text_config"]["num_experts"] == 128
    assert config == json.loads(QWEN35.read_text(encoding="utf-8"))


def test_full_attention_interval_rebuilds_a_hybrid_layout(tmp_path):
    header, _ = twin_header(str(QWEN35), quant="Q4_K_M", sets={"full_attention_interval": "1"})
    assert header.metadata["qwen35moe.attention.recurrent_layers"] == [False] * 40
    assert not any(t.name.endswith("ssm_out.weight") for t in header.tensors)
    every_other, _ = twin_header(str(QWEN35), quant=None,
                                 sets={"full_attention_interval": "2"})
    assert every_other.metadata["qwen35moe.attention.recurrent_layers"] == [
        i % 2 == 0 for i in range(40)]
    assert every_other.file_type_name == "F16"  # no --quant: a config.json twin is F16
    # an explicit list is taken as it is: the same layers as the interval that makes it
    layout = json.dumps(["linear_attention", "full_attention"] * 20)
    listed, _ = twin_header(str(QWEN35), quant=None, sets={"layer_types": layout})
    assert listed.metadata["qwen35moe.attention.recurrent_layers"] == \
        every_other.metadata["qwen35moe.attention.recurrent_layers"]
    assert signature(listed)[1] == signature(every_other)[1]


def test_values_parse_as_json_and_a_list_without_a_pattern_asks_for_the_list(tmp_path):
    irregular = edited(tmp_path, QWEN35, "irregular.json", lambda c: c["text_config"].update(
        layer_types=["linear_attention"] * 37 + ["full_attention"] * 3))
    with pytest.raises(TwinInputError, match="no repeating pattern.*change layer_types too"):
        twin_header(str(irregular), quant="Q4_K_M", sets={"num_hidden_layers": "32"})
    with pytest.raises(TwinInputError, match="num_experts_per_tok \\(8\\) is more than "
                                             "num_experts \\(4\\); change num_experts_per_tok"):
        twin_header(str(LLMJP), quant="Q4_K_M", sets={"num_experts": "4"})
    with pytest.raises(TwinInputError, match="not a multiple of num_key_value_heads"):
        twin_header(str(LLMJP), quant="Q4_K_M", sets={"num_key_value_heads": "3"})
    with pytest.raises(TwinInputError, match="num_experts is \"many\": expected a whole"):
        twin_header(str(LLMJP), quant="Q4_K_M", sets={"num_experts": "many"})
    assert parse_sets(["a=1", "b=[1, 2]"]) == {"a": "1", "b": "[1, 2]"}
    assert [parse_value(v) for v in ("256", "1e-6", "true", "[1, 2]", "linear")] == [
        256, 1e-6, True, [1, 2], "linear"]
    with pytest.raises(TwinInputError, match="changed twice"):
        parse_sets(["a=1", "a=2"])


def test_a_key_that_changes_nothing_or_misnames_a_count_is_refused():
    with pytest.raises(TwinInputError, match="sliding_window changes nothing in the qwen3moe "
                                             "model built from llm-jp-4-32b-a3b.config.json"):
        twin_header(str(LLMJP), quant="Q4_K_M", sets={"sliding_window": "128"})
    with pytest.raises(TwinInputError, match="names this count 'num_experts', not "
                                             "'num_local_experts'"):
        twin_header(str(LLMJP), quant="Q4_K_M", sets={"num_local_experts": "64"})
    # the value it already has is no change, and no error
    same, _ = twin_header(str(LLMJP), quant="Q4_K_M", sets={"num_experts": "128"})
    assert signature(same) == signature(read_hf_config(LLMJP))


# -- the command line -----------------------------------------------------------------------


def test_twin_help_names_its_values_plainly():
    result = invoke("twin", "-h", terminal_width=80)
    assert result.exit_code == 0
    assert result.stdout == invoke("twin", "--help", terminal_width=80).stdout
    lines = result.stdout.splitlines()
    assert max(map(len, lines)) <= 80 and not any(line.endswith(" ") for line in lines)
    for shown in ("Usage: kurabe twin [OPTIONS] {MODEL}", "-o, --out PATH", "--quant TYPE",
                  "--set KEY=VALUE", "--seed N", "--force"):
        assert shown in result.stdout, shown
    assert not re.search(r"<(?:str|int|text|list\[[^\]]*\])>|\bTEXT\b", result.stdout)
    assert "twin" in invoke("-h").stdout


def test_command_line_errors_name_the_flag_and_write_nothing(tmp_path):
    out = tmp_path / "t.gguf"
    one_clear_error(invoke("twin", str(LLMJP), "--set", "num_expert=256", "-o", str(out)),
                    "--set num_expert=256: unknown key 'num_expert'",
                    "did you mean 'num_experts'?")
    one_clear_error(invoke("twin", str(LLMJP), "--set", "num_experts", "-o", str(out)),
                    "--set num_experts: expected KEY=VALUE")
    one_clear_error(invoke("twin", str(LLMJP), "--quant", "Q4_KM", "-o", str(out)),
                    "--quant Q4_KM: unknown quant type 'Q4_KM'; did you mean Q4_K_M?")
    one_clear_error(invoke("twin", str(LLMJP), "--quant", "Q4_K_M"), "missing -o PATH")
    one_clear_error(invoke("twin", str(LLMJP), "-o", str(tmp_path / "no" / "t.gguf")),
                    f"-o {tmp_path / 'no' / 't.gguf'}: the folder {tmp_path / 'no'} does "
                    "not exist")
    one_clear_error(invoke("twin", "builtin:smollm2-135m", "--set", "num_experts=4",
                           "-o", str(out)),
                    "--set num_experts=4: builtin:smollm2-135m is a GGUF model",
                    "need the model's config.json")
    one_clear_error(invoke("twin", str(tmp_path / "missing.json"), "-o", str(out)),
                    f"{tmp_path / 'missing.json'}: no such file")
    assert not out.exists()
    out.write_bytes(b"keep me")
    one_clear_error(invoke("twin", str(LLMJP), "-o", str(out)),
                    f"-o {out}: exists; add --force to replace it")
    assert out.read_bytes() == b"keep me"


# -- small twins: written, inspected, refused by the quality round ---------------------------


@pytest.fixture(scope="module")
def small_twins(tmp_path_factory):
    """Scaled-down twins of both article models, written by the command a user runs."""
    folder = tmp_path_factory.mktemp("twins")
    paths = {}
    for name, config, quant, sets in (("llmjp", LLMJP, "Q5_K_M", SMALL_LLMJP),
                                      ("qwen35", QWEN35, "Q4_K_M", SMALL_QWEN35)):
        out = folder / f"{name}.gguf"
        args = ["twin", str(config), "--quant", quant, "-o", str(out)]
        for k, v in sets.items():
            args += ["--set", f"{k}={v}"]
        result = invoke(*args)
        assert result.exit_code == 0, result.stderr
        assert f"wrote {out}" in result.stdout and "kurabe plan" in result.stdout
        paths[name] = out
    return paths


def test_a_twin_has_the_planned_shapes_and_types_and_says_what_it_is(small_twins):
    twin = read_header(small_twins["qwen35"])
    header, _ = twin_header(str(QWEN35), quant="Q4_K_M", sets=SMALL_QWEN35)
    view, _ = quantized_view(header, "Q4_K_M")
    def written(tensors):  # as llama-quantize writes a shape: no trailing dimensions of 1
        out = []
        for t in tensors:
            shape = list(t.shape)
            while len(shape) > 1 and shape[-1] == 1:
                shape.pop()
            out.append((t.name, tuple(shape), t.ggml_type))
        return sorted(out)
    assert written(twin.tensors) == written(view.tensors)
    assert twin.metadata["kurabe.twin"] is True
    assert twin.metadata["kurabe.twin.source"] == "qwen3.5-35b-a3b.config.json"
    assert twin.metadata["kurabe.twin.quant"] == "Q4_K_M"
    assert json.loads(twin.metadata["kurabe.twin.sets"])["num_experts"] == 8
    assert twin.file_type_name == "Q4_K_M"

    card = json.loads(invoke("inspect", str(small_twins["qwen35"]), "--json").stdout)
    assert card["twin"]["source"] == "qwen3.5-35b-a3b.config.json"
    assert card["twin"]["sets"]["num_hidden_layers"] == 4
    assert card["quant"] == "Q4_K_M" and card["n_experts"] == 8
    assert len(card["recurrent_layers"]) == 3 and len(card["attention_layers"]) == 1
    table = invoke("inspect", str(small_twins["llmjp"])).stdout
    assert "twin of llm-jp-4-32b-a3b.config.json at Q5_K_M (random weights), with " \
           "hidden_size=256" in " ".join(table.split())
    real = json.loads(invoke("inspect", "builtin:smollm2-135m", "--json").stdout)
    assert real["twin"] is None
    assert "twin of" not in invoke("inspect", "builtin:smollm2-135m").stdout


def test_a_twin_of_a_twin_keeps_its_types_and_names_its_source(small_twins, tmp_path):
    out = tmp_path / "again.gguf"
    result = api.make_twin(str(small_twins["llmjp"]), out, seed=1)
    again, first = read_header(out), read_header(small_twins["llmjp"])
    assert result.path == out and result.n_tensors == len(first.tensors)
    assert [(t.name, t.shape, t.ggml_type) for t in again.tensors] == \
        [(t.name, t.shape, t.ggml_type) for t in first.tensors]
    assert again.metadata["kurabe.twin.source"] == "llmjp.gguf"
    assert again.metadata["kurabe.twin.quant"] == "Q5_K_M"


def test_the_quality_round_refuses_a_twin_before_the_run_folder_exists(small_twins, tmp_path,
                                                                       script):
    twin = str(small_twins["llmjp"])
    answering = parse_config({
        "run": {"name": "t", "repeats": 1, "warmup": 0},
        "models": [{"name": "a", "source": twin}, {"name": "b", "source": script("ok")}],
        "quality": {"suites": ["builtin:ja_core"], "per_category": 1}}, "test")
    run_dir = tmp_path / "run"
    with pytest.raises(KurabeError) as err:
        api.run_shootout(answering, run_dir)
    assert str(err.value) == (
        "model 'a' is a synthetic twin (random weights): it has no answers worth grading; "
        "leave it out of [quality] or use the real model file")
    assert not run_dir.exists()

    judging = parse_config({
        "run": {"name": "t", "repeats": 1, "warmup": 0},
        "models": [{"name": "b", "source": script(ScriptedReply(content="ok"))}],
        "judges": [{"name": "j", "source": twin}],
        "quality": {"suites": ["builtin:ja_core"], "per_category": 1, "judge": "j"}}, "test")
    with pytest.raises(KurabeError, match="model 'j' is a synthetic twin .*cannot grade"):
        api.run_shootout(judging, run_dir)
    assert not run_dir.exists()

    # left out of the quality round, a twin is no obstacle; named as a new judge for a
    # finished run's answers, it is refused before the run is changed
    from kurabe.modelfiles.resolve import resolve_model
    from kurabe.orchestrator import refuse_twins_in_quality
    from kurabe.store import Store

    fine = parse_config({
        "run": {"name": "t", "repeats": 1, "warmup": 0},
        "models": [{"name": "a", "source": twin}, {"name": "b", "source": script("ok")}],
        "quality": {"suites": ["builtin:ja_core"], "per_category": 1, "models": ["b"]}},
        "test")
    assert refuse_twins_in_quality(fine, {"a": resolve_model("a", twin, "file")}) is None
    scripted = parse_config({
        "run": {"name": "t", "repeats": 1, "warmup": 0, "max_tokens": 8},
        "models": [{"name": "b", "source": script(ScriptedReply(content="はい"))}],
        "prompts": [{"id": "p1", "text": "質問"}],
        "quality": {"suites": ["builtin:ja_core"], "per_category": 1, "max_tokens": 8}},
        "test")
    api.run_shootout(scripted, run_dir)
    with pytest.raises(KurabeError, match="model 'j' is a synthetic twin .*cannot grade"):
        api.rejudge(run_dir, f"j={twin}")
    with Store.open(run_dir) as store:
        stored = parse_config(json.loads(store.run().config_json), "store")
    assert stored.quality is not None and stored.quality.judge is None and not stored.judges


# -- the examples ---------------------------------------------------------------------------


def test_every_example_config_loads_and_its_twins_are_the_readme_commands():
    tomls = sorted(EXAMPLES.glob("*.toml"))
    assert {p.name for p in tomls} == {"article-review.toml", "article-twins.toml",
                                       "ablation.toml"}
    readme = " ".join((EXAMPLES / "README.md").read_text(encoding="utf-8")
                      .replace("\\\n", " ").split())
    for path in tomls:
        config = load_config(path)
        assert config.run.fixed_length and config.quality is None
        for m in config.models:
            assert m.engine.ctx == 65536
            assert (m.engine.cache_type_k, m.engine.cache_type_v) == ("q8_0", "q8_0")
            if path.name != "article-review.toml":  # twins: written by a README command
                assert f"-o examples/twins/{Path(m.source).name}" in readme
    ablation = load_config(EXAMPLES / "ablation.toml")
    assert [m.name for m in ablation.models] == ["qwen3.5", "experts128", "layers32",
                                                 "full-attention", "llm-jp-4-q4", "llm-jp-4"]
    for name in ("llm-jp-4-32b-a3b.config.json", "qwen3.5-35b-a3b.config.json", "README.md"):
        copied = EXAMPLES / "article-models" / name
        assert copied.is_file()
        shared = ROOT.parent / "shared" / "data" / "article-models" / name
        if shared.is_file():
            assert copied.read_bytes() == shared.read_bytes()


def test_the_ablation_variants_differ_one_change_at_a_time():
    """Each README command's header differs from the one before in what the table says."""
    chain = [{}, {"num_experts": "128"}, {"num_experts": "128", "num_hidden_layers": "32"},
             {"num_experts": "128", "num_hidden_layers": "32", "full_attention_interval": "1"}]
    headers = [twin_header(str(QWEN35), quant="Q4_K_M", sets=s)[0] for s in chain]
    md = [h.metadata for h in headers]
    assert [m["qwen35moe.expert_count"] for m in md] == [256, 128, 128, 128]
    assert [m["qwen35moe.block_count"] for m in md] == [40, 40, 32, 32]
    assert [m["qwen35moe.attention.recurrent_layers"].count(True) for m in md] == [30, 30, 24, 0]
    readme = " ".join((EXAMPLES / "README.md").read_text(encoding="utf-8")
                      .replace("\\\n", " ").split())
    for sets in chain[1:]:
        assert " ".join(f"--set {k}={v}" for k, v in sets.items()) in readme


# -- a real shootout of scaled-down twins of both article architectures ---------------------


def test_a_twin_is_served_with_the_real_models_chat_template(tmp_path):
    """The Gemma 3 GGUF carries no template; kurabe serves it with Gemma's turn format, and
    its twin carries that one, not ChatML. A config.json folder's template is the twin's."""
    from kurabe.modelfiles.builtin import GEMMA_CHAT_TEMPLATE

    out = tmp_path / "gemma-twin.gguf"
    api.make_twin("builtin:gemma3-270m", out)
    twin = read_header(out)
    assert twin.metadata["tokenizer.chat_template"] == GEMMA_CHAT_TEMPLATE
    assert "<|im_start|>" not in twin.metadata["tokenizer.chat_template"]

    folder = tmp_path / "model"
    folder.mkdir()
    config = json.loads(LLMJP.read_text(encoding="utf-8"))
    config.update({k: parse_value(v) for k, v in SMALL_LLMJP.items()})
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"chat_template": "{% for m in messages %}[{{ m.role }}] {{ m.content }}{% endfor %}"}),
        encoding="utf-8")
    api.make_twin(str(folder), tmp_path / "small.gguf", quant="Q8_0")
    assert read_header(tmp_path / "small.gguf").metadata["tokenizer.chat_template"] == \
        "{% for m in messages %}[{{ m.role }}] {{ m.content }}{% endfor %}"


def test_scaled_down_twins_of_both_architectures_run_a_speed_shootout(small_twins, tmp_path):
    engine = {"ctx": 1024, "threads": 2}
    config = parse_config({
        "run": {"name": "twins", "repeats": 2, "warmup": 1, "max_tokens": 24,
                "fixed_length": True},
        "models": [{"name": "llm-jp-4", "source": str(small_twins["llmjp"]), "engine": engine},
                   {"name": "qwen3.5", "source": str(small_twins["qwen35"]), "engine": engine}],
        "prompts": [{"id": f"p{i}", "text": text, "category": "knowledge"}
                    for i, text in enumerate(["光合成とは何ですか。", "Explain tides.",
                                              "短い物語を書いてください。", "What is a prime?",
                                              "京都について教えてください。"])],
    }, "test")
    run_dir = tmp_path / "run"
    analysis = api.run_shootout(config, run_dir)
    assert analysis.complete
    speed = analysis.speed
    for m in ("llm-jp-4", "qwen3.5"):
        assert speed.per_model[m]["decode_tokens_per_s"].median > 0
        assert speed.per_model[m]["output_tokens"].median == 24  # fixed length: EOS ignored
    assert [(c.a, c.b) for c in speed.comparisons if c.metric == "decode_tokens_per_s"] == [
        ("llm-jp-4", "qwen3.5")]
    # the engine loaded the weights the planner predicted (the log rounds to 0.01 MiB)
    assert len(analysis.loading) == 2
    for load in analysis.loading:
        weights = next(r for r in load["rows"] if r["buffer"] == "model weights")
        assert abs(weights["predicted_bytes"] - weights["observed_bytes"]) <= 0.01 * 2**20, load
    report = (run_dir / "report.md").read_text(encoding="utf-8")
    assert "| llm-jp-4 (twin) |" in report and "| qwen3.5 (twin) |" in report
    assert "twin of qwen3.5-35b-a3b.config.json at Q4_K_M" in report
    html = (run_dir / "report.html").read_text(encoding="utf-8")
    assert html.count('<small class="twin">(twin)</small>') >= 4
