"""The robot PC's path for real: `colcon build` of the package, then ROS 2's own launch on its install space.

- colcon builds this repository as an ament_python package; the install space has every node executable in
  lib/irevla, the launch files and parameter files in share/irevla, package.xml and the ament index entry.
- sim.launch.py runs through launch's LaunchService (what `ros2 launch` runs) from that install space, in a private
  network (and PID) namespace: the simulated stack comes up, the policy moves the arm, the recorder records an
  episode, and SIGINT shuts everything down cleanly, with no process left behind.
- Every other launch file is loaded by launch itself and its description visited for representative arguments
  (tests/robot/launch_visit.py): the nodes and the parameters each combination starts, validated by the nodes'
  own config models; wrong arguments are clear errors.
The launch tests skip with the way to enable them where launch is not installed (ros2_install.ENABLE_LAUNCH).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from netns import run_isolated
from ros2_install import colcon_build, install_environment, require_colcon, require_launch

from irevla.robot import config as robot_config
from irevla.robot.params import config_from_parameters

HERE = Path(__file__).resolve().parent
NODES = ("franka_control", "sim_robot", "realsense_camera", "vla_policy", "teleop", "recorder")
MODELS = {"franka_control": robot_config.FrankaControlConfig, "sim_robot": robot_config.SimRobotConfig,
          "realsense_camera": robot_config.RealSenseCameraConfig, "vla_policy": robot_config.VLAPolicyConfig,
          "teleop": robot_config.TeleopConfig, "recorder": robot_config.RecorderConfig}


@pytest.fixture(scope="module")
def install(tmp_path_factory) -> Path:
    require_colcon()
    return colcon_build(tmp_path_factory.mktemp("colcon_ws"))


# ------------------------------------------------------------------------------------------------------- colcon
def test_colcon_install_space_has_the_nodes_launch_files_config_and_index(install):
    lib = install / "lib" / "irevla"
    for node in NODES:
        executable = lib / node
        assert executable.is_file() and os.access(executable, os.X_OK), executable
        assert executable.read_text().startswith(f"#!{sys.executable}"), executable.read_text()[:80]
    share = install / "share" / "irevla"
    launch_files = sorted(path.name for path in (share / "launch").glob("*.launch.py"))
    assert launch_files == sorted(path.name for path in (HERE.parents[1] / "launch").glob("*.launch.py"))
    assert {f"{node}.yaml" for node in NODES} <= {path.name for path in (share / "config").glob("*.yaml")}
    assert (share / "package.xml").read_text() == (HERE.parents[1] / "package.xml").read_text()
    assert (install / "share" / "ament_index" / "resource_index" / "packages" / "irevla").is_file()
    site = next((install / "lib").glob("python3*/site-packages"))
    assert (site / "irevla" / "robot" / "nodes" / "franka_control.py").is_file()

    # the package as ament_index sees it from the install space's environment
    environment = dict(os.environ, **install_environment(install, install.parent))
    code = ("from ament_index_python.packages import get_package_prefix, get_package_share_directory; "
            "import irevla; print(get_package_prefix('irevla')); print(get_package_share_directory('irevla')); "
            "print(irevla.__file__)")
    prefix, share_dir, module = subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True,
                                               text=True, check=True, cwd=install.parent).stdout.split()
    assert Path(prefix) == install and Path(share_dir) == share and Path(module).is_relative_to(site)


# ------------------------------------------------------------------------------------------- visiting launch files
def visit(install: Path, file_name: str, **arguments: str) -> dict:
    environment = dict(os.environ, **install_environment(install, install.parent))
    command = [sys.executable, str(HERE / "launch_visit.py"), str(install / "share" / "irevla" / "launch" / file_name),
               *(f"{name}:={value}" for name, value in arguments.items())]
    result = subprocess.run(command, env=environment, capture_output=True, text=True, check=False, timeout=120,
                            cwd=install.parent)  # not the repository: python -c / a script puts its folder first
    if result.returncode != 0:
        raise LaunchError(result.stderr.strip().splitlines()[-1] if result.stderr.strip() else result.stdout)
    visited = json.loads(result.stdout)
    for node in visited["nodes"]:  # what each irevla node would be configured with: its own model validates it
        if node["package"] == "irevla":
            node["config"] = config_from_parameters(node["parameters"], MODELS[node["executable"]],
                                                    f"{file_name}: {node['name']}")
    return visited


class LaunchError(Exception):
    pass


def started(visited: dict) -> list[str]:
    return [node["executable"] for node in visited["nodes"]]


def node(visited: dict, executable: str) -> dict:
    (found,) = [n for n in visited["nodes"] if n["executable"] == executable]
    return found


@pytest.fixture(scope="module")
def launch_install(install) -> Path:
    require_launch()
    return install


def test_robot_launch_nodes_and_parameters_per_argument(launch_install, tmp_path):
    install = launch_install
    default = visit(install, "robot.launch.py")
    assert started(default) == ["franka_control", "realsense_camera"] and default["includes"] == []
    control = node(default, "franka_control")
    assert control["config"].control.backend == "franka_ros2"
    assert control["parameter_files"][0] == str(install / "share" / "irevla" / "config" / "franka_control.yaml")
    assert list(node(default, "realsense_camera")["config"].names) == ["wrist"]

    workspace = tmp_path / "workspace.yaml"
    two = visit(install, "robot.launch.py", backend="multipanda", camera_names="wrist,front",
                camera_serials="123456789012,234567890123", workspace_file=str(workspace))
    control = node(two, "franka_control")["config"]
    assert control.control.backend == "multipanda" and control.safety.workspace_file == str(workspace)
    cameras = node(two, "realsense_camera")["config"]
    assert list(cameras.names) == ["wrist", "front"] and list(cameras.serials) == ["123456789012", "234567890123"]

    assert started(visit(install, "robot.launch.py", use_realsense_ros="true")) == ["franka_control"]

    with pytest.raises(LaunchError, match="Argument \"backend\" provided value \"franka_ros3\" is not valid.*'franka_ros2'"):
        visit(install, "robot.launch.py", backend="franka_ros3")
    with pytest.raises(LaunchError, match="camera_serials has 1 entries for 2 camera_names"):
        visit(install, "robot.launch.py", camera_names="wrist,front", camera_serials="123456789012")
    with pytest.raises(LaunchError, match="declares no argument.*camera_serial'"):
        visit(install, "robot.launch.py", camera_serial="123456789012")


def test_robot_launch_includes_the_franka_driver_only_when_asked(launch_install, tmp_path, monkeypatch):
    with pytest.raises(LaunchError, match="franka_bringup"):  # not installed here: launch says which package
        visit(launch_install, "robot.launch.py", start_driver="true", robot_ip="172.16.0.2")
    # franka_bringup is a package of the robot's own workspace (franka_ros2); a stand-in prefix with its launch file
    prefix = tmp_path / "franka_prefix"
    (prefix / "share" / "ament_index" / "resource_index" / "packages").mkdir(parents=True)
    (prefix / "share" / "ament_index" / "resource_index" / "packages" / "franka_bringup").write_text("")
    (prefix / "share" / "franka_bringup" / "launch").mkdir(parents=True)
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(prefix))
    with_driver = visit(launch_install, "robot.launch.py", start_driver="true", robot_ip="172.16.0.2")
    assert with_driver["includes"] == [str(prefix / "share" / "franka_bringup" / "launch" / "franka.launch.py")]
    assert visit(launch_install, "robot.launch.py")["includes"] == []


def hand_eye_file(path: Path, child_frame: str, translation, quaternion) -> Path:
    path.write_text(
        "parameters:\n  name: wrist_camera\n  calibration_type: eye_in_hand\n  robot_base_frame: fr3_link0\n"
        "  robot_effector_frame: fr3_hand_tcp\n"
        f"  tracking_base_frame: {child_frame}\n  tracking_marker_frame: charuco_board\n"
        f"transform:\n  translation: {dict(zip('xyz', translation))}\n  rotation: {dict(zip('xyzw', quaternion))}\n")
    return path


def test_robot_launch_publishes_the_hand_eye_calibration_as_static_transforms(launch_install, tmp_path):
    translation, quaternion = [0.0695, 0.0102, -0.0801], [0.0183, 0.0799, 0.7041, 0.7053]
    wrist = hand_eye_file(tmp_path / "calibration_wrist_camera.yaml", "camera_color_optical_frame", translation,
                          quaternion)
    visited = visit(launch_install, "robot.launch.py", hand_eye_file=str(wrist),
                    hand_eye_child_frame="wrist_color_optical_frame")
    assert started(visited) == ["franka_control", "realsense_camera", "static_transform_publisher"]
    tf = node(visited, "static_transform_publisher")
    assert tf["package"] == "tf2_ros" and tf["name"] == "hand_eye_wrist_color_optical_frame"
    values = dict(zip(tf["arguments"][::2], tf["arguments"][1::2]))
    assert values["--frame-id"] == "fr3_hand_tcp" and values["--child-frame-id"] == "wrist_color_optical_frame"
    assert np.allclose([float(values[f"--{a}"]) for a in "xyz"], translation, atol=1e-9)
    unit = np.asarray(quaternion) / np.linalg.norm(quaternion)
    assert np.allclose([float(values[f"--q{a}"]) for a in "xyzw"], unit, atol=1e-9)

    bad = hand_eye_file(tmp_path / "bad_calibration.yaml", "camera_color_optical_frame", translation, [0, 0, 0, 0])
    with pytest.raises(LaunchError, match=r"hand_eye_file: .*bad_calibration.yaml: transform: quaternion"):
        visit(launch_install, "robot.launch.py", hand_eye_file=f"{wrist},{bad}")


def test_policy_rl_actor_teleop_and_sim_launch_files(launch_install, tmp_path):
    install = launch_install
    policy = visit(install, "policy.launch.py", checkpoint=str(tmp_path / "policy"), instruction="open the drawer")
    config = node(policy, "vla_policy")["config"]
    assert started(policy) == ["vla_policy"] and config.mode == "deploy"
    assert config.policy.checkpoint == str(tmp_path / "policy") and config.instruction == "open the drawer"

    actor = visit(install, "rl_actor.launch.py", out=str(tmp_path / "d_rl"), record_failures="true",
                  learner="tcp://127.0.0.1:5600")
    assert started(actor) == ["vla_policy", "teleop"]
    config = node(actor, "vla_policy")["config"]
    assert config.mode == "rl_actor" and config.rl_actor.record_failures is True
    assert config.rl_actor.learner_address == "tcp://127.0.0.1:5600"
    assert config.rl_actor.record_dir == str(tmp_path / "d_rl")
    assert (config.rl_actor.reward_source, config.rl_actor.review_window_s) == ("human", 10.0)
    actor = visit(install, "rl_actor.launch.py", reward_source="classifier+human", detector=str(tmp_path / "det"),
                  review_window_s="4.5")
    config = node(actor, "vla_policy")["config"]
    assert (config.rl_actor.reward_source, config.rl_actor.detector, config.rl_actor.review_window_s) == \
        ("classifier+human", str(tmp_path / "det"), 4.5)

    teleop = visit(install, "teleop_record.launch.py", out=str(tmp_path / "demos"), task="pick-cube",
                   device="keyboard")
    assert started(teleop) == ["teleop", "recorder"]
    assert node(teleop, "teleop")["config"].device == "keyboard"
    recorder = node(teleop, "recorder")["config"]
    assert recorder.out == str(tmp_path / "demos") and recorder.source == "teleop" and recorder.task == "pick-cube"

    assert started(visit(install, "sim.launch.py")) == ["sim_robot", "franka_control", "vla_policy"]
    recording = visit(install, "sim.launch.py", record="true", out=str(tmp_path / "episodes"))
    assert started(recording) == ["sim_robot", "franka_control", "vla_policy", "recorder"]
    assert node(recording, "franka_control")["config"].control.backend == "sim"
    assert node(recording, "recorder")["config"].out == str(tmp_path / "episodes")


# ---------------------------------------------------------------------------------- sim.launch.py, for real
IMAGE = 40


def sim_parameter_files(directory: Path) -> dict[str, str]:
    cameras = {"names": ["front", "wrist"],
               "image_topics": ["/camera/front/color/image_raw", "/camera/wrist/color/image_raw"]}
    sections = {
        "sim_robot": {"cameras": ["front", "wrist"], "image_size": [IMAGE, IMAGE], "camera_hz": 10.0},
        "franka_control": {"control": {"backend": "sim"}},
        "vla_policy": {"cameras": cameras, "control_hz": 10.0, "policy": {"preset": "tiny", "threads": 1}},
        "recorder": {"cameras": cameras, "keyboard": False},
    }
    files = {}
    for name, values in sections.items():
        path = directory / f"{name}.yaml"
        path.write_text(json.dumps({name: {"ros__parameters": values}}))
        files[f"{name}_params"] = str(path)
    return files


@pytest.mark.slow
def test_sim_launch_through_launch_service_from_the_install_space(launch_install):
    ros_home = Path(tempfile.mkdtemp(prefix="irevla_ros_home_"))
    output = run_isolated(sim_launch_body, timeout=240,
                          extra_env={**install_environment(launch_install, ros_home),
                                     "IREVLA_TEST_INSTALL": str(launch_install)})
    print(output[-3000:])


def _running_pids() -> set[int]:
    """Live processes of this PID namespace (its /proc), zombies excluded, this one (PID 1) excluded."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if state != "Z":
                pids.add(int(entry.name))
    return pids


def sim_launch_body() -> None:
    import rclpy
    from geometry_msgs.msg import PoseStamped
    from ros_probe import Probe, spin_in_background
    from std_msgs.msg import String
    from std_srvs.srv import SetBool, Trigger

    from irevla.data import read_episode
    from irevla.robot.conversions import pose_to_arrays

    install = Path(os.environ["IREVLA_TEST_INSTALL"])
    directory = Path(tempfile.mkdtemp(prefix="irevla_launch_"))
    arguments = {**sim_parameter_files(directory), "record": "true", "out": str(directory / "episodes"),
                 "instruction": "press the button"}
    log = (directory / "launch.log").open("w")
    assert _running_pids() == set(), _running_pids()
    driver = subprocess.Popen([sys.executable, str(HERE / "launch_driver.py"),
                               str(install / "share" / "irevla" / "launch" / "sim.launch.py"),
                               *(f"{k}:={v}" for k, v in arguments.items())],
                              stdout=log, stderr=subprocess.STDOUT)
    rclpy.init()
    probe = Probe()
    probe.watch(String, "/irevla/control/status")
    probe.watch(String, "/irevla/policy/info")
    probe.watch(PoseStamped, "/irevla/robot/ee_pose", keep=True)
    probe.watch(PoseStamped, "/irevla/control/commanded_pose", keep=True)
    executor = spin_in_background([probe], threads=2)
    began = time.monotonic()
    try:
        def ready():
            assert driver.poll() is None, (directory / "launch.log").read_text()[-4000:]
            status = probe.status()
            return probe.get("/irevla/policy/info") is not None and status and status["mode"] == "active"

        probe.wait_for(ready, 90, "the launched policy driving the arm (status active)", period=0.1)
        print(f"launched stack acting after {time.monotonic() - began:.1f} s")
        info = json.loads(probe.get("/irevla/policy/info").data)
        assert info["cameras"] == ["front", "wrist"]

        response = probe.call(Trigger, "/recorder/start")
        assert response.success, response.message
        time.sleep(2.0)
        assert probe.call(SetBool, "/recorder/mark_success", SetBool.Request(data=True)).success
        response = probe.call(Trigger, "/recorder/stop")
        assert response.success, response.message
        episode = read_episode(next((directory / "episodes").glob("ep-*.h5")))
        assert episode.n_steps >= 8 and episode.instruction == "press the button" and episode.success
        assert episode.images["front"].shape[1:] == (IMAGE, IMAGE, 3)

        commanded = probe.history["/irevla/control/commanded_pose"]
        assert len(commanded) > 15
        poses = np.array([pose_to_arrays(message)[0] for _, message in probe.history["/irevla/robot/ee_pose"]])
        assert np.linalg.norm(poses[-1] - poses[0]) > 1e-3, "the launched policy did not move the arm"
    finally:
        executor.shutdown(timeout_sec=1.0)
        rclpy.shutdown()
        launched = [int(pid) for pid in re.findall(r"process started with pid \[(\d+)\]",
                                                   (directory / "launch.log").read_text())]
        if driver.poll() is None:
            driver.send_signal(signal.SIGINT)  # what ctrl-c / a supervisor sends; never SIGTERM (orphans nodes)
        try:
            code = driver.wait(timeout=30)
        except subprocess.TimeoutExpired:
            driver.kill()
            raise AssertionError("the launch did not stop within 30 s of SIGINT:\n"
                                 + (directory / "launch.log").read_text()[-4000:]) from None
        log.close()
    text = (directory / "launch.log").read_text()
    assert code == 0, f"launch exited with {code}:\n{text[-4000:]}"
    assert len(launched) == 4, text[-3000:]  # sim_robot, franka_control, vla_policy, recorder
    for name in ("sim_robot", "franka_control", "vla_policy", "recorder"):
        assert re.search(rf"\[INFO\] \[{name}-\d+\]: process has finished cleanly", text), (name, text[-3000:])
    assert "escalating to 'SIGTERM'" not in text and "SIGKILL" not in text, text[-3000:]
    assert _running_pids() == set(), f"left behind: {_running_pids()}"
