"""`kurabe inspect` and `kurabe plan` as a user runs them."""

from __future__ import annotations

import json

import gguf
import pytest

from kurabe import KurabeError
from kurabe.simulator.budget import plan_model

from conftest import run_kurabe
from test_quantize import QWEN3_30B_A3B


def test_inspect_gguf_card_matches_an_independent_reader(gemma_path):
    card = json.loads(run_kurabe("inspect", "builtin:gemma3-270m", "--json", check=True).stdout)
    reader = gguf.GGUFReader(gemma_path)  # gguf-py's own parser, independent of kurabe's
    total = sum(int(t.n_elements) for t in reader.tensors)
    assert card["params_total"] == total == card["params_active"]  # dense: all active
    assert card["architecture"] == "gemma3" and card["n_layers"] == 18
    # Gemma 3: every 6th layer is global attention, the rest slide over 512 tokens
    assert card["attention_layers"] == [5, 11, 17] and len(card["swa_layers"]) == 15
    assert card["recurrent_layers"] == [] and card["n_experts"] is None
    assert card["context_length"] == int(reader.fields["gemma3.context_length"].contents())
    assert card["vocab_size"] == 262144 and card["chat_template"] is False
    assert card["file_bytes"] == gemma_path.stat().st_size
    assert set(card) >= {"architecture", "params_total", "params_active", "n_layers",
                         "n_experts", "n_experts_used", "attention_layers", "recurrent_layers",
                         "swa_layers", "context_length", "vocab_size"}


def test_inspect_moe_config_counts_active_parameters(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(QWEN3_30B_A3B))
    card = json.loads(run_kurabe("inspect", str(tmp_path), "--json", check=True).stdout)
    assert card["params_total"] == 30_532_122_624  # derivation in test_quantize.py
    # routed experts: 48 layers * 128 experts * 3 * 2048 * 768 = 28,991,029,248 weights;
    # 8 of 128 run per token, so 120/128 of them are idle: 27,179,089,920 fewer.
    assert card["params_active"] == 30_532_122_624 - 27_179_089_920 == 3_353_032_704
    assert (card["n_experts"], card["n_experts_used"]) == (128, 8)
    assert card["expert_activation_rate"] == pytest.approx(8 / 128)
    assert len(card["attention_layers"]) == 48


def test_plan_ranks_quants_against_a_budget(tmp_path):
    # Ranked for a GPU box (--gpu), whatever this machine has: fully offloaded weights get
    # no CPU_REPACK copy, so the smaller quants fit 20 GiB.
    (tmp_path / "config.json").write_text(json.dumps(QWEN3_30B_A3B))
    done = run_kurabe("plan", str(tmp_path / "config.json"), "--budget", "20GiB", "--ctx", "65536",
                      "--cache-type-k", "q8_0", "--cache-type-v", "q8_0", "--gpu",
                      "--quants", "Q3_K_M,Q4_K_M,Q5_K_M,Q8_0", "--json", check=True)
    result = json.loads(done.stdout)
    budget = 20 * 2**30
    rows = result["quants"]
    assert [r["quant"] for r in rows] == ["Q3_K_M", "Q4_K_M", "Q5_K_M", "Q8_0"]  # by file size
    for r in rows:
        assert r["fits"] == (r["total_bytes"] <= budget)
        assert r["total_bytes"] == sum(r[k] for k in (
            "model_host_bytes", "model_device_bytes", "model_repack_bytes", "kv_bytes",
            "recurrent_bytes", "output_bytes", "compute_bytes"))
        # KV, hand-computed: 48 layers * 65536 cells * 4 KV heads * 128 dims = 1,610,612,736
        # elements each for K and V; q8_0 stores 32 elements in 34 bytes.
        assert r["kv_bytes"] == 2 * 1_610_612_736 * 34 // 32
    fitting = [r["quant"] for r in rows if r["fits"]]
    assert fitting and result["best"] == fitting[-1]
    # every quant is planned with one placement, stated once more at the top
    assert {(r["placement"], r["gpu_assumed"], r["placement_basis"]) for r in rows} == {
        (result["placement"], result["gpu_assumed"], result["placement_basis"])} == {
        ("all 49/49 layers on the GPU", True, "asked")}
    assert not rows[-1]["fits"]  # 30B at Q8_0 is ~30 GiB of weights alone
    text = run_kurabe("plan", str(tmp_path / "config.json"), "--budget", "20GiB", "--ctx",
                      "65536", "--cache-type-k", "q8_0", "--cache-type-v", "q8_0", "--gpu",
                      "--quants", f"{fitting[-1]},Q8_0", check=True).stdout
    assert f"largest quant that fits 20GiB: {fitting[-1]}" in text
    assert "placement: all 49/49 layers on the GPU; a GPU assumed, as asked (--gpu)" in text
    none = run_kurabe("plan", str(tmp_path / "config.json"), "--budget", "20GiB", "--ctx",
                      "65536", "--gpu", "--quants", "Q8_0", check=True).stdout
    assert "none of Q8_0 fits 20GiB" in none


def test_plan_of_a_predicted_quant_with_host_layers(tmp_path):
    # A predicted quant's tensors carry GGML type ids like a file's, so the CPU repack check
    # of host-resident layers works (it once failed on the type names: int('Q4_K')).
    (tmp_path / "config.json").write_text(json.dumps(QWEN3_30B_A3B))
    cpu = plan_model(str(tmp_path / "config.json"), quant="Q4_K_M", gpu=False)
    assert cpu["model_device_bytes"] == 0 and cpu["model_repack_bytes"] > 0
    partial = plan_model(str(tmp_path / "config.json"), quant="Q4_K_M", ngl=10)
    assert 0 < partial["model_repack_bytes"] < cpu["model_repack_bytes"]


def test_plan_json_keys_and_max_ctx(smollm2_path):
    plan = json.loads(run_kurabe("plan", str(smollm2_path), "--ctx", "2048", "--budget", "1GiB",
                                 "--json", check=True).stdout)
    for key in ("model_host_bytes", "model_device_bytes", "kv_bytes", "recurrent_bytes",
                "output_bytes", "compute_bytes", "total_bytes", "fits", "max_ctx"):
        assert key in plan
    # f16 KV by hand: 30 layers * 2048 cells * 3 heads * 64 dims * 2 (K, V) * 2 bytes = 45 MiB
    assert plan["kv_bytes"] == 45 * 2**20
    assert plan["fits"] and plan["max_ctx"] >= 2048


def _machine(tmp_path, gpu: str | None) -> dict[str, str]:
    """An environment whose nvidia-smi reports ``gpu`` (its CSV line) or no GPU at all."""
    import os

    bin_dir = tmp_path / ("gpu" if gpu else "cpu")
    bin_dir.mkdir()
    fake = bin_dir / "nvidia-smi"
    fake.write_text(f"#!/bin/sh\necho '{gpu}'\n" if gpu else "#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


def _plan(*args: str, env) -> dict:
    return json.loads(run_kurabe("plan", "builtin:gemma3-270m", *args, "--json", env=env,
                                 check=True).stdout)


def test_plan_placement_follows_the_machine_unless_told(tmp_path):
    cpu_box = _machine(tmp_path, None)
    gpu_box = _machine(tmp_path, "NVIDIA Test GPU, 24576 MiB, 550.00")
    # no GPU found: nothing offloaded, every byte in host memory
    cpu = _plan(env=cpu_box)
    assert (cpu["placement"], cpu["gpu_assumed"], cpu["n_gpu_layers"]) == ("CPU only", False, 0)
    assert (cpu["placement_basis"], cpu["placement_reason"]) == (
        "machine", "no GPU found on this machine")
    assert cpu["model_device_bytes"] == cpu["device_bytes"] == 0
    assert cpu["total_bytes"] == cpu["host_bytes"]
    # a GPU found: every layer offloaded (18 blocks + the output layer, as llama.cpp counts)
    gpu = _plan(env=gpu_box)
    assert (gpu["placement"], gpu["gpu_assumed"], gpu["n_gpu_layers"]) == (
        "all 19/19 layers on the GPU", True, 19)
    assert gpu["placement_basis"] == "machine" and "NVIDIA Test GPU" in gpu["placement_reason"]
    assert gpu["model_device_bytes"] > 0
    # planning for a GPU box from a CPU-only one, and the other way round
    assert _plan("--gpu", env=cpu_box) | {"placement_reason": None} == gpu | {
        "placement_basis": "asked", "placement_reason": None}
    assert _plan("--no-gpu", env=gpu_box) | {"placement_reason": None} == cpu | {
        "placement_basis": "asked", "placement_reason": None}
    # --ngl N other than 0 assumes a GPU; --ngl 0 offloads nothing, as llama.cpp -ngl 0
    five = _plan("--ngl", "5", env=cpu_box)
    assert (five["placement"], five["gpu_assumed"], five["placement_basis"]) == (
        "5/19 layers on the GPU, 14 on the CPU", True, "asked")
    assert 0 < five["model_device_bytes"] < gpu["model_device_bytes"]
    zero = _plan("--ngl", "0", env=gpu_box)
    assert (zero["n_gpu_layers"], zero["device_bytes"]) == (0, 0)
    assert zero["total_bytes"] == cpu["total_bytes"]
    assert _plan("--gpu", "--ngl", "-1", env=cpu_box)["n_gpu_layers"] == 19


def test_plan_text_names_the_placement(tmp_path):
    cpu_box = _machine(tmp_path, None)
    text = run_kurabe("plan", "builtin:gemma3-270m", env=cpu_box, check=True).stdout
    assert ("placement: CPU only; no GPU found on this machine (--gpu or --ngl N plans an "
            "offload)") in " ".join(text.split())
    header = next(line for line in text.splitlines() if "weights" in line)
    assert "host" not in header and "GPU" not in header  # no host / GPU columns on a CPU
    gpu = run_kurabe("plan", "builtin:gemma3-270m", "--gpu", env=cpu_box, check=True).stdout
    assert ("placement: all 19/19 layers on the GPU; a GPU assumed, as asked (--gpu)"
            in " ".join(gpu.split()))
    header = next(line for line in gpu.splitlines() if "weights" in line)
    assert "host" in header and "GPU" in header
    (tmp_path / "config.json").write_text(json.dumps(QWEN3_30B_A3B))
    ranked = run_kurabe("plan", str(tmp_path / "config.json"), "--budget", "20GiB", "--quants",
                        "Q3_K_M,Q4_K_M", "--ngl", "4", env=cpu_box, check=True).stdout
    assert ("placement: 4/49 layers on the GPU, 45 on the CPU; 4 layers offloaded to a GPU, "
            "as asked (--ngl 4)") in " ".join(ranked.split())


def test_plan_offload_without_a_gpu_is_refused(tmp_path):
    with pytest.raises(KurabeError) as err:
        plan_model("builtin:gemma3-270m", gpu=False, ngl=5)
    assert "--" not in str(err.value)  # the library names no flag; the CLI does
    done = run_kurabe("plan", "builtin:gemma3-270m", "--no-gpu", "--ngl", "5")
    assert done.returncode == 2 and "--ngl 5" in done.stderr and "--no-gpu" in done.stderr


@pytest.mark.parametrize("args, needle", [
    (["inspect", "/etc/hostname"], "not a GGUF file"),
    (["inspect", "/nonexistent.gguf"], "/nonexistent.gguf"),
    (["plan", "builtin:smollm2-135m", "--budget", "lots"], "--budget"),
    (["plan", "builtin:smollm2-135m", "--quants", "Q4_K_M"], "--budget"),
])
def test_bad_model_input_is_one_clear_line(args, needle):
    done = run_kurabe(*args)
    assert done.returncode == 2 and needle in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
