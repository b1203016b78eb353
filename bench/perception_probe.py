"""What a checkpoint's image features tell of where the cube is from the gripper: a linear probe.

    python bench/perception_probe.py --checkpoints runs/learning/prior runs/learning/small-random \
        --episodes 48 --out bench/results/perception_probe.json

Why. The small prior of BENCHMARKS.md section 4 fails `train` mostly by grasping, and no RL arm has changed that.
One explanation is left: its vision towers, trained from scratch by SFT on 1,200 demonstrations, do not resolve the
cube's position relative to the gripper finely enough to grasp, and nothing the language model learns can recover
what its input lacks. This measures how precisely that geometry can be read, linearly, from the patch embeddings
the language model sees.

Method. Episodes of the scripted expert with noise 0.1 (as the SFT demonstrations; reset seeds from the rollout
band, so no layout SFT saw) on `--num-envs` CPU workers that also return the simulator's state
(`openvla_envs.state_vector`); every `--stride`-th frame is kept: its image, and as targets the cube's position
minus the gripper's (`tcp_to_obj_pos`, what a grasp must close to zero) and the cube's position on the table.
For each checkpoint: the frames' patch embeddings (`embed_images`: towers and projector, (256, H) per image),
flattened and centred, and ridge regression onto the targets, fitted on the frames of 3 of 4 folds of episodes and
tested on the 4th (each fold once; the ridge penalty picked per fold on a quarter of its training episodes). Reported
per target axis: the held-out RMSE in cm, and the RMSE of predicting the training mean (the spread to explain).
Frames from one episode stay in one fold, so nothing is tested on a scene it was fitted on.

Reading it: the cube is 4 cm wide and the open fingers 8 cm apart, so a grasp tolerates ~2 cm of error in x and y.
Features whose probe errs by more than that cannot tell the policy where to close; a random, untrained checkpoint of
the same size is the control for what any patch grid gives by position alone. A linear probe is a lower bound on
what the features hold (the LM is not linear), but it is the part that is cheap to read.
"""

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import tyro
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import openvla_envs  # noqa: E402
import openvla_patch as ovp  # noqa: E402

CKPT_INFO = "openvla_rl.json"  # an RL checkpoint: its base model plus its adapter (and --train-vision's towers)
TARGETS = ("cube_minus_gripper_x", "cube_minus_gripper_y", "cube_minus_gripper_z", "cube_x", "cube_y")
# where they sit in the built-in tasks' state vector
TCP_TO_OBJ = openvla_envs.BUILTIN_STATE_LAYOUT["tcp_to_obj_pos"]
OBJ_XY = slice(openvla_envs.BUILTIN_STATE_LAYOUT["obj_pose"].start, openvla_envs.BUILTIN_STATE_LAYOUT["obj_pose"].start + 2)
PENALTIES = tuple(10.0**k for k in range(-4, 5))  # ridge penalties tried, times the mean diagonal of the Gram matrix


@dataclass
class Args:
    checkpoints: list[str]
    """model directories (a VLA checkpoint, or an RL checkpoint: its base with its adapter and towers) to probe"""
    env_id: str = "train"
    """the built-in variant whose frames are probed"""
    episodes: int = 48
    """expert episodes (the frames of each stay in one fold)"""
    num_envs: int = 8
    """parallel CPU worker envs"""
    num_steps: int = 80
    """steps per episode"""
    stride: int = 4
    """keep every stride-th frame of an episode"""
    expert_noise: float = 0.1
    """std of the expert's action noise (the SFT demonstrations': 0.1)"""
    seed: int = 0
    """seed of the reset seeds and of the folds"""
    out: str = ""
    """write the results as JSON here (empty: print only)"""


def collect_frames(args: Args) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> images (F, 224, 224, 3) uint8, targets (F, 5) in m (see TARGETS), episode index (F,)."""
    envs = openvla_envs.make_envs(args.env_id, args.num_envs, backend="cpu", max_episode_steps=args.num_steps,
                                  state_obs=True)
    rng = np.random.default_rng(args.seed)
    images, targets, episode = [], [], []
    try:
        for first in tqdm(range(0, args.episodes, args.num_envs), desc="expert episodes", unit="round"):
            obs, _ = envs.reset(rng.integers(*openvla_envs.ROLLOUT_SEEDS, size=args.num_envs).tolist())
            for t in range(args.num_steps):
                if t % args.stride == 0:
                    images.append(obs.cpu())
                    targets.append(torch.cat([envs.states[:, TCP_TO_OBJ], envs.states[:, OBJ_XY]], 1).cpu())
                    episode.append(torch.arange(first, first + args.num_envs))
                obs, _, _, _ = envs.step(envs.expert_actions(noise=args.expert_noise))
    finally:
        envs.close()
    return torch.cat(images), torch.cat(targets), torch.cat(episode)


def load(path: str) -> tuple[ovp.OpenVLAForActionPrediction, ovp.OpenVLAProcessor]:
    """A VLA checkpoint, or an RL checkpoint on its base (adapter and, with --train-vision, towers), fp32, eval."""
    p = Path(path)
    base, adapter = (json.loads((p / CKPT_INFO).read_text())["vla_path"], p) if (p / CKPT_INFO).exists() else (path, None)
    model, processor = ovp.load_vla(base, dtype=torch.float32, adapter_path=adapter)
    return model.eval(), processor


def features(model, processor, images: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """(F, 224, 224, 3) uint8 -> (F, 256 * H) float64: the flattened patch embeddings the LM reads."""
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            out.append(model.embed_images(processor.process_images(images[i : i + batch])).flatten(1).double())
    return torch.cat(out)


def ridge_predict(gram_train: torch.Tensor, gram_test_train: torch.Tensor, y: torch.Tensor, penalty: float) -> torch.Tensor:
    """Kernel (dual) ridge on centred features: gram_train (n, n) = X X^T, gram_test_train (m, n), y (n, k)
    -> predictions (m, k). The targets are centred on the training mean and it is added back."""
    n = len(y)
    mean = y.mean(0)
    alpha = torch.linalg.solve(gram_train + penalty * torch.eye(n, dtype=gram_train.dtype), y - mean)
    return gram_test_train @ alpha + mean


def probe(x: torch.Tensor, y: torch.Tensor, episode: torch.Tensor, folds: int, seed: int) -> dict:
    """x (F, P) features, y (F, k) targets, episode (F,) -> per target: held-out RMSE and the mean-prediction RMSE
    (both in the targets' units), over `folds` folds of episodes; the penalty picked per fold on an inner split."""
    gen = torch.Generator().manual_seed(seed)
    episodes = episode.unique()
    fold_of = dict(zip(episodes.tolist(), (torch.randperm(len(episodes), generator=gen) % folds).tolist(), strict=True))
    fold = torch.tensor([fold_of[e] for e in episode.tolist()])
    errors, spread = torch.zeros_like(y), torch.zeros_like(y)
    for k in range(folds):
        train, test = fold != k, fold == k
        inner = train & (fold == (k + 1) % folds)  # a quarter of the training episodes picks the penalty
        fit = train & ~inner
        centre = x[fit].mean(0)
        xf, xi = x[fit] - centre, x[inner] - centre
        gram = xf @ xf.T
        scale = gram.diagonal().mean().item()
        best = min(PENALTIES, key=lambda lam: ((ridge_predict(gram, xi @ xf.T, y[fit], lam * scale) - y[inner]) ** 2).sum())
        centre = x[train].mean(0)
        xt, xs = x[train] - centre, x[test] - centre
        gram = xt @ xt.T
        errors[test] = ridge_predict(gram, xs @ xt.T, y[train], best * gram.diagonal().mean().item()) - y[test]
        spread[test] = y[train].mean(0) - y[test]
    rmse = lambda e: e.pow(2).mean(0).sqrt().tolist()  # noqa: E731
    return {"rmse": rmse(errors), "rmse_of_the_mean": rmse(spread)}


def main(args: Args) -> None:
    if args.episodes % args.num_envs or args.episodes < 8:
        raise SystemExit(f"error: --episodes ({args.episodes}) must be a multiple of --num-envs and at least 8")
    if args.env_id not in openvla_envs.VARIANTS:
        raise SystemExit(f"error: --env-id {args.env_id}: the probe reads the built-in tasks' state layout; use one of "
                         f"{', '.join(openvla_envs.VARIANTS)}")
    for path in args.checkpoints:
        if not Path(path).is_dir():
            raise SystemExit(f"error: {path}: not a model directory")
    images, targets, episode = collect_frames(args)
    results = {"args": asdict(args), "frames": len(images), "targets": list(TARGETS), "units": "cm", "checkpoints": {}}
    for path in args.checkpoints:
        model, processor = load(path)
        x = features(model, processor, images)
        out = probe(x, targets.double() * 100, episode, folds=4, seed=args.seed)  # in cm
        results["checkpoints"][path] = out
        print(f"{path}: held-out RMSE (cm) " + ", ".join(f"{t} {e:.2f} (mean {m:.2f})" for t, e, m in
                                                       zip(TARGETS, out["rmse"], out["rmse_of_the_mean"], strict=True)))
    text = json.dumps(results, indent=1)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    else:
        print(text)


if __name__ == "__main__":
    main(tyro.cli(Args))
