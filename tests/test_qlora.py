"""4-bit loading on the CPU: the clear errors, and the bitsandbytes repacking problem helpers work around."""
import sys

import bitsandbytes as bnb
import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, BitsAndBytesConfig, LlamaConfig, LlamaForCausalLM

from helpers.models import check_4bit_support, keep_4bit_trainable_on_cpu


def test_4bit_works_on_this_cpu():
    check_4bit_support("cpu")  # no error


def test_4bit_without_bitsandbytes_says_what_to_do(monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import now fails, as on a machine without it
    monkeypatch.setitem(sys.modules, "bitsandbytes.functional", None)
    with pytest.raises(RuntimeError) as error:
        check_4bit_support("cpu")
    message = str(error.value)
    assert "4-bit loading needs bitsandbytes" in message and "pip install bitsandbytes==0.50.2" in message
    assert "train a LoRA adapter on the unquantized model" in message and "T4 GPU" in message


def test_4bit_on_a_device_without_kernels_says_what_to_do():
    with pytest.raises(RuntimeError, match=r"bitsandbytes cannot run 4-bit NF4 on the 'meta' device here .*"
                                           r"train a LoRA adapter on the unquantized model"):
        check_4bit_support("meta")  # a device with no bitsandbytes kernel


@pytest.fixture(scope="module")
def tiny_llama_folder(tmp_path_factory):
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=128, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    folder = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def lora_gradients(folder, keep_trainable: bool, eval_first: bool) -> torch.Tensor:
    """Load in 4-bit, add LoRA, optionally run an eval forward first; all LoRA gradients of one step, flattened."""
    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                      bnb_4bit_compute_dtype=torch.float32)
    model = AutoModelForCausalLM.from_pretrained(folder, quantization_config=quantization, dtype=torch.float32)
    if keep_trainable:
        assert keep_4bit_trainable_on_cpu(model) == 2 * 7  # 7 linear layers a block (lm_head stays 16/32-bit)
    torch.manual_seed(0)
    model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    ids = torch.randint(0, 128, (2, 16))
    if eval_first:  # e.g. generating answers before training
        model.eval()
        with torch.no_grad():
            model(input_ids=ids)
    model.train()
    model(input_ids=ids, labels=ids).loss.backward()
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad])


def test_keep_4bit_trainable_keeps_gradients_after_an_eval_pass(tiny_llama_folder):
    fresh = lora_gradients(tiny_llama_folder, keep_trainable=True, eval_first=False)
    after_eval = lora_gradients(tiny_llama_folder, keep_trainable=True, eval_first=True)
    assert fresh.norm() > 0
    torch.testing.assert_close(after_eval, fresh, rtol=1e-4, atol=1e-7)


@pytest.mark.skipif(not bnb.functional.has_avx512bf16(), reason="the repacking only happens on AVX512-BF16 CPUs")
@pytest.mark.filterwarnings("ignore:.*autograd kernel was not registered")
def test_the_bitsandbytes_problem_is_still_there(tiny_llama_folder):
    """If this fails after upgrading bitsandbytes, the problem is fixed upstream: drop keep_4bit_trainable_on_cpu."""
    fresh = lora_gradients(tiny_llama_folder, keep_trainable=False, eval_first=False)
    after_eval = lora_gradients(tiny_llama_folder, keep_trainable=False, eval_first=True)
    assert (after_eval - fresh).norm() > 0.1 * fresh.norm(), "gradients after an eval pass should be wrong"


def test_memory_estimates_for_an_8b_llama():
    from helpers.memory import rule_of_thumb_gb, training_memory_gb

    assert rule_of_thumb_gb(8e9, bits=4) == pytest.approx(4.8)
    assert rule_of_thumb_gb(8e9, bits=16) == pytest.approx(19.2)
    llama_8b = dict(params=8.03e9, trainable=41_943_040, weight_bits=4, batch_size=4, seq_len=256, hidden_size=4096,
                    num_layers=32, vocab_size=128256,  # LoRA r=16 on all 7 linear layers of 32 blocks
                    unquantized_params=2 * 128256 * 4096,  # input embedding and (untied) output layer, float32
                    output_params=128256 * 4096)
    with_checkpointing = training_memory_gb(**llama_8b, gradient_checkpointing=True)
    without = training_memory_gb(**llama_8b, gradient_checkpointing=False)
    assert with_checkpointing["weights"] == pytest.approx((8.03e9 - 2 * 128256 * 4096) / 2 / 1e9 + 4.202, abs=1e-3)
    assert with_checkpointing["16-bit copy of the output layer"] == pytest.approx(128256 * 4096 * 2 / 1e9)
    assert with_checkpointing["logits"] == pytest.approx(4 * 256 * 128256 * 16 / 1e9)
    assert 11 < with_checkpointing["total"] < 13  # fits a T4 (~15 GB usable), with less room than the 4 bits suggest
    assert without["activations"] > 4 * with_checkpointing["activations"]
    assert with_checkpointing["total"] == pytest.approx(sum(v for k, v in with_checkpointing.items() if k != "total"))


def test_the_cpu_memory_estimate_counts_float32_weights_at_four_bytes():
    """Bug: lora_run_estimate priced every unquantized base at 16 bits, also on the cpu profile, which holds float32."""
    from helpers import memory
    from helpers.profiles import PROFILES

    cpu = PROFILES["cpu"]
    shape = memory.MODEL_SHAPES[cpu.pref_model]
    estimate = memory.lora_run_estimate(cpu.pref_model, cpu, sequences=1, seq_len=8)
    assert estimate["weights"] == pytest.approx(shape["params"] * 4 / 1e9, rel=1e-6)
    half = memory.lora_run_estimate(cpu.pref_model, dataclasses_replace(cpu, bf16=True, needs_gpu=True),
                                    sequences=1, seq_len=8)
    assert half["weights"] == pytest.approx(estimate["weights"] / 2, rel=1e-6)  # a GPU profile's 16-bit weights


def dataclasses_replace(profile, **changes):
    import dataclasses

    return dataclasses.replace(profile, **changes)


def test_the_kv_cache_estimate_is_what_a_real_cache_holds():
    """memory.kv_cache_gb against the bytes of the DynamicCache a forward pass of SmolLM2-135M's architecture fills
    (float32 here: 4 bytes a value): keys and values of kv_dim numbers per position, in every layer."""
    from transformers import AutoConfig, DynamicCache

    import helpers
    from helpers import memory

    model_id = "HuggingFaceTB/SmolLM2-135M-Instruct"
    config = AutoConfig.from_pretrained(helpers.model_path(model_id))
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()  # random weights: only the shapes matter
    cache = DynamicCache(config=config)
    with torch.no_grad():
        model(input_ids=torch.randint(0, 1000, (3, 10)), past_key_values=cache, use_cache=True)
    held = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))
    assert held == pytest.approx(memory.kv_cache_gb(model_id, rows=3, tokens=10, bytes_per_value=4) * 1e9, rel=1e-9)
    assert memory.kv_cache_gb("HuggingFaceTB/SmolLM2-1.7B-Instruct", 128, 70 + 144) == pytest.approx(5.39, abs=0.01)
