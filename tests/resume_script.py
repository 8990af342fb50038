"""Train a tiny Llama for 12 steps with checkpoints every 4; KILL_AT=n makes the process die hard at step n.

Used by tests/test_resume.py: a killed run, resumed with helpers.last_checkpoint, must end where an
uninterrupted run ends.
"""
import json
import os
import sys

import torch
from datasets import Dataset
from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainerCallback, TrainingArguments, set_seed

import helpers

output_dir, kill_at = sys.argv[1], int(os.environ.get("KILL_AT", "0"))


steps_run_here = []


class DieAt(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        steps_run_here.append(state.global_step)
        if state.global_step == kill_at:
            os._exit(9)  # no cleanup, no final save: like a killed Colab runtime


set_seed(0)
config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                     num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=16)
model = LlamaForCausalLM(config)
g = torch.Generator().manual_seed(0)
rows = [{"input_ids": ids, "labels": ids} for ids in torch.randint(0, 64, (96, 16), generator=g).tolist()]
args = TrainingArguments(output_dir=output_dir, max_steps=12, per_device_train_batch_size=8, learning_rate=1e-2,
                         save_steps=4, logging_steps=1, use_cpu=True, report_to="none", seed=0)
trainer = Trainer(model=model, args=args, train_dataset=Dataset.from_list(rows), callbacks=[DieAt()])
resume = helpers.last_checkpoint(output_dir)
trainer.train(resume_from_checkpoint=resume)
losses = {h["step"]: h["loss"] for h in trainer.state.log_history if "loss" in h}
weight = model.model.layers[0].self_attn.q_proj.weight
print(json.dumps({"resumed_from": os.path.basename(resume) if resume else None, "step": trainer.state.global_step,
                  "steps_run_here": steps_run_here,
                  "losses": losses, "weight_sum": weight.sum().item(), "weight_norm": weight.norm().item()}))
