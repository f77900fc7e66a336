"""Robot stack benchmarks -> JSON: policy latency, control-loop jitter under a training load, sim real-time factor.

    python bench/bench_robot.py [--seconds 20] [--out bench/results/robot.json]

* ``policy_latency`` -- vla_policy (tiny VLA) over real DDS, fed 30 Hz images + state by a publisher: latency from
  an observation's image stamp to the arrival of the action computed from it (what the arm waits; includes the
  timer phase), and the node's own inference time. p50 / p99 in ms.
* ``control_jitter`` -- the 10 Hz action stream's period error |dt - 100 ms| at a subscriber, alone and while a
  separate "learner" process trains a torch model flat out (goal: p99 < 5 ms).
* ``sim_robot`` -- the MuJoCo Panda: physics-only speed (real-time factor if run flat out) and the real-time
  runner's achieved factor with two cameras rendering at 10 Hz.

The ROS parts run in a private network namespace (``unshare -n``, loopback only) when the machine allows it, with
ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST; otherwise with the LOCALHOST discovery range alone.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

LEARNER_SCRIPT = """
import torch, time
torch.set_num_threads(1)
model = torch.nn.Sequential(torch.nn.Linear(512, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 512))
optimiser = torch.optim.Adam(model.parameters())
end = time.time() + float(__import__("sys").argv[1])
while time.time() < end:
    loss = model(torch.randn(256, 512)).pow(2).mean()
    optimiser.zero_grad(); loss.backward(); optimiser.step()
"""


def percentiles(values_s) -> dict:
    array = np.asarray(values_s, dtype=float) * 1000.0
    if array.size == 0:
        return {"n": 0}
    return {"p50_ms": round(float(np.percentile(array, 50)), 3), "p99_ms": round(float(np.percentile(array, 99)), 3),
            "max_ms": round(float(array.max()), 3), "n": int(array.size)}


def ros_measurements(seconds: float) -> dict:
    """Runs inside the namespace: the policy fed by synthetic sensors, alone and next to a training process."""
    import rclpy
    from rclpy.executors import MultiThreadedExecutor
    from sensor_msgs.msg import Image, JointState

    from irevla.robot.config import CamerasConfig, PolicySourceConfig, VLAPolicyConfig
    from irevla.robot.conversions import numpy_to_image, proprio_to_joint_state, stamp_to_seconds
    from irevla.robot.nodes.vla_policy import VLAPolicyNode
    from irevla.robot.policy_runner import PolicyRunner
    from irevla.robot.ros_edge import COMMAND_QOS, SENSOR_QOS

    rclpy.init()
    cameras = CamerasConfig(names=("front", "wrist"),
                            image_topics=("/camera/front/color/image_raw", "/camera/wrist/color/image_raw"))
    runner = PolicyRunner.load(PolicySourceConfig(preset="tiny", threads=1), cameras.names)
    policy = VLAPolicyNode(VLAPolicyConfig(cameras=cameras), runner=runner)
    sensors = rclpy.create_node("bench_sensors")
    image_publishers = [sensors.create_publisher(Image, topic, SENSOR_QOS) for topic in cameras.image_topics]
    state_publisher = sensors.create_publisher(JointState, "/irevla/robot/state", SENSOR_QOS)
    arrivals: list[tuple[float, float]] = []
    sensors.create_subscription(JointState, "/irevla/action",
                                lambda m: arrivals.append((time.time(), stamp_to_seconds(m.header.stamp))),
                                COMMAND_QOS)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (96, 96, 3), dtype=np.uint8) for _ in range(4)]

    def publish():
        k = 0
        while rclpy.ok():
            now = time.time()
            for publisher in image_publishers:
                publisher.publish(numpy_to_image(frames[k % 4], "rgb8", now))
            state_publisher.publish(proprio_to_joint_state([0.5, 0, 0.3, 3.1, 0, 0, 0.08], now))
            k += 1
            time.sleep(1 / 30)

    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(policy)
    executor.add_node(sensors)
    threading.Thread(target=executor.spin, daemon=True).start()
    threading.Thread(target=publish, daemon=True).start()

    def window(label: str) -> dict:
        time.sleep(2.0)  # discovery + settling
        arrivals.clear()
        policy.inference_seconds.clear()
        policy.tick_times.clear()
        time.sleep(seconds)
        ticks = np.diff(np.asarray(policy.tick_times))
        times = np.array([a for a, _ in arrivals])
        latency = [a - s for a, s in arrivals]
        periods = np.diff(times)
        return {"label": label, "actions": len(arrivals), "image_to_action": percentiles(latency),
                "inference": percentiles(list(policy.inference_seconds)),
                "period_error": percentiles(np.abs(periods - 0.1)) if periods.size else {"n": 0},
                "tick_period_error": percentiles(np.abs(ticks - 0.1)) if ticks.size else {"n": 0}}

    quiet = window("alone")
    learner = subprocess.Popen([sys.executable, "-c", LEARNER_SCRIPT, str(seconds + 4)])
    loaded = window("with a learner process training")
    learner.wait()
    executor.shutdown(timeout_sec=1.0)
    rclpy.shutdown()
    return {"policy_latency": quiet,
            "control_jitter": {"meaning": "|period - 100 ms| of the action stream at a subscriber (actions) and of "
                                          "the policy's timer ticks inside the node (ticks)",
                               "actions_alone": quiet["period_error"], "actions_with_learner": loaded["period_error"],
                               "ticks_alone": quiet["tick_period_error"],
                               "ticks_with_learner": loaded["tick_period_error"], "goal_p99_ms": 5.0,
                               "latency_with_learner": loaded["image_to_action"]}}


def sim_measurements(seconds: float) -> dict:
    from irevla.robot.config import SimRobotConfig
    from irevla.robot.sim_runner import SimRunner
    from irevla.sim.panda import PickCubeSim

    sim = PickCubeSim(SimRobotConfig(), render=False)
    sim.step(50)
    start = time.perf_counter()
    steps = 2000
    sim.step(steps)
    flat_out = steps * sim.config.physics_timestep / (time.perf_counter() - start)
    sim.close()
    frames = []
    runner = SimRunner(SimRobotConfig(cameras=("front", "wrist"), image_size=(96, 96), camera_hz=10.0),
                       lambda state, stamp: None, lambda images, stamp: frames.append(stamp)).start()
    time.sleep(seconds)
    runner.stop()
    stats = runner.stats
    return {"physics_only_real_time_factor": round(flat_out, 2),
            "runner_real_time_factor": round(stats.real_time_factor, 3),
            "runner_seconds": round(stats.wall_time, 2), "frames_rendered": stats.frames_rendered,
            "render_ms_per_frame_pair": round(1000 * stats.render_seconds / max(stats.frames_rendered, 1), 2),
            "physics_ms_per_step": round(1000 * stats.physics_seconds / max(stats.physics_steps, 1), 4)}


def run_isolated_ros(seconds: float) -> dict:
    """Re-run this script's ROS part in a private network namespace and read its JSON back."""
    environment = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", ROS_DOMAIN_ID=str(random.randint(1, 200)),
                       FASTDDS_BUILTIN_TRANSPORTS="UDPv4", OMP_NUM_THREADS="1")
    command = [sys.executable, __file__, "--ros-only", "--seconds", str(seconds)]
    isolated = shutil.which("unshare") and subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0
    if isolated:
        command = ["unshare", "-n", "sh", "-c", "ip link set lo up && exec " + " ".join(command)]
    result = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=20 * seconds + 120)
    if result.returncode != 0:
        raise RuntimeError(f"ROS benchmark failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    data = json.loads(result.stdout.strip().splitlines()[-1])
    data["network_namespace"] = bool(isolated)
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0, help="measurement window per case")
    parser.add_argument("--out", default="bench/results/robot.json")
    parser.add_argument("--ros-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ros_only:
        print(json.dumps(ros_measurements(args.seconds)))
        return
    result = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.machine(),
              "cpus": os.cpu_count(), "python": platform.python_version(), "seconds": args.seconds,
              **run_isolated_ros(args.seconds), "sim_robot": sim_measurements(min(args.seconds, 10.0))}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    latency, jitter, sim = result["policy_latency"], result["control_jitter"], result["sim_robot"]
    print(f"policy image->action p50 {latency['image_to_action'].get('p50_ms')} ms, p99 "
          f"{latency['image_to_action'].get('p99_ms')} ms; inference p50 {latency['inference'].get('p50_ms')} ms")
    print(f"10 Hz period error p99 (ticks / actions): alone {jitter['ticks_alone'].get('p99_ms')} / "
          f"{jitter['actions_alone'].get('p99_ms')} ms, with a learner {jitter['ticks_with_learner'].get('p99_ms')} / "
          f"{jitter['actions_with_learner'].get('p99_ms')} ms (goal < 5 ms)")
    print(f"sim_robot: physics-only {sim['physics_only_real_time_factor']}x real time, runner "
          f"{sim['runner_real_time_factor']} with 2 cameras at 10 Hz")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
