"""The simulated robot (no ROS): a MuJoCo Franka Panda on a table with a cube to pick, a Cartesian impedance
controller, cameras, and a real-time runner.

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

Task: pick-cube
    The cube (``cube_size`` edge) starts at a seeded random place in ``cube_x_range`` x ``cube_y_range`` with a random
    yaw; success = its centre ``lift_height`` above where it started.

Real time
    `SimRunner` owns the simulation in one thread (the GL context lives there): it steps physics to keep sim time
    at ``real_time_factor`` x wall time, calls `on_state` at ``state_hz`` and `on_images` at ``camera_hz``, and applies
    targets / resets handed to it from other threads.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering; must precede the first mujoco import
if os.environ["MUJOCO_GL"] in ("egl", "osmesa"):
    os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from irevla.robot.config import HOME_ORIENTATION, HOME_POSITION, SimRobotConfig  # noqa: E402
from irevla.robot.geometry import (  # noqa: E402
    Pose,
    matrix_to_quaternion,
    quaternion_conjugate,
    quaternion_multiply,
    quaternion_to_rotvec,
)

ARM_JOINTS = 7
FINGER_MAX = 0.04  # per finger (m)
TORQUE_LIMITS = np.array([87.0, 87.0, 87.0, 87.0, 12.0, 12.0, 12.0])
# The arm posture that puts the end effector at HOME_POSITION pointing down (found by IK on this model; the Kitchen
# chain's joint 6 is offset from a real Panda's).
HOME_QPOS = np.array([0.023, -0.3126, -0.0209, -2.3489, -0.0071, 0.4662, 0.0076])


@dataclass(frozen=True)
class CameraMount:
    pos: tuple[float, float, float]
    lookat: tuple[float, float, float]
    fovy: float = 58.0  # a RealSense D435's colour camera is ~69 x 42 deg; 58 is its 4:3 crop
    body: str | None = None
    up: tuple[float, float, float] = (0.0, 0.0, 1.0)


CAMERA_MOUNTS: dict[str, CameraMount] = {
    "front": CameraMount(pos=(1.1, 0.0, 0.55), lookat=(0.45, 0.0, 0.08)),
    "side": CameraMount(pos=(0.55, -0.85, 0.5), lookat=(0.5, 0.0, 0.08)),
    # On the hand between the fingers' base, looking along the fingers (as a wrist-mounted D405 would).
    "wrist": CameraMount(pos=(0.0495, -0.0495, 0.1), lookat=(0.0, 0.0, 0.32), fovy=70.0, body="panda0_link7",
                         up=(0.7071, -0.7071, 0.0)),
}


def franka_assets_dir() -> Path:
    try:
        import gymnasium_robotics
    except ImportError as exc:
        raise RuntimeError(f"the simulated Panda uses gymnasium-robotics' Franka Kitchen assets: pip install "
                           f"gymnasium-robotics (the 'sim' extra) ({exc})") from None
    return Path(gymnasium_robotics.__file__).parent / "envs" / "assets" / "kitchen_franka" / "franka_assets"


def _look_at_quat(pos, lookat, up) -> list[float]:
    """MuJoCo camera quaternion (w x y z): the camera looks along its -z with y image-up."""
    forward = np.asarray(lookat, float) - np.asarray(pos, float)
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, np.asarray(up, float))
    right /= np.linalg.norm(right)
    mat = np.stack([right, np.cross(right, forward), -forward], axis=1)
    x, y, z, w = matrix_to_quaternion(mat)
    return [w, x, y, z]


def scene_xml(config: SimRobotConfig) -> str:
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


def build_model(config: SimRobotConfig) -> mujoco.MjModel:
    spec = mujoco.MjSpec.from_string(scene_xml(config))
    for joint in spec.joints:
        if joint.name.startswith("robot:panda0_joint"):
            joint.damping = 1.0
            joint.armature = 0.1
    for site in spec.sites:
        site.rgba = [0.0, 0.0, 0.0, 0.0]  # the end_effector marker would show in the wrist camera
    for name in config.cameras:
        if name not in CAMERA_MOUNTS:
            raise ValueError(f"sim camera {name!r}: choose from {sorted(CAMERA_MOUNTS)}")
        mount = CAMERA_MOUNTS[name]
        parent = spec.worldbody if mount.body is None else spec.body(mount.body)
        parent.add_camera(name=name, pos=list(mount.pos), quat=_look_at_quat(mount.pos, mount.lookat, mount.up),
                          fovy=mount.fovy)
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

    def __init__(self, config: SimRobotConfig, render: bool = True) -> None:
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
        self.target_position = np.array(HOME_POSITION, float)
        self.target_orientation = np.array(HOME_ORIENTATION, float)
        self.gripper_command = 0.0
        self.cube_start = np.zeros(3)
        stiffness_t, stiffness_r = config.stiffness_translation, config.stiffness_rotation
        self.stiffness = np.diag([stiffness_t] * 3 + [stiffness_r] * 3)
        self.damping = np.diag([2 * np.sqrt(stiffness_t)] * 3 + [2 * np.sqrt(stiffness_r)] * 3)
        self.renderer = None
        if render:
            from irevla.sim.rendering import CameraRenderer

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
        pose = self.ee_pose()
        self.target_position, self.target_orientation = pose.position.copy(), pose.orientation.copy()
        self.gripper_command = 0.0
        self.data.ctrl[ARM_JOINTS:] = FINGER_MAX
        self.cube_start = self.cube_position()

    def set_target(self, pose: Pose) -> None:
        self.target_position = pose.position.copy()
        self.target_orientation = pose.orientation.copy()

    def set_gripper(self, command: float) -> None:
        """0 open ... 1 closed; NaN is ignored (the control node never sends one)."""
        if np.isfinite(command):
            self.gripper_command = float(np.clip(command, 0.0, 1.0))

    def _control_torques(self) -> np.ndarray:
        model, data = self.model, self.data
        mujoco.mj_jacSite(model, data, self._jacp, self._jacr, self.site_id)
        jacobian = np.vstack([self._jacp[:, :ARM_JOINTS], self._jacr[:, :ARM_JOINTS]])
        position = data.site_xpos[self.site_id]
        orientation = matrix_to_quaternion(data.site_xmat[self.site_id].reshape(3, 3))
        rotation_error = quaternion_to_rotvec(quaternion_multiply(orientation,
                                                                  quaternion_conjugate(self.target_orientation)))
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
            raise RuntimeError("sim_robot: the simulation diverged (non-finite state); reset it")

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
        height, width = self.config.image_size
        fovy = float(self.model.cam_fovy[self.model.camera(camera).id])
        focal = 0.5 * height / np.tan(np.radians(fovy) / 2)
        return focal, focal, (width - 1) / 2, (height - 1) / 2

    def close(self) -> None:
        if self.renderer is not None:
            self.renderer.close()
            self.renderer = None


# ------------------------------------------------------------------------------------------------- real time
@dataclass
class RunnerStats:
    physics_steps: int = 0
    frames_rendered: int = 0
    wall_time: float = 0.0
    sim_time: float = 0.0
    render_seconds: float = 0.0
    physics_seconds: float = 0.0
    resets: int = 0

    @property
    def real_time_factor(self) -> float:
        return self.sim_time / self.wall_time if self.wall_time > 0 else 0.0


class SimRunner:
    """Runs `PickCubeSim` in real time on its own thread. Callbacks run on that thread and must not block long.

    ``on_state(state, stamp)`` at ``state_hz``; ``on_images(images, stamp)`` at ``camera_hz``; stamps are wall-clock
    seconds (what ROS stamps carry).
    """

    MAX_LAG = 0.1  # s of sim time to catch up at most; beyond it the sim slows down instead of spiralling

    def __init__(self, config: SimRobotConfig, on_state: Callable[[SimState, float], None],
                 on_images: Callable[[dict[str, np.ndarray], float], None] | None = None,
                 render: bool = True, wall_clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.on_state, self.on_images, self.render = on_state, on_images, render
        self.wall_clock = wall_clock
        self.stats = RunnerStats()
        self._lock = threading.Lock()
        self._pending_target: Pose | None = None
        self._pending_gripper: float | None = None
        self._pending_reset: list[tuple[int | None, threading.Event]] = []
        self._stop = threading.Event()
        self._ready = threading.Event()
        self.error: BaseException | None = None
        self.sim: PickCubeSim | None = None
        self._thread = threading.Thread(target=self._run, name="sim_robot", daemon=True)

    def start(self, timeout: float = 30.0) -> SimRunner:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"sim_robot: the simulation did not start within {timeout:.0f} s")
        if self.error is not None:
            raise RuntimeError(f"sim_robot: the simulation failed to start: {self.error}") from self.error
        return self

    # ----------------------------------------------------------------------------------------- thread-safe API
    def set_target(self, pose: Pose) -> None:
        with self._lock:
            self._pending_target = pose

    def set_gripper(self, command: float) -> None:
        with self._lock:
            self._pending_gripper = command

    def request_reset(self, seed: int | None = None, timeout: float = 10.0) -> bool:
        done = threading.Event()
        with self._lock:
            self._pending_reset.append((seed, done))
        return done.wait(timeout)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5.0)

    # ------------------------------------------------------------------------------------------------ the loop
    def _apply_pending(self, sim: PickCubeSim) -> None:
        with self._lock:
            target, gripper, resets = self._pending_target, self._pending_gripper, self._pending_reset
            self._pending_target, self._pending_gripper, self._pending_reset = None, None, []
        for seed, done in resets:
            sim.reset(seed)
            self.stats.resets += 1
            target = None  # a target sent before the reset is stale
            done.set()
        if target is not None:
            sim.set_target(target)
        if gripper is not None:
            sim.set_gripper(gripper)

    def _run(self) -> None:
        try:
            sim = self.sim = PickCubeSim(self.config, render=self.render and self.on_images is not None)
        except BaseException as exc:  # noqa: BLE001 -- reported by start()
            self.error = exc
            self._ready.set()
            return
        if sim.renderer is not None:
            sim.render()  # the first frame compiles shaders (~0.5 s on llvmpipe): not inside the real-time loop
        self._ready.set()
        config = self.config
        dt = self.model_dt = float(sim.model.opt.timestep)
        state_period, camera_period = 1.0 / config.state_hz, 1.0 / config.camera_hz
        start_wall = time.monotonic()
        sim_start = sim.data.time
        next_state = next_camera = start_wall
        try:
            while not self._stop.is_set():
                self._apply_pending(sim)
                now = time.monotonic()
                wanted_sim = sim_start + (now - start_wall) * config.real_time_factor
                lag = wanted_sim - sim.data.time
                if lag > self.MAX_LAG:  # cannot keep up: drop the backlog (the sim slows down) rather than spiral
                    sim_start -= lag - self.MAX_LAG
                    lag = self.MAX_LAG
                steps = int(lag / dt)
                if steps > 0:
                    begin = time.perf_counter()
                    sim.step(steps)
                    self.stats.physics_seconds += time.perf_counter() - begin
                    self.stats.physics_steps += steps
                now = time.monotonic()
                if now >= next_state:
                    self.on_state(sim.snapshot(), self.wall_clock())
                    next_state = max(next_state + state_period, now - state_period)
                if self.on_images is not None and now >= next_camera:
                    begin = time.perf_counter()
                    images = sim.render()
                    stamp = self.wall_clock()
                    self.stats.render_seconds += time.perf_counter() - begin
                    self.stats.frames_rendered += 1
                    self.on_images(images, stamp)
                    next_camera = max(next_camera + camera_period, now - camera_period)
                self.stats.wall_time = time.monotonic() - start_wall
                self.stats.sim_time = sim.data.time
                sleep = min(next_state, next_camera if self.on_images else next_state) - time.monotonic()
                time.sleep(min(max(sleep, 0.0), 0.002))
        except BaseException as exc:  # noqa: BLE001 -- surfaced to the node
            self.error = exc
        finally:
            sim.close()
