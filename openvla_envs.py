"""The simulator side of openvla-rl: built-in ManiSkill3 tabletop tasks, their out-of-distribution
variants, a vectorised env factory over two back-ends, OpenVLA-action conversion and a scripted expert.

Task. `OpenVLATabletop-v1` mirrors the blog's "put the cube on the towel" experiment with what the
`mani_skill` pip package ships (the Panda robot and the table scene) plus primitive shapes: a 4 cm cube,
a towel (a thin cloth-coloured box with stripes), a plate (a low white disc) and an optional distractor
object, laid out without overlap from the episode seed. One fixed camera in front of the table, facing the
robot (like the Bridge camera, from the other side), gives 224x224 RGB. Success = the instructed object
rests on the instructed receptacle, released and nearly still. Reward, per step: `sparse` = the success
indicator (the blog's), `shaped` = RL4VLA's potential with milestones +0.1 grasped, +0.1 grasp held 5
steps, +1 on target, or `progress` = that potential plus two continuous terms, 0.1 (1 - tanh(10 d)) for
the gripper's distance d to the object and 0.2 (1 - tanh(10 d)) for the object's to the target, so that
every step's motion earns or costs a little; the reward is the change of the potential (shaping that
keeps the optimal policy, Ng et al. 1999), so a return is at most 1.2 (1.5 with progress) and undoing
progress costs what it earned. Episodes have a fixed length (80 steps) and never end early.

Variants (`VARIANTS`): `train` (green cube -> towel, a plate beside it) and OOD variants in RL4VLA's
three categories: vision (table, textures, image noise, lighting, a distractor), semantic (objects,
receptacles, instructions, several objects or receptacles) and execution (positions, initial arm pose,
the object moved mid-episode). Each states what differs from `train`. `SUITES` names the sets that
eval_generalization.py runs: `builtin` (our first ten), `rl4vla` (`train` + one counterpart of each of
RL4VLA's 16 test variants, under RL4VLA's names) and `rl4vla_assets` (RL4VLA's own tasks, for users
who have installed them: see `resolve`).

Back-ends (`make_envs`). `gpu`: ManiSkill GPU simulation (`physx_cuda`), all envs in one process.
`cpu`: one CPU-physics env per worker process (gymnasium `AsyncVectorEnv` over `CPUGymWrapper`),
rendering on the GPU when there is one. `auto` picks `gpu` only where SAPIEN's PhysX GPU library is
already on disk, because SAPIEN would otherwise try to download it at first use (our GPU machines are
offline). Workers are started with `spawn` (safe after CUDA is initialised), so a script that builds
envs must keep its body under `if __name__ == "__main__":`, as CleanRL scripts do.

Actions. `step` takes OpenVLA's un-normalised 7-D actions. For Panda tasks those are the
`pd_ee_delta_pose` controller's normalised action: dims 0-2 = EE translation in the robot base frame
/ 0.1 m; dims 3-5 = EE rotation (root-aligned XYZ Euler) in units of -0.1 rad (ManiSkill scales the
normalised rotation by `rot_lower` = -0.1, so +1 turns by -0.1 rad); dim 6 = gripper, 1 = open,
-1 = closed. Everything is clipped to [-1, 1]. `PANDA_NORM_STATS` is the matching `norm_stats` entry (q01 = -1, q99 = 1), so
the model's bins map 1:1 onto the controller. For the WidowX SimplerEnv Bridge tasks (and RL4VLA's,
which use the same robot and controller) see `openvla_to_controller`; their images come at the Bridge
camera's 640x480 (the OpenVLA processor resizes to 224x224, as SimplerEnv does).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import mani_skill.envs  # noqa: F401  (registers ManiSkill's tasks, the Bridge ones included)
import numpy as np
import sapien
import torch
from mani_skill.agents.controllers.pd_ee_pose import PDEEPoseController
from mani_skill.envs.sapien_env import BaseEnv
from mani_skill.sensors.camera import CameraConfig
from mani_skill.utils import common, sapien_utils
from mani_skill.utils.registration import REGISTERED_ENVS, register_env
from mani_skill.utils.scene_builder.table import TableSceneBuilder
from mani_skill.utils.structs.pose import Pose

# Env seed bands: one policy for every script, so that no reported evaluation sees a layout that training
# or checkpoint selection saw (issue 12: evaluating on SFT's demo seeds, or picking a prior on the seeds
# of the final table, biases the result toward the prior).
DEMO_SEED = 1_000_000  # SFT demonstrations: DEMO_SEED + 100_000 * variant index + attempt, below 10**7
TEST_SEED = 10_000_000  # eval_generalization.py, the reported tables: episode i uses TEST_SEED + i
VALIDATION_SEED = 20_000_000  # in-training evaluations (SFT, PPO, GRPO, REINFORCE) that pick checkpoints
ROLLOUT_SEEDS = (100_000_000, 2**31 - 1)  # RL rollouts draw their reset seeds uniformly from this range
TABLETOP_ENV_ID = "OpenVLATabletop-v1"
BRIDGE_ENV_IDS = (
    "PutCarrotOnPlateInScene-v1",
    "PutSpoonOnTableClothInScene-v1",
    "StackGreenCubeOnYellowCubeBakedTexInScene-v1",
    "PutEggplantInBasketScene-v1",
)
# RL4VLA's tasks (github.com/gen-robot/RL4VLA): registered by RL4VLA's fork of ManiSkill, not by the pip
# package, on the Bridge scene with their own object files. Main-v3 is their training task; the others are
# their test variants. Each is run with an object split, `obj_set` = train | test, passed at reset.
RL4VLA_ENV_IDS = (
    "PutOnPlateInScene25Main-v3",
    "PutOnPlateInScene25VisionImage-v1",
    "PutOnPlateInScene25VisionTexture03-v1",
    "PutOnPlateInScene25VisionTexture05-v1",
    "PutOnPlateInScene25VisionWhole03-v1",
    "PutOnPlateInScene25VisionWhole05-v1",
    "PutOnPlateInScene25Carrot-v1",
    "PutOnPlateInScene25Plate-v1",
    "PutOnPlateInScene25Instruct-v1",
    "PutOnPlateInScene25MultiCarrot-v1",
    "PutOnPlateInScene25MultiPlate-v1",
    "PutOnPlateInScene25Position-v1",
    "PutOnPlateInScene25EEPose-v1",
    "PutOnPlateInScene25PositionChangeTo-v1",
)
RL4VLA_SOURCE = (
    "RL4VLA's ManiSkill fork and assets (https://github.com/gen-robot/RL4VLA: `pip install -e ManiSkill` in "
    "that repository, plus `python -m mani_skill.utils.download_asset bridge_v2_real2sim -y`)"
)
IMAGE_SIZE = 224

# The `norm_stats` entry for the built-in Panda tasks, in the released checkpoint's format: bins span
# exactly the controller's normalised range, and the gripper (mask False) is used as is.
PANDA_NORM_STATS: dict[str, dict[str, Any]] = {
    "panda_tabletop": {
        "action": {
            "mean": [0.0] * 7,
            "std": [1.0] * 7,
            "min": [-1.0] * 7,
            "max": [1.0] * 7,
            "q01": [-1.0] * 7,
            "q99": [1.0] * 7,
            "mask": [True] * 6 + [False],
        },
        "proprio": {k: [0.0] * 7 for k in ("mean", "std", "min", "max", "q01", "q99")},
    }
}

Robot = Literal["panda", "widowx"]
COLORS: dict[str, list[float]] = {
    "green": [0.1, 0.7, 0.15, 1],
    "red": [0.85, 0.1, 0.1, 1],
    "blue": [0.1, 0.25, 0.85, 1],
    "yellow": [0.95, 0.8, 0.1, 1],
    "lime": [0.45, 0.8, 0.1, 1],  # a yellower green: `similar_to_training`'s cube
}
# A part of an actor: (shape "box" | "disc", size, rgba, pose in the actor's frame). Box sizes are half
# sizes; disc sizes are (radius, half height), standing upright.
Part = tuple[str, Sequence[float], Sequence[float], sapien.Pose]


@dataclass(frozen=True)
class Shape:
    """An object the robot moves. `half` = half sizes (x, y, z) of a box, or (radius, radius, half
    height) of an upright cylinder; the object rests on its bottom face."""

    kind: Literal["box", "cylinder"]
    half: tuple[float, float, float]
    noun: str  # what instructions call it
    footprint: float  # radius (m) of the disc it occupies in the layout
    yaw_scale: float = 1.0  # initial yaw range = yaw_scale x [-45, 45] degrees


SHAPES: dict[str, Shape] = {
    "cube": Shape("box", (0.02, 0.02, 0.02), "cube", 0.03),
    "large_cube": Shape("box", (0.023, 0.023, 0.023), "cube", 0.035),
    "cylinder": Shape("cylinder", (0.02, 0.02, 0.025), "cylinder", 0.03),
    # long side along x, across the fingers' closing direction (y): a yaw within +-22.5 degrees still
    # lets the closing fingers square it up
    "bar": Shape("box", (0.04, 0.012, 0.015), "bar", 0.045, yaw_scale=0.5),
}


@dataclass(frozen=True)
class Receptacle:
    """A kinematic receptacle: `parts` (the first one collides), its top surface's height above the
    table, the half side of the square the object's centre must end in, and its layout footprint."""

    parts: tuple[Part, ...]
    top: float
    half: float
    footprint: float


CUBE_HALF = SHAPES["cube"].half[2]
TOWEL_HALF = (0.075, 0.075, 0.003)  # x, y, z half sizes (m)
PLATE_RADIUS, PLATE_HALF_HEIGHT = 0.07, 0.006
BOARD_HALF = (0.08, 0.055, 0.006)
TRAY_HALF = (0.07, 0.07, 0.004)
_UPRIGHT = sapien.Pose(q=[0.7071068, 0, 0.7071068, 0])  # SAPIEN cylinders lie along x: stand them up
RECEPTACLES: dict[str, Receptacle] = {
    "towel": Receptacle(
        (
            ("box", TOWEL_HALF, [0.45, 0.55, 0.75, 1], sapien.Pose(p=[0, 0, TOWEL_HALF[2]])),
            *(
                ("box", [0.006, TOWEL_HALF[1], 0.0005], [0.8, 0.25, 0.2, 1], sapien.Pose(p=[x, 0, 2 * TOWEL_HALF[2]]))
                for x in (-0.05, 0.05)
            ),
        ),
        2 * TOWEL_HALF[2],
        TOWEL_HALF[0] - 0.005,
        float(np.hypot(*TOWEL_HALF[:2])),
    ),
    "plate": Receptacle(
        (
            ("disc", [PLATE_RADIUS, PLATE_HALF_HEIGHT], [0.93, 0.93, 0.9, 1], sapien.Pose(p=[0, 0, PLATE_HALF_HEIGHT])),
            ("disc", [PLATE_RADIUS * 0.7, 0.0005], [0.8, 0.8, 0.78, 1], sapien.Pose(p=[0, 0, 2 * PLATE_HALF_HEIGHT])),
        ),
        2 * PLATE_HALF_HEIGHT,
        (PLATE_RADIUS - 0.01) / np.sqrt(2),
        PLATE_RADIUS,
    ),
    # never in SFT data: a wooden cutting board with dark grain lines, and a dark-grey tray with a red rim
    "board": Receptacle(
        (
            ("box", BOARD_HALF, [0.62, 0.42, 0.22, 1], sapien.Pose(p=[0, 0, BOARD_HALF[2]])),
            *(
                ("box", [BOARD_HALF[0] - 0.01, 0.002, 0.0005], [0.4, 0.25, 0.12, 1], sapien.Pose(p=[0, y, 2 * BOARD_HALF[2]]))
                for y in (-0.03, 0.0, 0.03)
            ),
        ),
        2 * BOARD_HALF[2],
        BOARD_HALF[1] - 0.005,
        float(np.hypot(*BOARD_HALF[:2])),
    ),
    "tray": Receptacle(
        (
            ("box", TRAY_HALF, [0.25, 0.25, 0.28, 1], sapien.Pose(p=[0, 0, TRAY_HALF[2]])),
            *(  # the rim is visual only: it never catches the gripper or the object
                ("box", size, [0.75, 0.15, 0.1, 1], sapien.Pose(p=[x, y, 2 * TRAY_HALF[2] + 0.006]))
                for size, x, y in (
                    ([0.004, TRAY_HALF[1], 0.006], -TRAY_HALF[0], 0),
                    ([0.004, TRAY_HALF[1], 0.006], TRAY_HALF[0], 0),
                    ([TRAY_HALF[0], 0.004, 0.006], 0, -TRAY_HALF[1]),
                    ([TRAY_HALF[0], 0.004, 0.006], 0, TRAY_HALF[1]),
                )
            ),
        ),
        2 * TRAY_HALF[2],
        TRAY_HALF[0] - 0.015,
        float(np.hypot(*TRAY_HALF[:2])),
    ),
}
# Object-centre regions (x_lo, x_hi, y_lo, y_hi) on the table (m; the robot base is at x = -0.615).
RECEPTACLE_REGION = (-0.22, 0.08, -0.22, 0.22)
EXTRA_RECEPTACLE_REGION = (-0.25, 0.1, -0.26, 0.26)  # a third receptacle needs room beside train's two
CUBE_REGION = (-0.18, 0.05, -0.14, 0.14)
UNSEEN_CUBE_REGION = (-0.18, 0.05, 0.19, 0.26)  # mirrored to y < 0 half the time: never seen in train
# Facing the robot across the table, high enough that the arm's start pose hides little of the workspace.
CAMERA_POSE = sapien_utils.look_at(eye=[0.5, 0.0, 0.5], target=[-0.1, 0.0, 0.05])
GRASP_HOLD_STEPS = 5  # RL4VLA's "sustained grasp" milestone
PROGRESS_WEIGHTS = (0.1, 0.2)  # `progress` reward: gripper -> object, object -> target (each milestone weighs 0.1)


# ----------------------------------------------------------------------------------------------------
# The task
# ----------------------------------------------------------------------------------------------------
# Speed (issue 13). A camera-less CPU-physics step of the task took ~3.4 ms on one core, most of it ManiSkill's
# arithmetic on 1-element torch tensors (~1 us per op), not physics (~0.35 ms): the arm controller's pose algebra
# (~1.9 ms) and the grasp test (~0.7 ms). `_ArmController` and `OpenVLATabletopEnv._is_grasping` skip work that
# ManiSkill repeats or discards, with the same float operations on what is kept (~2.3 ms), so every observation,
# reward, info and joint target stays the same bit for bit (tests/test_envs.py compares with ManiSkill's own code).
class _ArmController(PDEEPoseController):
    """ManiSkill's end-effector pose controller (our `pd_ee_delta_pose` arm), reading the end effector's pose in the
    robot's base frame (`ee_pose_at_base` = root pose^-1 * EE pose, ~0.37 ms on the CPU) once per action: ManiSkill
    3.0's `set_action` computes it twice from one state (the start of the target pose, then `compute_ik`'s
    `current_pose`, which the CPU IK ignores), and nothing steps in between. On the CPU it also keeps the root pose's
    inverse while the root pose keeps its bits (the Panda's base is fixed: always, after the first step)."""

    _held: Pose | None = None  # the pose read at the start of the `set_action` under way
    _root: torch.Tensor | None = None  # the root's raw pose (1, 7) whose inverse `_to_base` is
    _to_base: Pose | None = None

    @property
    def ee_pose_at_base(self) -> Pose:
        return self._read_ee_pose_at_base() if self._held is None else self._held

    def set_action(self, action: torch.Tensor) -> None:
        self._held = self._read_ee_pose_at_base()
        try:
            super().set_action(action)
        finally:
            self._held = None

    def _read_ee_pose_at_base(self) -> Pose:
        if self.scene.gpu_sim_enabled:  # comparing the root pose would sync with the GPU
            return super().ee_pose_at_base
        root = self.root_link.pose
        bits = root.raw_pose.view(torch.int32)  # compared bit for bit (0.0 == -0.0 would not do)
        if self._root is None or not torch.equal(bits, self._root.view(torch.int32)):
            self._root, self._to_base = root.raw_pose, root.inv()
        return self._to_base * self.ee_pose


def _y_axis(q: torch.Tensor) -> torch.Tensor:
    """(N, 4) quaternions (wxyz) -> (N, 3) column 1 of their rotation matrices: ManiSkill's `quaternion_to_matrix`
    restricted to that column, term for term (the same float operations, so the same bits), a third of its work."""
    r, i, j, k = torch.unbind(q, -1)
    two_s = 2.0 / (q * q).sum(-1)
    return torch.stack((two_s * (i * j - k * r), 1 - two_s * (i * i + k * k), two_s * (j * k + i * r)), -1)


@register_env(TABLETOP_ENV_ID)  # no max_episode_steps: no TimeLimit, the vector env counts steps
class OpenVLATabletopEnv(BaseEnv):
    """Put an object (a coloured cube in `train`) on one of the receptacles (see the module docstring).
    Every kwarg below is one knob a variant may turn; the defaults are `train`. `self.cube` is the
    instructed object whatever its shape."""

    SUPPORTED_ROBOTS = ["panda"]
    SUPPORTED_REWARD_MODES = ["dense", "none"]  # dense = `shaped` or `progress`; sparse is the VecEnv's

    def __init__(
        self,
        *args: Any,
        cube_color: str = "green",
        shape: str = "cube",
        receptacles: Sequence[str] = ("towel", "plate"),
        target: str = "towel",
        instruction: str | None = None,
        table_color: Sequence[float] | None = None,
        distractor_color: str | None = None,
        distractor_shape: str = "cube",
        light: Sequence[float] = (1.0, 1.0, 1.0),
        light_direction: Sequence[float] = (1.0, 1.0, -1.0),
        ambient: Sequence[float] = (0.3, 0.3, 0.3),
        texture_mix: float = 0.0,
        noise_mix: float = 0.0,
        unseen_cube_region: bool = False,
        init_qpos_offset: Sequence[float] | None = None,
        cube_move_step: int | None = None,
        progress_reward: bool = False,
        robot_uids: str = "panda",
        **kwargs: Any,
    ):
        """`receptacles`: the kinds laid out (the first two in train's receptacle region, before the object,
        so train's layouts stay; a third one after all train's objects); `target`: the instructed one, which
        must appear once. `texture_mix`: weight of a random texture, drawn per episode, blended over the
        objects' and receptacles' pixels; `noise_mix`: weight of uniform noise, drawn anew every step,
        blended over the whole image. Both only touch the camera image, never the simulation.
        `progress_reward`: the dense reward (reward_mode="dense") adds the two distance terms (`progress`)."""
        if cube_color not in COLORS or (distractor_color is not None and distractor_color not in COLORS):
            raise ValueError(f"colours must be among {sorted(COLORS)}")
        if shape not in SHAPES or distractor_shape not in SHAPES or not set(receptacles) <= set(RECEPTACLES):
            raise ValueError(f"shapes must be among {sorted(SHAPES)}, receptacles among {sorted(RECEPTACLES)}")
        if list(receptacles).count(target) != 1 or not 2 <= len(receptacles) <= 3:
            raise ValueError(f"need 2 or 3 receptacles with the target {target!r} once, got {receptacles}")
        self.cube_color, self.shape, self.table_color = cube_color, SHAPES[shape], table_color
        self.receptacle_kinds, self.target = tuple(receptacles), target
        self.instruction = instruction or f"put the {cube_color} {self.shape.noun} on the {target}"
        self.distractor_color, self.distractor_shape = distractor_color, SHAPES[distractor_shape]
        self.light, self.light_direction, self.ambient = light, light_direction, ambient
        self.texture_mix, self.noise_mix = texture_mix, noise_mix
        self.unseen_cube_region = unseen_cube_region
        self.init_qpos_offset = init_qpos_offset
        self.cube_move_step = cube_move_step
        self.progress_reward = progress_reward
        super().__init__(*args, robot_uids=robot_uids, **kwargs)

    @property
    def _default_sensor_configs(self) -> list[CameraConfig]:
        return [CameraConfig("third_view", CAMERA_POSE, IMAGE_SIZE, IMAGE_SIZE, 1.0, 0.01, 10)]

    @property
    def _default_human_render_camera_configs(self) -> CameraConfig:
        return CameraConfig("render_camera", CAMERA_POSE, 512, 512, 1.0, 0.01, 10)

    def _load_agent(self, options: dict) -> None:
        super()._load_agent(options, sapien.Pose(p=[-0.615, 0, 0]))
        arm = getattr(self.agent.controller, "controllers", {}).get("arm")
        if type(arm) is PDEEPoseController:  # the agent builds its controllers itself: give ours their class
            arm.__class__ = _ArmController

    def _load_lighting(self, options: dict) -> None:
        self.scene.set_ambient_light(list(self.ambient))
        self.scene.add_directional_light(
            list(self.light_direction),
            list(self.light),
            shadow=self.enable_shadow,
            shadow_scale=5,
            shadow_map_size=2048,
        )
        self.scene.add_directional_light([0, 0, -1], list(self.light))

    def _build(self, name: str, parts: Sequence[Part], kinematic: bool) -> Any:
        """One actor from parts; only the first part collides."""
        builder = self.scene.create_actor_builder()
        for i, (shape, size, rgba, pose) in enumerate(parts):
            material = sapien.render.RenderMaterial(base_color=list(rgba), roughness=0.8)
            if shape == "box":
                builder.add_box_visual(pose=pose, half_size=size, material=material)
                if i == 0:
                    builder.add_box_collision(pose=pose, half_size=size)
            else:
                pose = pose * _UPRIGHT
                builder.add_cylinder_visual(pose=pose, radius=size[0], half_length=size[1], material=material)
                if i == 0:
                    builder.add_cylinder_collision(pose=pose, radius=size[0], half_length=size[1])
        builder.initial_pose = sapien.Pose(p=[0, 0, 1 + len(self.scene.actors)])
        return builder.build_kinematic(name) if kinematic else builder.build(name)

    def _build_object(self, name: str, shape: Shape, color: str) -> Any:
        """A dynamic object with its origin at its centre."""
        size = shape.half if shape.kind == "box" else shape.half[1:]
        return self._build(name, [("box" if shape.kind == "box" else "disc", size, COLORS[color], sapien.Pose())], False)

    def _load_scene(self, options: dict) -> None:
        self.table_scene = TableSceneBuilder(self, robot_init_qpos_noise=0.02)
        self.table_scene.build()
        if self.table_color is not None:  # a visual-only cloth over the whole table top
            builder = self.scene.create_actor_builder()
            builder.add_box_visual(
                pose=sapien.Pose(p=[-0.135, 0, -0.0009]),
                half_size=[0.605, 1.2, 0.001],
                material=sapien.render.RenderMaterial(base_color=list(self.table_color)),
            )
            builder.initial_pose = sapien.Pose()
            builder.build_kinematic("table_cloth")
        self.cube = self._build_object("cube", self.shape, self.cube_color)
        self.receptacles = [
            self._build(f"{kind}_{i}", RECEPTACLES[kind].parts, kinematic=True)
            for i, kind in enumerate(self.receptacle_kinds)
        ]
        self.target_receptacle = RECEPTACLES[self.target]
        self.target_actor = self.receptacles[self.receptacle_kinds.index(self.target)]
        # per-env episode state, (re)set for the envs being reset in _initialize_episode
        n = self.num_envs
        self._moved_pos = torch.zeros(n, 3, device=self.device)
        self._grasp_streak = torch.zeros(n, dtype=torch.int32, device=self.device)
        self._milestones = torch.zeros(n, 2, dtype=torch.bool, device=self.device)
        self._potential = torch.zeros(n, device=self.device)
        self._expert_rngs = [np.random.default_rng(0)] * n
        self._detour_u = torch.ones(n, device=self.device)  # the expert's decoy detour draw, U(0, 1) per episode
        self._detour_done = torch.zeros(n, dtype=torch.bool, device=self.device)  # the decoy has been passed over
        self._episode_seeds = [0] * n  # the image perturbations' seeds (the expert's, a different stream)
        self._textures = torch.zeros(n if self.texture_mix > 0 else 0, IMAGE_SIZE, IMAGE_SIZE, 3, dtype=torch.uint8)
        self.distractor = None
        if self.distractor_color is not None:
            self.distractor = self._build_object("distractor", self.distractor_shape, self.distractor_color)

    # Layout: per-env rejection sampling from the episode RNG, so a seed fixes a layout on either
    # back-end. Train's objects come first, so the variants that add objects keep train's layout.
    def _sample_layout(self, rng: np.random.RandomState) -> dict[str, np.ndarray]:
        footprints = {f"receptacle_{i}": RECEPTACLES[k].footprint for i, k in enumerate(self.receptacle_kinds)}
        footprints |= {"cube": self.shape.footprint, "cube_moved": self.shape.footprint}
        footprints |= {"distractor": self.distractor_shape.footprint}
        cube_region = UNSEEN_CUBE_REGION if self.unseen_cube_region else CUBE_REGION
        layout = _place(
            rng,
            {"receptacle_0": RECEPTACLE_REGION, "receptacle_1": RECEPTACLE_REGION, "cube": cube_region},
            {},
            footprints,
            mirror_cube=self.unseen_cube_region,
        )
        extras = {"distractor": CUBE_REGION} if self.distractor is not None else {}
        extras |= {"cube_moved": CUBE_REGION} if self.cube_move_step is not None else {}
        extras |= {"receptacle_2": EXTRA_RECEPTACLE_REGION} if len(self.receptacles) == 3 else {}
        return _place(rng, extras, layout, footprints)

    def _initialize_episode(self, env_idx: torch.Tensor, options: dict) -> None:
        with torch.device(self.device):  # new tensors land where the simulation is (GPU sim: cuda)
            self._initialize(env_idx)

    def _initialize(self, env_idx: torch.Tensor) -> None:
        self.table_scene.initialize(env_idx)
        if self.init_qpos_offset is not None:
            qpos = self.agent.robot.get_qpos()[env_idx]
            qpos[:, :7] += torch.as_tensor(self.init_qpos_offset, dtype=qpos.dtype, device=qpos.device)
            self.agent.reset(qpos)
        b, rngs = len(env_idx), self._batched_episode_rng[env_idx]
        yaw = torch.tensor(rngs.uniform(-np.pi / 4, np.pi / 4), dtype=torch.float32)  # all yaws, by symmetry
        yaw = yaw * self.shape.yaw_scale
        layouts = [self._sample_layout(rng) for rng in rngs.rngs]
        z = {"cube": self.shape.half[2], "cube_moved": self.shape.half[2], "distractor": self.distractor_shape.half[2]}
        pos = {
            k: torch.tensor([[*lay[k], z.get(k, 0.0)] for lay in layouts], dtype=torch.float32) for k in layouts[0]
        }
        cube_q = torch.stack([torch.cos(yaw / 2), torch.zeros(b), torch.zeros(b), torch.sin(yaw / 2)], 1)
        self.cube.set_pose(Pose.create_from_pq(pos["cube"], cube_q))
        for i, receptacle in enumerate(self.receptacles):
            receptacle.set_pose(Pose.create_from_pq(pos[f"receptacle_{i}"]))
        if self.distractor is not None:
            self.distractor.set_pose(Pose.create_from_pq(pos["distractor"]))
        if self.cube_move_step is not None:
            self._moved_pos[env_idx] = pos["cube_moved"].to(self.device)
        self._grasp_streak[env_idx] = 0
        self._milestones[env_idx] = False
        self._potential[env_idx] = 0
        self._detour_done[env_idx] = False
        for i, seed in zip(env_idx.tolist(), rngs.randint(2**31), strict=True):
            self._expert_rngs[i] = np.random.default_rng(seed)  # the expert's noise replays with the seed
            # a stream of its own: the detour draw leaves the noise streams (and demos without detours) as they were
            self._detour_u[i] = float(np.random.default_rng([seed, 2]).random())
            self._episode_seeds[i] = int(seed)
            if self.texture_mix > 0:
                self._textures[i] = _random_texture(np.random.default_rng([seed, 0]))

    def get_language_instruction(self) -> list[str]:
        """Same name and shape as the SimplerEnv Bridge tasks' method."""
        return [self.instruction] * self.num_envs

    def step(self, action: Any) -> tuple:
        if self.cube_move_step is not None:
            move = (self.elapsed_steps == self.cube_move_step) & ~self._is_grasping(self.cube)
            if move.any():  # teleport the cube (execution variant): the policy must notice and re-plan
                p = torch.where(move[:, None], self._moved_pos, self.cube.pose.p)
                self.cube.set_pose(Pose.create_from_pq(p, self.cube.pose.q))
                self.cube.set_linear_velocity(torch.zeros_like(p))
                self.cube.set_angular_velocity(torch.zeros_like(p))
        return super().step(action)

    # ------------------------------------------------------------------------------------------------
    # Image perturbations (RL4VLA's dynamic texture / dynamic noise): on the rendered image only, from
    # per-env generators seeded by the episode seed, so a seed replays the same images on either back-end
    # ------------------------------------------------------------------------------------------------
    def _get_obs_sensor_data(self, apply_texture_transforms: bool = True) -> dict:
        data = super()._get_obs_sensor_data(apply_texture_transforms)
        if "rgb" not in data.get("third_view", {}) or not (self.texture_mix or self.noise_mix):
            return data
        rgb = data["third_view"]["rgb"].float()  # (N, H, W, 3)
        if self.texture_mix > 0:
            seg = self.scene.sensors["third_view"].get_obs(
                rgb=False, depth=False, position=False, segmentation=True
            )["segmentation"][..., 0]  # (N, H, W) per-scene actor ids
            actors = [self.cube, *self.receptacles] + ([self.distractor] if self.distractor is not None else [])
            ids = torch.stack([a.per_scene_id for a in actors], 1).to(seg.device)  # (N, actors)
            mask = (seg[..., None] == ids[:, None, None, :]).any(-1, keepdim=True)  # (N, H, W, 1)
            textured = (1 - self.texture_mix) * rgb + self.texture_mix * self._textures.to(rgb.device)
            rgb = torch.where(mask.to(rgb.device), textured, rgb)
        if self.noise_mix > 0:
            noise = torch.stack(
                [
                    torch.from_numpy(np.random.default_rng([seed, 1, int(t)]).integers(0, 256, rgb.shape[1:]))
                    for seed, t in zip(self._episode_seeds, self.elapsed_steps.tolist(), strict=True)
                ]
            ).to(rgb.device)
            rgb = (1 - self.noise_mix) * rgb + self.noise_mix * noise
        data["third_view"]["rgb"] = rgb.round().to(torch.uint8)
        return data

    def _target_top(self) -> tuple[torch.Tensor, float]:
        """Centre of the instructed receptacle's top surface (N, 3) and the half side of its success square."""
        p = self.target_actor.pose.p.clone()
        p[:, 2] += self.target_receptacle.top
        return p, self.target_receptacle.half

    def _decoy_top(self) -> torch.Tensor:
        """(N, 3) centre of the top surface of the first receptacle the instruction did not name (the
        expert's decoy; the target's own where the scene has no other receptacle: then no detour)."""
        actor, kind = next(((a, k) for a, k in zip(self.receptacles, self.receptacle_kinds, strict=True)
                            if a is not self.target_actor), (self.target_actor, self.target))
        p = actor.pose.p.clone()
        p[:, 2] += RECEPTACLES[kind].top
        return p

    def _goal(self) -> torch.Tensor:
        """(N, 3) where the object's centre rests once placed on the middle of the instructed receptacle."""
        return self._target_top()[0] + torch.tensor([0.0, 0.0, self.shape.half[2]], device=self.device)

    def _on(self, cube: torch.Tensor, actor: Any, receptacle: Receptacle) -> torch.Tensor:
        """(N,) the cube, centred at `cube` (N, 3), rests on `actor`'s top surface: its centre over the success square,
        at resting height."""
        d = cube - actor.pose.p
        return (d[:, :2].abs() <= receptacle.half).all(1) & ((d[:, 2] - receptacle.top - self.shape.half[2]).abs() < 0.01)

    def _is_grasping(self, actor: Any) -> torch.Tensor:
        """(N,) `self.agent.is_grasping(actor)`, ManiSkill's Panda test (each finger pushes on `actor` with >= 0.5 N,
        within 85 degrees of its opening direction), the same bits for less work: the angles are skipped while no
        env has two pushing fingers (most steps; ~0.1 of ~0.5 ms), and the opening directions come from `_y_axis`,
        where ManiSkill builds both fingers' 4x4 pose matrices for one column each."""
        left, right = self.agent.finger1_link, self.agent.finger2_link
        forces = [self.scene.get_pairwise_contact_forces(link, actor) for link in (left, right)]  # (N, 3) each
        grasping = (torch.linalg.norm(forces[0], axis=1) >= 0.5) & (torch.linalg.norm(forces[1], axis=1) >= 0.5)
        if grasping.device.type == "cpu" and not grasping.any():  # the angles cannot matter (a GPU would sync here)
            return grasping
        for opening, force in ((_y_axis(left.pose.q), forces[0]), (-_y_axis(right.pose.q), forces[1])):
            grasping &= torch.rad2deg(common.compute_angle_between(opening, force)) <= 85
        return grasping

    def evaluate(self) -> dict[str, torch.Tensor]:
        cube = self.cube.pose.p
        on_target = self._on(cube, self.target_actor, self.target_receptacle)
        on_other = torch.zeros_like(on_target)  # on a receptacle the instruction did not name
        for kind, actor in zip(self.receptacle_kinds, self.receptacles, strict=True):
            if actor is not self.target_actor:
                on_other |= self._on(cube, actor, RECEPTACLES[kind])
        is_grasped = self._is_grasping(self.cube)
        placed = ~is_grasped & (torch.linalg.norm(self.cube.linear_velocity, dim=1) < 0.05)  # released, at rest
        return {"success": on_target & placed, "wrong_receptacle": on_other & placed, "on_target": on_target,
                "is_grasped": is_grasped}

    def _get_obs_extra(self, info: dict) -> dict[str, torch.Tensor]:
        """The task's state beside the robot's qpos / qvel, as ManiSkill's own tasks give it (PickCube's names):
        in every observation's "extra", read only by a critic on the state (`VecEnv` with `state_obs`); the
        policy sees the image alone."""
        goal = self._goal()
        tcp, cube = self.agent.tcp_pose, self.cube.pose  # each read once: a read builds a new Pose (~16 us)
        return {"tcp_pose": tcp.raw_pose, "is_grasped": info["is_grasped"].float()[:, None],
                "obj_pose": cube.raw_pose, "goal_pos": goal, "tcp_to_obj_pos": cube.p - tcp.p,
                "obj_to_goal_pos": goal - cube.p}

    def compute_dense_reward(self, obs: Any, action: torch.Tensor, info: dict) -> torch.Tensor:
        self._grasp_streak = torch.where(info["is_grasped"], self._grasp_streak + 1, 0)
        self._milestones[:, 0] |= info["is_grasped"]
        self._milestones[:, 1] |= self._grasp_streak >= GRASP_HOLD_STEPS
        potential = 0.1 * self._milestones.sum(1) + 1.0 * info["success"]
        if self.progress_reward:  # the episode's first step also earns its start state's small potential (< 0.05)
            goal = self._goal()
            reach = 1 - torch.tanh(10 * torch.linalg.norm(self.cube.pose.p - self.agent.tcp_pose.p, dim=1))
            place = 1 - torch.tanh(10 * torch.linalg.norm(self.cube.pose.p - goal, dim=1))
            potential = potential + PROGRESS_WEIGHTS[0] * reach + PROGRESS_WEIGHTS[1] * place
        reward, self._potential = potential - self._potential, potential
        return reward

    # ------------------------------------------------------------------------------------------------
    # Scripted expert: a reactive pick-move-place state machine on privileged state. It reads only the
    # current state, so it recovers from slips and from the cube being moved. It always goes for the
    # instructed object and receptacle (multi-object / multi-receptacle variants). It grasps straight down
    # without turning to the cube's faces: the Panda's 8 cm fingers square a 4 cm cube up as they close,
    # at any yaw (100 / 100 seeds on `train` with and without turning first). An expert that turned to
    # within 3 degrees before descending made the cube's yaw, which small policies trained from scratch
    # could not read from the image, gate every later phase of the demos (BENCHMARKS.md, section 4).
    # ------------------------------------------------------------------------------------------------
    def expert_action(self, noise: float = 0.0, pause_prob: float = 0.0, detour_prob: float = 0.0) -> torch.Tensor:
        """(num_envs, 7) normalised `pd_ee_delta_pose` actions (= OpenVLA-format Panda actions).
        `noise`: std of Gaussian noise added to dims 0-5; `pause_prob`: chance per step of a
        motionless step. Both are drawn from per-env generators seeded by the episode seed.
        `detour_prob`: chance per episode (a draw of its own from the episode seed) that the expert, once
        holding the object, first carries it over the decoy (the first receptacle the instruction did not
        name) and only then to the target: sft_openvla.py executes these actions and stores the clean
        expert's (detour_prob 0) as labels, so its demos show the object near the decoy with a label toward
        the target (its deviation 8). The detour ends for good once the object is within 3 cm (xy) of the
        decoy's centre; calling twice for one state (label, then executed action) is harmless."""
        tcp, cube = self.agent.tcp_pose, self.cube.pose
        top, _ = self._target_top()
        grasped = self._is_grasping(self.cube)
        if detour_prob > 0:
            decoy = self._decoy_top()
            detour = (self._detour_u < detour_prob) & ~self._detour_done
            self._detour_done |= detour & grasped & (torch.linalg.norm(decoy[:, :2] - cube.p[:, :2], dim=1) < 0.03)
            top = torch.where((detour & ~self._detour_done)[:, None], decoy, top)
        half_height = self.shape.half[2]
        on_target = self.evaluate()["on_target"]
        fingers_open = self.agent.robot.get_qpos()[:, -2:].sum(1) > 0.07
        xy_to_cube = torch.linalg.norm(cube.p[:, :2] - tcp.p[:, :2], dim=1)
        xy_to_top = torch.linalg.norm(top[:, :2] - cube.p[:, :2], dim=1)
        goal, gripper = tcp.p.clone(), torch.ones_like(xy_to_cube)  # default: stay, open

        # 1. Not holding it and it is not placed: hover above the cube, descend, close.
        approach = ~grasped & ~on_target
        far = xy_to_cube > 0.02  # 2 cm, not the 1 cm "aligned" bound: descending drifts a little
        too_low = tcp.p[:, 2] < cube.p[:, 2] + 0.04
        above = torch.cat([cube.p[:, :2], (cube.p[:, 2] + 0.08)[:, None]], 1)
        rise = torch.cat([tcp.p[:, :2], above[:, 2:]], 1)  # never sweep sideways at cube height
        goal = torch.where(approach[:, None], torch.where((far & too_low)[:, None], rise, above), goal)
        goal = torch.where((approach & ~far & fingers_open)[:, None], cube.p, goal)
        close = approach & ~far & ((tcp.p[:, 2] - cube.p[:, 2]).abs() < 0.008)
        gripper = torch.where(close | (grasped & ~on_target), -1.0, gripper)
        # 2. Holding it: lift, carry above the target, lower, release once it sits on the target.
        carry_z = top[:, 2] + half_height + 0.06
        lift = grasped & (xy_to_top > 0.015) & (cube.p[:, 2] < carry_z - 0.03)
        carry = torch.cat([top[:, :2], carry_z[:, None]], 1)
        lower = torch.cat([top[:, :2], (top[:, 2] + half_height + 0.002)[:, None]], 1)
        cube_goal = torch.where((xy_to_top > 0.015)[:, None], carry, lower)
        cube_goal = torch.where(lift[:, None], torch.cat([cube.p[:, :2], carry_z[:, None]], 1), cube_goal)
        goal = torch.where(grasped[:, None], tcp.p + cube_goal - cube.p, goal)
        # 3. Placed (held or not): open and rise.
        goal = torch.where(
            (on_target & ~grasped)[:, None],
            torch.cat([tcp.p[:, :2], torch.full_like(xy_to_cube, 0.15)[:, None]], 1),
            goal,
        )

        action = torch.zeros(self.num_envs, 7, device=self.device)
        action[:, :3] = (goal - tcp.p) / 0.1 * 1.5  # a P-controller in units of the 0.1 m action scale
        action[:, 6] = gripper
        if noise > 0 or pause_prob > 0:
            jitter = torch.tensor(
                np.stack([r.normal(0, max(noise, 1e-12), 6) for r in self._expert_rngs]),
                dtype=torch.float32,
                device=self.device,
            )
            paused = torch.tensor([r.random() < pause_prob for r in self._expert_rngs], device=self.device)
            action[:, :6] = torch.where(paused[:, None], 0.0, action[:, :6] + jitter)
        return action.clamp(-1, 1)


def _place(
    rng: np.random.RandomState,
    regions: dict[str, tuple[float, float, float, float]],
    fixed: dict[str, np.ndarray],
    footprints: dict[str, float],
    mirror_cube: bool = False,
) -> dict[str, np.ndarray]:
    """Add objects (name -> region) to the `fixed` ones by rejection sampling: footprints (name -> radius)
    keep 2 cm apart, and a moved cube lands at least 10 cm from where it was. `mirror_cube` flips the
    cube's y half the time (the unseen region lies on both sides)."""
    for _ in range(1000):
        placed = dict(fixed)
        for name, (x0, x1, y0, y1) in regions.items():
            xy = rng.uniform([x0, y0], [x1, y1])
            if mirror_cube and name == "cube" and rng.rand() < 0.5:
                xy[1] = -xy[1]
            gaps = {
                o: 0.10 if {name, o} == {"cube", "cube_moved"} else footprints[name] + footprints[o] + 0.02
                for o in placed
            }
            if any(np.linalg.norm(xy - p) < gaps[o] for o, p in placed.items()):
                break
            placed[name] = xy
        else:
            return placed
    raise RuntimeError("could not sample a non-overlapping layout")


def _random_texture(rng: np.random.Generator) -> torch.Tensor:
    """(IMAGE_SIZE, IMAGE_SIZE, 3) uint8: a mosaic of random colours, 12 to 32 tiles a side (so an object
    shows several), tilted by a random angle: no two episodes' textures look alike."""
    tiles = int(rng.integers(12, 33))
    colors = rng.integers(0, 256, (tiles, tiles, 3), dtype=np.uint8)
    angle = rng.uniform(0, np.pi)
    v, u = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE] / IMAGE_SIZE - 0.5
    rows = ((np.cos(angle) * v - np.sin(angle) * u + 0.75) / 1.5 * tiles).astype(int).clip(0, tiles - 1)
    cols = ((np.sin(angle) * v + np.cos(angle) * u + 0.75) / 1.5 * tiles).astype(int).clip(0, tiles - 1)
    return torch.from_numpy(colors[rows, cols])


# ----------------------------------------------------------------------------------------------------
# Variants: what eval and the scripts share. Each OOD variant changes one thing from `train`.
# ----------------------------------------------------------------------------------------------------
Category = Literal["train", "vision", "semantic", "execution"]  # RL4VLA's three, plus the training task


@dataclass(frozen=True)
class Variant:
    """A named task configuration: `env_kwargs` go to `OpenVLATabletopEnv`. `rl4vla`: the RL4VLA task it
    stands in for, as `<RL4VLA env id>@<obj_set>` (their tasks run with an object split)."""

    name: str
    category: Category
    description: str
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    rl4vla: str | None = None


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant(
            "train",
            "train",
            "green cube -> towel, a plate beside it; layouts random within the train regions",
            rl4vla="PutOnPlateInScene25Main-v3@train",
        ),
        Variant(
            "unseen_target",
            "semantic",
            "instruction names the plate: 'put the green cube on the plate'",
            dict(target="plate"),
        ),
        Variant(
            "unseen_phrasing",
            "semantic",
            "same goal, new words: 'place the green block onto the cloth'",
            dict(instruction="place the green block onto the cloth"),
            rl4vla="PutOnPlateInScene25Instruct-v1@test",
        ),
        Variant("red_cube", "vision", "the cube is red (instruction says red)", dict(cube_color="red")),
        Variant(
            "table_color",
            "vision",
            "the table top is a dark blue-grey instead of wood",
            dict(table_color=(0.22, 0.27, 0.38, 1.0)),
            rl4vla="PutOnPlateInScene25VisionImage-v1@test",
        ),
        Variant(
            "distractor_cube",
            "vision",
            "a second, blue cube lies on the table",
            dict(distractor_color="blue"),
        ),
        Variant(
            "lighting",
            "vision",
            "dim warm light from the side instead of white light from above",
            dict(light=(0.7, 0.45, 0.25), light_direction=(0.2, -1.0, -0.4), ambient=(0.12, 0.1, 0.08)),
        ),
        Variant(
            "unseen_positions",
            "execution",
            "the cube starts at |y| in [0.19, 0.26] m, outside train's |y| <= 0.14",
            dict(unseen_cube_region=True),
            rl4vla="PutOnPlateInScene25Position-v1@test",
        ),
        Variant(
            "unseen_ee_pose",
            "execution",
            "the arm starts turned and raised (joint offsets), so the gripper starts elsewhere",
            dict(init_qpos_offset=(0.45, -0.25, 0.0, 0.3, 0.0, -0.1, 0.0)),
            rl4vla="PutOnPlateInScene25EEPose-v1@test",
        ),
        Variant(
            "cube_moved",
            "execution",
            "at step 10, if not grasped, the cube jumps >= 10 cm to a new free spot",
            dict(cube_move_step=10),
            rl4vla="PutOnPlateInScene25PositionChangeTo-v1@test",
        ),
        # RL4VLA's test variants that the ten above do not cover, in RL4VLA's order
        *(
            Variant(
                f"dynamic_texture_{level}",
                "vision",
                f"a random colour mosaic, new each episode, blended at weight {mix} over the objects' and "
                "receptacles' pixels",
                dict(texture_mix=mix),
                rl4vla=f"PutOnPlateInScene25VisionTexture0{int(mix * 10)}-v1@test",
            )
            for level, mix in (("weak", 0.3), ("strong", 0.5))
        ),
        *(
            Variant(
                f"dynamic_noise_{level}",
                "vision",
                f"uniform pixel noise, new every step, blended at weight {mix} over the whole image",
                dict(noise_mix=mix),
                rl4vla=f"PutOnPlateInScene25VisionWhole0{int(mix * 10)}-v1@test",
            )
            for level, mix in (("weak", 0.3), ("strong", 0.5))
        ),
        Variant(
            "similar_to_training",
            "semantic",
            "a similar cube: 4.6 cm instead of 4 cm, a yellower green; same instruction",
            dict(shape="large_cube", cube_color="lime", instruction="put the green cube on the towel"),
            rl4vla="PutOnPlateInScene25Carrot-v1@train",
        ),
        Variant(
            "unseen_objects",
            "semantic",
            "the object is a green cylinder (4 cm wide, 5 cm tall): 'put the green cylinder on the towel'",
            dict(shape="cylinder"),
            rl4vla="PutOnPlateInScene25Carrot-v1@test",
        ),
        Variant(
            "unseen_receptacles",
            "semantic",
            "a wooden board takes the towel's place: 'put the green cube on the board'",
            dict(receptacles=("board", "plate"), target="board"),
            rl4vla="PutOnPlateInScene25Plate-v1@test",
        ),
        Variant(
            "multi_object_seen",
            "semantic",
            "a red and a green cube (both in SFT data); the instruction names the red one",
            dict(cube_color="red", distractor_color="green"),
            rl4vla="PutOnPlateInScene25MultiCarrot-v1@train",
        ),
        Variant(
            "multi_object_unseen",
            "semantic",
            "a yellow bar and a blue cylinder (neither in SFT data): 'put the yellow bar on the towel'",
            dict(shape="bar", cube_color="yellow", distractor_color="blue", distractor_shape="cylinder"),
            rl4vla="PutOnPlateInScene25MultiCarrot-v1@test",
        ),
        Variant(
            "distractive_receptacle",
            "semantic",
            "a second plate lies on the table (three receptacles); the target is still the towel",
            dict(receptacles=("towel", "plate", "plate")),
            rl4vla="PutOnPlateInScene25MultiPlate-v1@train",
        ),
        Variant(
            "multi_receptacle_unseen",
            "semantic",
            "a tray and a board instead of towel and plate: 'put the green cube on the tray'",
            dict(receptacles=("tray", "board"), target="tray"),
            rl4vla="PutOnPlateInScene25MultiPlate-v1@test",
        ),
    )
}
# RL4VLA's names for the variants that already existed under other names
ALIASES: dict[str, str] = {
    "unseen_table": "table_color",
    "unseen_instructions": "unseen_phrasing",
    "unseen_position": "unseen_positions",
    "unseen_robot_init_pose": "unseen_ee_pose",
    "object_reposition": "cube_moved",
}
_RL4VLA_ORDER = (  # RL4VLA's table: vision, semantic, execution
    "unseen_table",
    "dynamic_texture_weak",
    "dynamic_texture_strong",
    "dynamic_noise_weak",
    "dynamic_noise_strong",
    "similar_to_training",
    "unseen_objects",
    "unseen_receptacles",
    "unseen_instructions",
    "multi_object_seen",
    "multi_object_unseen",
    "distractive_receptacle",
    "multi_receptacle_unseen",
    "unseen_position",
    "unseen_robot_init_pose",
    "object_reposition",
)


def variant(name: str) -> Variant:
    """A variant by its name or its RL4VLA alias (KeyError if neither)."""
    return VARIANTS[ALIASES.get(name, name)]


def category(name: str) -> str:
    """The category of a variant, an alias, or an RL4VLA task (`<id>@<obj_set>`: that of its counterpart,
    else `rl4vla`); `simpler` for the Bridge tasks."""
    if ALIASES.get(name, name) in VARIANTS:
        return variant(name).category
    mirrored = [v.category for v in VARIANTS.values() if v.rl4vla == name]
    if mirrored:
        return mirrored[0]
    return "rl4vla" if name.partition("@")[0] in RL4VLA_ENV_IDS else "simpler"


SUITES: dict[str, tuple[str, ...]] = {
    "builtin": tuple(VARIANTS)[:10],  # the first ten, as before the RL4VLA suite existed
    "rl4vla": ("train", *_RL4VLA_ORDER),
    "rl4vla_assets": tuple(variant(n).rl4vla for n in ("train", *_RL4VLA_ORDER)),
    "simpler": BRIDGE_ENV_IDS,
}


# ----------------------------------------------------------------------------------------------------
# Action conversion: OpenVLA's un-normalised 7-D action -> the controller's action, per robot
# ----------------------------------------------------------------------------------------------------
def _rpy_to_matrix(rpy: np.ndarray) -> np.ndarray:
    """(N, 3) roll, pitch, yaw -> (N, 3, 3) R = Rz(yaw) Ry(pitch) Rx(roll) (static-axis xyz, Bridge's)."""
    (cr, cp, cy), (sr, sp, sy) = np.cos(rpy.T), np.sin(rpy.T)
    return np.stack(
        [
            np.stack([cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr], -1),
            np.stack([sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr], -1),
            np.stack([-sp, cp * sr, cp * cr], -1),
        ],
        -2,
    )


def openvla_to_controller(actions: np.ndarray | torch.Tensor, robot: Robot) -> np.ndarray:
    """(N, 7) OpenVLA actions -> (N, 7) float32 controller actions.

    panda: the action already is `pd_ee_delta_pose`'s normalised action (see the module docstring);
    clip to [-1, 1]. widowx (SimplerEnv Bridge, controller
    `arm_pd_ee_target_delta_pose_align2_gripper_pd_joint_pos`): Bridge's `bridge_orig` action is
    (dx, dy, dz) in m, (droll, dpitch, dyaw) in rad as R = Rz Ry Rx, gripper 1 = open / 0 = closed.
    The arm controller has `normalize_action=False` (metres / radians, unclipped) and composes its
    rotation delta as intrinsic XYZ Euler angles (ManiSkill's `euler_angles_to_matrix(.., "XYZ")`,
    R = Rx Ry Rz), so we convert the same rotation exactly; SimplerEnv passed axis-angle, which equals
    this to first order. The gripper is normalised (-1 closed, 1 open) and binarised at 0.5 as
    SimplerEnv's OpenVLA wrapper does.
    """
    a = np.asarray(actions.detach().cpu() if isinstance(actions, torch.Tensor) else actions, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != 7:
        raise ValueError(f"expected actions of shape (N, 7), got {a.shape}")
    if robot == "panda":
        return np.clip(a, -1.0, 1.0).astype(np.float32)
    if robot != "widowx":
        raise ValueError(f"unknown robot {robot!r}; expected 'panda' or 'widowx'")
    r = _rpy_to_matrix(a[:, 3:6])
    xyz = np.stack(
        [
            np.arctan2(-r[:, 1, 2], r[:, 2, 2]),
            np.arcsin(np.clip(r[:, 0, 2], -1, 1)),
            np.arctan2(-r[:, 0, 1], r[:, 0, 0]),
        ],
        -1,
    )
    gripper = np.where(a[:, 6:] > 0.5, 1.0, -1.0)
    return np.concatenate([a[:, :3], xyz, gripper], 1).astype(np.float32)


# ----------------------------------------------------------------------------------------------------
# Resolving names, assets and the back-end
# ----------------------------------------------------------------------------------------------------
class MissingAssetsError(RuntimeError):
    """A SimplerEnv or RL4VLA task whose assets (or, for RL4VLA, whose ManiSkill fork) are not installed;
    the message says where they come from."""


def check_assets(env_id: str) -> None:
    """Raise `MissingAssetsError` if `env_id` needs downloadable assets that are missing. We check
    ourselves because ManiSkill would otherwise ask on stdin (or exit) when the env is created."""
    from mani_skill.utils.assets.data import DATA_SOURCES, is_data_source_downloaded

    ids = list(REGISTERED_ENVS[env_id].asset_download_ids)
    # the robot is the agent's asset, not the env's
    ids += ["widowx250s"] if env_id in BRIDGE_ENV_IDS + RL4VLA_ENV_IDS else []
    missing = [i for i in ids if i in DATA_SOURCES and not is_data_source_downloaded(i)]
    if missing:
        cmd = " && ".join(f"python -m mani_skill.utils.download_asset {i} -y" for i in missing)
        raise MissingAssetsError(
            f"{env_id} needs ManiSkill assets that are not installed ({', '.join(missing)}); "
            f"download them with: {cmd}"
        )


def resolve(env_id_or_variant: str) -> tuple[str, dict[str, Any], Robot]:
    """A variant name (or its RL4VLA alias), the built-in env id, a SimplerEnv Bridge id, or an RL4VLA task
    `<id>[@train|@test]` (the object split, train if omitted, as in RL4VLA) -> (env id, env kwargs, robot).
    An RL4VLA task's kwargs hold `reset_options` ({"obj_set": ...}), which `make_envs` passes to every reset
    rather than to the env. Raises MissingAssetsError for a Bridge or RL4VLA task that is not installed."""
    name = ALIASES.get(env_id_or_variant, env_id_or_variant)
    if name in VARIANTS:
        return TABLETOP_ENV_ID, dict(VARIANTS[name].env_kwargs), "panda"
    if name == TABLETOP_ENV_ID:
        return TABLETOP_ENV_ID, {}, "panda"
    if name in BRIDGE_ENV_IDS:
        check_assets(name)
        return name, {}, "widowx"
    env_id, _, obj_set = name.partition("@")
    if env_id in RL4VLA_ENV_IDS and obj_set in ("", "train", "test"):
        if env_id not in REGISTERED_ENVS:
            raise MissingAssetsError(
                f"{env_id} is one of RL4VLA's tasks, which this ManiSkill install does not register; "
                f"they come from {RL4VLA_SOURCE}"
            )
        check_assets(env_id)
        return env_id, {"reset_options": {"obj_set": obj_set or "train"}}, "widowx"
    raise ValueError(
        f"unknown env or variant {env_id_or_variant!r}; valid: "
        f"{', '.join([*VARIANTS, *ALIASES, TABLETOP_ENV_ID, *BRIDGE_ENV_IDS])}, or an RL4VLA task "
        f"<id>[@train|@test] with <id> among {', '.join(RL4VLA_ENV_IDS)}"
    )


def gpu_physx_available() -> bool:
    """True if GPU simulation can start without a download: a CUDA device plus SAPIEN's PhysX GPU
    library in ~/.sapien/physx/<version>/ (where `sapien.physx.enable_gpu` would download it)."""
    if not torch.cuda.is_available():
        return False
    lib = Path.home() / ".sapien" / "physx" / sapien.physx.version() / "libPhysXGpu_64.so"
    return lib.exists()


# ----------------------------------------------------------------------------------------------------
# The vector env: one interface over GPU simulation and CPU worker processes
# ----------------------------------------------------------------------------------------------------
def state_vector(obs: dict) -> torch.Tensor:
    """ManiSkill's state observation, what `obs_mode="state"` gives (the robot's qpos and qvel, then the task's
    "extra": on our tasks the gripper's, the object's and the goal's poses), flattened from an image observation
    of N envs: (N, D) float32. For a critic on the simulator's state (the RL scripts' `--critic state`)."""
    leaves = [*obs["agent"].values(), *obs["extra"].values()]
    n = len(leaves[0])
    return torch.cat([torch.as_tensor(v).reshape(n, -1).float() for v in leaves], 1)


def _layout(*fields: tuple[str, int]) -> dict[str, slice]:
    ends = np.cumsum([size for _, size in fields])
    return {name: slice(int(end - size), int(end)) for (name, size), end in zip(fields, ends, strict=True)}


BUILTIN_STATE_LAYOUT = _layout(("qpos", 9), ("qvel", 9), ("tcp_pose", 7), ("is_grasped", 1), ("obj_pose", 7),
                               ("goal_pos", 3), ("tcp_to_obj_pos", 3), ("obj_to_goal_pos", 3))
"""Where each field lies in `state_vector` on the built-in tasks (42 numbers): the Panda's qpos and qvel, then the
task's extra in `_get_obs_extra`'s order (poses are position xyz then quaternion wxyz)."""


class _ImageEnv(gym.Wrapper):
    """One CPU-physics env in a worker: observation = the camera image (H, W, 3) uint8, so only
    pixels cross the process boundary (with `state_obs`, a dict of it and the state vector (D,) float32);
    never terminated or truncated, so `AsyncVectorEnv` never autoresets (`VecEnv` counts the steps)."""

    def __init__(self, env: gym.Env, camera: str, state_obs: bool = False):
        super().__init__(env)
        self.camera, self.state_obs = camera, state_obs
        image = env.observation_space["sensor_data"][camera]["rgb"]
        dim = sum(gym.spaces.flatdim(env.observation_space[k]) for k in ("agent", "extra"))
        self.observation_space = gym.spaces.Dict(
            image=image, state=gym.spaces.Box(-np.inf, np.inf, (dim,), np.float32)) if state_obs else image

    def _observation(self, obs: dict) -> np.ndarray | dict[str, np.ndarray]:
        image = obs["sensor_data"][self.camera]["rgb"]
        if not self.state_obs:
            return image
        batched = {k: {name: v[None] for name, v in obs[k].items()} for k in ("agent", "extra")}  # a batch of one
        return {"image": image, "state": state_vector(batched)[0].numpy()}

    def reset(self, **kwargs: Any) -> tuple[np.ndarray | dict, dict]:
        obs, info = self.env.reset(**kwargs)
        return self._observation(obs), info

    def step(self, action: np.ndarray) -> tuple:
        obs, reward, _, _, info = self.env.step(action)
        return self._observation(obs), reward, False, False, info

    def expert_action(self, noise: float, pause_prob: float, detour_prob: float = 0.0) -> np.ndarray:
        return self.env.unwrapped.expert_action(noise, pause_prob, detour_prob)[0].numpy()


def _make_worker_env(env_id: str, env_kwargs: dict[str, Any], camera: str, state_obs: bool) -> gym.Env:
    """Runs in a worker process (module level, so `spawn` can pickle it)."""
    from mani_skill.utils.wrappers.gymnasium import CPUGymWrapper

    torch.set_num_threads(1)  # the workers share the cores
    env = gym.make(env_id, num_envs=1, sim_backend="physx_cpu", **env_kwargs)
    return _ImageEnv(CPUGymWrapper(env, ignore_terminations=True), camera, state_obs)


class VecEnv:
    """`num_envs` envs stepped together for fixed-length episodes; build it with `make_envs`.

    `reset(seeds)` -> (images (N, H, W, 3) uint8, instructions, read anew each reset since RL4VLA's tasks
    change them per episode); `step(actions)` -> (images,
    rewards (N,) float32, dones (N,) bool, infos), all torch on `device`. `dones` is True on the
    episode's last step, where `infos` adds `success_once`, `success_at_end` and `episodic_return`, and on
    the built-in tasks the failure modes `grasped_once` (the cube was held at some step) and
    `wrong_receptacle_at_end` (it lies, released, on a receptacle the instruction did not name); stepping
    further raises until the next `reset`. `infos["success"]` is there every step.

    Parts, to overlap env stepping with inference (CPU workers only): the envs are held as `parts` groups of
    N / parts consecutive envs, each its own `AsyncVectorEnv`; `part_slices[p]` are part p's rows.
    `step_async(actions, p)` sends part p's (N / parts, 7) actions and returns at once, and `step_wait(p)`
    blocks until its workers have simulated and rendered that step -> part p's rows of what `step` returns
    (at its episode's end, its rows of the episode's infos). The RL scripts sample one part's actions on the
    GPU while the other part's workers step. Without `p` both act on all envs: `step` is `step_async` then
    `step_wait` of every part, the same results whatever `parts`. Each part counts the steps of its own
    episode; the episode's statistics are kept for all envs, each part writing its rows. The GPU simulator
    steps all its envs in one call: `parts` is 1 there.

    `state_obs`: `states` (N, D) float32 on `device` is also kept, each env's `state_vector` for the images that
    `reset` and `step_wait` last returned (`step_wait(p)` updates part p's rows): what a critic on the simulator's
    state reads (privileged: no real robot has it; the policy never sees it).
    """

    def __init__(
        self,
        env_id: str,
        env_kwargs: dict[str, Any],
        num_envs: int,
        robot: Robot,
        backend: str,
        device: str | torch.device,
        max_episode_steps: int,
        env_reward: bool,
        start_method: str,
        reset_options: dict[str, Any] | None = None,
        parts: int = 1,
        state_obs: bool = False,
    ):
        if parts < 1 or num_envs % parts:
            raise ValueError(f"parts must be >= 1 and divide num_envs ({num_envs}), got {parts}")
        if backend == "gpu" and parts != 1:
            raise ValueError("the GPU simulator steps all its envs in one call: parts must be 1 there "
                             "(overlapping env steps with inference needs the CPU workers, backend='cpu')")
        self.num_envs, self.robot, self.backend = num_envs, robot, backend
        self.reset_options = reset_options or {}  # passed to every env's reset (RL4VLA's object split)
        self.device, self.max_episode_steps = torch.device(device), max_episode_steps
        self.env_reward = env_reward  # the task env's dense reward (`shaped`, `progress`), else the success indicator
        self.camera = "third_view" if robot == "panda" else "3rd_view_camera"
        self.state_obs, self.states = state_obs, None
        self.parts, size = parts, num_envs // parts
        self.part_slices = [slice(p * size, (p + 1) * size) for p in range(parts)]  # part p's rows
        if backend == "gpu":
            from mani_skill.vector.wrappers.gymnasium import ManiSkillVectorEnv

            env = gym.make(env_id, num_envs=num_envs, sim_backend="physx_cuda", **env_kwargs)
            self._envs: list[Any] = [ManiSkillVectorEnv(env, auto_reset=False, ignore_terminations=True)]
        elif torch.cuda.is_available():
            # workers render on this process's GPU (each DDP rank on its own). AsyncVectorEnv also builds one
            # env here to read the spaces, and SAPIEN's renderer makes its GPU the current one: restore ours
            # (NCCL's object collectives and every `device="cuda"` tensor follow the current device)
            current = torch.cuda.current_device()
            gpu = self.device.index if self.device.type == "cuda" and self.device.index is not None else current
            self._envs = self._workers(env_id, dict(env_kwargs, render_backend=f"cuda:{gpu}"), start_method)
            torch.cuda.set_device(current)
        else:
            self._envs = self._workers(env_id, dict(env_kwargs, render_backend="cpu"), start_method)
        self._steps = [-1] * parts  # steps of each part's episode so far; -1: needs a reset
        self._pending: list[Any] = [None] * parts  # each part's controls sent by step_async, not yet waited for

    def _workers(self, env_id: str, env_kwargs: dict[str, Any], start_method: str) -> list[Any]:
        """One `AsyncVectorEnv` of worker processes per part."""
        env_fn = functools.partial(_make_worker_env, env_id, env_kwargs, self.camera, self.state_obs)
        size = self.num_envs // self.parts
        return [gym.vector.AsyncVectorEnv([env_fn] * size, context=start_method) for _ in range(self.parts)]

    @property
    def state_dim(self) -> int:
        """D, the length of each env's `state_vector` (`state_obs` only; known before the first reset)."""
        if not self.state_obs:
            raise ValueError("state_dim needs envs made with state_obs=True")
        space = self._envs[0].single_observation_space
        if self.backend == "cpu":
            return space["state"].shape[0]
        return sum(gym.spaces.flatdim(space[k]) for k in ("agent", "extra"))

    def _call(self, name: str, *args: Any) -> list:
        """Call a method of every env (of the task env on the GPU back-end, of the worker's wrapper
        stack on the CPU one) -> a list with one result per env."""
        if self.backend == "gpu":
            return list(getattr(self._envs[0].unwrapped, name)(*args))
        # a worker's env is a batch of one: unwrap its list results (instructions), keep arrays
        return [r[0] if isinstance(r, list) else r for envs in self._envs for r in envs.call(name, *args)]

    def _observe(self, obs: Any, rows: slice) -> torch.Tensor:
        """A part's observation -> its images (n, H, W, 3) uint8 on `device`; with `state_obs` its rows of
        `states` are set."""
        if self.backend == "gpu":
            images = obs["sensor_data"][self.camera]["rgb"]
            state = state_vector(obs) if self.state_obs else None
        else:
            images = torch.from_numpy(obs["image"] if self.state_obs else obs)
            state = torch.from_numpy(obs["state"]) if self.state_obs else None
        if state is not None:
            if self.states is None:
                self.states = torch.zeros((self.num_envs, state.shape[1]), device=self.device)
            self.states[rows] = state.to(self.device)
        return images.to(self.device)

    def reset(self, seeds: Sequence[int]) -> tuple[torch.Tensor, list[str]]:
        """Reset all envs; env i starts from the state `seeds[i]` fixes (same seed, same state)."""
        if len(seeds) != self.num_envs:
            raise ValueError(f"need {self.num_envs} seeds, got {len(seeds)}")
        if any(p is not None for p in self._pending):
            raise RuntimeError("a step is under way: call step_wait() before reset")
        seeds = [int(s) for s in seeds]
        if self.backend == "gpu":
            obs = [self._envs[0].reset(seed=seeds, options=dict(self.reset_options))[0]]
        else:  # every part's workers reset at once
            for envs, rows in zip(self._envs, self.part_slices, strict=True):
                envs.reset_async(seed=seeds[rows], options=dict(self.reset_options))
            obs = [envs.reset_wait()[0] for envs in self._envs]
        self.instructions: list[str] = self._call("get_language_instruction")
        self._steps = [0] * self.parts
        self._return = torch.zeros(self.num_envs, device=self.device)
        self._success_once = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        self._grasped_once = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        return torch.cat([self._observe(o, rows) for o, rows in zip(obs, self.part_slices, strict=True)]), self.instructions

    def step(
        self, actions: np.ndarray | torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        """Apply (N, 7) OpenVLA-format actions (converted by `openvla_to_controller`)."""
        self.step_async(actions)
        return self.step_wait()

    def step_async(self, actions: np.ndarray | torch.Tensor, part: int | None = None) -> None:
        """Send part `part`'s (N / parts, 7) OpenVLA-format actions (None: all envs' (N, 7)) and return at once:
        its workers step while the caller goes on; `step_wait(part)` collects the results."""
        parts = range(self.parts) if part is None else [part]
        for p in parts:
            if self._pending[p] is not None:
                raise RuntimeError(f"part {p} has a step under way: call step_wait first")
            if not 0 <= self._steps[p] < self.max_episode_steps:
                raise RuntimeError("the episode is over (or never started): call reset(seeds) first")
        controls = openvla_to_controller(actions, self.robot)
        if len(controls) != len(parts) * self.num_envs // self.parts:
            raise ValueError(f"expected actions for {len(parts) * self.num_envs // self.parts} envs, got {len(controls)}")
        for p, part_controls in zip(parts, np.split(controls, len(parts)), strict=True):
            if self.backend == "gpu":  # one synchronous simulator: step_wait steps it
                self._pending[p] = torch.from_numpy(part_controls).to(self._envs[p].unwrapped.device)
            else:
                self._envs[p].step_async(part_controls)
                self._pending[p] = part_controls

    def step_wait(self, part: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        """Wait for the step that `step_async` sent to part `part` (None: every part) -> (images, rewards,
        dones, infos) of its rows, as `step` describes for all envs."""
        if part is None:
            results = [self.step_wait(p) for p in range(self.parts)]
            images, rewards, dones = (torch.cat([r[i] for r in results]) for i in range(3))
            return images, rewards, dones, {k: torch.cat([r[3][k] for r in results]) for k in results[0][3]}
        controls, self._pending[part] = self._pending[part], None
        if controls is None:
            raise RuntimeError(f"part {part} has no step under way: call step_async first")
        if self.backend == "gpu":
            obs, env_rewards, _, _, info = self._envs[part].step(controls)
        else:
            obs, env_rewards, _, _, info = self._envs[part].step_wait()
        self._steps[part] += 1
        rows = self.part_slices[part]
        success = torch.as_tensor(info["success"], device=self.device).bool()
        rewards = (torch.as_tensor(env_rewards, device=self.device) if self.env_reward else success).float()
        self._return[rows] += rewards
        self._success_once[rows] |= success
        if "is_grasped" in info:  # the built-in tasks' failure modes (the evaluation reports them)
            self._grasped_once[rows] |= torch.as_tensor(info["is_grasped"], device=self.device).bool()
        done = self._steps[part] == self.max_episode_steps
        infos: dict[str, torch.Tensor] = {"success": success}
        if done:
            infos.update(
                success_once=self._success_once[rows].clone(),
                success_at_end=success.clone(),
                episodic_return=self._return[rows].clone(),
            )
            if "wrong_receptacle" in info:
                infos.update(
                    grasped_once=self._grasped_once[rows].clone(),
                    wrong_receptacle_at_end=torch.as_tensor(info["wrong_receptacle"], device=self.device).bool(),
                )
        return self._observe(obs, rows), rewards, torch.full_like(success, done), infos

    def expert_actions(self, noise: float = 0.0, pause_prob: float = 0.0, detour_prob: float = 0.0) -> torch.Tensor:
        """(N, 7) scripted-expert actions in OpenVLA format for the current states (built-in task only);
        the noise and the decoy detours replay with the reset seeds (the task env's `expert_action`)."""
        if self.robot != "panda":
            raise ValueError("the scripted expert exists only for the built-in Panda tasks")
        return torch.stack([torch.as_tensor(a) for a in self._call("expert_action", noise, pause_prob, detour_prob)]).to(
            self.device
        )

    def close(self) -> None:
        for envs in self._envs:
            envs.close()


def make_envs(
    env_id_or_variant: str,
    num_envs: int,
    *,
    device: str | torch.device = "cpu",
    backend: Literal["auto", "gpu", "cpu"] = "auto",
    reward: Literal["sparse", "shaped", "progress"] = "sparse",
    max_episode_steps: int = 80,
    start_method: str = "spawn",
    parts: int = 1,
    state_obs: bool = False,
    **env_kwargs: Any,
) -> VecEnv:
    """Build `num_envs` envs of a variant (see `VARIANTS`), of `OpenVLATabletop-v1`, of a SimplerEnv
    Bridge id or of an RL4VLA task (see `resolve`). `backend="auto"` takes GPU simulation if `gpu_physx_available()`, else CPU workers.
    `env_kwargs` override the variant's task kwargs. `parts` > 1 holds the CPU workers as that many groups,
    each stepped on its own (see `VecEnv`; ValueError on the GPU back-end). `state_obs` keeps `states`, the
    simulator's state observation, beside the images (see `VecEnv`). Raises ValueError for unknown
    names and `MissingAssetsError` for Bridge or RL4VLA tasks that are not installed."""
    env_id, kwargs, robot = resolve(env_id_or_variant)
    if backend not in ("auto", "gpu", "cpu") or reward not in ("sparse", "shaped", "progress"):
        raise ValueError(
            f"backend must be auto|gpu|cpu and reward sparse|shaped|progress, got {backend!r}, {reward!r}"
        )
    if reward != "sparse" and robot != "panda":
        raise ValueError(f"the {reward} reward exists only for the built-in Panda tasks; use reward='sparse'")
    if backend == "auto":
        backend = "gpu" if gpu_physx_available() else "cpu"
    elif backend == "gpu" and not gpu_physx_available():
        raise ValueError("backend='gpu' needs a CUDA GPU and SAPIEN's PhysX GPU library (~/.sapien/physx/); use 'cpu'")
    kwargs.update(env_kwargs)
    reset_options = kwargs.pop("reset_options", None)
    if robot == "panda":
        kwargs.update(
            obs_mode="rgb",
            control_mode="pd_ee_delta_pose",
            reward_mode="none" if reward == "sparse" else "dense",
        )
        if reward == "progress":
            kwargs.update(progress_reward=True)
    else:  # the Bridge (and RL4VLA) tasks support only this mode; their default controller is the one we convert for
        kwargs.update(obs_mode="rgb+segmentation")
    return VecEnv(
        env_id, kwargs, num_envs, robot, backend, device, max_episode_steps, reward != "sparse", start_method,
        reset_options, parts, state_obs,
    )
