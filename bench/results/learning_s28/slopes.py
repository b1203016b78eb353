"""Session 28, issue 12: rollout success against env steps, as straight lines. Per run and window: the ordinary
least-squares slope of per-iteration rollout success (charts/success_once) on env steps, per 100 k env steps, with
its standard error (iterations taken as independent), and the window's mean. If the gradient's noise holds the run
(episodes per update << the noise scale), 48 envs per update gain as much per env step as 24 (twice as much per
update); if not, half as much per env step.

    python bench/results/learning_s28/slopes.py --control <state run dir> --wide <state48 run dir> \
        --out bench/results/learning_s28/slopes.json
"""
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tyro
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


@dataclass
class Args:
    control: str
    """the 24-env run's directory (its event files from the start)"""
    wide: str
    """the 48-env run's directory (a copy of the control's to 1.12 M env steps, then its own)"""
    out: str = "slopes.json"


def success(run: str) -> tuple[np.ndarray, np.ndarray]:
    """env steps and per-iteration rollout success, every event file of the run (a later file wins a step)."""
    points = {}
    for file in sorted(Path(run).glob("events.*")):
        acc = EventAccumulator(str(file), size_guidance={"scalars": 0})
        acc.Reload()
        if "charts/success_once" in acc.Tags()["scalars"]:
            points.update({e.step: e.value for e in acc.Scalars("charts/success_once")})
    steps = np.array(sorted(points))
    return steps, np.array([points[s] for s in steps])


def line(steps: np.ndarray, values: np.ndarray, lo: float, hi: float) -> dict:
    keep = (steps > lo) & (steps <= hi)
    x, y = (steps[keep] - steps[keep].mean()) / 1e5, values[keep]
    slope = (x * (y - y.mean())).sum() / (x * x).sum()
    residual = y - y.mean() - slope * x
    se = np.sqrt((residual ** 2).sum() / (len(x) - 2) / (x * x).sum())
    return {"window": [lo, hi], "iterations": int(keep.sum()), "mean": round(float(y.mean()), 4),
            "slope_per_100k": round(float(slope), 4), "se": round(float(se), 4)}


def main(args: Args) -> None:
    control, wide = success(args.control), success(args.wide)
    fork = 1_121_280  # iteration 584, where both resumed: the windows after it hold each arm's own iterations only
    rows = {"control 0-0.56M": line(*control, 0, 0.56e6), "control 0.56-1.36M": line(*control, 0.56e6, 1.36e6),
            "control 1.12-1.36M": line(*control, fork, 1.36e6), "wide 1.12-1.36M": line(*wide, fork, 1.36e6),
            "wide 1.12-1.43M": line(*wide, fork, 1.43e6)}
    report(rows, args.out)


def report(rows: dict[str, dict], out: str) -> None:
    """The windows' lines printed, one a row, and written to `out` as JSON."""
    for name, row in rows.items():
        print(f"{name:20s} mean {row['mean']:.3f}  slope {row['slope_per_100k']:+.4f} +- {row['se']:.4f} per 100 k "
              f"env steps ({row['iterations']} iterations)")
    Path(out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main(tyro.cli(Args))
