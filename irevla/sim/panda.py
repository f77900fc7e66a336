"""The simulated Franka Panda (MuJoCo, no ROS): a Panda on a table with a cube to pick, a Cartesian impedance
controller and cameras. `irevla.robot.sim_runner` runs it in real time and `irevla.robot.nodes.sim_robot` puts it
behind franka_ros2-style topics; nothing here knows about either.

Model
    The Panda's kinematic chain, meshes and finger geometry are gymnasium-robotics' Franka Kitchen assets
    (``kitchen_franka/franka_assets``: chain.xml, assets.xml). We include them in our own scene (a table whose top is
    the robot's base plane z = 0, a cube, lights, cameras) and replace the Kitchen's joint position servos by torque
    motors: the arm is driven like a real Franka under a torque controller. Joint damping is lowered from the
    Kitchen's servo-friendly 100 to 1 Nms/rad (a real arm's friction is small; the controller damps). Fingers keep
    position servos (the Franka Hand is position-controlled).

Controller (every physics step, 500 Hz by default; the franka_example_controllers' Cartesian impedance law)
    ``tau = J^T (-K e - D J dq) + N (k_n (q_home - q) - d_n dq) + c(q, dq) + g(q)`` with ``e`` the pose error of the
    ``end_effector`` site (position, and rotation as a rotation vector), ``D = 2 sqrt(K)``, a null-space posture
    task and gravity/Coriolis compensation (a real Franka compensates gravity itself); torques are clipped to the
    Panda's limits (87 Nm joints 1-4, 12 Nm joints 5-7).

Frames and state
    World = base frame (``panda0_link0`` at the origin, z up, x forward). The published EE pose is the
    ``end_effector`` site (between the fingertips); gripper width = the two finger joints' sum (0 ... 0.08 m).
    Poses are `irevla.rotations.Pose` (quaternion x, y, z, w).

Task: pick-cube
    The cube (``cube_size`` edge) starts at a seeded random place in ``cube_x_range`` x ``cube_y_range`` with a random
    yaw; success = its centre ``lift_height`` above where it started.

Settings
    Any object with the fields of `PandaSimSettings` (the robot's ``SimRobotConfig`` has them).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import mujoco  # irevla.sim's __init__ has chosen a headless GL backend before this import
import numpy as np

from irevla.rotations import Pose, matrix_to_quaternion, matrix_to_rotvec, quaternion_to_matrix
from irevla.sim.rendering import PANDA_WRIST_CAMERA, CameraMount, CameraRenderer, add_cameras

ARM_JOINTS = 7
FINGER_MAX = 0.04  # per finger (m)
TORQUE_LIMITS = np.array([87.0, 87.0, 87.0, 87.0, 12.0, 12.0, 12.0])
# The arm posture that puts the end effector 45 cm in front of the base, 35 cm up, pointing down (the robot's home
# pose; found by IK on this model; the Kitchen chain's joint 6 is offset from a real Panda's).
HOME_QPOS = np.array([0.023, -0.3126, -0.0209, -2.3489, -0.0071, 0.4662, 0.0076])
REALSENSE_FOVY = 58.0  # a RealSense D435's colour camera is ~69 x 42 deg; 58 is its 4:3 crop


class PandaSimSettings(Protocol):
    """What the simulation reads from its settings (`irevla.robot.config.SimRobotConfig` carries these fields)."""

    physics_timestep: float
    cameras: tuple[str, ...]
    image_size: tuple[int, int]
    stiffness_translation: float
    stiffness_rotation: float
    nullspace_stiffness: float
    cube_size: float
    cube_x_range: tuple[float, float]
    cube_y_range: tuple[float, float]
    lift_height: float
    seed: int


CAMERA_MOUNTS: dict[str, CameraMount] = {
    "front": CameraMount(pos=(1.1, 0.0, 0.55), lookat=(0.45, 0.0, 0.08), fovy=REALSENSE_FOVY),
    "side": CameraMount(pos=(0.55, -0.85, 0.5), lookat=(0.5, 0.0, 0.08), fovy=REALSENSE_FOVY),
    "wrist": PANDA_WRIST_CAMERA,
}


def camera_mount(name: str) -> CameraMount:
    if name not in CAMERA_MOUNTS:
        raise ValueError(f"sim camera {name!r}: choose from {sorted(CAMERA_MOUNTS)}")
    return CAMERA_MOUNTS[name]


def franka_assets_dir() -> Path:
    try:
        import gymnasium_robotics
    except ImportError as exc:
        raise RuntimeError(f"the simulated Panda uses gymnasium-robotics' Franka Kitchen assets: pip install "
                           f"gymnasium-robotics (the 'sim' extra) ({exc})") from None
    return Path(gymnasium_robotics.__file__).parent / "envs" / "assets" / "kitchen_franka" / "franka_assets"


def scene_xml(config: PandaSimSettings) -> str:
    assets = franka_assets_dir()
    half = config.cube_size / 2
    motors = "\n".join(f'    <motor name="joint{i + 1}" joint="robot:panda0_joint{i + 1}" ctrlrange="-{limit} {limit}"/>'
                       for i, limit in enumerate(TORQUE_LIMITS))
    height, width = config.image_size
    return f"""
<mujoco model="irevla_pick_cube">
  <include file="{assets}/assets.xml"/>
  <compiler angle="radian" meshdir="{assets}/meshes" autolimits="true"/>
  <option timestep="{config.physics_timestep}" integrator="implicitfast"/>
  <visual>
    <global offwidth="{max(width, 640)}" offheight="{max(height, 480)}"/>
    <quality shadowsize="1024"/>
  </visual>
  <asset>
    <texture name="floor" type="2d" builtin="checker" rgb1=".25 .28 .3" rgb2=".2 .22 .25" width="256" height="256"/>
    <material name="floor" texture="floor" texrepeat="6 6"/>
    <material name="table" rgba=".62 .55 .45 1"/>
  </asset>
  <worldbody>
    <light pos="0.6 -0.6 2.0" dir="-0.2 0.3 -1" diffuse=".7 .7 .7"/>
    <light pos="0.6 0.8 1.6" dir="0 -0.4 -1" diffuse=".4 .4 .4"/>
    <geom name="floor" type="plane" size="3 3 0.1" pos="0 0 -0.75" material="floor"/>
    <geom name="table" type="box" size="0.55 0.7 0.02" pos="0.45 0 -0.02" material="table"/>
    <include file="{assets}/chain.xml"/>
    <body name="cube" pos="0.5 0 {half}">
      <freejoint name="cube"/>
      <geom name="cube" type="box" size="{half} {half} {half}" rgba=".85 .15 .1 1" mass="0.05" condim="4"
            friction="1.2 0.01 0.001" solref="0.01 1"/>
    </body>
  </worldbody>
  <actuator>
{motors}
    <position name="finger1" joint="robot:panda0_finger_joint1" kp="800" ctrlrange="0 0.04" forcerange="-70 70"/>
    <position name="finger2" joint="robot:panda0_finger_joint2" kp="800" ctrlrange="0 0.04" forcerange="-70 70"/>
  </actuator>
</mujoco>"""


def build_model(config: PandaSimSettings) -> mujoco.MjModel:
    spec = mujoco.MjSpec.from_string(scene_xml(config))
    for joint in spec.joints:
        if joint.name.startswith("robot:panda0_joint"):
            joint.damping = 1.0
            joint.armature = 0.1
    for site in spec.sites:
        site.rgba = [0.0, 0.0, 0.0, 0.0]  # the end_effector marker would show in the wrist camera
    add_cameras(spec, {name: camera_mount(name) for name in config.cameras})
    return spec.compile()


@dataclass(frozen=True)
class SimState:
    pose: Pose
    gripper_width: float
    joint_positions: np.ndarray
    joint_velocities: np.ndarray
    finger_positions: np.ndarray
    cube_position: np.ndarray
    success: bool
    sim_time: float


class PickCubeSim:
    """The MuJoCo model + controller + task. Not thread-safe; `SimRunner` serialises access."""

    def __init__(self, config: PandaSimSettings, render: bool = True) -> None:
        self.config = config
        self.model = build_model(config)
        self.data = mujoco.MjData(self.model)
        model = self.model
        self.site_id = model.site("end_effector").id
        self.cube_joint = model.joint("cube")
        self.cube_qpos = model.jnt_qposadr[self.cube_joint.id]
        self.arm_dofs = np.arange(ARM_JOINTS)
        self.rng = np.random.default_rng(config.seed)
        self._jacp = np.zeros((3, model.nv))
        self._jacr = np.zeros((3, model.nv))
        # reset() below sets the target to the measured home pose
        self.target_position = np.zeros(3)
        self.target_orientation = np.array([0.0, 0.0, 0.0, 1.0])
        self._target_matrix = np.eye(3)
        self.gripper_command = 0.0
        self.cube_start = np.zeros(3)
        stiffness_t, stiffness_r = config.stiffness_translation, config.stiffness_rotation
        self.stiffness = np.diag([stiffness_t] * 3 + [stiffness_r] * 3)
        self.damping = np.diag([2 * np.sqrt(stiffness_t)] * 3 + [2 * np.sqrt(stiffness_r)] * 3)
        self.renderer = None
        if render:
            height, width = config.image_size
            self.renderer = CameraRenderer(model, config.cameras, height, width, fast=True)
        self.reset()

    # ----------------------------------------------------------------------------------------------- control
    def reset(self, seed: int | None = None) -> None:
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[:ARM_JOINTS] = HOME_QPOS
        self.data.qpos[ARM_JOINTS:ARM_JOINTS + 2] = FINGER_MAX
        config = self.config
        x = self.rng.uniform(*config.cube_x_range)
        y = self.rng.uniform(*config.cube_y_range)
        yaw = self.rng.uniform(-np.pi / 4, np.pi / 4)
        self.data.qpos[self.cube_qpos:self.cube_qpos + 7] = [x, y, config.cube_size / 2, np.cos(yaw / 2), 0.0, 0.0,
                                                             np.sin(yaw / 2)]
        mujoco.mj_forward(self.model, self.data)
        self.set_target(self.ee_pose())
        self.gripper_command = 0.0
        self.data.ctrl[ARM_JOINTS:] = FINGER_MAX
        self.cube_start = self.cube_position()

    def set_target(self, pose: Pose) -> None:
        self.target_position = pose.position.copy()
        self.target_orientation = pose.orientation.copy()
        self._target_matrix = quaternion_to_matrix(self.target_orientation)  # once here, not at 500 Hz

    def set_gripper(self, command: float) -> None:
        """0 open ... 1 closed; NaN is ignored (the control node never sends one)."""
        if np.isfinite(command):
            self.gripper_command = float(np.clip(command, 0.0, 1.0))

    def _control_torques(self) -> np.ndarray:
        model, data = self.model, self.data
        mujoco.mj_jacSite(model, data, self._jacp, self._jacr, self.site_id)
        jacobian = np.vstack([self._jacp[:, :ARM_JOINTS], self._jacr[:, :ARM_JOINTS]])
        position = data.site_xpos[self.site_id]
        # The rotation taking the target orientation to the measured one, as a rotation vector (base frame).
        rotation_error = matrix_to_rotvec(data.site_xmat[self.site_id].reshape(3, 3) @ self._target_matrix.T)
        error = np.concatenate([position - self.target_position, rotation_error])
        dq = data.qvel[:ARM_JOINTS]
        tau_task = jacobian.T @ (-self.stiffness @ error - self.damping @ (jacobian @ dq))
        # Null space of the task (damped pseudo-inverse): keep the elbow near the home posture.
        projector = np.eye(ARM_JOINTS) - jacobian.T @ np.linalg.solve(jacobian @ jacobian.T + 1e-4 * np.eye(6),
                                                                      jacobian)
        k_null = self.config.nullspace_stiffness
        tau_null = projector @ (k_null * (HOME_QPOS - data.qpos[:ARM_JOINTS]) - 2 * np.sqrt(k_null) * dq)
        tau = tau_task + tau_null + data.qfrc_bias[:ARM_JOINTS]
        return np.clip(tau, -TORQUE_LIMITS, TORQUE_LIMITS)

    def step(self, n: int = 1) -> None:
        model, data = self.model, self.data
        finger = (1.0 - self.gripper_command) * FINGER_MAX
        data.ctrl[ARM_JOINTS:ARM_JOINTS + 2] = finger
        for _ in range(n):
            mujoco.mj_step1(model, data)
            data.ctrl[:ARM_JOINTS] = self._control_torques()
            mujoco.mj_step2(model, data)
        if not np.all(np.isfinite(data.qpos)):
            raise RuntimeError("sim Panda: the simulation diverged (non-finite state); reset it")

    # -------------------------------------------------------------------------------------------------- state
    def ee_pose(self) -> Pose:
        return Pose(self.data.site_xpos[self.site_id].copy(),
                    matrix_to_quaternion(self.data.site_xmat[self.site_id].reshape(3, 3)))

    def gripper_width(self) -> float:
        return float(self.data.qpos[ARM_JOINTS] + self.data.qpos[ARM_JOINTS + 1])

    def cube_position(self) -> np.ndarray:
        return self.data.qpos[self.cube_qpos:self.cube_qpos + 3].copy()

    def is_success(self) -> bool:
        return bool(self.cube_position()[2] - self.cube_start[2] >= self.config.lift_height)

    def snapshot(self) -> SimState:
        data = self.data
        return SimState(pose=self.ee_pose(), gripper_width=self.gripper_width(),
                        joint_positions=data.qpos[:ARM_JOINTS].copy(), joint_velocities=data.qvel[:ARM_JOINTS].copy(),
                        finger_positions=data.qpos[ARM_JOINTS:ARM_JOINTS + 2].copy(),
                        cube_position=self.cube_position(), success=self.is_success(), sim_time=float(data.time))

    def render(self) -> dict[str, np.ndarray]:
        if self.renderer is None:
            return {}
        return self.renderer.render(self.data)

    def intrinsics(self, camera: str) -> tuple[float, float, float, float]:
        """(fx, fy, cx, cy) of a pinhole with the camera's vertical field of view at the rendered size."""
        return camera_intrinsics(self.config, camera)

    def close(self) -> None:
        if self.renderer is not None:
            self.renderer.close()
            self.renderer = None


def camera_intrinsics(config: PandaSimSettings, camera: str) -> tuple[float, float, float, float]:
    """(fx, fy, cx, cy) of a sim camera: a pinhole with the mount's vertical field of view at the rendered size."""
    height, width = config.image_size
    focal = 0.5 * height / np.tan(np.radians(camera_mount(camera).fovy) / 2)
    return focal, focal, (width - 1) / 2, (height - 1) / 2
