"""The benchmark's roofline: model FLOPs counted from the tokens a model sees, checked against torch's own count of
the matrix products that ran, and the cpu profile's precision chosen by measurement."""
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import LlamaConfig, LlamaForCausalLM

import helpers
from helpers.profiles import CPU_PRECISION_ENV, Hardware, cpu_precision, select_profile
from helpers.tracking import FlopCounter, matmul_params, roofline

MATMULS = {torch.ops.aten.mm, torch.ops.aten.addmm, torch.ops.aten.bmm}


def tiny_llama(tie=False):
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=tie)
    return LlamaForCausalLM(config)


def reference_matmul_flops(run) -> int:
    """FLOPs of the matrix products torch dispatched while `run()` ran (forward and backward)."""
    with FlopCounterMode(display=False) as mode:
        run()
    counts = mode.get_flop_counts()["Global"]
    return sum(v for op, v in counts.items() if op in MATMULS or getattr(op, "overloadpacket", None) in MATMULS)


def test_matmul_params_counts_every_linear_layer_including_the_output_projection():
    model = tiny_llama()
    layer = 4 * 64 * 64 + 3 * 64 * 128  # q, k, v, o and the three MLP projections
    assert matmul_params(model) == (2 * layer + 64 * 256, 2 * layer + 64 * 256)


@pytest.mark.parametrize("tie", [False, True])
def test_full_fine_tuning_costs_six_flops_per_weight_and_token(tie):
    model = tiny_llama(tie)
    ids = torch.randint(0, 256, (3, 10))
    counter = FlopCounter(model)

    def step():
        model(input_ids=ids, labels=ids).loss.backward()

    with counter:
        expected = reference_matmul_flops(step)
    assert counter.train_tokens == 30 and counter.eval_tokens == 0
    assert counter.flops == 6 * matmul_params(model)[0] * 30 == expected


def test_a_forward_without_gradients_costs_two_flops_per_weight_and_token():
    model = tiny_llama()
    ids = torch.randint(0, 256, (2, 7))
    counter = FlopCounter(model)

    def forward():
        with torch.no_grad():
            model(input_ids=ids)

    with counter:
        expected = reference_matmul_flops(forward)
    assert counter.eval_tokens == 14 and counter.flops == expected == 2 * matmul_params(model)[0] * 14


def test_lora_on_a_frozen_model_costs_about_four_flops_per_weight_and_token():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_llama(), LoraConfig(r=4, target_modules="all-linear", lora_dropout=0.0))
    ids = torch.randint(0, 256, (2, 8))
    counter = FlopCounter(model)
    with counter:
        expected = reference_matmul_flops(lambda: model(input_ids=ids, labels=ids).loss.backward())
    total, trainable = matmul_params(model)
    assert trainable < total / 5 and counter.flops == 16 * (4 * total + 2 * trainable)
    # the count assumes every layer's input needs a gradient; the first layer's projections read the frozen
    # embeddings and need none, a large share of a 2-layer model, a small one of a 30-layer one
    assert 0.85 * counter.flops < expected <= counter.flops


def test_generation_counts_each_new_token_once_thanks_to_the_kv_cache():
    model = tiny_llama().eval()
    ids = torch.randint(1, 256, (2, 5))
    with helpers.measure(model) as m:
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=4, do_sample=False,
                             min_new_tokens=4, pad_token_id=0)
    assert out.shape == (2, 9)
    assert m.eval_tokens == 2 * 5 + 2 * 3  # the prompts once, then one position per sequence per new token
    assert m.train_tokens == 0 and m.flops == 2 * matmul_params(model)[0] * m.eval_tokens


def test_measure_without_models_counts_nothing():
    with helpers.measure() as m:
        pass
    assert m.flops is None


def test_roofline_share_uses_the_peak_of_the_precision_that_ran(monkeypatch):
    peaks = Hardware(cpu_gflops={"float32": 400.0, "bfloat16": 2000.0})
    monkeypatch.setattr("helpers.profiles.detect_hardware", lambda: peaks)
    row = roofline(1e12, 2.0, "bfloat16")  # 500 GFLOP/s
    assert row["gflops_per_s"] == 500.0 and row["peak_gflops_per_s"] == 2000.0 and row["peak_share"] == 0.25
    assert roofline(1e12, 2.0, "float32")["peak_share"] == 1.25  # above 1: a sign of a bad count, kept visible
    assert roofline(None, 2.0, "float32") == {}


@pytest.mark.parametrize("gflops, expected", [
    ({"float32": 440.0, "bfloat16": 2850.0}, "bfloat16"),  # AMX / AVX512-BF16: this CI machine
    ({"float32": 200.0, "bfloat16": 250.0}, "float32"),  # bfloat16 converted in software: not worth it
    (None, "float32"),  # not measured (a hand-built Hardware in the tests)
])
def test_auto_cpu_precision_is_bfloat16_only_where_measured_clearly_faster(gflops, expected, monkeypatch):
    monkeypatch.setenv(CPU_PRECISION_ENV, "auto")
    hardware = Hardware(cpu_gflops=gflops)
    assert cpu_precision(hardware)[0] == expected
    profile = select_profile("cpu", hardware=hardware)
    assert profile.bf16 == (expected == "bfloat16") and not profile.fp16
    assert "bfloat16 mixed precision" in helpers.describe(profile, hardware) or expected == "float32"


def test_cpu_precision_is_float32_unless_asked_and_rejects_typos(monkeypatch):
    fast = Hardware(cpu_gflops={"float32": 440.0, "bfloat16": 2850.0})
    monkeypatch.delenv(CPU_PRECISION_ENV, raising=False)
    assert not select_profile("cpu", hardware=fast).bf16  # the default, even where bfloat16 is fast
    described = helpers.describe(select_profile("cpu", hardware=fast), fast)
    assert "float32 (the default; COURSE_CPU_PRECISION=auto" in described
    monkeypatch.setenv(CPU_PRECISION_ENV, "bfloat16")
    assert select_profile("cpu", hardware=Hardware()).bf16  # forced, measured or not
    monkeypatch.setenv(CPU_PRECISION_ENV, "float32")
    assert not select_profile("cpu", hardware=fast).bf16
    assert "set by COURSE_CPU_PRECISION" in helpers.describe(select_profile("cpu", hardware=fast), fast)
    monkeypatch.setenv(CPU_PRECISION_ENV, "fp16")
    with pytest.raises(ValueError, match=r"use float32 \(the default\), bfloat16 or auto \(measure\)"):
        select_profile("cpu", hardware=fast)
    monkeypatch.setenv(CPU_PRECISION_ENV, "auto")
    assert not select_profile("cpu", hardware=fast, bf16=False).bf16  # an explicit override wins


def test_the_precision_only_changes_on_the_cpu_profile():
    fast = Hardware(cpu_gflops={"float32": 440.0, "bfloat16": 2850.0})
    assert select_profile("t4-sim", hardware=fast).fp16 and not select_profile("t4-sim", hardware=fast).bf16


def test_the_matmul_probe_measures_fast_and_slow_kernels():
    from helpers.profiles import matmul_gflops

    assert matmul_gflops(torch.float32, size=512) > 1
    # float16 has no fast CPU kernel here (about 1 GFLOP/s): the probe sizes itself down instead of taking minutes
    assert matmul_gflops(torch.float16, budget_s=0.05) > 0


def test_the_hardware_probe_leaves_the_notebooks_random_stream_alone(tmp_path, monkeypatch):
    """Bug: the probe drew its test matrices from torch's global generator, and only when runs/machine.json was not
    cached yet. A notebook calls set_seed(0) and then select_profile(), so the first notebook of a fresh run drew
    other random numbers than a rerun: notebook 05 run first on a fresh clone trained another reward-model head
    (margin 4.2 instead of 5.2) and a PPO run that found no reward hack."""
    import helpers.tracking
    from helpers.profiles import measure_cpu_gflops

    monkeypatch.setattr(helpers.tracking, "RUNS", tmp_path)  # no cache: the probe measures
    torch.manual_seed(0)
    measure_cpu_gflops()
    after_probe = torch.rand(3)
    torch.manual_seed(0)
    assert torch.equal(after_probe, torch.rand(3)), "the probe moved torch's global random stream"
    assert (tmp_path / "machine.json").exists()


def test_make_test_bf16_stops_with_a_message_on_a_cpu_without_bfloat16_kernels(tmp_path):
    """CI can land on an AVX2-only machine: bfloat16 at about 2 GFLOP/s there against 45 in float32, and notebook 01 in
    bfloat16 would run for hours (past CI's limit). There make test-bf16 says why it did not run and succeeds; `auto`
    never picks bfloat16 on such a CPU. (Where bfloat16 is fast it runs notebook 01: make test does that.)"""
    import json
    import os
    import subprocess
    from pathlib import Path

    from helpers.profiles import _machine_key

    root = Path(__file__).resolve().parents[1]
    (tmp_path / "machine.json").write_text(json.dumps(
        {"machine": _machine_key(), "gflops": {"float32": 45.8, "bfloat16": 1.8}}))  # as measured on an AVX2 VM
    env = {**os.environ, "COURSE_RUNS_DIR": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(["make", "-s", "--no-print-directory", "-o", ".venv/.installed", "test-bf16"], cwd=root,
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "bfloat16 2, float32 46 GFLOP/s" in result.stdout
    assert "test-bf16 NOT RUN: this CPU multiplies bfloat16 slower than float32" in result.stdout
    assert "pytest" not in result.stdout + result.stderr, "it must not start the notebook run"
