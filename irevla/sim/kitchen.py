"""Franka Kitchen (gymnasium-robotics ``FrankaKitchen-v1``) as single-task irevla contract envs.

`KitchenEnv("microwave-open", cameras=("front",), image_size=128)` poses one of the paper's five Kitchen expert tasks.
Success is measured on the kitchen's joints, FrankaKitchen-style (``|qpos[joints] - goal| < tolerance``):

* ``knob-on`` — "turn on the bottom burner knob": FrankaKitchen's ``bottom burner`` goal, (knob 2, burner) within
  0.3 of (-0.88, -0.01), i.e. the knob turned by ~0.6-1.2 rad.
* ``light-on`` — "turn on the light switch": FrankaKitchen's ``light switch`` goal, within 0.3 of (-0.69, -0.05).
* ``microwave-open`` — "open the microwave door": FrankaKitchen's ``microwave`` goal, within 0.3 of -0.75 rad.
* ``slide-door-open`` — "slide the cabinet door open": opened >= 0.20 m of its 0.44 m travel (FrankaKitchen's
  ``slide cabinet`` goal already counts 7 cm as done).
* ``left-door-open`` — "open the left door of the hinge cabinet": joint ``left_hinge_cabinet`` opened >= 0.70 rad
  (mj_envs' ``kitchen_ldoor_open``; FrankaKitchen's ``hinge cabinet`` goal is the *right* door).

Simulation
    FrankaKitchen-v1's MJCF and timing: 40 physics steps of 2 ms per env step (12.5 Hz control), its position-servo
    Panda; gymnasium-robotics' `FrankaRobot` runs it. ``action_mode="joint_velocity"`` is its native 9-D action
    (normalised joint velocities, 1.0 = 2 rad/s, FrankaKitchen's observation noise included) from its start pose.

Actions (``action_mode="ee_delta"``, the default and what the VLA outputs)
    7-D `ActionSpec` with ``frame="base"``: dx dy dz (m), drx dry drz (rad, axis-angle), gripper (0 open ... 1
    closed), expressed in the robot's base frame (``panda0_link0``: x points into the kitchen, y to the robot's left,
    z up); at most 2 cm and 0.1 rad per step by default. Each step moves a target pose by the delta (translation
    added, rotation pre-multiplied), keeps the target within `max_target_error` of the measured pose (SERL's
    reference clipping: pushing against a door cannot wind the target up), solves damped-least-squares differential
    IK on the ``end_effector`` site's Jacobian (`mj_jacSite`; joint limits by weighted least norm, a posture task in
    the null space) and sends the joint targets to the servos. A real Franka compensates gravity, so the arm is
    gravity-compensated in this mode (``gravcomp`` on its bodies; FrankaKitchen's bare servos sag ~0.5 m in 80 steps
    of zero velocity). The arm starts at FrankaKitchen's EE pose, but in `READY_ARM_QPOS` (joints off their limits).
    Actions are clipped to the spec; NaN/inf raise `irevla.spec.ContractError` before anything reaches the sim.

Observation
    ``proprio`` = `spec.REAL_ROBOT_PROPRIO`: EE position (m) of the ``end_effector`` site in the base frame, EE
    rotation (axis-angle, rad) relative to the ready pose's orientation (`irevla.rotations.ee_rotation_feature`; the reference is
    in ``task_spec.extra["ee_rotation_reference"]``), gripper width (m, 0 ... 0.08); exact sim state. The ready
    orientation is ~3.1 rad from the base frame's, right at the axis-angle flip at pi, hence the reference (the
    contract's convention for the real robot too). Images are upright. FrankaKitchen's own cameras (``left_cap``, ``right_cap``) stare at the
    counter from 1 m away, so cameras are added to the MJCF at load time (`mujoco.MjSpec`): ``front`` (high behind
    the robot: all five task objects and the arm), ``side`` (behind the robot's right shoulder), ``wrist`` (on the
    hand, between the fingers). `CameraRenderer` draws them; ``fast=True`` (default) drops MSAA/shadows/reflections.

Layout
    The left hinge door is out of the Panda's reach in FrankaKitchen's layout (a global IK search misses its handle by
    7 cm), so ``left-door-open`` moves the kitchen 0.25 m to the robot's right (`KitchenTask.kitchen_offset`, as
    mj_envs moves its desk); the other tasks keep FrankaKitchen's layout. ``kitchen_offset=`` overrides it.

Episodes
    Reward 1.0 on success (sparse), ``info["success"]``, termination on success, truncation after
    `max_episode_steps` (280 = FrankaKitchen-v1's default, 22.4 s). Doors, knob and switch always start closed/off;
    seeded uniform noise of `reset_noise` rad (default 0.02) on the 7 arm joints makes seeds differ (0 = fixed start).

Variations (`irevla.sim.variations` strings, seeded, reproducible)
    ``color:NAME`` / ``color:random`` / ``color:r,g,b`` recolours the task's target: the slide door's panel (the
    paper's "slide door red"), the microwave door, the left cabinet door, the knob or the switch lever; handles keep
    their metal look. ``obj:DX,DY,DZ`` / ``obj:random(N)`` moves the kitchen (world frame, m), ``hand:...`` shifts the
    arm's start. ``scale`` and ``goal`` raise `VariationError`.

Scripted experts: `irevla.sim.kitchen_expert.make_expert(env)` (what `irevla.sim.registry.make_expert` picks for a
Kitchen env; this module does not import it); success rates are in that module's docstring.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import mujoco  # irevla.sim's __init__ has chosen a headless GL backend before this import
import numpy as np
from gymnasium import spaces

from irevla.rotations import ee_rotation_feature, matrix_to_rotvec, rotvec_to_matrix
from irevla.sim.base import ContractEnv, UnknownTaskError, check_instruction, observation_space
from irevla.sim.rendering import PANDA_WRIST_CAMERA, CameraMount, CameraRenderer, add_cameras, check_cameras
from irevla.sim.variations import Variation, VariationError, parse_variation, recolor_geoms
from irevla.spec import REAL_ROBOT_PROPRIO, ActionSpec, ContractError, ObservationSpec, TaskSpec

DEFAULT_MAX_STEPS = 280
ACTION_MODES = ("ee_delta", "joint_velocity")
ARM_JOINTS = 7
GRIPPER_MAX_WIDTH = 0.08  # two fingers, 0 .. 0.04 m each
FRAME_SKIP = 40  # FrankaKitchen-v1: 40 x 2 ms per step
KETTLE_QPOS = slice(23, 26)  # the kettle's free joint position in qpos

# FrankaKitchen-v1's start state (gymnasium_robotics.envs.franka_kitchen.kitchen_env.KitchenEnv.__init__ sets it as
# a literal; copied so that we can build the robot without its wrapper).
KITCHEN_INIT_QPOS = np.array([
    1.48388023e-01, -1.76848573e00, 1.84390296e00, -2.47685760e00, 2.60252026e-01, 7.12533105e-01, 1.59515394e00,
    4.79267505e-02, 3.71350919e-02, -2.66279850e-04, -5.18043486e-05, 3.12877220e-05, -4.51199853e-05,
    -3.90842156e-06, -4.22629655e-05, 6.28065475e-05, 4.04984708e-05, 4.62730939e-04, -2.26906415e-04,
    -4.65501369e-04, -6.44129196e-03, -1.77048263e-03, 1.08009684e-03, -2.69397440e-01, 3.50383255e-01,
    1.61944683e00, 1.00618764e00, 4.06395120e-03, -6.62095997e-03, -2.68278933e-04])


@dataclass(frozen=True)
class KitchenTask:
    """One task: success when ``|qpos[joints] - goal| < tolerance`` (FrankaKitchen's criterion, per task)."""

    name: str
    instruction: str
    joints: tuple[str, ...]
    goal: tuple[float, ...]
    tolerance: float
    target_bodies: tuple[str, ...]  # what a colour variation recolours (visual geoms of these bodies)
    handle_site: str  # where the expert grasps or pushes
    kitchen_offset: tuple[float, float, float] = (0.0, 0.0, 0.0)  # default placement of the kitchen (see docstring)
    keep_materials: tuple[str, ...] = ()  # geoms with these materials (handles, windows) keep their look


TASKS: dict[str, KitchenTask] = {t.name: t for t in (
    KitchenTask("knob-on", "turn on the bottom burner knob", ("knob_Joint_2", "bottom_left_burner"), (-0.88, -0.01),
                0.3, ("knob 2",), "knob2_site"),
    KitchenTask("light-on", "turn on the light switch", ("light_switch", "light_joint"), (-0.69, -0.05), 0.3,
                ("lightswitchroot",), "light_site"),
    KitchenTask("microwave-open", "open the microwave door", ("microwave",), (-0.75,), 0.3, ("microdoorroot",),
                "microhandle_site", keep_materials=("micro_metal", "micro_window")),
    KitchenTask("slide-door-open", "slide the cabinet door open", ("slide_cabinet",), (0.44,), 0.24, ("slidelink",),
                "slide_site", keep_materials=("M_slide_metal",)),
    KitchenTask("left-door-open", "open the left door of the hinge cabinet", ("left_hinge_cabinet",), (-1.57,), 0.87,
                ("hingeleftdoor",), "hinge_site1", kitchen_offset=(0.25, 0.0, 0.0), keep_materials=("M_hinge_metal",)),
)}


INSTRUCTIONS: dict[str, str] = {name: task.instruction for name, task in TASKS.items()}


def task_names() -> list[str]:
    return list(TASKS)


# ------------------------------------------------------------------------------------------------------ cameras
ADDED_CAMERAS: dict[str, CameraMount] = {
    # High behind the robot, centred on the kitchen: all five task objects and the arm in one view.
    "front": CameraMount(pos=(-0.1, -0.95, 3.1), lookat=(-0.15, 0.6, 2.15), fovy=52.0),
    # Behind the robot's right shoulder, lower: the microwave, knobs and switch from the side the arm works on.
    "side": CameraMount(pos=(0.6, -1.0, 2.95), lookat=(-0.15, 0.55, 2.1), fovy=50.0),
    "wrist": PANDA_WRIST_CAMERA,
}
DEFAULT_CAMERAS = ("front",)


def _import_gymnasium_robotics():
    """Import gymnasium_robotics without its import-time notice about Adroit reward versions (irrelevant here)."""
    import contextlib
    import io

    with contextlib.redirect_stderr(io.StringIO()):
        import gymnasium_robotics
    return gymnasium_robotics


def _kitchen_xml() -> Path:
    gymnasium_robotics = _import_gymnasium_robotics()
    return (Path(gymnasium_robotics.__file__).parent / "envs" / "assets" / "kitchen_franka" / "kitchen_assets"
            / "kitchen_env_model.xml")


def _make_robot(render_width: int, render_height: int, robot_noise_ratio: float, gravity_compensation: bool,
                kitchen_offset: np.ndarray):
    """gymnasium-robotics' `FrankaRobot` (the Panda half of FrankaKitchen-v1) on the kitchen MJCF plus our cameras.

    `gravity_compensation` sets ``gravcomp=1`` on the Panda's bodies; it has to be done before compiling (MuJoCo
    skips gravity compensation entirely when the compiled model has no gravcomp body). `kitchen_offset` moves the
    kitchen furniture (the ``desk`` body; the kettle is placed at reset) relative to the robot, world frame.
    """
    _import_gymnasium_robotics()
    from gymnasium_robotics.envs.franka_kitchen.franka_env import FrankaRobot

    class _KitchenRobot(FrankaRobot):
        def _initialize_simulation(self):
            spec = mujoco.MjSpec.from_file(self.fullpath)
            desk = spec.body("desk")
            desk.pos = np.asarray(desk.pos) + kitchen_offset
            add_cameras(spec, ADDED_CAMERAS)
            if gravity_compensation:
                for body in spec.bodies:
                    if body.name.startswith("panda0_"):
                        body.gravcomp = 1.0
            model = spec.compile()
            model.vis.global_.offwidth = max(model.vis.global_.offwidth, self.width)
            model.vis.global_.offheight = max(model.vis.global_.offheight, self.height)
            return model, mujoco.MjData(model)

    robot = _KitchenRobot(model_path=str(_kitchen_xml()), frame_skip=FRAME_SKIP, robot_noise_ratio=robot_noise_ratio,
                          width=render_width, height=render_height)
    robot.init_qpos = KITCHEN_INIT_QPOS.copy()  # as FrankaKitchen-v1 does
    return robot


# ---------------------------------------------------------------------------------------------- differential IK
# FrankaKitchen's start pose has joint 2 at (beyond) its limit, a poor place to start differential IK from: the arm
# stayed pinned there and flipped its wrist on the way to the microwave. READY_ARM_QPOS puts the EE at exactly the
# same pose with the arm's redundancy resolved away from the limits (found by a global IK search); it is the start
# pose in ee_delta mode and the posture the IK's null-space task pulls towards.
READY_ARM_QPOS = np.array([-0.08, -1.0, 1.87, -2.44, -0.71, 0.54, 2.31])


class DifferentialIK:
    """Damped least squares on the site Jacobian, with a posture task in the null space.

    Runs on its own scratch `MjData` (kinematics only), so solving never disturbs the simulation.
    """

    def __init__(self, model: mujoco.MjModel, site: str, rest_qpos: np.ndarray = READY_ARM_QPOS,
                 damping: float = 0.05, rotation_weight: float = 0.5, posture_gain: float = 0.3,
                 max_joint_step: float = 0.2) -> None:
        self.model = model
        self.site_id = model.site(site).id
        self.scratch = mujoco.MjData(model)
        self.low = model.jnt_range[:ARM_JOINTS, 0].copy()
        self.high = model.jnt_range[:ARM_JOINTS, 1].copy()
        self.rest = np.clip(np.asarray(rest_qpos[:ARM_JOINTS], float), self.low, self.high)
        self.damping, self.rotation_weight = damping, rotation_weight
        self.posture_gain, self.max_joint_step = posture_gain, max_joint_step
        self.posture_clip = 0.05
        self._jacp = np.zeros((3, model.nv))
        self._jacr = np.zeros((3, model.nv))

    def site_pose(self, qpos_arm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.scratch.qpos[:ARM_JOINTS] = qpos_arm
        mujoco.mj_kinematics(self.model, self.scratch)
        return self.scratch.site_xpos[self.site_id].copy(), self.scratch.site_xmat[self.site_id].reshape(3, 3).copy()

    def solve(self, qpos_arm: np.ndarray, target_pos: np.ndarray, target_mat: np.ndarray,
              iterations: int = 2) -> np.ndarray:
        """Joint positions (7) that move the site towards the world pose (target_pos, target_mat).

        Joint limits are handled by weighted least norm (Chan & Dubey 1995): a joint moving towards a limit gets a
        weight that grows without bound as it closes in, so the other joints take over smoothly instead of the
        solution stalling against (or being clipped at) the limit.
        """
        q = np.asarray(qpos_arm, float).copy()
        weights = np.array([1.0, 1.0, 1.0] + [self.rotation_weight] * 3)
        span = self.high - self.low
        for _ in range(iterations):
            pos, mat = self.site_pose(q)
            mujoco.mj_comPos(self.model, self.scratch)
            mujoco.mj_jacSite(self.model, self.scratch, self._jacp, self._jacr, self.site_id)
            jac = np.vstack([self._jacp[:, :ARM_JOINTS], self._jacr[:, :ARM_JOINTS]]) * weights[:, None]
            error = np.concatenate([target_pos - pos, matrix_to_rotvec(target_mat @ mat.T)]) * weights
            posture = np.clip(self.posture_gain * (self.rest - q), -self.posture_clip, self.posture_clip)
            dq = self._weighted_step(jac, error, posture, np.ones(ARM_JOINTS))
            # Joint-limit cost H = sum span^2 / (4 (high - q)(q - low)); penalise the joints that move up its slope.
            qc = np.clip(q, self.low + 1e-4, self.high - 1e-4)
            grad = span ** 2 * (2 * qc - self.high - self.low) / (4 * (self.high - qc) ** 2 * (qc - self.low) ** 2)
            inv_w = 1.0 / np.where(grad * dq > 0, 1.0 + np.abs(grad), 1.0)
            dq = self._weighted_step(jac, error, posture, inv_w)
            scale = np.max(np.abs(dq)) / self.max_joint_step
            if scale > 1.0:
                dq /= scale
            q = np.clip(q + dq, self.low, self.high)
        return q

    def _weighted_step(self, jac: np.ndarray, error: np.ndarray, posture: np.ndarray, inv_w: np.ndarray):
        jw = jac * inv_w  # J W^-1
        gain = jw.T @ np.linalg.inv(jw @ jac.T + self.damping ** 2 * np.eye(6))  # W^-1 J^T (J W^-1 J^T + l^2)^-1
        # Damped projector: an exact (pinv) one made the microwave approach stall against joint limits (0/20).
        null = np.eye(ARM_JOINTS) - gain @ jac
        return gain @ error + null @ (inv_w * posture)


# ---------------------------------------------------------------------------------------------------------- env
class KitchenEnv(ContractEnv):
    """One Franka Kitchen task (see `TASKS`) speaking the irevla contract. See the module docstring."""

    metadata: ClassVar[dict] = {"render_modes": ["rgb_array"], "render_fps": 12}

    def __init__(self, task: str = "microwave-open", cameras: Sequence[str] = DEFAULT_CAMERAS,
                 image_size: int | tuple[int, int] = 128, fast: bool = True, max_episode_steps: int | None = None,
                 variation: str = "", variation_seed: int = 0, instruction: str | None = None,
                 render_images: bool = True, action_mode: str = "ee_delta", max_translation: float = 0.02,
                 max_rotation: float = 0.1, max_target_error: float = 0.05, reset_noise: float = 0.02,
                 robot_noise_ratio: float = 0.01, kitchen_offset: Sequence[float] | None = None,
                 render_mode: str | None = None) -> None:
        if task not in TASKS:
            raise UnknownTaskError(f"unknown Kitchen task {task!r}; choose one of {task_names()}")
        if action_mode not in ACTION_MODES:
            raise ValueError(f"action_mode {action_mode!r}: choose one of {ACTION_MODES}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode {render_mode!r}: only 'rgb_array' (or None) is supported")
        self.task = TASKS[task]
        self.action_mode = action_mode
        self.render_mode = render_mode
        self.max_episode_steps = DEFAULT_MAX_STEPS if max_episode_steps is None else int(max_episode_steps)
        if self.max_episode_steps <= 0:
            raise ValueError(f"max_episode_steps: expected > 0, got {max_episode_steps}")
        self.max_target_error = float(max_target_error)
        self.max_target_rotation = 0.5  # rad, the rotational counterpart of max_target_error
        self.reset_noise = float(reset_noise)
        height, width = (image_size, image_size) if np.isscalar(image_size) else tuple(image_size)
        self.image_height, self.image_width = int(height), int(width)

        self.variation = parse_variation(variation, variation_seed)
        if self.variation.scale is not None or set(self.variation.shifts) - {"hand", "obj"}:
            raise VariationError(f"{self.variation.text!r}: Kitchen supports color, obj (moves the kitchen) and hand "
                                 f"variations")
        offset = self.task.kitchen_offset if kitchen_offset is None else kitchen_offset
        self.kitchen_offset = np.asarray(offset, float).reshape(3) + self.variation.shifts.get("obj", 0.0)
        # A real Franka compensates gravity; FrankaKitchen's bare position servos sag (see module docstring).
        self._robot = _make_robot(self.image_width, self.image_height, robot_noise_ratio,
                                  gravity_compensation=action_mode == "ee_delta", kitchen_offset=self.kitchen_offset)
        self.model: mujoco.MjModel = self._robot.model
        self.data: mujoco.MjData = self._robot.data
        model = self.model
        self.dt = float(self._robot.dt)
        self._qpos_index = np.array([model.jnt_qposadr[model.joint(j).id] for j in self.task.joints])
        self._goal = np.asarray(self.task.goal, float)
        self._site_id = model.site("end_effector").id
        self._base_id = model.body("panda0_link0").id
        self._ik = DifferentialIK(model, "end_effector")

        self._target_geoms = self._task_target_geoms()
        self._apply_variation(self.variation)

        self.cameras = check_cameras(model, cameras, f"Kitchen {task}")
        self.render_images = render_images
        self._renderer = CameraRenderer(model, self.cameras, self.image_height, self.image_width,
                                        fast=fast) if render_images else None

        mujoco.mj_forward(model, self.data)
        self._base_pos = self.data.xpos[self._base_id].copy()
        self._base_mat = self.data.xmat[self._base_id].reshape(3, 3).copy()
        # Proprio rotation is measured from the ready pose's orientation (the contract's convention): the gripper
        # points into the kitchen, ~pi from the base frame, where plain axis-angle would flip sign.
        self._rotation_reference = self.world_to_base(*self._ik.site_pose(READY_ARM_QPOS))[1]

        if action_mode == "ee_delta":
            action_spec = replace(ActionSpec.ee_delta(max_translation, max_rotation), frame="base")
        else:
            names = tuple(f"v_joint{i + 1}" for i in range(ARM_JOINTS)) + ("v_finger_right", "v_finger_left")
            action_spec = ActionSpec(names=names, low=(-1.0,) * 9, high=(1.0,) * 9, frame="base",
                                     units=("2 rad/s",) * ARM_JOINTS + ("2 m/s",) * 2)
        obs_spec = ObservationSpec(cameras={c: (self.image_height, self.image_width) for c in self.cameras},
                                   proprio_names=REAL_ROBOT_PROPRIO)
        self.task_spec = TaskSpec(
            name=task, family="kitchen", instruction=check_instruction(instruction or self.task.instruction),
            action_spec=action_spec, observation_spec=obs_spec, max_episode_steps=self.max_episode_steps,
            variation=self.variation.text, variation_seed=variation_seed, control_hz=1.0 / self.dt,
            extra={"action_mode": action_mode, "success_joints": list(self.task.joints),
                   "success_goal": list(self.task.goal), "success_tolerance": self.task.tolerance,
                   "ee_rotation_reference": self._rotation_reference.reshape(-1).round(9).tolist()})
        self.observation_space = observation_space(obs_spec)
        self.action_space = spaces.Box(action_spec.low_array, action_spec.high_array, dtype=np.float32)
        self._steps = 0
        self._target_pos = np.zeros(3)
        self._target_mat = np.eye(3)

    # ------------------------------------------------------------------------------------------------ variations
    def _task_target_geoms(self) -> list[int]:
        model = self.model
        bodies = {model.body(b).id for b in self.task.target_bodies}
        geoms = []
        for g in range(model.ngeom):
            if model.geom_bodyid[g] not in bodies:
                continue
            material = mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_MATERIAL, model.geom_matid[g]) or ""
            if material not in self.task.keep_materials:
                geoms.append(g)
        return geoms

    def _apply_variation(self, variation: Variation) -> None:
        if variation.color is not None and recolor_geoms(self.model, self._target_geoms, variation.color) == 0:
            raise VariationError(f"{variation.text!r}: task {self.task.name} has no visible target geoms")

    @property
    def target_geoms(self) -> list[int]:
        """Geoms a colour variation recolours (the task's target object, handles excluded)."""
        return list(self._target_geoms)

    # ------------------------------------------------------------------------------------------------ state
    def ee_pose_world(self) -> tuple[np.ndarray, np.ndarray]:
        """Measured ``end_effector`` site pose in the world frame: (position, 3x3 rotation)."""
        return self.data.site_xpos[self._site_id].copy(), self.data.site_xmat[self._site_id].reshape(3, 3).copy()

    def world_to_base(self, pos: np.ndarray, mat: np.ndarray | None = None):
        pos_b = self._base_mat.T @ (np.asarray(pos, float) - self._base_pos)
        return pos_b if mat is None else (pos_b, self._base_mat.T @ mat)

    @property
    def base_rotation(self) -> np.ndarray:
        """World-from-base rotation (constant): base-frame vectors v map to world as ``base_rotation @ v``."""
        return self._base_mat.copy()

    @property
    def elapsed_steps(self) -> int:
        """Steps taken since the last reset."""
        return self._steps

    def gripper_width(self) -> float:
        return float(self.data.qpos[7] + self.data.qpos[8])

    def task_value(self) -> np.ndarray:
        """The task's joint values (what success is measured on)."""
        return self.data.qpos[self._qpos_index].copy()

    def is_success(self) -> bool:
        return bool(np.linalg.norm(self.task_value() - self._goal) < self.task.tolerance)

    def _proprio(self) -> np.ndarray:
        pos, mat = self.world_to_base(*self.ee_pose_world())
        return np.concatenate([pos, ee_rotation_feature(mat, self._rotation_reference),
                               [self.gripper_width()]]).astype(np.float32)

    def _observe(self) -> dict[str, Any]:
        images = self._renderer.render(self.data) if self._renderer is not None else self._blank_images()
        return self._make_obs(images, self._proprio(), float(self.data.time))

    def _info(self, success: bool) -> dict[str, Any]:
        return {"success": success, "task_value": self.task_value()}

    # ------------------------------------------------------------------------------------------------- gym API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        robot = self._robot
        robot.reset(seed=int(self.np_random.integers(2**31 - 1)))  # FrankaKitchen's start; seeds its obs noise
        qpos, qvel = KITCHEN_INIT_QPOS.copy(), np.zeros(self.model.nv)
        if self.action_mode == "ee_delta":
            qpos[:ARM_JOINTS] = READY_ARM_QPOS  # same EE pose, joints off their limits (see READY_ARM_QPOS)
            qpos[ARM_JOINTS:ARM_JOINTS + 2] = GRIPPER_MAX_WIDTH / 2  # open (FrankaKitchen starts a finger past 4 cm)
        qpos[KETTLE_QPOS] += self.kitchen_offset  # the kettle stands on the stove, which moved with the kitchen
        if self.reset_noise > 0:
            qpos[:ARM_JOINTS] += self.np_random.uniform(-self.reset_noise, self.reset_noise, ARM_JOINTS)
        if "hand" in self.variation.shifts:
            pos, mat = self._ik.site_pose(qpos[:ARM_JOINTS])
            arm = qpos[:ARM_JOINTS]
            for _ in range(20):
                arm = self._ik.solve(arm, pos + self.variation.shifts["hand"], mat, iterations=5)
            qpos[:ARM_JOINTS] = arm
        qpos[:ARM_JOINTS] = np.clip(qpos[:ARM_JOINTS], self._ik.low, self._ik.high)
        robot.set_state(qpos, qvel)
        self.data.ctrl[:ARM_JOINTS] = qpos[:ARM_JOINTS]
        self.data.ctrl[ARM_JOINTS:] = qpos[ARM_JOINTS:ARM_JOINTS + 2]
        robot._get_obs()  # refresh the (noisy) joint reading FrankaRobot's velocity control integrates from
        self._target_pos, self._target_mat = self.ee_pose_world()
        self._steps = 0
        return self._observe(), self._info(False)

    def step(self, action):
        # Clip into the box; NaN/inf or a wrong size raise ContractError instead of reaching the simulator.
        spec = self.task_spec.action_spec
        action = spec.clip(np.asarray(action).reshape(-1))
        if self.action_mode == "joint_velocity":
            self._robot.step(action.astype(np.float64))
        else:
            self._step_ee_delta(action.astype(np.float64))
        if not (np.all(np.isfinite(self.data.qpos)) and np.all(np.isfinite(self.data.qvel))):
            raise ContractError("KitchenEnv: the simulation diverged (non-finite state)")
        self._steps += 1
        success = self.is_success()
        truncated = self._steps >= self.max_episode_steps and not success
        return self._observe(), float(success), success, truncated, self._info(success)

    def _step_ee_delta(self, action: np.ndarray) -> None:
        base = self._base_mat
        measured_pos, measured_mat = self.ee_pose_world()
        target_pos = self._target_pos + base @ action[:3]
        target_mat = base @ rotvec_to_matrix(action[3:6]) @ base.T @ self._target_mat
        # Reference clipping: the target may lead the measured pose by at most max_target_error / rotation.
        offset = target_pos - measured_pos
        distance = np.linalg.norm(offset)
        if distance > self.max_target_error:
            target_pos = measured_pos + offset * (self.max_target_error / distance)
        error = matrix_to_rotvec(target_mat @ measured_mat.T)
        angle = np.linalg.norm(error)
        if angle > self.max_target_rotation:
            target_mat = rotvec_to_matrix(error * (self.max_target_rotation / angle)) @ measured_mat
        self._target_pos, self._target_mat = target_pos, target_mat
        q_arm = self._ik.solve(self.data.qpos[:ARM_JOINTS], target_pos, target_mat)
        finger = (1.0 - float(action[6])) * GRIPPER_MAX_WIDTH / 2
        ctrl = np.concatenate([q_arm, [finger, finger]])
        self._robot.do_simulation(np.clip(ctrl, self.model.actuator_ctrlrange[:, 0],
                                          self.model.actuator_ctrlrange[:, 1]), FRAME_SKIP)

    def render(self):
        if self._renderer is None:
            return None
        return self._renderer.render(self.data)[self.cameras[0]]

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        self._robot.close()


__all__ = ["ADDED_CAMERAS", "DEFAULT_CAMERAS", "TASKS", "KitchenEnv", "KitchenTask", "task_names"]
