"""Generalisation suite: checkpoints x task variants -> success rates with 95 % Wilson intervals.

Method. Every checkpoint runs `--episodes` fixed-length episodes on every variant (the env seed of
episode i is `--seed + i`, the same for every checkpoint, so checkpoints face identical initial states),
decoding greedily (argmax over the 256 action tokens) or, with `--temperature T > 0`, sampling at T.
Per (checkpoint, variant) it reports success_once (the task was solved at some step: the blog's
metric) and success_at_end (solved at the last step: RL4VLA's), each with a 95 % Wilson score interval,
where the built-in tasks' failures go (the cube held at some step; left on a receptacle not named),
and the difference in success_once between the first checkpoint and each other one (the seeds' central
question: does RL on `train` move the unseen variants?).

Checkpoints: base checkpoints (`tiny`, a directory with config.json, a hub id such as
openvla/openvla-7b), RL checkpoints (a directory with `openvla_rl.json` + a LoRA adapter, loaded on the
base it names), or an RL run directory (its newest `checkpoints/iter_*` is used). Decoding uses
`--unnorm-key`; by default the key recorded in `openvla_rl.json`, else `panda_tabletop` for the
built-in tasks and `bridge_orig` for the SimplerEnv ones (an SFT checkpoint needs its --norm-key).

Outputs under `--output-dir`:
* `runs/<checkpoint slug>/<variant>.json`: one finished (checkpoint, variant) cell, per-episode results
  included. A cell whose file exists with the same settings is not run again, so an interrupted
  evaluation resumes, and separate invocations (e.g. one per checkpoint) fill one table.
* `results.json` (schema below), `results.md` (the tables), `results.png` (grouped bars with the
  intervals), `videos/<checkpoint slug>/<variant>_seed<seed>.mp4` (the first `--videos-per-variant`
  episodes of each cell).
* RL4VLA's summary, when every variant run is in the `rl4vla` suite (or every one in `rl4vla_assets`):
  in-distribution (`train`), the vision / semantic / execution means and the OOD mean (all 16 test
  variants), each with a Wilson interval on the pooled episodes (every variant has the same n, so the
  pooled rate is the mean of the rates); in results.md a table in the layout of RL4VLA's (one row per
  checkpoint, the variants grouped by category, each group followed by its mean, in percent) for
  success_at_end (RL4VLA's metric) and success_once, and `results_rl4vla.png` (bars per group).

results.json = {
  "settings": {"episodes", "seed", "temperature", "decoding": "greedy" | "sampled (T=...)",
               "max_episode_steps", "variants": [...]},
  "checkpoints": [{"name", "path", "slug", "kind": "base" | "adapter", "unnorm_key"}],
  "results": [{"checkpoint", "variant", "category", "n", "success_once", "success_at_end",
               "success_once_ci": [lo, hi], "success_at_end_ci": [lo, hi], "episodic_return",
               "diff_success_once": success_once minus the first checkpoint's (null for the first),
               "grasped_once", "wrong_receptacle_at_end": failure modes, fractions of episodes (built-in
               tasks; null elsewhere)}],
  "rl4vla_summary" (only with RL4VLA's summary): [{"checkpoint", "group": "in_distribution" | "vision" |
               "semantic" | "execution" | "ood", "variants": [...], "n", "success_once", "success_at_end",
               "success_once_ci", "success_at_end_ci"}]}

Commands:
    # 1 GPU, the released model vs an RL run, all built-in variants:
    python eval_generalization.py --checkpoints openvla/openvla-7b runs/ppo_openvla__1__1700000000 --episodes 50
    # RL4VLA's 16 test variants (built-in counterparts) + train, with their category means:
    python eval_generalization.py --checkpoints openvla/openvla-7b runs/ppo_openvla__1__1700000000 --suite rl4vla
    # RL4VLA's own tasks (needs RL4VLA's ManiSkill fork and assets; decode with the key of your checkpoint):
    python eval_generalization.py --checkpoints <RL4VLA checkpoint> --suite rl4vla_assets --unnorm-key bridge_orig
    # SimplerEnv Bridge tasks (needs their ManiSkill assets):
    python eval_generalization.py --checkpoints openvla/openvla-7b --suite simpler
    # CPU smoke run, tiny model (about 1 minute on 2 cores):
    python eval_generalization.py --checkpoints tiny --variants train red_cube --episodes 2 --num-envs 2 \
        --max-episode-steps 8
There is no torchrun mode: run one process per GPU on disjoint --variants into the same --output-dir.
All checkpoints of one invocation stay loaded (the envs of a variant are shared by all of them).
"""

import hashlib
import json
import math
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import imageio.v2 as imageio
import numpy as np
import torch
import tyro
from tqdm import tqdm

import openvla_envs
from openvla_envs import SUITES, MissingAssetsError, category, make_envs, resolve
from openvla_patch import BUILTIN_NORM_KEY, OpenVLAError, action_stats, load_vla, tokens_to_actions

RL_INFO_FILE = "openvla_rl.json"
Z_95 = 1.959963984540054  # standard normal quantile of 0.975
# where the failures go (built-in tasks): the cube was held at some step / it ends, released, on a receptacle
# the instruction did not name (an `unseen_target` policy that goes to the train towel: language ignored)
FAILURE_MODES = ("grasped_once", "wrong_receptacle_at_end")


# ---------------------------------------------------------------------------------------------------
# Args
# ---------------------------------------------------------------------------------------------------
@dataclass
class Args:
    checkpoints: list[str]
    """checkpoints to compare, the first is the reference of the difference column: `tiny`, checkpoint
    directories, hub ids, RL checkpoint directories (openvla_rl.json) or RL run directories"""
    suite: Literal["builtin", "rl4vla", "rl4vla_assets", "simpler"] = "builtin"
    """builtin = our ten built-in variants; rl4vla = train + the built-in counterparts of RL4VLA's 16 test
    variants, with RL4VLA's category means; rl4vla_assets = RL4VLA's own 16 tasks + their training task (needs
    RL4VLA's ManiSkill fork and assets); simpler = the SimplerEnv Bridge tasks (needs assets)"""
    variants: list[str] = field(default_factory=list)
    """explicit variant names or env ids instead of --suite"""
    episodes: int = 50
    """episodes per (checkpoint, variant)"""
    seed: int = openvla_envs.TEST_SEED
    """env seed of episode 0; episode i uses seed + i (and sampling uses this seed too). The default is the
    test band of openvla_envs' seed policy: disjoint from SFT demos and from the seeds that pick checkpoints"""
    temperature: float = 0.0
    """0 = greedy decoding; > 0 = sampling from the action tokens at this temperature"""
    max_episode_steps: int = 80
    """episode length in env steps"""
    num_envs: int = 8
    """parallel envs (worker processes on the CPU back-end)"""
    env_backend: Literal["auto", "gpu", "cpu"] = "auto"
    """simulation back-end of openvla_envs.make_envs"""
    unnorm_key: list[str] = field(default_factory=list)
    """norm_stats key for decoding actions: one for all checkpoints or one per checkpoint (`auto` = the
    default: openvla_rl.json's key for RL checkpoints, else panda_tabletop / bridge_orig)"""
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    """auto = bf16 on a GPU, fp32 on the CPU"""
    load_in_4bit: bool = False
    """load the language models of RL (adapter) checkpoints in 4-bit NF4, to fit many 7B checkpoints on one
    GPU; base checkpoints always load in --precision"""
    output_dir: str = "eval_results"
    """where per-cell results, results.json/.md/.png and videos go"""
    videos_per_variant: int = 2
    """mp4 rollouts saved per (checkpoint, variant) (at most --num-envs)"""
    video_fps: int = 10
    """frames per second of the videos (one frame per env step)"""


@dataclass
class Checkpoint:
    """One entry of --checkpoints, resolved."""

    name: str  # as given on the command line
    path: str  # what load_vla reads: a base checkpoint, or the RL checkpoint directory
    slug: str  # file-name-safe and unique
    kind: Literal["base", "adapter"]
    unnorm_key: str
    base: str | None = None  # for adapters: the base checkpoint named in openvla_rl.json


def fail(message: str) -> None:
    """A user-fixable problem: one line, exit code 2."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """95 % Wilson score interval of a binomial proportion (Wilson 1927): unlike the normal
    approximation it stays inside [0, 1] and is sensible at 0 / n and n / n, our common cases."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1 + z**2 / n
    centre = (p + z**2 / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denominator
    # exact ends at 0 / n and n / n (rounding leaves centre - half ~1e-17 above p = 0 there)
    return (0.0 if successes == 0 else centre - half), (1.0 if successes == n else centre + half)


def resolve_checkpoint(name: str, key: str, suite_key: str) -> Checkpoint:
    """--checkpoints entry -> Checkpoint. A run directory resolves to its newest checkpoints/iter_*."""
    path = Path(name).expanduser()
    if path.is_dir() and not (path / RL_INFO_FILE).exists() and (path / "checkpoints").is_dir():
        iters = sorted((path / "checkpoints").glob("iter_*"), key=lambda p: int(p.name.removeprefix("iter_")))
        if not iters:
            raise OpenVLAError(f"run directory {path} holds no checkpoints/iter_* yet")
        path = iters[-1]
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", name.strip("/"))[-48:] + "-" + hashlib.sha1(name.encode()).hexdigest()[:6]
    if (path / RL_INFO_FILE).exists():
        info = json.loads((path / RL_INFO_FILE).read_text())
        unnorm_key = (info.get("unnorm_key") or suite_key) if key == "auto" else key
        return Checkpoint(name, str(path), slug, "adapter", unnorm_key, base=info["vla_path"])
    return Checkpoint(name, name, slug, "base", suite_key if key == "auto" else key)


def load_checkpoint(ckpt: Checkpoint, device: torch.device, dtype: torch.dtype, load_in_4bit: bool):
    """-> (model, processor, action stats) in eval mode; an adapter goes onto the base it was trained on."""
    if ckpt.kind == "adapter":
        model, processor = load_vla(ckpt.base, device=device, dtype=dtype, load_in_4bit=load_in_4bit,
                                    adapter_path=ckpt.path, trainable_adapter=False)
    else:
        # 4-bit needs an adapter in load_vla (it is meant for training); a base model loads in `dtype`.
        model, processor = load_vla(ckpt.path, device=device, dtype=dtype)
    return model.eval(), processor, action_stats(model.config, ckpt.unnorm_key)


@torch.inference_mode()
def run_cell(model, processor, stats, envs, args: Args, bar: tqdm) -> dict:
    """All episodes of one (checkpoint, variant) -> per-episode results and the first episodes' frames."""
    generator = torch.Generator(model.projector.fc1.weight.device).manual_seed(args.seed)
    once, at_end, returns, videos = [], [], [], []
    modes: dict[str, list] = {m: [] for m in FAILURE_MODES}  # built-in tasks only (others' infos lack them)
    for first in range(0, args.episodes, envs.num_envs):
        obs, instructions = envs.reset([args.seed + first + i for i in range(envs.num_envs)])
        frames = [obs.cpu().numpy()] if first == 0 else []  # (N, 224, 224, 3) per step
        for _ in range(args.max_episode_steps):
            input_ids, attention_mask, pixel_values = processor(obs, instructions)
            sample = model.generate_actions(input_ids, attention_mask, pixel_values, greedy=args.temperature == 0,
                                            temperature=args.temperature or 1.0, generator=generator)
            obs, _, _, infos = envs.step(tokens_to_actions(sample.tokens.cpu(), model.config, stats))  # (N, 7) actions
            if first == 0:
                frames.append(obs.cpu().numpy())
            bar.update(1)
        once += infos["success_once"].tolist()
        at_end += infos["success_at_end"].tolist()
        returns += infos["episodic_return"].tolist()
        for m in FAILURE_MODES:
            modes[m] += infos[m].tolist() if m in infos else []
        if first == 0:
            videos = list(np.stack(frames, 1)[: args.videos_per_variant])  # each (T + 1, 224, 224, 3)
    n = args.episodes  # the last round may run extra envs: their episodes are not counted
    return {"success_once_per_episode": [bool(s) for s in once[:n]],
            "success_at_end_per_episode": [bool(s) for s in at_end[:n]],
            "episodic_return": float(np.mean(returns[:n])),
            **{f"{m}_per_episode": [bool(x) for x in modes[m][:n]] for m in FAILURE_MODES if modes[m]}}, videos


def summarise(cell: dict) -> dict:
    """Per-episode results -> rates and Wilson intervals."""
    n = len(cell["success_once_per_episode"])
    once, at_end = sum(cell["success_once_per_episode"]), sum(cell["success_at_end_per_episode"])
    return {"n": n, "success_once": once / n, "success_at_end": at_end / n,
            "success_once_ci": list(wilson_interval(once, n)), "success_at_end_ci": list(wilson_interval(at_end, n)),
            "episodic_return": cell["episodic_return"],
            **{m: (sum(cell[f"{m}_per_episode"]) / n if f"{m}_per_episode" in cell else None) for m in FAILURE_MODES}}


def markdown_tables(rows: list[dict], checkpoints: list[Checkpoint]) -> str:
    """One Markdown table per checkpoint; every checkpoint after the first gets the difference column."""
    out = []
    for c, ckpt in enumerate(checkpoints):
        diff = c > 0
        header = ["variant", "category", "success_once", "95% CI", "success_at_end", "95% CI", "n"]
        header += [f"Δ success_once vs {checkpoints[0].name}"] if diff else []
        header += ["grasped once", "wrong receptacle at end"]
        lines = [f"### {ckpt.name} (unnorm_key {ckpt.unnorm_key})", "", "| " + " | ".join(header) + " |",
                 "|" + "---|" * len(header)]
        for r in (r for r in rows if r["checkpoint"] == ckpt.name):
            cells = [r["variant"], r["category"], f"{r['success_once']:.3f}",
                     "[{:.3f}, {:.3f}]".format(*r["success_once_ci"]), f"{r['success_at_end']:.3f}",
                     "[{:.3f}, {:.3f}]".format(*r["success_at_end_ci"]), str(r["n"])]
            cells += [f"{r['diff_success_once']:+.3f}"] if diff else []
            cells += ["-" if r[m] is None else f"{r[m]:.3f}" for m in FAILURE_MODES]
            lines.append("| " + " | ".join(cells) + " |")
        out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


RL4VLA_GROUPS = ("in_distribution", "vision", "semantic", "execution", "ood")


def rl4vla_summary(rows: list[dict], checkpoints: list[Checkpoint]) -> list[dict]:
    """Per checkpoint and RL4VLA group (in-distribution = `train`, each category, OOD = every test variant):
    rates over the group's pooled episodes, with Wilson intervals; groups with no variant are left out."""
    summary = []
    for ckpt in checkpoints:
        for group in RL4VLA_GROUPS:
            members = [r for r in rows if r["checkpoint"] == ckpt.name and (
                r["category"] == {"in_distribution": "train"}.get(group, group)
                or (group == "ood" and r["category"] != "train"))]
            if not members:
                continue
            n = sum(r["n"] for r in members)
            counts = {m: sum(round(r[m] * r["n"]) for r in members) for m in ("success_once", "success_at_end")}
            summary.append({"checkpoint": ckpt.name, "group": group, "variants": [r["variant"] for r in members],
                            "n": n, **{m: c / n for m, c in counts.items()},
                            **{f"{m}_ci": list(wilson_interval(c, n)) for m, c in counts.items()}})
    return summary


def rl4vla_tables(rows: list[dict], summary: list[dict], checkpoints: list[Checkpoint]) -> str:
    """RL4VLA's table layout, once per metric: a row per checkpoint; `train`, then each category's variants
    followed by the category mean, then the OOD mean; percent."""
    columns = []  # (header, key, value): the row of `rows` or `summary` whose `key` is `value`
    for group in RL4VLA_GROUPS:
        first = [s for s in summary if s["checkpoint"] == checkpoints[0].name and s["group"] == group]
        if not first:
            continue
        if group in ("vision", "semantic", "execution"):
            columns += [(v, "variant", v) for v in first[0]["variants"]]
        columns.append(("train (in-dist.)" if group == "in_distribution" else f"**{group} mean**", "group", group))
    out = []
    for metric in ("success_at_end", "success_once"):
        lines = [f"### RL4VLA's table: {metric} (%)", "", "| checkpoint | " + " | ".join(c[0] for c in columns) + " |",
                 "|---|" + "---:|" * len(columns)]
        for ckpt in checkpoints:
            mine = [r for r in rows + summary if r["checkpoint"] == ckpt.name]
            cells = [next(100 * r[metric] for r in mine if r.get(key) == name) for _, key, name in columns]
            lines.append(f"| {ckpt.name} | " + " | ".join(f"{c:.1f}" for c in cells) + " |")
        out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


def bar_chart(rows: list[dict], checkpoints: list[Checkpoint], variants: list[str], title: str, path: Path,
              key: str = "variant") -> None:
    """Grouped bars: success_once per variant (or per `key` value), one bar per checkpoint, Wilson intervals
    as error bars."""
    import matplotlib

    matplotlib.use("Agg")  # no display: write the file only
    import matplotlib.pyplot as plt

    width = 0.8 / len(checkpoints)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(variants) * max(1, len(checkpoints) / 2)), 4.0))
    for c, ckpt in enumerate(checkpoints):
        by_variant = {r[key]: r for r in rows if r["checkpoint"] == ckpt.name}
        rates = np.array([by_variant[v]["success_once"] for v in variants])
        lo, hi = np.array([by_variant[v]["success_once_ci"] for v in variants]).T
        ax.bar(np.arange(len(variants)) + (c - (len(checkpoints) - 1) / 2) * width, rates, width, label=ckpt.name,
               yerr=[rates - lo, hi - rates], capsize=3)
    ax.set_xticks(np.arange(len(variants)), variants, rotation=30, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("success_once (95% Wilson CI)")
    ax.set_title(title)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    args = tyro.cli(Args)

    # -----------------------------------------------------------------------------------------------
    # Setup: validate everything a user can get wrong before loading any model
    # -----------------------------------------------------------------------------------------------
    variants = args.variants or list(SUITES[args.suite])
    try:  # unknown names -> ValueError; Bridge / RL4VLA tasks that are not installed -> MissingAssetsError
        robots = {resolve(variant)[2] for variant in variants}
    except (ValueError, MissingAssetsError) as err:
        fail(str(err))
    if not args.checkpoints or args.episodes < 1 or args.num_envs < 1 or args.temperature < 0:
        fail("pass at least one --checkpoints; --episodes and --num-envs must be >= 1 and --temperature >= 0")
    if len(args.unnorm_key) not in (0, 1, len(args.checkpoints)):
        fail(f"--unnorm-key takes one key or one per checkpoint ({len(args.checkpoints)}), got {len(args.unnorm_key)}")
    if len(set(args.checkpoints)) != len(args.checkpoints):
        fail("--checkpoints lists a checkpoint twice")
    keys = args.unnorm_key * len(args.checkpoints) if len(args.unnorm_key) == 1 else args.unnorm_key
    suite_key = "bridge_orig" if robots == {"widowx"} else BUILTIN_NORM_KEY
    try:
        checkpoints = [resolve_checkpoint(name, key, suite_key)
                       for name, key in zip(args.checkpoints, keys or ["auto"] * len(args.checkpoints), strict=True)]
    except OpenVLAError as err:
        fail(str(err))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if args.precision == "bf16" or (args.precision == "auto" and device.type == "cuda") else torch.float32
    decoding = "greedy" if args.temperature == 0 else f"sampled (T={args.temperature:g})"
    settings = {"episodes": args.episodes, "seed": args.seed, "temperature": args.temperature, "decoding": decoding,
                "max_episode_steps": args.max_episode_steps}
    output_dir = Path(args.output_dir)

    # -----------------------------------------------------------------------------------------------
    # Evaluation: variants outer (starting env workers is the slow part), checkpoints inner
    # -----------------------------------------------------------------------------------------------
    def cell_file(ckpt: Checkpoint, variant: str) -> Path:
        return output_dir / "runs" / ckpt.slug / f"{variant}.json"

    def finished(ckpt: Checkpoint, variant: str) -> bool:
        """A cell is done when its file exists and was made with the same settings and checkpoint."""
        file = cell_file(ckpt, variant)
        if not file.exists():
            return False
        stored = json.loads(file.read_text())
        return stored["settings"] == settings and stored["checkpoint"] == asdict(ckpt)

    todo = {v: [c for c in checkpoints if not finished(c, v)] for v in variants}
    skipped = sum(len(checkpoints) - len(cs) for cs in todo.values())
    if skipped:
        print(f"[resume] {skipped} finished (checkpoint, variant) results found in {output_dir / 'runs'}: not re-run")
    rounds = -(-args.episodes // args.num_envs)
    bar = tqdm(total=sum(map(len, todo.values())) * rounds * args.max_episode_steps, desc="eval", unit="step")
    models = {}  # slug -> (model, processor, stats), loaded at first use
    for variant in variants:
        if not todo[variant]:
            continue
        envs = make_envs(variant, args.num_envs, device=device, backend=args.env_backend,
                         max_episode_steps=args.max_episode_steps)
        for ckpt in todo[variant]:
            bar.set_description(f"eval {ckpt.name} / {variant}")
            if ckpt.slug not in models:
                try:
                    models[ckpt.slug] = load_checkpoint(ckpt, device, dtype, args.load_in_4bit)
                except OpenVLAError as err:
                    envs.close()
                    fail(f"{ckpt.name}: {err}")
            cell, videos = run_cell(*models[ckpt.slug], envs, args, bar)
            for i, frames in enumerate(videos):
                video = output_dir / "videos" / ckpt.slug / f"{variant}_seed{args.seed + i}.mp4"
                video.parent.mkdir(parents=True, exist_ok=True)
                try:
                    import imageio_ffmpeg  # noqa: F401  (the mp4 encoder)

                    imageio.mimwrite(video, frames, fps=args.video_fps, macro_block_size=16)
                except ImportError:  # an image without ffmpeg: an animated GIF instead
                    imageio.mimwrite(video.with_suffix(".gif"), frames, duration=1000 / args.video_fps, loop=0)
            file = cell_file(ckpt, variant)
            file.parent.mkdir(parents=True, exist_ok=True)
            tmp = file.with_suffix(".tmp")  # written whole, then renamed: a crash never leaves half a cell
            tmp.write_text(json.dumps({"settings": settings, "checkpoint": asdict(ckpt), "variant": variant, **cell}))
            tmp.replace(file)
        envs.close()
    bar.close()

    # -----------------------------------------------------------------------------------------------
    # Report: table on stdout, results.json, results.md, results.png
    # -----------------------------------------------------------------------------------------------
    categories = {v: category(v) for v in variants}
    rows = [{"checkpoint": ckpt.name, "variant": variant, "category": categories[variant],
             **summarise(json.loads(cell_file(ckpt, variant).read_text()))} for ckpt in checkpoints for variant in variants]
    reference = {r["variant"]: r["success_once"] for r in rows[: len(variants)]}  # the first checkpoint's
    for r in rows:
        r["diff_success_once"] = None if r["checkpoint"] == checkpoints[0].name else r["success_once"] - reference[r["variant"]]
    results = {"settings": {**settings, "variants": variants}, "checkpoints": [asdict(c) for c in checkpoints],
               "results": rows}
    title = f"{args.episodes} episodes per variant, {decoding} decoding"
    tables = markdown_tables(rows, checkpoints)
    if any(set(variants) <= set(SUITES[suite]) for suite in ("rl4vla", "rl4vla_assets")):
        results["rl4vla_summary"] = rl4vla_summary(rows, checkpoints)
        tables = rl4vla_tables(rows, results["rl4vla_summary"], checkpoints) + "\n" + tables
        groups = [g for g in RL4VLA_GROUPS if any(s["group"] == g for s in results["rl4vla_summary"])]
        bar_chart(results["rl4vla_summary"], checkpoints, groups, f"RL4VLA groups: {title}",
                  output_dir / "results_rl4vla.png", key="group")
    (output_dir / "results.json").write_text(json.dumps(results, indent=2))
    (output_dir / "results.md").write_text(f"# Generalisation: {title}\n\n{tables}")
    bar_chart(rows, checkpoints, variants, title, output_dir / "results.png")
    print(f"\n{title}\n\n{tables}")
    extra = ", results_rl4vla.png" if "rl4vla_summary" in results else ""
    print(f"wrote {output_dir / 'results.json'}, results.md, results.png{extra} and videos/")
