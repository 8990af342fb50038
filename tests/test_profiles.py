import pytest
import torch

from helpers.profiles import PROFILES, Hardware, auto_profile_name, select_profile

CPU = Hardware()
T4 = Hardware(gpu_name="Tesla T4", gpu_memory_gb=15.0, bf16_supported=False)
L4 = Hardware(gpu_name="NVIDIA L4", gpu_memory_gb=22.5, bf16_supported=True)
A100 = Hardware(gpu_name="NVIDIA A100-SXM4-80GB", gpu_memory_gb=79.3, bf16_supported=True)


@pytest.mark.parametrize("hardware, expected", [(CPU, "cpu"), (T4, "t4"), (L4, "l4"), (A100, "large")])
def test_auto_detection_picks_the_profile_for_the_card(hardware, expected, monkeypatch):
    monkeypatch.delenv("COURSE_PROFILE", raising=False)  # make test exports COURSE_PROFILE=cpu
    assert auto_profile_name(hardware) == expected
    assert select_profile(hardware=hardware).name == expected


def test_environment_variable_forces_a_profile(monkeypatch):
    monkeypatch.setenv("COURSE_PROFILE", "t4")
    assert select_profile(hardware=A100).name == "t4"
    monkeypatch.setenv("COURSE_PROFILE", "auto")
    assert select_profile(hardware=A100).name == "large"


def test_unknown_profile_lists_the_valid_ones():
    with pytest.raises(ValueError) as error:
        select_profile("a100", hardware=CPU)
    message = str(error.value)
    assert "Unknown profile 'a100'" in message
    for name in PROFILES:
        assert name in message
    assert "COURSE_PROFILE" in message


def test_gpu_profile_without_a_gpu_says_what_to_do():
    with pytest.raises(RuntimeError, match=r"Profile 't4' needs a CUDA GPU, but none is visible.*COURSE_PROFILE=cpu"):
        select_profile("t4", hardware=CPU)


def test_bf16_on_a_t4_is_refused_with_the_fp16_alternative():
    with pytest.raises(RuntimeError) as error:
        select_profile("l4", hardware=T4)  # the l4 profile trains in bf16
    assert "no bfloat16" in str(error.value) and "Tesla T4" in str(error.value)
    assert "float16" in str(error.value) and "COURSE_PROFILE=t4" in str(error.value)
    with pytest.raises(RuntimeError, match="no bfloat16"):
        select_profile("t4", hardware=T4, bf16=True, fp16=False)


def test_fp16_on_the_cpu_is_refused():
    with pytest.raises(RuntimeError, match="GPU setting"):
        select_profile("cpu", hardware=CPU, fp16=True)


def test_unknown_override_is_refused():
    with pytest.raises(ValueError, match=r"Unknown profile setting\(s\) \['sft_stepz'\]"):
        select_profile("cpu", hardware=CPU, sft_stepz=3)


def test_overrides_change_one_setting():
    profile = select_profile("cpu", hardware=CPU, sft_steps=3)
    assert profile.sft_steps == 3 and profile.chat_model == PROFILES["cpu"].chat_model


@pytest.mark.parametrize("name, hardware", [("cpu", CPU), ("t4", T4), ("l4", L4), ("large", A100), ("workshop", T4)])
def test_every_profile_is_valid_on_its_own_hardware(name, hardware):
    profile = select_profile(name, hardware=hardware)
    assert not (profile.bf16 and profile.fp16)
    assert profile.use_cpu == (name == "cpu")


def test_precision_per_profile():
    assert PROFILES["cpu"].dtype == torch.float32
    assert PROFILES["t4"].fp16 and not PROFILES["t4"].bf16 and PROFILES["t4"].dtype == torch.float16
    assert PROFILES["l4"].bf16 and PROFILES["l4"].dtype == torch.bfloat16


def test_cpu_profile_models_ship_offline():
    from helpers.models import OFFLINE_PACKAGES

    cpu = PROFILES["cpu"]
    assert cpu.chat_model in OFFLINE_PACKAGES and cpu.embedding_model in OFFLINE_PACKAGES


def test_workshop_profile_is_a_shorter_t4_and_never_picked_by_itself():
    workshop, t4 = PROFILES["workshop"], PROFILES["t4"]
    assert workshop.fp16 and not workshop.bf16 and workshop.optim == t4.optim  # still a T4: float16, paged AdamW
    for steps in ("sft_steps", "qlora_steps", "pref_steps", "rm_steps", "ppo_steps", "orpo_steps", "grpo_steps"):
        assert getattr(workshop, steps) < getattr(t4, steps), steps
    assert "8B" not in workshop.qlora_model  # the 16 GB download alone would eat a quarter of the session
    for hardware in (CPU, T4, L4, A100):
        assert auto_profile_name(hardware) != "workshop"


def test_a_t4_run_on_a_larger_gpu_is_capped_at_a_t4s_memory(monkeypatch):
    caps = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", lambda fraction: caps.append(fraction))
    profile = select_profile("t4", hardware=A100)
    assert profile.fp16 and not profile.bf16  # the T4 path stays float16 on a card that has bfloat16
    assert caps == [pytest.approx(15.0 / 79.3)]
    select_profile("t4", hardware=T4)  # on a T4 itself: no cap
    select_profile("large", hardware=A100)  # a profile sized for the card: no cap
    assert len(caps) == 1


def test_larger_machines_are_the_t4_profile_with_what_they_change():
    """l4 and large are written as what they change from t4 (issue 22): this is that list, so that a change to t4
    that they should not inherit shows up here."""
    import dataclasses

    t4 = dataclasses.asdict(PROFILES["t4"])
    changed = {name: {k for k, v in dataclasses.asdict(PROFILES[name]).items() if t4[k] != v}
               for name in ("l4", "large")}
    assert changed["l4"] == {"name", "description", "bf16", "fp16", "card_memory_gb", "pretrain_steps",
                             "embed_learning_rate", "embed_lora"}
    assert changed["large"] == {"name", "description", "bf16", "fp16", "card_memory_gb", "pretrain_steps",
                                "embed_learning_rate", "embed_lora", "load_in_4bit", "gradient_checkpointing",
                                "chat_model", "pretrain_batch_size", "sft_learning_rate"}
    assert list(PROFILES)[:4] == ["cpu", "t4", "l4", "large"]
