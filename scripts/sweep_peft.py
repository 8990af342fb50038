"""Choose notebook 03's learning rates on a dev split, and check that the ranking they give holds for two seeds.

Every PEFT method of the notebook x a small grid of learning rates x two seeds, trained exactly as the notebook
trains (its method configs, steps, batch and data), scored on the sft dev split: held-out people whose names,
cities and jobs occur in neither the train nor the test split. The notebook then trains each method once, with the
learning rate chosen here, and reports on the test split, which nothing here looks at. `--part approaches` does the
same for the notebook's early approaches (full fine-tuning, top blocks only, head only), its `approaches` cell.

    COURSE_PROFILE=cpu .venv/bin/python scripts/sweep_peft.py      # ~15 min on 2 CPU cores
    COURSE_PROFILE=cpu .venv/bin/python scripts/sweep_peft.py --part approaches   # ~12 min
    COURSE_PROFILE=cpu .venv/bin/python scripts/sweep_peft.py --resume   # after widening a grid: only new runs

Writes benchmarks/sweeps/03_<part>_<profile>.json: every run's dev loss, the chosen learning rate per method (the
lowest dev loss averaged over the seeds), and each seed's ranking of the methods at the chosen rates.
"""

import argparse
import copy
import json
import os
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed  # noqa: E402
from peft import PrefixTuningConfig, get_peft_model  # noqa: E402
from trl import SFTConfig, SFTTrainer  # noqa: E402

import helpers  # noqa: E402

NOTEBOOK = ROOT / "notebooks" / "03_peft_methods.ipynb"
OUT = ROOT / "benchmarks" / "sweeps"
# a factor of ~3 between neighbours, centred on the usual value of each kind of method
GRIDS = {
    "LoRA": [3e-4, 1e-3, 3e-3],
    "DoRA": [3e-4, 1e-3, 3e-3],
    "IA3": [3e-3, 1e-2, 3e-2],
    "prompt tuning": [3e-3, 1e-2, 3e-2, 1e-1, 3e-1],  # widened: 3e-2 was the best of 3e-2..3e-1
    "prefix tuning": [3e-4, 1e-3, 3e-3],
}
# the early approaches: every weight (Adam's usual full fine-tuning range), two blocks, the output head
APPROACH_GRIDS = {
    "full fine-tuning": [1e-5, 3e-5, 1e-4],
    "top 2 blocks": [1e-4, 3e-4, 1e-3, 3e-3],  # widened: 1e-3 was the best of 1e-4..1e-3
    "head only": [1e-4, 3e-4, 1e-3, 3e-3, 1e-2],  # widened: 1e-3 was the best of 1e-4..1e-3
}
SEEDS = (0, 1)


def notebook_cell(profile, defines: str) -> dict:
    """The notebook's `methods` (name -> peft config) or `approaches` (name -> function that says which weights of
    a model copy train), from the cell that defines them: one source for both."""
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    source = next("".join(c["source"]) for c in cells
                  if c["cell_type"] == "code" and f"{defines} = {{" in "".join(c["source"]))
    namespace = {"helpers": helpers, "profile": profile, "AutoTokenizer": AutoTokenizer, "torch": torch}
    exec(source, namespace)
    return namespace[defines]


def prepared(base_model, config):
    """A fresh copy of the model with the method applied: a peft config, or an approach's function."""
    if callable(config):
        return config(copy.deepcopy(base_model))
    return get_peft_model(copy.deepcopy(base_model), config)


def train_and_score(base_model, config, learning_rate, seed, profile, tokenizer, train_data, dev_data) -> dict:
    set_seed(seed)
    model = prepared(base_model, config)
    if torch.cuda.is_available():
        model.to("cuda")
    args = SFTConfig(
        output_dir=tempfile.mkdtemp(prefix="sweep_peft_"), max_steps=profile.peft_steps,
        per_device_train_batch_size=profile.sft_batch_size, learning_rate=learning_rate,
        lr_scheduler_type="constant", max_length=profile.max_length, save_strategy="no", logging_steps=1,
        use_cpu=profile.use_cpu, bf16=profile.bf16, fp16=profile.fp16,
        gradient_checkpointing=profile.gradient_checkpointing and not isinstance(config, PrefixTuningConfig),
        report_to="none", seed=seed, disable_tqdm=True,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=train_data, eval_dataset=dev_data,
                         processing_class=tokenizer)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    dev = trainer.eval_dataset
    losses = helpers.completion_losses(model, dev["input_ids"], dev["labels"], tokenizer.pad_token_id)
    train_losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"dev_loss": losses.mean().item(), "dev_loss_per_example": [round(x, 5) for x in losses.tolist()],
            "last_train_loss": train_losses[-1], "seconds": round(seconds, 1)}


def ranking(losses: dict) -> list:
    return sorted(losses, key=losses.get)


def swapped_pairs(rankings: dict) -> list:
    """The pairs of methods whose order differs between the seeds' rankings."""
    first, *others = rankings.values()
    position = [{name: i for i, name in enumerate(r)} for r in rankings.values()]
    return [[a, b] for i, a in enumerate(first) for b in first[i + 1:]
            if len({p[a] < p[b] for p in position}) > 1]


def summarise(runs: list, profile, methods: dict, train_examples: int, dev_examples: int, grids: dict) -> dict:
    mean_dev = {name: {lr: sum(r["dev_loss"] for r in runs if r["method"] == name and r["learning_rate"] == lr)
                       / len(SEEDS) for lr in grids[name]} for name in methods}
    chosen = {name: min(losses, key=losses.get) for name, losses in mean_dev.items()}
    at_chosen = {seed: {r["method"]: r["dev_loss"] for r in runs
                        if r["seed"] == seed and r["learning_rate"] == chosen[r["method"]]} for seed in SEEDS}
    rankings = {str(seed): ranking(losses) for seed, losses in at_chosen.items()}
    return {
        "profile": profile.name, "model": profile.chat_model, "steps": profile.peft_steps,
        "batch_size": profile.sft_batch_size, "train_examples": train_examples, "dev_examples": dev_examples,
        "precision": profile.dtype_name, "seeds": list(SEEDS), "grids": grids,
        "methods": {name: getattr(config, "__name__", type(config).__name__) for name, config in methods.items()},
        "chosen_by": "the lowest dev loss (mean teacher-forced loss per example) averaged over the seeds",
        "learning_rates": chosen,
        "mean_dev_loss": {name: {str(lr): round(v, 5) for lr, v in losses.items()} for name, losses in mean_dev.items()},
        "on_grid_edge": [name for name in methods if chosen[name] in (grids[name][0], grids[name][-1])],
        "ranking_by_seed": rankings,
        "ranking_stable": len({tuple(r) for r in rankings.values()}) == 1,
        "swapped_pairs": swapped_pairs(rankings),
        "runs": runs,
        "seconds": round(sum(r["seconds"] for r in runs), 1),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resume", action="store_true",
                        help="keep the runs already in the file that are still on the grids; run only what is missing")
    parser.add_argument("--part", choices=["peft", "approaches"], default="peft",
                        help="the PEFT methods (`methods`) or the early approaches (`approaches`)")
    args = parser.parse_args()
    grids = GRIDS if args.part == "peft" else APPROACH_GRIDS
    os.environ.setdefault("WANDB_MODE", "disabled")
    profile = helpers.select_profile()
    tokenizer = AutoTokenizer.from_pretrained(helpers.model_path(profile.chat_model))
    base_model = AutoModelForCausalLM.from_pretrained(helpers.model_path(profile.chat_model),
                                                      dtype=profile.weights_dtype)
    methods = notebook_cell(profile, "methods" if args.part == "peft" else "approaches")
    sft = helpers.load_course_dataset("sft")
    # the notebook's training examples: the ones its step budget covers, in the same order
    train_data = sft["train"].shuffle(seed=0).select(range(profile.peft_steps * profile.sft_batch_size))
    dev_data = sft["dev"]
    path = OUT / f"03_{args.part}_{profile.name}.json"
    runs = []
    if args.resume and path.exists():
        earlier = json.loads(path.read_text())
        if earlier["steps"] != profile.peft_steps or earlier["dev_examples"] != len(dev_data):
            raise SystemExit(f"{path.name} was made with other steps or dev data: run without --resume")
        runs = [r for r in earlier["runs"] if r["method"] in methods and r["learning_rate"] in grids[r["method"]]]
    for name, config in methods.items():
        for learning_rate in grids[name]:
            for seed in SEEDS:
                if any((r["method"], r["learning_rate"], r["seed"]) == (name, learning_rate, seed) for r in runs):
                    continue
                result = train_and_score(base_model, config, learning_rate, seed, profile, tokenizer, train_data,
                                         dev_data)
                runs.append({"method": name, "learning_rate": learning_rate, "seed": seed, **result})
                print(f"{name:>14} lr {learning_rate:g} seed {seed}: dev loss {result['dev_loss']:.4f} "
                      f"({result['seconds']:.0f} s)", flush=True)
    order = {name: i for i, name in enumerate(methods)}
    runs.sort(key=lambda r: (order[r["method"]], r["learning_rate"], r["seed"]))
    record = summarise(runs, profile, methods, len(train_data), len(dev_data), grids)
    OUT.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {path.relative_to(ROOT)}: learning rates {record['learning_rates']}; ranking by seed "
          f"{record['ranking_by_seed']}; pairs whose order the seeds swap: {record['swapped_pairs']}")


if __name__ == "__main__":
    main()
