"""The course datasets in assets/, loaded with `datasets` and checked against the format each trainer expects.

    ds = load_course_dataset("sft")            # DatasetDict with train and test (test is never trained on)
    check_format(my_dataset, "preference")     # your own data: a clear error if a column is missing

Formats are TRL's: chat messages are lists of {"role": ..., "content": ...} dicts.
"""

import json
import re
from pathlib import Path

from datasets import Dataset, DatasetDict, load_dataset

ASSETS = Path(__file__).resolve().parents[1] / "assets"

MESSAGES = "messages"  # a column holding a list of {"role", "content"} dicts
TEXT = "text"  # a column holding a string
LABEL = "label"  # a column holding True (a good answer) or False (a bad one)

FORMATS = {  # format name -> {column: kind}
    "language_modeling": {"text": TEXT},
    "prompt_completion": {"prompt": MESSAGES, "completion": MESSAGES},
    "preference": {"prompt": MESSAGES, "chosen": MESSAGES, "rejected": MESSAGES},
    "unpaired": {"prompt": MESSAGES, "completion": MESSAGES, "label": LABEL},  # KTO: one answer, thumbs up or down
    "verifiable": {"prompt": MESSAGES, "answer": TEXT},
    "pairs": {"anchor": TEXT, "positive": TEXT},
    "ir_queries": {"query": TEXT, "positive_id": TEXT},
    "ir_corpus": {"id": TEXT, "text": TEXT},
}
EXAMPLES = {
    MESSAGES: [{"role": "user", "content": "..."}],
    TEXT: "...",
    LABEL: True,
}

COURSE_DATASETS = {  # dataset -> {split: format}
    "pretrain": {"train": "language_modeling", "test": "language_modeling"},
    "sft": {"train": "prompt_completion", "dev": "prompt_completion", "test": "prompt_completion"},
    "preferences": {"train": "preference", "test": "preference"},
    "rl": {"train": "verifiable", "test": "verifiable"},
    "retrieval": {"train": "pairs", "dev": "ir_queries", "test": "ir_queries", "corpus": "ir_corpus"},
    "general": {"test": "language_modeling"},
}


def load_course_dataset(name: str) -> DatasetDict:
    """All splits of one course dataset, each checked against its format."""
    if name not in COURSE_DATASETS:
        raise ValueError(f"Unknown course dataset '{name}'. Available: {', '.join(COURSE_DATASETS)}.")
    splits = COURSE_DATASETS[name]
    files = {split: str(ASSETS / name / f"{split}.jsonl") for split in splits}
    missing = [f for f in files.values() if not Path(f).exists()]
    if missing:
        raise FileNotFoundError(f"Missing dataset files {missing}: run `python scripts/make_datasets.py`.")
    # one load per split: the retrieval splits have different columns, which one multi-file load refuses
    dataset = DatasetDict({split: load_dataset("json", data_files=f, split="train") for split, f in files.items()})
    for split, fmt in splits.items():
        check_format(dataset[split], fmt, where=f"{name}/{split}")
    return dataset


def check_format(dataset: Dataset, fmt: str, where: str = "dataset") -> None:
    """Raise a ValueError naming what is missing or malformed, the format expected and how to convert."""
    if fmt not in FORMATS:
        raise ValueError(f"Unknown format '{fmt}'. Known formats: {', '.join(FORMATS)}.")
    expected = FORMATS[fmt]
    example = json.dumps({col: EXAMPLES[kind] for col, kind in expected.items()})
    missing = [col for col in expected if col not in dataset.column_names]
    if missing:
        raise ValueError(
            f"{where}: missing column(s) {missing} for the '{fmt}' format. Found columns: {dataset.column_names}. "
            f"Expected one row like {example}. Rename columns with dataset.rename_column(old, new)."
        )
    if len(dataset) == 0:
        raise ValueError(f"{where}: the dataset is empty.")
    first = dataset[0]
    for col, kind in expected.items():
        value = first[col]
        if kind == MESSAGES and isinstance(value, str):
            raise ValueError(
                f"{where}: column '{col}' holds plain strings, but the '{fmt}' format expects chat messages, "
                f"e.g. {json.dumps(EXAMPLES[MESSAGES])}. Convert with dataset.map(lambda row: {{'{col}': "
                f"[{{'role': '{'user' if col == 'prompt' else 'assistant'}', 'content': row['{col}']}}]}})."
            )
        if kind == MESSAGES and not _is_messages(value):
            raise ValueError(f"{where}: column '{col}' must be a list of {{'role', 'content'}} dicts; "
                             f"the first row has {str(value)[:120]!r}.")
        if kind == TEXT and not isinstance(value, str):
            raise ValueError(f"{where}: column '{col}' must hold strings; the first row has {type(value).__name__}.")
        if kind == LABEL and not isinstance(value, bool):
            raise ValueError(f"{where}: column '{col}' must hold True (a desirable answer) or False (an undesirable "
                             f"one); the first row has {value!r}. Convert with dataset.map(lambda row: {{'{col}': "
                             f"row['{col}'] == 'good'}}) or whatever marks a good answer in your data.")


def unpair(pairs: Dataset) -> Dataset:
    """Preference pairs as KTO's unpaired format: each pair gives a desirable and an undesirable answer.

    What is lost: KTO sees two labelled answers, not that they answer the same prompt, so it cannot compare them
    with each other; each is judged against the batch's average log-ratio instead (kto_loss's reference point).
    Row order matters: TRL builds that reference point from each row's prompt with the *previous* row's answer
    (in dataset order, before any shuffling), so a pair's two answers must never be neighbours, or half the
    "mismatched" answers would answer their own prompt. Hence all chosen answers first, then all rejected ones.
    Returns a Dataset with 2 x len(pairs) rows: prompt, completion, label.
    """
    check_format(pairs, "preference", where="pairs")
    chosen = [{"prompt": row["prompt"], "completion": row["chosen"], "label": True} for row in pairs]
    rejected = [{"prompt": row["prompt"], "completion": row["rejected"], "label": False} for row in pairs]
    return Dataset.from_list(chosen + rejected)


def wording_overlap(held_out: list[str], train: list[str], names=(), n: int = 3) -> dict:
    """How much of a held-out set's wording already occurs in training: the leak check for a test split.

    Names (e.g. the devices of a retrieval set) are replaced by one placeholder first, so that a question copied
    from training with another name in it counts as copied. Returns {"exact": share of held-out texts that equal a
    training text, "ngrams": share of the held-out texts' word n-grams (lowercased) that some training text
    contains, "n": n}.
    """
    pattern = re.compile("|".join(re.escape(name) for name in sorted(names, key=len, reverse=True))) if names else None

    def words(text):
        text = pattern.sub(" NAME ", text) if pattern else text
        return re.findall(r"[a-z0-9']+", text.lower())

    def grams(text):
        w = words(text)
        return [tuple(w[i:i + n]) for i in range(len(w) - n + 1)]

    seen_texts = {" ".join(words(t)) for t in train}
    seen_grams = {g for t in train for g in grams(t)}
    held_grams = [g for t in held_out for g in grams(t)]
    return {"exact": sum(" ".join(words(t)) in seen_texts for t in held_out) / len(held_out),
            "ngrams": sum(g in seen_grams for g in held_grams) / max(len(held_grams), 1), "n": n}


def _is_messages(value) -> bool:
    return (isinstance(value, list) and len(value) > 0
            and all(isinstance(m, dict) and {"role", "content"} <= set(m) for m in value))
