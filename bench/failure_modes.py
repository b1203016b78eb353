"""Where the episodes fail: eval_generalization.py result directories -> per evaluation cell and checkpoint, the
counts of episodes whose cube was never held, held but not placed, or left on a receptacle the instruction did not
name.

Why: success_once says how often a checkpoint solves a cell, not what goes wrong in the other episodes. These
counts tell whether a change (an RL arm against its prior, greedy against sampled actions) moves the failures
from grasping (never held) to placing (held, not placed) or to language (wrong receptacle: e.g. an
`unseen_target` policy that goes to the train towel).

    python bench/failure_modes.py --evals runs/learning/eval_key runs/learning/eval_sib \
        --out bench/results/failure_modes.json --markdown

Counts come from the per-episode records eval_generalization.py keeps beside results.json
(`runs/<checkpoint slug>/<variant>.json`, fields success_once_per_episode, grasped_once_per_episode,
wrong_receptacle_at_end_per_episode; the last two are recorded for the built-in tasks only). Per cell and
checkpoint:
* success_once: episodes solved at some step; wrong_receptacle_at_end: as recorded;
* never_held = episodes - grasped_once (the cube never held at any step);
* held_not_placed = grasped_once - success_once - wrong_receptacle_at_end (an episode that succeeds has held
  the cube). The four numbers sum to the episodes; an episode that ends on a wrong receptacle without having
  been held (pushed there) counts in never_held and in wrong_receptacle_at_end, and makes held_not_placed one
  lower: the script says on stderr how many such episodes a cell has.

Cells and labels follow bench/learning_table.py: a cell is a variant (`train`, `unseen_target`, `red_cube`),
with the suffix `@T<T>` for an evaluation with sampled actions (`train@T1`: --temperature 1); a checkpoint is
labelled `prior` when it is the first of its evaluation, else by its algorithm directory or its name, or as
given with `--labels PATH=LABEL` (an arm evaluated in its own directory is first there: name it with --labels).

Writes `--out` as {"note", "cells": {cell: {label: {"episodes", "success_once", "never_held",
"held_not_placed", "wrong_receptacle_at_end"}}}}; with --markdown, also prints a table (one row per cell, one
column per checkpoint, "never held / held, not placed / wrong receptacle").
"""

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import tyro

sys.path.insert(0, str(Path(__file__).resolve().parent))
from learning_table import checkpoint_labels, parse_labels, read_results, sampled_suffix  # noqa: E402

PER_EPISODE = ("success_once_per_episode", "grasped_once_per_episode", "wrong_receptacle_at_end_per_episode")
MODES = ("never_held", "held_not_placed", "wrong_receptacle_at_end")
MODE_NAMES = ("never held", "held, not placed", "wrong receptacle")


@dataclass
class Args:
    evals: list[str]
    """eval_generalization.py output directories (each holds results.json and runs/); their first checkpoint is
    labelled `prior`"""
    out: str = "bench/results/failure_modes.json"
    """the JSON to write"""
    labels: list[str] = field(default_factory=list)
    """PATH=LABEL: name a checkpoint yourself (e.g. an RL checkpoint evaluated alone in its own directory, which
    would otherwise be its evaluation's `prior`: `.../iter_000120=ppo_it120`)"""
    markdown: bool = False
    """also print the Markdown table to stdout"""


def episodes_of(directory: str, checkpoint: dict, variant: str) -> dict[str, list[bool]]:
    """The per-episode records of one (checkpoint, variant) of an evaluation; exits with one line where they or
    one of their fields are missing."""
    file = Path(directory) / "runs" / checkpoint["slug"] / f"{variant}.json"
    if not file.is_file():
        sys.exit(f"error: no {file}: failure modes need the per-episode records eval_generalization.py keeps under "
                 f"<output dir>/runs/; pass the whole output directory (extract it first if it is archived)")
    cell = json.loads(file.read_text())
    if missing := [f for f in PER_EPISODE if f not in cell]:
        sys.exit(f"error: {file} has no {missing[0]}: eval_generalization.py records grasped_once and "
                 f"wrong_receptacle_at_end for the built-in tasks only (since they exist): leave this evaluation "
                 f"out, or evaluate again with the current eval_generalization.py")
    lengths = {len(cell[f]) for f in PER_EPISODE}
    if len(lengths) != 1:
        sys.exit(f"error: {file}: the per-episode lists differ in length ({sorted(lengths)}): evaluate this cell again")
    return {f: cell[f] for f in PER_EPISODE}


def count(episodes: dict[str, list[bool]]) -> dict[str, int]:
    """Per-episode records -> episodes, success_once and the three failure modes (definitions in the docstring)."""
    n = len(episodes["success_once_per_episode"])
    success, grasped, wrong = (sum(map(bool, episodes[f])) for f in PER_EPISODE)
    return {"episodes": n, "success_once": success, "never_held": n - grasped,
            "held_not_placed": grasped - success - wrong, "wrong_receptacle_at_end": wrong}


def unheld(episodes: dict[str, list[bool]]) -> int:
    """Episodes that succeeded or ended on a wrong receptacle without the cube held at any step (the arithmetic
    of held_not_placed assumes none)."""
    return sum(bool(s or w) and not g for s, g, w in zip(*(episodes[f] for f in PER_EPISODE), strict=True))


def markdown(cells: dict[str, dict[str, dict[str, int]]]) -> str:
    """One row per cell, one column per checkpoint label, `never held / held, not placed / wrong receptacle`."""
    labels = list(dict.fromkeys(label for by in cells.values() for label in by))
    lines = ["| cell | " + " | ".join(f"{label}: {' / '.join(MODE_NAMES)}" for label in labels) + " |",
             "|---|" + "---|" * len(labels)]
    for cell, by in cells.items():
        entries = [" / ".join(str(by[label][m]) for m in MODES) if label in by else "-" for label in labels]
        lines.append(f"| {cell} | " + " | ".join(entries) + " |")
    return "\n".join(lines) + "\n"


def seed_text(seed: int) -> str:
    """10000000 -> `10^7` (a power of ten), else the number."""
    return f"10^{len(str(seed)) - 1}" if seed >= 10 and str(seed).rstrip("0") == "1" else str(seed)


def main(args: Args) -> None:
    chosen = parse_labels(args.labels)
    cells: dict[str, dict[str, dict[str, int]]] = {}
    sources: dict[tuple[str, str], str] = {}
    seeds = []
    for directory in args.evals:
        results = read_results(directory)
        labels = checkpoint_labels([c["name"] for c in results["checkpoints"]], chosen)
        by_name = {c["name"]: c for c in results["checkpoints"]}
        seeds.append(results["settings"]["seed"])
        for row in results["results"]:
            cell, label = row["variant"] + sampled_suffix(results["settings"]), labels[row["checkpoint"]]
            if (cell, label) in sources:
                sys.exit(f"error: cell {cell}, checkpoint {label} comes from both {sources[cell, label]} and "
                         f"{directory}: name one of the checkpoints with --labels PATH=LABEL, or leave one out")
            sources[cell, label] = directory
            episodes = episodes_of(directory, by_name[row["checkpoint"]], row["variant"])
            counts = count(episodes)
            if counts["episodes"] != row["n"]:
                sys.exit(f"error: {directory}: {row['checkpoint']} / {row['variant']} has {counts['episodes']} "
                         f"episodes under runs/ but n = {row['n']} in results.json: rerun eval_generalization.py "
                         f"with the same --output-dir to rewrite results.json")
            if k := unheld(episodes):
                print(f"note: {cell} / {label}: {k} episode(s) solved or ended on a wrong receptacle without the "
                      f"cube held (counted in never_held; held_not_placed is {k} lower)", file=sys.stderr)
            cells.setdefault(cell, {})[label] = counts
    seed = " or ".join(dict.fromkeys(seed_text(s) for s in seeds))
    note = (f"counts over the test episodes (seeds {seed} + i) of each cell: success_once, grasped_once (the cube "
            "held at some step), wrong_receptacle_at_end, and held_not_placed = grasped - success - wrong receptacle "
            "(an episode that succeeds has held the cube)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"note": note, "cells": cells}, indent=1))
    if args.markdown:
        print(markdown(cells), end="")
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main(tyro.cli(Args))
