"""Tests of openvla_envs.py on the CPU (SAPIEN renders with Mesa's lavapipe). The worker-process
back-end is built once per module; single in-process envs check the variants, which is cheap after
the first env of the process."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from mani_skill.utils.geometry.rotation_conversions import euler_angles_to_matrix
from transforms3d.euler import euler2mat

import openvla_envs as oe
import openvla_patch as ovp

SEED = 3


# ----------------------------------------------------------------------------------------------------
# Action conversion, names, assets (no simulation)
# ----------------------------------------------------------------------------------------------------
def test_panda_actions_are_the_controller_actions_clipped():
    a = np.array([[0.5, -0.25, 1.7, -3.0, 0.1, 0.0, -1.0], [0, 0, 0, 0, 0, 0, 1.0]])
    out = oe.openvla_to_controller(torch.tensor(a), "panda")
    assert out.dtype == np.float32 and out.shape == (2, 7)
    np.testing.assert_allclose(out[0], [0.5, -0.25, 1.0, -1.0, 0.1, 0.0, -1.0])
    assert out[1, 6] == 1.0  # 1 = open, passed through
    stats = oe.PANDA_NORM_STATS["panda_tabletop"]["action"]
    assert stats["q01"] == [-1.0] * 7 and stats["q99"] == [1.0] * 7 and stats["mask"] == [True] * 6 + [False]
    # the model side decodes the built-in tasks with the same entry (tiny checkpoints ship it)
    model_side = ovp.BUILTIN_NORM_STATS["action"]
    assert oe.PANDA_NORM_STATS[ovp.BUILTIN_NORM_KEY]["action"]["q01"] == model_side["q01"]
    assert stats["q99"] == model_side["q99"] and stats["mask"] == model_side["mask"]


def test_widowx_conversion_axes_gripper_and_units():
    a = np.array(
        [
            [
                0.02,
                -0.01,
                0.3,
                0.1,
                0.0,
                0.0,
                1.0,
            ],  # pure roll; a large dz is not clipped (metres, unnormalised)
            [0.0, 0.0, 0.0, 0.0, 0.0, -0.2, 0.0],  # pure yaw, gripper closed
            [0.0, 0.0, 0.0, 0.0, 0.15, 0.0, 0.7],  # pure pitch, gripper 0.7 -> open
        ]
    )
    out = oe.openvla_to_controller(a, "widowx")
    np.testing.assert_allclose(out[:, :3], a[:, :3], atol=1e-7)
    np.testing.assert_allclose(out[:, 3:6], a[:, 3:6], atol=1e-6)  # single-axis rotations are unchanged
    np.testing.assert_array_equal(out[:, 6], [1.0, -1.0, 1.0])


def test_widowx_rotation_is_the_same_rotation_in_the_controllers_convention():
    rpy = np.array([[0.3, -0.2, 0.5], [-0.1, 0.25, -0.4]])
    out = oe.openvla_to_controller(np.concatenate([np.zeros((2, 3)), rpy, np.ones((2, 1))], 1), "widowx")
    controller = euler_angles_to_matrix(torch.tensor(out[:, 3:6], dtype=torch.float64), "XYZ").numpy()
    bridge = np.stack([euler2mat(*r, axes="sxyz") for r in rpy])
    np.testing.assert_allclose(controller, bridge, atol=1e-6)
    assert not np.allclose(out[:, 3:6], rpy, atol=1e-3)  # composed rotations do need converting


def test_unknown_names_raise_with_the_valid_list():
    with pytest.raises(ValueError, match="train.*cube_moved.*PutCarrotOnPlateInScene-v1"):
        oe.make_envs("no_such_variant", 1)
    with pytest.raises(ValueError, match="widowx"):
        oe.openvla_to_controller(np.zeros((1, 7)), "ur5")


def test_missing_bridge_assets_name_the_download_command():
    from mani_skill.utils.assets.data import is_data_source_downloaded

    if is_data_source_downloaded("bridge_v2_real2sim") and is_data_source_downloaded("widowx250s"):
        pytest.skip("the Bridge assets are installed here")
    with pytest.raises(oe.MissingAssetsError) as err:
        oe.make_envs("PutCarrotOnPlateInScene-v1", 1)
    msg = str(err.value)
    assert "\n" not in msg and "python -m mani_skill.utils.download_asset bridge_v2_real2sim" in msg


# ----------------------------------------------------------------------------------------------------
# The CPU worker back-end
# ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def envs():
    envs = oe.make_envs("train", 2, backend="cpu", max_episode_steps=60)
    yield envs
    envs.close()


def test_same_seeds_same_images_different_seeds_different_layouts(envs):
    images, instructions = envs.reset([SEED, SEED])
    assert images.shape == (2, 224, 224, 3) and images.dtype == torch.uint8 and images.device.type == "cpu"
    assert instructions == ["put the green cube on the towel"] * 2 and envs.robot == "panda"
    assert torch.equal(images[0], images[1])
    images, _ = envs.reset([0, 1])
    assert (images[0].int() - images[1].int()).abs().gt(30).sum() > 200


def test_expert_episode_through_workers(envs):
    first, _ = envs.reset([0, 1])
    total = torch.zeros(2)
    for t in range(envs.max_episode_steps):
        images, rewards, dones, infos = envs.step(envs.expert_actions())
        assert rewards.dtype == torch.float32 and rewards.shape == (2,) and dones.dtype == torch.bool
        assert dones.all() == (t == envs.max_episode_steps - 1)  # fixed length, no early end on success
        torch.testing.assert_close(rewards, infos["success"].float())  # sparse reward = success indicator
        total += rewards
    assert infos["success_once"].all() and infos["success_at_end"].all()
    torch.testing.assert_close(infos["episodic_return"], total)
    with pytest.raises(RuntimeError, match="reset"):
        envs.step(np.zeros((2, 7)))
    again, _ = envs.reset([0, 1])
    assert torch.equal(first, again)  # reruns with the same seeds reproduce


# ----------------------------------------------------------------------------------------------------
# Variants, on single in-process envs
# ----------------------------------------------------------------------------------------------------
def single(variant: str, obs_mode: str = "rgb", **kwargs) -> gym.Env:
    return gym.make(
        oe.TABLETOP_ENV_ID,
        obs_mode=obs_mode,
        control_mode="pd_ee_delta_pose",
        render_backend="cpu",
        **oe.VARIANTS[variant].env_kwargs,
        **kwargs,
    )


@pytest.fixture(scope="module")
def first_images() -> dict[str, np.ndarray]:
    """The seed-SEED first image of every variant (int, so differences do not wrap)."""
    images = {}
    for name in oe.VARIANTS:
        env = single(name)
        obs, _ = env.reset(seed=SEED)
        images[name] = obs["sensor_data"]["third_view"]["rgb"][0].numpy().astype(int)
        env.close()
    return images


def green(image: np.ndarray) -> np.ndarray:
    r, g, b = image[..., 0], image[..., 1], image[..., 2]
    return (g > r + 40) & (g > b + 40)


def test_vision_variants_change_the_image_as_claimed(first_images):
    train = first_images["train"]
    cube = green(train)
    assert cube.sum() > 50
    red = first_images["red_cube"]
    assert not green(red).any() and (red[cube][:, 0] > red[cube][:, 1] + 50).mean() > 0.8
    table = first_images["table_color"][200:]  # the near table edge, free of objects
    assert (
        table[..., 2].mean() > table[..., 0].mean()
        and train[200:][..., 0].mean() > train[200:][..., 2].mean() + 50
    )
    distractor = first_images["distractor_cube"]
    blue = (distractor[..., 2] > distractor[..., 0] + 40) & (distractor[..., 2] > distractor[..., 1] + 40)
    assert blue.sum() > 50 and green(distractor).sum() > 0.8 * cube.sum()  # the green cube stays where it was
    assert first_images["lighting"].mean() < 0.8 * train.mean()


def test_language_variants(first_images):
    assert np.array_equal(first_images["unseen_phrasing"], first_images["train"])  # same scene, new words
    phrasing = single("unseen_phrasing", obs_mode="state").unwrapped
    assert phrasing.get_language_instruction() == ["place the green block onto the cloth"]
    env = single("unseen_target", obs_mode="state")
    u = env.unwrapped
    assert u.get_language_instruction() == ["put the green cube on the plate"]
    env.reset(seed=SEED)
    for _ in range(80):
        _, _, _, _, info = env.step(u.expert_action())
    assert info["success"].item()
    assert (
        torch.linalg.norm(u.cube.pose.p[0, :2] - u.plate.pose.p[0, :2]) < oe.PLATE_RADIUS
    )  # on the plate, not the towel


def test_execution_variants():
    ys = {}
    for name in ("train", "unseen_positions"):
        env = single(name, obs_mode="state")
        ys[name] = []
        for seed in range(8):
            env.reset(seed=seed)
            ys[name].append(abs(env.unwrapped.cube.pose.p[0, 1].item()))
    assert max(ys["train"]) <= 0.14 < 0.19 <= min(ys["unseen_positions"])

    tcp = {}
    for name in ("train", "unseen_ee_pose"):
        env = single(name, obs_mode="state")
        env.reset(seed=SEED)
        tcp[name] = env.unwrapped.agent.tcp_pose.p[0]
    assert torch.linalg.norm(tcp["train"] - tcp["unseen_ee_pose"]) > 0.05

    moved = {}
    for name in ("train", "cube_moved"):
        env = single(name, obs_mode="state")
        env.reset(seed=SEED)
        path = [env.unwrapped.cube.pose.p[0].clone()]
        for _ in range(11):  # the arm stays still: only the variant can move the cube
            env.step(np.array([0, 0, 0, 0, 0, 0, 1.0], dtype=np.float32))
            path.append(env.unwrapped.cube.pose.p[0].clone())
        moved[name] = [torch.linalg.norm(p[:2] - path[0][:2]).item() for p in path]
    assert max(moved["train"]) < 0.005
    assert max(moved["cube_moved"][:10]) < 0.005 and moved["cube_moved"][11] >= 0.10  # jumps at step 10


def test_every_variant_is_checked():
    covered = {
        "red_cube",
        "table_color",
        "distractor_cube",
        "lighting",
        "unseen_phrasing",
        "unseen_target",
        "unseen_positions",
        "unseen_ee_pose",
        "cube_moved",
    }  # by the three tests above
    assert covered == set(oe.VARIANTS) - {"train"}
    assert {v.category for v in oe.VARIANTS.values()} == {"train", "language", "vision", "execution"}


# ----------------------------------------------------------------------------------------------------
# The scripted expert on one env
# ----------------------------------------------------------------------------------------------------
def test_expert_succeeds_on_train_with_the_shaped_return():
    env = single("train", obs_mode="state", reward_mode="dense")
    u = env.unwrapped
    for seed in range(10, 15):
        env.reset(seed=seed)
        ret = 0.0
        for _ in range(80):
            action = u.expert_action()
            assert (action[:, 3:6] == 0).all()  # straight down: it never rolls, pitches or turns to the faces
            _, reward, _, _, info = env.step(action)
            ret += reward.item()
        assert info["success"].item(), seed
        assert ret == pytest.approx(1.2, abs=1e-4)  # grasp 0.1 + sustained grasp 0.1 + on target 1.0


def test_expert_noise_is_seeded():
    env = single("train", obs_mode="state")
    u = env.unwrapped
    draws = []
    for _ in range(2):
        env.reset(seed=SEED)
        draws.append(torch.cat([u.expert_action(noise=0.3, pause_prob=0.5) for _ in range(4)]))
    env.reset(seed=SEED)
    clean = u.expert_action()
    assert torch.equal(draws[0], draws[1]) and not torch.allclose(draws[0][:1], clean)
