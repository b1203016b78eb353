"""Success curves of RL runs from their tensorboard events -> one PNG (and the numbers as JSON): one panel for the
success rates, one for each other scalar asked for.

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
    # one panel for the success rates (rollouts beside evaluations), one for each other scalar
    panels = list(dict.fromkeys("success rate" if "success" in key else key for key in args.keys
                                if any(label.endswith(f": {key}") for label in curves)))
    fig, axes = plt.subplots(len(panels), 1, figsize=(7, 1 + 3 * len(panels)), sharex=True, squeeze=False)
    # one colour per run in every panel; in the success panel the rollouts' line is solid, the evaluations' dashed
    names = list(dict.fromkeys(label.rsplit(": ", 1)[0] for label in curves))
    for label, points in curves.items():
        name, key = label.rsplit(": ", 1)
        ax = axes[panels.index("success rate" if "success" in key else key), 0]
        style = {"color": f"C{names.index(name) % 10}", "linestyle": "--" if "eval" in key else "-"}
        steps, values = zip(*points, strict=True)
        if args.smooth > 1 and len(values) >= args.smooth:
            ax.plot(steps, values, alpha=0.25, **style)
            mean = np.convolve(values, np.ones(args.smooth) / args.smooth, mode="valid")  # trailing window
            ax.plot(steps[args.smooth - 1 :], mean, label=f"{label} ({args.smooth}-point mean)", **style)
        else:
            ax.plot(steps, values, marker="o" if "eval" in key else None, label=label, **style)
    for panel, ax in zip(panels, axes[:, 0], strict=True):
        ax.set_ylabel(panel)
        if panel == "success rate":
            ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[-1, 0].set_xlabel("env steps")
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    Path(args.out).with_suffix(".json").write_text(json.dumps(curves, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main(tyro.cli(Args))
