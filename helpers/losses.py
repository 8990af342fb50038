"""The preference and RL objectives of notebooks 05-08, from scratch, small enough to read.

Each one is checked against the library's own computation on the same tensors (tests/test_losses.py):

    reward_model_loss   Bradley-Terry loss of a reward model          = TRL RewardTrainer.compute_loss
    dpo_loss            sigmoid DPO, per example, with its rewards    = TRL DPOTrainer (loss_type="sigmoid")
    dpo_variant_loss    DPO's hinge and IPO losses, per example       = TRL DPOTrainer (loss_type="hinge", "ipo")
    simpo_loss          SimPO: no reference, per-token log-probs      = TRL CPOTrainer (loss_type="simpo")
    orpo_loss           ORPO's odds-ratio term                        = TRL ORPOTrainer.odds_ratio_loss (negated)
    ppo_clip_loss       PPO's clipped surrogate, a mean over tokens   = TRL GRPOTrainer's loss with beta=0, "bnpo"
    gae                 generalised advantage estimation, per token   (TRL has no PPO since 1.13: closed forms)
    grpo_advantages     rewards normalised within each prompt's group = TRL GRPOTrainer (scale_rewards="group")
    grpo_loss           GRPO's loss and its variants (grpo, bnpo, dapo, dr_grpo) with the k3 KL = TRL GRPOTrainer
    kto_loss            KTO on unpaired answers, per example          = TRL KTOTrainer (loss_type="kto")
    rloo_advantages     each reward minus the mean of the others' in its group, after the k1 KL penalty
                                                                      = TRL RLOOTrainer
    rloo_loss           RLOO's clipped surrogate on whole sequences   = TRL RLOOTrainer

Shapes: B = examples (or completions), T = completion tokens, G = completions per prompt (group size).
"""

import math

import torch
import torch.nn.functional as F


def token_logps(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Log-probability of each labelled token: logits (B, T, vocab) predicting labels (B, T). Returns (B, T).

    PPO works per token (ratios, KL, advantages); DPO and ORPO sum or average these over the completion.
    """
    return torch.gather(logits.log_softmax(-1), 2, labels.unsqueeze(-1)).squeeze(-1)


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, average: bool = False) -> torch.Tensor:
    """Log-probability of each sequence's labelled tokens (the completion), summed or averaged over tokens.

    logits: (B, T, vocab) predicting labels: (B, T); mask: (B, T), 1 on completion tokens.
    Returns (B,). DPO sums (a sequence's probability); ORPO averages (so long answers are not penalised).
    """
    total = (token_logps(logits, labels) * mask).sum(-1)
    return total / mask.sum(-1).clamp(min=1) if average else total


def reward_model_loss(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> torch.Tensor:
    """Bradley-Terry: P(chosen beats rejected) = sigmoid(r_chosen - r_rejected); minimise its negative log.

    chosen_rewards, rejected_rewards: (B,) scalar scores from the reward model. Returns a scalar (mean over B).
    Only the difference matters, so rewards are defined up to a constant (TRL can add a centring term for that).
    """
    return -F.logsigmoid(chosen_rewards - rejected_rewards).mean()


def dpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
             ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor,
             beta: float = 0.1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Direct Preference Optimisation (sigmoid loss), per example.

    All inputs: (B,) summed log-probs of the chosen / rejected answer under the policy and the frozen reference.
    The implicit reward of an answer is beta * log(pi / pi_ref); the loss is the Bradley-Terry loss on those.
    Returns (losses, chosen_rewards, rejected_rewards), each (B,).
    """
    chosen_rewards = beta * (policy_chosen_logps - ref_chosen_logps)
    rejected_rewards = beta * (policy_rejected_logps - ref_rejected_logps)
    losses = -F.logsigmoid(chosen_rewards - rejected_rewards)
    return losses, chosen_rewards.detach(), rejected_rewards.detach()


def dpo_variant_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
                     ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor, beta: float, loss_type: str,
                     chosen_lengths: torch.Tensor | None = None, rejected_lengths: torch.Tensor | None = None
                     ) -> torch.Tensor:
    """Other losses on DPO's log-ratios, per example (B,). Inputs as `dpo_loss`: (B,) summed log-probs; the margin
    is log(pi/pi_ref)(chosen) - log(pi/pi_ref)(rejected), (B,).

    "sigmoid": DPO itself. "hinge" (SLiC): relu(1 - beta * margin), zero once the margin passes 1 / beta, so a pair
    that is learned stops pulling. "ipo": the squared distance of the margin from 1 / (2 beta), a target instead of a
    margin to maximise, with each log-ratio divided by its answer's token count (chosen_lengths, rejected_lengths)
    as TRL does it (both (B,) token counts).
    """
    chosen_logratios = policy_chosen_logps - ref_chosen_logps
    rejected_logratios = policy_rejected_logps - ref_rejected_logps
    if loss_type == "sigmoid":
        return -F.logsigmoid(beta * (chosen_logratios - rejected_logratios))
    if loss_type == "hinge":
        return torch.relu(1 - beta * (chosen_logratios - rejected_logratios))
    if loss_type == "ipo":
        if chosen_lengths is None or rejected_lengths is None:
            raise ValueError("loss_type='ipo' averages each log-ratio over its answer's tokens: pass chosen_lengths "
                             "and rejected_lengths (B,), the answers' token counts.")
        margin = chosen_logratios / chosen_lengths.clamp(min=1) - rejected_logratios / rejected_lengths.clamp(min=1)
        return (margin - 1 / (2 * beta)) ** 2
    raise ValueError(f"loss_type={loss_type!r}: choose 'sigmoid', 'hinge' or 'ipo'.")


def simpo_loss(chosen_avg_logps: torch.Tensor, rejected_avg_logps: torch.Tensor, beta: float = 2.0,
               gamma: float = 1.0) -> torch.Tensor:
    """SimPO, per example (B,): -log sigmoid(beta * (chosen - rejected) - gamma) on the answers' *per-token* log-probs
    (B,) under the policy alone. No reference model: the length-normalised log-prob is the implicit reward, and the
    chosen answer must beat the rejected one by a margin gamma (in units of the reward)."""
    return -F.logsigmoid(beta * (chosen_avg_logps - rejected_avg_logps) - gamma)


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, without cancellation: log1p(-exp(x)) loses all precision as x -> 0 (p -> 1, where
    exp(x) rounds to 1), log(-expm1(x)) as x -> -inf; switch at x = -log 2 (Maechler, 2012), as TRL's ORPO does."""
    return torch.where(x < -math.log(2), torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


def orpo_loss(chosen_logps: torch.Tensor, rejected_logps: torch.Tensor,
              beta: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """ORPO's odds-ratio term, per example (ORPO's full loss adds the usual NLL of the chosen answer).

    chosen_logps, rejected_logps: (B,) *average* per-token log-probs, so exp() of them is a probability p.
    odds(p) = p / (1 - p); log odds ratio = log odds(chosen) - log odds(rejected), with log(1 - p) from
    `log1mexp` (stable for p near 0 and near 1).
    Returns (losses, log_odds_ratio), each (B,): losses = -beta * log sigmoid(log odds ratio).
    No reference model: the NLL term keeps the model anchored instead.
    """
    log_odds_ratio = (chosen_logps - rejected_logps) - (log1mexp(chosen_logps) - log1mexp(rejected_logps))
    losses = -beta * F.logsigmoid(log_odds_ratio)
    return losses, log_odds_ratio.detach()


def ppo_clip_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                  mask: torch.Tensor, clip_eps: float = 0.2) -> torch.Tensor:
    """PPO's clipped surrogate objective, negated to a loss, averaged over the real tokens of the batch.

    logprobs: (B, T) per-token log-probs under the policy being trained; old_logprobs: (B, T) the same tokens
    under the policy that generated them; advantages: (B, T), or (B,) for one advantage per completion;
    mask: (B, T), 1 on completion tokens. The ratio pi/pi_old is clipped to [1 - eps, 1 + eps] so one batch
    cannot move the policy far: taking the min makes the clip bind only when it would help the objective.
    """
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(1)  # one advantage per completion, shared by its tokens
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * advantages
    per_token = -torch.min(unclipped, clipped)
    return (per_token * mask).sum() / mask.sum().clamp(min=1)


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over the tokens of each completion.

    rewards, values: (B, T) per-token reward (in RLHF: -KL penalty on every token, plus the reward model's score
    on the last one) and the value head's estimate; mask: (B, T), 1 on real tokens (right padding).
    delta_t = r_t + gamma * V_{t+1} - V_t;  A_t = delta_t + gamma * lam * A_{t+1}, walking backwards.
    lam=1 gives the Monte-Carlo return minus the value, lam=0 the one-step TD error.
    Returns (advantages, returns), each (B, T), zero on padding; returns = advantages + values, the value target.
    """
    values = values * mask
    rewards = rewards * mask
    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros_like(rewards[:, 0])
    next_advantage = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_advantage = (delta + gamma * lam * next_advantage) * mask[:, t]
        next_value = values[:, t]
        advantages[:, t] = next_advantage
    return advantages, (advantages + values) * mask


def grpo_advantages(rewards: torch.Tensor, group_size: int, scale: bool = True) -> torch.Tensor:
    """GRPO's advantages: each completion's reward compared with the other completions of the same prompt.

    rewards: (B,) with the G = group_size completions of each prompt next to each other (B = prompts x G).
    A_i = (r_i - mean(group)) / (std(group) + 1e-4); std is the unbiased one, as in TRL. scale=False leaves
    the std out (Dr. GRPO). No value model: the group mean is the baseline. Returns (B,).
    """
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}: the batch must "
                         f"hold every prompt's {group_size} completions.")
    groups = rewards.view(-1, group_size)
    advantages = groups - groups.mean(dim=1, keepdim=True)
    if scale:
        advantages = advantages / (groups.std(dim=1, keepdim=True) + 1e-4)
    return advantages.view(-1)


GRPO_LOSS_TYPES = ("grpo", "bnpo", "dapo", "dr_grpo")


def grpo_loss(logps: torch.Tensor, old_logps: torch.Tensor, ref_logps: torch.Tensor | None, advantages: torch.Tensor,
              mask: torch.Tensor, beta: float = 0.0, epsilon_low: float = 0.2, epsilon_high: float = 0.2,
              loss_type: str = "dapo", max_completion_length: int | None = None,
              use_bias_correction_kl: bool = True) -> torch.Tensor:
    """GRPO's clipped surrogate plus its KL penalty, aggregated over tokens the way `loss_type` says. A scalar.

    logps, old_logps: (B, T) per-token log-probs of the completions under the policy being trained and the one
    that sampled them; ref_logps: (B, T) under the frozen reference (None when beta == 0); advantages: (B,), one
    per completion (grpo_advantages); mask: (B, T), 1 on completion tokens.

    Per token: -min(ratio * A, clip(ratio, 1 - epsilon_low, 1 + epsilon_high) * A) + beta * KL, with the k3
    estimator KL = exp(ref - logp) - (ref - logp) - 1 (never negative, unbiased for KL(pi || ref) on samples from
    pi; 05's PPO puts the k1 estimate logp - ref into the reward instead). TRL 1.16 multiplies that KL by the ratio
    (use_bias_correction_kl, its default): the value is unchanged on-policy (ratio 1), but its gradient becomes an
    unbiased estimate of the gradient of KL(pi || ref), token by token. Then, what differs between variants:
        grpo     mean over each completion's tokens, then over completions: a long answer's tokens weigh less
        bnpo     mean over all tokens of the batch: every token weighs the same
        dapo     TRL's default; the same mean over the tokens of the whole generation batch, which is bnpo when one
                 process computes it with no gradient accumulation and steps_per_generation = 1 (as here)
        dr_grpo  sum over all tokens / (B x max_completion_length): a constant, so no length bias at all
    In training TRL also divides grpo, bnpo and dr_grpo by the gradient-accumulation steps; this is the loss of
    one batch (TRL's in eval mode).
    """
    if loss_type not in GRPO_LOSS_TYPES:
        raise ValueError(f"loss_type={loss_type!r}: choose one of {GRPO_LOSS_TYPES}.")
    if loss_type == "dr_grpo" and max_completion_length is None:
        raise ValueError("loss_type='dr_grpo' divides by B x max_completion_length: pass max_completion_length "
                         "(the GRPOConfig value the completions were generated with).")
    if beta != 0.0 and ref_logps is None:
        raise ValueError(f"beta={beta} adds a KL penalty to the reference model: pass ref_logps (B, T), or set beta=0.")
    ratio = torch.exp(logps - old_logps)
    advantages = advantages.unsqueeze(1)  # one advantage per completion, shared by its tokens
    per_token = -torch.min(ratio * advantages,
                           torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high) * advantages)
    if beta != 0.0:
        kl = torch.exp(ref_logps - logps) - (ref_logps - logps) - 1
        per_token = per_token + beta * (kl * ratio if use_bias_correction_kl else kl)
    if loss_type == "grpo":
        return ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1)).mean()
    if loss_type == "dr_grpo":
        return (per_token * mask).sum() / (per_token.shape[0] * max_completion_length)
    return (per_token * mask).sum() / mask.sum().clamp(min=1)  # bnpo, and dapo on one process


def rloo_advantages(rewards: torch.Tensor, group_size: int, kl: torch.Tensor | None = None, beta: float = 0.0,
                    normalize: bool = False) -> torch.Tensor:
    """RLOO's advantages (REINFORCE Leave-One-Out): each completion's reward minus the mean reward of the *other*
    completions of the same prompt.

    rewards: (B,) with the G = group_size completions of each prompt next to each other; kl: (B,) each completion's
    summed k1 estimate, sum_t (log pi_old - log pi_ref) over its tokens (needed when beta > 0). As in 05's PPO the KL
    is a penalty on the reward, not a term of the loss: r_i = reward_i - beta * kl_i. Then
        A_i = r_i - (sum_j r_j - r_i) / (G - 1) = G / (G - 1) * (r_i - mean(group))
    The baseline leaves r_i out, so it does not depend on the answer it judges: the estimate of the policy
    gradient stays unbiased (GRPO's group mean includes r_i). The KL enters before the baseline, so only how much
    more an answer drifted than its siblings is penalised. normalize=True subtracts the batch's mean advantage and
    divides by its standard deviation (TRL's normalize_advantages, off by default; TRL takes it over the whole
    generation batch of all processes). TRL also skips unscorable completions (NaN rewards) and can clip rewards
    (reward_clip_range); neither is done here. Returns (B,).
    """
    if group_size < 2:
        raise ValueError(f"group_size={group_size}: the leave-one-out baseline needs at least 2 completions per prompt.")
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}: the batch must "
                         f"hold every prompt's {group_size} completions.")
    if beta != 0.0:
        if kl is None:
            raise ValueError(f"beta={beta} puts a KL penalty into the reward: pass kl (B,), each completion's summed "
                             "log pi_old - log pi_ref, or set beta=0.")
        rewards = rewards - beta * kl
    groups = rewards.view(-1, group_size)
    baselines = (groups.sum(dim=1, keepdim=True) - groups) / (group_size - 1)  # the mean of the others
    advantages = (groups - baselines).view(-1)
    if normalize:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-4)
    return advantages


def rloo_loss(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
              epsilon_low: float = 0.2, epsilon_high: float | None = None) -> torch.Tensor:
    """RLOO's clipped surrogate, negated to a loss: one ratio per *completion*, not per token. A scalar.

    logps, old_logps: (B, T) per-token log-probs of the completions under the policy being trained and the one that
    sampled them; advantages: (B,) from rloo_advantages; mask: (B, T), 1 on completion tokens.
    ratio_i = exp(sum_t logps - sum_t old_logps) is clipped to [1 - epsilon_low, 1 + epsilon_high] (epsilon_high
    None: the same as epsilon_low, as in RLOOConfig); the loss is the mean over completions of
    -min(ratio * A, clip(ratio) * A). With one update per batch the ratio is 1, the loss is 0 (a group's advantages
    sum to zero) and its gradient is REINFORCE's with a baseline: -mean_i(A_i * grad log pi(y_i)).
    """
    epsilon_high = epsilon_low if epsilon_high is None else epsilon_high
    ratio = torch.exp((logps * mask).sum(-1) - (old_logps * mask).sum(-1))  # (B,)
    return -torch.min(ratio * advantages, torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high) * advantages).mean()


def kto_loss(policy_logps: torch.Tensor, ref_logps: torch.Tensor, desirable: torch.Tensor, kl: torch.Tensor | float,
             beta: float = 0.1, desirable_weight: float = 1.0,
             undesirable_weight: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Kahneman-Tversky Optimisation: each answer is only labelled good or bad, never paired with another.

    policy_logps, ref_logps: (B,) summed log-probs of each answer under the policy and the frozen reference;
    desirable: (B,) bool; kl: the scalar reference point z0, an estimate of KL(policy || reference) that gets no
    gradient (TRL: the mean log-ratio of the batch's answers paired with *other* rows' prompts, clamped at 0).
    With r = log(pi / pi_ref):
        desirable     lambda_D * (1 - sigmoid(beta * (r - z0)))   good answers must gain more than the average
        undesirable   lambda_U * (1 - sigmoid(beta * (z0 - r)))   bad ones must lose more than the average
    Without z0 the model could raise every answer's probability at once; with it only the contrast pays.
    Returns (losses, rewards), each (B,) in the input order; rewards = beta * r (detached).
    """
    z0 = torch.as_tensor(kl, dtype=policy_logps.dtype, device=policy_logps.device).detach().clamp(min=0)
    desirable = torch.as_tensor(desirable, dtype=torch.bool, device=policy_logps.device)
    logratios = policy_logps - ref_logps
    losses = torch.where(desirable,
                         desirable_weight * (1 - torch.sigmoid(beta * (logratios - z0))),
                         undesirable_weight * (1 - torch.sigmoid(beta * (z0 - logratios))))
    return losses, beta * logratios.detach()


def check_grpo_batch(per_device_batch_size: int, gradient_accumulation_steps: int, num_generations: int,
                     num_processes: int = 1) -> None:
    """Fail before training, with the fix, when GRPO's batch cannot hold whole groups of completions.

    TRL's GRPO generates num_generations completions per prompt and needs the generation batch
    (per-device batch x accumulation steps x processes) to be a multiple of num_generations.
    """
    generation_batch = per_device_batch_size * gradient_accumulation_steps * num_processes
    if num_generations < 2:
        raise ValueError(f"num_generations={num_generations}: GRPO compares completions of the same prompt, so it "
                         "needs at least 2 per prompt (4 to 16 is usual).")
    if generation_batch % num_generations:
        fits = [g for g in range(2, generation_batch + 1) if generation_batch % g == 0]
        raise ValueError(
            f"The generation batch ({per_device_batch_size} per device x {gradient_accumulation_steps} accumulation "
            f"steps x {num_processes} processes = {generation_batch} completions) is not a multiple of "
            f"num_generations={num_generations}, so a prompt's group would be split. Set "
            f"per_device_train_batch_size to a multiple of {num_generations} (e.g. {num_generations}), or pick "
            f"num_generations from {fits}.")
