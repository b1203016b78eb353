"""ppo_openvla.py: CPU smoke run, exact resume, 2-rank torchrun, the on-policy check, the update's direction."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file
from script_harness import (
    assert_exact_resume,
    assert_lora_trained,
    assert_ranks_identical,
    bandit_learning,
    batch_logprobs,
    fixed_update_batch,
    run_in_process,
    run_to_dir,
    scalars,
    smoke_and_torchrun_fixtures,
    write_demos,
)

import openvla_patch as ovp
from ppo_openvla import Args, StateCritic, compute_gae, episode_masks, load_ptx_demos, ppo_update

SCRIPT = "ppo_openvla.py"
SMOKE = ["--vla-path", "tiny", "--num-envs", "2", "--num-steps", "4", "--num-minibatches", "2",
         "--eval-every", "2", "--eval-episodes", "2", "--save-every", "1", "--deterministic", "--seed", "3"]
LOG_KEYS = {"charts/success_once", "charts/success_at_end", "charts/episodic_return", "charts/learning_rate",
            "charts/SPS", "charts/frac_steps_in_loss", "time/rollout_s", "time/update_s", "eval/train/success_once",
            *(f"losses/{k}" for k in ("policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac",
                                      "explained_variance", "first_ratio", "value_mean", "return_mean",
                                      "grad_norm_policy", "grad_norm_value", "entropy_x", "entropy_gripper"))}


# the 2-rank run also trains the vision towers (at their own learning rate): they must stay in sync too
VISION_LR = 2e-5
torchrun_run, smoke_run, resume_run = smoke_and_torchrun_fixtures(SCRIPT, SMOKE, 29517,
                                                                  ["--train-vision", "--vision-learning-rate", str(VISION_LR)])


def test_smoke_logs_and_checkpoints(smoke_run, resume_run):
    # resume_run is only started here: it runs in the background during the tests below, and
    # test_exact_resume, at the end of the module, waits for it
    logged = scalars(smoke_run)
    assert LOG_KEYS <= set(logged), LOG_KEYS - set(logged)
    # the on-policy check: the first minibatch's ratio is 1 in fp32 (blog fix 3)
    assert all(abs(r - 1) < 1e-4 for r in logged["losses/first_ratio"])
    ckpts = sorted((smoke_run / "checkpoints").iterdir())
    assert [c.name for c in ckpts] == ["iter_000001", "iter_000002"]
    info = json.loads((ckpts[-1] / "openvla_rl.json").read_text())
    assert info["iteration"] == 2 and info["global_step"] == 2 * 2 * 4 and info["unnorm_key"] == "panda_tabletop"
    assert list((smoke_run / "videos").glob("train_*.mp4"))
    # the checkpoint loads back onto its base: same LoRA and value-head weights
    model, _ = ovp.load_vla("tiny", dtype=torch.float32, adapter_path=ckpts[-1], with_value_head=True)
    saved = load_file(ckpts[-1] / "value_head.safetensors")
    assert all(torch.equal(model.value_head.state_dict()[k], v) for k, v in saved.items())
    assert_lora_trained(model)


@pytest.mark.parametrize("bad_args, message", [
    (["--env-id", "no_such_variant"], "unknown env or variant 'no_such_variant'"),
    (["--num-minibatches", "0"], "--num-minibatches must be in 1..8"),
    (["--unnorm-key", "fractal"], "unknown unnorm_key 'fractal'; this checkpoint has: bridge_orig, panda_tabletop"),
    (["--resume", "/nonexistent/ckpt"], "not a checkpoint directory"),
    (["--ptx-coef", "1"], "--ptx-coef > 0 needs --ptx-demos"),
    (["--ptx-coef", "1", "--ptx-demos", "/nonexistent/demos.npz"], "no such file"),
    (["--pg-coef", "0"], "leaves nothing to train the policy"),
    (["--env-parts", "0"], "--env-parts 0 must be >= 1"),
    (["--env-parts", "3"], "--env-parts 3 must be >= 1 and divide the envs per rank (2)"),
    (["--env-backend", "gpu"], "--env-backend gpu needs a CUDA GPU") if not torch.cuda.is_available() else
    (["--env-id", "nope"], "unknown env or variant 'nope'"),
])
def test_bad_input_one_line_exit_2(tmp_path, bad_args, message):
    code, _, stderr = run_in_process(SCRIPT, [*SMOKE, "--num-iterations", "1", "--output-dir", str(tmp_path), *bad_args],
                                     tmp_path)
    assert code == 2
    last_line = stderr.strip().splitlines()[-1]  # libraries may warn above it, but no traceback
    assert last_line.startswith("error: ") and message in last_line and "Traceback" not in stderr, stderr


def test_resume_from_another_model_is_refused(smoke_run, tmp_path):
    ckpt = smoke_run / "checkpoints" / "iter_000001"
    code, _, stderr = run_in_process(SCRIPT, [*SMOKE, "--vla-path", str(tmp_path), "--resume", str(ckpt)], tmp_path)
    assert code == 2 and "was trained from 'tiny'" in stderr


def test_resume_takes_the_flags_given(smoke_run, tmp_path):
    """The optimizer state comes from the checkpoint, its learning rates from the flags (said in one line); a
    PPO-ptx term added on resume loads the demonstrations and logs its loss."""
    ckpt = tmp_path / "run" / "checkpoints" / "iter_000002"  # a copy: the resumed run writes into its run dir
    shutil.copytree(smoke_run / "checkpoints" / "iter_000002", ckpt)
    write_demos(tmp_path / "demos.npz")
    code, stdout, stderr = run_in_process(SCRIPT, [*SMOKE, "--num-iterations", "3", "--eval-every", "0",
                                                   "--learning-rate", "7e-4", "--resume", str(ckpt), "--ptx-coef", "0.5",
                                                   "--ptx-demos", str(tmp_path / "demos.npz"), "--ptx-batch-size", "2"],
                                          tmp_path)
    assert code == 0, stderr[-3000:]
    assert "[resume] learning rate 0.0001 -> 0.0007, as given" in stdout  # the LoRA's
    assert stdout.count("[resume]") == 1  # the value head's rate was given unchanged
    assert "[ptx] 6 demonstration steps" in stdout
    logged = scalars(tmp_path / "run")
    assert logged["charts/learning_rate"] == [pytest.approx(7e-4)]  # iteration 3 stepped with it
    assert 0 < logged["losses/ptx_loss"][0] < 7 * 6  # nats per 7-token action (log 256 = 5.5 per token)


# --- the update itself, on a fixed batch --------------------------------------------------------------------


def test_gae_matches_hand_computation():
    rewards = torch.tensor([[0.0], [1.0], [1.0]])
    values = torch.tensor([[0.5], [0.2], [0.4]])
    no_end, no_bootstrap = torch.zeros(3, 1, dtype=torch.bool), torch.zeros(1)
    adv, ret = compute_gae(rewards, values, no_end, no_bootstrap, gamma=0.9, gae_lambda=0.8)
    d2 = 1.0 - 0.4  # the time limit is terminal: no bootstrap
    d1 = 1.0 + 0.9 * 0.4 - 0.2
    d0 = 0.0 + 0.9 * 0.2 - 0.5
    a1 = d1 + 0.72 * d2
    assert torch.allclose(adv[:, 0], torch.tensor([d0 + 0.72 * a1, a1, d2]))
    assert torch.allclose(ret, adv + values)
    # bootstrapping the time limit from V(s_3) = 0.7 changes only the last delta (and what it feeds)
    adv_b, _ = compute_gae(rewards, values, no_end, torch.tensor([0.7]), gamma=0.9, gae_lambda=0.8)
    d2b = 1.0 + 0.9 * 0.7 - 0.4
    assert torch.allclose(adv_b[:, 0], torch.tensor([d0 + 0.72 * (d1 + 0.72 * d2b), d1 + 0.72 * d2b, d2b]))
    # a terminal at step 1 cuts everything after it out of steps 0 and 1, bootstrap or not
    ended = torch.tensor([[False], [True], [False]])
    adv_t, _ = compute_gae(rewards, values, ended, torch.tensor([0.7]), gamma=0.9, gae_lambda=0.8)
    assert torch.allclose(adv_t[:2, 0], torch.tensor([d0 + 0.72 * (1.0 - 0.2), 1.0 - 0.2]))


def test_first_success_ends_the_episode():
    successes = torch.tensor([[0, 0], [1, 0], [0, 0], [1, 1]], dtype=torch.bool)  # (T=4, N=2)
    alive, terminals = episode_masks(successes, success_ends_episode=True)
    assert alive[:, 0].tolist() == [True, True, False, False] and alive[:, 1].all()
    assert terminals[:, 0].tolist() == [False, True, False, False] and terminals[:, 1].tolist() == [False] * 3 + [True]
    alive, terminals = episode_masks(successes, success_ends_episode=False)
    assert alive.all() and not terminals.any()


def test_update_skips_samples_out_of_the_loss(tiny_dir):
    """Samples after an episode's end change nothing: a batch with extra dead samples (huge advantages)
    gives bit for bit the update of the batch without them."""
    results = []
    for dead_in_batch in (False, True):
        model, processor, batch = fixed_update_batch(tiny_dir, [1.0, -1.0, 1.0, -1.0, 100.0, -100.0])
        batch["alive"] = torch.tensor([True] * 4 + [False] * 2)
        if not dead_in_batch:
            batch = {k: v[:4] for k, v in batch.items()}
        ppo_update(Args(num_minibatches=1), model, processor, _optimizer(model, 1e-3, 1e-3), batch, torch.float32, 1)
        results.append(ovp.trainable_state_dict(model))
    assert all(torch.equal(results[0][k], results[1][k]) for k in results[0])


def test_ppo_update_learns_a_bandit(tiny_dir):
    """Issue 12's learning check (synthetic reward on the sampled x token; see `bandit_learning`)."""
    def fill(batch, rewards):
        batch["returns"] = rewards  # one-step episodes: the return is the reward
        advantages = rewards - batch["values"]
        batch["advantages"] = (advantages - advantages.mean()) / (advantages.std() + 1e-8)

    before, after = bandit_learning(tiny_dir, ppo_update, Args(num_minibatches=4), fill, iterations=12)
    assert 0.35 < before < 0.65 and after >= 0.8, (before, after)


def _optimizer(model, lr, value_lr):
    lora = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("value_head.")]
    return torch.optim.Adam([{"params": lora, "lr": lr}, {"params": model.value_head.parameters(), "lr": value_lr}])


def test_update_moves_logprobs_with_the_advantage_sign(tiny_dir):
    model, processor, batch = fixed_update_batch(tiny_dir, [1.0, -1.0, 1.0, -1.0])
    args = Args(num_minibatches=1, update_epochs=4, clip_coef=10.0, max_grad_norm=100.0)
    opt = _optimizer(model, lr=3e-3, value_lr=0.0)
    losses = ppo_update(args, model, processor, opt, batch, torch.float32, world_size=1)
    assert abs(losses["first_ratio"] - 1) < 1e-4
    delta = batch_logprobs(model, processor, batch) - batch["logprobs"]
    assert (delta[[0, 2]] > 0).all() and (delta[[1, 3]] < 0).all(), delta


def test_ptx_alone_raises_the_demonstrations_likelihood(tiny_dir, tmp_path):
    """PPO-ptx's term through ppo_update: with the surrogate off (--pg-coef 0, zero advantages) the minibatches'
    behaviour cloning makes the expert's action tokens more likely, each under its own instruction."""
    model, processor, batch = fixed_update_batch(tiny_dir, [0.0, 0.0, 0.0, 0.0])
    tokens = write_demos(tmp_path / "demos.npz")
    demos = load_ptx_demos(str(tmp_path / "demos.npz"), processor, model.config,
                           ovp.action_stats(model.config, ovp.BUILTIN_NORM_KEY))
    assert torch.equal(demos["actions"], tokens)  # the stored actions bin back to the expert's tokens
    plate = load_ptx_demos(str(tmp_path / "demos.npz"), processor, model.config,
                           ovp.action_stats(model.config, ovp.BUILTIN_NORM_KEY), variants=["unseen_target"])
    assert torch.equal(plate["actions"], tokens[3:]) and torch.equal(plate["input_ids"], demos["input_ids"][3:])
    with pytest.raises(ovp.OpenVLAError, match="none in .* which holds train, unseen_target"):
        load_ptx_demos(str(tmp_path / "demos.npz"), processor, model.config,
                       ovp.action_stats(model.config, ovp.BUILTIN_NORM_KEY), variants=["red_cube"])
    assert demos["input_ids"].shape[0] == 6 and not torch.equal(demos["input_ids"][0], demos["input_ids"][3])

    def demo_nll() -> float:
        with torch.no_grad():
            ev = model.evaluate_actions(demos["input_ids"], demos["attention_mask"],
                                        processor.process_images(demos["images"]), demos["actions"])
        return -ev.logprobs.sum(-1).mean().item()

    before = demo_nll()
    args = Args(num_minibatches=1, update_epochs=5, pg_coef=0.0, ptx_coef=1.0, ptx_batch_size=6, max_grad_norm=100.0)
    losses = ppo_update(args, model, processor, _optimizer(model, lr=3e-3, value_lr=0.0), batch, torch.float32, 1,
                        demos)
    assert losses["ptx_loss"] > 0
    assert demo_nll() < before - 1.0, (before, demo_nll())


@pytest.mark.parametrize("value_head_grad", [False, True])
def test_value_loss_touches_only_the_head_when_detached(tiny_dir, value_head_grad):
    model, processor, batch = fixed_update_batch(tiny_dir, [0.0, 0.0, 0.0, 0.0])  # zero advantages: no policy gradient
    args = Args(num_minibatches=1, ent_coef=0.0, value_head_grad=value_head_grad)
    before = ovp.trainable_state_dict(model)
    ppo_update(args, model, processor, _optimizer(model, lr=1e-3, value_lr=1e-3), batch, torch.float32, world_size=1)
    after = ovp.trainable_state_dict(model)
    head_changed = any(not torch.equal(before[k], after[k]) for k in before if k.startswith("value_head."))
    lora_changed = any(not torch.equal(before[k], after[k]) for k in before if "lora_" in k)
    assert head_changed
    assert lora_changed == value_head_grad


def test_state_critic_learns_the_returns_and_leaves_the_policy(tiny_dir):
    """--critic state (deviation 9): V = StateCritic(batch["states"]); with zero advantages the update moves the
    critic toward the returns and no LoRA weight, and the model's value head is not used."""
    model, processor, batch = fixed_update_batch(tiny_dir, [0.0] * 8)
    torch.manual_seed(0)
    critic = StateCritic(5)
    batch["states"] = torch.randn(8, 5)
    batch["returns"] = batch["states"][:, 0].clone()  # a value the critic can fit
    optimizer = torch.optim.Adam([{"params": [p for n, p in model.named_parameters() if p.requires_grad
                                              and not n.startswith("value_head.")], "lr": 1e-3},
                                  {"params": critic.parameters(), "lr": 3e-3}])
    args = Args(num_minibatches=1, critic="state")
    before = ovp.trainable_state_dict(model)
    error = lambda: ((critic(batch["states"]) - batch["returns"]) ** 2).mean().item()  # noqa: E731
    start = error()
    for _ in range(20):
        losses = ppo_update(args, model, processor, optimizer, batch, torch.float32, world_size=1, critic=critic)
    after = ovp.trainable_state_dict(model)
    assert all(torch.equal(before[k], after[k]) for k in before)  # the LoRA and the unused value head alike
    assert error() < 0.2 * start and losses["grad_norm_value"] > 0


# --- the background runs (started by the fixtures above, running during the in-process tests), waited for last ---


def test_overlapped_rollout_is_on_policy(tmp_path):
    """--env-parts 2: the two halves' envs step while the other half is sampled (tests/test_envs.py checks the
    envs' results); the rollout's buffers must still be what the learner re-evaluates: first ratio 1."""
    run = run_to_dir(SCRIPT, [*SMOKE, "--env-parts", "2", "--num-iterations", "1", "--eval-every", "0"], tmp_path)
    logged = scalars(run)
    assert logged["losses/first_ratio"] and all(abs(r - 1) < 1e-4 for r in logged["losses/first_ratio"])
    assert logged["charts/success_once"], "the rollout logged no episode statistics"


def test_state_critic_run_resumes_exactly(tmp_path):
    """--critic state end to end: the envs' state observations reach the critic, which is saved (state_critic.pt),
    and 1 iteration + resume + 1 more gives the straight run's LoRA and critic bit for bit; a resume with the
    other critic is refused in one line."""
    flags = [*SMOKE, "--critic", "state", "--value-learning-rate", "1e-3", "--eval-every", "0", "--num-iterations", "2"]
    (tmp_path / "straight").mkdir()
    straight = run_to_dir(SCRIPT, flags, tmp_path / "straight")
    ckpts = straight / "checkpoints"
    assert (ckpts / "iter_000002" / "state_critic.pt").exists()
    assert not (ckpts / "iter_000002" / "value_head.safetensors").exists()
    copy = tmp_path / "copy" / straight.name
    shutil.copytree(straight, copy)
    shutil.rmtree(copy / "checkpoints" / "iter_000002")
    code, _, stderr = run_in_process(SCRIPT, [*flags, "--resume", str(copy / "checkpoints" / "iter_000001")], tmp_path)
    assert code == 0, stderr[-3000:]
    weights = lambda c: {**load_file(c / "adapter_model.safetensors"), **torch.load(c / "state_critic.pt")}  # noqa: E731
    a, b = weights(ckpts / "iter_000002"), weights(copy / "checkpoints" / "iter_000002")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    first = weights(ckpts / "iter_000001")
    assert not torch.equal(first["net.6.weight"], a["net.6.weight"])  # the critic trained
    code, _, stderr = run_in_process(SCRIPT, [*SMOKE, "--resume", str(ckpts / "iter_000001")], tmp_path)
    assert code == 2 and "trained --critic state; exact resume needs the same" in stderr.strip().splitlines()[-1]


def test_exact_resume(smoke_run, resume_run):
    """2 iterations straight == 1 iteration + resume + 1 more (LoRA and value head, bit for bit)."""
    assert_exact_resume(resume_run, smoke_run, files=("adapter_model.safetensors", "value_head.safetensors"))


def test_torchrun_two_ranks_stay_identical(smoke_run, torchrun_run):
    assert_ranks_identical(*torchrun_run)  # LoRA, value head and, with --train-vision, towers and projector
    (ckpt,) = (torchrun_run[1] / "runs").glob("*/checkpoints/iter_000001")
    assert (ckpt / ovp.ADAPTER_VISION_FILE).exists()
    lrs = [g["lr"] for g in torch.load(ckpt / "optimizer.pt")["param_groups"]]
    assert lrs == [Args.learning_rate, Args.value_learning_rate, VISION_LR]  # the towers' own, smaller step
