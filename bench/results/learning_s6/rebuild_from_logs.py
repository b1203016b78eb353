"""The e4/vis evaluations' results.json were lost with the machine (only their logs came back): rebuild them
from the table eval_generalization.py printed (success_once and n per cell; exact: success_once = s / n)."""
import json
import re
from pathlib import Path

for log, out in [("out/eval_e4.log", "ev/eval_key_e4"), ("out/eval_vis.log", "ev/eval_key_vis80"),
                 ("out/eval_vis100.log", "ev/eval_key_vis100")]:
    text = Path(log).read_text()
    ckpt = re.findall(r"^### (\S+) \(unnorm_key", text, re.M)[-1]
    row = re.search(r"^\| train \| train \| ([0-9.]+) \| \[[^]]+\] \| ([0-9.]+) \| \[[^]]+\] \| (\d+) \|", text, re.M)
    so, sae, n = float(row[1]), float(row[2]), int(row[3])
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "results.json").write_text(json.dumps({
        "settings": {"episodes": n, "seed": 10_000_000, "temperature": 0.0, "decoding": "greedy",
                     "max_episode_steps": 80, "variants": ["train"], "source": f"rebuilt from {Path(log).name}"},
        "checkpoints": [{"name": "/tmp/learn/prior"}, {"name": ckpt}],
        "results": [{"checkpoint": ckpt, "variant": "train", "category": "train", "n": n, "success_once": so,
                     "success_at_end": sae}]}, indent=1))
    print(out, ckpt, so, n, round(so * n))
