"""Closed-loop evaluation of a policy in simulation: success rate per task, optionally recording the rollouts.

Each episode resets a simulated env with its own seed (by default from ``EVAL_SEED_START`` on, far from the seeds
expert demos are recorded with, so evaluation layouts are not training layouts), then feeds every observation to
`VLAPolicy.act` until the env terminates (success) or truncates (time limit). Recorded rollouts are ordinary
episodes (source ``rl``, metadata with the policy's checkpoint id and the seed): iRe-VLA keeps the successful ones
as D_RL.

`evaluate_checkpoint` evaluates a saved policy on several tasks, in worker processes (one CPU core each) or in this
one: the seeds of every task are cut into batches of ``parallel_envs``, each process loads the policy from the
checkpoint itself and runs one batch at a time (its episodes side by side, one batched policy call per step), and
the results are merged in seed order. A batch's episodes depend only on its seeds, so the number of workers does
not change them. Each worker holds ``parallel_envs`` envs (a 64 px Meta-World env with its renderer: ~150 MB).
"""

from __future__ import annotations

import os
import threading
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
MAX_AUTO_WORKERS = 4  # each worker holds its own copy of the policy
# `workers="auto"` starts worker processes only for evaluations of at least this many env steps (episodes x time
# limit): a worker costs a few seconds to start (imports, loading the checkpoint), which a short evaluation never
# makes up.
AUTO_WORKERS_MIN_STEPS = 4000

# (task index, seed, success, steps) of each finished episode, as it finishes.
EpisodeCallback = Callable[[int, int, bool, int], None]


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
                    make_env: Callable[[str], Any] | None = None,
                    on_episode: EpisodeCallback | None = None) -> EvaluationReport:
    """Success rate of `policy` on each task over `episodes` seeded episodes (seeds ``seed .. seed + episodes - 1``).

    `image_size` defaults to the size of the policy's training images; cameras are the policy's. With
    `parallel_envs` > 1 that many envs of a task run side by side and one `act_batch` call serves all their current
    observations (the per-call overhead of a small network dominates on a CPU); every episode still has its own
    seed and env, so the episodes are the same ones, only batched.

    `make_env(task)` builds the env of a task instead of the simulated `family` (`variation` is then only recorded
    in the metadata): `irevla iterate` evaluates on the robot this way. Any contract env works (reset(seed=...),
    step, task_spec, close, ``info["success"]``).

    `progress` gets a line per finished episode; `on_episode(task index, seed, success, steps)` the same as values.
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
    for index, task in enumerate(tasks):
        envs = [make_env(task) for _ in range(min(parallel_envs, episodes))]
        metadata = {"policy": policy.checkpoint_id or "", "variation": variation, "variation_seed": variation_seed}
        ended = None if on_episode is None else (
            lambda seed, success, steps, index=index: on_episode(index, seed, success, steps))
        try:
            report.tasks.append(_evaluate_task(policy, task, envs, list(range(seed, seed + episodes)), store,
                                               metadata, progress, ended))
        finally:
            for env in envs:
                env.close()
    return report


def _evaluate_task(policy: VLAPolicy, task: str, envs: list, seeds: list[int], store: EpisodeStore | None,
                   metadata: dict, progress: Callable[[str], None] | None,
                   on_episode: Callable[[int, bool, int], None] | None = None) -> TaskEvaluation:
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
            if on_episode is not None:
                on_episode(stepper.seed, success, steps)
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


# ------------------------------------------------------------------------------- a checkpoint, in worker processes
@dataclass(frozen=True)
class EvalTask:
    """A task of `evaluate_checkpoint`: a simulated task and its variation (plain values: a worker builds the envs)."""

    task: str
    variation: str = ""
    variation_seed: int = 0


def available_cores() -> int:
    """CPU cores this process may run on (its affinity, where the OS says)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def resolve_workers(workers: int | str, tasks: int, episodes: int, max_episode_steps: int | None) -> int:
    """Worker processes an evaluation of `tasks` x `episodes` uses: `workers`, or for ``"auto"`` one per available
    core (at most `MAX_AUTO_WORKERS`) when it runs at least `AUTO_WORKERS_MIN_STEPS` env steps; never more than
    it has episodes (`evaluate_checkpoint` starts no more than it has batches). 1: in this process."""
    if workers == "auto":
        steps = tasks * episodes * (max_episode_steps or 500)  # the time limit: an upper bound of the work
        workers = min(available_cores(), MAX_AUTO_WORKERS) if steps >= AUTO_WORKERS_MIN_STEPS else 1
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ValueError(f"workers: expected an integer >= 1 or 'auto', got {workers!r}")
    return max(1, min(workers, tasks * episodes))


def evaluate_checkpoint(checkpoint: str | Path, tasks: Sequence[EvalTask], episodes: int = 10, *,
                        family: str = "metaworld", seed: int = EVAL_SEED_START, image_size: int | None = None,
                        max_episode_steps: int | None = None, parallel_envs: int = 1, workers: int | str = 1,
                        threads: int = 1, record_dir: str | Path | None = None,
                        on_episode: EpisodeCallback | None = None) -> EvaluationReport:
    """Success rate of the policy saved at `checkpoint` on each of `tasks` (seeds ``seed .. seed + episodes - 1``),
    one `TaskEvaluation` per task in the order given.

    The seeds of each task are cut into batches of `parallel_envs`; a batch's episodes run side by side in its own
    envs with one batched policy call per step (no refill: the batch shrinks as its episodes end). `workers`
    (`resolve_workers`) processes take the batches, all tasks in one pool, until none is left; with 1 they run in
    this process. Every process loads the checkpoint itself and runs `threads` torch threads. A batch's episodes
    depend only on its seeds, so the results are the same for any number of workers (bit for bit where the
    processes run the same torch); they are merged in seed order. `on_episode(task index, seed, success, steps)` is
    called here as episodes end, in whichever order they end.
    """
    if parallel_envs < 1:
        raise ValueError(f"evaluate_checkpoint: parallel_envs must be >= 1, got {parallel_envs}")
    tasks = list(tasks)
    settings = _BatchSettings(checkpoint=str(checkpoint), family=family, image_size=image_size,
                              max_episode_steps=max_episode_steps, threads=threads,
                              record_dir=None if record_dir is None else str(record_dir))
    seeds = list(range(seed, seed + episodes))
    # Task after task, so a process mostly keeps its envs for its next batch (it rebuilds them for another task).
    batches = [(index, seeds[start:start + parallel_envs]) for index in range(len(tasks))
               for start in range(0, episodes, parallel_envs)]
    count = min(resolve_workers(workers, len(tasks), episodes, max_episode_steps), len(batches))
    results: list[dict[int, tuple[bool, int]]] = [{} for _ in tasks]
    seconds = [0.0] * len(tasks)
    if count == 1:
        runner = _BatchRunner(settings, on_episode)
        try:
            for index, batch in batches:
                outcomes, batch_seconds = runner.run(tasks[index], index, batch)
                results[index].update(outcomes)
                seconds[index] += batch_seconds
        finally:
            runner.close()
    else:
        _run_in_workers(settings, count, tasks, batches, results, seconds, on_episode)
    report = EvaluationReport()
    for index, task in enumerate(tasks):
        result = TaskEvaluation(task=task.task, seconds=seconds[index])
        for episode_seed in sorted(results[index]):
            success, steps = results[index][episode_seed]
            result.episodes += 1
            result.successes += int(success)
            result.steps += steps
            result.seeds.append(episode_seed)
            result.outcomes.append(success)
        report.tasks.append(result)
    return report


@dataclass(frozen=True)
class _BatchSettings:
    checkpoint: str
    family: str
    image_size: int | None
    max_episode_steps: int | None
    threads: int
    record_dir: str | None


class _BatchRunner:
    """Runs batches of episodes of a checkpoint in this process: the policy (loaded at the first batch) and the envs
    of the task it ran last. A worker process holds one; `evaluate_checkpoint` with one worker its own."""

    def __init__(self, settings: _BatchSettings, on_episode: EpisodeCallback | None) -> None:
        self.settings, self.on_episode = settings, on_episode
        self.policy: VLAPolicy | None = None
        self.task: EvalTask | None = None
        self.envs: list = []

    def run(self, task: EvalTask, index: int, seeds: list[int]) -> tuple[dict[int, tuple[bool, int]], float]:
        """The episodes of `seeds` side by side; returns ({seed: (success, steps)}, seconds)."""
        import torch

        from irevla.policy.checkpoint import load_policy
        from irevla.sim.registry import make_env_by_name

        settings = self.settings
        torch.set_num_threads(settings.threads)
        if self.policy is None:
            self.policy = load_policy(settings.checkpoint)
        policy = self.policy
        if self.task != task:
            self.close()
            self.task = task
        image_size = settings.image_size or policy.observation_spec.cameras[policy.cameras[0]][0]
        while len(self.envs) < len(seeds):
            self.envs.append(make_env_by_name(
                settings.family, task.task, cameras=policy.cameras, image_size=image_size,
                max_episode_steps=settings.max_episode_steps, variation=task.variation,
                variation_seed=task.variation_seed))
        store = EpisodeStore(settings.record_dir) if settings.record_dir is not None else None
        metadata = {"policy": policy.checkpoint_id or "", "variation": task.variation,
                    "variation_seed": task.variation_seed}
        outcomes: dict[int, tuple[bool, int]] = {}

        def ended(seed: int, success: bool, steps: int) -> None:
            outcomes[seed] = (success, steps)
            if self.on_episode is not None:
                self.on_episode(index, seed, success, steps)

        # As many envs as seeds: each env runs one episode, so no episode waits for another's env to be free.
        result = _evaluate_task(policy, task.task, self.envs[:len(seeds)], seeds, store, metadata, None, ended)
        return outcomes, result.seconds

    def close(self) -> None:
        envs, self.envs, self.task = self.envs, [], None
        for env in envs:
            env.close()


def _run_in_workers(settings: _BatchSettings, workers: int, tasks: list[EvalTask], batches: list,
                    results: list[dict], seconds: list[float], on_episode: EpisodeCallback | None) -> None:
    """The batches in `workers` spawned processes; fills `results` and `seconds` per task."""
    import multiprocessing
    import queue
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    from irevla.policy.checkpoint import read_manifest

    read_manifest(settings.checkpoint, verify=False)  # a missing or unreadable checkpoint: its error here
    # spawn: a fresh interpreter per worker (forking a process that has run torch's thread pools is not safe).
    context = multiprocessing.get_context("spawn")
    events = context.Queue()

    def report_events() -> None:
        while True:
            try:
                event = events.get_nowait()
            except queue.Empty:
                return
            if on_episode is not None:
                on_episode(*event)

    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_worker_start,
                               initargs=(settings, events, os.getpid()))
    try:
        pending = {pool.submit(_worker_batch, tasks[index], index, batch): index for index, batch in batches}
        while pending:
            done, _ = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            report_events()
            for future in done:
                index = pending.pop(future)
                try:
                    outcomes, batch_seconds = future.result()
                except BrokenProcessPool:
                    raise RuntimeError(
                        f"evaluation of {settings.checkpoint}: a worker process exited (its error, if any, is above): "
                        f"killed, out of memory, or started from a Python script without 'if __name__ == "
                        f"\"__main__\":' (spawned workers import the main script); eval.workers: 1 evaluates in this "
                        f"process") from None
                results[index].update(outcomes)
                seconds[index] += batch_seconds
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    report_events()  # the last episodes' events may arrive after their batch's result


# The worker process's runner (`_worker_start`).
_worker: dict[str, _BatchRunner] = {}


def _worker_start(settings: _BatchSettings, events, parent: int) -> None:
    from multiprocessing.util import Finalize

    runner = _BatchRunner(settings, lambda *event: events.put(event))
    _worker["runner"] = runner
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    # The envs close when the worker's task loop ends, before the interpreter's atexit handlers (one of them
    # terminates MuJoCo's EGL display, and a renderer closed after it raises).
    Finalize(None, runner.close, exitpriority=10)


def _exit_with_parent(parent: int) -> None:
    """A worker of an evaluating process that was killed (kill -9 of the loop) would wait for work forever."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def _worker_batch(task: EvalTask, index: int, seeds: list[int]) -> tuple[dict[int, tuple[bool, int]], float]:
    return _worker["runner"].run(task, index, seeds)
