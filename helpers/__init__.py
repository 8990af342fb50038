"""Thin helpers for the fine-tuning course: profiles, loading, logging, plotting, checks and the small
from-scratch pieces the notebooks teach. They never hide the library call a notebook is teaching."""

import warnings

from . import embeddings, exercises, lora, losses, memory, nf4, precision, stats
from .data import check_format, load_course_dataset, unpair, wording_overlap
from .models import check_4bit_support, keep_4bit_trainable_on_cpu, model_path, nf4_config
from .plots import plot_before_after, plot_history
from .precision import check_fp16_trainable, compute_dtype, evaluating, fp16_safe
from .profiles import PROFILES, Hardware, Profile, describe, detect_hardware, select_profile
from .tasks import (answer_logps, answer_mask, brevity_reward, completion_losses, completion_text, correctness_reward, extraction_scores,
                    fact_of, fact_value, form_reward, generate, generate_and_score, gold_reward, parse_json_object, per_answer_scores, preference_logps,
                    requested_form, reward_scores, sample_answers)
from .tracking import (init_wandb, last_checkpoint, load_reward_model, measure, memory_mb, oom_advice, read_run, report_to,
                       trained_adapter, training_cost, training_run, write_run)
from .tracking import StepTimer, median_step_seconds

__all__ = [
    "PROFILES", "Hardware", "Profile", "StepTimer", "answer_logps", "answer_mask", "brevity_reward", "correctness_reward", "check_4bit_support", "check_format", "check_fp16_trainable", "completion_losses", "completion_text", "compute_dtype",
    "describe", "detect_hardware", "evaluating", "fp16_safe",
    "embeddings", "exercises", "extraction_scores", "fact_of", "fact_value", "form_reward", "generate", "gold_reward", "init_wandb", "keep_4bit_trainable_on_cpu", "last_checkpoint", "load_reward_model",
    "load_course_dataset", "lora", "losses", "measure", "median_step_seconds", "memory", "memory_mb", "model_path", "nf4", "nf4_config", "oom_advice",
    "parse_json_object", "per_answer_scores", "plot_before_after", "precision", "preference_logps", "generate_and_score", "plot_history", "read_run", "report_to", "requested_form", "reward_scores", "sample_answers",
    "select_profile", "stats", "trained_adapter", "training_cost", "training_run", "unpair", "wording_overlap", "write_run",
]

# Notices the libraries raise about their own calls, which nothing in a notebook can act on: TRL and peft still use
# the deprecated gradient-checkpointing names, and ORPOTrainer sets remove_unused_columns itself and says so.
for _message in (".*gradient_checkpointing.*deprecated", ".*is_gradient_checkpointing.*deprecated",
                 ".*remove_unused_columns.*"):
    warnings.filterwarnings("ignore", message=_message)
