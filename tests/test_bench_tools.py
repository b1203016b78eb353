"""bench/plot_curves.py: reads the success scalars the RL scripts log and writes the curves it plotted."""

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
