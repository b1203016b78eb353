"""PPO fine-tuning of OpenVLA-7B in ManiSkill3, in one file (CleanRL style).

Method. Every iteration each env runs one full episode (`num_steps` = 80 steps) with actions sampled
from the policy: the image and instruction go through OpenVLA, which samples 7 action tokens (one per
action dimension, only among the 256 action tokens, temperature 1, no top-k/top-p: the blog's fixes
2 and 3, in `openvla_patch.py`), and a value head on the hidden state of the last prompt token estimates
V(s). Token ids, their log-probs, values and rewards are stored. GAE (Schulman et al. 2016, eq. 16) turns
rewards and values into advantages; then `update_epochs` passes over the batch in `num_minibatches`
minibatches re-evaluate the stored tokens teacher-forced and take one optimizer step each on the clipped
surrogate (PPO, Schulman et al. 2017, eq. 7) plus a value loss. Only LoRA adapters on the language model
and the value head train.

Deviations from PPO as usually written, and from the blog (Haonan Yu, "OpenVLA finetuning with online RL"):
1. The 7 action tokens of one step are one composite action: its log-prob is the sum of the 7 token
   log-probs, so the ratio is exp(sum new - sum old), and the entropy bonus is the sum of the 7 per-token
   entropies at the taken prefix (an unbiased estimate of the joint entropy).
2. Episodes have a fixed length and every env resets together at the start of each iteration. An
   episode's credit ends at its first success (`--success-ends-episode`): that step is terminal and gets
   the reward, later steps leave the loss (and the advantage statistics). The time limit is a truncation,
   not a terminal (`--bootstrap-time-limit`, Pardo et al. 2018, "Time limits in RL"): an episode with no
   success bootstraps from V(observation after the last step). Why, measured on simulated episodes of our
   task's shape (`bench/credit_assignment.py`, a critic that cannot see time, as ours): with the blog's
   per-step success reward and a terminal time limit (both flags off, the old default) 36 % of the summed
   squared advantage falls on steps after the success, where the action hardly matters, and the last step
   of every success gets an advantage of -20. Bootstrapping the time limit alone, or ending at the first
   success, each removes both (0-1.5 %). We end at the success: its return, gamma^k for a success k steps
   ahead, stays in [0, 1] whatever the horizon (the per-step reward's values reach 1 / (1 - gamma) = 100),
   it is what the evaluation counts (success_once), and GRPO and REINFORCE, which have no critic to
   bootstrap from, can use it too.
3. Advantages are normalised over the whole rollout batch of all ranks, not per minibatch: the blog's
   minibatches are only 12 samples per GPU, too few for stable per-minibatch statistics.
4. The value head's input is detached (the blog's stop-grad, which it found essential); RL4VLA lets the
   gradient through, available as `--value-head-grad` for ablation.
5. Defaults follow RL4VLA where the blog is silent: LoRA lr 1e-4, value-head lr 3e-3 (separate Adam
   groups), clip 0.2, 1 epoch, gradient-norm clip 10, no entropy bonus, no KL penalty; the reward is the
   blog's success indicator (`--reward sparse`), RL4VLA's shaped potential or that plus distance terms
   (`--reward progress`, openvla_envs). Unlike RL4VLA the value loss is not clipped (`--clip-vloss`
   restores it; `--vf-huber` is RL4VLA's Huber loss): a clip of 0.2 lets V move 0.2 per iteration and
   then gives no gradient, too slow for returns that span 0-1 or more. And the norm clip applies to the policy's
   and the value head's gradients separately, so that a large value error does not shrink the policy's step.
6. The blog used a learned success detector; our built-in tasks read success from the simulator.
7. Only LoRA on the language model (and the value head) trains by default, as in the blog;
   `--train-vision` also trains the vision towers and projector (full fine-tuning, fp32), so that RL can
   correct what the image features miss: the small models of `bench/learning.sh` learn their towers from
   scratch in SFT, and RL that cannot touch them cannot fix their perception errors. Saved beside the
   adapter (`vision.safetensors`). They get their own, far smaller learning rate (`--vision-learning-rate`):
   at the LoRA rate (5e-4) the small model's PPO moved 10x further per step and collapsed (BENCHMARKS.md 4).
   Measured with PPO (LoRA 1e-4, towers 5e-5): it lifted the small model's `train` from 0.44 to 0.74 sampled in
   315 k env steps, where the LoRA alone reached 0.55 in 603 k, and it sent the plate instruction to the towel
   (that variant fell from 0.32 to 0.03): RL on one instruction does not see the language it loses. From a
   broader prior that fails by grasping rather than by receptacle (0.29), the same arm learnt the towel again
   and lifted nothing in 230 k: the gain was the receptacle, not the manipulation.
8. PPO-ptx (`--ptx-coef`, off by default; Ouyang et al. 2022, "InstructGPT", eq. 2): every minibatch also takes
   the behaviour-cloning loss of `--ptx-batch-size` demonstration steps (sft_openvla.py's .npz, every variant the
   prior was fine-tuned on, instructions included): the negative log-likelihood of the expert's 7 action tokens
   under the policy's own 256-column distribution, times the coefficient. Why: the reward of one instruction
   cannot tell following it from ignoring it (deviation 7), while the demonstrations name both receptacles. A KL
   penalty to the prior on `train`'s states would instead pull back the very change that lifted `train`.
   InstructGPT mixes in pre-training text; we mix in the prior's SFT data (the same demo seeds), so the term
   adds no data the prior did not see; `--ptx-variants` keeps only some variants' demonstrations (e.g. those RL
   does not train on). `--pg-coef 0` trains on the demonstrations alone, all else equal: the control arm that
   tells RL's share from that of more SFT. Measured on the small model (with --train-vision, 230 k env steps):
   at coefficient 1 on all SFT variants nothing moved, `train` or siblings; RL's gains there lie ~1.7-2 nats per
   action away from the expert's actions on `train` itself, which such a term does not allow (BENCHMARKS.md 4).
9. `--critic state` (off by default: the blog's value head, deviation 4): V(s) is an MLP on the simulator's state
   observation (the robot's joint positions and velocities, the gripper's, object's and goal's poses:
   `openvla_envs.state_vector`, ManiSkill's `obs_mode="state"`) instead of a head on the VLA's prompt feature. An
   asymmetric actor-critic (Pinto et al. 2018, "Asymmetric Actor Critic for Image-Based Robot Learning"): the
   policy still acts from the image and instruction alone, and the critic, which only training uses, exists
   only in simulation, where this training happens. Why: GAE removes from a step's credit the noise of the steps
   after it only as far as V knows the state; with a perfect V, GAE(0)'s advantage is that step's change of the
   expected return alone. On the small model the prompt-feature critic explains ~55 % of the return's variance,
   and PPO's advantage with it gives a policy gradient no half of 96 episodes agrees on (BENCHMARKS.md 4).
   ManiSkill's PPO baseline's critic (3 x 256 tanh, orthogonal init); use `--value-learning-rate 1e-3` with it.
   Measured on the small model (towers at 1e-5, 230 k env steps): it explained 0.75 of the return's variance where
   the head explained 0.55, and `train` ended where the head's runs did (0.585 greedy, 0.615 sampled; n.s.):
   at this budget the critic is not what holds the small model's PPO back (BENCHMARKS.md 4).

Launch:
    # one GPU, the real model (needs internet once, or a local copy)
    python ppo_openvla.py --vla-path openvla/openvla-7b --env-id train --num-envs 24
    # 8 GPUs on one node: 24 envs in all, 3 per rank (the blog's setting)
    torchrun --nproc-per-node 8 ppo_openvla.py --vla-path openvla/openvla-7b --num-envs 24
    # 2 nodes x 8 GPUs
    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 ppo_openvla.py --num-envs 48
    # CPU smoke run, offline: a tiny random OpenVLA in the released format
    python ppo_openvla.py --vla-path tiny --num-envs 2 --num-steps 8 --num-iterations 2 --num-minibatches 2
    # PPO-ptx (deviation 8): demonstrations of the SFT variants first, then their loss in every minibatch
    python sft_openvla.py --demos-only --variants train red_cube unseen_target --demos-path demos.npz
    python ppo_openvla.py --vla-path <sft checkpoint> --unnorm-key sft_tabletop --ptx-coef 1 --ptx-demos demos.npz
Resume: `--resume runs/<run>/checkpoints/iter_000010` (or the run directory: its newest checkpoint). Optimizer
state and RNGs come from the checkpoint, the learning rates from the flags: repeat the run's for an exact resume.
Watch: `tensorboard --logdir runs`.
Speed: with CPU worker envs, `--env-parts 2` steps a rank's envs in two halves: one half's workers simulate and
render while the GPU samples the other half's actions.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
import tyro
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

import openvla_envs
import openvla_patch as ovp

# ---------------------------------------------------------------------------------------------------
# Args
# ---------------------------------------------------------------------------------------------------


@dataclass
class Args:
    exp_name: str = "ppo_openvla"
    """name of this experiment (the run directory is <output-dir>/<env-id>__<exp-name>__<seed>__<time>)"""
    seed: int = 1
    """random seed; rank r uses seed + r"""
    vla_path: str = "openvla/openvla-7b"
    """OpenVLA checkpoint: a hub id, a local directory, or `tiny` (a small random one, made offline)"""
    unnorm_key: str | None = None
    """norm_stats key that turns action tokens into actions (default: panda_tabletop for the built-in
    tasks, bridge_orig for the SimplerEnv ids)"""
    env_id: str = "train"
    """a built-in variant (train, red_cube, ...), OpenVLATabletop-v1, or a SimplerEnv Bridge id"""
    env_backend: Literal["auto", "gpu", "cpu"] = "auto"
    """ManiSkill GPU simulation, CPU physics in worker processes, or auto (GPU sim if GPU PhysX is installed)"""
    env_parts: int = 1
    """a rank's CPU worker envs step as this many groups in turn, one group's workers simulating while the GPU
    samples another's actions (see the rollout; 2 hides the wait for the envs but runs two half-batch decodes:
    +6 % SPS on the tiny model, 16 envs, H100; BENCHMARKS.md section 1);
    must divide num_envs / ranks; CPU worker envs only"""
    num_envs: int = 24
    """parallel environments, global (each of the world_size ranks runs num_envs / world_size)"""
    num_steps: int = 80
    """steps per episode = per iteration (each iteration is one full episode in every env)"""
    num_iterations: int = 120
    """training iterations (rollout + update)"""
    num_minibatches: int = 20
    """minibatches per epoch (each rank splits the samples of its rollout that are in the loss into this many)"""
    update_epochs: int = 1
    """passes over the rollout batch per iteration"""
    micro_batch_size: int = 0
    """samples per forward/backward inside a minibatch, per rank (gradient accumulation); 0 = whole minibatch"""
    learning_rate: float = 1e-4
    """Adam learning rate of the LoRA weights"""
    value_learning_rate: float = 3e-3
    """Adam learning rate of the value head"""
    gamma: float = 0.99
    """discount factor"""
    gae_lambda: float = 0.95
    """GAE lambda"""
    clip_coef: float = 0.2
    """PPO clip range of the ratio (and of the value change when clip_vloss)"""
    clip_vloss: bool = False
    """clip the value change to clip_coef as in the PPO implementations (off: deviation 5)"""
    vf_huber: bool = False
    """Huber (smooth L1, delta 1) value loss instead of half the squared error (RL4VLA)"""
    success_ends_episode: bool = True
    """an episode's credit ends at its first success: reward there, later steps out of the loss (deviation 2)"""
    bootstrap_time_limit: bool = True
    """the time limit is a truncation: bootstrap from V(last observation) where no success came (deviation 2)"""
    norm_adv: bool = True
    """normalise advantages over the rollout batch (all ranks)"""
    vf_coef: float = 0.5
    """value loss coefficient"""
    ent_coef: float = 0.0
    """entropy bonus coefficient"""
    max_grad_norm: float = 10.0
    """gradient-norm clip, applied to the policy's (LoRA) and the value head's gradients separately"""
    target_kl: float | None = None
    """stop the epoch's remaining minibatches once the approximate KL exceeds this (None: never)"""
    temperature: float = 1.0
    """sampling temperature of the rollout policy (the learning policy uses the same)"""
    reward: Literal["sparse", "shaped", "progress"] = "sparse"
    """sparse: per-step success indicator (the blog's); shaped: RL4VLA's grasp/hold/place potential; progress:
    that potential plus gripper->object and object->target distance terms (a signal at every step)"""
    dtype: Literal["auto", "bfloat16", "float32"] = "auto"
    """weights of the base model: auto = bfloat16 on GPU, float32 on CPU"""
    load_in_4bit: bool = False
    """NF4-quantise the language model (bitsandbytes); LoRA weights stay fp32 (the blog's setup)"""
    lora_rank: int = 32
    """LoRA rank on every linear layer of the language model"""
    lora_alpha: int = 16
    """LoRA alpha"""
    train_vision: bool = False
    """also train the vision towers and projector (full fine-tuning in fp32, at --vision-learning-rate); off: the
    blog's LoRA on the language model only. 7B: +0.7 B trainable parameters (~11 GB with Adam state). The towers
    never see the instruction: what RL teaches them applies to every instruction (BENCHMARKS.md section 4, session
    23: on the tiny model they learnt `train`'s receptacle and cost the plate instruction)"""
    vision_learning_rate: float = 1e-5
    """Adam learning rate of the towers and projector with --train-vision: full fine-tuning needs a far smaller step
    than LoRA (at 5e-4 the small model collapsed; 1e-5 is the order of OpenVLA's own full-fine-tuning rate, 2e-5)"""
    decode: Literal["auto", "dynamic", "cuda_graph", "cuda_graph_prefill", "cuda_graph_all"] = "auto"
    """how the 6 cached action tokens are decoded: auto = replayed as a CUDA graph over a static KV cache on a
    GPU (models under 1 B parameters without --compile: the whole call, sampling included), else eagerly;
    dynamic = always eagerly (transformers' cache, the reference); cuda_graph (decode steps), cuda_graph_prefill
    (+ towers and prefill), cuda_graph_all (the whole call, sampling included) = force one;
    see openvla_patch"""
    reuse_patch_embeddings: bool = True
    """keep the rollout's patch embeddings for the update, which then skips the frozen vision towers (2 MiB per
    sample at 7B: 3.75 GiB for 24 x 80); off, or with --train-vision, it recomputes them from the stored images"""
    gradient_checkpointing: bool = False
    """recompute LM activations in backward (less memory, ~30% slower updates); without it, at 7B, roughly
    1.2-1.5 GiB per sample of --micro-batch-size: 32 ran out of memory on an 80 GB H100 beside 24 render workers"""
    compile: bool = False
    """torch.compile the LM's decoder layers for the update (fused elementwise work: the blog iteration's update
    59.7 -> 41.7 s on an H100, BENCHMARKS.md 1); compiled at the first update (~1 min at 7B); the rollout's prefill
    and decode steps too, as two compiled halves per layer around the eager KV-cache writes (the prefill's share
    measured: rollout step 0.355 -> 0.285 s at 24 envs); same gradient"""
    value_head_grad: bool = False
    """let the value loss's gradient into the LM (RL4VLA); default: stop-grad (the blog)"""
    critic: Literal["vla", "state"] = "vla"
    """what V(s) reads: vla = a linear head on the VLA's last prompt-token hidden state (the blog's); state = an
    MLP on the simulator's state observation (robot, object and goal poses), an asymmetric critic only training
    uses (deviation 9; with --value-learning-rate 1e-3). The built-in tasks give the object's and goal's poses;
    other ManiSkill tasks what their `_get_obs_extra` gives"""
    ptx_coef: float = 0.0
    """weight of the demonstrations' behaviour-cloning loss added to every minibatch (PPO-ptx, deviation 8); 0: off"""
    ptx_demos: str | None = None
    """demonstrations .npz written by sft_openvla.py (its --demos-path; `--demos-only` collects one without
    training); needed with --ptx-coef > 0"""
    ptx_batch_size: int = 32
    """demonstration steps per minibatch, per rank (with --ptx-coef > 0)"""
    ptx_variants: list[str] = field(default_factory=list)
    """use only the demonstrations of these variants (e.g. unseen_target red_cube: the instructions RL does not
    train on); empty: all in the file"""
    pg_coef: float = 1.0
    """weight of the clipped surrogate; 0 with --ptx-coef > 0 leaves behaviour cloning alone: PPO-ptx's control arm"""
    output_dir: str = "runs"
    """where run directories (tensorboard events, checkpoints, videos) are created"""
    eval_every: int = 10
    """evaluate every this many iterations, and before training (0: never)"""
    eval_episodes: int = 8
    """greedy episodes per evaluated variant, global"""
    eval_variants: list[str] = field(default_factory=list)
    """variants evaluated besides env_id (e.g. unseen_target red_cube)"""
    save_every: int = 10
    """checkpoint every this many iterations (and always at the end)"""
    resume: str | None = None
    """continue exactly from a checkpoint directory (or a run directory: its newest checkpoint)"""
    track: bool = False
    """also log to Weights & Biases"""
    wandb_project: str = "openvla-rl"
    """W&B project (with --track)"""
    deterministic: bool = False
    """deterministic torch kernels (for exact-resume checks; slower)"""


# ---------------------------------------------------------------------------------------------------
# The algorithm's pieces (used by the loop below; functions only so tests can call them)
# ---------------------------------------------------------------------------------------------------


def episode_masks(successes: torch.Tensor, success_ends_episode: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """successes (T, N) bool, the env's per-step success -> (alive, terminals), both (T, N) bool.

    With `success_ends_episode` the first success ends the episode: `terminals` marks that step, `alive`
    is False for every later step (they leave the loss). Otherwise every step is alive and none terminal.
    """
    if not success_ends_episode:
        return torch.ones_like(successes), torch.zeros_like(successes)
    succeeded_before = (successes.long().cumsum(0) - successes.long()) > 0  # a success at an earlier step
    return ~succeeded_before, successes & ~succeeded_before


def compute_gae(rewards, values, terminals, last_values, gamma: float, gae_lambda: float):
    """GAE (Schulman et al. 2016, eq. 16). rewards, values, terminals: (T, N); terminals[t] = the episode
    ended at step t (no bootstrap past it). last_values (N,): V of the observation after the last step,
    where episodes cut by the time limit bootstrap (Pardo et al. 2018); zeros = the time limit is terminal.
    -> advantages, returns: (T, N)."""
    advantages = torch.zeros_like(rewards)
    lastgaelam = torch.zeros_like(last_values)
    nextvalues = last_values
    for t in reversed(range(rewards.shape[0])):
        nextnonterminal = 1.0 - terminals[t].float()
        delta = rewards[t] + gamma * nextvalues * nextnonterminal - values[t]
        advantages[t] = lastgaelam = delta + gamma * gae_lambda * nextnonterminal * lastgaelam
        nextvalues = values[t]
    return advantages, advantages + values


ACTION_DIM_NAMES = ("x", "y", "z", "roll", "pitch", "yaw", "gripper")


class StateCritic(torch.nn.Module):
    """V(s) from the simulator's state observation (--critic state, deviation 9): (B, D) -> (B,). ManiSkill's PPO
    baseline's critic: three 256-unit tanh layers, orthogonal init (gain sqrt 2, the output's 1; CleanRL's
    `layer_init`), fp32."""

    def __init__(self, state_dim: int, hidden: int = 256):
        super().__init__()
        layers = [torch.nn.Linear(state_dim, hidden), torch.nn.Linear(hidden, hidden), torch.nn.Linear(hidden, hidden),
                  torch.nn.Linear(hidden, 1)]
        for layer in layers:
            torch.nn.init.orthogonal_(layer.weight, 2**0.5 if layer is not layers[-1] else 1.0)
            torch.nn.init.zeros_(layer.bias)
        self.net = torch.nn.Sequential(*[m for layer in layers[:-1] for m in (layer, torch.nn.Tanh())], layers[-1])

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.net(states).squeeze(-1)


def load_ptx_demos(path: str, processor, config, stats: dict[str, torch.Tensor],
                   variants: list[str] | None = None) -> dict[str, torch.Tensor]:
    """sft_openvla.py's demonstrations .npz -> PPO-ptx's data (deviation 8), on the CPU: images (D, 224, 224, 3)
    uint8, input_ids / attention_mask (D, L) of each step's instruction, actions (D, 7): the expert's actions
    binned into action token ids with the policy's norm stats (`--unnorm-key`), as SFT labelled them. `variants`:
    keep only the steps of those variants' episodes."""
    with np.load(path, allow_pickle=False) as npz:
        missing = {"images", "actions", "episode_index", "instructions", "variants"} - set(npz.files)
        if missing:
            raise ovp.OpenVLAError(f"--ptx-demos {path}: not a demonstrations file of sft_openvla.py "
                                   f"(missing {', '.join(sorted(missing))})")
        stored = npz["variants"]  # (E,) per episode
        keep = np.isin(npz["episode_index"], np.flatnonzero(np.isin(stored, variants))) if variants else None
        if keep is not None and not keep.any():
            raise ovp.OpenVLAError(f"--ptx-variants {' '.join(variants)}: none in {path}, which holds "
                                   f"{', '.join(sorted(set(stored.tolist())))}")
        demos = {k: npz[k] if keep is None else npz[k][keep] for k in ("images", "actions", "episode_index")}
        instructions = npz["instructions"].tolist()
    input_ids, attention_mask = processor.tokenize(instructions)  # (E, L): one row per episode
    episode = torch.from_numpy(demos["episode_index"]).long()  # (D,) each step's episode
    return {"images": torch.from_numpy(demos["images"]), "input_ids": input_ids[episode],
            "attention_mask": attention_mask[episode],
            "actions": ovp.actions_to_tokens(torch.from_numpy(demos["actions"]), config, stats)}


def ppo_update(args: Args, model, processor, optimizer, batch: dict, dtype: torch.dtype, world_size: int,
               demos: dict | None = None, critic: StateCritic | None = None) -> dict:
    """`update_epochs` passes of `num_minibatches` clipped-PPO steps over `batch` (flat, this rank's samples):
    obs (B, H, W, 3) uint8, input_ids / attention_mask (B, L), actions (B, 7) token ids, logprobs,
    advantages, returns, values (B,), alive (B,) bool: only alive samples are in the loss (deviation 2).
    With `demos` (`load_ptx_demos`) and `args.ptx_coef` > 0 every minibatch also takes the behaviour-cloning
    loss of `args.ptx_batch_size` demonstration steps drawn from the global torch RNG (deviation 8). With `critic`
    (--critic state) V is `critic(batch["states"])`, states (B, D), instead of the model's value head.
    Returns the losses averaged over all minibatches, the gradient norms before clipping, and the entropy
    of each action dimension."""
    value_params = list((critic if critic is not None else model.value_head).parameters())
    value_ids = {id(p) for p in value_params}
    policy_params = [p for p in model.parameters() if p.requires_grad and id(p) not in value_ids]
    trainable = policy_params + value_params
    alive_inds = batch["alive"].nonzero().squeeze(-1).cpu()
    micro = args.micro_batch_size or max(1, len(alive_inds))
    ptx = demos is not None and args.ptx_coef > 0
    stats = {k: [] for k in ("policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac",
                             "grad_norm_policy", "grad_norm_value", *(("ptx_loss",) if ptx else ()))}
    entropy_per_dim, first_ratio = [], None
    model.train()
    for _epoch in range(args.update_epochs):
        b_inds = alive_inds[torch.randperm(len(alive_inds))]
        for mb_inds in torch.tensor_split(b_inds, args.num_minibatches):  # sizes differ by at most 1
            if len(mb_inds) == 0 and world_size == 1:  # fewer samples in the loss than minibatches
                continue
            optimizer.zero_grad(set_to_none=True)
            mb_stats = {k: 0.0 for k in stats}
            for inds in torch.split(mb_inds, micro) if len(mb_inds) else ():  # (an empty rank still all-reduces)
                weight = len(inds) / len(mb_inds)  # gradient accumulation: the minibatch mean
                reused = batch.get("patch_embeddings")  # the rollout's, or None: recompute from the images
                pixel_values = processor.process_images(batch["obs"][inds], dtype) if reused is None else None
                ev = model.evaluate_actions(batch["input_ids"][inds], batch["attention_mask"][inds], pixel_values,
                                            batch["actions"][inds], temperature=args.temperature,
                                            detach_value_input=not args.value_head_grad,
                                            patch_embeddings=None if reused is None else reused[inds])
                newlogprob = ev.logprobs.sum(-1)  # (b,) the composite action's log-prob (deviation 1)
                logratio = newlogprob - batch["logprobs"][inds]
                ratio = logratio.exp()
                with torch.no_grad():
                    approx_kl = ((ratio - 1) - logratio).mean()  # k3 estimator (Schulman's blog)
                    clipfrac = ((ratio - 1.0).abs() > args.clip_coef).float().mean()
                    if first_ratio is None:
                        first_ratio = ratio.mean().item()  # must be 1: rollout policy == learning policy
                    entropy_per_dim.append(ev.entropy.mean(0))  # (7,)

                mb_advantages = batch["advantages"][inds]
                # PPO eq. 7: pessimistic bound of the unclipped and clipped surrogate
                pg_loss1 = -mb_advantages * ratio
                pg_loss2 = -mb_advantages * torch.clamp(ratio, 1 - args.clip_coef, 1 + args.clip_coef)
                pg_loss = torch.max(pg_loss1, pg_loss2).mean()

                # Value loss, unclipped by default (deviation 5): a clip of 0.2 on returns that span 0-1
                # or more lets V move only 0.2 per iteration, after which it gets no gradient at all
                newvalue = ev.values if critic is None else critic(batch["states"][inds])  # (b,)
                mb_returns = batch["returns"][inds]
                if args.clip_vloss:
                    v_clipped = batch["values"][inds] + torch.clamp(
                        newvalue - batch["values"][inds], -args.clip_coef, args.clip_coef)
                    newvalue = torch.where((newvalue - mb_returns).abs() >= (v_clipped - mb_returns).abs(),
                                           newvalue, v_clipped)  # the larger error: max() of the two losses
                if args.vf_huber:
                    v_loss = F.smooth_l1_loss(newvalue, mb_returns)
                else:
                    v_loss = 0.5 * ((newvalue - mb_returns) ** 2).mean()

                entropy_loss = ev.entropy.sum(-1).mean()  # (deviation 1)
                loss = args.pg_coef * pg_loss - args.ent_coef * entropy_loss + v_loss * args.vf_coef
                (loss * weight).backward()
                for k, v in (("policy_loss", pg_loss), ("value_loss", v_loss), ("entropy", entropy_loss),
                             ("approx_kl", approx_kl), ("clipfrac", clipfrac)):
                    mb_stats[k] += v.item() * weight
            if ptx:
                # PPO-ptx (deviation 8): the negative log-likelihood of the expert's action tokens on demonstration
                # steps, under the policy's own distribution (the 256 action columns at the rollout temperature),
                # nats per 7-token action: the same log-prob the surrogate's ratio is made of
                j = torch.randint(len(demos["actions"]), (args.ptx_batch_size,))
                device = batch["input_ids"].device
                ev = model.evaluate_actions(demos["input_ids"][j].to(device), demos["attention_mask"][j].to(device),
                                            processor.process_images(demos["images"][j].to(device), dtype),
                                            demos["actions"][j].to(device), temperature=args.temperature)
                ptx_loss = -ev.logprobs.sum(-1).mean()
                (args.ptx_coef * ptx_loss).backward()
                mb_stats["ptx_loss"] = ptx_loss.item()

            if world_size > 1:  # DDP by hand: average the trainable gradients of all ranks in one message
                grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in trainable]
                flat = torch.cat([g.flatten() for g in grads])
                dist.all_reduce(flat)
                flat /= world_size
                for p, g in zip(trainable, torch.split(flat, [g.numel() for g in grads]), strict=True):
                    p.grad = g.view_as(p)
            # Two clips (deviation 5): a large value error early in training must not shrink the policy's step
            mb_stats["grad_norm_policy"] = torch.nn.utils.clip_grad_norm_(policy_params, args.max_grad_norm).item()
            mb_stats["grad_norm_value"] = torch.nn.utils.clip_grad_norm_(value_params, args.max_grad_norm).item()
            optimizer.step()
            for k in stats:
                stats[k].append(mb_stats[k])
            if args.target_kl is not None and _mean_over_ranks(mb_stats["approx_kl"], world_size) > args.target_kl:
                break
    out = {k: float(np.mean(v)) for k, v in stats.items()}
    out["first_ratio"] = first_ratio
    dims = torch.stack(entropy_per_dim).mean(0).tolist()  # (7,) nats, mean over micro-batches
    out.update({f"entropy_{name}": e for name, e in zip(ACTION_DIM_NAMES, dims, strict=True)})
    return out


def _mean_over_ranks(value: float, world_size: int) -> float:
    if world_size == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64)  # on the CPU: reduced by gloo (see the setup)
    dist.all_reduce(t)
    return t.item() / world_size


# ---------------------------------------------------------------------------------------------------
# Checkpoints: LoRA adapter (peft format), value head, optimizer, RNG states of every rank, counters
# ---------------------------------------------------------------------------------------------------

CKPT_INFO = "openvla_rl.json"
STATE_CRITIC_FILE = "state_critic.pt"  # --critic state's weights (the value head is saved with the adapter)


def rng_state(np_rng: np.random.Generator) -> dict:
    return {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": np_rng.bit_generator.state, "python": random.getstate()}


def set_rng_state(state: dict, np_rng: np.random.Generator) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])
    np_rng.bit_generator.state = state["numpy"]
    random.setstate(state["python"])


def save_checkpoint(run_dir: Path, args: Args, model, optimizer, iteration: int, global_step: int,
                    rng_states: list[dict], critic: StateCritic | None = None) -> Path:
    """Rank 0 only. Written under a temporary name, then renamed: a crash never leaves half a checkpoint."""
    final = run_dir / "checkpoints" / f"iter_{iteration:06d}"
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    ovp.save_adapter(model, tmp, base_path=args.vla_path)
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(rng_states, tmp / "rng_states.pt")
    if critic is not None:
        torch.save(critic.state_dict(), tmp / STATE_CRITIC_FILE)
    info = {"vla_path": args.vla_path, "unnorm_key": args.unnorm_key, "iteration": iteration,
            "global_step": global_step, "world_size": len(rng_states), "args": asdict(args)}
    (tmp / CKPT_INFO).write_text(json.dumps(info, indent=2))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return final


def find_checkpoint(path: str) -> Path:
    """A checkpoint directory, or a run directory (-> its newest checkpoint); validated."""
    p = Path(path)
    if (p / "checkpoints").is_dir():
        found = sorted(c for c in (p / "checkpoints").glob("iter_*") if not c.name.endswith(".tmp"))
        if not found:
            raise ovp.OpenVLAError(f"--resume {path}: the run has no finished checkpoint")
        p = found[-1]
    needed = [CKPT_INFO, "adapter_config.json", "adapter_model.safetensors", "optimizer.pt", "rng_states.pt"]
    missing = [f for f in needed if not (p / f).exists()]
    if missing:
        raise ovp.OpenVLAError(f"--resume {path}: not a checkpoint directory (missing {', '.join(missing)})")
    return p


def write_video(writer: SummaryWriter | None, path: Path, frames: list[np.ndarray], tag: str, step: int) -> None:
    """Frames (H, W, 3) uint8 -> an mp4 on disk and an animated GIF in tensorboard's image tab."""
    import io

    import imageio.v3 as iio
    from tensorboard.compat.proto.summary_pb2 import Summary

    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import imageio_ffmpeg  # noqa: F401  (the mp4 encoder)

        iio.imwrite(path, np.stack(frames), fps=10, codec="libx264")
    except ImportError:  # an image without ffmpeg (e.g. a minimal cluster one): an animated GIF instead
        iio.imwrite(path.with_suffix(".gif"), np.stack(frames), extension=".gif", duration=100, loop=0)
    if writer is not None:
        gif = io.BytesIO()
        iio.imwrite(gif, np.stack(frames[::2]), extension=".gif", duration=200, loop=0)
        h, w = frames[0].shape[:2]
        image = Summary.Image(height=h, width=w, colorspace=3, encoded_image_string=gif.getvalue())
        writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)


def evaluate(args: Args, model, processor, envs_by_variant: dict, stats, dtype, rank: int, world_size: int,
             writer: SummaryWriter | None, run_dir: Path, step: int) -> dict[str, float]:
    """Greedy episodes on fixed seeds per variant, split over ranks -> {"eval/<variant>/<metric>": value}."""
    model.eval()
    out = {}
    for variant, envs in envs_by_variant.items():
        local_episodes = max(1, -(-args.eval_episodes // world_size))
        success_once, success_at_end, frames = [], [], []
        for round_start in range(0, local_episodes, envs.num_envs):
            seeds = [openvla_envs.VALIDATION_SEED + rank * local_episodes + round_start + i  # seed policy in openvla_envs
                     for i in range(envs.num_envs)]
            obs, instructions = envs.reset(seeds)
            input_ids, attention_mask = processor.tokenize(instructions, device=obs.device)
            for _ in range(args.num_steps):
                if rank == 0 and round_start == 0:
                    frames.append(obs[0].cpu().numpy())
                sample = model.generate_actions(input_ids, attention_mask, processor.process_images(obs, dtype),
                                                temperature=args.temperature, greedy=True,
                                                decode=None if args.decode == "auto" else args.decode)
                obs, _, _, infos = envs.step(ovp.tokens_to_actions(sample.tokens.cpu(), model.config, stats))
            n = min(envs.num_envs, local_episodes - round_start)
            success_once.append(infos["success_once"][:n].float())
            success_at_end.append(infos["success_at_end"][:n].float())
        for name, values in (("success_once", success_once), ("success_at_end", success_at_end)):
            out[f"eval/{variant}/{name}"] = _mean_over_ranks(torch.cat(values).mean().item(), world_size)
        if rank == 0:
            write_video(writer, run_dir / "videos" / f"{variant}_{step:09d}.mp4", frames, f"eval/{variant}/video", step)
    return out


# ---------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------


def main(args: Args) -> None:
    # --- setup: DDP from torchrun's environment variables, seeding seed + rank --------------------------
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    rank = int(os.environ.get("RANK", 0))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world_size > 1:
        if device.type == "cuda":
            # NCCL for GPU tensors (gradients), gloo for CPU ones: the pickled objects of all_gather_object
            # (RNG states) and the logged metrics then never depend on which GPU is "current"
            dist.init_process_group("cpu:gloo,cuda:nccl", device_id=device)
        else:
            dist.init_process_group("gloo")
    if args.num_envs % world_size:
        raise ovp.OpenVLAError(f"--num-envs {args.num_envs} must be divisible by the number of ranks ({world_size})")
    local_num_envs = args.num_envs // world_size
    if args.env_parts < 1 or local_num_envs % args.env_parts:
        raise ovp.OpenVLAError(f"--env-parts {args.env_parts} must be >= 1 and divide the envs per rank "
                               f"({local_num_envs})")
    local_batch_size = args.num_steps * local_num_envs  # samples per rank per iteration (before masking)
    if not 1 <= args.num_minibatches <= local_batch_size:
        raise ovp.OpenVLAError(f"--num-minibatches must be in 1..{local_batch_size} (num_steps x num_envs / ranks)")
    _, _, robot = openvla_envs.resolve(args.env_id)  # unknown id / missing assets fail here, before loading 7B
    if args.env_backend == "gpu" and not openvla_envs.gpu_physx_available():
        raise ovp.OpenVLAError("--env-backend gpu needs a CUDA GPU and SAPIEN's PhysX GPU library "
                               "(~/.sapien/physx/); use --env-backend cpu")
    for variant in [*args.eval_variants, *args.ptx_variants]:
        openvla_envs.resolve(variant)
    if args.ptx_coef < 0 or args.ptx_batch_size < 1 or (args.ptx_coef > 0 and not args.ptx_demos):
        raise ovp.OpenVLAError("--ptx-coef must be >= 0 and --ptx-batch-size >= 1, and --ptx-coef > 0 needs --ptx-demos "
                               "(a .npz from: python sft_openvla.py --demos-only --demos-path demos.npz)")
    if args.ptx_coef > 0 and not Path(args.ptx_demos).is_file():
        raise ovp.OpenVLAError(f"--ptx-demos {args.ptx_demos}: no such file "
                               "(collect one: python sft_openvla.py --demos-only --demos-path demos.npz)")
    if args.critic == "state" and args.value_head_grad:
        raise ovp.OpenVLAError("--value-head-grad lets the value loss into the LM through the value head; "
                               "--critic state has none (drop one of the two)")
    if args.pg_coef == 0 and args.ptx_coef == 0:
        raise ovp.OpenVLAError("--pg-coef 0 without --ptx-coef leaves nothing to train the policy")
    if args.unnorm_key is None:
        args.unnorm_key = ovp.BUILTIN_NORM_KEY if robot == "panda" else "bridge_orig"
    if args.track:
        try:
            import wandb
        except ImportError:
            raise ovp.OpenVLAError("--track needs wandb: pip install wandb") from None

    resume_dir = find_checkpoint(args.resume) if args.resume else None
    if resume_dir is not None:
        info = json.loads((resume_dir / CKPT_INFO).read_text())
        if info["vla_path"] != args.vla_path:
            raise ovp.OpenVLAError(f"--resume {args.resume} was trained from {info['vla_path']!r}, not "
                                   f"--vla-path {args.vla_path!r}")
        if info["args"].get("critic", "vla") != args.critic:
            raise ovp.OpenVLAError(f"--resume {args.resume} trained --critic {info['args'].get('critic', 'vla')}; "
                                   "exact resume needs the same")
        if info["world_size"] != world_size:
            raise ovp.OpenVLAError(f"--resume {args.resume} ran on {info['world_size']} ranks; exact resume needs the same")
        run_dir = resume_dir.parent.parent
    else:
        run_name = f"{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}"
        run_dir = Path(args.output_dir) / run_name

    random.seed(args.seed + rank)
    np_rng = np.random.default_rng(args.seed + rank)  # draws each iteration's env reset seeds
    torch.manual_seed(args.seed + rank)
    if args.deterministic:
        torch.use_deterministic_algorithms(True)
    decode = None if args.decode == "auto" else args.decode  # generate_actions picks (CUDA graph on GPUs)
    dtype = {"auto": torch.bfloat16 if device.type == "cuda" else torch.float32,
             "bfloat16": torch.bfloat16, "float32": torch.float32}[args.dtype]

    # --- logger -------------------------------------------------------------------------------------
    writer = None
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        writer = SummaryWriter(str(run_dir))
        writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + "\n".join(f"|{k}|{v}|" for k, v in asdict(args).items()))
        if args.track:
            wandb.init(project=args.wandb_project, name=run_dir.name, config=asdict(args), sync_tensorboard=True)

    # --- envs -----------------------------------------------------------------------------------------
    # --env-parts splits the CPU workers only: the GPU simulator steps all its envs in one call
    gpu_sim = args.env_backend == "gpu" or (args.env_backend == "auto" and openvla_envs.gpu_physx_available())
    if gpu_sim and args.env_parts > 1:
        raise ovp.OpenVLAError("--env-parts > 1 needs CPU worker envs (--env-backend cpu): the GPU simulator "
                               "steps all its envs at once")
    envs = openvla_envs.make_envs(args.env_id, local_num_envs, device=device, backend=args.env_backend,
                                  reward=args.reward, max_episode_steps=args.num_steps, parts=args.env_parts,
                                  state_obs=args.critic == "state")
    eval_envs = {args.env_id: envs}
    for variant in args.eval_variants:
        if variant != args.env_id:
            eval_envs[variant] = openvla_envs.make_envs(variant, local_num_envs, device=device, backend=args.env_backend,
                                                        max_episode_steps=args.num_steps)

    # --- model and optimizer ----------------------------------------------------------------------------
    model, processor = ovp.load_vla(
        args.vla_path, device=device, dtype=dtype, load_in_4bit=args.load_in_4bit,
        lora=None if resume_dir else ovp.LoraSettings(rank=args.lora_rank, alpha=args.lora_alpha),
        adapter_path=resume_dir, with_value_head=args.critic == "vla", gradient_checkpointing=args.gradient_checkpointing,
    )
    critic = StateCritic(envs.state_dim).to(device) if args.critic == "state" else None  # deviation 9
    if args.train_vision and resume_dir is None:  # a resumed adapter restores them, trainable
        ovp.make_vision_trainable(model)
    if args.compile:  # after LoRA, once: the update and the rollout's prefill then run fused kernels
        ovp.compile_decoder_layers(model)
    stats = ovp.action_stats(model.config, args.unnorm_key)  # unknown key -> error listing the known ones
    demos = (load_ptx_demos(args.ptx_demos, processor, model.config, stats, args.ptx_variants)
             if args.ptx_coef > 0 else None)
    if demos is not None and rank == 0:
        print(f"[ptx] {len(demos['actions'])} demonstration steps from {args.ptx_demos}"
              f"{' (' + ', '.join(args.ptx_variants) + ')' if args.ptx_variants else ''}, coefficient {args.ptx_coef:g}")
    if critic is not None and resume_dir is not None:
        critic.load_state_dict(torch.load(resume_dir / STATE_CRITIC_FILE, map_location=device))
    value_module = critic if critic is not None else model.value_head
    if world_size > 1:  # every rank starts from rank 0's LoRA init and value head (or state critic)
        for p in [*model.parameters(), *(critic.parameters() if critic is not None else [])]:
            if p.requires_grad:
                dist.broadcast(p.data, src=0)
    vision_params = [p for p in ovp.vision_modules(model).parameters() if p.requires_grad]  # [] unless --train-vision
    vision_ids = {id(p) for p in vision_params}
    lora_params = [p for n, p in model.named_parameters()
                   if p.requires_grad and not n.startswith("value_head.") and id(p) not in vision_ids]
    optimizer = torch.optim.Adam([
        {"params": lora_params, "lr": args.learning_rate},
        {"params": value_module.parameters(), "lr": args.value_learning_rate},
        *([{"params": vision_params, "lr": args.vision_learning_rate}] if vision_params else []),
    ], eps=1e-5)

    start_iteration, global_step = 1, 0
    if resume_dir is not None:
        rates = [group["lr"] for group in optimizer.param_groups]  # this invocation's: they win over the checkpoint's
        optimizer.load_state_dict(torch.load(resume_dir / "optimizer.pt", map_location=device))
        for group, lr in zip(optimizer.param_groups, rates, strict=True):
            if group["lr"] != lr and rank == 0:
                print(f"[resume] learning rate {group['lr']:g} -> {lr:g}, as given (exact resume needs the same flags)")
            group["lr"] = lr
        set_rng_state(torch.load(resume_dir / "rng_states.pt", weights_only=False)[rank], np_rng)
        start_iteration, global_step = info["iteration"] + 1, info["global_step"]

    # --- storage (this rank's rollout) --------------------------------------------------------------------
    T, N = args.num_steps, local_num_envs
    obs = torch.zeros((T, N, 224, 224, 3), dtype=torch.uint8, device=device)
    # The update reuses the rollout's patch embeddings while the towers are frozen (exact, and it skips them)
    reuse = args.reuse_patch_embeddings and not args.train_vision
    patches = torch.zeros((T, N, 256, model.causal_lm.config.hidden_size), dtype=dtype,  # 256 patches per image
                          device=device) if reuse else None
    actions = torch.zeros((T, N, ovp.ACTION_DIM), dtype=torch.long, device=device)  # action token ids
    logprobs = torch.zeros((T, N), device=device)
    rewards = torch.zeros((T, N), device=device)
    successes = torch.zeros((T, N), dtype=torch.bool, device=device)  # the env's success indicator per step
    values = torch.zeros((T, N), device=device)
    sim_states = torch.zeros((T, N, envs.state_dim), device=device) if critic is not None else None  # (deviation 9)

    # SIGTERM / SIGINT: stop at the next safe point, save, exit 0 (preemptible clusters)
    stop = {"requested": False}

    def request_stop(signum, _frame):
        stop["requested"] = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    def stop_requested() -> bool:
        return _mean_over_ranks(float(stop["requested"]), world_size) > 0

    def checkpoint(iteration: int, rng_states_this_rank: dict) -> None:
        states = [None] * world_size
        if world_size > 1:
            dist.all_gather_object(states, rng_states_this_rank)
        else:
            states = [rng_states_this_rank]
        if rank == 0:
            path = save_checkpoint(run_dir, args, model, optimizer, iteration, global_step, states, critic)
            tqdm.write(f"saved {path}")

    # --- loop -------------------------------------------------------------------------------------------
    if args.eval_every and start_iteration == 1:
        metrics = evaluate(args, model, processor, eval_envs, stats, dtype, rank, world_size, writer, run_dir, 0)
        if writer:
            for k, v in metrics.items():
                writer.add_scalar(k, v, 0)
    bar = tqdm(range(start_iteration, args.num_iterations + 1), disable=rank != 0, desc="PPO", unit="it")
    for iteration in bar:
        iteration_rng = rng_state(np_rng)  # where this iteration starts: saved if it is interrupted
        iteration_start = time.time()

        # rollout: one full episode in every env, actions sampled from the current policy
        model.eval()
        env_seeds = np_rng.integers(*openvla_envs.ROLLOUT_SEEDS, size=N).tolist()
        next_obs, instructions = envs.reset(env_seeds)
        input_ids, attention_mask = processor.tokenize(instructions, device=device)  # (N, L): fixed per episode
        # Overlap: the envs step in `envs.parts` groups of rows (--env-parts; 1 by default). While one part's
        # CPU workers simulate and render its actions, the GPU samples the next part's, so env stepping hides
        # behind inference (the decode's CUDA graph is captured once for the part's batch size). Part p's step
        # t is sent with `step_async` and collected by `step_wait` just before its step t + 1 is sampled (the
        # last one after the loop): its reward and success land in row t then. The gradient does not change:
        # only the order of the sampling draws differs from one batch of all envs (--env-parts 1).
        env_time = 0.0  # time blocked waiting for the envs: what the overlap did not hide
        interrupted = False
        for step in range(T):
            global_step += args.num_envs
            for p, rows in enumerate(envs.part_slices):
                if step > 0:  # part p's previous step, simulated while the other parts were sampled
                    env_start = time.time()
                    next_obs[rows], rewards[step - 1, rows], _, infos = envs.step_wait(p)
                    env_time += time.time() - env_start
                    successes[step - 1, rows] = infos["success"]
                obs[step, rows] = next_obs[rows]
                if critic is not None:
                    sim_states[step, rows] = envs.states[rows]  # the simulator's state behind these images
                with torch.no_grad():
                    sample = model.generate_actions(input_ids[rows], attention_mask[rows],
                                                    processor.process_images(next_obs[rows], dtype),
                                                    temperature=args.temperature, decode=decode,
                                                    return_patch_embeddings=reuse)
                actions[step, rows] = sample.tokens  # (N / parts, 7) token ids, not decoded: exactly what was sampled
                if reuse:
                    patches[step, rows] = sample.patch_embeddings  # (N / parts, 256, H)
                logprobs[step, rows] = sample.logprobs.sum(-1)  # composite action log-prob (deviation 1)
                with torch.no_grad():
                    values[step, rows] = sample.values if critic is None else critic(sim_states[step, rows])
                # the ids to the CPU first: on the GPU the mapping's syncs and tiny kernels cost ~4 ms a call
                # (bench/throughput.py tiny_loop, BENCHMARKS.md section 1)
                envs.step_async(ovp.tokens_to_actions(sample.tokens.cpu(), model.config, stats), p)
            if stop_requested():
                interrupted = True
                break
        env_start = time.time()
        next_obs, reward, _, infos = envs.step_wait()  # every part's last step (interrupted: the one under way)
        env_time += time.time() - env_start
        rewards[step] = reward
        successes[step] = infos["success"]
        if interrupted:  # the rollout is dropped; resume redoes this iteration exactly
            global_step -= (step + 1) * args.num_envs
            checkpoint(iteration - 1, iteration_rng)
            break
        rollout_time = time.time() - iteration_start

        # advantages: the episode ends at its first success, the time limit bootstraps (deviation 2); GAE,
        # normalised over the samples in the loss of all ranks
        with torch.no_grad():
            alive, terminals = episode_masks(successes, args.success_ends_episode)  # (T, N) each
            rewards *= alive  # nothing after the end of an episode counts
            last_values = torch.zeros(N, device=device)  # (N,) V after the last step; 0 = the time limit is terminal
            if args.bootstrap_time_limit and critic is not None:
                last_values = critic(envs.states)
            elif args.bootstrap_time_limit:
                last_values = model.generate_actions(input_ids, attention_mask, processor.process_images(next_obs, dtype),
                                                     greedy=True, decode=decode).values  # greedy: no random draws
            advantages, returns = compute_gae(rewards, values, terminals, last_values, args.gamma, args.gae_lambda)
            if args.norm_adv:
                moments = torch.stack([(advantages * alive).sum(), (advantages**2 * alive).sum(), alive.sum().float()])
                if world_size > 1:
                    dist.all_reduce(moments)
                mean = moments[0] / moments[2]
                std = (moments[1] / moments[2] - mean**2).clamp_min(0).sqrt()
                advantages = (advantages - mean) / (std + 1e-8)

        # update
        update_start = time.time()
        batch = {
            "obs": obs.reshape(-1, 224, 224, 3),
            "patch_embeddings": patches.flatten(0, 1) if reuse else None,  # (T * N, 256, H)
            "input_ids": input_ids.repeat(T, 1),  # (T * N, L): sample t * N + n is env n at step t
            "attention_mask": attention_mask.repeat(T, 1),
            "actions": actions.reshape(-1, ovp.ACTION_DIM),
            "logprobs": logprobs.reshape(-1),
            "advantages": advantages.reshape(-1),
            "returns": returns.reshape(-1),
            "values": values.reshape(-1),
            "alive": alive.reshape(-1),
            "states": sim_states.flatten(0, 1) if critic is not None else None,  # (T * N, D)
        }
        losses = ppo_update(args, model, processor, optimizer, batch, dtype, world_size, demos, critic)
        update_time = time.time() - update_start

        # log (metrics averaged over ranks; only rank 0 writes)
        y_pred, y_true = values[alive], returns[alive]  # the samples in the loss
        var_y = y_true.var()
        explained_var = float("nan") if var_y == 0 else (1 - (y_true - y_pred).var() / var_y).item()
        metrics = {
            "charts/success_once": infos["success_once"].float().mean().item(),
            "charts/success_at_end": infos["success_at_end"].float().mean().item(),
            "charts/episodic_return": infos["episodic_return"].mean().item(),
            "charts/frac_steps_in_loss": alive.float().mean().item(),
            "losses/explained_variance": explained_var,
            "losses/value_mean": y_pred.mean().item(),  # beside return_mean: a critic that lags shows here
            "losses/return_mean": y_true.mean().item(),
            **{f"losses/{k}": v for k, v in losses.items()},
        }
        metrics = {k: _mean_over_ranks(v, world_size) for k, v in metrics.items()}
        metrics.update({
            "charts/learning_rate": optimizer.param_groups[0]["lr"],
            "charts/SPS": T * args.num_envs / (time.time() - iteration_start),
            "time/rollout_s": rollout_time,
            "time/env_s": env_time,
            "time/update_s": update_time,
        })
        if args.eval_every and iteration % args.eval_every == 0:
            metrics.update(evaluate(args, model, processor, eval_envs, stats, dtype, rank, world_size, writer,
                                    run_dir, global_step))
        if writer:
            for k, v in metrics.items():
                writer.add_scalar(k, v, global_step)
            bar.set_postfix(success=f"{metrics['charts/success_once']:.2f}", ratio=f"{losses['first_ratio']:.4f}")

        stopping = stop_requested()
        if iteration % args.save_every == 0 or iteration == args.num_iterations or stopping:
            checkpoint(iteration, rng_state(np_rng))
        if stopping:
            break

    if world_size > 1:  # DDP sanity check: every rank must hold the same trainable weights
        checksum = torch.stack([p.detach().double().sum() for p in model.parameters() if p.requires_grad]).sum()
        sums = [None] * world_size
        dist.all_gather_object(sums, checksum.item())
        if len(set(sums)) != 1:
            raise RuntimeError(f"trainable weights differ across ranks: {sums}")
        if rank == 0:
            print(f"trainable weights identical on {world_size} ranks")
    for e in {id(e): e for e in eval_envs.values()}.values():
        e.close()
    if writer:
        writer.close()
    if world_size > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    cli_args = tyro.cli(Args)
    try:
        main(cli_args)
    except (ovp.OpenVLAError, openvla_envs.MissingAssetsError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except ValueError as err:  # unknown env id / variant from openvla_envs.resolve
        if "unknown env or variant" not in str(err):
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
