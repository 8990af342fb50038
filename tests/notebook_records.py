"""The runs/*.json records the training notebooks write, for the tests that check their learning effects.

`make test` runs the notebooks first (pytest collects notebooks/ before tests/), so the records are fresh.
Run alone, a missing record is produced by executing the notebook that writes it.
"""
import json
from pathlib import Path

import nbformat
from nbclient import NotebookClient

import helpers.tracking as tracking

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
WRITTEN_BY = {  # record -> notebook
    "01_pretrain": "01_pretraining_vs_sft", "01_sft": "01_pretraining_vs_sft",
    "02_qlora": "02_lora_qlora", "03_peft": "03_peft_methods", "03_approaches": "03_peft_methods",
    "04_matryoshka": "04_matryoshka_embeddings", "04_mnrl": "04_matryoshka_embeddings",
    "05_reward_model": "05_reward_model_ppo", "05_ppo": "05_reward_model_ppo",
    "06_dpo": "06_dpo", "07_orpo": "07_orpo", "08_grpo": "08_grpo", "08_grpo_rm": "08_grpo",
    "09_comparison": "09_comparison",
    "homework_dpo_orpo": "../homework/solution/dpo_orpo_solution",
}


NEEDS = {  # notebook -> the records (and the adapters saved beside them) it reads
    "08_grpo": ("05_reward_model",),  # its control is paid by 05's reward model
    "09_comparison": ("03_peft", "05_reward_model", "05_ppo", "06_dpo", "07_orpo", "08_grpo", "08_grpo_rm"),
}


def record(name: str) -> dict:
    """runs/<name>.json; its notebook is executed first if the record is missing, after the notebooks whose records
    it reads (so that `pytest tests/test_comparison.py` works on a fresh clone by itself)."""
    path = tracking.RUNS / f"{name}.json"
    if not path.exists():
        for needed in NEEDS.get(WRITTEN_BY[name], ()):
            record(needed)
        notebook = NOTEBOOKS / f"{WRITTEN_BY[name]}.ipynb"
        nb = nbformat.read(notebook, as_version=4)
        NotebookClient(nb, timeout=1800, kernel_name="python3",
                       resources={"metadata": {"path": str(notebook.parent)}}).execute()
    return json.loads(path.read_text())
