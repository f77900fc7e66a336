"""Record scripted-expert demonstrations (the expert dataset D_e) into the episode store.

For each task we run the task's scripted expert with rendering on, record every step through `EpisodeBuilder`, and
write each finished episode as one crash-safe HDF5 file. Only successful episodes are kept unless asked otherwise;
failures are counted and reported. Attempt k of a task resets with a seed derived from (seed, task, k) and draws its
noise from a generator derived the same way: a run is reproducible episode by episode (the episode's metadata holds
`seed`, `attempt` and `reset_seed`), and another `seed` gives other layouts, not a shifted copy of the same ones.
Recording a task again with the same `seed` into a directory that already holds it is refused (it would duplicate
episodes): pick another `seed` to add more, or `resume=True` to finish an interrupted recording (attempts already on
disk are skipped; since attempts are deterministic, the result is what one uninterrupted run would have written).

`action_noise > 0` executes ``expert + N(0, noise * half_range)`` per action dimension (so 0.2 means the same on
Meta-World's [-1, 1] and on the real robot's ±2 cm) while storing the clean expert action (DART): the demos then
cover the states a slightly wrong policy visits, which makes behaviour cloning much more robust.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from irevla.data.episode import EpisodeBuilder
from irevla.data.store import EpisodeStore
from irevla.errors import UserError
from irevla.sim.episode_loop import run_episode
from irevla.sim.registry import make_env_by_name, make_expert


@dataclass
class TaskDemoReport:
    task: str
    kept: int = 0
    successes: int = 0
    failures: int = 0
    steps: int = 0
    seconds: float = 0.0

    @property
    def attempts(self) -> int:
        return self.successes + self.failures


@dataclass
class DemoReport:
    out: str
    tasks: list[TaskDemoReport] = field(default_factory=list)

    @property
    def failures(self) -> int:
        return sum(t.failures for t in self.tasks)

    @property
    def kept(self) -> int:
        return sum(t.kept for t in self.tasks)

    def to_dict(self) -> dict:
        return {"out": self.out, "tasks": [asdict(t) | {"attempts": t.attempts} for t in self.tasks]}

    def format(self) -> str:
        lines = [f"{'task':32s} {'kept':>5s} {'success':>8s} {'failed':>6s} {'steps':>7s} {'steps/s':>8s}"]
        for t in self.tasks:
            rate = f"{t.successes}/{t.attempts}"
            lines.append(f"{t.task:32s} {t.kept:5d} {rate:>8s} {t.failures:6d} {t.steps:7d} "
                         f"{t.steps / max(t.seconds, 1e-9):8.1f}")
        return "\n".join(lines)


def attempt_seeds(seed: int, task: str, attempt: int) -> tuple[int, np.random.Generator]:
    """(reset seed, noise generator) of one attempt: independent streams per (seed, task, attempt)."""
    sequence = np.random.SeedSequence([seed, zlib.crc32(task.encode()), attempt])
    reset_sequence, noise_sequence = sequence.spawn(2)
    return int(reset_sequence.generate_state(1)[0] & 0x7FFFFFFF), np.random.default_rng(noise_sequence)


class DuplicateDemosError(UserError, ValueError):
    """The output directory already holds this task recorded with the same seed."""


def collect_expert_demos(tasks: Sequence[str], episodes: int, out: str | Path, family: str = "metaworld",
                         image_size: int = 128, cameras: Sequence[str] | None = None, fast: bool = True,
                         seed: int = 0, keep_failures: bool = False, action_noise: float = 0.0,
                         max_attempts_factor: float = 3.0, variation: str = "", variation_seed: int = 0,
                         round: int = 0, max_episode_steps: int | None = None, resume: bool = False,
                         progress: bool = True) -> DemoReport:
    """Record `episodes` successful expert episodes per task into `out`; see the module docstring."""
    store = EpisodeStore(out)
    report = DemoReport(out=str(out))
    max_attempts = max(episodes, int(np.ceil(episodes * max_attempts_factor)))
    bar = tqdm(total=episodes * len(tasks), unit="ep", desc="expert demos", disable=not progress)
    try:
        for task in tasks:
            env = make_env_by_name(family, task, cameras=cameras, image_size=image_size, fast=fast,
                                   variation=variation, variation_seed=variation_seed,
                                   max_episode_steps=max_episode_steps)
            act = make_expert(env)
            existing = [i for i in store.index(task=env.task_spec.full_name) if i.metadata.get("seed") == seed]
            if existing and not resume:
                raise DuplicateDemosError(
                    f"{out} already holds {len(existing)} episode(s) of {env.task_spec.full_name} recorded with seed "
                    f"{seed}; recording again would duplicate them: use another --seed, another --out, or --resume "
                    f"to finish an interrupted recording")
            done_attempts = {i.metadata.get("attempt") for i in existing}
            task_report = TaskDemoReport(task=task, kept=len(existing))
            bar.update(min(len(existing), episodes))
            report.tasks.append(task_report)
            start = time.perf_counter()
            try:
                for attempt in range(max_attempts):
                    if task_report.kept >= episodes:
                        break
                    if attempt in done_attempts:
                        continue
                    reset_seed, rng = attempt_seeds(seed, task, attempt)
                    metadata = {"seed": seed, "attempt": attempt, "reset_seed": reset_seed,
                                "expert": f"{family}-scripted", "action_noise": action_noise,
                                "variation": variation, "variation_seed": variation_seed}
                    builder = EpisodeBuilder(env.task_spec, source="script", round=round, metadata=metadata)
                    success, _, episode = run_episode(env, act, reset_seed, builder, action_noise, rng)
                    task_report.steps += episode.n_steps
                    task_report.successes += int(success)
                    task_report.failures += int(not success)
                    if success or keep_failures:
                        store.write(episode)
                        task_report.kept += 1
                        bar.update(1)
                    bar.set_postfix(task=task, failed=report.failures)
            finally:
                task_report.seconds = time.perf_counter() - start
                env.close()
    finally:
        bar.close()
    return report
