"""Tests of openvla_envs.py on the CPU (SAPIEN renders with Mesa's lavapipe). The worker-process
back-end is built once per session (conftest's `train_envs`); single in-process envs check the variants,
which is cheap while another env of the process is alive (conftest's `renderer_kept_alive`)."""

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

# every env this module makes in-process (and AsyncVectorEnv's throwaway one) starts in ~1 s, not ~10 s
pytestmark = pytest.mark.usefixtures("renderer_kept_alive")


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


def test_suites_mirror_rl4vla_one_to_one():
    assert oe.SUITES["builtin"] == (
        "train", "unseen_target", "unseen_phrasing", "red_cube", "table_color", "distractor_cube", "lighting",
        "unseen_positions", "unseen_ee_pose", "cube_moved",
    )  # as before the RL4VLA suite existed
    suite = oe.SUITES["rl4vla"]
    assert suite[0] == "train" and len(suite) == 17 and len(set(suite)) == 17
    assert [oe.category(n) for n in suite].count("vision") == 5
    assert [oe.category(n) for n in suite].count("semantic") == 8
    assert [oe.category(n) for n in suite].count("execution") == 3
    assert all(oe.resolve(n)[0] == oe.TABLETOP_ENV_ID for n in suite)  # every name (aliases too) resolves
    # RL4VLA's 16 test variants (their README: env id and object split), in their order
    assert oe.SUITES["rl4vla_assets"][1:] == tuple(
        f"PutOnPlateInScene25{t}" for t in (
            "VisionImage-v1@test", "VisionTexture03-v1@test", "VisionTexture05-v1@test", "VisionWhole03-v1@test",
            "VisionWhole05-v1@test", "Carrot-v1@train", "Carrot-v1@test", "Plate-v1@test", "Instruct-v1@test",
            "MultiCarrot-v1@train", "MultiCarrot-v1@test", "MultiPlate-v1@train", "MultiPlate-v1@test",
            "Position-v1@test", "EEPose-v1@test", "PositionChangeTo-v1@test",
        )
    )
    assert oe.SUITES["rl4vla_assets"][0] == "PutOnPlateInScene25Main-v3@train"  # their training task
    assert [oe.category(n) for n in oe.SUITES["rl4vla_assets"]] == [oe.category(n) for n in suite]


def test_rl4vla_tasks_need_their_fork_or_resolve_with_the_object_split(monkeypatch):
    if "PutOnPlateInScene25Carrot-v1" not in oe.REGISTERED_ENVS:  # the pip ManiSkill (here) lacks them
        with pytest.raises(oe.MissingAssetsError) as err:
            oe.make_envs("PutOnPlateInScene25Carrot-v1@test", 1)
        assert "\n" not in str(err.value) and "github.com/gen-robot/RL4VLA" in str(err.value)
    monkeypatch.setitem(oe.REGISTERED_ENVS, "PutOnPlateInScene25Carrot-v1", None)  # as RL4VLA's fork would
    monkeypatch.setattr(oe, "check_assets", lambda env_id: None)
    assert oe.resolve("PutOnPlateInScene25Carrot-v1@test") == (
        "PutOnPlateInScene25Carrot-v1", {"reset_options": {"obj_set": "test"}}, "widowx")
    assert oe.resolve("PutOnPlateInScene25Carrot-v1")[1] == {"reset_options": {"obj_set": "train"}}  # RL4VLA's default
    with pytest.raises(ValueError, match="unknown env or variant"):
        oe.resolve("PutOnPlateInScene25Carrot-v1@val")


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
def test_same_seeds_same_images_different_seeds_different_layouts(train_envs):
    envs = train_envs
    images, instructions = envs.reset([SEED, SEED])
    assert images.shape == (2, 224, 224, 3) and images.dtype == torch.uint8 and images.device.type == "cpu"
    assert instructions == ["put the green cube on the towel"] * 2 and envs.robot == "panda"
    assert torch.equal(images[0], images[1])
    images, _ = envs.reset([0, 1])
    assert (images[0].int() - images[1].int()).abs().gt(30).sum() > 200


def test_expert_episode_through_workers(train_envs):
    envs = train_envs
    first, _ = envs.reset([0, 1])
    total = torch.zeros(2)
    for t in range(envs.max_episode_steps):
        images, rewards, dones, infos = envs.step(envs.expert_actions())
        assert rewards.dtype == torch.float32 and rewards.shape == (2,) and dones.dtype == torch.bool
        assert dones.all() == (t == envs.max_episode_steps - 1)  # fixed length, no early end on success
        torch.testing.assert_close(rewards, infos["success"].float())  # sparse reward = success indicator
        total += rewards
    assert infos["success_once"].all() and infos["success_at_end"].all()
    assert infos["grasped_once"].all() and not infos["wrong_receptacle_at_end"].any()  # the failure modes, through workers
    torch.testing.assert_close(infos["episodic_return"], total)
    with pytest.raises(RuntimeError, match="reset"):
        envs.step(np.zeros((2, 7)))
    again, _ = envs.reset([0, 1])
    assert torch.equal(first, again)  # reruns with the same seeds reproduce


def test_parts_step_asynchronously_with_the_results_of_one_batch():
    """Two parts of one env each, stepped as the RL scripts do (part p's step t collected just before its step
    t + 1 is sent): exactly the images, rewards, dones and infos (at the episode's end too) of one batch of
    workers under the same actions; `step` on all envs of the parts is unchanged too. Both start fresh: a
    worker's CPU physics is not a function of the reset seed alone (after 20 steps of another episode, workers
    diverged from fresh ones at step 5 of an expert episode), so the session's `train_envs` cannot serve."""
    envs = oe.make_envs("train", 2, backend="cpu", max_episode_steps=60)
    halves = oe.make_envs("train", 2, backend="cpu", max_episode_steps=60, parts=2)
    try:
        assert halves.parts == 2 and halves.part_slices == [slice(0, 1), slice(1, 2)]
        images, instructions = envs.reset([0, 1])
        halves_images, halves_instructions = halves.reset([0, 1])
        assert torch.equal(images, halves_images) and instructions == halves_instructions
        assert torch.equal(envs.expert_actions(), halves.expert_actions())
        actions, batch = [], []  # one batch: the expert's episode
        for _ in range(envs.max_episode_steps):
            actions.append(envs.expert_actions())
            batch.append(envs.step(actions[-1]))
        assert batch[-1][3]["success_once"].all() and batch[-1][3]["grasped_once"].all()  # the infos at done
        by_part = [[], []]  # the same actions, through the parts
        for t in range(len(actions) + 1):
            for p, rows in enumerate(halves.part_slices):
                if t > 0:
                    by_part[p].append(halves.step_wait(p))
                if t < len(actions):
                    halves.step_async(actions[t][rows], p)
        for t, (images, rewards, dones, infos) in enumerate(batch):
            for p, rows in enumerate(halves.part_slices):
                part_images, part_rewards, part_dones, part_infos = by_part[p][t]
                assert torch.equal(images[rows], part_images) and torch.equal(rewards[rows], part_rewards)
                assert torch.equal(dones[rows], part_dones) and infos.keys() == part_infos.keys()
                assert all(torch.equal(infos[k][rows], part_infos[k]) for k in infos), (t, p)
        with pytest.raises(RuntimeError, match="reset"):
            halves.step_async(actions[0][:1], 0)
        with pytest.raises(RuntimeError, match="no step under way"):
            halves.step_wait(1)
        envs.reset([2, 3])
        halves.reset([2, 3])
        for t in range(2):  # step(), all envs at once
            for a, b in zip(envs.step(actions[t]), halves.step(actions[t]), strict=True):
                assert all(torch.equal(a[k], b[k]) for k in a) if isinstance(a, dict) else torch.equal(a, b)
        halves.step_async(actions[2][:1], 0)
        with pytest.raises(RuntimeError, match="under way"):
            halves.step_async(actions[2])
        with pytest.raises(RuntimeError, match="under way"):
            halves.reset([2, 3])
        halves.step_wait(0)
    finally:
        envs.close()
        halves.close()
    with pytest.raises(ValueError, match="divide num_envs"):
        oe.make_envs("train", 3, backend="cpu", parts=2)
    with pytest.raises(ValueError, match="parts must be 1 there"):
        oe.VecEnv(oe.TABLETOP_ENV_ID, {}, 2, "panda", "gpu", "cpu", 80, False, "spawn", parts=2)


def test_state_observation_is_the_simulators_state_behind_the_images():
    """`state_obs`: `states` (N, D) holds, per env, the robot's qpos and qvel and the task's extra (gripper, object
    and goal poses and the vectors between them), for the images `reset` and `step_wait(p)` (part p's rows) just
    returned: what `ppo_openvla --critic state` reads."""
    envs = oe.make_envs("train", 2, backend="cpu", max_episode_steps=5, parts=2, state_obs=True)
    try:
        layout = oe.BUILTIN_STATE_LAYOUT
        assert envs.state_dim == 42 == max(s.stop for s in layout.values())
        envs.reset([0, 1])
        start = envs.states.clone()
        tcp, grasped, obj, goal, tcp_to_obj, obj_to_goal = (start[:, layout[k]] for k in (
            "tcp_pose", "is_grasped", "obj_pose", "goal_pos", "tcp_to_obj_pos", "obj_to_goal_pos"))
        assert torch.allclose(tcp_to_obj, obj[:, :3] - tcp[:, :3], atol=1e-6)
        assert torch.allclose(obj_to_goal, goal - obj[:, :3], atol=1e-6)
        assert (grasped == 0).all() and not torch.equal(obj[0], obj[1])  # two layouts, nothing held
        down = torch.tensor([[0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0]])  # 1 cm down, gripper open
        envs.step_async(down, 0)
        envs.step_wait(0)
        z = layout["tcp_pose"].start + 2
        assert envs.states[0, z] < start[0, z] - 0.005  # part 0's gripper went down ...
        assert torch.equal(envs.states[1], start[1])  # ... and part 1's row waits for its own step
        with pytest.raises(ValueError, match="state_obs=True"):
            envs.state_obs = False
            envs.state_dim  # noqa: B018
    finally:
        envs.close()


@pytest.mark.parametrize(
    "env_kwargs",
    [
        pytest.param(
            {},
            marks=pytest.mark.xfail(
                raises=AssertionError,
                strict=True,
                reason="PhysX guarantees determinism only for a newly created scene given the same calls: the CPU "
                "scene keeps internal state across resets (not the poses and velocities, which match bit for bit), "
                "so after contacts of another episode a worker diverges at the first grasp",
            ),
            id="default",
        ),
        pytest.param({"reconfiguration_freq": 1}, id="reconfigure_every_reset"),
    ],
)
def test_a_used_worker_replays_a_fresh_workers_episode(env_kwargs):
    """Same seed, same actions -> the same images, rewards and infos, whatever the worker simulated before: env 0
    only reset, env 1 (its own part, stepped alone) first ran 40 expert steps of another seed, grasp and place
    included; then both replay env 0's expert episode, which grasps the cube. Without reconfiguring the scene on
    reset, env 1 diverges at step 6, when the fingers first touch the cube (the `default` case, kept as a strict
    xfail: it flags the day this holds without reconfiguring)."""
    envs = oe.make_envs("train", 2, backend="cpu", max_episode_steps=60, reward="shaped", parts=2, **env_kwargs)
    try:
        envs.reset([1, 0])
        for _ in range(40):  # env 1's history: seed 0's expert picks the cube and puts it on the towel
            envs.step_async(envs.expert_actions()[1:], 1)
            envs.step_wait(1)
        images, _ = envs.reset([1, 1])
        assert torch.equal(images[0], images[1])
        for t in range(envs.max_episode_steps):
            images, rewards, dones, infos = envs.step(envs.expert_actions()[:1].repeat(2, 1))
            assert torch.equal(images[0], images[1]), f"images differ at step {t + 1}"
            assert torch.equal(rewards[0], rewards[1]) and all(infos[k][0] == infos[k][1] for k in infos), t + 1
        assert infos["grasped_once"].all() and infos["success_once"].all()  # contact, grasp and place
    finally:
        envs.close()


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


def first_image(env: gym.Env, seed: int = SEED) -> np.ndarray:
    """The image after reset(seed) (int, so differences do not wrap)."""
    obs, _ = env.reset(seed=seed)
    return obs["sensor_data"]["third_view"]["rgb"][0].numpy().astype(int)


@pytest.fixture(scope="module")
def first_images() -> dict[str, np.ndarray]:
    """The seed-SEED first image of train and of the variants that change the scene's looks."""
    images = {}
    for name in ("train", "red_cube", "table_color", "distractor_cube", "lighting", "unseen_phrasing"):
        env = single(name)
        images[name] = first_image(env)
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
    u = expert_episode("unseen_target")
    assert u.get_language_instruction() == ["put the green cube on the plate"]
    assert torch.linalg.norm(u.cube.pose.p[0, :2] - u.receptacles[1].pose.p[0, :2]) < oe.PLATE_RADIUS  # the plate
    assert not u.evaluate()["wrong_receptacle"].item()
    # the cube moved onto the towel, the receptacle `train` names: a failure the evaluation reports as such
    towel = u.receptacles[0].pose.p + torch.tensor([[0.0, 0.0, oe.RECEPTACLES["towel"].top + u.shape.half[2]]])
    u.cube.set_pose(oe.Pose.create_from_pq(towel, u.cube.pose.q))
    info = u.evaluate()
    assert info["wrong_receptacle"].item() and not info["success"].item()


def expert_episode(variant: str, seed: int = SEED) -> oe.OpenVLATabletopEnv:
    """Run the expert for 80 steps on a state-only env; assert success; return the task env."""
    env = single(variant, obs_mode="state")
    u = env.unwrapped
    env.reset(seed=seed)
    for _ in range(80):
        _, _, _, _, info = env.step(u.expert_action())
    assert info["success"].item(), (variant, seed)
    return u


IMAGE_VARIANTS = ("dynamic_texture_weak", "dynamic_texture_strong", "dynamic_noise_weak", "dynamic_noise_strong")
SEMANTIC_VARIANTS = ("similar_to_training", "unseen_objects", "unseen_receptacles", "multi_object_seen",
                     "multi_object_unseen", "distractive_receptacle", "multi_receptacle_unseen")


@pytest.mark.parametrize("name", IMAGE_VARIANTS)
def test_image_perturbations_change_the_image_by_the_stated_amount(name, first_images):
    kwargs = oe.VARIANTS[name].env_kwargs
    mix = kwargs.get("texture_mix") or kwargs.get("noise_mix")
    assert mix == (0.3 if name.endswith("weak") else 0.5) and str(mix) in oe.VARIANTS[name].description
    env = single(name)
    u = env.unwrapped
    image = first_image(env)
    d = np.abs(image - first_images["train"])  # same seed, same scene: only the perturbation differs
    assert d.max() <= np.ceil(255 * mix) + 1  # a blend at weight mix moves a pixel by at most mix x 255
    if "texture" in name:  # only the objects' and receptacles' pixels change
        seg = u.scene.sensors["third_view"].get_obs(rgb=False, depth=False, position=False, segmentation=True)
        ids = [a.per_scene_id.item() for a in (u.cube, *u.receptacles)]
        mask = np.isin(seg["segmentation"][0, ..., 0].numpy(), ids)
        changed = d.max(-1) > 1
        assert not changed[~mask].any() and changed[mask].mean() > 0.5 and mask.sum() > 1000
        texture = u._textures[0].clone()
        first_image(env, SEED + 1)
        assert not torch.equal(texture, u._textures[0])  # a new texture each episode
    else:  # noise U ~ uniform(0, 255) at weight s moves a pixel x by s |U - x|, and E|U - x| >= 255 / 4
        assert d.mean() > 0.9 * mix * 255 / 4
        obs, *_ = env.step(np.array([0, 0, 0, 0, 0, 0, 1.0], dtype=np.float32))
        step_1 = obs["sensor_data"]["third_view"]["rgb"][0].numpy().astype(int)
        assert np.abs(step_1 - image).mean() > 0.5 * mix * 255 / 4  # new noise every step
    assert np.array_equal(first_image(env), image)  # and it replays with the seed
    env.close()


SFT_VARIANTS = ("train", "red_cube", "unseen_target")  # what the learning experiment's SFT data covers


def seen_in_sft(key: str, default: object) -> set:
    """The values an env kwarg takes in the SFT variants (receptacle tuples are flattened)."""
    values = [oe.VARIANTS[v].env_kwargs.get(key, default) for v in SFT_VARIANTS]
    return {x for v in values for x in (v if isinstance(v, tuple) else (v,))}


@pytest.mark.parametrize("name", SEMANTIC_VARIANTS)
def test_semantic_variants_expert_moves_the_instructed_object_onto_the_instructed_receptacle(name):
    kwargs = oe.VARIANTS[name].env_kwargs
    shapes, colors = seen_in_sft("shape", "cube"), seen_in_sft("cube_color", "green")
    kinds = seen_in_sft("receptacles", ("towel", "plate")) | seen_in_sft("target", "towel")
    u = expert_episode(name)
    others = [r for r in u.receptacles if r is not u.target_actor]
    on = [torch.linalg.norm(u.cube.pose.p[0, :2] - r.pose.p[0, :2]).item() < 0.05 for r in [u.target_actor, *others]]
    assert on == [True] + [False] * len(others)  # on the instructed receptacle, not on another
    assert u.instruction.endswith(f"on the {u.target}") and u.target in u.receptacle_kinds
    if name == "similar_to_training":  # same words, a slightly bigger cube of a slightly different green
        assert u.instruction == "put the green cube on the towel" and u.shape.kind == "box"
        assert 1.05 < u.shape.half[2] / oe.CUBE_HALF < 1.25 and u.cube_color not in colors
        assert np.abs(np.subtract(oe.COLORS[u.cube_color], oe.COLORS["green"])).max() < 0.4
    if name in ("unseen_objects", "multi_object_seen", "multi_object_unseen"):  # the instruction names the object
        assert f"put the {u.cube_color} {u.shape.noun} on" in u.instruction
        objects = [(u.cube_color, kwargs.get("shape", "cube"))]
        objects += [(u.distractor_color, kwargs["distractor_shape"])] if "distractor_shape" in kwargs else []
        objects += [(u.distractor_color, "cube")] if name == "multi_object_seen" else []
        assert len(objects) == (1 if name == "unseen_objects" else 2)
        for color, shape in objects:  # seen = colour and shape both in SFT data; unseen = never a cube
            seen = color in colors and shape in shapes
            assert seen if name == "multi_object_seen" else oe.SHAPES[shape].noun != "cube"
        assert (u.distractor is not None) == name.startswith("multi_object")
        if u.distractor is not None:  # the expert left the other object where it was, off the target
            assert torch.linalg.norm(u.distractor.pose.p[0, :2] - u.target_actor.pose.p[0, :2]) > 0.05
    if "receptacle" in name:
        assert all(k in kinds for k in u.receptacle_kinds) == (name == "distractive_receptacle")
        assert len(u.receptacles) == (3 if name == "distractive_receptacle" else 2)
        assert u.target not in kinds or name == "distractive_receptacle"
        assert not set(u.receptacle_kinds) & kinds or name != "multi_receptacle_unseen"  # both unseen


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


@pytest.mark.parametrize("name", [*SFT_VARIANTS, "multi_object_seen", "distractive_receptacle"])
def test_layouts_are_those_of_before_the_rl4vla_variants(name):
    """The learning experiment's variants lay out what they did at commit b764851 (seed 7: cube pose, towel
    and plate xy), and the variants that add an object or a receptacle keep train's layout for train's."""
    env = single(name, obs_mode="state")
    u = env.unwrapped
    env.reset(seed=7)
    np.testing.assert_allclose(u.cube.pose.raw_pose[0], [-0.076011, 0.120738, 0.02, 0.995631, 0, 0, -0.093372], atol=1e-6)
    towel, plate = (r.pose.p[0, :2] for r in u.receptacles[:2])
    np.testing.assert_allclose(torch.stack([towel, plate]), [[-0.200219, -0.093216], [0.052878, -0.12611]], atol=1e-6)


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
    }  # by the tests above
    assert covered | set(IMAGE_VARIANTS) | set(SEMANTIC_VARIANTS) == set(oe.VARIANTS) - {"train"}
    assert {v.category for v in oe.VARIANTS.values()} == {"train", "vision", "semantic", "execution"}


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


def test_progress_reward_pays_the_approach_and_telescopes():
    """`progress` adds distance terms to the milestones: the expert's first steps, which bring the gripper to the
    cube, earn a little (the milestone reward pays 0 there), and the return is the final state's potential."""
    env = single("train", obs_mode="state", reward_mode="dense", progress_reward=True)
    u = env.unwrapped
    env.reset(seed=10)
    rewards = []
    for _ in range(80):
        _, reward, _, _, info = env.step(u.expert_action())
        rewards.append(reward.item())
    assert info["success"].item()
    assert all(r > 0 for r in rewards[:4]), rewards[:4]
    goal = u._target_top()[0][0] + torch.tensor([0.0, 0.0, u.shape.half[2]])
    cube = u.cube.pose.p[0]
    reach = 1 - torch.tanh(10 * torch.linalg.norm(cube - u.agent.tcp_pose.p[0]))
    place = 1 - torch.tanh(10 * torch.linalg.norm(cube - goal))
    final = 0.1 + 0.1 + 1.0 + oe.PROGRESS_WEIGHTS[0] * reach + oe.PROGRESS_WEIGHTS[1] * place
    assert sum(rewards) == pytest.approx(final.item(), abs=1e-4) and sum(rewards) > 1.3


def test_expert_detour_passes_the_decoy_then_places_on_the_target():
    """expert_action(detour_prob=1) (sft_openvla.py deviation 8): once holding the cube, the executed expert takes it
    within 3 cm of the decoy (on `train`, the plate) and still places it on the towel, while the clean expert's
    action, the label, points toward the towel at steps where the cube moves away from it; the straight expert
    never moves it away. The per-episode draw replays with the seed."""
    env = single("train", obs_mode="state")
    u = env.unwrapped

    def episode(prob: float) -> tuple[float, int, bool]:
        env.reset(seed=SEED)
        decoy = u._decoy_top()[0, :2]
        assert torch.allclose(decoy, u.receptacles[1].pose.p[0, :2])  # the plate, not the instructed towel
        closest, away = float("inf"), 0
        for _ in range(80):
            label, executed = u.expert_action(), u.expert_action(detour_prob=prob)
            cube = u.cube.pose.p[0, :2].clone()
            to_target = u._target_top()[0][0, :2] - cube
            _, _, _, _, info = env.step(executed)
            moved = u.cube.pose.p[0, :2] - cube
            away += int(label[0, :2] @ to_target > 0 and moved @ to_target < -0.01 * to_target.norm())
            if u.agent.is_grasping(u.cube).item():
                closest = min(closest, torch.linalg.norm(u.cube.pose.p[0, :2] - decoy).item())
        return closest, away, bool(info["success"].item())

    detour, straight = episode(1.0), episode(0.0)
    assert detour[2] and straight[2]
    assert detour[0] < 0.03 < straight[0] and detour[1] >= 2 and straight[1] == 0
    draws = []
    for seed in (SEED, SEED, SEED + 1):
        env.reset(seed=seed)
        draws.append(u._detour_u[0].item())
    assert draws[0] == draws[1] != draws[2] and 0 <= min(draws) and max(draws) < 1


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


# ----------------------------------------------------------------------------------------------------
# Speed (issue 13): the task's fast paths change no bit of a step
# ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, seeds, steps", [("train", (SEED, SEED + 1), 50), ("cube_moved", (SEED,), 20)])
def test_fast_paths_step_as_maniskills_code_bit_for_bit(name, seeds, steps):
    """`_ArmController` (the end effector's base-frame pose read once per action, the root's inverse kept) and
    `_is_grasping` (the fingers' opening directions from their quaternions; no angles without two pushing fingers)
    against a twin env that runs ManiSkill's own controller and `Panda.is_grasping`: the same seeds and actions (the
    expert's, with random rotations mixed in for the controller's rotation path) give the same observations (state:
    qpos, qvel and `_get_obs_extra`), rewards (`progress`), infos and joint targets, bit for bit, across a reset, on
    steps with and without the fingers pushing on the cube. `cube_moved` also checks the move's grasp test."""
    from mani_skill.agents.controllers.pd_ee_pose import PDEEPoseController

    fast, slow = (single(name, obs_mode="state", reward_mode="dense", progress_reward=True) for _ in range(2))
    arms = [env.unwrapped.agent.controller.controllers["arm"] for env in (fast, slow)]
    assert type(arms[0]) is type(arms[1]) is oe._ArmController
    arms[1].__class__ = PDEEPoseController  # the slow twin: ManiSkill's code
    slow.unwrapped._is_grasping = slow.unwrapped.agent.is_grasping
    rng = np.random.default_rng(0)
    grasped = []
    for seed in seeds:
        outs = [env.reset(seed=seed) for env in (fast, slow)]
        assert torch.equal(outs[0][0], outs[1][0])
        for t in range(steps):
            action = fast.unwrapped.expert_action(noise=0.1)
            if t % 4 == 1:
                action[:, 3:6] = torch.as_tensor(rng.uniform(-1, 1, (1, 3)), dtype=torch.float32)
            slow.unwrapped.expert_action(noise=0.1)  # the same draws from its noise stream
            (obs, reward, _, _, info), (obs_s, reward_s, _, _, info_s) = (env.step(action.clone()) for env in (fast, slow))
            assert torch.equal(obs, obs_s) and torch.equal(reward, reward_s), (seed, t)
            assert info.keys() == info_s.keys() and all(torch.equal(info[k], info_s[k]) for k in info), (seed, t)
            assert torch.equal(arms[0]._target_qpos, arms[1]._target_qpos), (seed, t)
            grasped.append(info["is_grasped"].item())
    assert arms[0]._root is not None  # the kept inverse was used
    assert any(grasped) and not all(grasped)  # both branches of `_is_grasping`
    fast.close()
    slow.close()
