"""`irevla iterate` with ``family: robot`` end to end over real DDS: the loop drives the robot env exactly as a
simulated one.

`irevla robot up --sim --no-policy` (sim_robot + franka_control with the sim backend, publishing the arm's state,
the cameras and the success topic) runs as one process, `irevla iterate` as another, with the learner as its child:
evaluation (expert and RL groups), stage 1 with the learner streaming over ZeroMQ on loopback, the final head's
rollouts and evaluation again, all through `irevla.robot.env.RobotEnv`, from a tiny random-weight robot policy
(REAL_ROBOT_PROPRIO, the 7-D action). Everything runs inside a private network namespace (tests/robot/netns.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from netns import run_isolated

pytest.importorskip("jax")
pytest.importorskip("zmq")

EPISODE_STEPS = 5


@pytest.mark.slow
def test_iterate_runs_on_the_robot_env(tmp_path):
    from irevla.policy.checkpoint import save_policy
    from irevla.robot.policy_runner import tiny_policy

    save_policy(tiny_policy(("front",), seed=0), tmp_path / "policy", info={"stage": "test: tiny robot policy"})
    started = time.monotonic()
    output = run_isolated(iterate_body, timeout=240, extra_env={"IREVLA_TEST_DIR": str(tmp_path)})
    print(output[-4000:])
    print(f"iterate on the robot env: {time.monotonic() - started:.1f} s")


def run_config(directory: Path) -> dict:
    return {
        "run_dir": str(directory / "run"), "family": "robot", "init": str(directory / "policy"),
        "robot": {"success_topic": "/sim_robot/success", "observation_timeout": 10.0, "reset_timeout": 60.0,
                  "cameras": {"names": ["front"], "image_topics": ["/camera/front/color/image_raw"]}},
        "expert_tasks": [{"task": "pick-cube"}],
        "rl_tasks": [{"task": "pick-cube", "name": "pick-cube-rl", "instruction": "pick up the red cube"}],
        "rl": {"demo_rollouts": 1, "demo_rollout_attempts": 1, "max_env_steps": 2 * EPISODE_STEPS,
               "max_episode_steps": EPISODE_STEPS, "final_rollouts": 1,
               # No SAC update in 10 steps (no jit compile on a loaded CI machine): this test is about the loop
               # on the robot env; tests/learner cover the training.
               "learner": {"warmup_transitions": 1000, "snapshot_every_s": 1.0}},
        "stage2": {"skip": True},
        "eval": {"episodes": 1, "max_episode_steps": EPISODE_STEPS},
    }


def iterate_body() -> None:
    from irevla.config import validate_config
    from irevla.iterate.config import IterateConfig
    from irevla.iterate.loop import stage_names

    directory = Path(os.environ["IREVLA_TEST_DIR"])
    config = run_config(directory)
    config_path = directory / "iterate_robot.yaml"
    config_path.write_text(yaml.safe_dump(config))
    environment = {**os.environ, "JAX_PLATFORMS": "cpu"}
    stack_log = directory / "stack.log"
    stack = subprocess.Popen(
        [sys.executable, "-m", "irevla", "robot", "up", "--sim", "--no-policy", "--threads", "3",
         "--set", "sim_robot:cameras=[front]", "--set", "sim_robot:image_size=[40, 40]"],
        stdout=stack_log.open("w"), stderr=subprocess.STDOUT, env=environment, start_new_session=True)
    began = time.monotonic()
    try:
        # The loop starts while the stack comes up: the env waits for franka_control's reset service.
        loop = subprocess.run([sys.executable, "-m", "irevla", "iterate", "--config", str(config_path)],
                              capture_output=True, text=True, env=environment, timeout=200)
        loop_output = loop.stdout + loop.stderr
        print(loop_output[-3000:])
        print(f"irevla iterate finished in {time.monotonic() - began:.1f} s")
        assert stack.poll() is None, f"the stack exited with {stack.returncode}:\n{stack_log.read_text()[-3000:]}"
        assert loop.returncode == 0, f"irevla iterate failed:\n{loop_output[-6000:]}"
    finally:
        if stack.poll() is None:
            os.killpg(stack.pid, signal.SIGINT)
        try:
            stack.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(stack.pid, signal.SIGKILL)
            stack.wait()
    summary = stack_log.read_text()
    print(summary[-1500:])

    run_dir = directory / "run"
    state = json.loads((run_dir / "state.json").read_text())
    expected = stage_names(validate_config(config, IterateConfig))
    assert expected == ["eval-0", "rl-1", "eval-1"] and list(state["stages"]) == expected
    assert "episode seeds only label the episodes" in loop_output

    # Stage 1 acted on the arm: two episodes of the time limit, every step streamed to the learner.
    rl = state["stages"]["rl-1"]
    assert (rl["episodes"], rl["env_steps"], rl["final_rollouts"]) == (2, 2 * EPISODE_STEPS, 1), rl
    actor = json.loads((run_dir / "rl-1" / "actor.json").read_text())
    assert [h["steps"] for h in actor["history"]] == [EPISODE_STEPS] * 2 or any(h["success"] for h in
                                                                                actor["history"]), actor
    learner = json.loads((run_dir / "rl-1" / "learner" / "snapshot" / "learner.json").read_text())
    assert learner["received_transitions"] == rl["env_steps"] and learner["episodes"] == 2, learner
    assert (run_dir / "rl-1" / "policy").is_dir()
    # franka_control received the loop's actions through its safety filter: 2 RL + 1 final + 2 x 2 eval episodes.
    counters = json.loads(summary.split("franka_control: mode ")[1].split("counters ", 1)[1].splitlines()[0])
    assert counters["commands"] >= 7 * EPISODE_STEPS - 2, counters  # a step or two may land on a reset

    # Evaluation numbers of both groups, before and after stage 1, and the report.
    for stage in ("eval-0", "eval-1"):
        groups = state["stages"][stage]["groups"]
        for group, label in (("expert", "pick-cube"), ("rl", "pick-cube-rl")):
            result = groups[group][label]
            assert result["episodes"] == 1 and 0.0 <= result["rate"] <= 1.0, (stage, groups)
    report = json.loads((run_dir / "report.json").read_text())
    assert [e["stage"] for e in report["evaluations"]] == ["eval-0", "eval-1"]
    assert (run_dir / "report.md").is_file()
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["family"] == "robot" and saved["eval"]["parallel_envs"] == 1
