"""bench/plot_curves.py: reads the success scalars the RL scripts log and writes the curves it plotted;
bench/learning_table.py: eval results -> counts, Fisher p against the prior."""

import json
import subprocess
import sys
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter

ROOT = Path(__file__).resolve().parents[1]


def _run_with_success(path: Path, values: list[float]) -> Path:
    with SummaryWriter(str(path)) as writer:
        for i, v in enumerate(values):
            writer.add_scalar("charts/success_once", v, (i + 1) * 100)
    return path


def test_plot_curves_labels_and_numbers(tmp_path):
    a = _run_with_success(tmp_path / "a", [0.0, 0.5, 1.0, 0.5])
    b = _run_with_success(tmp_path / "b", [0.25, 0.25])
    out = tmp_path / "curves.png"
    cmd = [sys.executable, str(ROOT / "bench/plot_curves.py"), "--runs", str(a), str(b),
           "--labels", "PPO", "GRPO", "--smooth", "2", "--out", str(out)]
    subprocess.run(cmd, check=True, capture_output=True)
    assert out.stat().st_size > 0
    curves = json.loads(out.with_suffix(".json").read_text())
    assert curves["PPO: charts/success_once"] == [[100, 0.0], [200, 0.5], [300, 1.0], [400, 0.5]]
    assert curves["GRPO: charts/success_once"] == [[100, 0.25], [200, 0.25]]


def test_plot_curves_rejects_a_label_count_mismatch(tmp_path):
    a = _run_with_success(tmp_path / "a", [0.0, 1.0])
    cmd = [sys.executable, str(ROOT / "bench/plot_curves.py"), "--runs", str(a), "--labels", "PPO", "GRPO",
           "--out", str(tmp_path / "c.png")]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode != 0
    assert "give one per run" in done.stderr
    assert not (tmp_path / "c.png").exists()


def _eval_results(directory: Path, checkpoints: list[str], cells: dict) -> Path:
    """A results.json as eval_generalization.py writes it: cells = {(checkpoint, variant): (successes, n)}."""
    directory.mkdir(parents=True)
    rows = [{"checkpoint": c, "variant": v, "n": n, "success_once": s / n} for (c, v), (s, n) in cells.items()]
    (directory / "results.json").write_text(json.dumps({
        "settings": {"episodes": 0, "seed": 10**7}, "checkpoints": [{"name": c} for c in checkpoints], "results": rows}))
    return directory


def test_learning_table_counts_and_fisher_p(tmp_path):
    ckpts = ["runs/learning/prior", "runs/learning/ppo/train__ppo__1__7/checkpoints/iter_000120"]
    key = _eval_results(tmp_path / "key", ckpts, {(ckpts[0], "train"): (70, 200), (ckpts[1], "train"): (170, 200),
                                                   (ckpts[0], "red_cube"): (50, 200), (ckpts[1], "red_cube"): (52, 200)})
    other = _eval_results(tmp_path / "other", ckpts, {(ckpts[0], "lighting"): (0, 100), (ckpts[1], "lighting"): (3, 100)})
    out = tmp_path / "learning.json"
    cmd = [sys.executable, str(ROOT / "bench/learning_table.py"), "--evals", str(key), str(other), "--out", str(out)]
    subprocess.run(cmd, check=True, capture_output=True)
    table = json.loads(out.read_text())
    assert table["variants"]["train"] == {"prior": [70, 200], "ppo": [170, 200]}
    assert table["variants"]["lighting"] == {"prior": [0, 100], "ppo": [3, 100]}
    assert table["p_vs_prior"]["train"]["ppo"] < 1e-20  # 0.35 -> 0.85 on 200 episodes each
    assert table["p_vs_prior"]["red_cube"]["ppo"] > 0.5  # 50 vs 52 of 200: no evidence
    assert "170/200 = 0.85" in out.with_suffix(".md").read_text()
    # --labels names checkpoints explicitly (two checkpoints of one run would otherwise share "ppo")
    cmd += ["--labels", f"{ckpts[1]}=ppo_it120"]
    subprocess.run(cmd, check=True, capture_output=True)
    assert json.loads(out.read_text())["variants"]["train"] == {"prior": [70, 200], "ppo_it120": [170, 200]}
