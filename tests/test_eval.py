"""eval_generalization.py: Wilson intervals, checkpoint resolution, the suite end to end, resuming, bad input."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from script_harness import run_in_process

ROOT = Path(__file__).resolve().parents[1]


def run_eval(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "eval_generalization.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=900)


def test_wilson_interval_hand_computed():
    from eval_generalization import wilson_interval

    # 8 / 10, z = 1.96: centre (0.8 + 0.19208) / 1.38416 = 0.71674,
    # half-width 1.96 sqrt(0.016 + 0.009604) / 1.38416 = 0.22658 -> [0.49016, 0.94332]
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.49016, abs=1e-4) and hi == pytest.approx(0.94332, abs=1e-4)
    # 0 / 10: [0, z^2 / (n + z^2)] = [0, 3.8415 / 13.8415]
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.27753), abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    # exactly 0 at 0 / n and 1 at n / n: the bar chart's error bars (p - lo, hi - p) must not go negative,
    # which rounding made them do at 0 / 200 (a crash in a real evaluation)
    assert wilson_interval(0, 200)[0] == 0.0 and wilson_interval(200, 200)[1] == 1.0


@pytest.fixture(scope="module")
def rl_run_dir(tiny_dir, tmp_path_factory) -> Path:
    """An RL run directory as ppo writes it, with a perturbed LoRA adapter at iter_000010 (the newest)."""
    from openvla_patch import BUILTIN_NORM_KEY, LoraSettings, load_vla, save_adapter

    run = tmp_path_factory.mktemp("rl") / "ppo_run"
    model, _ = load_vla(str(tiny_dir), dtype=torch.float32, lora=LoraSettings(rank=4))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.add_(torch.randn_like(p) * 0.5)
    for iteration in (2, 10):
        ckpt = run / "checkpoints" / f"iter_{iteration:06d}"
        ckpt.mkdir(parents=True)
        save_adapter(model, ckpt, base_path=str(tiny_dir))
        info = {"vla_path": str(tiny_dir), "unnorm_key": BUILTIN_NORM_KEY, "iteration": iteration,
                "global_step": 4 * iteration, "args": {}}
        (ckpt / "openvla_rl.json").write_text(json.dumps(info))
    return run


def test_run_dir_resolves_to_newest_adapter(rl_run_dir, tiny_dir):
    from eval_generalization import resolve_checkpoint

    ckpt = resolve_checkpoint(str(rl_run_dir), "auto", "panda_tabletop")
    assert ckpt.kind == "adapter" and Path(ckpt.path).name == "iter_000010" and ckpt.base == str(tiny_dir)
    assert resolve_checkpoint("tiny", "my_key", "panda_tabletop").unnorm_key == "my_key"


@pytest.fixture(scope="module")
def suite(tiny_dir, rl_run_dir, tmp_path_factory):
    """tiny vs the RL run, on 2 variants x 2 episodes of 4 steps (one env: the workers' start-up dominates)."""
    work = tmp_path_factory.mktemp("eval")
    args = ["--checkpoints", str(tiny_dir), str(rl_run_dir), "--variants", "train", "red_cube", "--episodes", "2",
            "--num-envs", "1", "--max-episode-steps", "4", "--videos-per-variant", "1", "--output-dir", "out"]
    proc = run_eval(*args, cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return work / "out", proc


def test_table_json_png_videos(suite, tiny_dir, rl_run_dir):
    out, proc = suite
    assert "| variant | category | success_once | 95% CI | success_at_end | 95% CI | n | grasped once |" in proc.stdout
    assert f"Δ success_once vs {tiny_dir}" in proc.stdout and "greedy decoding" in proc.stdout
    results = json.loads((out / "results.json").read_text())
    assert set(results) == {"settings", "checkpoints", "results"}
    assert results["settings"]["decoding"] == "greedy" and results["settings"]["variants"] == ["train", "red_cube"]
    first, second = results["checkpoints"]
    assert first["kind"] == "base" and second["kind"] == "adapter" and second["path"].endswith("iter_000010")
    rows = results["results"]
    assert [(r["checkpoint"], r["variant"]) for r in rows] == [
        (str(tiny_dir), "train"), (str(tiny_dir), "red_cube"), (str(rl_run_dir), "train"), (str(rl_run_dir), "red_cube")]
    for r in rows:
        assert set(r) == {"checkpoint", "variant", "category", "n", "success_once", "success_at_end",
                          "success_once_ci", "success_at_end_ci", "episodic_return", "diff_success_once",
                          "grasped_once", "wrong_receptacle_at_end"}
        assert 0 <= r["grasped_once"] <= 1 and r["wrong_receptacle_at_end"] == 0  # 4 steps: nothing placed
        assert r["n"] == 2 and r["category"] == {"train": "train", "red_cube": "vision"}[r["variant"]]
        lo, hi = r["success_once_ci"]
        assert 0 <= lo <= r["success_once"] <= hi <= 1
    assert rows[0]["diff_success_once"] is None and rows[1]["diff_success_once"] is None
    assert rows[2]["diff_success_once"] == pytest.approx(rows[2]["success_once"] - rows[0]["success_once"])
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Δ success_once vs" in (out / "results.md").read_text()
    videos = sorted(out.glob("videos/*/*.mp4"))
    assert len(videos) == 4 and all(v.stat().st_size > 1000 for v in videos)
    cell = json.loads(next(out.glob("runs/*/red_cube.json")).read_text())
    assert len(cell["success_once_per_episode"]) == 2 and cell["settings"]["max_episode_steps"] == 4
    assert len(cell["grasped_once_per_episode"]) == len(cell["wrong_receptacle_at_end_per_episode"]) == 2


@pytest.fixture(scope="module")
def rerun(suite, tiny_dir, rl_run_dir, tmp_path_factory, renderer_kept_alive):
    """The suite's output (copied) evaluated again with the same settings over `train`, whose cells are finished,
    and `dynamic_noise_weak`, whose are not: one run checks resuming and, `train` and `dynamic_noise_weak` both
    being in RL4VLA's suite, the RL4VLA report end to end (a run of its own cost ~70 s, mostly env start-up).
    -> (output dir, its stdout, the cell files' mtimes before the run)."""
    work = tmp_path_factory.mktemp("rerun")
    out = work / "out"
    shutil.copytree(suite[0], out)
    before = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/*.json")}
    code, stdout, stderr = run_in_process(
        "eval_generalization.py", ["--checkpoints", str(tiny_dir), str(rl_run_dir), "--variants", "train",
                                   "dynamic_noise_weak", "--episodes", "2", "--num-envs", "1", "--max-episode-steps",
                                   "4", "--videos-per-variant", "0", "--output-dir", "out"], work)
    assert code == 0, stderr[-3000:]
    return out, stdout, before


def test_rerun_skips_finished_cells(rerun):
    out, stdout, before = rerun
    assert len(before) == 4  # the suite's 2 checkpoints x (train, red_cube)
    assert "2 finished (checkpoint, variant) results" in stdout  # train, for both checkpoints
    assert {p: p.stat().st_mtime_ns for p in before} == before  # not re-run, not rewritten
    assert len(list(out.glob("runs/*/dynamic_noise_weak.json"))) == 2  # the unfinished cells did run


@pytest.mark.parametrize(("args", "needle"), [
    (["--variants", "train", "no_such_variant"], "unknown env or variant 'no_such_variant'"),
    (["--suite", "simpler"], "download them with"),
    (["--suite", "rl4vla_assets"], "github.com/gen-robot/RL4VLA"),  # RL4VLA's ManiSkill fork is not installed here
])
def test_bad_input_exits_2_with_one_line(args, needle, tmp_path):
    # in-process (the CLI itself is covered by the subprocess runs above): the imports are paid once
    code, _, stderr = run_in_process("eval_generalization.py", ["--checkpoints", "tiny", *args], tmp_path)
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], lines


def test_rl4vla_variants_get_rl4vla_summary_end_to_end(rerun, tiny_dir, rl_run_dir):
    out, _, _ = rerun
    results = json.loads((out / "results.json").read_text())
    summary = results["rl4vla_summary"]
    assert [(s["checkpoint"], s["group"]) for s in summary] == [
        (str(c), g) for c in (tiny_dir, rl_run_dir) for g in ("in_distribution", "vision", "ood")]
    assert summary[2]["variants"] == ["dynamic_noise_weak"]
    assert "### RL4VLA's table: success_at_end (%)" in (out / "results.md").read_text()
    assert (out / "results_rl4vla.png").read_bytes()[:4] == b"\x89PNG"


def test_rl4vla_summary_pools_categories_and_lays_out_rl4vla_table():
    from eval_generalization import Checkpoint, rl4vla_summary, rl4vla_tables, wilson_interval

    rates = {"train": 0.6, "unseen_table": 0.2, "dynamic_noise_weak": 0.4, "unseen_objects": 1.0, "unseen_position": 0.0}
    cats = {"train": "train", "unseen_objects": "semantic", "unseen_position": "execution"}
    rows = [{"checkpoint": "a", "variant": v, "category": cats.get(v, "vision"), "n": 10, "success_once": r,
             "success_at_end": r / 2} for v, r in rates.items()]
    summary = rl4vla_summary(rows, [Checkpoint("a", "a", "a", "base", "k")])
    by_group = {s["group"]: s for s in summary}
    assert list(by_group) == ["in_distribution", "vision", "semantic", "execution", "ood"]
    assert by_group["vision"]["variants"] == ["unseen_table", "dynamic_noise_weak"] and by_group["vision"]["n"] == 20
    assert by_group["vision"]["success_once"] == pytest.approx(0.3)  # (2 + 4) / 20 = the mean of the rates
    assert by_group["ood"]["success_once"] == pytest.approx(0.4) and by_group["ood"]["n"] == 40  # (2+4+10+0) / 40
    assert by_group["ood"]["success_once_ci"] == pytest.approx(list(wilson_interval(16, 40)))
    assert by_group["in_distribution"]["success_at_end"] == pytest.approx(0.3)
    table = rl4vla_tables(rows, summary, [Checkpoint("a", "a", "a", "base", "k")])
    header = ("| checkpoint | train (in-dist.) | unseen_table | dynamic_noise_weak | **vision mean** | unseen_objects | "
              "**semantic mean** | unseen_position | **execution mean** | **ood mean** |")
    assert header in table and "### RL4VLA's table: success_at_end (%)" in table
    assert "| a | 60.0 | 20.0 | 40.0 | 30.0 | 100.0 | 100.0 | 0.0 | 0.0 | 40.0 |" in table  # success_once
    assert "| a | 30.0 | 10.0 | 20.0 | 15.0 | 50.0 | 50.0 | 0.0 | 0.0 | 20.0 |" in table  # success_at_end
