"""A test-side rclpy node: latest-value caches of topics, waiting for conditions, publishing, calling services.
Only used inside the private network namespace (netns.py)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data

from irevla.robot.ros_edge import STREAM_EVENTS


class Probe(Node):
    def __init__(self, name: str = "test_probe") -> None:
        super().__init__(name)
        self._lock = threading.Lock()
        self.latest: dict[str, Any] = {}
        self.history: dict[str, list[tuple[float, Any]]] = {}

    def watch(self, message_type, topic: str, keep: bool = False) -> None:
        """Cache the newest message of `topic` (sensor-data QoS matches reliable and best-effort publishers)."""
        def on_message(message, topic=topic):
            with self._lock:
                self.latest[topic] = message
                if keep:
                    self.history.setdefault(topic, []).append((time.monotonic(), message))
        self.create_subscription(message_type, topic, on_message, qos_profile_sensor_data,
                                 event_callbacks=STREAM_EVENTS)  # see ros_edge: QoS-event handlers busy-loop the executor

    def get(self, topic: str) -> Any:
        with self._lock:
            return self.latest.get(topic)

    def status(self, topic: str = "/irevla/control/status") -> dict | None:
        message = self.get(topic)
        return json.loads(message.data) if message is not None else None

    def wait_for(self, condition: Callable[[], Any], timeout: float, what: str, period: float = 0.01) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            time.sleep(period)
        raise AssertionError(f"timed out after {timeout:.1f} s waiting for {what}")

    def call(self, service_type, name: str, request=None, timeout: float = 20.0):
        client = self.create_client(service_type, name)
        if not client.wait_for_service(timeout_sec=timeout):
            raise AssertionError(f"service {name} not available within {timeout:.0f} s")
        future = client.call_async(request or service_type.Request())
        done = threading.Event()
        future.add_done_callback(lambda f: done.set())
        assert done.wait(timeout), f"service {name} did not answer within {timeout:.0f} s"
        return future.result()


def spin_in_background(nodes, threads: int = 4) -> MultiThreadedExecutor:
    executor = MultiThreadedExecutor(num_threads=threads)
    for node in nodes:
        executor.add_node(node)
    threading.Thread(target=executor.spin, daemon=True).start()
    return executor
