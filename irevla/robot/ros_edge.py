"""What every irevla node shares at the rclpy edge: parameters from a config model, QoS profiles, clocks, main().

Only modules under ``irevla/robot/nodes`` and ``irevla/robot/backends`` import this (and rclpy); the cores they wrap
never do.

* `declare_config(node, Model, initial)` declares one parameter per leaf of the model (dotted names, dynamic typing
  so ``[0, 0, 1]`` in a YAML file is as good as ``[0.0, 0.0, 1.0]``), with `initial`'s values as defaults, reads
  them back (overrides from ``--params-file`` / launch files win) and validates them into the model; a bad value
  raises `irevla.config.ConfigError` naming the node and the parameter.
* QoS: `SENSOR_QOS` (best effort, keep last 5: images, franka_ros2 state), `COMMAND_QOS` (reliable, keep last 1:
  commands), `LATCHED_QOS` (reliable, transient local: info published once). Subscribe to streams (sensor data,
  commands re-sent at a control rate) with ``event_callbacks=STREAM_EVENTS`` (below: why).
* `run_nodes(make_nodes)` is the body of every console script: init, build, spin a MultiThreadedExecutor,
  shut down cleanly on Ctrl-C or SIGTERM, print configuration errors as one line.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import rclpy
from pydantic import BaseModel
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

try:
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:  # Humble
    from rclpy.qos_event import SubscriptionEventCallbacks

from irevla.config import ConfigError
from irevla.robot.params import config_from_parameters, flatten

ModelT = TypeVar("ModelT", bound=BaseModel)

SENSOR_QOS = QoSProfile(reliability=ReliabilityPolicy.BEST_EFFORT, history=HistoryPolicy.KEEP_LAST, depth=5,
                        durability=DurabilityPolicy.VOLATILE)
COMMAND_QOS = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=1,
                         durability=DurabilityPolicy.VOLATILE)
STATE_QOS = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=5,
                       durability=DurabilityPolicy.VOLATILE)
LATCHED_QOS = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=1,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)

# Stream subscriptions get no QoS-event handlers. rclpy attaches two by default (incompatible QoS / type), and with
# Fast DDS each puts the DataReader's status condition into the executor's wait set. While a sample waits for a
# MultiThreadedExecutor worker the subscription itself is left out of the wait set but its events are not; the
# reader's status condition stays triggered (data pending; cf. rmw_fastrtps#833) and rcl_wait returns at once with
# nothing ready: the spin thread loops holding the GIL, which in turn delays the worker. Measured: ~2000 empty
# wake-ups/s, franka_control alone at 1.0 core instead of 0.3, and in one process with sim_robot a 5-11 Hz state
# stream instead of 100 Hz (docs/benchmarks.md, robot section). What is lost: the log line for a QoS or message-type
# mismatch on that topic (`ros2 topic info -v` still shows both ends' QoS). Low-rate inputs a person wires up by hand
# (franka_control's action topic) keep the default handlers and their warning.
STREAM_EVENTS = SubscriptionEventCallbacks(use_default_callbacks=False)


def declare_config(node: Node, model: type[ModelT], initial: ModelT | None = None) -> ModelT:
    defaults = flatten(initial if initial is not None else model())
    descriptor = ParameterDescriptor(dynamic_typing=True)
    values: dict[str, Any] = {}
    for name, default in defaults.items():
        if not node.has_parameter(name):
            node.declare_parameter(name, default, descriptor)
        values[name] = node.get_parameter(name).value
    return config_from_parameters(values, model, f"ROS parameters of node {node.get_fully_qualified_name()}")


def wall_time() -> float:
    """Seconds since the epoch: what header stamps carry (nodes use the system clock, no /clock)."""
    return time.time()


def run_nodes(make_nodes: Callable[[], Sequence[Node]], args: Sequence[str] | None = None, threads: int = 4) -> int:
    """Console-script body: returns the process exit status."""
    rclpy.init(args=list(args) if args is not None else sys.argv)
    nodes: Sequence[Node] = ()
    executor = MultiThreadedExecutor(num_threads=threads)

    def on_term(signum, frame):  # ros2 launch stops nodes with SIGINT, systemd / kill with SIGTERM
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        nodes = make_nodes()
        for node in nodes:
            executor.add_node(node)
        executor.spin()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        if rclpy.ok():
            raise
        # Ctrl-C / SIGTERM shut the context down between the executor's own checks: rclpy then raises "failed to
        # initialize wait set: the given context is not valid" (RCLError) instead of ExternalShutdownException. It is
        # the same clean stop (seen as exit status 1 under `ros2 launch`-style SIGINT in the end-to-end test).
    finally:
        for node in nodes:
            close = getattr(node, "close", None)
            if close is not None:
                close()
            node.destroy_node()
        executor.shutdown(timeout_sec=1.0)
        if rclpy.ok():
            rclpy.shutdown()
    return 0
