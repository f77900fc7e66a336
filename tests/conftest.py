"""Shared pytest hooks: the report header says which ROS 2 generation the robot tests run on (without importing rclpy
into the test process: the DDS tests run their bodies in fresh processes); every test must leave the test process's
threads on normal (SCHED_OTHER) scheduling."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from pathlib import Path

import pytest


def pytest_report_header() -> list[str]:
    spec = importlib.util.find_spec("rclpy")
    if spec is None:
        return ["rclpy: not installed (the DDS tests skip)"]
    generation = {"7.": "Jazzy", "9.": "Kilted"}
    version = importlib.metadata.version("ros-rclpy")
    name = next((name for prefix, name in generation.items() if version.startswith(prefix)), "unknown generation")
    launch = all(importlib.util.find_spec(name) is not None for name in ("launch_ros", "composition_interfaces"))
    return [f"rclpy {version} (ROS 2 {name}) from {spec.origin}; ROS 2 launch: {'yes' if launch else 'no'}"]


def _real_time_threads() -> dict[int, str]:
    """Threads of this process on a real-time policy (SCHED_FIFO / SCHED_RR), by thread id, with their names."""
    found = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            policy = int((task / "stat").read_text().rsplit(")", 1)[1].split()[38])  # field 41: policy
            name = (task / "comm").read_text().strip()
        except (OSError, IndexError, ValueError):  # the thread ended meanwhile
            continue
        if policy in (os.SCHED_FIFO, os.SCHED_RR):
            found[int(task.name)] = name
    return found


@pytest.fixture(autouse=True)
def _normal_scheduling():
    """A test that leaves real-time threads behind fails here, by name, and the threads go back to SCHED_OTHER.

    As root, SVT-AV1 switches the thread that opens it to SCHED_FIFO; everything started from it later inherited that,
    and a spinning child then starved the whole run, this process's own timeouts included (CI hung for an hour)."""
    yield
    if not Path("/proc/self/task").is_dir():
        return
    threads = _real_time_threads()
    for thread in threads:
        try:
            os.sched_setscheduler(thread, os.SCHED_OTHER, os.sched_param(0))
        except OSError:
            pass
    if threads:
        pytest.fail(f"the test left threads of the test process on real-time scheduling: {threads}")
