"""Run a test body with real rclpy over real DDS inside a private network namespace (loopback only).

`run_isolated(body)` re-executes ``body`` (a module-level function of a test file) in a fresh Python process under
``unshare -n -p`` (network and PID namespaces) after ``ip link set lo up``, with ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST, a random ROS_DOMAIN_ID and
UDP-only Fast DDS transport (shared memory made discovery slower here): no DDS packet can leave the machine, and
parallel test runs do not see each other. Processes the body starts inherit the namespace; the whole process group
dies with the body (it is the namespace's PID 1), and all of it is killed if the body overruns. Bodies signal success by returning; any exception fails the test with the output.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
RUNNER = Path(__file__).with_name("netns_runner.py")


def namespace_available() -> bool:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    return subprocess.run(["unshare", "-n", "-p", "-f", "--mount-proc", "true"], capture_output=True, check=False).returncode == 0


def require_ros_namespace() -> None:
    pytest.importorskip("rclpy", reason="rclpy not installed (pip install 'ros-rclpy[fastrtps]', the robot extra)")
    pytest.importorskip("std_srvs.srv", reason="std_srvs not installed (pip install ros-std-srvs)")
    if not namespace_available():
        pytest.skip("cannot create private network and PID namespaces (unshare -n -p; needs root or user namespaces)")


def isolated_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    environment = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
                       ROS_DOMAIN_ID=str(random.randint(1, 200)), FASTDDS_BUILTIN_TRANSPORTS="UDPv4",
                       PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"),
                       PYTHONPATH=os.pathsep.join([str(REPOSITORY_ROOT), str(RUNNER.parent),
                                                   os.environ.get("PYTHONPATH", "")]))
    environment.pop("ROS_LOCALHOST_ONLY", None)  # deprecated; conflicts with the discovery range on Jazzy
    environment.update(extra or {})
    return environment


def run_isolated(body: Callable[[], None], timeout: float = 120.0, extra_env: dict[str, str] | None = None) -> str:
    require_ros_namespace()
    module_path = Path(sys.modules[body.__module__].__file__).resolve()
    command = f"ip link set lo up && exec {sys.executable} {RUNNER} {module_path} {body.__name__}"
    # A private PID namespace too (-p -f, with its own /proc): the body is its PID 1, so when it exits or is killed the kernel kills every
    # process it started, including nodes in their own sessions (start_new_session) that a process-group kill misses
    # and that would otherwise live on, holding CPU and the output pipe (a CI run once hung there for an hour).
    process = subprocess.Popen(["unshare", "-n", "-p", "-f", "--mount-proc", "--kill-child", "sh", "-c", command],
                               env=isolated_environment(extra_env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        try:
            output, _ = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:  # something still holds the pipe: report what we have, never wait forever
            output = "(the output pipe stayed open after the kill)"
        pytest.fail(f"{body.__name__} did not finish within {timeout:.0f} s; output:\n{output[-6000:]}")
    assert process.returncode == 0, f"{body.__name__} failed (exit {process.returncode}):\n{output[-8000:]}"
    assert f"ISOLATED OK {body.__name__}" in output, output[-4000:]
    return output
