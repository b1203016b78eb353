"""Warm-up supervised fine-tuning of OpenVLA from scripted demonstrations (RL4VLA's warm-up stage).

Method. The scripted expert of `openvla_envs.py` (a pick-move-place state machine on privileged state)
solves the chosen task variants while we record, per step, the camera image, the instruction and the
expert's 7-D action. Successful episodes are kept and stored in one `.npz`. Action `norm_stats`
(q01/q99, mean, std, min, max, mask) are computed from the demonstrations and written under
`--norm-key` into the saved checkpoint's `config.json`; each action is normalised with them and
discretised into OpenVLA's 256 bins (`actions_to_tokens`). The model is trained as OpenVLA was
released: teacher-forced next-token cross-entropy over the full vocabulary, with labels only on the 7
action tokens and the end-of-sequence token. The result is a full checkpoint in the released format,
which every script loads with `--vla-path <output-dir> --unnorm-key <norm-key>`.

Deviations from the released fine-tuning recipe (OpenVLA `finetune.py`) and from RL4VLA's warm-up:
1. Demonstrations come from our scripted expert in simulation (RL4VLA used motion-planner demos of its
   ManiSkill tasks, 140 of them for the warm-up). The executed actions carry optional Gaussian noise and
   pauses, so the data shows recovery from off-nominal states, while the stored labels are the expert's
   clean actions in those states (DART); labelling the noisy actions would put the noise in the targets.
2. An episode is stored from its first step up to its first successful step plus
   `--steps-after-success` steps (the expert lets go and rises), not for its full fixed length: the
   idle tail after success would otherwise dominate the data. Failed episodes are dropped.
3. Full fine-tuning is the default (for tiny models); `--lora-rank 32` gives the released LoRA recipe
   (rank 32, all linear layers of the language model) for 7B. LoRA weights are merged into the saved
   checkpoint, so it loads like any base checkpoint.
4. Image augmentation (`--image-aug`) is the released one minus the hue jitter: a random square crop of
   90 % of the area resized back to 224x224, then brightness, contrast and saturation jitter, applied
   per sample in torch on the uint8 image before the processor normalises it.
5. A constant learning rate with AdamW and gradient-norm clipping, as released; `--lr-schedule cosine` decays
   it to 0 at `--max-steps` instead, after `--lr-hold-steps` at the peak. A constant rate keeps the weights
   moving, so the action distributions stay broad (the tiny prior of BENCHMARKS.md section 4: ~3 nats per
   translation token) and greedy success swings between checkpoints; the decay ends on a converged, sharper
   model. How long the peak lasts matters as much as the step count: 8,500 steps decayed from the start
   ended at loss 0.88 and an x-token entropy of ~2.95 nats on PPO's rollouts, 3,500 held + 5,000 decayed at
   0.78 and ~2.0 (the prior PPO could lift; BENCHMARKS.md section 4, sessions 9 and 13). DDP shards each
   global batch over ranks (one shared permutation per epoch, rank r takes its slice), not a
   `DistributedSampler`.
6. Rank 0 collects the demonstrations (other ranks wait, then read the `.npz`), evaluates and saves.
7. `--state-aux-coef c` (off by default) adds an auxiliary loss: a linear head on the flattened patch embeddings
   (the projector's output, what the LM reads) regresses the simulator's state at each demonstration step
   (`openvla_envs.state_vector`: robot qpos/qvel, gripper, cube and goal poses; standardised by the demos' mean
   and std), weighted c against the cross-entropy. Why: the released towers (DINOv2, SigLIP) come pretrained on
   web images and resolve where things are; the small model's towers are trained from scratch on a
   thousand demonstrations, and the action loss alone left their features unable to say where the cube is
   relative to the gripper to better than ~3 cm (BENCHMARKS.md section 4, session 20's probe), while a grasp
   needs ~2. The state is privileged, used at training time only (as an asymmetric critic's is, Pinto et al.
   2018, who also trained on it as an auxiliary task); the head is dropped at save, so the checkpoint and the
   policy still see only the image and the instruction. For small models trained from scratch; 7B's towers
   need none. Measured (session 21): at weight 1 the tiny prior held the cube in 195 of 200 `train` episodes
   (161 without), and PPO from it lifted `train` 0.43 -> 0.785, where it had left the prior without it flat.
8. `--expert-detour-prob p` (off by default): in a fraction p of the demonstrations the executed expert, once
   holding the object, first carries it over the decoy (the receptacle the instruction did not name), then to
   the target; the stored labels stay the clean expert's, toward the target (DART's rule, deviation 1, applied
   to the choice of receptacle). Why: causal confusion (de Haan et al. 2019). In straight demonstrations the
   receptacle nearest the carried object is the target in most held steps (77-89 %, BENCHMARKS.md section 4),
   so "go to the nearer receptacle" fits them without reading the instruction; at the lift it does not. The
   small priors whose towers resolve the scene (deviation 7) learnt much of that: session 22's ended on the
   receptacle nearer the cube's start in 65 % of the `train` episodes that ended on one and 72 % of the
   plate's, going wrong in 61 % of `train` episodes whose towel lay farther and 22 % where it lay nearer
   (bench/receptacle_choice.py; BENCHMARKS.md section 4); PPO from such a prior learnt "towel", not the
   instruction. Detours put the object beside the decoy with a label pointing away from it, where only the
   instruction says which way to go.

Commands:
    # 1 GPU, 7B with LoRA (bf16):
    python sft_openvla.py --vla-path openvla/openvla-7b --lora-rank 32 --variants train --demos-per-task 140
    # 8 GPUs (the batch size is per rank):
    torchrun --nproc-per-node 8 sft_openvla.py --vla-path openvla/openvla-7b --lora-rank 32 --batch-size 8
    # CPU smoke run, tiny model (about 2 minutes on 2 cores):
    python sft_openvla.py --vla-path tiny --demos-per-task 2 --num-envs 2 --episode-steps 50 \
        --max-steps 50 --batch-size 8 --eval-every 50 --eval-episodes 2
Then: python eval_generalization.py --checkpoints checkpoints/sft-openvla --unnorm-key sft_tabletop
Demonstrations only (for ppo_openvla.py --ptx-demos): add --demos-only (collects into --demos-path and exits).
Small model from scratch, with towers taught the scene's geometry (deviation 7): add --state-aux-coef 1.
"""

import math
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
import tyro
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

import openvla_envs
from openvla_envs import VARIANTS, VecEnv, make_envs
from openvla_patch import (
    ACTION_DIM,
    LoraSettings,
    OpenVLAError,
    action_stats,
    actions_to_tokens,
    load_vla,
    resolve_vla_path,
    save_adapter,
    save_pretrained,
    tokens_to_actions,
)

ACTION_DIM_NAMES = ("x", "y", "z", "roll", "pitch", "yaw", "gripper")  # OpenVLA's action order


# ---------------------------------------------------------------------------------------------------
# Args
# ---------------------------------------------------------------------------------------------------
@dataclass
class Args:
    exp_name: str = "sft_openvla"
    """the name of this experiment (tensorboard logs go to runs/{exp_name}__{seed}__{time})"""
    seed: int = 1
    """seed of the experiment (rank r uses seed + r for its augmentation and dropout)"""
    vla_path: str = "tiny"
    """the checkpoint to fine-tune: a hub id (openvla/openvla-7b), a local directory, or `tiny`"""
    output_dir: str = "checkpoints/sft-openvla"
    """where the fine-tuned full checkpoint is written (replaced atomically on every save)"""
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    """auto = bf16 on a GPU, fp32 on the CPU. bf16 keeps a LoRA base in bf16; full fine-tuning keeps fp32
    weights and runs the forward pass under bf16 autocast"""
    load_in_4bit: bool = False
    """quantise the language model to 4-bit NF4 (needs --lora-rank > 0); the saved checkpoint is merged
    into a bf16 copy of the base"""
    gradient_checkpointing: bool = False
    """recompute the language model's activations in the backward pass (less memory, ~30 % slower)"""
    lora_rank: int = 0
    """LoRA rank on all linear layers of the language model; 0 = full fine-tuning (small models)"""
    lora_alpha: int = 16
    """LoRA alpha (the scale is alpha / rank)"""

    # demonstrations
    variants: list[str] = field(default_factory=lambda: ["train"])
    """task variants of openvla_envs.VARIANTS to collect demonstrations on (`train` first for eval)"""
    demos_per_task: int = 50
    """successful demonstrations to keep per variant"""
    demos_path: str = "demos/sft_demos.npz"
    """the demonstrations file: written after collection, read with --reuse-demos"""
    compress_demos: bool = True
    """write --demos-path compressed (~10x smaller; ~4 min for 1,200 demonstrations) or, with
    --no-compress-demos, raw (seconds, ~5 GB for 1,200)"""
    reuse_demos: bool = True
    """load --demos-path if it exists instead of collecting again (its variants are then used as stored)"""
    demos_only: bool = False
    """collect the demonstrations into --demos-path and exit: no model, no training (e.g. ppo_openvla.py --ptx-demos)"""
    expert_noise: float = 0.05
    """std of Gaussian noise on the expert's arm actions (normalised units, 1 = 0.1 m or 0.1 rad per step)"""
    expert_pause_prob: float = 0.0
    """probability per step that the expert holds still (adds pauses to the demonstrations)"""
    expert_detour_prob: float = 0.0
    """chance per demonstration that the executed expert carries the object over the receptacle the instruction
    did not name before its target, the labels staying the clean expert's (deviation 8); 0 = straight demos"""
    episode_steps: int = 80
    """length of a collection (and evaluation) episode, in env steps"""
    steps_after_success: int = 5
    """steps kept after an episode's first success (the release and the rise)"""
    demo_seed: int = openvla_envs.DEMO_SEED
    """first env seed of the demonstrations (keep below 10**7: evaluations use openvla_envs.VALIDATION_SEED and
    TEST_SEED upward)"""
    num_envs: int = 8
    """parallel envs (worker processes on the CPU back-end) for collection and evaluation"""
    env_backend: Literal["auto", "gpu", "cpu"] = "auto"
    """simulation back-end of openvla_envs.make_envs"""

    # optimisation
    learning_rate: float = 5e-4
    """AdamW learning rate (the peak of --lr-schedule); 5e-4 is the released LoRA recipe's, use ~2e-5 for 7B full
    fine-tuning"""
    lr_schedule: Literal["constant", "cosine"] = "constant"
    """constant (the released recipe) or cosine: decays to 0 at --max-steps (deviation 5)"""
    lr_hold_steps: int = 0
    """with --lr-schedule cosine: steps at the peak rate before the decay starts (the tiny prior of BENCHMARKS.md
    section 4: 3500 of 8500)"""
    weight_decay: float = 0.0
    """AdamW weight decay"""
    max_grad_norm: float = 1.0
    """gradient-norm clipping threshold"""
    batch_size: int = 16
    """samples (env steps) per optimizer step, per rank"""
    max_steps: int = 2000
    """optimizer steps"""
    image_aug: bool = True
    """random 90 %-area crop + colour jitter on the training images"""
    state_aux_coef: float = 0.0
    """weight of the auxiliary loss (deviation 7): a linear head on the flattened patch embeddings regresses the
    simulator's state (standardised); 0 = off. Needs demonstrations collected with it (they then store `states`)"""

    # logging, evaluation, saving
    log_every: int = 10
    """optimizer steps between tensorboard / progress-bar updates"""
    eval_every: int = 500
    """optimizer steps between evaluations in the `train` variant (0 = only after training, -1 = never)"""
    eval_episodes: int = 16
    """evaluation episodes (greedy decoding, env seeds openvla_envs.VALIDATION_SEED + i: the seeds that pick
    checkpoints, disjoint from the demos' and from eval_generalization.py's)"""
    save_every: int = 0
    """optimizer steps between extra checkpoints, kept beside the final one as <output-dir>-step<N> (0 = none)"""
    norm_key: str = "sft_tabletop"
    """norm_stats key the demonstrations' action statistics are saved under (use it as --unnorm-key)"""


def fail(message: str) -> None:
    """A user-fixable problem: one line, exit code 2."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


# ---------------------------------------------------------------------------------------------------
# Demonstrations
# ---------------------------------------------------------------------------------------------------
def collect_demos(args: Args, keep_open: str | None) -> tuple[dict[str, np.ndarray], VecEnv | None]:
    """Run the scripted expert on every variant until `demos_per_task` episodes succeed.

    The envs of variant `keep_open` are returned open (evaluation reuses them: starting env workers
    takes ~20 s of CPU each with CPU rendering); all others are closed.

    Returns the arrays stored in the .npz: images (T, 224, 224, 3) uint8, actions (T, 7) float32,
    episode_index (T,) int32, and per episode: episode_starts (E + 1,) int64 boundaries (episode e is
    rows episode_starts[e]:episode_starts[e + 1]), instructions (E,) str, variants (E,) str, seeds (E,);
    with --state-aux-coef also states (T, D) float32, the simulator's state behind each image.
    """
    images, actions, instructions, variants, seeds, lengths = [], [], [], [], [], []
    record_states, states = args.state_aux_coef > 0, []
    kept_envs = None
    env_steps, start, startup = 0, time.time(), 0.0
    for v, variant in enumerate(args.variants):
        made = time.time()
        envs = make_envs(variant, args.num_envs, backend=args.env_backend, max_episode_steps=args.episode_steps,
                         state_obs=record_states)
        startup += time.time() - made  # starting env workers, reported apart from the stepping rate
        kept, attempts = 0, 0
        max_attempts = 4 * args.demos_per_task + args.num_envs  # the expert rarely fails: stop a hopeless setup
        bar = tqdm(total=args.demos_per_task, desc=f"demos {variant}", unit="demo")
        while kept < args.demos_per_task and attempts < max_attempts:
            round_seeds = [args.demo_seed + 100_000 * v + attempts + i for i in range(args.num_envs)]
            obs, round_instructions = envs.reset(round_seeds)
            frames, expert, round_states = [], [], []  # per step: (N, 224, 224, 3) uint8, (N, 7), (N, D) float32
            first_success = np.full(args.num_envs, -1)  # step count at the first success, -1 = not yet
            for t in range(args.episode_steps):
                # DART (Laskey et al. 2017): execute the noisy action, so the demos visit off-nominal states,
                # but store the clean expert action there as the label: noisy labels would teach the noise
                # (the clean call draws nothing from the expert's noise generators)
                labels = envs.expert_actions()  # (N, 7)
                step_actions = envs.expert_actions(args.expert_noise, args.expert_pause_prob,
                                                   args.expert_detour_prob)  # (N, 7); deviation 8's detours
                frames.append(obs.cpu().numpy())
                expert.append(labels.cpu().numpy().astype(np.float32))
                if record_states:
                    round_states.append(envs.states.cpu().numpy().copy())  # a copy: `states` is updated in place
                obs, _, _, infos = envs.step(step_actions)
                env_steps += args.num_envs
                success = infos["success"].cpu().numpy()
                first_success[(first_success < 0) & success] = t + 1
                if (first_success >= 0).all() and t + 1 >= first_success.max() + args.steps_after_success:
                    break  # every env has what we store: stop the round early
            frames_np, expert_np = np.stack(frames, 1), np.stack(expert, 1)  # (N, t, 224, 224, 3), (N, t, 7)
            states_np = np.stack(round_states, 1) if record_states else None  # (N, t, D)
            for i in np.flatnonzero(first_success >= 0)[: args.demos_per_task - kept]:
                length = min(first_success[i] + args.steps_after_success, len(frames))
                images.append(frames_np[i, :length])
                actions.append(expert_np[i, :length])
                if record_states:
                    states.append(states_np[i, :length])
                instructions.append(round_instructions[i])
                variants.append(variant)
                seeds.append(round_seeds[i])
                lengths.append(length)
                kept += 1
                bar.update(1)
            attempts += args.num_envs
        bar.close()
        if variant == keep_open:
            kept_envs = envs
        else:
            envs.close()
        print(f"[demos] {variant}: kept {kept} successful of {attempts} episodes")
    if not lengths:
        fail("the expert succeeded in no episode; raise --episode-steps (the expert needs ~20-35 steps)")
    total = time.time() - start
    print(f"[demos] {len(lengths)} demos, {sum(lengths)} steps kept in {total:.0f} s: {len(lengths) / total * 60:.1f} "
          f"demos/min with env start-up, {env_steps / (total - startup):.1f} env steps/s without")
    starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    demos = {
        "images": np.concatenate(images), "actions": np.concatenate(actions),
        "episode_index": np.repeat(np.arange(len(lengths)), lengths).astype(np.int32),
        "episode_starts": starts, "instructions": np.array(instructions), "variants": np.array(variants),
        "seeds": np.array(seeds, dtype=np.int64),
    }
    if record_states:
        demos["states"] = np.concatenate(states).astype(np.float32)
    return demos, kept_envs


def save_demos(demos: dict[str, np.ndarray], path: Path, compress: bool = True) -> None:
    """Write the .npz atomically (temp file + rename), compressed (the rendered scenes compress ~10x, at ~4 min
    for 1,200 demonstrations on one core) or raw (seconds; ~150 KB per step)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".npz", delete=False) as tmp:
        (np.savez_compressed if compress else np.savez)(tmp, **demos)
    os.replace(tmp.name, path)


def norm_stats_from(actions: np.ndarray) -> dict[str, dict[str, list]]:
    """The released `norm_stats[key]` format from (T, 7) actions; the gripper (dim 6) is left unnormalised."""
    return {"action": {
        "mean": actions.mean(0).tolist(), "std": actions.std(0).tolist(),
        "min": actions.min(0).tolist(), "max": actions.max(0).tolist(),
        "q01": np.quantile(actions, 0.01, axis=0).tolist(), "q99": np.quantile(actions, 0.99, axis=0).tolist(),
        "mask": [True] * 6 + [False],
    }}


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> uint8 (B, H, W, 3): per sample a random square crop of 90 % of the area,
    resized back, then brightness x [0.8, 1.2], contrast x [0.8, 1.2], saturation x [0.8, 1.2]."""
    b, h, w, _ = images.shape
    x = images.permute(0, 3, 1, 2).float() / 255  # (B, 3, H, W)
    side = round(h * 0.9**0.5)
    corners = torch.randint(0, h - side + 1, (b, 2), generator=generator).tolist()  # (B, 2) top, left
    crops = torch.stack([x[i, :, top : top + side, left : left + side] for i, (top, left) in enumerate(corners)])
    out = F.interpolate(crops, size=(h, w), mode="bilinear", align_corners=False)  # upsampling: no antialias needed
    factors = 0.8 + 0.4 * torch.rand(3, b, 1, 1, 1, generator=generator).to(x.device)  # (3, B, 1, 1, 1)
    out = out * factors[0]
    out = (out - out.mean((1, 2, 3), keepdim=True)) * factors[1] + out.mean((1, 2, 3), keepdim=True)
    gray = (out * out.new_tensor([0.299, 0.587, 0.114])[:, None, None]).sum(1, keepdim=True)  # (B, 1, H, W)
    out = (out - gray) * factors[2] + gray
    return (out.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)


@torch.inference_mode()
def evaluate(model, processor, envs, episodes: int, stats) -> dict[str, float]:
    """Greedy rollouts on env seeds VALIDATION_SEED + 0 .. episodes - 1 -> mean success_once / success_at_end."""
    once, at_end = [], []
    device = model.projector.fc1.weight.device
    for first in range(0, episodes, envs.num_envs):
        seed = openvla_envs.VALIDATION_SEED + first
        obs, instructions = envs.reset(list(range(seed, seed + envs.num_envs)))
        for _ in range(envs.max_episode_steps):
            input_ids, attention_mask, pixel_values = processor(obs.to(device), instructions)
            tokens = model.generate_actions(input_ids, attention_mask, pixel_values, greedy=True).tokens  # (N, 7)
            obs, _, _, infos = envs.step(tokens_to_actions(tokens, model.config, stats))
        once += infos["success_once"].tolist()
        at_end += infos["success_at_end"].tolist()
    return {"success_once": float(np.mean(once[:episodes])), "success_at_end": float(np.mean(at_end[:episodes]))}


class SFTModel(nn.Module):
    """The VLA and, with --state-aux-coef, the auxiliary state head (deviation 7): one module, so that DDP averages
    the gradients of both. The head is a training device only: the VLA (`.vla`) is what is evaluated and saved."""

    def __init__(self, vla: nn.Module, state_head: nn.Linear | None):
        super().__init__()
        self.vla, self.state_head = vla, state_head

    def forward(self, input_ids, attention_mask, pixel_values, targets) -> tuple[torch.Tensor, torch.Tensor | None]:
        """-> logits (B, 8, V) over the 7 action tokens + EOS, and the head's standardised state (B, D) or None."""
        patches = self.vla.embed_images(pixel_values)  # (B, 256, H): what the LM reads, and the head
        logits, _ = self.vla(input_ids, attention_mask, None, targets, patch_embeddings=patches)
        return logits, None if self.state_head is None else self.state_head(patches.flatten(1))


def save_checkpoint(model, processor, args: Args, output: Path) -> None:
    """A full checkpoint in the released format (LoRA merged) at `output`, written atomically.

    A 4-bit base cannot be merged into, so then the adapter goes through a temporary directory onto a
    fresh bf16 copy of the base, on the CPU.
    """
    output.parent.mkdir(parents=True, exist_ok=True)
    base = resolve_vla_path(args.vla_path)  # its remote-code files (openvla-7b's) go along
    if not args.load_in_4bit:
        save_pretrained(model, processor.tokenizer, output, remote_code_from=base)
        return
    with tempfile.TemporaryDirectory(dir=output.parent) as tmp:
        save_adapter(model, tmp, base_path=args.vla_path)
        merged, _ = load_vla(args.vla_path, device="cpu", dtype=torch.bfloat16, adapter_path=tmp,
                             trainable_adapter=False)
        merged.config.norm_stats = model.config.norm_stats
        save_pretrained(merged, processor.tokenizer, output, remote_code_from=base)


if __name__ == "__main__":
    args = tyro.cli(Args)

    # -----------------------------------------------------------------------------------------------
    # Setup: DDP from torchrun's env vars (gloo on the CPU, nccl on GPUs), seeding seed + rank
    # -----------------------------------------------------------------------------------------------
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        fail(f"unknown variant(s) {', '.join(unknown)}; valid: {', '.join(VARIANTS)}")
    if not 0 <= args.expert_detour_prob <= 1:
        fail(f"--expert-detour-prob {args.expert_detour_prob} must lie in [0, 1]")
    if args.demos_only:  # the demonstrations file only, always collected afresh (rank 0; no model is loaded)
        if args.demos_per_task <= 0:
            fail(f"--demos-only with --demos-per-task {args.demos_per_task}: nothing to collect")
        if int(os.environ.get("RANK", 0)) == 0:
            save_demos(collect_demos(args, keep_open=None)[0], Path(args.demos_path), args.compress_demos)
            print(f"[demos] wrote {args.demos_path}")
        sys.exit(0)
    if args.lora_rank < 0 or (args.load_in_4bit and args.lora_rank == 0):
        fail("--load-in-4bit needs --lora-rank > 0, and --lora-rank must be >= 0")
    if args.state_aux_coef < 0:
        fail(f"--state-aux-coef {args.state_aux_coef} must be >= 0")
    if args.lr_hold_steps and not (args.lr_schedule == "cosine" and 0 < args.lr_hold_steps < args.max_steps):
        fail(f"--lr-hold-steps {args.lr_hold_steps} needs --lr-schedule cosine and must lie in (0, --max-steps)")
    output = Path(args.output_dir)
    if output.exists() and any(output.iterdir()) and not (output / "config.json").exists():
        fail(f"--output-dir {output} exists and holds no checkpoint; saving would replace it: pick another")
    demos_path = Path(args.demos_path)
    if args.demos_per_task <= 0 and not (args.reuse_demos and demos_path.exists()):
        fail(f"no demonstrations file at {demos_path} and --demos-per-task {args.demos_per_task}: nothing to train on")
    rank, local_rank = int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    use_cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(device)  # before the NCCL group and DDP, which follow the current device
    if world_size > 1:
        if use_cuda:
            dist.init_process_group("cpu:gloo,cuda:nccl", device_id=device)  # barriers on gloo, gradients on NCCL
        else:
            dist.init_process_group("gloo")
    bf16 = args.precision == "bf16" or (args.precision == "auto" and use_cuda)
    random.seed(args.seed + rank)
    np.random.seed(args.seed + rank)
    torch.manual_seed(args.seed + rank)
    aug_generator = torch.Generator().manual_seed(args.seed + rank)

    # -----------------------------------------------------------------------------------------------
    # Logger
    # -----------------------------------------------------------------------------------------------
    run_name = f"{args.exp_name}__{args.seed}__{int(time.time())}"
    writer = None
    if rank == 0:
        writer = SummaryWriter(f"runs/{run_name}")
        writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + "\n".join(f"|{k}|{v}|" for k, v in vars(args).items()))

    # -----------------------------------------------------------------------------------------------
    # Demonstrations: rank 0 collects (or loads), the other ranks read the file it wrote
    # -----------------------------------------------------------------------------------------------
    eval_envs = None  # evaluation's `train` envs: kept from collection, or made at the first evaluation
    if rank == 0 and not (args.reuse_demos and demos_path.exists()):
        demos, eval_envs = collect_demos(args, keep_open="train" if args.eval_every >= 0 else None)
        save_demos(demos, demos_path, args.compress_demos)
    elif rank == 0:
        print(f"[demos] reusing {demos_path}")
    if world_size > 1:
        dist.barrier()
    with np.load(demos_path, allow_pickle=False) as npz:
        demos = {k: npz[k] for k in npz.files}
    demo_images = torch.from_numpy(demos["images"])  # (T, 224, 224, 3) uint8, on the CPU
    demo_actions = torch.from_numpy(demos["actions"])  # (T, 7) float32
    step_instructions = demos["instructions"][demos["episode_index"]].tolist()  # (T,) one per step
    num_samples = len(demo_actions)
    if args.state_aux_coef > 0:
        if "states" not in demos:
            fail(f"{demos_path} holds no simulator states (collected without --state-aux-coef): "
                 "collect again with --no-reuse-demos")
        demo_states = torch.from_numpy(demos["states"])  # (T, D) float32
        # standardised per dimension (deviation 7); a dimension that never changes (std 0) is a target of 0
        state_mean, state_std = demo_states.mean(0), demo_states.std(0).clamp_min(1e-6)
        demo_states = (demo_states - state_mean) / state_std
    if rank == 0:
        print(f"[demos] {len(demos['instructions'])} episodes, {num_samples} steps, variants "
              f"{sorted(set(demos['variants'].tolist()))}")
    norm_stats = norm_stats_from(demos["actions"])

    # -----------------------------------------------------------------------------------------------
    # Model and optimizer
    # -----------------------------------------------------------------------------------------------
    # Full fine-tuning keeps fp32 master weights (AdamW on bf16 weights loses small updates) and uses
    # autocast; a LoRA base is frozen, so it can sit in bf16 (or 4-bit) and only LoRA is fp32.
    load_dtype = torch.bfloat16 if bf16 and args.lora_rank > 0 else torch.float32
    lora = LoraSettings(rank=args.lora_rank, alpha=args.lora_alpha) if args.lora_rank > 0 else None
    try:
        model, processor = load_vla(args.vla_path, device=device, dtype=load_dtype, load_in_4bit=args.load_in_4bit,
                                    lora=lora, gradient_checkpointing=args.gradient_checkpointing)
    except OpenVLAError as err:
        fail(str(err))
    model.config.norm_stats[args.norm_key] = norm_stats  # saved with the checkpoint; eval decodes with it
    stats = action_stats(model.config, args.norm_key)
    action_tokens = actions_to_tokens(demo_actions, model.config, stats)  # (T, 7) labels
    eos = torch.full((num_samples, 1), processor.tokenizer.eos_token_id)
    targets_all = torch.cat([action_tokens, eos], 1)  # (T, 8): 7 action tokens + EOS, the released labels
    first_action_id = model.config.action_token_ids.start
    # Full fine-tuning: each vision tower's last block and final norm never receive a gradient (OpenVLA
    # reads the second-to-last block), so DDP must be told that some parameters go unused.
    state_head = None
    if args.state_aux_coef > 0:  # deviation 7: flattened patch embeddings (256 * H) -> the state (D), linearly
        num_patches = model.vision_backbone.featurizer.patch_embed.num_patches  # 256: (224 / 14)^2
        state_head = nn.Linear(num_patches * model.config.llama_config().hidden_size, demo_states.shape[1]).to(device)
    trained = SFTModel(model, state_head)
    ddp_model = DDP(trained, find_unused_parameters=lora is None) if world_size > 1 else trained
    optimizer = torch.optim.AdamW([p for p in trained.parameters() if p.requires_grad], lr=args.learning_rate,
                                  weight_decay=args.weight_decay)
    def cosine(step: int) -> float:  # the factor on the peak rate after `step` optimizer steps (deviation 5)
        decayed = max(0, step - args.lr_hold_steps) / (args.max_steps - args.lr_hold_steps)
        return 0.5 * (1 + math.cos(math.pi * decayed))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine) if args.lr_schedule == "cosine" else None
    if rank == 0:
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        print(f"[model] {args.vla_path}: {trainable / 1e6:.2f} M trainable parameters "
              f"({'LoRA r' + str(args.lora_rank) if lora else 'full fine-tuning'}), {'bf16' if bf16 else 'fp32'}"
              + (f"; state head {sum(p.numel() for p in state_head.parameters()) / 1e6:.2f} M (not saved), "
                 f"D = {demo_states.shape[1]}, weight {args.state_aux_coef}" if state_head else ""))

    # -----------------------------------------------------------------------------------------------
    # Loop
    # -----------------------------------------------------------------------------------------------
    global_batch = args.batch_size * world_size
    permutation, cursor, epoch = torch.empty(0, dtype=torch.long), 0, 0
    train_time, window = 0.0, []  # seconds spent in training steps (evaluation and saving excluded)
    metrics, entropy_xyz = torch.full((4 + ACTION_DIM,), float("nan")), float("nan")  # the last logged window
    bar = tqdm(range(1, args.max_steps + 1), desc="sft", disable=rank != 0)
    for global_step in bar:
        step_start = time.time()
        # One permutation per epoch, identical on every rank (same seed); rank r takes its slice of the
        # global batch, so ranks never duplicate samples within an epoch.
        if cursor + global_batch > len(permutation):
            permutation = torch.randperm(num_samples, generator=torch.Generator().manual_seed(args.seed + epoch))
            permutation = permutation.repeat(-(-global_batch // num_samples))  # tiny demo sets: > 1 pass
            cursor, epoch = 0, epoch + 1
        mb_inds = permutation[cursor + rank * args.batch_size : cursor + (rank + 1) * args.batch_size]
        cursor += global_batch
        images = demo_images[mb_inds].to(device)  # (B, 224, 224, 3) uint8; augmented on the GPU when there is one
        if args.image_aug:
            images = augment(images, aug_generator)
        input_ids, attention_mask, pixel_values = processor(images, [step_instructions[i] for i in mb_inds])
        targets = targets_all[mb_inds].to(device)  # (B, 8)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16 and lora is None):
            logits, state_pred = ddp_model(input_ids, attention_mask, pixel_values, targets)  # (B, 8, V), (B, D)
        loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
        # deviation 7: mean squared error of the standardised state (1 = no better than its mean); NaN when off
        state_loss = (F.mse_loss(state_pred.float(), demo_states[mb_inds].to(device)) if state_head is not None
                      else torch.tensor(float("nan"), device=device))
        total = loss + args.state_aux_coef * state_loss if state_head is not None else loss
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(trained.parameters(), args.max_grad_norm)
        optimizer.step()
        if schedule is not None:
            schedule.step()

        with torch.no_grad():
            # Accuracy as OpenVLA reports it: argmax among the 256 action tokens at the 7 action positions.
            action_logits = logits[:, :ACTION_DIM, first_action_id : first_action_id + 256].float()  # (B, 7, 256)
            predicted = action_logits.argmax(-1) + first_action_id
            accuracy = (predicted == targets[:, :ACTION_DIM]).float().mean()
            l1 = (tokens_to_actions(predicted, model.config, stats).float() - demo_actions[mb_inds].to(device)).abs().mean()
            # How sharp the policy is: the entropy of each token's distribution over the 256 bins (what the
            # RL scripts sample from), in nats.
            entropy = torch.distributions.Categorical(logits=action_logits).entropy().mean(0)  # (7,)
        window.append(torch.cat([torch.stack([loss.detach(), accuracy, l1]), entropy, state_loss.detach()[None]]))
        train_time += time.time() - step_start
        if global_step % args.log_every == 0 or global_step == args.max_steps:
            metrics = torch.stack(window).mean(0)  # (3 + 7 + 1,): loss, accuracy, L1, 7 entropies, state loss
            if world_size > 1:
                dist.all_reduce(metrics)
                metrics /= world_size
            window = []
            entropy_xyz = metrics[3:6].mean().item()  # the translation tokens, the ones that move the arm
            if rank == 0:
                sps = global_step * global_batch / train_time
                writer.add_scalar("losses/train_loss", metrics[0].item(), global_step)
                writer.add_scalar("charts/action_accuracy", metrics[1].item(), global_step)
                writer.add_scalar("charts/action_l1", metrics[2].item(), global_step)
                for name, e in zip(ACTION_DIM_NAMES, metrics[3:10].tolist(), strict=True):
                    writer.add_scalar(f"charts/entropy_{name}", e, global_step)
                writer.add_scalar("charts/learning_rate", optimizer.param_groups[0]["lr"], global_step)
                writer.add_scalar("charts/SPS", sps, global_step)
                if state_head is not None:
                    writer.add_scalar("losses/state_aux_loss", metrics[10].item(), global_step)
                bar.set_postfix(loss=f"{metrics[0]:.3f}", acc=f"{metrics[1]:.2f}", l1=f"{metrics[2]:.3f}",
                                ent_xyz=f"{entropy_xyz:.2f}", sps=f"{sps:.1f}",
                                **({"state": f"{metrics[10]:.3f}"} if state_head is not None else {}))

        # -------------------------------------------------------------------------------------------
        # Eval and save (rank 0; the others wait at the barrier)
        # -------------------------------------------------------------------------------------------
        last = global_step == args.max_steps
        if rank == 0 and args.eval_every >= 0 and (last or (args.eval_every and global_step % args.eval_every == 0)):
            if eval_envs is None:
                eval_envs = make_envs("train", args.num_envs, device=device, backend=args.env_backend,
                                      max_episode_steps=args.episode_steps)
            model.eval()
            result = evaluate(model, processor, eval_envs, args.eval_episodes, stats)
            model.train()
            writer.add_scalar("eval/train/success_once", result["success_once"], global_step)
            writer.add_scalar("eval/train/success_at_end", result["success_at_end"], global_step)
            tqdm.write(f"[eval] step {global_step}: success_once {result['success_once']:.3f}, "
                       f"success_at_end {result['success_at_end']:.3f} over {args.eval_episodes} episodes; "
                       f"train loss {metrics[0]:.3f}, entropy per x/y/z token {entropy_xyz:.2f} nats"
                       + (f", state loss {metrics[10]:.3f}" if state_head is not None else ""))
        if rank == 0 and (last or (args.save_every and global_step % args.save_every == 0)):
            saved = output if last else Path(f"{args.output_dir}-step{global_step:06d}")
            save_checkpoint(model, processor, args, saved)
            tqdm.write(f"[save] step {global_step}: {saved} (--unnorm-key {args.norm_key})")
        if world_size > 1:
            dist.barrier()

    # -----------------------------------------------------------------------------------------------
    # Done
    # -----------------------------------------------------------------------------------------------
    if rank == 0:
        print(f"[done] {args.max_steps * global_batch / train_time:.1f} samples/s (all ranks); evaluate with: "
              f"python eval_generalization.py --checkpoints {args.output_dir} --unnorm-key {args.norm_key}")
        writer.close()
    if eval_envs is not None:
        eval_envs.close()
    if world_size > 1:
        dist.destroy_process_group()
