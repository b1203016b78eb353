"""reinforce_openvla.py: CPU smoke run, exact resume, 2-rank torchrun, discounted returns, one optimizer step
per iteration, the update's direction."""

import json

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
from reinforce_openvla import Args, discounted_returns, reinforce_update

# A tiny random policy never succeeds in 4 steps: every return is 0 and so is the policy gradient. The
# entropy bonus keeps the update non-zero, so that the exact-resume comparison is not vacuous.
SMOKE = ["--vla-path", "tiny", "--num-envs", "2", "--num-steps", "4", "--ent-coef", "0.01", "--micro-batch-size", "3",
         "--eval-every", "2", "--eval-episodes", "2", "--save-every", "1", "--deterministic", "--seed", "3"]
LOG_KEYS = {"charts/success_once", "charts/success_at_end", "charts/episodic_return", "charts/learning_rate",
            "charts/SPS", "time/rollout_s", "time/update_s", "eval/train/success_once",
            *(f"losses/{k}" for k in ("policy_loss", "entropy", "approx_kl", "first_ratio"))}


SCRIPT = "reinforce_openvla.py"


torchrun_run, smoke_run, resume_run = smoke_and_torchrun_fixtures(SCRIPT, SMOKE, 29527)


def test_smoke_logs_and_checkpoints(smoke_run, resume_run):
    # resume_run is only started here: it runs in the background during the tests below, and
    # test_exact_resume, at the end of the module, waits for it
    logged = scalars(smoke_run)
    assert LOG_KEYS <= set(logged), LOG_KEYS - set(logged)
    assert not {"losses/value_loss", "losses/explained_variance"} & set(logged)  # no value head, no value keys
    # the on-policy check: the recomputed log-probs are the rollout's (blog fix 3)
    assert all(abs(r - 1) < 1e-4 for r in logged["losses/first_ratio"])
    ckpts = sorted((smoke_run / "checkpoints").iterdir())
    assert [c.name for c in ckpts] == ["iter_000001", "iter_000002"]
    assert not (ckpts[-1] / ovp.ADAPTER_VALUE_HEAD_FILE).exists()
    info = json.loads((ckpts[-1] / "openvla_rl.json").read_text())
    assert info["iteration"] == 2 and info["global_step"] == 2 * 2 * 4
    assert list((smoke_run / "videos").glob("train_*.mp4"))
    # ONE optimizer step per iteration, although the 8 samples ran as 3 micro-batches: Adam counted 1, then 2
    for ckpt, steps in zip(ckpts, (1, 2), strict=True):
        opt = torch.load(ckpt / "optimizer.pt")
        assert {float(s["step"]) for s in opt["state"].values()} == {steps}
    # the checkpoint loads back onto its base, without a value head
    model, _ = ovp.load_vla("tiny", dtype=torch.float32, adapter_path=ckpts[-1])
    assert model.value_head is None
    assert_lora_trained(model)


# --- the pieces, on fixed data ---------------------------------------------------------------------------


def test_discounted_returns_match_hand_computation():
    rewards = torch.tensor([[0.0, 1.0], [1.0, 0.0], [2.0, 0.0]])  # (T=3, N=2)
    g = 0.9
    expected = torch.tensor([[0 + g * 1 + g * g * 2, 1.0], [1 + g * 2, 0.0], [2.0, 0.0]])
    assert torch.allclose(discounted_returns(rewards, g), expected)
    assert torch.equal(discounted_returns(rewards, 1.0)[0], rewards.sum(0))  # gamma 1: the episode's sum


def test_update_is_one_step_in_the_advantage_direction(tiny_dir):
    model, processor, batch = fixed_update_batch(tiny_dir, [1.0, -1.0, 1.0, -1.0])
    args = Args(micro_batch_size=1, max_grad_norm=100.0)  # 4 micro-batches, still one optimizer step
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    steps = []
    step = optimizer.step
    optimizer.step = lambda *a, **k: (steps.append(1), step(*a, **k))[1]
    losses = reinforce_update(args, model, processor, optimizer, batch, torch.float32, world_size=1)
    assert len(steps) == 1
    assert abs(losses["first_ratio"] - 1) < 1e-4 and abs(losses["approx_kl"]) < 1e-5
    delta = batch_logprobs(model, processor, batch) - batch["logprobs"]
    assert (delta[[0, 2]] > 0).all() and (delta[[1, 3]] < 0).all(), delta


def test_micro_batches_only_split_the_gradient(tiny_dir):
    """Accumulating over micro-batches of 1 gives the same step as one pass over the whole batch."""
    after = []
    for micro in (0, 1):
        model, processor, batch = fixed_update_batch(tiny_dir, [0.5, -1.0, 2.0])
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
        reinforce_update(Args(micro_batch_size=micro, max_grad_norm=1e9), model, processor, optimizer, batch,
                         torch.float32, world_size=1)
        after.append(ovp.trainable_state_dict(model))
    assert any(v.abs().sum() > 0 for k, v in after[0].items() if "lora_B" in k)
    assert all(torch.allclose(after[0][k], after[1][k], atol=1e-6) for k in after[0])


def test_reinforce_update_learns_a_bandit(tiny_dir):
    """Issue 12's learning check (synthetic reward on the sampled x token; see `bandit_learning`): one-step
    episodes, so the return is the reward; the batch-mean baseline as in the script. One optimizer step per
    iteration (the method), so more iterations than PPO's check."""
    def fill(batch, rewards):
        batch["advantages"] = rewards - rewards.mean()

    before, after = bandit_learning(tiny_dir, reinforce_update, Args(), fill, iterations=16, lr=1e-3)
    assert 0.35 < before < 0.65 and after >= 0.8, (before, after)


# --- the background runs (started by the fixtures above, running during the in-process tests), waited for last ---


def test_exact_resume(smoke_run, resume_run):
    """2 iterations straight == 1 iteration + resume + 1 more (LoRA weights, bit for bit)."""
    assert_exact_resume(resume_run, smoke_run)


def test_torchrun_two_ranks_stay_identical(smoke_run, torchrun_run):
    assert_ranks_identical(*torchrun_run)
