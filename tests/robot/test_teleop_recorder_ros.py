"""teleop + recorder nodes over real DDS with a stand-in HID device at the lowest level: the SpaceMouse's raw
reports become action messages with the intervention flag, and the recorder turns them into an episode."""

from __future__ import annotations

import time

import numpy as np
from netns import run_isolated


def test_teleop_drives_the_recorder():
    run_isolated(teleop_recorder_body, timeout=90)


def teleop_recorder_body() -> None:
    import tempfile
    from pathlib import Path

    import rclpy
    from hid_standin import StandInHidDevice, button_report, translation_report
    from ros_probe import Probe, spin_in_background
    from sensor_msgs.msg import Image, JointState
    from std_srvs.srv import SetBool, Trigger

    from irevla.data import read_episode
    from irevla.robot.config import CamerasConfig, RecorderConfig, SpaceMouseConfig, TeleopConfig
    from irevla.robot.conversions import action_values_from_joint_state, numpy_to_image, proprio_to_joint_state
    from irevla.robot.nodes.recorder import RecorderNode
    from irevla.robot.nodes.teleop import TeleopNode
    from irevla.robot.ros_edge import SENSOR_QOS, STATE_QOS

    rclpy.init()
    device = StandInHidDevice()
    mapping = SpaceMouseConfig(axis_order=(0, 1, 2, 3, 4, 5), axis_signs=(1.0,) * 6, deadband=0.1)
    teleop = TeleopNode(TeleopConfig(device="spacemouse", output_topic="/irevla/action", spacemouse=mapping),
                        hid_device=device)
    out = Path(tempfile.mkdtemp())
    recorder = RecorderNode(RecorderConfig(out=str(out), keyboard=False, cameras=CamerasConfig(
        names=("wrist",), image_topics=("/camera/wrist/color/image_raw",))))
    probe = Probe()
    probe.watch(JointState, "/irevla/action", keep=True)
    camera = probe.create_publisher(Image, "/camera/wrist/color/image_raw", SENSOR_QOS)
    state = probe.create_publisher(JointState, "/irevla/robot/state", STATE_QOS)
    executor = spin_in_background([teleop, recorder, probe])
    try:
        def publish_sensors() -> None:
            now = time.time()
            camera.publish(numpy_to_image(np.full((16, 20, 3), 90, np.uint8), "rgb8", now))
            state.publish(proprio_to_joint_state([0.5, 0, 0.3, 3.14, 0, 0, 0.08], now))

        def started():
            publish_sensors()
            return probe.call(Trigger, "/recorder/start").success

        probe.wait_for(started, 20, "the recorder to start", period=0.2)
        device.push(translation_report(350, 0, 0), button_report(1))  # full +x, close the gripper
        for _ in range(10):
            publish_sensors()
            time.sleep(0.1)
        device.push(translation_report(0, 0, 0), button_report(0))
        for _ in range(10):  # released: the takeover is held for 0.5 s, then idle zero actions
            publish_sensors()
            time.sleep(0.1)
        assert probe.call(SetBool, "/recorder/mark_success", SetBool.Request(data=False)).success
        response = probe.call(Trigger, "/recorder/stop")
        assert response.success, response.message

        actions = [action_values_from_joint_state(m, ("dx", "dy", "dz", "drx", "dry", "drz", "gripper"))
                   for _, m in probe.history["/irevla/action"]]
        pushed = [values for values, meta in actions if values[0] > 0.019]
        assert pushed and np.allclose(pushed[0], [0.02, 0, 0, 0, 0, 0, 1.0], atol=1e-6)
        flags = [meta["meta/intervention"] for _, meta in actions]
        assert flags[-1] == 0.0 and 1.0 in flags

        episode = read_episode(next(out.glob("ep-*.h5")))
        assert episode.images["wrist"].shape[1:] == (16, 20, 3) and not episode.success
        assert episode.n_steps >= 10 and episode.interventions is not None
        assert episode.interventions.any() and not episode.interventions.all()
        assert np.isclose(episode.actions[:, 0].max(), 0.02) and episode.actions[:, 6].max() == 1.0
    finally:
        executor.shutdown(timeout_sec=1.0)
        teleop.close()
        recorder.close()
        rclpy.shutdown()
