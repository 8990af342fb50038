"""Drift check: every config and trainer the notebooks build takes the keyword arguments they pass, in the pinned
versions. TRL, transformers and peft rename arguments often (max_seq_length -> max_length, tokenizer ->
processing_class, evaluation_strategy -> eval_strategy); this fails with the notebook, the class and the likely new
name before a student meets a TypeError halfway through a run."""
import ast
import dataclasses
import difflib
import importlib
import inspect
import re
from importlib.metadata import version
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")) + sorted((ROOT / "homework").rglob("*.ipynb"))
WHERE = {  # class name -> the module the notebooks import it from
    **dict.fromkeys(["SFTConfig", "SFTTrainer", "DPOConfig", "DPOTrainer", "RewardConfig", "RewardTrainer",
                     "GRPOConfig", "GRPOTrainer"], "trl"),
    **dict.fromkeys(["ORPOConfig", "ORPOTrainer"], "trl.experimental.orpo"),
    **dict.fromkeys(["TrainingArguments", "Trainer", "LlamaConfig", "BitsAndBytesConfig"], "transformers"),
    **dict.fromkeys(["LoraConfig", "IA3Config", "PrefixTuningConfig", "PromptTuningConfig"], "peft"),
    **dict.fromkeys(["SentenceTransformerTrainingArguments", "SentenceTransformerTrainer"], "sentence_transformers"),
}


def accepted_arguments(cls) -> set[str]:
    names = {f.name for f in dataclasses.fields(cls) if f.init} if dataclasses.is_dataclass(cls) else set()
    for klass in cls.__mro__:  # a subclass passing **kwargs up accepts its parents' arguments too
        if "__init__" in vars(klass):
            parameters = inspect.signature(klass.__init__).parameters
            names |= {n for n, p in parameters.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
            if not any(p.kind == p.VAR_KEYWORD for p in parameters.values()):
                break
    return names - {"self"}


def calls_in(source: str):
    """(class name, keyword names) for every call of a class in WHERE; shell lines (! and %) become `pass`."""
    tree = ast.parse(re.sub(r"^(\s*)[!%].*$", r"\1pass", source, flags=re.M))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            if name in WHERE:
                yield name, [k.arg for k in node.keywords if k.arg]


def unknown_arguments(source: str, where: str) -> list[str]:
    """One message per keyword argument the pinned library does not take, with the closest name it does take."""
    problems = []
    for name, keywords in calls_in(source):
        module = WHERE[name]
        accepted = accepted_arguments(getattr(importlib.import_module(module), name))
        for keyword in keywords:
            if keyword not in accepted:
                guess = difflib.get_close_matches(keyword, accepted, n=1)
                problems.append(f"{where}: {name}({keyword}=...) - {module} {version(module.split('.')[0])} has no "
                                f"argument {keyword!r} (renamed or removed)"
                                + (f"; did you mean {guess[0]!r}?" if guess else ""))
    return problems


def notebook_code(path: Path) -> str:
    return "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_config_and_trainer_argument_exists_in_the_pinned_versions(path):
    problems = unknown_arguments(notebook_code(path), path.name)
    assert not problems, "\n".join(problems)


def test_the_notebooks_build_the_trainers_the_course_teaches():
    built = {name for path in NOTEBOOKS for name, _ in calls_in(notebook_code(path))}
    for name in ("SFTConfig", "DPOConfig", "ORPOConfig", "GRPOConfig", "RewardConfig", "LoraConfig",
                 "SentenceTransformerTrainingArguments", "TrainingArguments"):
        assert name in built, f"no notebook builds {name}: is the drift check still looking at the right code?"


@pytest.mark.parametrize("source, message", [
    ("DPOConfig(output_dir='x', max_seq_length=128)", r"DPOConfig\(max_seq_length=...\) - trl [\d.]+ has no "
                                                      r"argument 'max_seq_length' .*did you mean 'max_length'"),
    ("TrainingArguments(output_dir='x', evaluation_strategy='steps')", "did you mean 'eval_strategy'"),
    ("DPOTrainer(model=m, tokenizer=t)", "DPOTrainer\\(tokenizer=...\\)"),
    ("LoraConfig(rank=8)", "LoraConfig\\(rank=...\\) - peft"),
])
def test_a_renamed_argument_fails_with_the_new_name(source, message):
    problems = unknown_arguments(source, "example.ipynb")
    assert len(problems) == 1 and re.search(message, problems[0]), problems
