"""The course's LoRA training as a plain script (SFT as in notebook 02, DPO as in 06, ORPO as in 07), runnable on
one process or many.

    python scripts/train.py --method dpo                         # one process (CPU or one GPU), the profile's sizes
    accelerate launch --config_file configs/accelerate/ddp.yaml scripts/train.py --method sft    # DDP, 2 GPUs
    accelerate launch --config_file configs/accelerate/fsdp.yaml scripts/train.py                # FSDP
    accelerate launch --config_file configs/accelerate/deepspeed_zero2.yaml scripts/train.py     # ZeRO-2
    torchrun --nproc_per_node 2 scripts/train.py --tiny          # 2 CPU processes (gloo): what the test runs

`--per-device-batch-size` is per process: the global batch is that times the number of processes (times gradient
accumulation). Keep the global batch fixed when you scale out and the run is the same run, only faster:
tests/test_scale_out.py checks that 2 processes give the losses of 1 process with the same global batch (SFT and
DPO).
`--tiny` trains a small random-init Llama instead of the profile's model, for quick checks of the mechanics.
"""

import argparse
import json
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

import torch  # noqa: E402
from peft import LoraConfig  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM  # noqa: E402
from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer  # noqa: E402
from trl.experimental.orpo import ORPOConfig, ORPOTrainer  # noqa: E402

import helpers  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", choices=["sft", "dpo", "orpo"], default="sft")
    parser.add_argument("--per-device-batch-size", type=int, default=None, help="default: the profile's")
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--max-steps", type=int, default=None, help="default: the profile's steps for the method")
    parser.add_argument("--output-dir", default=None, help="default: runs/checkpoints/train_<method>")
    parser.add_argument("--losses", default=None, help="write the logged loss per step to this JSON file")
    parser.add_argument("--tiny", action="store_true", help="a small random-init Llama (mechanics only)")
    parser.add_argument("--no-lora", action="store_true", help="train every weight instead of LoRA adapters")
    return parser.parse_args(argv)


def tiny_llama(tokenizer):
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)  # every process builds the same weights
    return LlamaForCausalLM(config)


def main(argv=None):
    args = parse_args(argv)
    profile = helpers.select_profile()
    tokenizer = AutoTokenizer.from_pretrained(helpers.model_path(profile.chat_model))
    model = tiny_llama(tokenizer) if args.tiny else AutoModelForCausalLM.from_pretrained(
        helpers.model_path(profile.chat_model), dtype=profile.weights_dtype)
    # per method: the dataset, the config and trainer classes, and the profile's steps, batch and learning rate
    if args.method == "sft":
        data, config_class, trainer_class = helpers.load_course_dataset("sft"), SFTConfig, SFTTrainer
        steps, batch, learning_rate, extra = profile.qlora_steps, profile.qlora_batch_size, profile.qlora_learning_rate, {}
    else:
        data = helpers.load_course_dataset("preferences")
        config_class, trainer_class = (DPOConfig, DPOTrainer) if args.method == "dpo" else (ORPOConfig, ORPOTrainer)
        steps, batch = (profile.pref_steps if args.method == "dpo" else profile.orpo_steps), profile.pref_batch_size
        learning_rate = profile.pref_learning_rate if args.method == "dpo" else profile.orpo_learning_rate
        extra = {"beta": profile.dpo_beta if args.method == "dpo" else profile.orpo_beta}
    config = config_class(
        output_dir=args.output_dir or str(helpers.tracking.RUNS / "checkpoints" / f"train_{args.method}"),
        max_steps=args.max_steps or steps, per_device_train_batch_size=args.per_device_batch_size or batch,
        gradient_accumulation_steps=args.grad_accum, learning_rate=learning_rate,
        lr_scheduler_type="constant", max_length=profile.max_length, logging_steps=1, save_strategy="no",
        use_cpu=profile.use_cpu, bf16=profile.bf16, fp16=profile.fp16,
        gradient_checkpointing=profile.gradient_checkpointing and not args.tiny,
        report_to="none", seed=0, data_seed=0,
        # several CPU processes talk over gloo (GPUs use NCCL, the default); one process needs no backend
        ddp_backend="gloo" if profile.use_cpu and int(os.environ.get("WORLD_SIZE", "1")) > 1 else None,
        **extra,
    )
    peft_config = None if args.no_lora else LoraConfig(r=profile.lora_r, lora_alpha=profile.lora_alpha,
                                                       lora_dropout=0.0, target_modules="all-linear",
                                                       task_type="CAUSAL_LM")
    trainer = trainer_class(model=model, args=config, train_dataset=data["train"], processing_class=tokenizer,
                            peft_config=peft_config)
    helpers.fp16_safe(trainer)  # a 4-bit model under fp16: TRL's bfloat16 adapters back to float32 (notebook 02)
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    if trainer.is_world_process_zero():
        print(f"{trainer.args.world_size} process(es), global batch "
              f"{config.per_device_train_batch_size * config.gradient_accumulation_steps * trainer.args.world_size}"
              f", losses {[round(loss, 4) for loss in losses]}")
        if args.losses:
            Path(args.losses).write_text(json.dumps({"world_size": trainer.args.world_size, "losses": losses}))


if __name__ == "__main__":
    main()
