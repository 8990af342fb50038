"""helpers/losses.py against TRL: each from-scratch objective computes what TRL's trainer computes on the same inputs.

The trainers run on a tiny random Llama (with the course chat model's tokenizer), so the tests take seconds.
TRL 1.16 has no PPO trainer (it left in 1.13): ppo_clip_loss is checked against GRPO's clipped surrogate, which
is the same objective, and gae against its closed forms.
"""
import copy
import math
import types
import warnings

import pytest
import torch
from torch.testing import assert_close
from transformers import LlamaForCausalLM, LlamaForSequenceClassification

import helpers
from helpers.losses import (GRPO_LOSS_TYPES, check_grpo_batch, dpo_loss, dpo_variant_loss, gae, grpo_advantages,
                            grpo_loss, kto_loss, orpo_loss, ppo_clip_loss, reward_model_loss, rloo_advantages,
                            rloo_loss, sequence_logps, simpo_loss)

warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*deprecated")


def preference_rows(n=4):
    return helpers.load_course_dataset("preferences")["train"].select(range(n))


def common_args(tmp_path):
    return dict(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none", per_device_train_batch_size=4,
                max_steps=1, gradient_checkpointing=False, seed=0)


# ------------------------------------------------------------------------------------------ reward model
def test_reward_model_loss_equals_reward_trainer(tokenizer, tmp_path, tiny_config):
    from trl import RewardConfig, RewardTrainer

    torch.manual_seed(0)
    model = LlamaForSequenceClassification(tiny_config(num_labels=1))
    trainer = RewardTrainer(model=model, args=RewardConfig(**common_args(tmp_path)), train_dataset=preference_rows(),
                            processing_class=tokenizer)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    theirs = trainer.compute_loss(trainer.model, dict(batch))
    rewards = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.squeeze(-1)
    chosen, rejected = rewards.chunk(2)  # the collator stacks [chosen..., rejected...]
    assert_close(reward_model_loss(chosen, rejected), theirs, rtol=1e-6, atol=1e-6)
    assert trainer._metrics["train"]["accuracy"][-1] == pytest.approx((chosen > rejected).float().mean().item())


def test_reward_model_loss_is_log2_for_a_tie_and_falls_with_the_margin():
    tie = reward_model_loss(torch.zeros(3), torch.zeros(3))
    assert tie.item() == pytest.approx(torch.log(torch.tensor(2.0)).item())
    assert reward_model_loss(torch.tensor([2.0]), torch.tensor([0.0])) < tie
    assert reward_model_loss(torch.tensor([0.0]), torch.tensor([2.0])) > tie


# ------------------------------------------------------------------------------------------ DPO
def test_dpo_loss_equals_dpo_trainer(tokenizer, tmp_path, tiny_config):
    from trl import DPOConfig, DPOTrainer

    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_config())
    trainer = DPOTrainer(model=model, ref_model=copy.deepcopy(model), args=DPOConfig(beta=0.2, **common_args(tmp_path)),
                         train_dataset=preference_rows(), processing_class=tokenizer)
    with torch.no_grad():  # move the policy away from its reference copy, so the log-ratios are not zero
        for p in trainer.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    theirs = trainer.compute_loss(trainer.model, dict(batch))

    labels, mask = batch["input_ids"][:, 1:], batch["completion_mask"][:, 1:]  # logits at t predict token t+1
    with torch.no_grad():
        policy = sequence_logps(trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
                                              ).logits[:, :-1], labels, mask)
        ref = sequence_logps(trainer.ref_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
                                               ).logits[:, :-1], labels, mask)
    losses, chosen_rewards, rejected_rewards = dpo_loss(*policy.chunk(2), *ref.chunk(2), beta=0.2)
    assert_close(losses.mean(), theirs.detach(), rtol=1e-5, atol=1e-5)
    metrics = trainer._metrics["train"]
    assert metrics["rewards/chosen"][-1] == pytest.approx(chosen_rewards.mean().item(), abs=1e-5)
    assert metrics["rewards/rejected"][-1] == pytest.approx(rejected_rewards.mean().item(), abs=1e-5)
    assert metrics["rewards/margins"][-1] == pytest.approx((chosen_rewards - rejected_rewards).mean().item(), abs=1e-5)
    assert abs(chosen_rewards).max() > 1e-3, "the policy must differ from the reference for this test to mean anything"


@pytest.mark.parametrize("loss_type", ["sigmoid", "hinge", "ipo"])
def test_dpo_variant_loss_equals_dpo_trainer(tokenizer, tmp_path, tiny_config, loss_type):
    """Notebook 06's table of other losses: hinge and IPO (per-token log-ratios) as DPOTrainer computes them, at a
    beta where the hinge is active for some pairs and not for others."""
    from trl import DPOConfig, DPOTrainer

    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_config())
    beta = 2.0
    trainer = DPOTrainer(model=model, ref_model=copy.deepcopy(model),
                         args=DPOConfig(beta=beta, loss_type=[loss_type], **common_args(tmp_path)),
                         train_dataset=preference_rows(), processing_class=tokenizer)
    with torch.no_grad():
        for p in trainer.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    theirs = trainer.compute_loss(trainer.model, dict(batch))
    labels, mask = batch["input_ids"][:, 1:], batch["completion_mask"][:, 1:]
    with torch.no_grad():
        policy = sequence_logps(trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
                                              ).logits[:, :-1], labels, mask)
        ref = sequence_logps(trainer.ref_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
                                               ).logits[:, :-1], labels, mask)
    lengths = mask.sum(1).float()
    ours = dpo_variant_loss(*policy.chunk(2), *ref.chunk(2), beta=beta, loss_type=loss_type,
                            chosen_lengths=lengths.chunk(2)[0], rejected_lengths=lengths.chunk(2)[1])
    assert_close(ours.mean(), theirs.detach(), rtol=1e-5, atol=1e-5)
    if loss_type == "sigmoid":
        assert_close(ours, dpo_loss(*policy.chunk(2), *ref.chunk(2), beta=beta)[0])
    if loss_type == "hinge":  # a real test of the kink: some pairs past the margin (loss 0), some not
        assert (ours == 0).any() and (ours > 0).any(), ours
    if loss_type == "ipo":  # the per-token normalisation matters: summed log-ratios give another loss
        summed = ((policy.chunk(2)[0] - ref.chunk(2)[0]) - (policy.chunk(2)[1] - ref.chunk(2)[1]) - 1 / (2 * beta)) ** 2
        assert not torch.allclose(summed.mean(), theirs.detach(), rtol=1e-3)


def test_dpo_variant_loss_names_what_it_needs():
    x = torch.zeros(2)
    with pytest.raises(ValueError, match="pass chosen_lengths and rejected_lengths"):
        dpo_variant_loss(x, x, x, x, beta=0.1, loss_type="ipo")
    with pytest.raises(ValueError, match="choose 'sigmoid', 'hinge' or 'ipo'"):
        dpo_variant_loss(x, x, x, x, beta=0.1, loss_type="simpo")


def test_simpo_loss_equals_cpo_trainer(tokenizer, tmp_path, tiny_config):
    """SimPO (TRL's CPOTrainer with loss_type="simpo" and no NLL term): the loss on the per-token log-probs TRL
    computes for a real batch, and compute_loss as their mean."""
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    torch.manual_seed(0)
    args = CPOConfig(loss_type="simpo", beta=2.0, simpo_gamma=1.0, cpo_alpha=0.0, max_length=128,
                     **common_args(tmp_path))
    trainer = CPOTrainer(model=LlamaForCausalLM(tiny_config()), args=args, train_dataset=preference_rows(),
                         processing_class=tokenizer)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    with torch.no_grad():
        chosen, rejected = trainer.concatenated_forward(trainer.model, batch)[:2]  # per-token averages (B,)
        theirs = trainer.compute_loss(trainer.model, batch)
    ours = simpo_loss(chosen, rejected, beta=2.0, gamma=1.0)
    assert_close(ours.mean(), theirs, rtol=1e-5, atol=1e-5)
    assert_close(ours, trainer.cpo_loss(chosen, rejected)[0], rtol=1e-5, atol=1e-6)
    # the margin gamma counts: without it the loss is lower for every pair
    assert (simpo_loss(chosen, rejected, beta=2.0, gamma=0.0) < ours).all()


def test_preference_logps_score_answers_as_dpo_trainer_does(tokenizer, tmp_path, tiny_config):
    # the notebooks' held-out scores (helpers.preference_logps) must see the same tokens TRL trains on
    from trl import DPOConfig, DPOTrainer

    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_config()).eval()
    trainer = DPOTrainer(model=model, ref_model=copy.deepcopy(model), args=DPOConfig(**common_args(tmp_path)),
                         train_dataset=preference_rows(), processing_class=tokenizer)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    with torch.no_grad():
        theirs = sequence_logps(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
                                      ).logits[:, :-1], batch["input_ids"][:, 1:], batch["completion_mask"][:, 1:])
    ours = helpers.preference_logps(model, tokenizer, preference_rows(), average=None)
    assert_close(torch.cat([ours["chosen"], ours["rejected"]]), theirs, rtol=1e-5, atol=1e-4)
    per_token = helpers.preference_logps(model, tokenizer, preference_rows(), average=True)
    assert_close(ours["chosen_average"], per_token["chosen"], rtol=1e-5, atol=1e-5)
    assert_close(ours["rejected_average"], per_token["rejected"], rtol=1e-5, atol=1e-5)


def test_dpo_loss_at_the_start_is_log2_with_zero_rewards():
    logps = torch.tensor([-12.0, -30.0])
    losses, chosen, rejected = dpo_loss(logps, logps - 3, logps, logps - 3)  # policy == reference
    assert_close(losses, torch.full((2,), torch.log(torch.tensor(2.0)).item()))
    assert chosen.abs().max() == 0 and rejected.abs().max() == 0


# ------------------------------------------------------------------------------------------ KTO
def test_kto_loss_equals_kto_trainer(tokenizer, tmp_path, tiny_config):
    from trl import KTOConfig, KTOTrainer

    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_config())
    args = KTOConfig(beta=0.3, desirable_weight=1.0, undesirable_weight=1.5, **common_args(tmp_path) |
                     {"per_device_train_batch_size": 8})
    trainer = KTOTrainer(model=model, ref_model=copy.deepcopy(model), args=args,
                         train_dataset=helpers.unpair(preference_rows()), processing_class=tokenizer)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(8)])
    # z0's answers must answer other prompts: no KL_ sequence may be a prompt with an answer from its own pair
    rows = trainer.train_dataset
    for row in rows:
        own = [other["completion_ids"] for other in rows if other["prompt_ids"] == row["prompt_ids"]]
        assert row["KL_completion_ids"] not in own, "a KL sequence answers its own prompt"

    def logps(net, prefix=""):
        ids, attention, mask = batch[f"{prefix}input_ids"], batch[f"{prefix}attention_mask"], batch[f"{prefix}completion_mask"]
        return sequence_logps(net(input_ids=ids, attention_mask=attention).logits[:, :-1], ids[:, 1:], mask[:, 1:])

    # move the policy away from its reference copy so that the mismatched answers gain probability: then the
    # reference point z0 is above 0 (a random nudge can leave it below, where TRL clamps it to 0 and it tests nothing)
    optimizer = torch.optim.Adam(trainer.model.parameters(), lr=1e-2)
    for _ in range(3):
        optimizer.zero_grad()
        (-logps(trainer.model, "KL_").sum()).backward()
        optimizer.step()
    theirs = trainer.compute_loss(trainer.model, dict(batch))

    with torch.no_grad():  # z0: each answer after another row's prompt (the collator's KL_ sequences), averaged
        kl = (logps(trainer.model, "KL_") - logps(trainer.ref_model, "KL_")).mean().clamp(min=0)
        policy, ref = logps(trainer.model), logps(trainer.ref_model)
    desirable = torch.as_tensor(batch["label"], dtype=torch.bool)
    losses, rewards = kto_loss(policy, ref, desirable, kl, beta=0.3, desirable_weight=1.0, undesirable_weight=1.5)
    assert_close(losses.mean(), theirs.detach(), rtol=1e-5, atol=1e-5)
    metrics = trainer._metrics["train"]
    assert metrics["kl"][-1] == pytest.approx(kl.item(), abs=1e-5)
    assert metrics["rewards/chosen"][-1] == pytest.approx(rewards[desirable].mean().item(), abs=1e-5)
    assert metrics["rewards/rejected"][-1] == pytest.approx(rewards[~desirable].mean().item(), abs=1e-5)
    assert desirable.any() and (~desirable).any(), "the batch must hold both labels for the test to mean anything"
    assert kl > 0.1, f"the reference point must be above 0 (got {kl.item():.3f}) for the test to check its use"


def test_kto_loss_by_hand_and_its_reference_point():
    good, bad = torch.tensor([True]), torch.tensor([False])
    # policy == reference and z0 = 0: every answer sits at 1 - sigmoid(0) = 0.5, times its weight
    assert kto_loss(torch.tensor([-5.0]), torch.tensor([-5.0]), good, 0.0)[0].item() == pytest.approx(0.5)
    assert kto_loss(torch.tensor([-5.0]), torch.tensor([-5.0]), bad, 0.0, undesirable_weight=2.0)[0].item() == \
        pytest.approx(1.0)
    # a good answer raised by 2 nats when the average answer also rose by 2 gains nothing over z0 ...
    assert kto_loss(torch.tensor([-3.0]), torch.tensor([-5.0]), good, 2.0)[0].item() == pytest.approx(0.5)
    # ... and a negative KL estimate is clamped to 0, as TRL does: the same as passing 0
    assert_close(kto_loss(torch.tensor([-3.0]), torch.tensor([-5.0]), good, -1.0)[0],
                 kto_loss(torch.tensor([-3.0]), torch.tensor([-5.0]), good, 0.0)[0])
    losses, rewards = kto_loss(torch.tensor([-3.0, -3.0]), torch.tensor([-5.0, -5.0]), torch.tensor([True, False]),
                               0.0, beta=0.5)
    assert_close(rewards, torch.tensor([1.0, 1.0]))  # beta * log-ratio
    assert_close(losses, torch.stack([1 - torch.sigmoid(torch.tensor(1.0)), 1 - torch.sigmoid(torch.tensor(-1.0))]))


# ------------------------------------------------------------------------------------------ ORPO
def test_orpo_loss_equals_orpo_trainer_odds_ratio_term():
    from trl.experimental.orpo import ORPOTrainer

    torch.manual_seed(0)
    chosen = -torch.rand(8) * 3 - 0.01  # average per-token log-probs: negative
    rejected = -torch.rand(8) * 3 - 0.01
    host = types.SimpleNamespace(beta=0.25, accelerator=types.SimpleNamespace(device="cpu"))
    their_losses, _, _, their_ratio, their_log_odds = ORPOTrainer.odds_ratio_loss(host, chosen, rejected)
    losses, log_odds = orpo_loss(chosen, rejected, beta=0.25)
    # TRL returns beta * log sigmoid(log odds), a quantity it *subtracts* from the NLL; ours is the loss to add
    assert_close(losses, -their_losses, rtol=1e-6, atol=1e-6)
    assert_close(log_odds.mean(), their_log_odds, rtol=1e-6, atol=1e-6)


def test_orpo_log_odds_is_zero_for_equal_answers_and_grows_with_the_gap():
    _, same = orpo_loss(torch.tensor([-1.0]), torch.tensor([-1.0]))
    _, apart = orpo_loss(torch.tensor([-0.2]), torch.tensor([-2.0]))
    assert same.item() == 0 and apart.item() > 1.8  # the odds ratio exaggerates the log-prob gap


# ------------------------------------------------------------------------------------------ GRPO + PPO clip
def reward_len(completions, **kwargs):
    """A reward with plenty of spread between completions: their length in characters."""
    return [float(len(c[0]["content"])) for c in completions]


def first_generation_batch(trainer_class, config_class, model, tokenizer, folder, peft_config=None, **settings):
    """(trainer, inputs): an online TRL trainer (GRPO, RLOO) rewarded by reward_len, and the first generation batch
    it samples and scores, 2 rl prompts x 4 completions of up to 12 tokens."""
    prompts = helpers.load_course_dataset("rl")["train"].select(range(8))
    args = config_class(output_dir=str(folder), use_cpu=True, bf16=False, report_to="none",
                        per_device_train_batch_size=8, num_generations=4, max_completion_length=12, max_steps=1,
                        temperature=1.0, gradient_checkpointing=False, seed=0, **settings)
    trainer = trainer_class(model=model, reward_funcs=reward_len, args=args, train_dataset=prompts,
                            processing_class=tokenizer, peft_config=peft_config)
    rows = [prompts[i // 4] for i in range(8)]  # what TRL's sampler yields: each prompt num_generations times
    with torch.no_grad():
        inputs = trainer._generate_and_score_completions(rows)
    return trainer, inputs


@pytest.fixture(scope="module")
def grpo_step(tokenizer, tmp_path_factory, tiny_config):
    from trl import GRPOConfig, GRPOTrainer

    torch.manual_seed(0)
    return first_generation_batch(GRPOTrainer, GRPOConfig, LlamaForCausalLM(tiny_config()), tokenizer,
                                  tmp_path_factory.mktemp("grpo"), beta=0.0, loss_type="bnpo")


def test_grpo_advantages_equal_grpo_trainer(grpo_step, tokenizer):
    trainer, inputs = grpo_step
    texts = tokenizer.batch_decode(inputs["completion_ids"] * inputs["completion_mask"], skip_special_tokens=True)
    rewards = torch.tensor(reward_len([[{"content": t}] for t in texts]))
    assert rewards.view(-1, 4).std(dim=1).min() > 0, "every group needs spread for the test to mean anything"
    assert_close(grpo_advantages(rewards, group_size=4), inputs["advantages"], rtol=1e-4, atol=1e-4)


def completion_logps(trainer, inputs):
    """(B, T) log-probs of the completion tokens under the trainer's model, as GRPO computes them."""
    ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
    attention = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
    n = inputs["completion_ids"].shape[1]
    with torch.no_grad():
        logits = trainer.model(input_ids=ids, attention_mask=attention).logits[:, -n - 1:-1]
    return torch.gather(logits.log_softmax(-1), 2, inputs["completion_ids"].unsqueeze(-1)).squeeze(-1)


def test_ppo_clip_loss_equals_grpo_clipped_surrogate(grpo_step):
    trainer, inputs = grpo_step
    logprobs = completion_logps(trainer, inputs)
    torch.manual_seed(1)  # an older policy 0.3 nats away per token: some ratios fall outside [0.8, 1.2]
    old = logprobs + 0.3 * torch.randn_like(logprobs)
    inputs = dict(inputs, old_per_token_logps=old)
    trainer.model.eval()  # eval mode: TRL divides by no gradient-accumulation count
    with torch.no_grad():
        theirs = trainer._compute_loss(trainer.model, inputs)
    ours = ppo_clip_loss(logprobs, old, inputs["advantages"], inputs["completion_mask"], clip_eps=0.2)
    assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
    ratio = torch.exp(logprobs - old)[inputs["completion_mask"].bool()]
    assert ((ratio < 0.8) | (ratio > 1.2)).any(), "some ratios must be clipped for the test to mean anything"


def ragged(inputs, lengths=(12, 3, 7, 12, 5, 9, 2, 10)):
    """The step's completions cut to different lengths (the tiny random model never ends one early), so that the
    loss types, which differ in how they weigh long and short completions, give different values."""
    mask = inputs["completion_mask"].clone()
    for row, length in enumerate(lengths):
        mask[row, length:] = 0
    return dict(inputs, completion_mask=mask, num_items_in_batch=mask.sum())


@pytest.mark.parametrize("loss_type", GRPO_LOSS_TYPES)
@pytest.mark.parametrize("beta, corrected", [(0.0, True), (0.04, True), (0.04, False)])
def test_grpo_loss_equals_grpo_trainer(grpo_step, loss_type, beta, corrected):
    trainer, inputs = grpo_step
    inputs = ragged(inputs)
    logprobs = completion_logps(trainer, inputs)
    torch.manual_seed(1)  # an older policy and a reference away from it, so the clip binds and the KL is not zero
    old = logprobs + 0.3 * torch.randn_like(logprobs)
    ref = logprobs + 0.5 * torch.randn_like(logprobs)
    inputs = dict(inputs, old_per_token_logps=old, ref_per_token_logps=ref)
    saved = trainer.loss_type, trainer.beta, trainer.epsilon_high, trainer.args.use_bias_correction_kl
    trainer.loss_type, trainer.beta, trainer.epsilon_high = loss_type, beta, 0.28  # DAPO's asymmetric clip
    trainer.args.use_bias_correction_kl = corrected
    trainer.model.eval()  # eval mode: TRL divides by no gradient-accumulation count
    try:
        with torch.no_grad():
            theirs = trainer._compute_loss(trainer.model, inputs)
    finally:
        trainer.loss_type, trainer.beta, trainer.epsilon_high, trainer.args.use_bias_correction_kl = saved
    ours = grpo_loss(logprobs, old, ref if beta else None, inputs["advantages"], inputs["completion_mask"], beta=beta,
                     epsilon_low=0.2, epsilon_high=0.28, loss_type=loss_type,
                     max_completion_length=trainer.max_completion_length, use_bias_correction_kl=corrected)
    assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


def test_grpo_loss_types_differ_when_completion_lengths_do(grpo_step):
    trainer, inputs = grpo_step
    inputs = ragged(inputs)
    mask = inputs["completion_mask"]
    logprobs = completion_logps(trainer, inputs)
    values = {t: grpo_loss(logprobs, logprobs, None, inputs["advantages"], mask, loss_type=t, max_completion_length=12)
              for t in GRPO_LOSS_TYPES}
    assert len({round(values[t].item(), 6) for t in ("grpo", "bnpo", "dr_grpo")}) == 3


def test_grpo_loss_refuses_what_it_cannot_compute():
    x, a, m = torch.zeros(2, 3), torch.ones(2), torch.ones(2, 3)
    with pytest.raises(ValueError, match="pass max_completion_length"):
        grpo_loss(x, x, None, a, m, loss_type="dr_grpo")
    with pytest.raises(ValueError, match="pass ref_logps"):
        grpo_loss(x, x, None, a, m, beta=0.1)
    with pytest.raises(ValueError, match="choose one of"):
        grpo_loss(x, x, None, a, m, loss_type="ppo")


def test_grpo_k3_kl_is_zero_at_the_reference_and_positive_away_from_it():
    x, a, m = torch.full((1, 3), -1.0), torch.zeros(1), torch.ones(1, 3)
    assert grpo_loss(x, x, x, a, m, beta=1.0).item() == 0  # zero advantage: only the KL term is left
    away = grpo_loss(x, x, x + 0.5, a, m, beta=1.0).item()
    assert away == pytest.approx(math.exp(0.5) - 0.5 - 1)  # e^d - d - 1 per token, d = ref - logp


def test_ppo_clip_binds_only_where_it_helps_the_objective():
    old = torch.zeros(1, 2)
    mask = torch.ones(1, 2)
    far_up = torch.log(torch.tensor([[2.0, 2.0]]))  # ratio 2
    # positive advantage: the gain is capped at 1.2 x A ...
    assert ppo_clip_loss(far_up, old, torch.tensor([1.0]), mask).item() == pytest.approx(-1.2)
    # ... negative advantage: the full penalty 2 x A stays (min picks the pessimistic side)
    assert ppo_clip_loss(far_up, old, torch.tensor([-1.0]), mask).item() == pytest.approx(2.0)


def test_grpo_advantages_reject_a_batch_that_splits_a_group():
    with pytest.raises(ValueError, match="do not split into groups of 4"):
        grpo_advantages(torch.arange(6.0), group_size=4)


# ------------------------------------------------------------------------------------------ RLOO
@pytest.fixture(scope="module")
def rloo_step(tokenizer, tmp_path_factory, tiny_config):
    """One RLOOTrainer generation batch on a tiny random Llama with a LoRA adapter that starts away from zero, so
    that the policy (adapter on) and the reference (adapter off) differ and the KL penalty is not zero."""
    from peft import LoraConfig
    from trl import RLOOConfig, RLOOTrainer

    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_config())
    # TRL adds the adapter (a PeftModel passed in would be copied as the reference, and the KL would be 0)
    lora = LoraConfig(r=8, lora_alpha=64, init_lora_weights=False, target_modules=["q_proj", "v_proj"])
    return first_generation_batch(RLOOTrainer, RLOOConfig, model, tokenizer, tmp_path_factory.mktemp("rloo"),
                                  peft_config=lora, beta=0.5)


def test_rloo_advantages_equal_rloo_trainer(rloo_step, tokenizer):
    trainer, inputs = rloo_step
    mask = inputs["completion_mask"]
    texts = tokenizer.batch_decode(inputs["completion_ids"] * mask, skip_special_tokens=True)
    rewards = torch.tensor(reward_len([[{"content": t}] for t in texts]))
    old = completion_logps(trainer, inputs)
    with trainer.model.disable_adapter():
        ref = completion_logps(trainer, inputs)
    kl = ((old - ref) * mask).sum(-1)  # (B,) the k1 estimate, summed over each completion's tokens
    assert kl.abs().min() > 0.01, "the policy must differ from the reference for the test to mean anything"
    assert_close((old * mask).sum(-1), inputs["old_logps"], rtol=1e-4, atol=1e-4)
    assert_close(rloo_advantages(rewards, 4, kl=kl, beta=trainer.beta), inputs["advantages"], rtol=1e-4, atol=1e-3)
    # without the penalty the advantages would differ: the KL term is really in there
    assert (rloo_advantages(rewards, 4) - inputs["advantages"]).abs().max() > 0.01


def test_rloo_loss_equals_rloo_trainer(rloo_step):
    trainer, inputs = rloo_step
    inputs = ragged(inputs)
    logps = completion_logps(trainer, inputs)
    torch.manual_seed(1)  # an older policy: a few tenths of a nat per sequence, so some ratios leave [0.8, 1.28]
    old = logps + 0.1 * torch.randn_like(logps)
    mask = inputs["completion_mask"]
    inputs = dict(inputs, old_logps=(old * mask).sum(-1))
    saved = trainer.epsilon_high
    trainer.epsilon_high = 0.28  # an asymmetric clip, so that the two bounds cannot be swapped unnoticed
    trainer.model.eval()
    try:
        with torch.no_grad():
            theirs = trainer._compute_loss(trainer.model, inputs)
    finally:
        trainer.epsilon_high = saved
    ours = rloo_loss(logps, old, inputs["advantages"], mask, epsilon_low=0.2, epsilon_high=0.28)
    assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
    # the clip binds on this batch: swapped bounds, or none at all, would give another loss
    swapped = rloo_loss(logps, old, inputs["advantages"], mask, epsilon_low=0.28, epsilon_high=0.2)
    unclipped = rloo_loss(logps, old, inputs["advantages"], mask, epsilon_low=1.0, epsilon_high=1e9)
    assert (swapped - theirs).abs() > 1e-3 and (unclipped - theirs).abs() > 1e-3, (ours, swapped, unclipped)
    assert_close(rloo_loss(logps, old, inputs["advantages"], mask, epsilon_low=0.2),  # epsilon_high None: symmetric
                 rloo_loss(logps, old, inputs["advantages"], mask, epsilon_low=0.2, epsilon_high=0.2))


def test_rloo_advantages_are_grpo_s_unscaled_ones_times_g_over_g_minus_1():
    rewards = torch.tensor([1.0, 0.0, 0.5, 0.5, 2.0, 2.0, 2.0, -1.0])
    assert_close(rloo_advantages(rewards, 4), 4 / 3 * grpo_advantages(rewards, 4, scale=False))
    # by hand, the first group: 1 - mean(0, .5, .5) = 2/3
    assert rloo_advantages(rewards, 4)[0].item() == pytest.approx(2 / 3)
    assert_close(rloo_advantages(rewards, 4).view(-1, 4).sum(1), torch.zeros(2))  # each group sums to zero
    normalized = rloo_advantages(rewards, 4, normalize=True)  # TRL's normalize_advantages: over the whole batch
    assert abs(normalized.mean().item()) < 1e-6 and normalized.std().item() == pytest.approx(1.0, abs=1e-3)


def test_rloo_refuses_what_it_cannot_compute():
    with pytest.raises(ValueError, match="pass kl"):
        rloo_advantages(torch.zeros(4), 2, beta=0.1)
    with pytest.raises(ValueError, match="do not split into groups of 3"):
        rloo_advantages(torch.zeros(4), 3)
    with pytest.raises(ValueError, match="at least 2"):
        rloo_advantages(torch.zeros(4), 1)


def test_check_grpo_batch_names_the_fix():
    check_grpo_batch(per_device_batch_size=8, gradient_accumulation_steps=1, num_generations=4)
    with pytest.raises(ValueError) as error:
        check_grpo_batch(per_device_batch_size=6, gradient_accumulation_steps=1, num_generations=4)
    message = str(error.value)
    assert "= 6 completions) is not a multiple of num_generations=4" in message
    assert "per_device_train_batch_size to a multiple of 4" in message and "[2, 3, 6]" in message
    with pytest.raises(ValueError, match="at least 2"):
        check_grpo_batch(per_device_batch_size=4, gradient_accumulation_steps=1, num_generations=1)


def test_check_grpo_batch_agrees_with_trl(tmp_path):
    from trl import GRPOConfig

    with pytest.raises(ValueError, match="must be divisible by num_generations"):
        GRPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, per_device_train_batch_size=6,
                   num_generations=4, report_to="none")


# ------------------------------------------------------------------------------------------ GAE
def test_gae_with_lambda_one_is_the_return_minus_the_value():
    torch.manual_seed(0)
    rewards, values = torch.randn(3, 5), torch.randn(3, 5)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.float)
    advantages, returns = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    reward_to_go = (rewards * mask).flip(1).cumsum(1).flip(1) * mask  # gamma = 1: the sum of the rewards still to come
    assert_close(returns, reward_to_go)
    assert_close(advantages, (reward_to_go - values) * mask)


def test_gae_with_lambda_zero_is_the_td_error():
    rewards = torch.tensor([[0.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, 0.6, 0.7]])
    advantages, _ = gae(rewards, values, torch.ones(1, 3), gamma=0.9, lam=0.0)
    assert_close(advantages, torch.tensor([[0.0 + 0.9 * 0.6 - 0.5, 0.0 + 0.9 * 0.7 - 0.6, 1.0 - 0.7]]))


def test_gae_by_hand():
    # one sequence, gamma 1, lam 0.5: deltas are (0 + 0.6 - 0.5, 0 + 0.7 - 0.6, 1 - 0.7) = (0.1, 0.1, 0.3)
    advantages, returns = gae(torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([[0.5, 0.6, 0.7]]), torch.ones(1, 3),
                              gamma=1.0, lam=0.5)
    a3 = 0.3
    a2 = 0.1 + 0.5 * a3
    a1 = 0.1 + 0.5 * a2
    assert_close(advantages, torch.tensor([[a1, a2, a3]]))
    assert_close(returns, advantages + torch.tensor([[0.5, 0.6, 0.7]]))


def test_orpo_log_odds_stays_finite_and_exact_for_answers_the_model_is_sure_of():
    """Bug: log1p(-exp(x)) cancels as the average log-prob x -> 0 (p -> 1): in float32 exp(-1e-8) rounds to 1 and the
    old code returned -inf; TRL branches at -log 2 (log1mexp). Checked against float64."""
    from helpers.losses import log1mexp

    x = torch.tensor([-1e-8, -1e-4, -0.3, -0.7, -5.0, -40.0])
    exact = torch.log(-torch.expm1(x.double()))
    assert_close(log1mexp(x).double(), exact, rtol=1e-5, atol=1e-12)
    _, log_odds = orpo_loss(torch.tensor([-1e-8]), torch.tensor([-2.0]))
    assert torch.isfinite(log_odds).all() and log_odds.item() > 15
