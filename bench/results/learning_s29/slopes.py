"""Session 29, issue 12: the 48-env arm's rollout success against env steps, window by window, as session 28's
slopes.py measures it (ordinary least-squares slope per 100 k env steps with its standard error, and the window's
mean), from its fork at iteration 584 (1.12 M env steps) to iteration 900 (2.33 M).

    python bench/results/learning_s29/slopes.py --wide <state48 run dir> --out bench/results/learning_s29/slopes.json
"""
import sys
from dataclasses import dataclass
from pathlib import Path

import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "learning_s28"))
from slopes import line, report, success  # noqa: E402  (session 28's reader, fit and report)


@dataclass
class Args:
    wide: str
    """the 48-env run's directory (every event file since its start)"""
    out: str = "slopes.json"


def main(args: Args) -> None:
    steps, values = success(args.wide)
    windows = {"1.12-1.42M (s28)": (1_121_280, 1_424_640), "1.42-1.83M (s29 A)": (1_424_640, 1_831_680),
               "1.83-2.33M (s29 B)": (1_831_680, 2_334_720), "1.42-2.33M": (1_424_640, 2_334_720)}
    report({name: line(steps, values, lo, hi) for name, (lo, hi) in windows.items()}, args.out)


if __name__ == "__main__":
    main(tyro.cli(Args))
