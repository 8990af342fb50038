"""Fixtures shared by the tests in this folder: the course chat model's tokenizer and a tiny random Llama on it.

Use these. Four tests build a tiny Llama of their own on purpose, without the course tokenizer: test_lora.py and
test_roofline.py (small vocabularies, a tied head), test_qlora.py (widths of 128) and resume_script.py (a
separate process).
"""
import os

import pytest
from transformers import AutoTokenizer, LlamaConfig

import helpers


@pytest.fixture(scope="session")
def tokenizer():
    return AutoTokenizer.from_pretrained(helpers.model_path("HuggingFaceTB/SmolLM2-135M-Instruct"))


@pytest.fixture(scope="session")
def tiny_config(tokenizer):
    """tiny_config(**extra) -> a 2-layer LlamaConfig with the course tokenizer's vocabulary and special tokens.
    Widths of 64: bitsandbytes quantizes in blocks of 64, so the same config also loads in 4-bit."""
    def make(**extra):
        return LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                           pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, **extra)
    return make


@pytest.fixture(scope="session")
def profile():
    """The profile the notebooks ran in (make test exports COURSE_PROFILE=cpu; -sim runs set theirs)."""
    return helpers.PROFILES[os.environ.get("COURSE_PROFILE", "cpu")]
