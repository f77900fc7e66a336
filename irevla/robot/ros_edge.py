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
* `arm_exit_guard()`: once a process has been asked to stop, it ends within `SHUTDOWN_GRACE_S` even when a
  callback is stuck, and says where it was stuck.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
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

from irevla.errors import UserError, one_line
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


SHUTDOWN_GRACE_S = 4.0  # ros2 launch escalates SIGINT to SIGTERM after 5 s (sigterm_timeout)
FORCED_EXIT_STATUS = 1


def arm_exit_guard(grace_s: float = SHUTDOWN_GRACE_S, label: str = "") -> None:
    """Call when a console script starts shutting down: if the process is still alive `grace_s` later, print where
    every other thread is (innermost frames) and end it with `FORCED_EXIT_STATUS`.

    Why: a callback blocked in a MultiThreadedExecutor worker (a service handler waiting on the robot, a driver
    call that never returns) keeps the process alive: `MultiThreadedExecutor.shutdown()` joins the worker threads,
    and so does `concurrent.futures` again at interpreter exit. `ros2 launch` would then SIGKILL the node 10 s
    later with no word about the cause. The guard is a daemon thread, so a process that exits in time never sees
    it; it covers the interpreter's own exit too, so only call it from a process's main body (never in-process
    from a library or a test)."""

    def guard() -> None:
        time.sleep(grace_s)
        frames = sys._current_frames()
        lines = [f"{label or 'irevla'}: shutdown did not finish within {grace_s:g} s; still running:"]
        for thread in threading.enumerate():
            if thread is threading.current_thread() or thread.ident not in frames:
                continue
            where = traceback.extract_stack(frames[thread.ident])[-3:]
            lines.append(f"  thread {thread.name}: " + " <- ".join(
                f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(where)))
        lines.append(f"exiting with status {FORCED_EXIT_STATUS}")
        print("\n".join(lines), file=sys.stderr, flush=True)
        os._exit(FORCED_EXIT_STATUS)

    threading.Thread(target=guard, name="exit-guard", daemon=True).start()


def run_nodes(make_nodes: Callable[[], Sequence[Node]], args: Sequence[str] | None = None, threads: int = 4) -> int:
    """Console-script body: returns the process exit status.

    Stop order: the executor first (no new callbacks; running ones finish), then each node's `close()` (backends,
    devices), then the nodes and the context; all of it under `arm_exit_guard`."""
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
    except UserError as exc:  # a bad parameter, a missing checkpoint, no camera: one line, no traceback
        print(f"error: {one_line(exc)}", file=sys.stderr)
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
        arm_exit_guard(label=", ".join(node.get_name() for node in nodes))
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM during cleanup ends the process
        executor.shutdown(timeout_sec=1.0)
        for node in nodes:
            close = getattr(node, "close", None)
            if close is not None:
                close()
        for node in nodes:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0
