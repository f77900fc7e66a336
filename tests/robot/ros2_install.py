"""The robot PC's first two commands, for the tests: `colcon build` of this package and the environment of its install
space (what `source install/setup.bash` gives), plus ROS 2's own launch.

- colcon (colcon-core, colcon-ros, colcon-python-setup-py, colcon-package-selection: the dev extra) builds this repository as the ament_python
  package it is, into a temporary workspace, with this environment's Python, so the node executables' shebangs
  point at an interpreter that has rclpy and irevla's dependencies (as the system Python does on a ROS 2 machine).
- launch / launch_ros are not on the package index: `make ros2-launch` (which .ci/run calls when ../shared exists)
  installs ROS 2 Jazzy's own launch wheels from ../shared/wheels and builds composition_interfaces, tf2_msgs and
  franka_msgs from ../shared/ros-interfaces into .ros2/interfaces (tools/ros2/build_interfaces.sh); `make
  ros2-launch-jazzy` builds them again against Jazzy's rosidl into .ros2/interfaces-jazzy for `make test-ros
  ROS=jazzy`. On a ROS 2 machine, `source /opt/ros/<distro>/setup.bash` provides both.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
ENABLE_LAUNCH = ("ROS 2 launch is not installed: run `make ros2-launch SHARED=../shared` (builds the interfaces launch_ros "
                 "needs and installs ROS 2's launch wheels; .ci/run does this when ../shared exists), or on a ROS 2 "
                 "machine `source /opt/ros/<distro>/setup.bash`")


def _rclpy_version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("ros-rclpy")
    except importlib.metadata.PackageNotFoundError:  # rclpy of a ROS 2 installation (/opt/ros), not a wheel
        return ""


def require_colcon() -> None:
    if importlib.util.find_spec("colcon_core") is None or importlib.util.find_spec("colcon_ros") is None:
        pytest.skip("colcon is not installed (pip install colcon-core colcon-ros colcon-python-setup-py; the dev extra)")


def require_launch() -> None:
    """launch_ros imports composition_interfaces at import time: check in a fresh process (never load rclpy here)."""
    code = "import launch, launch_ros.actions, composition_interfaces.srv"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        reason = f"{ENABLE_LAUNCH} ({result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ''})"
        if _rclpy_version().startswith("7."):
            reason = ("on ROS 2 Jazzy's rclpy (make test-ros ROS=jazzy) launch_ros needs composition_interfaces built "
                      "against Jazzy's rosidl: run `make ros2-launch-jazzy SHARED=../shared` (.ci/run does) "
                      f"({result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ''})")
        if os.environ.get("IREVLA_REQUIRE_LAUNCH"):  # .ci/run prepared launch: a skip would hide a broken setup
            pytest.fail(f"IREVLA_REQUIRE_LAUNCH is set but {reason}")
        pytest.skip(reason)


def colcon_build(workspace: Path) -> Path:
    """`colcon build --packages-select irevla` in `workspace` (src/irevla -> this repository); the install prefix."""
    source = workspace / "src" / "irevla"
    source.parent.mkdir(parents=True, exist_ok=True)
    if not source.exists():
        source.symlink_to(REPOSITORY_ROOT, target_is_directory=True)
    environment = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    result = subprocess.run([sys.executable, "-m", "colcon", "--log-base", str(workspace / "log"), "build",
                             "--packages-select", "irevla", "--build-base", str(workspace / "build"),
                             "--install-base", str(workspace / "install"), "--event-handlers", "console_direct-"],
                            cwd=workspace, env=environment, capture_output=True, text=True, check=False, timeout=600)
    assert result.returncode == 0, f"colcon build failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return workspace / "install" / "irevla"


def install_environment(prefix: Path, ros_home: Path) -> dict[str, str]:
    """What `source install/setup.bash` sets for this package, with this venv as the underlay (its ROS wheels put an
    ament prefix at the venv root), and ROS_HOME (logs) kept out of the user's home."""
    site = prefix / "lib" / f"python{sysconfig.get_python_version()}" / "site-packages"
    underlay = Path(sys.prefix)
    return {
        "AMENT_PREFIX_PATH": os.pathsep.join([str(prefix), str(underlay), *filter(None, [os.environ.get(
            "AMENT_PREFIX_PATH")])]),  # setup.bash prepends: an underlay already sourced stays
        "PYTHONPATH": os.pathsep.join([str(site), str(REPOSITORY_ROOT / "tests" / "robot"),
                                       os.environ.get("PYTHONPATH", "")]),
        "PATH": os.pathsep.join([str(prefix / "bin"), os.environ.get("PATH", "")]),
        "ROS_HOME": str(ros_home),
    }
