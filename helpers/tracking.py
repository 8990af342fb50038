"""Measure, log and record runs: W&B without prompts, time and peak memory, the runs/*.json files, resuming.

    with training_run(trainer, profile) as run:  # W&B run, step times, time + memory + FLOPs, OOM advice
        trainer.train(resume_from_checkpoint=run.resume)  # run.resume: the newest checkpoint, or None
    write_run("01_sft", profile=profile, model=..., steps=..., cost=run.cost, before=..., after=...)

The pieces, for a loop that is not a Trainer (notebook 05's PPO): init_wandb, last_checkpoint, measure, oom_advice,
training_cost.
"""

import contextlib
import ctypes
import gc
import json
import os
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import torch
from transformers import TrainerCallback

RUNS = Path(os.environ.get("COURSE_RUNS_DIR", Path(__file__).resolve().parents[1] / "runs"))


# --------------------------------------------------------------------------------------------- W&B
def wandb_has_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path.home() / ".netrc"
    return netrc.exists() and "api.wandb.ai" in netrc.read_text(errors="ignore")


def wandb_enabled() -> bool:
    return os.environ.get("COURSE_WANDB", "").lower() != "off"


def _configure_wandb() -> None:
    """No key -> offline mode, so neither wandb.init nor a trainer's W&B callback ever asks for a login."""
    if not wandb_has_key():
        os.environ["WANDB_MODE"] = "offline"  # logs under runs/wandb; upload later with `wandb sync`
    os.environ.setdefault("WANDB_SILENT", "true")  # keeps machine paths and banners out of notebook outputs
    os.environ.setdefault("WANDB_DIR", str(RUNS))
    RUNS.mkdir(parents=True, exist_ok=True)


def init_wandb(name: str, config: dict | None = None, project: str = "finetuning-course"):
    """Start a W&B run that never prompts: online with a key, offline under runs/wandb without one.

    COURSE_WANDB=off turns W&B off (the trainers then get report_to="none"). Returns the run, or None when off.
    """
    if not wandb_enabled():
        return None
    import wandb

    _configure_wandb()
    return wandb.init(project=project, name=name, config=config or {}, dir=str(RUNS), reinit="finish_previous")


def report_to() -> str:
    """The `report_to` value for a trainer config: "wandb" (set up so it never prompts) unless W&B is off."""
    if not wandb_enabled():
        return "none"
    _configure_wandb()
    return "wandb"


# --------------------------------------------------------------------------------------------- time + memory
def memory_mb() -> float:
    """Memory in use now: GPU memory allocated by torch, else this process's resident memory."""
    if torch.cuda.is_available():
        return torch.cuda.memory_allocated() / 2**20
    return psutil.Process().memory_info().rss / 2**20


@dataclass
class Measurement:
    seconds: float = 0.0
    start_mb: float = 0.0
    end_mb: float = 0.0
    peak_mb: float = 0.0
    flops: float | None = None  # model FLOPs of the block (see FlopCounter), when measure() was given the models
    train_tokens: int = 0  # positions that went through a model with gradients on (training forward + backward)
    eval_tokens: int = 0  # positions that went through without gradients (generation, scoring, reference passes)
    resumed: bool = False  # training_cost: this session resumed from a checkpoint
    complete: bool = True  # training_cost: every session that trained is on record
    sessions: list = field(default_factory=list)  # training_cost: one entry per session of this training
    steps_this_session: int | None = None
    step_seconds: list | None = None  # training_cost: each step's time, every session's first step left out

    def __str__(self):
        where = "GPU" if torch.cuda.is_available() else "process RSS"
        text = (f"{self.seconds:.1f} s | memory ({where}): {self.start_mb:.0f} MB before, "
                f"{self.peak_mb:.0f} MB peak, {self.end_mb:.0f} MB after")
        if self.flops:
            text += f" | {self.flops / 1e12:.2f} TFLOP, {self.flops / max(self.seconds, 1e-9) / 1e9:.0f} GFLOP/s"
        return text


def matmul_params(model) -> tuple[int, int]:
    """(all, trainable) weights of the model's linear layers, in_features x out_features each: the parameters
    every token multiplies through (the output projection included, embedding look-ups not). 4-bit layers count
    their logical size."""
    total = trainable = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            size = module.in_features * module.out_features
            total += size
            trainable += size if module.weight.requires_grad else 0
    return total, trainable


def _token_embeddings(model) -> torch.nn.Module:
    """The token-embedding layer whose every call marks tokens going through `model`."""
    for module in model.modules():
        get = getattr(module, "get_input_embeddings", None)
        if callable(get):
            try:
                embeddings = get()
            except (NotImplementedError, AttributeError):
                continue
            if embeddings is not None:
                return embeddings
    return next(m for m in model.modules() if isinstance(m, torch.nn.Embedding))


class FlopCounter:
    """Model FLOPs, counted from the tokens that go through each model (a hook on its token embeddings).

    A position through a model with N linear-layer weights costs 2N FLOPs forward (a multiply and an add per
    weight). With gradients on, the backward costs 2N more for the activations' gradients and 2 x (trainable
    weights) for the weights' own: 6N in all for full fine-tuning, about 4N for LoRA on a frozen model. Attention
    scores (a few percent at these lengths) and element-wise work are not counted, padded positions are (they are
    computed), and a forward that gradient checkpointing recomputes is counted once.
    """

    def __init__(self, *models):
        self.models = [m for m in models if m is not None]
        self.flops, self.train_tokens, self.eval_tokens = 0.0, 0, 0
        self._sizes, self._handles = {}, []

    def _hook(self, model):
        def count(module, inputs, output):
            ids = inputs[0] if inputs else None
            tokens = ids.numel() if isinstance(ids, torch.Tensor) else 0
            if model not in self._sizes:  # sized at first use: a trainer adds its LoRA layers before training
                self._sizes[model] = matmul_params(model)
            total, trainable = self._sizes[model]
            if torch.is_grad_enabled():
                self.train_tokens += tokens
                self.flops += tokens * (4 * total + 2 * trainable)
            else:
                self.eval_tokens += tokens
                self.flops += tokens * 2 * total
        return count

    def __enter__(self):
        for model in self.models:
            self._handles.append(_token_embeddings(model).register_forward_hook(self._hook(model)))
        return self

    def __exit__(self, *exc):
        for handle in self._handles:
            handle.remove()
        self._handles = []


def release_freed_memory() -> None:
    """Give memory that Python and glibc's allocator hold but no longer use back to the system.

    Without it a process's RSS keeps what earlier work freed, and the next block reuses it without growing: a
    method measured after others looked cheaper than the same method measured first (notebook 03 compares five).
    No-op where glibc's malloc_trim is missing (macOS, Windows, musl)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


@contextlib.contextmanager
def measure(*models, sample_every: float = 0.05):
    """Wall time and peak memory of the block. On the CPU a thread samples the RSS (no reset-able peak there),
    after handing freed memory back to the system first, so that what the block adds does not depend on what ran
    before it (`release_freed_memory`).

    Given the models the block runs (the trainer's model, a reward model, ...), it also counts their model FLOPs
    (`FlopCounter`): m.flops, m.train_tokens, m.eval_tokens.
    """
    if not torch.cuda.is_available():
        release_freed_memory()
    m = Measurement(start_mb=memory_mb())
    m.peak_mb = m.start_mb
    stop = threading.Event()
    counter = FlopCounter(*models)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    else:
        def sample():
            while not stop.wait(sample_every):
                m.peak_mb = max(m.peak_mb, memory_mb())
        threading.Thread(target=sample, daemon=True).start()
    start = time.perf_counter()
    try:
        with counter:
            yield m
    finally:
        m.seconds = time.perf_counter() - start
        stop.set()
        if counter.models:
            m.flops, m.train_tokens, m.eval_tokens = counter.flops, counter.train_tokens, counter.eval_tokens
        m.end_mb = memory_mb()
        if torch.cuda.is_available():
            m.peak_mb = torch.cuda.max_memory_allocated() / 2**20
        m.peak_mb = max(m.peak_mb, m.end_mb)


# --------------------------------------------------------------------------------------------- runs/*.json
def roofline(flops: float | None, seconds: float, precision: str) -> dict:
    """Achieved FLOP/s of a block and its share of this CPU's measured matrix-product peak in that precision
    (runs/machine.json, see profiles.measure_cpu_gflops). Empty without a FLOP count; no share on a GPU."""
    if not flops or seconds <= 0:
        return {}
    from .profiles import detect_hardware

    achieved = flops / seconds / 1e9
    row = {"flops": flops, "gflops_per_s": round(achieved, 1)}
    peaks = detect_hardware().cpu_gflops
    if peaks and not torch.cuda.is_available():
        peak = peaks["bfloat16" if precision in ("bfloat16", "float16") else "float32"]
        row.update(peak_gflops_per_s=peak, peak_share=round(achieved / peak, 3))
    return row


class StepTimer(TrainerCallback):
    """The trainer's own step times: wall seconds from `on_step_begin` to `on_step_end` of each optimizer step
    (forward, backward, optimizer; GRPO's sampling too). Logging, evaluation and checkpoint saves come after
    `on_step_end`, so they are left out. `trainer.add_callback(timer)`, then pass `timer.seconds` to
    `training_cost(..., step_seconds=...)`."""

    def __init__(self):
        self.seconds: list[float] = []
        self._start = None

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self._start is not None:
            self.seconds.append(time.perf_counter() - self._start)
            self._start = None


def median_step_seconds(cost: Measurement) -> float | None:
    """The median step time of a training (`training_cost(..., step_seconds=...)`): first steps left out (they
    warm up kernels and allocators), so the number compares methods, not start-up costs. None without step times."""
    return statistics.median(cost.step_seconds) if cost.step_seconds else None


def checkpoint_step(checkpoint) -> int:
    """The step a checkpoint-N folder (or its path, or a step) holds; 0 for None (a fresh run)."""
    if checkpoint is None:
        return 0
    if isinstance(checkpoint, int):
        return checkpoint
    return int(Path(checkpoint).name.rsplit("-", 1)[-1])


def training_cost(cost: Measurement, output_dir: str | Path, resumed_from, steps: int,
                  step_seconds: list | None = None) -> Measurement:
    """What the training in `output_dir` cost over all its sessions, not only this one.

    cost: this session's `measure`; resumed_from: what `last_checkpoint` returned (a checkpoint, a step or None);
    steps: the step training ended at. A rerun resumes from the final checkpoint and trains 0 steps, so its own
    seconds and memory say nothing about training. Each session's cost is kept in
    `<output_dir>/training_cost.json` next to the checkpoints; the result sums seconds and FLOPs over the sessions
    that trained and takes the largest peak memory of theirs. It carries `resumed` (this session did not train
    every step), `complete` (False when a session whose cost nobody wrote, e.g. one whose kernel died, trained
    steps before `resumed_from`: the totals then cover only the sessions on record), `sessions` and
    `steps_this_session`; with `step_seconds` (a `StepTimer`'s, this session's steps) also `step_seconds`, every
    session's steps but its first (see `median_step_seconds`).
    """
    start = checkpoint_step(resumed_from)
    ledger = Path(output_dir) / "training_cost.json"
    earlier = json.loads(ledger.read_text()) if ledger.exists() else []
    earlier = [s for s in earlier if s["steps"] > 0 and s["from_step"] + s["steps"] <= start]
    if sum(s["steps"] for s in earlier) != start:  # steps before `start` that no session on record trained
        earlier = [{"from_step": 0, "steps": start, "seconds": None, "peak_mb": None, "flops": None}]
    complete = all(s["seconds"] is not None for s in earlier)
    this = {"from_step": start, "steps": max(steps - start, 0), "seconds": round(cost.seconds, 2),
            "peak_mb": round(cost.peak_mb, 1), "flops": cost.flops}
    if step_seconds is not None:
        this["step_seconds"] = [round(t, 4) for t in step_seconds]
    sessions = earlier + [this]
    ledger.parent.mkdir(parents=True, exist_ok=True)
    ledger.write_text(json.dumps(sessions, indent=1) + "\n")
    trained = [s for s in sessions if s["steps"] > 0 and s["seconds"] is not None] or [this]
    flops = [s["flops"] for s in trained]
    timed = [s for s in sessions if s["steps"] > 0]
    steady = ([t for s in timed for t in s["step_seconds"][1:]]
              if timed and all("step_seconds" in s for s in timed) else None)
    return Measurement(seconds=sum(s["seconds"] for s in trained), start_mb=cost.start_mb, end_mb=cost.end_mb,
                       peak_mb=max(s["peak_mb"] for s in trained), flops=sum(flops) if all(flops) else None,
                       train_tokens=cost.train_tokens, eval_tokens=cost.eval_tokens, resumed=start > 0,
                       complete=complete, sessions=sessions, steps_this_session=this["steps"],
                       step_seconds=steady or None)


def write_run(name: str, *, profile, model: str, steps: int, before: dict, after: dict, cost=None,
              seconds: float | None = None, peak_memory_mb: float | None = None, flops: float | None = None,
              **extra) -> Path:
    """Write runs/<name>.json: what a training notebook measured, for the tests and the comparison notebook.

    cost: the training's `Measurement` (from `training_cost`, so that a resumed run records what training cost),
    or a list of them for a record that sums several runs; or pass seconds, peak_memory_mb and flops directly
    (a notebook that trains nothing). The record says whether any run was `resumed` and whether the cost is
    complete (`cost_complete`, see `training_cost`); with FLOPs it holds the achieved FLOP/s and its share of the
    machine's measured matrix-product peak in the profile's precision (`roofline`)."""
    costs = list(cost) if isinstance(cost, (list, tuple)) else [cost] if cost is not None else []
    if cost is not None:  # an empty list: nothing trained (yet)
        seconds = sum(c.seconds for c in costs)
        peak_memory_mb = max((c.peak_mb for c in costs), default=0.0)
        flops = sum(c.flops for c in costs) if costs and all(c.flops for c in costs) else None
    if seconds is None or peak_memory_mb is None:
        raise ValueError(f"write_run('{name}'): pass cost=<the training's Measurement> (or seconds= and "
                         "peak_memory_mb=).")
    record = {
        "name": name, "profile": profile.name, "model": model, "steps": steps,
        "seconds": round(seconds, 2), "peak_memory_mb": round(peak_memory_mb, 1),
        "resumed": any(c.resumed for c in costs), "cost_complete": all(c.complete for c in costs),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "precision": profile.dtype_name,
        **roofline(flops, seconds, profile.dtype_name),
        "before": before, "after": after, **extra,
    }
    if len(costs) == 1 and median_step_seconds(costs[0]) is not None:
        record["median_step_seconds"] = round(median_step_seconds(costs[0]), 3)
    if any(c.sessions for c in costs):
        record["sessions"] = [c.sessions for c in costs] if len(costs) > 1 else costs[0].sessions
    RUNS.mkdir(parents=True, exist_ok=True)
    path = RUNS / f"{name}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


@dataclass
class TrainingRun:
    """What `training_run` hands the block: the checkpoint to resume from, then (after the block) the cost."""
    resume: str | None = None
    cost: Measurement | None = None
    wandb_run: object = None


@contextlib.contextmanager
def training_run(trainer, profile, config: dict | None = None, *, models=(), batch_size: int | None = None,
                 max_length: int | None = None):
    """What every training cell repeats around `trainer.train(...)`, in one place:

        with helpers.training_run(trainer, profile, config={"beta": beta}) as run:
            trainer.train(resume_from_checkpoint=run.resume)
        cost = run.cost

    Before the block: a W&B run named `trainer.args.run_name` (config: the profile's name and `config`; offline
    without a key, see `init_wandb`), a `StepTimer` on the trainer, and `run.resume`, the newest checkpoint in
    `trainer.args.output_dir` (`last_checkpoint`). During it: time, peak memory and the FLOPs of the trainer's model
    and of `models` (a reward model the rewards call, ...; see `measure`), and a CUDA out-of-memory error turned into
    advice (`oom_advice`; batch size and length default to the trainer's). After it: `run.cost`, what this training
    cost over all its sessions (`training_cost`: a rerun that resumes from the final checkpoint records the first
    session's cost). The trainer is built and `.train` called in the notebook.

    The W&B run stays open, so that an evaluation after training (`trainer.evaluate()`) logs into it: the next
    `training_run` (or `init_wandb`) ends it, and `wandb.finish()` ends the last one. If the block fails, it ends.
    """
    args = trainer.args
    run, timer = TrainingRun(), StepTimer()
    batch_size = batch_size or args.per_device_train_batch_size
    max_length = max_length if max_length is not None else getattr(args, "max_length", None)
    try:
        run.wandb_run = init_wandb(args.run_name or Path(args.output_dir).name,
                                   config={"profile": profile.name, **(config or {})})
        trainer.add_callback(timer)
        run.resume = last_checkpoint(args.output_dir)
        with measure(trainer.model, *models) as cost, oom_advice(profile, batch_size, max_length):
            yield run
    except BaseException:
        if run.wandb_run is not None:
            run.wandb_run.finish()
        raise
    finally:
        trainer.remove_callback(timer)
    run.cost = training_cost(cost, args.output_dir, run.resume, trainer.state.global_step, timer.seconds)


def in_colab() -> bool:
    import sys

    return "google.colab" in sys.modules


def on_colab_without_drive() -> bool:
    """True in a Colab kernel whose runs/ is on the VM's own disk (gone when Colab recycles the VM)."""
    return in_colab() and not str(RUNS).startswith("/content/drive")


def _run_first(notebook: str) -> str:
    advice = f"run notebook {notebook} in this profile first (`make course` runs them all in order)."
    if on_colab_without_drive():
        advice += (f" On Colab every notebook gets its own VM, so its runs/ is not this one's: set "
                   f"KEEP_RUNS_ON_DRIVE = True in the setup cell of notebook {notebook} and of this notebook, run "
                   f"{notebook} once, then this one finds its work on your Google Drive.")
    return advice


def read_run(name: str) -> dict:
    """The record runs/<name>.json. The name starts with the number of the notebook that writes it."""
    path = RUNS / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(f"No record runs/{name}.json yet: {_run_first(name.split('_')[0])}")
    return json.loads(path.read_text())


def trained_adapter(folder: str | Path, notebook: str) -> str:
    """The LoRA adapter a notebook saved under `folder` (its newest checkpoint-N, or the folder itself), for
    PeftModel.from_pretrained. A missing adapter raises an error that names the notebook to run."""
    from transformers.trainer_utils import get_last_checkpoint

    folder = Path(folder)
    found = folder if (folder / "adapter_config.json").exists() else None
    if found is None and folder.is_dir() and (newest := get_last_checkpoint(str(folder))):
        found = Path(newest) if (Path(newest) / "adapter_config.json").exists() else None
    if found is None:
        raise FileNotFoundError(f"No trained adapter in runs/checkpoints/{folder.name}: {_run_first(notebook)}")
    return str(found)


def load_reward_model(profile, tokenizer):
    """Notebook 05's trained reward model, to score with (`helpers.reward_scores`): the profile's preference model
    with a one-number head (AutoModelForSequenceClassification, num_labels=1), loaded as the profile loads it (4-bit
    NF4 where it says so), and 05's LoRA adapter, which brings the trained head. A reward model 05 trained in another
    profile (another base model or precision) is refused with an error that says which notebook to run."""
    import transformers
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    from .models import model_path, nf4_config

    trained_in = read_run("05_reward_model")["profile"]
    if trained_in != profile.name:
        raise ValueError(f"Notebook 05 trained its reward model in profile '{trained_in}', and this notebook runs in "
                         f"'{profile.name}': {_run_first('05')}")
    adapter, base_path = trained_adapter(RUNS / "checkpoints" / "05_reward_model", "05"), model_path(profile.pref_model)
    # the checkpoint itself, too: a 05 run stopped in another profile can leave its adapter beside an older record.
    # Its base is a local folder or a Hub id, whichever the machine had, so the model's name is what is compared.
    trained_on = json.loads((Path(adapter) / "adapter_config.json").read_text()).get("base_model_name_or_path") or ""
    if Path(trained_on).name != Path(base_path).name:
        trained_name = Path(trained_on).name or "an unknown model"
        raise ValueError(f"Notebook 05's reward-model adapter was trained on {trained_name}, and profile "
                         f"'{profile.name}' scores with {profile.pref_model}: {_run_first('05')}")
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # the load report lists the score head as new; the adapter brings it
    try:
        base = AutoModelForSequenceClassification.from_pretrained(
            base_path, num_labels=1, dtype=profile.weights_dtype,
            quantization_config=nf4_config(profile.dtype) if profile.load_in_4bit else None,
            device_map="auto" if profile.needs_gpu else None)
    finally:
        transformers.logging.set_verbosity(verbosity)
    base.config.pad_token_id = tokenizer.pad_token_id  # the score is read at the last token that is not padding
    return PeftModel.from_pretrained(base, adapter)


# --------------------------------------------------------------------------------------------- resume, OOM
def last_checkpoint(output_dir: str | Path) -> str | None:
    """The newest checkpoint-N folder under output_dir, or None: pass it to trainer.train(resume_from_checkpoint=...)."""
    from transformers.trainer_utils import get_last_checkpoint

    if not Path(output_dir).is_dir():
        return None
    checkpoint = get_last_checkpoint(str(output_dir))
    if checkpoint:
        print(f"Resuming from {Path(checkpoint).name}")
    return checkpoint


@contextlib.contextmanager
def oom_advice(profile, batch_size: int | None = None, max_length: int | None = None):
    """Turn a CUDA out-of-memory error into one that names the knobs to lower, then re-raise."""
    try:
        yield
    except torch.OutOfMemoryError as error:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        knobs = [
            f"per_device_train_batch_size (now {batch_size}) - halve it and double gradient_accumulation_steps"
            if batch_size else "per_device_train_batch_size - halve it and double gradient_accumulation_steps",
            f"max_length (now {max_length})" if max_length else "max_length",
            "gradient_checkpointing=True (slower, far less activation memory)",
            "load_in_4bit (QLoRA, notebook 02) or a smaller chat_model in helpers/profiles.py",
        ]
        raise RuntimeError(f"Out of GPU memory in profile '{profile.name}'. Lower, in this order:\n  - "
                           + "\n  - ".join(knobs) + "\nThen restart the runtime (memory stays fragmented).") from error
