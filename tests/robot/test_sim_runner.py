"""SimRunner without ROS: the simulation in its child process (and on a thread) keeps real time, follows targets,
resets, stops; a failure to start is reported; the child does not outlive its parent."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

# irevla.robot.sim_runner imports irevla.sim first, which selects headless rendering (MUJOCO_GL=egl) before mujoco
SimRunner = pytest.importorskip("irevla.robot.sim_runner", reason="needs mujoco (the sim extra)").SimRunner
pytest.importorskip("gymnasium_robotics", reason="the simulated Panda uses gymnasium-robotics' assets")

from irevla.robot.config import SimRobotConfig  # noqa: E402
from irevla.rotations import Pose  # noqa: E402

CONFIG = SimRobotConfig(cameras=("front",), image_size=(24, 32), camera_hz=10.0)


@pytest.mark.parametrize("process", [True, False], ids=["child-process", "thread"])
def test_runner_keeps_real_time_follows_targets_and_resets(process):
    states, frames = [], []
    runner = SimRunner(CONFIG, lambda state, stamp: states.append((time.monotonic(), stamp, state)),
                       lambda images, stamp: frames.append(images), process=process).start()
    try:
        time.sleep(1.0)
        assert runner.error is None
        start = states[-1][2].pose
        assert np.allclose(start.position, [0.45, 0.0, 0.35], atol=0.01), start.position
        runner.set_target(Pose(start.position + [0.05, 0.0, -0.05], start.orientation))
        runner.set_gripper(1.0)
        time.sleep(1.0)
        moved = states[-1][2]
        assert np.linalg.norm(moved.pose.position - start.position - [0.05, 0.0, -0.05]) < 0.01, moved.pose.position
        assert moved.gripper_width < 0.01  # closed on nothing
        assert runner.request_reset(seed=3)
        time.sleep(0.3)
        assert np.allclose(states[-1][2].pose.position, [0.45, 0.0, 0.35], atol=0.01)
        # 100 Hz state and 10 Hz frames over ~2.3 s; a loaded shared machine gets a wide margin, not a free pass
        assert len(states) > 60 and len(frames) > 6, (len(states), len(frames))
        assert frames[-1]["front"].shape == (24, 32, 3)
        assert all(abs(monotonic - stamp - (states[0][0] - states[0][1])) < 1.0 for monotonic, stamp, _ in states)
    finally:
        runner.stop()
    assert runner.stats.resets == 1 and runner.stats.real_time_factor > 0.5, runner.stats
    if process:
        assert runner._child.returncode == 0


def test_a_simulation_that_cannot_start_says_why():
    with pytest.raises(RuntimeError, match="sim camera 'ceiling'"):
        SimRunner(SimRobotConfig(cameras=("ceiling",)), lambda state, stamp: None, lambda images, stamp: None).start()


def test_the_child_process_ends_with_its_parent():
    parent = textwrap.dedent("""
        import os
        from irevla.robot.config import SimRobotConfig
        from irevla.robot.sim_runner import SimRunner
        runner = SimRunner(SimRobotConfig(cameras=("front",)), lambda state, stamp: None).start()
        print(runner._child.pid, flush=True)
        os._exit(0)  # no cleanup at all, as if killed
    """)
    result = subprocess.run([sys.executable, "-c", parent], capture_output=True, text=True, timeout=120)
    child = int(result.stdout.split()[-1])
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{child}/stat") as stat:
                if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                    break  # exited; only waiting for init to reap it
        except FileNotFoundError:
            break
        time.sleep(0.05)
    else:
        os.kill(child, 9)
        raise AssertionError("the sim process outlived its parent by 10 s")
