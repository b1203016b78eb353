"""grpo_openvla.py: CPU smoke run, exact resume, 2-rank torchrun, same-seed groups, group advantages, the KL
to the adapter-disabled reference, the update's direction, the group-size check."""

import json

import numpy as np
import pytest
import torch
from script_harness import (
    assert_exact_resume,
    assert_lora_trained,
    assert_ranks_identical,
    bandit_learning,
    batch_logprobs,
    fixed_update_batch,
    scalars,
    smoke_and_torchrun_fixtures,
)

import openvla_patch as ovp
from grpo_openvla import Args, group_advantages, group_seeds, grpo_update, main

# A tiny random policy never succeeds in 4 steps: all returns of a group are equal, so every advantage is 0.
# The entropy bonus and the KL penalty (0 at the start, not after the first step) keep the update non-zero,
# so that the exact-resume comparison is not vacuous; they also run the reference pass in the script.
SMOKE = ["--vla-path", "tiny", "--num-envs", "2", "--group-size", "2", "--num-steps", "4", "--num-minibatches", "2",
         "--ent-coef", "0.01", "--beta", "0.1", "--clip-coef-high", "0.28",
         "--eval-every", "2", "--eval-episodes", "2", "--save-every", "1", "--deterministic", "--seed", "3"]
LOG_KEYS = {"charts/success_once", "charts/success_at_end", "charts/episodic_return", "charts/learning_rate",
            "charts/SPS", "charts/frac_zero_adv_groups", "time/rollout_s", "time/update_s", "eval/train/success_once",
            *(f"losses/{k}" for k in ("policy_loss", "entropy", "approx_kl", "clipfrac", "first_ratio", "kl"))}


SCRIPT = "grpo_openvla.py"


torchrun_run, smoke_run, resume_run = smoke_and_torchrun_fixtures(SCRIPT, SMOKE, 29537, ["--num-envs", "4"])


def test_smoke_logs_and_checkpoints(smoke_run, resume_run):
    # resume_run is only started here: it runs in the background during the tests below, and
    # test_exact_resume, at the end of the module, waits for it
    logged = scalars(smoke_run)
    assert LOG_KEYS <= set(logged), LOG_KEYS - set(logged)
    assert not {"losses/value_loss", "losses/explained_variance"} & set(logged)
    assert all(abs(r - 1) < 1e-4 for r in logged["losses/first_ratio"])  # on-policy check (blog fix 3)
    assert all(0.0 <= f <= 1.0 for f in logged["charts/frac_zero_adv_groups"])
    assert all(0.0 <= k < 1.0 for k in logged["losses/kl"])  # k3 >= 0; small: the policy starts at the reference
    ckpts = sorted((smoke_run / "checkpoints").iterdir())
    assert [c.name for c in ckpts] == ["iter_000001", "iter_000002"]
    assert not (ckpts[-1] / ovp.ADAPTER_VALUE_HEAD_FILE).exists()
    info = json.loads((ckpts[-1] / "openvla_rl.json").read_text())
    assert info["iteration"] == 2 and info["global_step"] == 2 * 2 * 4 and info["args"]["group_size"] == 2
    assert list((smoke_run / "videos").glob("train_*.mp4"))
    model, _ = ovp.load_vla("tiny", dtype=torch.float32, adapter_path=ckpts[-1])
    assert_lora_trained(model)


@pytest.mark.parametrize("num_envs, group_size, message", [
    (3, 2, "envs per rank must be a multiple of --group-size 2"),
    (4, 1, "--group-size 1 must be >= 2"),
])
def test_groups_must_fit_on_a_rank(num_envs, group_size, message):
    """Checked before anything is loaded; the script's `__main__` turns OpenVLAError into one line and exit 2
    (the same block as ppo_openvla.py's, whose CLI path test_ppo.py runs)."""
    with pytest.raises(ovp.OpenVLAError, match=message):
        main(Args(vla_path="tiny", num_envs=num_envs, group_size=group_size))


# --- groups and advantages -----------------------------------------------------------------------------


def test_group_seeds_repeat_within_a_group_and_are_fresh_across_groups_and_calls():
    rng = np.random.default_rng(0)
    first, second = group_seeds(rng, 6, 3), group_seeds(rng, 6, 3)
    for seeds in (first, second):
        assert seeds[0] == seeds[1] == seeds[2] and seeds[3] == seeds[4] == seeds[5] and seeds[0] != seeds[3]
    assert set(first).isdisjoint(second)


def test_envs_of_a_group_render_identical_first_images(train_envs):
    rng = np.random.default_rng(0)
    same, _ = train_envs.reset(group_seeds(rng, 2, 2))  # one group of 2: one seed
    assert torch.equal(same[0], same[1])
    different, _ = train_envs.reset(group_seeds(rng, 2, 1))  # two groups of 1: two seeds
    assert not torch.equal(different[0], different[1])


def test_group_advantages_are_centred_and_scaled_per_group():
    returns = torch.tensor([1.0, 3.0, 0.0, 4.0, 4.0, 10.0])  # 2 groups of 3
    adv = group_advantages(returns, 3, scale_rewards=True)
    assert torch.allclose(adv.view(2, 3).mean(1), torch.zeros(2), atol=1e-6)
    assert torch.allclose(adv.view(2, 3).std(1), torch.ones(2), atol=1e-3)  # unbiased std, as TRL
    # by hand: group 1 has mean 4/3 and std sqrt(7/3)
    assert torch.allclose(adv[:3], (returns[:3] - 4 / 3) / (np.sqrt(7 / 3) + 1e-4))
    unscaled = group_advantages(returns, 3, scale_rewards=False)
    assert torch.allclose(unscaled, torch.tensor([-1 / 3, 5 / 3, -4 / 3, -2.0, -2.0, 4.0]))


@pytest.mark.parametrize("scale_rewards", [True, False])
def test_a_group_with_identical_returns_gets_zero_advantage(scale_rewards):
    adv = group_advantages(torch.tensor([5.0, 5.0, 0.0, 1.0]), 2, scale_rewards=scale_rewards)
    assert torch.equal(adv[:2], torch.zeros(2))  # exactly zero, no NaN from the zero std
    assert (adv[2:] != 0).all()


# --- the update, on a fixed batch ------------------------------------------------------------------------


def test_kl_to_the_reference_is_zero_at_the_start_and_grows(tiny_dir):
    model, processor, batch = fixed_update_batch(tiny_dir, [1.0, -1.0, 1.0, -1.0])
    args = Args(num_minibatches=1, beta=0.1, micro_batch_size=2, max_grad_norm=100.0)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    first = grpo_update(args, model, processor, optimizer, batch, torch.float32, world_size=1)
    assert first["kl"] < 1e-6  # LoRA B starts at zero: the adapter-disabled model is the policy
    assert abs(first["first_ratio"] - 1) < 1e-4
    # after one step the policy has left the reference, and the reference pass sees it (the adapter was off)
    second = grpo_update(args, model, processor, optimizer, batch, torch.float32, world_size=1)
    assert second["kl"] > 1e-6
    assert "kl" not in grpo_update(Args(num_minibatches=1), model, processor, optimizer, batch, torch.float32, 1)


def test_update_moves_logprobs_with_the_advantage_sign(tiny_dir):
    model, processor, batch = fixed_update_batch(tiny_dir, [1.0, -1.0, 1.0, -1.0])
    args = Args(num_minibatches=1, update_epochs=4, clip_coef=10.0, max_grad_norm=100.0)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    grpo_update(args, model, processor, optimizer, batch, torch.float32, world_size=1)
    delta = batch_logprobs(model, processor, batch) - batch["logprobs"]
    assert (delta[[0, 2]] > 0).all() and (delta[[1, 3]] < 0).all(), delta


def test_micro_batches_only_split_the_gradient(tiny_dir):
    """--micro-batch-size only accumulates the minibatch's gradient (session 30 runs the small model with 0, the
    whole minibatch, where the 7B default is 16): micro-batches of 1 give the same step as one pass."""
    after = []
    for micro in (0, 1):
        model, processor, batch = fixed_update_batch(tiny_dir, [0.5, -1.0, 2.0])
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
        grpo_update(Args(num_minibatches=1, micro_batch_size=micro, max_grad_norm=1e9), model, processor, optimizer,
                    batch, torch.float32, world_size=1)
        after.append(ovp.trainable_state_dict(model))
    assert any(v.abs().sum() > 0 for k, v in after[0].items() if "lora_B" in k)
    assert all(torch.allclose(after[0][k], after[1][k], atol=1e-6) for k in after[0])


@pytest.mark.parametrize("clip_coef_high, moves", [(None, False), (0.3, True)])
def test_clip_higher_only_widens_the_upper_bound(tiny_dir, clip_coef_high, moves):
    """Every ratio at 1.25 with positive advantages: the symmetric clip 0.2 stops the gradient (PPO eq. 7),
    DAPO's clip-higher 0.3 lets it through."""
    model, processor, batch = fixed_update_batch(tiny_dir, [1.0, 1.0])
    batch["logprobs"] = batch["logprobs"] - np.log(1.25)  # as if the rollout policy had been less likely
    args = Args(num_minibatches=1, clip_coef=0.2, clip_coef_high=clip_coef_high)
    before = ovp.trainable_state_dict(model)
    losses = grpo_update(args, model, processor, torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad], lr=1e-2), batch, torch.float32, world_size=1)
    after = ovp.trainable_state_dict(model)
    assert abs(losses["first_ratio"] - 1.25) < 1e-3 and losses["clipfrac"] == (0.0 if moves else 1.0)
    assert any(not torch.equal(before[k], after[k]) for k in before) == moves


def test_grpo_update_learns_a_bandit(tiny_dir):
    """Issue 12's learning check (synthetic reward on the sampled x token; see `bandit_learning`): the batch is
    one group of same-start episodes of one step, so the group advantage is the normalised reward."""
    def fill(batch, rewards):
        batch["advantages"] = group_advantages(rewards, len(rewards), scale_rewards=True)

    before, after = bandit_learning(tiny_dir, grpo_update, Args(num_minibatches=4), fill, iterations=12)
    assert 0.35 < before < 0.65 and after >= 0.8, (before, after)


# --- the background runs (started by the fixtures above, running during the in-process tests), waited for last ---


def test_exact_resume(smoke_run, resume_run):
    """2 iterations straight == 1 iteration + resume + 1 more (LoRA weights, bit for bit)."""
    assert_exact_resume(resume_run, smoke_run)


def test_torchrun_two_ranks_stay_identical(smoke_run, torchrun_run):
    assert_ranks_identical(*torchrun_run)
