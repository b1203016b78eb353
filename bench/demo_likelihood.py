"""How far has each policy moved from the demonstrations, per task variant? For every checkpoint, the negative
log-likelihood of the scripted expert's action tokens on a demonstrations .npz (sft_openvla.py's), under the
policy's own distribution over the 256 action columns at temperature 1: what PPO-ptx's term (ppo_openvla.py
deviation 8) measures, split by the variant each demonstration belongs to and by action dimension, with the
entropy of the policy there. A checkpoint whose NLL on `unseen_target`'s demonstrations rises while `train`'s
stays put has lost the plate instruction's behaviour (the two share one scene); one whose NLL rises on `train`'s
too has left the expert's actions on the very task RL rewards. And how much the instruction steers the policy: at each
demonstration step, the KL from the policy under the step's own instruction to the policy under each other
instruction in the file (the same image, the expert's token prefix), summed over the 7 tokens: a policy that
ignores the instruction has ~0 there (also split by phase, below). Each variant's NLL is also split by the expert's phase: `reach` (the steps
before its gripper first closes: approach and grasp) and `carry` (from then on: transport to the receptacle and
release), which tells a policy that left the expert's grasping from one that left its choice of receptacle.

    python sft_openvla.py --demos-only --variants train red_cube unseen_target --demos-per-task 24 \\
        --demo-seed 1000000 --expert-noise 0.1 --demos-path demos.npz
    python bench/demo_likelihood.py --demos demos.npz --checkpoints runs/learning/prior runs/learning/ppo/<run> \\
        --out bench/results/demo_likelihood.json
"""

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import tyro
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import openvla_patch as ovp  # noqa: E402
from eval_generalization import load_checkpoint, resolve_checkpoint  # noqa: E402
from ppo_openvla import ACTION_DIM_NAMES, load_ptx_demos  # noqa: E402  (the script's own reader)


@dataclass
class Args:
    demos: str
    """a demonstrations .npz written by sft_openvla.py"""
    checkpoints: list[str]
    """base checkpoints or RL checkpoints / run directories (as eval_generalization.py's --checkpoints)"""
    unnorm_key: str = "sft_tabletop"
    """norm_stats key that bins the expert's actions (the key the prior's SFT wrote)"""
    labels: list[str] | None = None
    """one label per checkpoint (default: the path)"""
    batch_size: int = 64
    """demonstration steps per forward pass"""
    out: str | None = None
    """write the numbers as JSON here (the table is printed either way)"""


@torch.inference_mode()
def action_log_probs(model, processor, demos: dict, rows: slice, instruction_ids=None, dtype=torch.float32):
    """The policy's log-probs over the 256 action columns (T = 1) at each of the 7 action positions, teacher-forced on
    the expert's tokens, for demonstration steps `rows` -> (b, 7, 256). `instruction_ids`: (input_ids, attention_mask)
    of one other instruction, for every row, instead of the rows' own."""
    device = next(model.parameters()).device
    ids, mask = instruction_ids or (demos["input_ids"][rows], demos["attention_mask"][rows])
    n = len(demos["actions"][rows])
    logits, _ = model(ids.expand(n, -1).to(device), mask.expand(n, -1).to(device),
                      processor.process_images(demos["images"][rows].to(device), dtype), demos["actions"][rows].to(device))
    return torch.log_softmax(logits[..., model.config.action_token_ids.start : model.config.action_token_ids.stop].float(),
                             -1).cpu()


def measure(model, processor, demos: dict, instructions: list[str], batch_size: int, dtype) -> dict[str, torch.Tensor]:
    """Per demonstration step: NLL and entropy per action dimension (D, 7), and the KL from the policy under the
    step's own instruction to the policy under each instruction of `instructions` (D, len(instructions)), summed over
    the 7 tokens (nats; 0 for its own instruction)."""
    swaps = [tuple(t[:1] for t in processor.tokenize([text])) for text in instructions]  # (1, L) each
    nll, entropy, kl = [], [], []
    for i in range(0, len(demos["actions"]), batch_size):
        rows = slice(i, i + batch_size)
        own = action_log_probs(model, processor, demos, rows, dtype=dtype)  # (b, 7, 256)
        nll.append(-own.gather(-1, (demos["actions"][rows] - model.config.action_token_ids.start).unsqueeze(-1))[..., 0])
        entropy.append(-(own.exp() * own).sum(-1))
        kl.append(torch.stack([(own.exp() * (own - action_log_probs(model, processor, demos, rows, swap, dtype))).sum((-1, -2))
                               for swap in swaps], -1))
    return {"nll": torch.cat(nll), "entropy": torch.cat(entropy), "kl": torch.cat(kl)}


def carry_phase(episode_index: np.ndarray, gripper: np.ndarray) -> np.ndarray:
    """(D,) True from the first step of its episode at which the expert closes the gripper (-1 on the built-in
    tasks, 1 = open) to the episode's end, False before it."""
    closed = gripper < 0
    carry = np.zeros(len(gripper), dtype=bool)
    for episode in np.unique(episode_index):
        steps = np.flatnonzero(episode_index == episode)
        first = steps[closed[steps]]
        if len(first):
            carry[steps[steps >= first[0]]] = True
    return carry


def main(args: Args) -> None:
    if args.labels is not None and len(args.labels) != len(args.checkpoints):
        raise SystemExit(f"error: {len(args.labels)} --labels for {len(args.checkpoints)} --checkpoints")
    if not Path(args.demos).is_file():
        raise SystemExit(f"error: no demonstrations file {args.demos} (sft_openvla.py --demos-only writes one)")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    with np.load(args.demos, allow_pickle=False) as npz:
        step_variants = npz["variants"][npz["episode_index"]]  # (D,) the variant of each step's episode
        step_instructions = npz["instructions"][npz["episode_index"]]
        carry = carry_phase(npz["episode_index"], npz["actions"][:, 6])  # (D,) bool
    instructions = sorted(set(step_instructions.tolist()))
    results = {}
    for c, name in enumerate(tqdm(args.checkpoints, desc="checkpoints")):
        ckpt = resolve_checkpoint(name, args.unnorm_key, args.unnorm_key)
        model, processor, stats = load_checkpoint(ckpt, device, dtype, load_in_4bit=False)
        demos = load_ptx_demos(args.demos, processor, model.config, stats)
        m = measure(model, processor, demos, instructions, args.batch_size, dtype)
        label = args.labels[c] if args.labels else name
        results[label] = {}
        for variant in sorted(set(step_variants.tolist())):
            rows = torch.from_numpy(step_variants == variant)
            own = set(step_instructions[rows.numpy()].tolist())
            results[label][variant] = {
                "steps": int(rows.sum()),
                "nll_per_action": m["nll"][rows].sum(-1).mean().item(),  # nats per 7-token action
                "nll_per_action_by_phase": {  # reach: before the expert's first grasp; carry: from it on
                    phase: m["nll"][rows & mask].sum(-1).mean().item()
                    for phase, mask in (("reach", ~torch.from_numpy(carry)), ("carry", torch.from_numpy(carry)))
                    if (rows & mask).any()},
                "nll_per_dim": dict(zip(ACTION_DIM_NAMES, m["nll"][rows].mean(0).tolist(), strict=True)),
                "entropy_per_dim": dict(zip(ACTION_DIM_NAMES, m["entropy"][rows].mean(0).tolist(), strict=True)),
                # how much the instruction steers the action: KL(own instruction || another), nats per action
                "kl_to_instruction": {text: m["kl"][rows, j].mean().item() for j, text in enumerate(instructions)
                                      if text not in own},
                # the same by phase: the receptacle is chosen in `carry`; a policy that reads it off the scene
                # (say, the nearer receptacle) rather than the instruction has little pull there
                "kl_to_instruction_by_phase": {
                    phase: {text: m["kl"][rows & mask, j].mean().item() for j, text in enumerate(instructions)
                            if text not in own}
                    for phase, mask in (("reach", ~torch.from_numpy(carry)), ("carry", torch.from_numpy(carry)))
                    if (rows & mask).any()},
            }
        del model
    variants = sorted({v for r in results.values() for v in r})
    print("NLL of the expert's actions, nats per 7-token action (x-token NLL / x-token entropy); then the KL from the "
          "policy under the step's instruction to it under the other instructions (mean, nats per action)")
    print("| checkpoint | " + " | ".join(variants) + " | " + " | ".join(f"KL {v}" for v in variants) + " |\n|---|"
          + "---|" * 2 * len(variants))
    for label, r in results.items():
        print(f"| {label} | " + " | ".join(f"{r[v]['nll_per_action']:.2f} ({r[v]['nll_per_dim']['x']:.2f} / "
                                           f"{r[v]['entropy_per_dim']['x']:.2f})" for v in variants) + " | "
              + " | ".join(f"{np.mean(list(r[v]['kl_to_instruction'].values()) or [0]):.2f}" for v in variants) + " |")
    print("\nThe instruction's pull by the expert's phase, reach / carry (mean KL over the other instructions)")
    print("| checkpoint | " + " | ".join(variants) + " |\n|---|" + "---|" * len(variants))
    for label, r in results.items():
        print(f"| {label} | " + " | ".join(" / ".join(
            f"{np.mean(list(r[v]['kl_to_instruction_by_phase'].get(p, {}).values()) or [float('nan')]):.2f}"
            for p in ("reach", "carry")) for v in variants) + " |")
    print("\nNLL per action by the expert's phase, reach / carry")
    print("| checkpoint | " + " | ".join(variants) + " |\n|---|" + "---|" * len(variants))
    for label, r in results.items():
        print(f"| {label} | " + " | ".join(" / ".join(f"{r[v]['nll_per_action_by_phase'].get(p, float('nan')):.2f}"
                                                      for p in ("reach", "carry")) for v in variants) + " |")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"demos": args.demos, "unnorm_key": args.unnorm_key,
                                              "checkpoints": dict(zip(results, args.checkpoints, strict=True)),
                                              "results": results}, indent=1))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    try:
        main(tyro.cli(Args))
    except ovp.OpenVLAError as err:
        raise SystemExit(f"error: {err}") from None
