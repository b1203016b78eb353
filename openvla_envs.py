"""The simulator side of openvla-rl: built-in ManiSkill3 tabletop tasks, their out-of-distribution
variants, a vectorised env factory over two back-ends, OpenVLA-action conversion and a scripted expert.

Task. `OpenVLATabletop-v1` mirrors the blog's "put the cube on the towel" experiment with what the
`mani_skill` pip package ships (the Panda robot and the table scene) plus primitive shapes: a 4 cm cube,
a towel (a thin cloth-coloured box with stripes), a plate (a low white disc) and an optional distractor
cube, laid out without overlap from the episode seed. One fixed camera in front of the table, facing the
robot (like the Bridge camera, from the other side), gives 224x224 RGB. Success = the cube rests on the
instructed receptacle, released and nearly still. Reward, per step: `sparse` = the success indicator
(the blog's), or `shaped` = RL4VLA's potential with milestones +0.1 grasped, +0.1 grasp held 5 steps,
+1 on target; the reward is the change of that potential, so an episode's return is at most 1.2 and
undoing progress costs what it earned. Episodes have a fixed length (80 steps) and never end early.

Variants (`VARIANTS`): `train` (green cube -> towel, a plate beside it) and OOD variants in the
blog's and RL4VLA's three families: language (unseen target, unseen phrasing), vision (red cube,
table colour, distractor cube, lighting) and execution (unseen cube positions, unseen initial
end-effector pose, cube moved mid-episode). Each states what differs from `train`.

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
the model's bins map 1:1 onto the controller. For the WidowX SimplerEnv Bridge tasks see
`openvla_to_controller`; their images come at the Bridge camera's 640x480 (the OpenVLA processor
resizes to 224x224, as SimplerEnv does).
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
from mani_skill.envs.sapien_env import BaseEnv
from mani_skill.sensors.camera import CameraConfig
from mani_skill.utils import sapien_utils
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
}
CUBE_HALF = 0.02
TOWEL_HALF = (0.075, 0.075, 0.003)  # x, y, z half sizes (m)
PLATE_RADIUS, PLATE_HALF_HEIGHT = 0.07, 0.006
# Object-centre regions (x_lo, x_hi, y_lo, y_hi) on the table (m; the robot base is at x = -0.615).
RECEPTACLE_REGION = (-0.22, 0.08, -0.22, 0.22)
CUBE_REGION = (-0.18, 0.05, -0.14, 0.14)
UNSEEN_CUBE_REGION = (-0.18, 0.05, 0.19, 0.26)  # mirrored to y < 0 half the time: never seen in train
# Facing the robot across the table, high enough that the arm's start pose hides little of the workspace.
CAMERA_POSE = sapien_utils.look_at(eye=[0.5, 0.0, 0.5], target=[-0.1, 0.0, 0.05])
FOOTPRINTS = {
    "towel": float(np.hypot(*TOWEL_HALF[:2])),
    "plate": PLATE_RADIUS,
    "cube": 0.03,
    "distractor": 0.03,
    "cube_moved": 0.03,
}  # radii (m) of the discs that must not overlap
GRASP_HOLD_STEPS = 5  # RL4VLA's "sustained grasp" milestone


# ----------------------------------------------------------------------------------------------------
# The task
# ----------------------------------------------------------------------------------------------------
@register_env(TABLETOP_ENV_ID)  # no max_episode_steps: no TimeLimit, the vector env counts steps
class OpenVLATabletopEnv(BaseEnv):
    """Put a coloured cube on a towel or a plate (see the module docstring). Every kwarg below is
    one knob a variant may turn; the defaults are `train`."""

    SUPPORTED_ROBOTS = ["panda"]
    SUPPORTED_REWARD_MODES = ["dense", "none"]  # dense = RL4VLA's shaped reward; sparse is the VecEnv's

    def __init__(
        self,
        *args: Any,
        cube_color: str = "green",
        target: Literal["towel", "plate"] = "towel",
        instruction: str | None = None,
        table_color: Sequence[float] | None = None,
        distractor_color: str | None = None,
        light: Sequence[float] = (1.0, 1.0, 1.0),
        light_direction: Sequence[float] = (1.0, 1.0, -1.0),
        ambient: Sequence[float] = (0.3, 0.3, 0.3),
        unseen_cube_region: bool = False,
        init_qpos_offset: Sequence[float] | None = None,
        cube_move_step: int | None = None,
        robot_uids: str = "panda",
        **kwargs: Any,
    ):
        if cube_color not in COLORS or (distractor_color is not None and distractor_color not in COLORS):
            raise ValueError(f"colours must be among {sorted(COLORS)}")
        self.cube_color, self.target, self.table_color = cube_color, target, table_color
        self.instruction = instruction or f"put the {cube_color} cube on the {target}"
        self.distractor_color = distractor_color
        self.light, self.light_direction, self.ambient = light, light_direction, ambient
        self.unseen_cube_region = unseen_cube_region
        self.init_qpos_offset = init_qpos_offset
        self.cube_move_step = cube_move_step
        super().__init__(*args, robot_uids=robot_uids, **kwargs)

    @property
    def _default_sensor_configs(self) -> list[CameraConfig]:
        return [CameraConfig("third_view", CAMERA_POSE, IMAGE_SIZE, IMAGE_SIZE, 1.0, 0.01, 10)]

    @property
    def _default_human_render_camera_configs(self) -> CameraConfig:
        return CameraConfig("render_camera", CAMERA_POSE, 512, 512, 1.0, 0.01, 10)

    def _load_agent(self, options: dict) -> None:
        super()._load_agent(options, sapien.Pose(p=[-0.615, 0, 0]))

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

    def _build(
        self,
        name: str,
        parts: list[tuple[str, Sequence[float], Sequence[float], sapien.Pose]],
        kinematic: bool,
    ) -> Any:
        """One actor from (shape, size, rgba, local pose) parts; only the first part collides."""
        builder = self.scene.create_actor_builder()
        for i, (shape, size, rgba, pose) in enumerate(parts):
            material = sapien.render.RenderMaterial(base_color=list(rgba), roughness=0.8)
            if shape == "box":
                builder.add_box_visual(pose=pose, half_size=size, material=material)
                if i == 0:
                    builder.add_box_collision(pose=pose, half_size=size)
            else:  # a disc: SAPIEN cylinders lie along x, so stand them up
                pose = pose * sapien.Pose(q=[0.7071068, 0, 0.7071068, 0])
                builder.add_cylinder_visual(pose=pose, radius=size[0], half_length=size[1], material=material)
                if i == 0:
                    builder.add_cylinder_collision(pose=pose, radius=size[0], half_length=size[1])
        builder.initial_pose = sapien.Pose(p=[0, 0, 1 + len(self.scene.actors)])
        return builder.build_kinematic(name) if kinematic else builder.build(name)

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
        cube = ("box", [CUBE_HALF] * 3, COLORS[self.cube_color], sapien.Pose())
        self.cube = self._build("cube", [cube], kinematic=False)
        tx, ty, tz = TOWEL_HALF
        stripes = [
            ("box", [0.006, ty, 0.0005], [0.8, 0.25, 0.2, 1], sapien.Pose(p=[x, 0, 2 * tz]))
            for x in (-0.05, 0.05)
        ]
        self.towel = self._build(
            "towel",
            [("box", TOWEL_HALF, [0.45, 0.55, 0.75, 1], sapien.Pose(p=[0, 0, tz])), *stripes],
            kinematic=True,
        )
        self.plate = self._build(
            "plate",
            [
                (
                    "disc",
                    [PLATE_RADIUS, PLATE_HALF_HEIGHT],
                    [0.93, 0.93, 0.9, 1],
                    sapien.Pose(p=[0, 0, PLATE_HALF_HEIGHT]),
                ),
                (
                    "disc",
                    [PLATE_RADIUS * 0.7, 0.0005],
                    [0.8, 0.8, 0.78, 1],
                    sapien.Pose(p=[0, 0, 2 * PLATE_HALF_HEIGHT]),
                ),
            ],
            kinematic=True,
        )
        # per-env episode state, (re)set for the envs being reset in _initialize_episode
        n = self.num_envs
        self._moved_pos = torch.zeros(n, 3, device=self.device)
        self._grasp_streak = torch.zeros(n, dtype=torch.int32, device=self.device)
        self._milestones = torch.zeros(n, 2, dtype=torch.bool, device=self.device)
        self._potential = torch.zeros(n, device=self.device)
        self._expert_rngs = [np.random.default_rng(0)] * n
        self.distractor = None
        if self.distractor_color is not None:
            self.distractor = self._build(
                "distractor",
                [("box", [CUBE_HALF] * 3, COLORS[self.distractor_color], sapien.Pose())],
                kinematic=False,
            )

    # Layout: per-env rejection sampling from the episode RNG, so a seed fixes a layout on either
    # back-end. Train's objects come first, so the distractor and moved-cube variants keep train's layout.
    def _sample_layout(self, rng: np.random.RandomState) -> dict[str, np.ndarray]:
        cube_region = UNSEEN_CUBE_REGION if self.unseen_cube_region else CUBE_REGION
        layout = _place(
            rng,
            {"towel": RECEPTACLE_REGION, "plate": RECEPTACLE_REGION, "cube": cube_region},
            {},
            mirror_cube=self.unseen_cube_region,
        )
        extras = {"distractor": CUBE_REGION} if self.distractor is not None else {}
        extras |= {"cube_moved": CUBE_REGION} if self.cube_move_step is not None else {}
        return _place(rng, extras, layout)

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
        layouts = [self._sample_layout(rng) for rng in rngs.rngs]
        z = {"cube": CUBE_HALF, "towel": 0.0, "plate": 0.0, "distractor": CUBE_HALF, "cube_moved": CUBE_HALF}
        pos = {k: torch.tensor([[*lay[k], z[k]] for lay in layouts], dtype=torch.float32) for k in layouts[0]}
        cube_q = torch.stack([torch.cos(yaw / 2), torch.zeros(b), torch.zeros(b), torch.sin(yaw / 2)], 1)
        self.cube.set_pose(Pose.create_from_pq(pos["cube"], cube_q))
        self.towel.set_pose(Pose.create_from_pq(pos["towel"]))
        self.plate.set_pose(Pose.create_from_pq(pos["plate"]))
        if self.distractor is not None:
            self.distractor.set_pose(Pose.create_from_pq(pos["distractor"]))
        if self.cube_move_step is not None:
            self._moved_pos[env_idx] = pos["cube_moved"].to(self.device)
        self._grasp_streak[env_idx] = 0
        self._milestones[env_idx] = False
        self._potential[env_idx] = 0
        for i, seed in zip(env_idx.tolist(), rngs.randint(2**31), strict=True):
            self._expert_rngs[i] = np.random.default_rng(seed)  # the expert's noise replays with the seed

    def get_language_instruction(self) -> list[str]:
        """Same name and shape as the SimplerEnv Bridge tasks' method."""
        return [self.instruction] * self.num_envs

    def step(self, action: Any) -> tuple:
        if self.cube_move_step is not None:
            move = (self.elapsed_steps == self.cube_move_step) & ~self.agent.is_grasping(self.cube)
            if move.any():  # teleport the cube (execution variant): the policy must notice and re-plan
                p = torch.where(move[:, None], self._moved_pos, self.cube.pose.p)
                self.cube.set_pose(Pose.create_from_pq(p, self.cube.pose.q))
                self.cube.set_linear_velocity(torch.zeros_like(p))
                self.cube.set_angular_velocity(torch.zeros_like(p))
        return super().step(action)

    def _target_top(self) -> tuple[torch.Tensor, float]:
        """Centre of the instructed receptacle's top surface (N, 3) and its footprint half-size."""
        actor, top, half = (
            (self.towel, 2 * TOWEL_HALF[2], TOWEL_HALF[0] - 0.005)
            if self.target == "towel"
            else (self.plate, 2 * PLATE_HALF_HEIGHT, (PLATE_RADIUS - 0.01) / np.sqrt(2))
        )
        p = actor.pose.p.clone()
        p[:, 2] += top
        return p, half

    def evaluate(self) -> dict[str, torch.Tensor]:
        top, half = self._target_top()
        d = self.cube.pose.p - top
        on_target = (d[:, :2].abs() <= half).all(1) & ((d[:, 2] - CUBE_HALF).abs() < 0.01)
        is_grasped = self.agent.is_grasping(self.cube)
        still = torch.linalg.norm(self.cube.linear_velocity, dim=1) < 0.05
        return {"success": on_target & ~is_grasped & still, "on_target": on_target, "is_grasped": is_grasped}

    def compute_dense_reward(self, obs: Any, action: torch.Tensor, info: dict) -> torch.Tensor:
        self._grasp_streak = torch.where(info["is_grasped"], self._grasp_streak + 1, 0)
        self._milestones[:, 0] |= info["is_grasped"]
        self._milestones[:, 1] |= self._grasp_streak >= GRASP_HOLD_STEPS
        potential = 0.1 * self._milestones.sum(1) + 1.0 * info["success"]
        reward, self._potential = potential - self._potential, potential
        return reward

    # ------------------------------------------------------------------------------------------------
    # Scripted expert: a reactive pick-move-place state machine on privileged state. It reads only the
    # current state, so it recovers from slips and from the cube being moved. It grasps straight down
    # without turning to the cube's faces: the Panda's 8 cm fingers square a 4 cm cube up as they close,
    # at any yaw (100 / 100 seeds on `train` with and without turning first). An expert that turned to
    # within 3 degrees before descending made the cube's yaw, which small policies trained from scratch
    # could not read from the image, gate every later phase of the demos (BENCHMARKS.md, section 4).
    # ------------------------------------------------------------------------------------------------
    def expert_action(self, noise: float = 0.0, pause_prob: float = 0.0) -> torch.Tensor:
        """(num_envs, 7) normalised `pd_ee_delta_pose` actions (= OpenVLA-format Panda actions).
        `noise`: std of Gaussian noise added to dims 0-5; `pause_prob`: chance per step of a
        motionless step. Both are drawn from per-env generators seeded by the episode seed."""
        tcp, cube = self.agent.tcp_pose, self.cube.pose
        top, _ = self._target_top()
        grasped = self.agent.is_grasping(self.cube)
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
        carry_z = top[:, 2] + CUBE_HALF + 0.06
        lift = grasped & (xy_to_top > 0.015) & (cube.p[:, 2] < carry_z - 0.03)
        carry = torch.cat([top[:, :2], carry_z[:, None]], 1)
        lower = torch.cat([top[:, :2], (top[:, 2] + CUBE_HALF + 0.002)[:, None]], 1)
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
    mirror_cube: bool = False,
) -> dict[str, np.ndarray]:
    """Add objects (name -> region) to the `fixed` ones by rejection sampling: footprints keep 2 cm
    apart, and a moved cube lands at least 10 cm from where it was. `mirror_cube` flips the cube's
    y half the time (the unseen region lies on both sides)."""
    for _ in range(1000):
        placed = dict(fixed)
        for name, (x0, x1, y0, y1) in regions.items():
            xy = rng.uniform([x0, y0], [x1, y1])
            if mirror_cube and name == "cube" and rng.rand() < 0.5:
                xy[1] = -xy[1]
            gaps = {
                o: 0.10 if {name, o} == {"cube", "cube_moved"} else FOOTPRINTS[name] + FOOTPRINTS[o] + 0.02
                for o in placed
            }
            if any(np.linalg.norm(xy - p) < gaps[o] for o, p in placed.items()):
                break
            placed[name] = xy
        else:
            return placed
    raise RuntimeError("could not sample a non-overlapping layout")


# ----------------------------------------------------------------------------------------------------
# Variants: what eval and the scripts share. Each OOD variant changes one thing from `train`.
# ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Variant:
    """A named task configuration: `env_kwargs` go to `OpenVLATabletopEnv`."""

    name: str
    category: Literal["train", "language", "vision", "execution"]
    description: str
    env_kwargs: dict[str, Any] = field(default_factory=dict)


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant(
            "train",
            "train",
            "green cube -> towel, a plate beside it; layouts random within the train regions",
        ),
        Variant(
            "unseen_target",
            "language",
            "instruction names the plate: 'put the green cube on the plate'",
            dict(target="plate"),
        ),
        Variant(
            "unseen_phrasing",
            "language",
            "same goal, new words: 'place the green block onto the cloth'",
            dict(instruction="place the green block onto the cloth"),
        ),
        Variant("red_cube", "vision", "the cube is red (instruction says red)", dict(cube_color="red")),
        Variant(
            "table_color",
            "vision",
            "the table top is a dark blue-grey instead of wood",
            dict(table_color=(0.22, 0.27, 0.38, 1.0)),
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
        ),
        Variant(
            "unseen_ee_pose",
            "execution",
            "the arm starts turned and raised (joint offsets), so the gripper starts elsewhere",
            dict(init_qpos_offset=(0.45, -0.25, 0.0, 0.3, 0.0, -0.1, 0.0)),
        ),
        Variant(
            "cube_moved",
            "execution",
            "at step 10, if not grasped, the cube jumps >= 10 cm to a new free spot",
            dict(cube_move_step=10),
        ),
    )
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
    """A SimplerEnv task whose assets are not on disk; the message names the download command."""


def check_assets(env_id: str) -> None:
    """Raise `MissingAssetsError` if `env_id` needs downloadable assets that are missing. We check
    ourselves because ManiSkill would otherwise ask on stdin (or exit) when the env is created."""
    from mani_skill.utils.assets.data import DATA_SOURCES, is_data_source_downloaded

    ids = list(REGISTERED_ENVS[env_id].asset_download_ids)
    ids += ["widowx250s"] if env_id in BRIDGE_ENV_IDS else []  # the robot is the agent's asset, not the env's
    missing = [i for i in ids if i in DATA_SOURCES and not is_data_source_downloaded(i)]
    if missing:
        cmd = " && ".join(f"python -m mani_skill.utils.download_asset {i} -y" for i in missing)
        raise MissingAssetsError(
            f"{env_id} needs ManiSkill assets that are not installed ({', '.join(missing)}); "
            f"download them with: {cmd}"
        )


def resolve(env_id_or_variant: str) -> tuple[str, dict[str, Any], Robot]:
    """A variant name, the built-in env id or a SimplerEnv Bridge id -> (env id, env kwargs, robot)."""
    if env_id_or_variant in VARIANTS:
        return TABLETOP_ENV_ID, dict(VARIANTS[env_id_or_variant].env_kwargs), "panda"
    if env_id_or_variant == TABLETOP_ENV_ID:
        return TABLETOP_ENV_ID, {}, "panda"
    if env_id_or_variant in BRIDGE_ENV_IDS:
        check_assets(env_id_or_variant)
        return env_id_or_variant, {}, "widowx"
    raise ValueError(
        f"unknown env or variant {env_id_or_variant!r}; valid: "
        f"{', '.join([*VARIANTS, TABLETOP_ENV_ID, *BRIDGE_ENV_IDS])}"
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
class _ImageEnv(gym.Wrapper):
    """One CPU-physics env in a worker: observation = the camera image (H, W, 3) uint8, so only
    pixels cross the process boundary; never terminated or truncated, so `AsyncVectorEnv` never
    autoresets (`VecEnv` counts the steps)."""

    def __init__(self, env: gym.Env, camera: str):
        super().__init__(env)
        self.camera = camera
        self.observation_space = env.observation_space["sensor_data"][camera]["rgb"]

    def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict]:
        obs, info = self.env.reset(**kwargs)
        return obs["sensor_data"][self.camera]["rgb"], info

    def step(self, action: np.ndarray) -> tuple:
        obs, reward, _, _, info = self.env.step(action)
        return obs["sensor_data"][self.camera]["rgb"], reward, False, False, info

    def expert_action(self, noise: float, pause_prob: float) -> np.ndarray:
        return self.env.unwrapped.expert_action(noise, pause_prob)[0].numpy()


def _make_worker_env(env_id: str, env_kwargs: dict[str, Any], camera: str) -> gym.Env:
    """Runs in a worker process (module level, so `spawn` can pickle it)."""
    from mani_skill.utils.wrappers.gymnasium import CPUGymWrapper

    torch.set_num_threads(1)  # the workers share the cores
    env = gym.make(env_id, num_envs=1, sim_backend="physx_cpu", **env_kwargs)
    return _ImageEnv(CPUGymWrapper(env, ignore_terminations=True), camera)


class VecEnv:
    """`num_envs` envs stepped together for fixed-length episodes; build it with `make_envs`.

    `reset(seeds)` -> (images (N, H, W, 3) uint8, instructions); `step(actions)` -> (images,
    rewards (N,) float32, dones (N,) bool, infos), all torch on `device`. `dones` is True on the
    episode's last step, where `infos` adds `success_once`, `success_at_end` and `episodic_return`;
    stepping further raises until the next `reset`. `infos["success"]` is there every step.
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
        shaped: bool,
        start_method: str,
    ):
        self.num_envs, self.robot, self.backend = num_envs, robot, backend
        self.device, self.max_episode_steps, self.shaped = torch.device(device), max_episode_steps, shaped
        self.camera = "third_view" if robot == "panda" else "3rd_view_camera"
        if backend == "gpu":
            from mani_skill.vector.wrappers.gymnasium import ManiSkillVectorEnv

            env = gym.make(env_id, num_envs=num_envs, sim_backend="physx_cuda", **env_kwargs)
            self._envs: Any = ManiSkillVectorEnv(env, auto_reset=False, ignore_terminations=True)
        elif torch.cuda.is_available():
            # workers render on this process's GPU (each DDP rank on its own). AsyncVectorEnv also builds one
            # env here to read the spaces, and SAPIEN's renderer makes its GPU the current one: restore ours
            # (NCCL's object collectives and every `device="cuda"` tensor follow the current device)
            current = torch.cuda.current_device()
            gpu = self.device.index if self.device.type == "cuda" and self.device.index is not None else current
            self._envs = self._workers(env_id, dict(env_kwargs, render_backend=f"cuda:{gpu}"), num_envs, start_method)
            torch.cuda.set_device(current)
        else:
            self._envs = self._workers(env_id, dict(env_kwargs, render_backend="cpu"), num_envs, start_method)
        self.instructions: list[str] = self._call("get_language_instruction")
        self._t = -1  # -1: needs a reset

    def _workers(self, env_id: str, env_kwargs: dict[str, Any], num_envs: int, start_method: str) -> Any:
        env_fn = functools.partial(_make_worker_env, env_id, env_kwargs, self.camera)
        return gym.vector.AsyncVectorEnv([env_fn] * num_envs, context=start_method)

    def _call(self, name: str, *args: Any) -> list:
        """Call a method of every env (of the task env on the GPU back-end, of the worker's wrapper
        stack on the CPU one) -> a list with one result per env."""
        if self.backend == "gpu":
            return list(getattr(self._envs.unwrapped, name)(*args))
        # a worker's env is a batch of one: unwrap its list results (instructions), keep arrays
        return [r[0] if isinstance(r, list) else r for r in self._envs.call(name, *args)]

    def _images(self, obs: Any) -> torch.Tensor:
        images = obs["sensor_data"][self.camera]["rgb"] if self.backend == "gpu" else torch.from_numpy(obs)
        return images.to(self.device)

    def reset(self, seeds: Sequence[int]) -> tuple[torch.Tensor, list[str]]:
        """Reset all envs; env i starts from the state `seeds[i]` fixes (same seed, same state)."""
        if len(seeds) != self.num_envs:
            raise ValueError(f"need {self.num_envs} seeds, got {len(seeds)}")
        obs, _ = self._envs.reset(seed=[int(s) for s in seeds])
        self._t = 0
        self._return = torch.zeros(self.num_envs, device=self.device)
        self._success_once = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        return self._images(obs), self.instructions

    def step(
        self, actions: np.ndarray | torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        """Apply (N, 7) OpenVLA-format actions (converted by `openvla_to_controller`)."""
        if not 0 <= self._t < self.max_episode_steps:
            raise RuntimeError("the episode is over (or never started): call reset(seeds) first")
        controls = openvla_to_controller(actions, self.robot)
        if self.backend == "gpu":
            controls = torch.from_numpy(controls).to(self._envs.unwrapped.device)
        obs, env_rewards, _, _, info = self._envs.step(controls)
        self._t += 1
        success = torch.as_tensor(info["success"], device=self.device).bool()
        rewards = (torch.as_tensor(env_rewards, device=self.device) if self.shaped else success).float()
        self._return += rewards
        self._success_once |= success
        done = self._t == self.max_episode_steps
        infos: dict[str, torch.Tensor] = {"success": success}
        if done:
            infos.update(
                success_once=self._success_once.clone(),
                success_at_end=success.clone(),
                episodic_return=self._return.clone(),
            )
        return self._images(obs), rewards, torch.full_like(success, done), infos

    def expert_actions(self, noise: float = 0.0, pause_prob: float = 0.0) -> torch.Tensor:
        """(N, 7) scripted-expert actions in OpenVLA format for the current states (built-in task only);
        the noise replays with the reset seeds."""
        if self.robot != "panda":
            raise ValueError("the scripted expert exists only for the built-in Panda tasks")
        return torch.stack([torch.as_tensor(a) for a in self._call("expert_action", noise, pause_prob)]).to(
            self.device
        )

    def close(self) -> None:
        self._envs.close()


def make_envs(
    env_id_or_variant: str,
    num_envs: int,
    *,
    device: str | torch.device = "cpu",
    backend: Literal["auto", "gpu", "cpu"] = "auto",
    reward: Literal["sparse", "shaped"] = "sparse",
    max_episode_steps: int = 80,
    start_method: str = "spawn",
    **env_kwargs: Any,
) -> VecEnv:
    """Build `num_envs` envs of a variant (see `VARIANTS`), of `OpenVLATabletop-v1`, or of a SimplerEnv
    Bridge id. `backend="auto"` takes GPU simulation if `gpu_physx_available()`, else CPU workers.
    `env_kwargs` override the variant's task kwargs. Raises ValueError for unknown names and
    `MissingAssetsError` for Bridge tasks without their assets."""
    env_id, kwargs, robot = resolve(env_id_or_variant)
    if backend not in ("auto", "gpu", "cpu") or reward not in ("sparse", "shaped"):
        raise ValueError(
            f"backend must be auto|gpu|cpu and reward sparse|shaped, got {backend!r}, {reward!r}"
        )
    if reward == "shaped" and robot != "panda":
        raise ValueError("the shaped reward exists only for the built-in Panda tasks; use reward='sparse'")
    if backend == "auto":
        backend = "gpu" if gpu_physx_available() else "cpu"
    elif backend == "gpu" and not gpu_physx_available():
        raise ValueError("backend='gpu' needs a CUDA GPU and SAPIEN's PhysX GPU library (~/.sapien/physx/); use 'cpu'")
    kwargs.update(env_kwargs)
    if robot == "panda":
        kwargs.update(
            obs_mode="rgb",
            control_mode="pd_ee_delta_pose",
            reward_mode="dense" if reward == "shaped" else "none",
        )
    else:  # the Bridge tasks support only this mode; their default controller is the one we convert for
        kwargs.update(obs_mode="rgb+segmentation")
    return VecEnv(
        env_id, kwargs, num_envs, robot, backend, device, max_episode_steps, reward == "shaped", start_method
    )
