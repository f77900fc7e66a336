"""sim_robot + franka_control(sim backend) over real DDS in one process: the arm follows commands through the
safety filter, the watchdog holds the pose, NaN is rejected, reset and recovery services answer."""

from __future__ import annotations

import time

import numpy as np
from netns import run_isolated

DELTA_NAMES = ("dx", "dy", "dz", "drx", "dry", "drz", "gripper")


def test_sim_robot_and_control_in_one_process():
    output = run_isolated(sim_and_control_body, timeout=150)
    assert "holding after" in output


def sim_and_control_body() -> None:
    import rclpy
    from geometry_msgs.msg import PoseStamped
    from ros_probe import Probe, spin_in_background
    from sensor_msgs.msg import Image, JointState
    from std_srvs.srv import Trigger

    from irevla.robot.config import SimRobotConfig
    from irevla.robot.conversions import action_to_joint_state, image_to_rgb, pose_to_arrays, proprio_from_joint_state
    from irevla.robot.nodes.franka_control import FrankaControlNode
    from irevla.robot.nodes.sim_robot import SimRobotNode
    from irevla.robot.ros_edge import COMMAND_QOS

    rclpy.init()
    sim = SimRobotNode(SimRobotConfig(cameras=("front",), image_size=(32, 40), camera_hz=4.0))
    control = FrankaControlNode()
    probe = Probe()
    for topic, kind in (("/irevla/robot/state", JointState), ("/irevla/control/status", __import__(
            "std_msgs.msg", fromlist=["String"]).String), ("/camera/front/color/image_raw", Image)):
        probe.watch(kind, topic)
    probe.watch(PoseStamped, "/irevla/control/commanded_pose", keep=True)
    actions = probe.create_publisher(JointState, "/irevla/action", COMMAND_QOS)
    executor = spin_in_background([sim, control, probe])
    try:
        state = probe.wait_for(lambda: probe.get("/irevla/robot/state"), 20, "the republished robot state")
        start = proprio_from_joint_state(state)
        assert np.allclose(start[:3], [0.45, 0.0, 0.35], atol=0.01), start
        image = image_to_rgb(probe.wait_for(lambda: probe.get("/camera/front/color/image_raw"), 10, "an image"))
        assert image.shape == (32, 40, 3) and image.dtype == np.uint8 and image.std() > 0

        # 1.5 s of +x / -z commands at 10 Hz (2 cm and 1 cm per step): the arm follows.
        for _ in range(15):
            actions.publish(action_to_joint_state([0.02, 0, -0.01, 0, 0, 0, 0], DELTA_NAMES, time.time(), "base"))
            time.sleep(0.1)
        last_command = time.monotonic()
        status = probe.wait_for(lambda: (s := probe.status()) and s["mode"] == "holding" and s, 2.0, "hold")
        hold_latency = time.monotonic() - last_command
        print(f"holding after {hold_latency:.3f} s")
        assert hold_latency <= 0.3 + 0.1 + 0.25  # timeout + one control period + scheduling slack
        time.sleep(0.5)
        moved = proprio_from_joint_state(probe.get("/irevla/robot/state"))
        assert moved[0] - start[0] > 0.15 and start[2] - moved[2] > 0.08, (start, moved)
        targets = np.array([pose_to_arrays(m)[0] for _, m in probe.history["/irevla/control/commanded_pose"]])
        assert np.all(targets >= np.array([0.25, -0.35, 0.03]) - 1e-9)
        assert np.all(targets <= np.array([0.75, 0.35, 0.60]) + 1e-9)
        steps = np.linalg.norm(np.diff(targets, axis=0), axis=1)
        assert steps.max() <= 0.03 + 1e-6, steps.max()
        held = proprio_from_joint_state(probe.get("/irevla/robot/state"))
        time.sleep(0.5)
        still = proprio_from_joint_state(probe.get("/irevla/robot/state"))
        assert np.linalg.norm(still[:3] - held[:3]) < 0.005, (held, still)

        # NaN is rejected; the target does not move
        count = len(probe.history["/irevla/control/commanded_pose"])
        actions.publish(action_to_joint_state([float("nan"), 0, 0, 0, 0, 0, 0], DELTA_NAMES, time.time()))
        status = probe.wait_for(lambda: (s := probe.status()) and s["counters"].get("rejected") and s, 3, "reject")
        assert status["mode"] == "holding"
        recent = [pose_to_arrays(m)[0] for _, m in probe.history["/irevla/control/commanded_pose"][count:]]
        assert all(np.all(np.isfinite(p)) for p in recent)

        # reset: the sim teleports home; control goes idle
        response = probe.call(Trigger, "/irevla/control/reset_to_home")
        assert response.success, response.message
        def at_home():
            proprio = proprio_from_joint_state(probe.get("/irevla/robot/state"))
            return np.linalg.norm(proprio[:3] - [0.45, 0, 0.35]) < 0.01 and proprio.tolist()

        home = probe.wait_for(at_home, 5, "home pose")
        assert probe.status()["mode"] == "idle", probe.status()
        assert probe.call(Trigger, "/irevla/control/recover").success
        print("final", home)
    finally:
        executor.shutdown(timeout_sec=1.0)
        sim.close()
        rclpy.shutdown()


def test_robot_gym_env_over_the_sim_robot():
    run_isolated(robot_env_body, timeout=120)


def robot_env_body() -> None:
    import gymnasium as gym
    import rclpy
    from ros_probe import spin_in_background

    from irevla.robot.config import CamerasConfig, RobotEnvConfig, SimRobotConfig
    from irevla.robot.env import register
    from irevla.robot.nodes.franka_control import FrankaControlNode
    from irevla.robot.nodes.sim_robot import SimRobotNode
    from irevla.spec import ContractError, Observation

    register()  # irevla/Robot-v0
    rclpy.init()
    sim = SimRobotNode(SimRobotConfig(cameras=("front",), image_size=(40, 40), camera_hz=15.0))
    control = FrankaControlNode()
    executor = spin_in_background([sim, control])
    env = gym.make("irevla/Robot-v0", config=RobotEnvConfig(
        image_size=(32, 32), max_episode_steps=6, observation_timeout=5.0,
        cameras=CamerasConfig(names=("front",), image_topics=("/camera/front/color/image_raw",))))
    try:
        observation, info = env.reset(seed=0)
        contract = Observation.from_gym(observation).check(env.unwrapped.task_spec.observation_spec)
        assert contract.images["front"].shape == (32, 32, 3) and not info["success"]
        assert env.observation_space.contains(observation)
        start = observation["proprio"].copy()
        steps = 0
        began = time.monotonic()
        while True:
            observation, reward, terminated, truncated, info = env.step(np.array([0, 0, 0.02, 0, 0, 0, 0],
                                                                                 np.float32))
            steps += 1
            assert reward == 0.0 and not terminated
            if truncated:
                break
        rate = steps / (time.monotonic() - began)
        assert steps == 6 and 4.0 < rate < 11.0, rate
        assert observation["proprio"][2] - start[2] > 0.05, (start, observation["proprio"])
        try:
            env.step(np.full(7, np.nan, np.float32))
            raise AssertionError("a NaN action must not be sent")
        except ContractError:
            pass
        observation, _ = env.reset()
        assert abs(observation["proprio"][2] - 0.35) < 0.01
    finally:
        env.close()
        executor.shutdown(timeout_sec=1.0)
        sim.close()
        rclpy.shutdown()


def test_irevla_robot_up_sim_runs_the_stack_in_one_process():
    output = run_isolated(robot_up_body, timeout=150)
    assert "vla_policy:" in output


def robot_up_body() -> None:
    import re
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "irevla.robot.cli", "up", "--sim", "--duration", "20",
                             "--set", "sim_robot:image_size=[40, 40]", "--set", "vla_policy:policy.threads=1"],
                            capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    print(output[-2000:])
    assert result.returncode == 0, output
    actions = int(re.search(r"vla_policy: (\d+) actions", output).group(1))
    assert actions >= 10, output
    assert re.search(r"franka_control: mode (active|holding)", output), output
    factor = float(re.search(r"real-time factor ([\d.]+)", output).group(1))
    assert 0.5 < factor <= 1.05, factor
