"""sft_openvla.py: scripted demos -> norm stats -> training loss falls -> a checkpoint every script loads."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from script_harness import run_in_process

ROOT = Path(__file__).resolve().parents[1]
NORM_KEY = "sft_test"


def run_sft(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "sft_openvla.py"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=900)


def scalars(run_dir: Path, tag: str) -> list[float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir)).Reload()
    return [e.value for e in events.Scalars(tag)]


@pytest.fixture(scope="module")
def sft_run(tiny_dir, tmp_path_factory):
    """One CLI run: 2 demos of `train` (45-step episodes, 2 envs; the executed expert detours over the decoy in
    every one), 24 steps of full fine-tuning with a cosine learning rate held at its peak for 8 steps and the
    auxiliary state head, one eval, an extra checkpoint at step 12."""
    work = tmp_path_factory.mktemp("sft")
    proc = run_sft("--vla-path", str(tiny_dir), "--variants", "train", "--demos-per-task", "2", "--num-envs", "2",
                   "--episode-steps", "45", "--steps-after-success", "2", "--expert-noise", "0.02",
                   "--demos-path", "demos.npz", "--output-dir", "ckpt", "--norm-key", NORM_KEY,
                   "--max-steps", "24", "--save-every", "12", "--batch-size", "8", "--learning-rate", "1e-3", "--log-every", "4",
                   "--lr-schedule", "cosine", "--lr-hold-steps", "8", "--eval-every", "0", "--eval-episodes", "2",
                   "--state-aux-coef", "1", "--expert-detour-prob", "1", cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return work, proc


def test_demos_keep_only_successful_episodes_cut_after_success(sft_run):
    work, proc = sft_run
    with np.load(work / "demos.npz", allow_pickle=False) as demos:
        starts, images, actions = demos["episode_starts"], demos["images"], demos["actions"]
        assert len(demos["instructions"]) == 2 and list(demos["variants"]) == ["train", "train"]
        assert set(demos["instructions"]) == {"put the green cube on the towel"}
        assert starts[0] == 0 and starts[-1] == len(actions) == len(images) == len(demos["episode_index"])
        assert (demos["episode_index"][starts[1] :] == 1).all() and (demos["episode_index"][: starts[1]] == 0).all()
    assert images.dtype == np.uint8 and images.shape[1:] == (224, 224, 3) and actions.shape[1:] == (7,)
    # stored up to the first success + 2 steps: shorter than the 45-step episode, and the gripper closed
    # (grasp) then opened again (release) in every episode
    lengths = np.diff(starts)
    assert (lengths < 45).all()
    for s, e in zip(starts[:-1], starts[1:], strict=True):
        assert (actions[s:e, 6] == -1).any() and actions[e - 1, 6] == 1
    # DART: the envs ran noisy actions, the labels are the clean expert's, which never rotates
    assert (actions[:, 3:6] == 0).all() and (actions[:, :3] != 0).any()
    assert "kept 2 successful" in proc.stdout


def test_demos_store_the_simulators_state_and_the_state_head_learns_it(sft_run):
    """--state-aux-coef (deviation 7): each stored step has the simulator's state behind its image, and the head's
    error on the standardised state (1 = the mean's) falls; the head is not part of the saved checkpoint."""
    from openvla_envs import BUILTIN_STATE_LAYOUT as layout
    from openvla_patch import read_state_dict

    work, proc = sft_run
    with np.load(work / "demos.npz", allow_pickle=False) as demos:
        states, actions, starts = demos["states"], demos["actions"], demos["episode_starts"]
    assert states.dtype == np.float32 and states.shape == (len(actions), 42)
    tcp, cube, grasped = (states[:, layout[k]] for k in ("tcp_pose", "obj_pose", "is_grasped"))
    np.testing.assert_allclose(states[:, layout["tcp_to_obj_pos"]], cube[:, :3] - tcp[:, :3], atol=1e-5)
    for s, e in zip(starts[:-1], starts[1:], strict=True):  # each episode starts ungrasped and is grasped later
        assert grasped[s] == 0 and grasped[s:e].max() == 1
    (run_dir,) = (work / "runs").iterdir()
    state_losses = scalars(run_dir, "losses/state_aux_loss")
    assert len(state_losses) == 6 and state_losses[-1] < 0.5 * state_losses[0], state_losses
    assert "state head" in proc.stdout and "(not saved)" in proc.stdout
    assert not any("state_head" in k for k in read_state_dict(work / "ckpt"))


def test_detour_demos_move_the_cube_away_from_the_target_under_labels_toward_it(sft_run):
    """--expert-detour-prob 1 (deviation 8): in every demonstration the cube, held, moves away from the instructed
    receptacle at some step (the executed detour over the decoy) while the stored label points toward it (the
    clean expert's): the frames where "go to the nearer receptacle" and the instruction disagree."""
    from openvla_envs import BUILTIN_STATE_LAYOUT as layout

    work, _ = sft_run
    with np.load(work / "demos.npz", allow_pickle=False) as demos:
        states, actions, starts = demos["states"], demos["actions"], demos["episode_starts"]
    cube, goal = states[:, layout["obj_pose"]][:, :2], states[:, layout["goal_pos"]][:, :2]
    grasped = states[:, layout["is_grasped"]][:, 0] > 0
    for s, e in zip(starts[:-1], starts[1:], strict=True):
        to_goal, moved = goal[s:e - 1] - cube[s:e - 1], cube[s + 1:e] - cube[s:e - 1]
        toward = (actions[s:e - 1, :2] * to_goal).sum(1) > 0
        away = (moved * to_goal).sum(1) < -0.01 * np.linalg.norm(to_goal, axis=1)
        assert (toward & away & grasped[s:e - 1]).any(), (s, e)


def test_training_loss_falls_and_eval_is_logged(sft_run):
    work, _ = sft_run
    (run_dir,) = (work / "runs").iterdir()
    losses = scalars(run_dir, "losses/train_loss")
    assert len(losses) == 6
    assert losses[-1] < losses[0] - 1.0, losses  # starts near ln(32064) = 10.4 for a random model
    accuracy = scalars(run_dir, "charts/action_accuracy")
    assert all(0 <= a <= 1 for a in accuracy)
    (success,) = scalars(run_dir, "eval/train/success_once")
    assert 0 <= success <= 1


def test_cosine_schedule_and_action_entropy_are_logged(sft_run):
    """--lr-schedule cosine --lr-hold-steps 8: 1e-3 for 8 steps, then 1e-3 * (1 + cos(pi * (step - 8) / 16)) / 2
    after each step, 0 at the last; each action token's entropy over the 256 bins is logged and printed with
    the evaluation."""
    work, proc = sft_run
    (run_dir,) = (work / "runs").iterdir()
    rates = scalars(run_dir, "charts/learning_rate")
    expected = [1e-3 * (1 + np.cos(np.pi * max(0, step - 8) / 16)) / 2 for step in (4, 8, 12, 16, 20, 24)]
    np.testing.assert_allclose(rates, expected, atol=1e-9)
    assert rates[:2] == pytest.approx([1e-3, 1e-3]) and rates[-1] < 1e-12  # held, then decayed to 0
    for name in ("x", "y", "z", "roll", "pitch", "yaw", "gripper"):
        entropies = scalars(run_dir, f"charts/entropy_{name}")
        assert len(entropies) == 6 and all(0 <= e <= np.log(256) + 1e-4 for e in entropies), (name, entropies)
    assert "entropy per x/y/z token" in proc.stdout


def test_checkpoint_loads_with_new_unnorm_key_and_demo_quantiles(sft_run, tiny_dir):
    from openvla_patch import action_stats, load_vla, read_config

    work, _ = sft_run
    with np.load(work / "demos.npz", allow_pickle=False) as demos:
        actions = demos["actions"]
    model, processor = load_vla(str(work / "ckpt"), dtype=torch.float32)
    stats = action_stats(model.config, NORM_KEY)
    np.testing.assert_allclose(stats["q01"].numpy(), np.quantile(actions, 0.01, axis=0), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(stats["q99"].numpy(), np.quantile(actions, 0.99, axis=0), rtol=1e-6, atol=1e-7)
    assert stats["mask"].tolist() == [True] * 6 + [False]
    # the original keys survive, so the checkpoint still decodes the built-in tasks' raw actions
    assert set(read_config(tiny_dir).norm_stats) < set(model.config.norm_stats)
    # and the weights are the trained ones, not the tiny model's
    base, _ = load_vla(str(tiny_dir), dtype=torch.float32)
    assert not torch.equal(base.projector.fc1.weight, model.projector.fc1.weight)
    # --save-every 12 kept the step-12 checkpoint beside the final one; it holds other (earlier) weights
    assert sorted(p.name for p in work.iterdir() if p.name.startswith("ckpt")) == ["ckpt", "ckpt-step000012"]
    early, _ = load_vla(str(work / "ckpt-step000012"), dtype=torch.float32)
    assert not torch.equal(early.projector.fc1.weight, model.projector.fc1.weight)


def test_augment_crops_and_jitters_deterministically():
    from sft_openvla import augment

    images = torch.randint(0, 256, (3, 224, 224, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    a = augment(images, torch.Generator().manual_seed(1))
    b = augment(images, torch.Generator().manual_seed(1))
    assert a.dtype == torch.uint8 and a.shape == images.shape
    assert torch.equal(a, b) and not torch.equal(a, images)
    # a flat grey image stays flat under crop + brightness/contrast/saturation jitter
    grey = torch.full((2, 224, 224, 3), 128, dtype=torch.uint8)
    out = augment(grey, torch.Generator().manual_seed(2))
    assert (out.float().std(dim=(1, 2, 3)) < 1).all()


def test_demos_are_written_compressed_or_raw_and_read_back_the_same(tmp_path):
    """save_demos (--compress-demos, the default, or --no-compress-demos): the same arrays either way; raw is the
    larger file (an image of zeros compresses to almost nothing)."""
    from sft_openvla import save_demos

    demos = {"images": np.zeros((4, 32, 32, 3), np.uint8), "actions": np.arange(28, dtype=np.float32).reshape(4, 7),
             "instructions": np.array(["put the green cube on the towel"])}
    for name, compress in (("small.npz", True), ("raw.npz", False)):
        save_demos(demos, tmp_path / name, compress)
        with np.load(tmp_path / name, allow_pickle=False) as back:
            assert set(back.files) == set(demos) and all(np.array_equal(back[k], v) for k, v in demos.items())
    assert (tmp_path / "raw.npz").stat().st_size > 5 * (tmp_path / "small.npz").stat().st_size
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw.npz", "small.npz"]  # no temporary file left


@pytest.mark.parametrize(("args", "needle"), [
    (["--variants", "train", "no_such_variant"], "unknown variant(s) no_such_variant"),
    (["--demos-per-task", "0", "--demos-path", "missing.npz"], "no demonstrations file"),
    (["--lr-hold-steps", "100", "--max-steps", "100", "--lr-schedule", "cosine"], "--lr-hold-steps 100 needs"),
    (["--lr-hold-steps", "10"], "needs --lr-schedule cosine"),
    (["--state-aux-coef", "-1"], "--state-aux-coef -1.0 must be >= 0"),
    (["--expert-detour-prob", "1.5"], "--expert-detour-prob 1.5 must lie in [0, 1]"),
])
def test_bad_input_exits_2_with_one_line(args, needle, tmp_path):
    # in-process (the CLI itself is covered by the subprocess runs above): the imports are paid once
    code, _, stderr = run_in_process("sft_openvla.py", args, tmp_path)
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], lines
