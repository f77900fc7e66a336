"""Scripted experts for the five Kitchen tasks, in the env's own 7-D EE-delta action space.

`make_expert(env)` returns ``act(obs, info) -> action`` (float32[7]: base-frame dx dy dz, drx dry drz, gripper).
The expert reads privileged state from the env (handle sites, hinge bodies, joint values) and follows waypoints:
approach in front of the handle, move in, close the gripper, then drive the mechanism — pull along the door's arc
(microwave, hinge-cabinet door; the next waypoint is the handle's position a few degrees further open), pull the
slide door sideways, turn the knob about its axis with the wrist, or sweep the light-switch lever sideways. Each
step's action is the (clipped) difference between the waypoint and the *measured* EE pose, so the controller keeps
correcting: with the env's reference clipping this behaves like a P controller with a bounded integral.
The expert notices a new episode by ``env.elapsed_steps == 0`` and restarts its plan, so one `act` can serve many
episodes.

If the fingers close on nothing while they should hold a handle (it slipped), the plan starts over.

Measured success (this machine, ``render_images=False``; rendering does not change the physics):

================== ============ ============= ================ ================== =================
task               default      reset_noise   ``obj:random``   ``hand:random``    action noise
                   seeds 0-29   0.05, 10      (0.04), 8x3      (0.05), 5x2        0.2 / 0.4, 10
================== ============ ============= ================ ================== =================
knob-on            30/30 (56)   10/10         24/24            10/10              10/10 / 10/10
light-on           30/30 (36)   10/10         24/24            10/10              10/10 / 8/10
microwave-open     30/30 (47)   10/10         24/24            10/10              10/10 / 10/10
slide-door-open    30/30 (62)   10/10         24/24            10/10              10/10 / 10/10
left-door-open     30/30 (59)   10/10         21/24            10/10              10/10 / 10/10
================== ============ ============= ================ ================== =================

(mean episode length in steps in brackets; 280 is the limit.) "action noise" executes ``expert + N(0, s * half
range)`` per dimension (DART-style). The one ``obj:random`` failure is a layout that moves the hinge cabinet
further from the robot: the left door is at the edge of the Panda's reach even after the task's 0.25 m shift.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from irevla.rotations import matrix_to_rotvec
from irevla.sim.kitchen import KitchenEnv

# The grasp orientation used for every handle: gripper pointing into the kitchen (world +y), fingers closing along
# world x, the hand's x axis up. Columns are the end-effector site's axes in the world frame.
FORWARD = np.array([[0.0, 1.0, 0.0],
                    [0.0, 0.0, 1.0],
                    [1.0, 0.0, 0.0]])
# The finger pads' centre lies ~1.5 cm beyond the end_effector site along the gripper axis.
PAD_OFFSET = 0.015
# Gripper width (m) below which closed fingers hold nothing (the handles are 2.8-4.4 cm thick).
EMPTY_GRASP = 0.01


def _rot_z(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _rot_x(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _rot_y(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


@dataclass
class Waypoint:
    """Where the EE site should go (world frame), the gripper command, and when to move on."""

    pos: np.ndarray
    mat: np.ndarray
    gripper: float
    tolerance: float = 0.01  # m; the waypoint is reached within this distance ...
    hold: int = 0  # ... after which we stay this many more steps (e.g. while the gripper closes)
    holding: bool = False  # the fingers should hold the handle here: if they closed on nothing, start over


class KitchenExpert:
    """Waypoint controller shared by the tasks; `plan` (per task) lists the waypoints for the current state."""

    def __init__(self, env: KitchenEnv) -> None:
        if env.action_mode != "ee_delta":
            raise ValueError("the Kitchen scripted experts act in the ee_delta action space; build the env with "
                             "action_mode='ee_delta'")
        self.env = env
        self.spec = env.task_spec.action_spec
        self.max_translation = float(self.spec.high[0])
        self.max_rotation = float(self.spec.high[3])
        self.reset()

    def reset(self) -> None:
        self.phase = 0
        self.held = 0
        self.retries = 0

    # ---------------------------------------------------------------------------------------------- privileged
    def site(self, name: str) -> np.ndarray:
        return self.env.data.site(name).xpos.copy()

    def body_pos(self, name: str) -> np.ndarray:
        return self.env.data.body(name).xpos.copy()

    def joint(self, name: str) -> float:
        model = self.env.model
        return float(self.env.data.qpos[model.jnt_qposadr[model.joint(name).id]])

    # ------------------------------------------------------------------------------------------------ control
    def __call__(self, obs: Mapping[str, Any] | None = None, info: Mapping[str, Any] | None = None) -> np.ndarray:
        if self.env.elapsed_steps == 0 and (self.phase or self.held or self.retries):
            self.reset()
        plan = self.plan()
        if plan[min(self.phase, len(plan) - 1)].holding and self.env.gripper_width() < EMPTY_GRASP:
            self.phase, self.held = 0, 0  # the handle slipped out: open, back off and grasp again
            self.retries += 1
        while True:
            waypoint = plan[min(self.phase, len(plan) - 1)]
            if self.phase >= len(plan) - 1 or not self._reached(waypoint):
                break
            if self.held < waypoint.hold:
                self.held += 1
                break
            self.phase, self.held = self.phase + 1, 0
        return self._action_towards(waypoint)

    def _reached(self, waypoint: Waypoint) -> bool:
        pos, mat = self.env.ee_pose_world()
        return bool(np.linalg.norm(waypoint.pos - pos) < waypoint.tolerance
                    and np.linalg.norm(matrix_to_rotvec(waypoint.mat @ mat.T)) < 0.1)

    def _action_towards(self, waypoint: Waypoint) -> np.ndarray:
        pos, mat = self.env.ee_pose_world()
        base = self.env.base_rotation
        move = base.T @ (waypoint.pos - pos)
        turn = base.T @ matrix_to_rotvec(waypoint.mat @ mat.T)
        # Scale whole vectors (not per axis) so that the direction of motion is kept.
        move *= min(1.0, self.max_translation / max(np.abs(move).max(), 1e-12))
        turn *= min(1.0, self.max_rotation / max(np.abs(turn).max(), 1e-12))
        return np.concatenate([move, turn, [waypoint.gripper]]).astype(np.float32)

    def plan(self) -> list[Waypoint]:
        raise NotImplementedError


# ----------------------------------------------------------------------------------------------------- tasks
def _grasp(handle: np.ndarray, mat: np.ndarray, approach: float = 0.10) -> list[Waypoint]:
    """Pre-grasp in front of the handle (gripper open), move onto it, close and wait for the fingers."""
    axis = mat[:, 2]  # the gripper's pointing direction
    grasp = handle - PAD_OFFSET * axis
    return [Waypoint(grasp - approach * axis, mat, 0.0, tolerance=0.02),
            Waypoint(grasp, mat, 0.0, tolerance=0.008),
            Waypoint(grasp, mat, 1.0, tolerance=0.02, hold=6)]


class _HingedDoorExpert(KitchenExpert):
    """Grasp a vertical handle, then pull it around the door's hinge (world z axis through `hinge_body`)."""

    hinge_body: str
    hinge_joint: str
    grip_yaw: float = 0.0  # gripper yaw about world z at the grasp (the door faces the robot at yaw 0)
    grip_pitch: float = 0.0  # gripper tilt about world x (negative: pointing down), fine for a vertical handle
    open_direction: float = -1.0  # sign of the joint angle that opens the door
    lookahead: float = 0.12  # rad ahead of the current opening
    final_angle: float = 1.0
    # The gripper turns with the door by this fraction of its angle: a cylinder handle tolerates the twist, and
    # following the door fully runs the arm out of reach (measured with a global IK search).
    yaw_follow: float = 0.5
    grasp_height: float = 0.0  # where along the (vertical) handle to grasp, relative to its middle

    def plan(self) -> list[Waypoint]:
        angle = self.joint(self.hinge_joint)
        grip_mat = _rot_z(self.grip_yaw + self.yaw_follow * angle) @ _rot_x(self.grip_pitch) @ FORWARD
        handle = self.site(self.env.task.handle_site) + np.array([0.0, 0.0, self.grasp_height])
        steps = _grasp(handle, grip_mat)
        hinge = self.body_pos(self.hinge_body)
        opened = abs(angle)
        ahead = min(opened + self.lookahead, self.final_angle) * self.open_direction
        turn = _rot_z(ahead - angle)
        pull_handle = hinge + turn @ (handle - hinge)
        pull_mat = _rot_z(self.grip_yaw + self.yaw_follow * ahead) @ _rot_x(self.grip_pitch) @ FORWARD
        steps.append(Waypoint(pull_handle - PAD_OFFSET * pull_mat[:, 2], pull_mat, 1.0, tolerance=0.0, holding=True))
        return steps


class MicrowaveExpert(_HingedDoorExpert):
    hinge_body, hinge_joint = "microdoorroot", "microwave"
    # The handle is low and near the edge of the arm's reach: coming in tilted down and turned halfway to the
    # door's own yaw (0.3 rad) keeps the arm off its joint limits, also with the kitchen moved by a few cm.
    grip_yaw, grip_pitch = 0.15, -0.3


class LeftDoorExpert(_HingedDoorExpert):
    hinge_body, hinge_joint = "hingeleftdoor", "left_hinge_cabinet"
    # The cabinet is high and far: grasp the handle's lower part (above its lower mount) and barely turn the wrist.
    grasp_height, yaw_follow = -0.07, 0.0


class SlideDoorExpert(KitchenExpert):
    """Grasp the slide door's handle and pull it along +x (world)."""

    def plan(self) -> list[Waypoint]:
        handle = self.site(self.env.task.handle_site)
        steps = _grasp(handle, FORWARD)
        pull = handle + np.array([0.06, 0.0, 0.0])
        steps.append(Waypoint(pull - PAD_OFFSET * FORWARD[:, 2], FORWARD, 1.0, tolerance=0.0, holding=True))
        return steps


class KnobExpert(KitchenExpert):
    """Grasp the bottom-left knob's bar and turn it with the wrist about the knob's axis (world y).

    The knob sits low and close to the robot; the gripper comes in tilted down by `pitch` (the fingers still close
    across the vertical bar), which keeps the wrist away from joint 6's limit: 10 seeds took 78 steps on average
    straight ahead, 63 at -0.3 and 56 at -0.6 (with an earlier IK, straight ahead stalled outright).
    """

    depth = 0.04  # the fingertips must stay in front of the knob's base disc
    pitch = -0.6

    def plan(self) -> list[Waypoint]:
        knob = self.site(self.env.task.handle_site)
        grasp_mat = _rot_x(self.pitch) @ FORWARD
        axis = grasp_mat[:, 2]
        grasp = knob - self.depth * axis
        # Turned so far (rad, about world +y): the knob's angle, or the wrist's if the fingers slip ahead of it.
        _, mat = self.env.ee_pose_world()
        wrist = float(matrix_to_rotvec(mat @ grasp_mat.T)[1])
        angle = max(-self.joint("knob_Joint_2"), wrist)
        # Turn about the knob's own axis (world y through the knob), not about the EE site, which sits off that axis
        # because the gripper is tilted: the grasp point swings around the knob with the wrist.
        twist = _rot_y(min(angle + 0.3, 1.0))
        turn, turn_pos = twist @ grasp_mat, knob + twist @ (grasp - knob)
        # Line up in front of the knob precisely before moving in: the fingers pass the bar with ~2 cm to spare.
        return [Waypoint(grasp - 0.10 * axis, grasp_mat, 0.0, tolerance=0.006),
                Waypoint(grasp, grasp_mat, 0.0, tolerance=0.008),
                Waypoint(grasp, grasp_mat, 1.0, tolerance=0.02, hold=6),
                Waypoint(turn_pos, turn, 1.0, tolerance=0.0, holding=True)]


class LightExpert(KitchenExpert):
    """Closed fingers to the right of the switch lever, then push it left (world -x) until it flips.

    The push target follows the lever (a point just left of its tip): the tip swings on an arc towards the robot, and
    a sweep along a fixed line lost it half-way with the kitchen moved 3 cm back.
    """

    def plan(self) -> list[Waypoint]:
        lever = self.site(self.env.task.handle_site)
        start = lever + np.array([0.06, -0.03, 0.0])
        push = lever + np.array([-0.05, -0.03, 0.0])
        return [Waypoint(start - np.array([0.0, 0.08, 0.0]), FORWARD, 1.0, tolerance=0.02),
                Waypoint(start, FORWARD, 1.0, tolerance=0.01),
                Waypoint(push, FORWARD, 1.0, tolerance=0.0)]


EXPERTS: dict[str, type[KitchenExpert]] = {
    "knob-on": KnobExpert,
    "light-on": LightExpert,
    "microwave-open": MicrowaveExpert,
    "slide-door-open": SlideDoorExpert,
    "left-door-open": LeftDoorExpert,
}


def make_expert(env: KitchenEnv) -> Callable[[Mapping, Mapping], np.ndarray]:
    """The scripted expert of `env`'s task: ``act(obs, info) -> float32[7]`` in the env's EE-delta action space."""
    env = getattr(env, "unwrapped", env)
    return EXPERTS[env.task.name](env)
