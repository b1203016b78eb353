"""The learning experiment's final table: eval_generalization.py results -> counts, Wilson intervals and a
two-sided Fisher exact test of each checkpoint against the prior, per variant.

    python bench/learning_table.py --evals runs/learning/eval_key runs/learning/eval_other \
        --out bench/results/learning.json

Writes `--out` as {"variants": {variant: {label: [successes, episodes]}}, "p_vs_prior": {variant: {label: p}},
"checkpoints": {label: path}, "settings": [...]} and the Markdown table beside it (.md). Labels: `prior` for
the first checkpoint of every evaluation (the reference), else the algorithm directory a run or checkpoint
lives in (`.../ppo/<run>/checkpoints/iter_000120` -> `ppo`), or its own name where that is ambiguous.
An evaluation with sampled actions (eval_generalization.py --temperature T > 0) measures another quantity, the
stochastic policy that RL optimises, not its greedy mode: its labels get the suffix `@T<T>` (`prior@T1`,
`ppo@T1`) and their Fisher test is against the prior sampled at the same temperature.
"""

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import tyro
from scipy.stats import fisher_exact

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ALGORITHMS = ("ppo", "grpo", "reinforce")


@dataclass
class Args:
    evals: list[str]
    """eval_generalization.py output directories (each holds results.json); their first checkpoint is the prior"""
    out: str = "bench/results/learning.json"
    """the JSON to write (the Markdown table goes beside it as .md)"""
    labels: list[str] = field(default_factory=list)
    """PATH=LABEL: name a checkpoint yourself (e.g. several checkpoints of one run: `.../iter_000060=ppo_it60`)"""


def label_of(path: str, all_paths: list[str]) -> str:
    """A run or checkpoint under `.../ppo/` -> `ppo`; its own name when two evaluated paths share an algorithm."""
    p = Path(path.rstrip("/"))
    algorithm = next((q.name for q in p.parents if q.name in ALGORITHMS), None)
    if algorithm and sum(algorithm in Path(q.rstrip("/")).parts for q in all_paths) == 1:
        return algorithm
    return p.name


def parse_labels(pairs: list[str]) -> dict[Path, str]:
    """--labels PATH=LABEL ... -> {checkpoint path: label}; exits with one line on a pair without `=`."""
    if bad := [x for x in pairs if "=" not in x]:
        sys.exit(f"error: --labels takes PATH=LABEL, got {bad[0]!r}")
    return {Path(path.rstrip("/")): label for path, label in (x.rsplit("=", 1) for x in pairs)}


def checkpoint_labels(paths: list[str], chosen: dict[Path, str]) -> dict[str, str]:
    """One evaluation's checkpoint names -> labels: `prior` for the first, label_of for the others, and the
    labels given with --labels (parse_labels) over both."""
    labels = {paths[0]: "prior", **{p: label_of(p, paths[1:]) for p in paths[1:]}}
    labels.update({p: chosen[Path(p.rstrip("/"))] for p in paths if Path(p.rstrip("/")) in chosen})
    return labels


def sampled_suffix(settings: dict) -> str:
    """`@T<T>` for an evaluation with sampled actions (eval_generalization.py --temperature T > 0), else ``."""
    temperature = settings.get("temperature", 0.0)
    return f"@T{temperature:g}" if temperature else ""


def read_results(directory: str) -> dict:
    """An eval_generalization.py output directory -> its results.json; exits with one line where there is none."""
    file = Path(directory) / "results.json"
    if not file.is_file():
        sys.exit(f"error: no {file}: pass eval_generalization.py output directories (its report writes results.json; "
                 f"an interrupted evaluation writes it when rerun with the same --output-dir)")
    return json.loads(file.read_text())


def main(args: Args) -> None:
    # imported here: eval_generalization loads torch and the envs, which the helpers above (imported by
    # bench/failure_modes.py) do not need
    from eval_generalization import wilson_interval

    chosen = parse_labels(args.labels)
    counts: dict[str, dict[str, list[int]]] = {}
    checkpoints, settings = {}, []
    for directory in args.evals:
        results = read_results(directory)
        paths = [c["name"] for c in results["checkpoints"]]
        labels = checkpoint_labels(paths, chosen)
        # sampled actions: another quantity than the greedy cells, kept apart (see the docstring)
        labels = {p: label + sampled_suffix(results["settings"]) for p, label in labels.items()}
        checkpoints.update({labels[p]: p for p in paths})
        settings.append({"dir": directory, **results["settings"]})
        for row in results["results"]:
            successes = round(row["success_once"] * row["n"])
            counts.setdefault(row["variant"], {})[labels[row["checkpoint"]]] = [successes, row["n"]]
    def reference(label: str) -> str:  # the prior evaluated the same way (greedy, or sampled at the same T)
        return "prior" + label[label.index("@"):] if "@" in label else "prior"

    p_values = {
        variant: {label: fisher_exact([[s, n - s], [by[ref][0], by[ref][1] - by[ref][0]]])[1]
                  for label, (s, n) in by.items() if (ref := reference(label)) != label and ref in by}
        for variant, by in counts.items()
    }
    p_values = {variant: by for variant, by in p_values.items() if by}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"variants": counts, "p_vs_prior": p_values, "checkpoints": checkpoints,
                               "settings": settings}, indent=1))

    labels = list(dict.fromkeys(label for by in counts.values() for label in by))
    lines = ["| variant | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for variant, by in counts.items():
        cells = []
        for label in labels:
            if label not in by:
                cells.append("-")
                continue
            s, n = by[label]
            lo, hi = wilson_interval(s, n)
            p = p_values.get(variant, {}).get(label)
            cells.append(f"{s}/{n} = {s / n:.2f} [{lo:.2f}, {hi:.2f}]" + ("" if p is None else f", p = {p:.2g}"))
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    table = "\n".join(lines) + "\n"
    out.with_suffix(".md").write_text(
        "success_once, successes/episodes [95 % Wilson interval], two-sided Fisher exact p against the prior "
        "(greedy actions; `@T1`: sampled at temperature 1, against the prior sampled alike).\n\n"
        + table)
    print(table)


if __name__ == "__main__":
    main(tyro.cli(Args))
