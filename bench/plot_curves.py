"""Success curves of RL runs from their tensorboard events -> one PNG (and the numbers as JSON).

    python bench/plot_curves.py --runs runs/learning/ppo/*/ --out runs/learning/eval/ppo_curve.png
    # any other logged scalars, e.g. the update's diagnostics
    python bench/plot_curves.py --runs runs/learning/ppo/*/ --keys losses/approx_kl losses/clipfrac --out kl.png
"""

import json
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import tyro
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

KEYS = ("charts/success_once", "eval/train/success_once")


@dataclass
class Args:
    runs: list[str]
    """run directories (each holds tensorboard event files)"""
    out: str = "curve.png"
    """the PNG to write (the curves' numbers go beside it as .json)"""
    labels: list[str] | None = None
    """one legend label per run (default: the run directory's name)"""
    smooth: int = 1
    """also draw the running mean over this many points (per-iteration success of 16-24 episodes is noisy)"""
    keys: tuple[str, ...] = KEYS
    """the scalars to draw (tensorboard tags); a run that lacks one is skipped for it"""


def main(args: Args) -> None:
    if args.labels is not None and len(args.labels) != len(args.runs):
        raise SystemExit(f"error: {len(args.labels)} --labels for {len(args.runs)} --runs; give one per run")
    curves = {}
    for r, run in enumerate(args.runs):
        acc = EventAccumulator(run).Reload()
        name = args.labels[r] if args.labels else Path(run).name
        for key in args.keys:
            if key in acc.Tags()["scalars"]:
                curves[f"{name}: {key}"] = [(e.step, e.value) for e in acc.Scalars(key)]
    if not curves:
        raise SystemExit(f"error: no {' or '.join(args.keys)} in {args.runs}")
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, points in curves.items():
        steps, values = zip(*points, strict=True)
        if args.smooth > 1 and len(values) >= args.smooth:
            line = ax.plot(steps, values, alpha=0.25)[0]
            mean = np.convolve(values, np.ones(args.smooth) / args.smooth, mode="valid")  # trailing window
            ax.plot(steps[args.smooth - 1 :], mean, color=line.get_color(), label=f"{label} ({args.smooth}-point mean)")
        else:
            ax.plot(steps, values, marker="o" if "eval" in label else None, label=label)
    ax.set_xlabel("env steps")
    if all("success" in key for key in args.keys):
        ax.set_ylabel("success rate")
        ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    Path(args.out).with_suffix(".json").write_text(json.dumps(curves, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main(tyro.cli(Args))
