"""REINFORCE fine-tuning of OpenVLA-7B in ManiSkill3, in one file (CleanRL style).

Method (the blog's first algorithm; Williams 1992). Every iteration each env runs one full episode
(`num_steps` = 80 steps) with actions sampled from the policy: the image and instruction go through
OpenVLA, which samples 7 action tokens (one per action dimension, only among the 256 action tokens,
temperature 1, no top-k/top-p: the blog's fixes 2 and 3, in `openvla_patch.py`). Token ids, their
log-probs and rewards are stored. Each step is labelled with its discounted return
G_t = sum_k gamma^k r_{t+k} (to the end of the fixed-length episode); the policy gradient
sum_t (G_t - b) grad log pi(a_t | s_t) is accumulated over the whole rollout batch (num_steps x num_envs
samples, in micro-batches) and ONE optimizer step is taken per iteration. No value head: only the LoRA
adapters on the language model train.

Deviations from REINFORCE as usually written, and from the blog (Haonan Yu, "OpenVLA finetuning with online RL"):
1. The 7 action tokens of one step are one composite action: its log-prob is the sum of the 7 token
   log-probs, and the entropy bonus (off by default) is the sum of the 7 per-token entropies at the taken
   prefix (an unbiased estimate of the joint entropy).
2. Episodes have a fixed length and every env resets together at the start of each iteration. An
   episode ends at its first success (`--success-ends-episode`, as in PPO): that step keeps its reward,
   later steps leave the loss, so with the sparse reward G_t = gamma^(k) for a success k steps ahead and
   0 for a failure. Without it (the old default) the per-step success reward kept coming after a
   success, whose steps, where the action hardly matters, then carried the largest returns. REINFORCE
   has no critic, so the time limit stays terminal (nothing to bootstrap from).
3. Baseline: on by default (`--baseline`), the mean return over the whole rollout batch of all ranks is
   subtracted. The blog does not say whether it used one. Why on: with the sparse success reward
   (r in {0, 1}) every return is >= 0, so without a baseline every sampled action of a successful episode
   is pushed up and nothing is ever pushed down, and the gradient's size follows the success rate: the
   variance is large. A constant baseline changes the expected gradient only by the O(1/batch) term of each
   sample's own return inside the mean, negligible at 80 x 24 samples.
   Return normalisation (`--normalize-returns`: also divide by the batch std, all ranks) is off by
   default: with one optimizer step per iteration the std division would rescale the step size
   iteration by iteration (large steps exactly when the returns barely differ); Adam already makes the
   step size roughly invariant to the reward's scale. Turn it on for the shaped reward if the gradient
   norm clip dominates.
4. Defaults follow RL4VLA's PPO where the blog is silent: LoRA lr 1e-4, gradient-norm clip 10, gamma 0.99,
   no entropy bonus. The reward is the blog's per-step success indicator (`--reward sparse`) or RL4VLA's
   shaped potential. The blog used a learned success detector; our built-in tasks read success from the
   simulator.
5. `losses/first_ratio` (mean exp(new - old log-prob) over the first micro-batch, before the step) must be
   1: the on-policy check that the teacher-forced re-evaluation reproduces the rollout's log-probs
   (blog fix 3). REINFORCE has no ratio in its loss: the gradient of the ratio at 1 is the score function.
6. Only LoRA on the language model trains by default (the blog);
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

Launch:
    # one GPU, the real model (needs internet once, or a local copy)
    python reinforce_openvla.py --vla-path openvla/openvla-7b --env-id train --num-envs 24
    # 8 GPUs on one node: 24 envs in all, 3 per rank (the blog's setting)
    torchrun --nproc-per-node 8 reinforce_openvla.py --vla-path openvla/openvla-7b --num-envs 24
    # 2 nodes x 8 GPUs
    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 reinforce_openvla.py --num-envs 48
    # CPU smoke run, offline: a tiny random OpenVLA in the released format
    python reinforce_openvla.py --vla-path tiny --num-envs 2 --num-steps 8 --num-iterations 2
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
    exp_name: str = "reinforce_openvla"
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
    """training iterations (rollout + one optimizer step)"""
    micro_batch_size: int = 12
    """samples per forward/backward, per rank: the gradient of the rollout's num_steps x local envs samples
    is accumulated over micro-batches of this size (memory only: the same gradient up to rounding); 0 = all at once.
    12 is sized for 7B; a small model wants a few hundred: its micro-steps are launch-bound"""
    learning_rate: float = 1e-4
    """Adam learning rate of the LoRA weights"""
    gamma: float = 0.99
    """discount factor of the returns G_t"""
    success_ends_episode: bool = True
    """an episode ends at its first success: reward there, later steps out of the loss (deviation 2)"""
    baseline: bool = True
    """subtract the batch-mean return (all ranks) from every return (deviation 3)"""
    normalize_returns: bool = False
    """also divide by the batch std of the returns (all ranks) (deviation 3)"""
    ent_coef: float = 0.0
    """entropy bonus coefficient"""
    max_grad_norm: float = 10.0
    """gradient-norm clip over all trainable parameters"""
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


def episode_masks(successes: torch.Tensor, success_ends_episode: bool) -> torch.Tensor:
    """successes (T, N) bool, the env's per-step success -> alive (T, N) bool: with `success_ends_episode`,
    False for every step after an episode's first success (they leave the loss); else all True."""
    if not success_ends_episode:
        return torch.ones_like(successes)
    return (successes.long().cumsum(0) - successes.long()) == 0  # no success at an earlier step


def discounted_returns(rewards, gamma: float):
    """G_t = sum_k gamma^k r_{t+k} to the end of fixed-length episodes whose last step is terminal.
    rewards: (T, N) -> returns: (T, N)."""
    returns = torch.zeros_like(rewards)
    next_return = torch.zeros_like(rewards[0])
    for t in reversed(range(rewards.shape[0])):
        returns[t] = next_return = rewards[t] + gamma * next_return
    return returns


ACTION_DIM_NAMES = ("x", "y", "z", "roll", "pitch", "yaw", "gripper")


def reinforce_update(args: Args, model, processor, optimizer, batch: dict, dtype: torch.dtype, world_size: int) -> dict:
    """ONE optimizer step on the REINFORCE loss -mean(advantage * log pi(a|s)) over `batch` (flat, this rank's
    samples; the gradient is accumulated over micro-batches and averaged over ranks): obs (B, H, W, 3) uint8,
    input_ids / attention_mask (B, L), actions (B, 7) token ids, logprobs, advantages (B,) (the returns after
    the baseline / normalisation), alive (B,) bool: only alive samples are in the loss (deviation 2). Returns
    the losses over the batch, the on-policy check and each action dimension's entropy."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    alive_inds = batch["alive"].nonzero().squeeze(-1).cpu()
    micro = args.micro_batch_size or max(1, len(alive_inds))
    stats = {k: 0.0 for k in ("policy_loss", "entropy", "approx_kl")}
    entropy_per_dim, first_ratio = [], None
    model.train()
    optimizer.zero_grad(set_to_none=True)
    for inds in torch.split(alive_inds, micro):
        weight = len(inds) / len(alive_inds)  # gradient accumulation: the mean over the rollout's samples in the loss
        reused = batch.get("patch_embeddings")  # the rollout's, or None: recompute from the images
        pixel_values = processor.process_images(batch["obs"][inds], dtype) if reused is None else None
        ev = model.evaluate_actions(batch["input_ids"][inds], batch["attention_mask"][inds], pixel_values,
                                    batch["actions"][inds], temperature=args.temperature,
                                    patch_embeddings=None if reused is None else reused[inds])
        newlogprob = ev.logprobs.sum(-1)  # (b,) the composite action's log-prob (deviation 1)
        with torch.no_grad():
            logratio = newlogprob - batch["logprobs"][inds]
            approx_kl = ((logratio.exp() - 1) - logratio).mean()  # k3 estimator: ~0 on-policy
            if first_ratio is None:
                first_ratio = logratio.exp().mean().item()  # must be 1: rollout policy == learning policy
            entropy_per_dim.append(ev.entropy.mean(0))  # (7,)

        # the score-function estimator: grad of -A log pi = -A grad log pi (Williams 1992)
        pg_loss = -(batch["advantages"][inds] * newlogprob).mean()
        entropy_loss = ev.entropy.sum(-1).mean()  # (deviation 1)
        loss = pg_loss - args.ent_coef * entropy_loss
        (loss * weight).backward()
        for k, v in zip(stats, (pg_loss, entropy_loss, approx_kl), strict=True):
            stats[k] += v.item() * weight

    if world_size > 1:  # DDP by hand: average the trainable gradients of all ranks in one message
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in trainable]
        flat = torch.cat([g.flatten() for g in grads])
        dist.all_reduce(flat)
        flat /= world_size
        for p, g in zip(trainable, torch.split(flat, [g.numel() for g in grads]), strict=True):
            p.grad = g.view_as(p)
    grad_norm = torch.nn.utils.clip_grad_norm_(trainable, args.max_grad_norm)
    optimizer.step()  # the only one of this iteration
    dims = torch.stack(entropy_per_dim).mean(0).tolist()  # (7,) nats, mean over micro-batches
    return {**stats, "grad_norm": grad_norm.item(), "first_ratio": first_ratio,
            **{f"entropy_{name}": e for name, e in zip(ACTION_DIM_NAMES, dims, strict=True)}}


def _mean_over_ranks(value: float, world_size: int) -> float:
    if world_size == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64)  # on the CPU: reduced by gloo (see the setup)
    dist.all_reduce(t)
    return t.item() / world_size


# ---------------------------------------------------------------------------------------------------
# Checkpoints: LoRA adapter (peft format; no value head), optimizer, RNG states of every rank, counters
# ---------------------------------------------------------------------------------------------------

CKPT_INFO = "openvla_rl.json"


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
                    rng_states: list[dict]) -> Path:
    """Rank 0 only. Written under a temporary name, then renamed: a crash never leaves half a checkpoint."""
    final = run_dir / "checkpoints" / f"iter_{iteration:06d}"
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    ovp.save_adapter(model, tmp, base_path=args.vla_path)
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(rng_states, tmp / "rng_states.pt")
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
    if args.micro_batch_size < 0:
        raise ovp.OpenVLAError(f"--micro-batch-size {args.micro_batch_size} must be >= 0 (0: the whole rollout batch)")
    _, _, robot = openvla_envs.resolve(args.env_id)  # unknown id / missing assets fail here, before loading 7B
    if args.env_backend == "gpu" and not openvla_envs.gpu_physx_available():
        raise ovp.OpenVLAError("--env-backend gpu needs a CUDA GPU and SAPIEN's PhysX GPU library "
                               "(~/.sapien/physx/); use --env-backend cpu")
    for variant in args.eval_variants:
        openvla_envs.resolve(variant)
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

    # --- model and optimizer ----------------------------------------------------------------------------
    model, processor = ovp.load_vla(
        args.vla_path, device=device, dtype=dtype, load_in_4bit=args.load_in_4bit,
        lora=None if resume_dir else ovp.LoraSettings(rank=args.lora_rank, alpha=args.lora_alpha),
        adapter_path=resume_dir, with_value_head=False, gradient_checkpointing=args.gradient_checkpointing,
    )  # no value head: REINFORCE learns no value, so the checkpoints hold the LoRA adapter only
    if args.train_vision and resume_dir is None:  # a resumed adapter restores them, trainable
        ovp.make_vision_trainable(model)
    if args.compile:  # after LoRA, once: the update and the rollout's prefill then run fused kernels
        ovp.compile_decoder_layers(model)
    stats = ovp.action_stats(model.config, args.unnorm_key)  # unknown key -> error listing the known ones
    if world_size > 1:  # every rank starts from rank 0's LoRA init
        for p in model.parameters():
            if p.requires_grad:
                dist.broadcast(p.data, src=0)
    vision_params = [p for p in ovp.vision_modules(model).parameters() if p.requires_grad]  # [] unless --train-vision
    vision_ids = {id(p) for p in vision_params}
    lora_params = [p for p in model.parameters() if p.requires_grad and id(p) not in vision_ids]
    optimizer = torch.optim.Adam([
        {"params": lora_params, "lr": args.learning_rate},
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

    # --- envs -----------------------------------------------------------------------------------------
    # --env-parts splits the CPU workers only: the GPU simulator steps all its envs in one call
    gpu_sim = args.env_backend == "gpu" or (args.env_backend == "auto" and openvla_envs.gpu_physx_available())
    if gpu_sim and args.env_parts > 1:
        raise ovp.OpenVLAError("--env-parts > 1 needs CPU worker envs (--env-backend cpu): the GPU simulator "
                               "steps all its envs at once")
    envs = openvla_envs.make_envs(args.env_id, local_num_envs, device=device, backend=args.env_backend,
                                  reward=args.reward, max_episode_steps=args.num_steps, parts=args.env_parts)
    eval_envs = {args.env_id: envs}
    for variant in args.eval_variants:
        if variant != args.env_id:
            eval_envs[variant] = openvla_envs.make_envs(variant, local_num_envs, device=device, backend=args.env_backend,
                                                        max_episode_steps=args.num_steps)

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
            path = save_checkpoint(run_dir, args, model, optimizer, iteration, global_step, states)
            tqdm.write(f"saved {path}")

    # --- loop -------------------------------------------------------------------------------------------
    if args.eval_every and start_iteration == 1:
        metrics = evaluate(args, model, processor, eval_envs, stats, dtype, rank, world_size, writer, run_dir, 0)
        if writer:
            for k, v in metrics.items():
                writer.add_scalar(k, v, 0)
    bar = tqdm(range(start_iteration, args.num_iterations + 1), disable=rank != 0, desc="REINFORCE", unit="it")
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
                with torch.no_grad():
                    sample = model.generate_actions(input_ids[rows], attention_mask[rows],
                                                    processor.process_images(next_obs[rows], dtype),
                                                    temperature=args.temperature, decode=decode,
                                                    return_patch_embeddings=reuse)
                actions[step, rows] = sample.tokens  # (N / parts, 7) token ids, not decoded: exactly what was sampled
                if reuse:
                    patches[step, rows] = sample.patch_embeddings  # (N / parts, 256, H)
                logprobs[step, rows] = sample.logprobs.sum(-1)  # composite action log-prob (deviation 1)
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

        # advantages: discounted returns to the episode's end (deviation 2), minus the batch-mean return of all
        # ranks' samples in the loss (deviation 3)
        with torch.no_grad():
            alive = episode_masks(successes, args.success_ends_episode)  # (T, N)
            returns = discounted_returns(rewards * alive, args.gamma)  # (T, N): nothing after the end counts
            moments = torch.stack([(returns * alive).sum(), (returns**2 * alive).sum(), alive.sum().float()])
            if world_size > 1:
                dist.all_reduce(moments)
            mean = moments[0] / moments[2]
            std = (moments[1] / moments[2] - mean**2).clamp_min(0).sqrt()
            advantages = returns - mean if args.baseline else returns.clone()
            if args.normalize_returns:
                advantages = advantages / (std + 1e-8)

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
            "alive": alive.reshape(-1),
        }
        losses = reinforce_update(args, model, processor, optimizer, batch, dtype, world_size)
        update_time = time.time() - update_start

        # log (metrics averaged over ranks; only rank 0 writes)
        metrics = {
            "charts/success_once": infos["success_once"].float().mean().item(),
            "charts/success_at_end": infos["success_at_end"].float().mean().item(),
            "charts/episodic_return": infos["episodic_return"].mean().item(),
            "charts/frac_steps_in_loss": alive.float().mean().item(),
            **{f"losses/{k}": v for k, v in losses.items()},
        }
        metrics = {k: _mean_over_ranks(v, world_size) for k, v in metrics.items()}
        metrics.update({
            "charts/return_mean": mean.item(),  # the baseline: mean G_t over all ranks' samples
            "charts/return_std": std.item(),
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
