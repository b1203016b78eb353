"""Success curves of RL runs from their tensorboard events -> one PNG (and the numbers as JSON): one panel for the
success rates, one for each other scalar asked for.

    python bench/plot_curves.py --runs runs/learning/ppo/*/ --out runs/learning/eval/ppo_curve.png
    # any other logged scalars, e.g. the update's diagnostics
    python bench/plot_curves.py --runs runs/learning/ppo/*/ --keys losses/approx_kl losses/clipfrac --out kl.png
    # two arms resumed from one checkpoint: each against the first, iteration by iteration, after env step 961,920
    python bench/plot_curves.py --runs control/ arm/ --paired-from 961920 --out paired.png
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
    paired_from: int | None = None
    """compare every run with the first over the env steps after this one that both logged: per scalar, the two
    means, the mean paired difference and its standard error (iterations taken as independent), printed and stored
    under "paired" in the JSON. Arms resumed from one checkpoint draw the same env seeds every iteration (the RL
    scripts' numpy generator draws nothing else), so their iterations pair up layout for layout."""


def paired(curves: dict[str, list[tuple[int, float]]], names: list[str], keys: tuple[str, ...],
           start: int) -> dict[str, dict[str, float]]:
    """Each run after the first against the first, per key, over the steps > `start` both logged."""
    out = {}
    for key in keys:
        first = dict(curves.get(f"{names[0]}: {key}", []))
        for name in names[1:]:
            other = dict(curves.get(f"{name}: {key}", []))
            steps = sorted(s for s in first.keys() & other.keys() if s > start)
            if len(steps) < 2:
                continue
            a, b = np.array([first[s] for s in steps]), np.array([other[s] for s in steps])
            out[f"{name} - {names[0]}: {key}"] = {
                "from_step": start, "iterations": len(steps), "mean_first": float(a.mean()), "mean": float(b.mean()),
                "difference": float((b - a).mean()), "standard_error": float((b - a).std(ddof=1) / np.sqrt(len(steps)))}
    return out


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
    numbers: dict = dict(curves)
    if args.paired_from is not None:
        numbers["paired"] = paired(curves, names, args.keys, args.paired_from)
        for label, d in numbers["paired"].items():
            print(f"{label}: {d['mean']:.4f} vs {d['mean_first']:.4f} over {d['iterations']} iterations, paired "
                  f"difference {d['difference']:+.4f} +- {d['standard_error']:.4f} (standard error)")
    Path(args.out).with_suffix(".json").write_text(json.dumps(numbers, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main(tyro.cli(Args))
