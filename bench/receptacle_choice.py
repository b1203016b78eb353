"""Does a policy read the instruction, or carry the cube to the receptacle nearest to it? eval_generalization.py
result directories -> per evaluation cell and checkpoint, the episodes, success_once and wrong_receptacle_at_end,
split by whether the instructed receptacle was the one nearer to the cube's start ("target nearer") or not
("target farther").

Why: a wrong-receptacle count says that a policy went to the receptacle the instruction did not name, not why.
A policy that follows the instruction goes wrong equally often in both groups; one that ignores it and takes the
nearest receptacle is almost never wrong when the target is nearer and mostly wrong when it is farther (and its
success splits the other way). On `unseen_target` the two explanations that a wrong-receptacle count cannot
separate, "goes to the towel it was trained on" and "goes to whatever is nearer", predict different splits.

    python bench/receptacle_choice.py --evals runs/learning/eval_key runs/learning/eval_sib \
        --out bench/results/receptacle_choice.json --markdown

Layouts. The per-episode records (eval_generalization.py's `runs/<checkpoint slug>/<variant>.json`, read with
bench/failure_modes.py's reader) hold no positions, so each episode's initial layout is recreated: episode i of
an evaluation ran from env seed `settings.seed + i` (eval_generalization.py's run_cell resets its envs with
`args.seed + first + j` for env j of the round starting at episode `first`; the default seed is
openvla_envs.TEST_SEED = 10^7), the same for every checkpoint. The env of the variant is built as
openvla_envs.make_envs builds a CPU worker's (`OpenVLATabletop-v1` with the variant's kwargs, physx_cpu, one env,
obs_mode rgb, pd_ee_delta_pose, reward_mode none) and reset with that seed; no step is taken. The cube is the
instructed object (`env.cube`, whose pose the env reports as obj_pose), the receptacles are `env.receptacles`
(the instructed one is `env.target_actor`, whose top the env reports as goal_pos: both are checked against the
env's observation). "Target nearer": the instructed receptacle's centre is the nearest of all receptacles' centres
to the cube's start centre (xy distance; on the three-receptacle variants, nearer than both others). A layout
depends on the variant and the seed only, so it is computed once per (variant, seed) for all checkpoints and
temperatures. `train` and `unseen_target` share their layouts seed for seed (only the instructed receptacle
differs), so an episode that is "target nearer" on one is "target farther" on the other. The groups are not
even: the layout keeps the cube 2 cm beyond each receptacle's footprint, and the towel's (10.6 cm) is larger than
the plate's (7 cm), so the towel is the nearer in 52 of the first 200 test seeds (a nearest-receptacle policy
would solve ~26 % of `train` and ~74 % of `unseen_target`). `cube_moved` counts the cube's start position,
before it jumps at step 10.

Back-end: these are the CPU back-end's layouts (eval_generalization.py --env-backend cpu, or auto without
SAPIEN's PhysX GPU library, the case on our machines). On the GPU back-end ManiSkill's TableSceneBuilder draws
the robot's initial-joint noise of all N envs from env 0's episode RNG (ManiSkill 3.0.1, without enhanced
determinism), so there a layout depends on the env's place in the batch as well: results.json does not record
the back-end, and this script cannot recreate those.

Cells and labels follow bench/failure_modes.py (and bench/learning_table.py): a cell is a variant, `@T<T>` for
an evaluation with sampled actions; a checkpoint is `prior` when it is the first of its evaluation, else its
algorithm directory or its name, or as given with --labels PATH=LABEL.

Writes `--out` as {"note", "cells": {cell: {label: {"target_nearer": {"episodes", "success_once",
"wrong_receptacle_at_end"}, "target_farther": {...}}}}}; with --markdown, also prints a table (a row per cell and
checkpoint, "n / success / wrong" for each group).
"""

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import gymnasium as gym
import numpy as np
import tyro
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from failure_modes import episodes_of  # noqa: E402
from learning_table import checkpoint_labels, parse_labels, read_results, sampled_suffix  # noqa: E402

import openvla_envs  # noqa: E402

GROUPS = ("target_nearer", "target_farther")
COUNTS = ("episodes", "success_once", "wrong_receptacle_at_end")


@dataclass
class Args:
    evals: list[str]
    """eval_generalization.py output directories (each holds results.json and runs/); their first checkpoint is
    labelled `prior`"""
    out: str = "bench/results/receptacle_choice.json"
    """the JSON to write"""
    labels: list[str] = field(default_factory=list)
    """PATH=LABEL: name a checkpoint yourself (as in bench/failure_modes.py: e.g. an RL checkpoint evaluated alone
    in its own directory, which would otherwise be its evaluation's `prior`)"""
    markdown: bool = False
    """also print the Markdown table to stdout"""


def builtin_variant(variant: str) -> str:
    """A variant of an evaluation -> itself; exits with one line where it is not a built-in task's variant (the
    Bridge and RL4VLA tasks have other scenes, and no wrong-receptacle records)."""
    if openvla_envs.ALIASES.get(variant, variant) not in openvla_envs.VARIANTS and variant != openvla_envs.TABLETOP_ENV_ID:
        sys.exit(f"error: {variant!r} is not a variant of the built-in task {openvla_envs.TABLETOP_ENV_ID} "
                 f"(one of {', '.join(openvla_envs.VARIANTS)}): receptacle layouts exist only there; leave that "
                 f"evaluation out")
    return variant


def make_layout_env(variant: str) -> gym.Env:
    """The variant's env as openvla_envs.make_envs builds one CPU worker's (eval_generalization.py's defaults:
    sparse reward -> reward_mode none), rendering on the CPU."""
    env_id, kwargs, _ = openvla_envs.resolve(variant)
    return gym.make(env_id, num_envs=1, sim_backend="physx_cpu", obs_mode="rgb", control_mode="pd_ee_delta_pose",
                    reward_mode="none", render_backend="cpu", **kwargs)


def target_is_nearest(cube_xy: np.ndarray, receptacles_xy: np.ndarray, target: int) -> bool:
    """True when receptacle `target`'s centre is nearer (xy) to the cube's than every other receptacle's."""
    distances = np.linalg.norm(receptacles_xy - cube_xy, axis=1)
    return bool(all(distances[target] < d for i, d in enumerate(distances) if i != target))


def layout(env: gym.Env, seed: int) -> dict:
    """Reset `env` with `seed` -> the initial layout: the cube's and the receptacles' centres (xy), their kinds,
    the instructed receptacle's index and whether it is the nearest to the cube."""
    obs, _ = env.reset(seed=seed)
    task = env.unwrapped
    cube = task.cube.pose.p[0].numpy()
    receptacles = np.stack([r.pose.p[0, :2].numpy() for r in task.receptacles])
    target = next(i for i, r in enumerate(task.receptacles) if r is task.target_actor)
    # what the env reports (its state observation): the instructed object and receptacle are the ones read here
    if not (np.allclose(obs["extra"]["obj_pose"][0, :3].numpy(), cube)
            and np.allclose(obs["extra"]["goal_pos"][0, :2].numpy(), receptacles[target])):
        raise RuntimeError(f"seed {seed}: the env's obj_pose / goal_pos disagree with its cube / target receptacle")
    return {"cube": cube[:2].tolist(), "receptacles": receptacles.tolist(), "kinds": list(task.receptacle_kinds),
            "target": target, "target_nearer": target_is_nearest(cube[:2], receptacles, target)}


def layouts(needed: dict[str, set[int]]) -> dict[tuple[str, int], dict]:
    """{variant: seeds} -> {(variant, seed): layout}, one env per variant (the next one is made before the last one
    closes: SAPIEN keeps its renderer up while an env lives)."""
    out, env = {}, None
    bar = tqdm(total=sum(map(len, needed.values())), desc="layouts", unit="layout")
    for variant, seeds in needed.items():
        env, previous = make_layout_env(variant), env
        if previous is not None:
            previous.close()
        bar.set_description(f"layouts {variant}")
        for seed in sorted(seeds):
            out[variant, seed] = layout(env, seed)
            bar.update(1)
    bar.close()
    if env is not None:
        env.close()
    return out


def count(episodes: dict[str, list[bool]], nearer: list[bool]) -> dict[str, dict[str, int]]:
    """Per-episode records and each episode's target-nearer flag -> the counts of both groups."""
    groups = {g: dict.fromkeys(COUNTS, 0) for g in GROUPS}
    for near, once, wrong in zip(nearer, episodes["success_once_per_episode"],
                                 episodes["wrong_receptacle_at_end_per_episode"], strict=True):
        group = groups["target_nearer" if near else "target_farther"]
        group["episodes"] += 1
        group["success_once"] += bool(once)
        group["wrong_receptacle_at_end"] += bool(wrong)
    return groups


def markdown(cells: dict[str, dict[str, dict[str, dict[str, int]]]]) -> str:
    """A row per (cell, checkpoint): `episodes / success_once / wrong receptacle` for each group."""
    lines = ["| cell | checkpoint | target nearer: n / success / wrong | target farther: n / success / wrong |",
             "|---|---|---|---|"]
    for cell, by in cells.items():
        for label, groups in by.items():
            entries = [" / ".join(str(groups[g][c]) for c in COUNTS) for g in GROUPS]
            lines.append(f"| {cell} | {label} | " + " | ".join(entries) + " |")
    return "\n".join(lines) + "\n"


def main(args: Args) -> None:
    chosen = parse_labels(args.labels)
    # read and check everything first (one-line errors before any env starts)
    records = []  # (cell, label, variant, seeds, per-episode records)
    sources: dict[tuple[str, str], str] = {}
    for directory in args.evals:
        results = read_results(directory)
        labels = checkpoint_labels([c["name"] for c in results["checkpoints"]], chosen)
        by_name = {c["name"]: c for c in results["checkpoints"]}
        seed = results["settings"]["seed"]
        for row in results["results"]:
            variant = builtin_variant(row["variant"])
            cell, label = variant + sampled_suffix(results["settings"]), labels[row["checkpoint"]]
            if (cell, label) in sources:
                sys.exit(f"error: cell {cell}, checkpoint {label} comes from both {sources[cell, label]} and "
                         f"{directory}: name one of the checkpoints with --labels PATH=LABEL, or leave one out")
            sources[cell, label] = directory
            episodes = episodes_of(directory, by_name[row["checkpoint"]], variant)
            n = len(episodes["success_once_per_episode"])
            if n != row["n"]:
                sys.exit(f"error: {directory}: {row['checkpoint']} / {variant} has {n} episodes under runs/ but "
                         f"n = {row['n']} in results.json: rerun eval_generalization.py with the same --output-dir "
                         f"to rewrite results.json")
            records.append((cell, label, variant, [seed + i for i in range(n)], episodes))
    needed: dict[str, set[int]] = {}
    for _, _, variant, seeds, _ in records:
        needed.setdefault(variant, set()).update(seeds)
    found = layouts(needed)
    cells: dict[str, dict[str, dict[str, dict[str, int]]]] = {}
    for cell, label, variant, seeds, episodes in records:
        nearer = [found[variant, s]["target_nearer"] for s in seeds]
        cells.setdefault(cell, {})[label] = count(episodes, nearer)
    note = ("episodes of each cell split by whether the instructed receptacle's centre was the nearest (xy) to the "
            "cube's start: layouts recreated by resetting the variant's env (CPU back-end, as eval_generalization.py's "
            "CPU workers) with episode i's seed, settings.seed + i; per group: episodes, success_once, "
            "wrong_receptacle_at_end. Following the instruction: the same wrong rate in both groups; going to the "
            "nearest receptacle: wrong ~0 when the target is nearer, high when it is farther")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"note": note, "cells": cells}, indent=1))
    if args.markdown:
        print(markdown(cells), end="")
    print(f"wrote {out} ({len(found)} layouts)", file=sys.stderr)


if __name__ == "__main__":
    main(tyro.cli(Args))
