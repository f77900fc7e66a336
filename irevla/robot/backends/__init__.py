"""Robot backends of franka_control (rclpy edge): how a filtered target reaches a controller and how the measured
state comes back. All topic, action and service names come from `irevla.robot.config.FrankaControlConfig`.

* ``sim``         -- the MuJoCo sim_robot node (irevla.robot.nodes.sim_robot): PoseStamped target, gripper topic,
                     reset service.
* ``franka_ros2`` -- official franka_ros2 (FR3): target to a Cartesian impedance controller's topic, state from
                     franka_robot_state_broadcaster (best effort), gripper and error recovery through franka_msgs
                     actions. franka_msgs is imported here only, when this backend is built.
* ``multipanda``  -- multipanda_ros2 (Panda/FER, libfranka 0.9.2): FrankaState, ErrorRecovery service, gripper
                     actions (franka_msgs of multipanda, imported lazily as well).
"""

from __future__ import annotations

from collections.abc import Callable

from irevla.robot.config import FrankaControlConfig
from irevla.robot.control import RobotState


def make_backend(node, config: FrankaControlConfig, on_state: Callable[[RobotState], None]):
    backend = config.control.backend
    if backend == "sim":
        from irevla.robot.backends.topics import SimBackend

        return SimBackend(node, config, on_state)
    if backend == "franka_ros2":
        from irevla.robot.backends.topics import FrankaRos2Backend

        return FrankaRos2Backend(node, config, on_state)
    if backend == "multipanda":
        from irevla.robot.backends.multipanda import MultipandaBackend

        return MultipandaBackend(node, config, on_state)
    raise ValueError(f"control.backend: unknown backend {backend!r}; use sim, franka_ros2 or multipanda")
