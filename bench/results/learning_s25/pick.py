"""Session 25's pre-registered pick of a prior among SFT checkpoints (issue 12), from their validation cells.

Each `--evals` directory is eval_generalization.py's output for one checkpoint, named pick_s<seed>_<step> (step
`last` = the run's final checkpoint), with `train` and `unseen_target` (the plate) on validation seeds. The rule:
among checkpoints whose `train` greedy success lies in [0.30, 0.50] (the issue's range), the one with the most plate
successes (a prior that reads "plate" as well as "towel" fails by its motor skill, not by the words), ties to the
later step; if none is in range, the one whose `train` rate lies nearest 0.40. The chosen checkpoint is copied to
<learn-dir>/prior and the table of every candidate written to --out.

    python bench/results/learning_s25/pick.py --evals /tmp/learn/pick_* --learn-dir /tmp/learn_s25 --out pick.json
"""

import argparse
import json
import re
import shutil
from pathlib import Path

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--evals", nargs="+", required=True, help="pick_s<seed>_<step> directories")
parser.add_argument("--learn-dir", required=True, help="holds s<seed>/sft and s<seed>/sft-step<N>; gets prior/")
parser.add_argument("--out", required=True, help="the candidates and the choice, JSON")
args = parser.parse_args()

rows = []
for d in map(Path, args.evals):
    m = re.fullmatch(r"pick_s(\d+)_(\d+|last)", d.name)
    if not m or not (d / "results.json").is_file():
        print(f"[pick] skipped {d} (no results.json)")
        continue
    seed, step = m.groups()
    cells = {r["variant"]: r for r in json.loads((d / "results.json").read_text())["results"]}
    count = {v: [round(c["success_once"] * c["n"]), c["n"]] for v, c in cells.items()}
    sub = "sft" if step == "last" else f"sft-step{int(step):06d}"
    rows.append({"seed": int(seed), "step": step, "checkpoint": f"s{seed}/{sub}", "train": count["train"],
                 "unseen_target": count["unseen_target"]})
if not rows:
    raise SystemExit("[pick] no candidate has results")
rate = lambda r, v: r[v][0] / r[v][1]  # noqa: E731
order = lambda r: float("inf") if r["step"] == "last" else int(r["step"])  # noqa: E731
in_range = [r for r in rows if 0.30 <= rate(r, "train") <= 0.50]
if in_range:
    chosen = max(in_range, key=lambda r: (rate(r, "unseen_target"), order(r)))
else:
    chosen = min(rows, key=lambda r: (abs(rate(r, "train") - 0.40), -order(r)))
learn = Path(args.learn_dir)
shutil.rmtree(learn / "prior", ignore_errors=True)
shutil.copytree(learn / chosen["checkpoint"], learn / "prior")
rows.sort(key=lambda r: (r["seed"], order(r)))
result = {"rule": "train in [0.30, 0.50] on validation seeds, then the most plate successes, ties to the later "
                  "step; none in range: train nearest 0.40", "seeds": "openvla_envs.VALIDATION_SEED + i",
          "in_range": bool(in_range), "chosen": chosen["checkpoint"], "candidates": rows}
Path(args.out).write_text(json.dumps(result, indent=1))
for r in rows:
    print(f"[pick] {r['checkpoint']}: train {r['train'][0]}/{r['train'][1]}, plate {r['unseen_target'][0]}/{r['unseen_target'][1]}"
          + ("  <- chosen" if r is chosen else ""))
