"""``irevla robot ...``: run the ROS 2 stack without ``ros2 launch``, inspect its settings, export episodes.

`add_robot_parser(subparsers)` adds the command to the main ``irevla`` parser (the lead wires it in irevla/cli.py);
``python -m irevla.robot.cli ...`` runs the same commands on its own.

* ``irevla robot up --sim`` -- sim_robot + franka_control (sim backend) + vla_policy in one process on one
  MultiThreadedExecutor (``--record DIR`` adds the recorder: keys s/e/y/n/d in this terminal or its services).
* ``irevla robot up --backend franka_ros2 --camera wrist=123456789012`` -- the real robot's side:
  franka_control + realsense_camera (+ vla_policy unless ``--no-policy``).
* ``irevla robot params NODE`` -- print a node's parameter file (the defaults, or ``--config-dir``'s).
* ``irevla robot export-bag EPISODE.h5 OUT`` -- an episode as rosbag2 (MCAP).

Nothing heavy is imported until a command runs.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

NODE_NAMES = ("franka_control", "sim_robot", "realsense_camera", "vla_policy", "teleop", "recorder")

UP_EPILOG = """\
examples:
  irevla robot up --sim                                  # tiny random-weight VLA drives the simulated Panda
  irevla robot up --sim --checkpoint runs/sft/policy --instruction "pick up the cube" --record runs/robot/sim
  irevla robot up --backend franka_ros2 --camera wrist=123456789012 --checkpoint runs/sft/policy
  irevla robot up --sim --set franka_control:safety.max_linear_velocity=0.2 --duration 30

Settings come from <config-dir>/<node>.yaml (default: the package's config/), then --set NODE:KEY=VALUE.
"""


def _models() -> dict[str, Any]:
    from irevla.robot import config

    return {"franka_control": config.FrankaControlConfig, "sim_robot": config.SimRobotConfig,
            "realsense_camera": config.RealSenseCameraConfig, "vla_policy": config.VLAPolicyConfig,
            "teleop": config.TeleopConfig, "recorder": config.RecorderConfig}


def _overrides(items: list[str]) -> dict[str, dict[str, Any]]:
    from irevla.config import ConfigError, parse_overrides

    result: dict[str, dict[str, Any]] = {}
    for item in items:
        node, colon, assignment = item.partition(":")
        key, equals, _ = assignment.partition("=")
        if not colon or not equals or node not in NODE_NAMES or not key:
            raise ConfigError(f"--set {item!r}: expected NODE:KEY=VALUE with NODE one of {NODE_NAMES}, e.g. "
                              f"franka_control:safety.max_linear_velocity=0.2")
        result.setdefault(node, {}).update(parse_overrides([assignment], option=f"--set {node}:"))
    return result


def _cmd_up(args: argparse.Namespace) -> int:
    from irevla.config import ConfigError
    from irevla.robot.params import node_config

    models = _models()
    overrides = _overrides(args.set or [])

    def settings(node: str, extra: dict[str, Any] | None = None):
        return node_config(models[node], node, args.config_dir, {**(extra or {}), **overrides.get(node, {})})

    policy_extra: dict[str, Any] = {}
    if args.checkpoint:
        policy_extra["policy.checkpoint"] = args.checkpoint
    if args.instruction:
        policy_extra["instruction"] = args.instruction
    if args.sim:
        sim = settings("sim_robot")
        cameras = {"cameras.names": list(sim.cameras),
                   "cameras.image_topics": [sim.image_topic_pattern.format(camera=c) for c in sim.cameras]}
        plan = {"sim_robot": sim, "franka_control": settings("franka_control", {"control.backend": "sim"})}
    else:
        if args.backend == "sim":
            raise ConfigError("irevla robot up: use --sim for the simulated robot (it also starts sim_robot)")
        names = [c.partition("=")[0] for c in args.camera] or ["wrist"]
        serials = [c.partition("=")[2] for c in args.camera] or [""]
        camera = settings("realsense_camera", {"names": names, "serials": serials})
        cameras = {"cameras.names": list(camera.names),
                   "cameras.image_topics": [camera.image_topic_pattern.format(camera=c) for c in camera.names]}
        control_extra = {"control.backend": args.backend}
        if args.workspace_file:
            control_extra["safety.workspace_file"] = args.workspace_file
        plan = {"franka_control": settings("franka_control", control_extra), "realsense_camera": camera}
    if not args.no_policy:
        plan["vla_policy"] = settings("vla_policy", {**cameras, **policy_extra})
    if args.record:
        plan["recorder"] = settings("recorder", {**cameras, "out": args.record,
                                                 **({"instruction": args.instruction} if args.instruction else {}),
                                                 "source": "rl" if not args.no_policy else "teleop"})
    return run_stack(plan, duration=args.duration, threads=args.threads)


def run_stack(plan: dict[str, Any], duration: float | None = None, threads: int = 6) -> int:
    """Build the planned nodes (name -> settings) in this process and spin them until Ctrl-C / `duration`."""
    import threading

    import rclpy
    from rclpy.executors import MultiThreadedExecutor

    from irevla.robot.nodes.franka_control import FrankaControlNode
    from irevla.robot.nodes.realsense_camera import RealSenseCameraNode
    from irevla.robot.nodes.recorder import RecorderNode
    from irevla.robot.nodes.sim_robot import SimRobotNode
    from irevla.robot.nodes.vla_policy import VLAPolicyNode
    from irevla.robot.ros_edge import arm_exit_guard

    builders = {"sim_robot": SimRobotNode, "franka_control": FrankaControlNode,
                "realsense_camera": RealSenseCameraNode, "vla_policy": VLAPolicyNode, "recorder": RecorderNode}
    rclpy.init(args=[])
    nodes = []
    executor = MultiThreadedExecutor(num_threads=threads)
    stop = threading.Event()
    spinner: threading.Thread | None = None
    timer: threading.Timer | None = None
    try:
        for name, config in plan.items():
            node = builders[name](config)
            nodes.append(node)
            executor.add_node(node)
        print(f"irevla robot up: {', '.join(plan)} running in one process"
              + (f" for {duration:g} s" if duration else "; Ctrl-C to stop"), flush=True)
        if duration:
            timer = threading.Timer(duration, stop.set)
            timer.start()
        spinner = threading.Thread(target=executor.spin, daemon=True)
        spinner.start()
        while not stop.wait(0.2):
            if not spinner.is_alive():
                break
    except KeyboardInterrupt:
        pass
    finally:
        arm_exit_guard(grace_s=10.0, label="irevla robot up")
        if timer is not None:
            timer.cancel()  # after Ctrl-C: do not wait for the duration to run out at exit
        summary = _summary(nodes)
        for node in nodes:
            node.close() if hasattr(node, "close") else None
        executor.shutdown(timeout_sec=2.0)
        if spinner is not None:  # a spinner still inside rcl's wait() at interpreter exit aborts the process
            spinner.join(timeout=10.0)  # ("terminate called without an active exception", rclpy#1484)
        for node in nodes:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
        print(summary, flush=True)
    return 0


def _summary(nodes) -> str:
    import json

    lines = ["irevla robot up: summary"]
    for node in nodes:
        name = node.get_name()
        if name == "franka_control":
            status = node.core.status()
            lines.append(f"  franka_control: mode {status['mode']}, counters {json.dumps(status['counters'])}")
        elif name == "vla_policy":
            lines.append(f"  vla_policy: {node.steps} actions, skipped {node.skipped or 0}, latency "
                         f"{json.dumps(node.latency_summary())}")
        elif name == "sim_robot":
            stats = node.runner.stats
            lines.append(f"  sim_robot: real-time factor {stats.real_time_factor:.2f}, {stats.frames_rendered} "
                         f"frames rendered")
        elif name == "recorder":
            lines.append(f"  recorder: {node.core.episodes_written} episode(s) written to {node.config.out}")
    return "\n".join(lines)


def _cmd_params(args: argparse.Namespace) -> int:
    from irevla.robot.params import node_config, parameter_file_text

    config = node_config(_models()[args.node], args.node, args.config_dir)
    sys.stdout.write(parameter_file_text(config, f"# {args.node} parameters"))
    return 0


def _cmd_export_bag(args: argparse.Namespace) -> int:
    from irevla.data import read_episode
    from irevla.robot.recorder import export_rosbag

    path = export_rosbag(read_episode(args.episode), args.out)
    print(f"wrote {path} (rosbag2, MCAP)")
    return 0


def add_robot_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``irevla robot`` (up / params / export-bag) to the main parser's subcommands."""
    robot = subparsers.add_parser("robot", help="the ROS 2 robot stack: run it (also in simulation), inspect it",
                                  description="Run the irevla ROS 2 nodes without `ros2 launch`, print their "
                                              "parameters, export episodes to rosbag2. docs/robot.md explains "
                                              "bring-up on a real FR3 / Panda.")
    commands = robot.add_subparsers(dest="robot_command", metavar="ACTION", required=True)

    up = commands.add_parser("up", help="start the stack in this process (--sim: with the simulated robot)",
                             epilog=UP_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    up.add_argument("--sim", action="store_true", help="simulated Panda (sim_robot) instead of a real robot")
    up.add_argument("--backend", default="franka_ros2", choices=("franka_ros2", "multipanda", "sim"),
                    help="real-robot backend of franka_control (default franka_ros2)")
    up.add_argument("--camera", action="append", default=[], metavar="NAME=SERIAL",
                    help="a RealSense camera (repeat for several; default: the only one, named wrist)")
    up.add_argument("--workspace-file", help="workspace box YAML from `irevla calibrate workspace`")
    up.add_argument("--checkpoint", help="policy checkpoint directory (default: the tiny random-weight preset)")
    up.add_argument("--instruction", help="language instruction for the policy (and the recorder)")
    up.add_argument("--no-policy", action="store_true", help="do not start vla_policy (teleop from elsewhere)")
    up.add_argument("--record", metavar="DIR", help="also start the recorder, writing episodes to DIR")
    up.add_argument("--config-dir", help="directory with <node>.yaml parameter files (default: the package's)")
    up.add_argument("--set", action="append", metavar="NODE:KEY=VALUE", help="override one parameter")
    up.add_argument("--duration", type=float, help="stop after this many seconds (default: until Ctrl-C)")
    up.add_argument("--threads", type=int, default=6, help="executor threads (default 6)")
    up.set_defaults(func=_cmd_up)

    params = commands.add_parser("params", help="print a node's parameter file")
    params.add_argument("node", choices=NODE_NAMES)
    params.add_argument("--config-dir", help="read <config-dir>/<node>.yaml instead of the defaults")
    params.set_defaults(func=_cmd_params)

    export = commands.add_parser("export-bag", help="write a recorded episode as rosbag2 (MCAP)")
    export.add_argument("episode", help="an episode file (ep-*.h5)")
    export.add_argument("out", help="output bag directory (must not exist)")
    export.set_defaults(func=_cmd_export_bag)
    return robot


def main(argv: list[str] | None = None) -> int:
    """``python -m irevla.robot.cli ...`` (the same as ``irevla robot ...``)."""
    from irevla.errors import UserError, one_line

    parser = argparse.ArgumentParser(prog="irevla")
    add_robot_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["robot", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.func(args)
    except UserError as exc:
        print(f"irevla: error: {one_line(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
