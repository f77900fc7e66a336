"""Test helpers of the unattended cycle: a camera stand-in that drops out, Python reset hooks, and a small stage-1-like
episode loop over a real simulated env (used in-process, by the kill -9 worker, and to build a morning report's
run directory).

`run_episodes` mirrors what `irevla.iterate.loop.stage_rl` does with the cycle: each episode is one
`EpisodeCycle.run_episode` over a `CycleEnv`, its recorder built inside the attempt; a finished episode is written
to the episode store, then one metrics record, then ``rl-1/actor.json`` (atomically), in that order.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Collection
from pathlib import Path

import numpy as np

from irevla.atomic_io import atomic_write_text
from irevla.data.episode import EpisodeBuilder, finish_labelled
from irevla.data.store import EpisodeStore
from irevla.iterate.cycle import CycleConfig, CycleEnv, EpisodeCycle, recorded_episode
from irevla.metrics_log import MetricsLog
from irevla.robot.env import RobotEnvError  # the real robot env's error class (importing it loads no rclpy)
from irevla.spec import Observation

STAGE = "rl-1"


class CameraDropout:
    """Stands in for a RealSense camera that drops out: around a real simulated env, it raises what `RobotEnv`
    raises when a camera stops publishing, at chosen resets (counted from 1 over the wrapper's life) and at chosen
    (reset number, step) pairs. `step_delay_s` slows each step (a real control rate)."""

    def __init__(self, env, failing_resets: Collection[int] = (), failing_steps: Collection[tuple[int, int]] = (),
                 step_delay_s: float = 0.0, error: type[Exception] = RobotEnvError) -> None:
        self.env = env
        self.failing_resets = set(failing_resets)
        self.failing_steps = set(failing_steps)
        self.step_delay_s = step_delay_s
        self.error = error
        self.resets = 0
        self.steps = 0

    def __getattr__(self, name: str):
        return getattr(self.env, name)

    def reset(self, **kwargs):
        self.resets += 1
        self.steps = 0
        if self.resets in self.failing_resets:
            raise self.error("no fresh observation within 1.0 s from ['wrist'] (are the camera and franka_control "
                             "nodes running?)")
        return self.env.reset(**kwargs)

    def step(self, action):
        self.steps += 1
        if (self.resets, self.steps) in self.failing_steps:
            raise self.error("no fresh observation within 1.0 s from ['wrist'] (are the camera and franka_control "
                             "nodes running?)")
        if self.step_delay_s:
            time.sleep(self.step_delay_s)
        return self.env.step(action)

    def close(self) -> None:
        self.env.close()


# ------------------------------------------------------------------------------------------- Python reset hooks
CALLS: list[dict] = []
RELEASE = threading.Event()


def record_hook(**context) -> None:
    CALLS.append(dict(context))


def failing_hook(**context) -> None:
    raise RuntimeError(f"the cube is not in the bin (episode {context['episode']})")


def refusing_hook(**context) -> bool:
    return False


def hanging_hook(**context) -> None:
    RELEASE.wait(60)
    CALLS.append({"released": True, **context})


# ------------------------------------------------------------------------------------------- the episode loop
def make_env(max_episode_steps: int = 8):
    from irevla.sim.registry import make_env_by_name

    return make_env_by_name("metaworld", "button-press-v3", cameras=("corner",), image_size=32,
                            max_episode_steps=max_episode_steps)


def run_episodes(run_dir: Path, episodes: int, config: CycleConfig, *, failing_resets: Collection[int] = (),
                 failing_steps: Collection[tuple[int, int]] = (), step_delay_s: float = 0.0, expert: bool = False,
                 max_episode_steps: int = 8, window_s: float = 0.0, extra: Callable[[int], dict] | None = None,
                 error: type[Exception] = RobotEnvError, log: Callable[[str], None] = print) -> dict:
    """Run episodes 0 .. `episodes`-1 of stage rl-1 in `run_dir` (resuming from rl-1/actor.json); return the
    progress. `window_s` waits between writing an episode and counting it (a kill lands there); `extra(i)` adds
    fields to episode i's history record (what other parts of the loop record: interventions, label sources)."""
    stage_dir = Path(run_dir) / STAGE
    stage_dir.mkdir(parents=True, exist_ok=True)
    progress_file = stage_dir / "actor.json"
    state = json.loads(progress_file.read_text()) if progress_file.is_file() else {
        "episodes": 0, "env_steps": 0, "successes": 0, "history": []}
    store = EpisodeStore(Path(run_dir) / "d_rl")
    metrics = MetricsLog(stage_dir, resume_step=state["env_steps"] if state["episodes"] else None, tensorboard=False)

    def count(index: int, success: bool, steps: int) -> None:
        state["episodes"] += 1
        state["env_steps"] += steps
        state["successes"] += int(success)
        state["history"].append({"episode": index, "success": success, "steps": steps, "explore": True,
                                 "env_steps": state["env_steps"], **(extra(index) if extra else {})})
        metrics.write({"step": state["env_steps"], "episode": index, "episode/success": success,
                       "episode/steps": steps})
        atomic_write_text(progress_file, json.dumps(state))

    adopted = recorded_episode(store, STAGE, state["episodes"])  # written, then killed before it was counted
    if adopted is not None:
        log(f"adopting episode {state['episodes']}, written before the last stop")
        count(state["episodes"], adopted.success, adopted.n_steps)

    cycle = EpisodeCycle(config, stage_dir, log)
    raw = make_env(max_episode_steps)
    env = CycleEnv(CameraDropout(raw, failing_resets, failing_steps, step_delay_s, error), cycle)
    if expert:
        from irevla.sim.registry import make_expert

        scripted = make_expert(raw)
    try:
        while state["episodes"] < episodes:
            index = state["episodes"]

            def attempt(index: int = index):
                builder = EpisodeBuilder(env.task_spec, source="rl", round=1,
                                         metadata={"stage": STAGE, "episode": index})
                rng = np.random.default_rng(index)
                obs, info = env.reset(seed=index)
                steps = 0
                while True:
                    observation = Observation.from_gym(obs)
                    action = (scripted(obs, info) if expert else
                              rng.uniform(-1, 1, size=env.task_spec.action_spec.low_array.shape))
                    action = env.task_spec.action_spec.clip(np.asarray(action, dtype=np.float32))
                    builder.add(observation, action, 0.0)
                    obs, _, terminated, truncated, info = env.step(action)
                    steps += 1
                    if terminated or truncated:
                        break
                success = bool(info.get("success", False))
                return finish_labelled(builder, Observation.from_gym(obs), success), steps, info

            episode, steps, info = cycle.run_episode(index, attempt)
            store.write(episode)
            if window_s:
                print(f"written {index}", flush=True)
                time.sleep(window_s)
            count(index, bool(episode.success), steps)
    finally:
        env.close()
        metrics.close()
    return state
