"""The simulated Panda's physics on its own (no runner, no ROS): it holds its home pose, follows a target, resets."""

import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("gymnasium_robotics", reason="the simulated Panda uses gymnasium-robotics' assets")

from irevla.rotations import Pose, quaternion_angle, quaternion_multiply, rotvec_to_quaternion  # noqa: E402
from irevla.sim.panda import PickCubeSim, camera_intrinsics  # noqa: E402

SETTINGS = SimpleNamespace(physics_timestep=0.002, cameras=("front",), image_size=(24, 32),
                           stiffness_translation=800.0, stiffness_rotation=40.0, nullspace_stiffness=5.0,
                           cube_size=0.04, cube_x_range=(0.4, 0.6), cube_y_range=(-0.15, 0.15), lift_height=0.06,
                           seed=0)


def test_holds_home_follows_a_target_and_resets():
    sim = PickCubeSim(SETTINGS, render=False)
    home = sim.ee_pose()
    np.testing.assert_allclose(home.position, [0.45, 0.0, 0.35], atol=0.01)  # the robot's home pose, pointing down
    assert quaternion_angle(home.orientation, [1.0, 0.0, 0.0, 0.0]) < 0.05
    sim.step(250)
    assert sim.ee_pose().distance_to(home)[0] < 0.005
    turned = quaternion_multiply(rotvec_to_quaternion([0.0, 0.0, 0.3]), home.orientation)
    sim.set_target(Pose(home.position + [0.05, 0.0, -0.05], turned))
    sim.step(1000)  # 2 s
    translation, rotation = sim.ee_pose().distance_to(Pose(home.position + [0.05, 0.0, -0.05], turned))
    assert translation < 0.01 and rotation < 0.03
    state = sim.snapshot()
    assert state.joint_positions.shape == (7,) and not state.success
    sim.reset(seed=1)
    assert sim.ee_pose().distance_to(home)[0] < 1e-3
    sim.close()


def test_camera_intrinsics_follow_the_field_of_view():
    fx, fy, cx, cy = camera_intrinsics(SETTINGS, "front")
    assert fx == fy and (cx, cy) == (15.5, 11.5)


def test_the_physics_imports_neither_ros_nor_the_robot_package():
    code = ("import sys, irevla.sim.panda; bad = [m for m in sys.modules if m.startswith(('rclpy', 'irevla.robot'))];"
            " print(bad); sys.exit(bool(bad))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
