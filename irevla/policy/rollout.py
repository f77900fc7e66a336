"""Closed-loop evaluation of a policy in simulation: success rate per task, optionally recording the rollouts.

Each episode resets a simulated env with its own seed (by default from ``EVAL_SEED_START`` on, far from the seeds
expert demos are recorded with, so evaluation layouts are not training layouts), then feeds every observation to
`VLAPolicy.act` until the env terminates (success) or truncates (time limit). Recorded rollouts are ordinary
episodes (source ``rl``, metadata with the policy's checkpoint id and the seed): iRe-VLA keeps the successful ones
as D_RL.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from irevla.data.episode import Episode, EpisodeBuilder
from irevla.data.store import EpisodeStore
from irevla.policy.vla import VLAPolicy
from irevla.sim.episode_loop import EpisodeStepper
from irevla.sim.episode_loop import run_episode as run_episode_with
from irevla.spec import Observation

EVAL_SEED_START = 100_000


@dataclass
class TaskEvaluation:
    task: str
    episodes: int = 0
    successes: int = 0
    steps: int = 0
    seconds: float = 0.0
    seeds: list[int] = field(default_factory=list)
    outcomes: list[bool] = field(default_factory=list)

    @property
    def success_rate(self) -> float:
        return self.successes / self.episodes if self.episodes else 0.0


@dataclass
class EvaluationReport:
    tasks: list[TaskEvaluation] = field(default_factory=list)

    @property
    def success_rate(self) -> float:
        episodes = sum(t.episodes for t in self.tasks)
        return sum(t.successes for t in self.tasks) / episodes if episodes else 0.0

    def to_dict(self) -> dict:
        return {"success_rate": self.success_rate,
                "tasks": [asdict(t) | {"success_rate": t.success_rate} for t in self.tasks]}

    def format(self) -> str:
        lines = [f"{'task':32s} {'success':>9s} {'rate':>6s} {'steps/ep':>9s} {'steps/s':>8s}"]
        for t in self.tasks:
            lines.append(f"{t.task:32s} {f'{t.successes}/{t.episodes}':>9s} {t.success_rate:6.2f} "
                         f"{t.steps / max(t.episodes, 1):9.1f} {t.steps / max(t.seconds, 1e-9):8.1f}")
        lines.append(f"{'all':32s} {'':9s} {self.success_rate:6.2f}")
        return "\n".join(lines)


def run_episode(env, policy: VLAPolicy, seed: int, builder: EpisodeBuilder | None = None
                ) -> tuple[bool, int, Episode | None]:
    """One closed-loop episode; returns (success, steps, the recorded episode if a `builder` was given)."""
    return run_episode_with(env, lambda obs, info: policy.act(Observation.from_gym(obs)).values, seed, builder)


def evaluate_policy(policy: VLAPolicy, tasks: Sequence[str], episodes: int = 10, family: str = "metaworld",
                    seed: int = EVAL_SEED_START, image_size: int | None = None, max_episode_steps: int | None = None,
                    variation: str = "", variation_seed: int = 0, record_dir: str | Path | None = None,
                    progress: Callable[[str], None] | None = None, parallel_envs: int = 1,
                    make_env: Callable[[str], Any] | None = None) -> EvaluationReport:
    """Success rate of `policy` on each task over `episodes` seeded episodes (seeds ``seed .. seed + episodes - 1``).

    `image_size` defaults to the size of the policy's training images; cameras are the policy's. With
    `parallel_envs` > 1 that many envs of a task run side by side and one `act_batch` call serves all their current
    observations (the per-call overhead of a small network dominates on a CPU); every episode still has its own
    seed and env, so the episodes are the same ones, only batched.

    `make_env(task)` builds the env of a task instead of the simulated `family` (`variation` is then only recorded
    in the metadata): `irevla iterate` evaluates on the robot this way. Any contract env works (reset(seed=...),
    step, task_spec, close, ``info["success"]``).
    """
    from irevla.sim.registry import make_env_by_name

    if parallel_envs < 1:
        raise ValueError(f"evaluate_policy: parallel_envs must be >= 1, got {parallel_envs}")
    if image_size is None:
        image_size = policy.observation_spec.cameras[policy.cameras[0]][0]
    if make_env is None:
        def make_env(task: str):
            return make_env_by_name(family, task, cameras=policy.cameras, image_size=image_size,
                                    max_episode_steps=max_episode_steps, variation=variation,
                                    variation_seed=variation_seed)

    store = EpisodeStore(record_dir) if record_dir is not None else None
    report = EvaluationReport()
    for task in tasks:
        envs = [make_env(task) for _ in range(min(parallel_envs, episodes))]
        metadata = {"policy": policy.checkpoint_id or "", "variation": variation, "variation_seed": variation_seed}
        try:
            report.tasks.append(_evaluate_task(policy, task, envs, list(range(seed, seed + episodes)), store,
                                               metadata, progress))
        finally:
            for env in envs:
                env.close()
    return report


def _evaluate_task(policy: VLAPolicy, task: str, envs: list, seeds: list[int], store: EpisodeStore | None,
                   metadata: dict, progress: Callable[[str], None] | None) -> TaskEvaluation:
    """The episodes of `seeds`, as many at a time as there are `envs`, with one batched policy call per step."""
    pending = list(seeds)
    outcomes: dict[int, tuple[bool, int]] = {}
    start = time.perf_counter()

    def begin(env) -> EpisodeStepper | None:
        if not pending:
            return None
        episode_seed = pending.pop(0)
        builder = None
        if store is not None:
            builder = EpisodeBuilder(env.task_spec, source="rl", metadata={"seed": episode_seed, **metadata})
        return EpisodeStepper(env, episode_seed, builder)

    running = [begin(env) for env in envs]
    while any(running):
        active = [i for i, stepper in enumerate(running) if stepper is not None]
        actions = policy.act_batch([Observation.from_gym(running[i].obs) for i in active])
        for i, action in zip(active, actions, strict=True):
            stepper = running[i]
            if not stepper.step(action.values):
                continue
            success, steps, episode = stepper.result()
            if store is not None:
                store.write(episode)
            outcomes[stepper.seed] = (success, steps)
            if progress is not None:
                progress(f"{task} seed {stepper.seed}: {'success' if success else 'failure'} after {steps} steps")
            running[i] = begin(envs[i])
    result = TaskEvaluation(task=task, seconds=time.perf_counter() - start)
    for episode_seed in sorted(outcomes):  # in seed order, whatever order the episodes ended in
        success, steps = outcomes[episode_seed]
        result.episodes += 1
        result.successes += int(success)
        result.steps += steps
        result.seeds.append(episode_seed)
        result.outcomes.append(success)
    return result
