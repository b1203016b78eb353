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

Demonstrations (--demos FILE.npz, alone or beside --evals): what the SFT data teaches about the choice. In a
straight expert demonstration the carry moves the cube toward the instructed receptacle, so on most carry frames
that is also the receptacle nearest to the cube, and "go to the receptacle nearest the cube" fits those labels as
well as the instruction does; at the first held step (the lift, where the choice is made) the target is the nearer
one only at the layout's base rate (24 demonstrations per variant at expert noise 0.1: 77-89 % of held steps,
33 % of first held steps on `train`). Per variant, over the steps where the cube is held
(is_grasped > 0.5): how many, and at how many the instructed receptacle's centre is the nearest (xy) to the cube's
current centre (obj_pose); the same at each episode's first held step only.

    python sft_openvla.py --demos-only --state-aux-coef 1 --env-backend cpu --demos-path demos/sft_demos.npz ...
    python bench/receptacle_choice.py --demos demos/sft_demos.npz \
        --out bench/results/receptacle_choice_demos.json --markdown

The file must hold `states` (sft_openvla.py --state-aux-coef > 0: per step the state vector, laid out as
openvla_envs.BUILTIN_STATE_LAYOUT) and per episode `variants` and `seeds`. Each episode's env was reset with its
stored seed (collect_demos resets env i of a round with `demo_seed + 100_000 * variant index + attempts + i` and
stores that seed), so its layout is recreated as above, from (variant, seed), in the same cache. The receptacles
stay where they start (the expert touches none but the target, and places the cube on that one), so the recreated
centres serve every step; the recreated target's centre must equal the stored goal_pos (xy) at the episode's first
step within 1e-4 m, else the tool exits with one line (a wrong seed, or a file collected on the GPU back-end:
collect on the CPU one for this tool). Episodes of a variant that is not the built-in task's, or that has a single
receptacle, are skipped with a note (an error if none is left). `episodes` counts the episodes with a held step.
Writes {"note", "demos": {variant: {"held_steps", "held_steps_target_nearer", "episodes",
"first_held_target_nearer"}}} (with "cells" too when --evals is given); --markdown prints its table as well.
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
DEMO_COUNTS = ("held_steps", "held_steps_target_nearer", "episodes", "first_held_target_nearer")
STATE = openvla_envs.BUILTIN_STATE_LAYOUT
GRASPED, OBJ_XY = STATE["is_grasped"].start, slice(STATE["obj_pose"].start, STATE["obj_pose"].start + 2)
GOAL_XY = slice(STATE["goal_pos"].start, STATE["goal_pos"].start + 2)


@dataclass
class Args:
    evals: list[str] = field(default_factory=list)
    """eval_generalization.py output directories (each holds results.json and runs/); their first checkpoint is
    labelled `prior`"""
    demos: str | None = None
    """an sft_openvla.py demonstrations file with states (--state-aux-coef > 0): count, per variant, the held steps
    where the instructed receptacle is the nearest to the cube"""
    out: str | None = None
    """the JSON to write (default: bench/results/receptacle_choice.json, or receptacle_choice_demos.json there
    with --demos alone)"""
    labels: list[str] = field(default_factory=list)
    """PATH=LABEL: name a checkpoint yourself (as in bench/failure_modes.py: e.g. an RL checkpoint evaluated alone
    in its own directory, which would otherwise be its evaluation's `prior`)"""
    markdown: bool = False
    """also print the Markdown table(s) to stdout"""


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


def target_nearest(cube_xy: np.ndarray, receptacles_xy: np.ndarray, target: int) -> np.ndarray:
    """Cube centres (K, 2) -> (K,) bool: receptacle `target`'s centre is nearer (xy) than every other one's."""
    distances = np.linalg.norm(cube_xy[:, None] - receptacles_xy[None], axis=-1)  # (K, R)
    return distances[:, target] < np.delete(distances, target, axis=1).min(1)


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
            "target": target, "target_nearer": bool(target_nearest(cube[None, :2], receptacles, target)[0])}


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


def read_evals(evals: list[str], chosen: dict[Path, str]) -> list[tuple[str, str, str, list[int], dict]]:
    """The evaluation directories -> per (cell, checkpoint): (cell, label, variant, episode seeds, per-episode
    records); exits with one line on a bad input (before any env starts)."""
    records = []
    sources: dict[tuple[str, str], str] = {}
    for directory in evals:
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
    return records


def read_demos(path: str) -> tuple[list[tuple[int, str, int, np.ndarray]], list[str]]:
    """A demonstrations file -> its episodes of built-in variants as (index, variant, seed, states (t, 42)), and
    notes on the variants skipped; exits with one line on a file this tool cannot read."""
    if not Path(path).is_file():
        sys.exit(f"error: no demonstrations file {path}")
    with np.load(path, allow_pickle=False) as demos:
        if missing := [k for k in ("states", "episode_starts", "variants", "seeds") if k not in demos.files]:
            sys.exit(f"error: {path} holds no {', '.join(missing)}: collect it with sft_openvla.py --demos-only "
                     f"--state-aux-coef 1 (a current version, which stores each episode's seed)")
        states, starts = demos["states"], demos["episode_starts"]
        variants, seeds = demos["variants"].tolist(), demos["seeds"].tolist()
    if states.shape[1] != max(s.stop for s in STATE.values()):
        sys.exit(f"error: {path}: states of {states.shape[1]} numbers, not the built-in tasks' state vector")
    episodes, skipped = [], {}
    for e, (variant, seed) in enumerate(zip(variants, seeds, strict=True)):
        if variant in openvla_envs.VARIANTS:
            episodes.append((e, variant, seed, states[starts[e] : starts[e + 1]]))
        else:
            skipped[variant] = skipped.get(variant, 0) + 1
    notes = [f"{variant}: {n} episodes skipped (not a built-in variant)" for variant, n in skipped.items()]
    if not episodes:
        sys.exit(f"error: {path}: no episode of a built-in variant ({'; '.join(notes) or 'no episodes'})")
    return episodes, notes


def count_demos(path: str, episodes: list[tuple[int, str, int, np.ndarray]], found: dict[tuple[str, int], dict],
                notes: list[str]) -> dict[str, dict[str, int]]:
    """The demonstrations' episodes and their layouts -> per variant the DEMO_COUNTS; appends to `notes` for
    single-receptacle variants; exits with one line where a recreated target is not the stored one."""
    out: dict[str, dict[str, int]] = {}
    single: dict[str, int] = {}
    for e, variant, seed, states in tqdm(episodes, desc="demos", unit="episode"):
        receptacles, target = np.array(found[variant, seed]["receptacles"]), found[variant, seed]["target"]
        if len(receptacles) < 2:
            single[variant] = single.get(variant, 0) + 1
            continue
        if not np.allclose(states[0, GOAL_XY], receptacles[target], rtol=0, atol=1e-4):
            sys.exit(f"error: {path}: episode {e} ({variant}, seed {seed}): the recreated target lies at "
                     f"{receptacles[target].round(4).tolist()}, the stored goal_pos at "
                     f"{states[0, GOAL_XY].round(4).tolist()}: not this seed's layout (a wrong seed, or demos "
                     f"collected on the GPU back-end: collect with --env-backend cpu)")
        held = states[:, GRASPED] > 0.5
        nearer = target_nearest(states[held, OBJ_XY], receptacles, target)
        counts = out.setdefault(variant, dict.fromkeys(DEMO_COUNTS, 0))
        counts["held_steps"] += int(held.sum())
        counts["held_steps_target_nearer"] += int(nearer.sum())
        if held.any():
            counts["episodes"] += 1
            counts["first_held_target_nearer"] += int(nearer[0])
    notes += [f"{variant}: {n} episodes skipped (a single receptacle)" for variant, n in single.items()]
    if not out:
        sys.exit(f"error: {path}: no episode of a built-in variant with two or more receptacles ({'; '.join(notes)})")
    return out


def markdown_demos(demos: dict[str, dict[str, int]]) -> str:
    """A row per variant: held steps and first held steps, `n / target nearest (%)` each."""
    lines = ["| variant | held steps: n / target nearest | first held step: episodes / target nearest |",
             "|---|---|---|"]
    for variant, c in demos.items():
        entries = [f"{c[n]} / {c[k]} ({100 * c[k] / max(c[n], 1):.0f} %)"
                   for n, k in (("held_steps", "held_steps_target_nearer"), ("episodes", "first_held_target_nearer"))]
        lines.append(f"| {variant} | " + " | ".join(entries) + " |")
    return "\n".join(lines) + "\n"


def main(args: Args) -> None:
    if not args.evals and args.demos is None:
        sys.exit("error: nothing to read: give --evals DIR ... (evaluations) and/or --demos FILE.npz (demonstrations)")
    # read and check everything first (one-line errors before any env starts)
    records = read_evals(args.evals, parse_labels(args.labels))
    demo_episodes, notes = read_demos(args.demos) if args.demos is not None else ([], [])
    needed: dict[str, set[int]] = {}
    for _, _, variant, seeds, _ in records:
        needed.setdefault(variant, set()).update(seeds)
    for _, variant, seed, _ in demo_episodes:
        needed.setdefault(variant, set()).add(seed)
    found = layouts(needed)
    result: dict = {"note": []}
    if args.evals:
        cells: dict[str, dict[str, dict[str, dict[str, int]]]] = {}
        for cell, label, variant, seeds, episodes in records:
            nearer = [found[variant, s]["target_nearer"] for s in seeds]
            cells.setdefault(cell, {})[label] = count(episodes, nearer)
        result["note"].append(
            "cells: episodes of each cell split by whether the instructed receptacle's centre was the nearest (xy) "
            "to the cube's start: layouts recreated by resetting the variant's env (CPU back-end, as "
            "eval_generalization.py's CPU workers) with episode i's seed, settings.seed + i; per group: episodes, "
            "success_once, wrong_receptacle_at_end. Following the instruction: the same wrong rate in both groups; "
            "going to the nearest receptacle: wrong ~0 when the target is nearer, high when it is farther")
        result["cells"] = cells
    if args.demos is not None:
        result["demos"] = count_demos(args.demos, demo_episodes, found, notes)
        result["note"].append(
            f"demos ({args.demos}): per variant, the steps where the cube is held (is_grasped > 0.5), and of them "
            "those where the instructed receptacle's centre is the nearest (xy) to the cube's current centre; the "
            "same at each episode's first held step (episodes: those with a held step). Layouts recreated from "
            "each episode's variant and stored seed (CPU back-end), checked against its first step's goal_pos"
            + "".join(f"; {note}" for note in notes))
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
    result["note"] = " | ".join(result["note"])
    default = "receptacle_choice.json" if args.evals else "receptacle_choice_demos.json"
    out = Path(args.out or f"bench/results/{default}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    if args.markdown:
        tables = [markdown(result["cells"])] if args.evals else []
        print("\n".join(tables + ([markdown_demos(result["demos"])] if args.demos is not None else [])), end="")
    print(f"wrote {out} ({len(found)} layouts)", file=sys.stderr)


if __name__ == "__main__":
    main(tyro.cli(Args))
