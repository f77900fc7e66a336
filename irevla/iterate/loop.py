"""`irevla iterate`: the iRe-VLA loop (Algorithm 1), resumable at any moment.

Stages, in order, each with its own directory under ``run_dir``::

    demos        record expert demos D_e (sim; skipped when expert_data / init is given; never on the robot)
    sft          stage 0: supervised fine-tuning on D_e                       -> sft/policy
    eval-0       evaluate expert / RL / unseen task groups                    -> eval-0.json
    rl-K         stage 1 on RL task K: VLM frozen, head trained online by the learner process; successful
                 trajectories recorded into d_rl/ (episode store, source=rl)  -> rl-K/policy
    stage2-K     stage 2: SFT of the whole model (LoRA + head) on D_e + D_RL   -> stage2-K/policy
    eval-K       evaluate the three groups again                              -> eval-K.json

``run_dir/state.json`` records each finished stage (written atomically after the stage's outputs), so a kill -9 at
any moment followed by the same command redoes only the unfinished stage: SFT continues from its last checkpoint,
RL from the learner's last snapshot and the actor's progress file, evaluation from scratch. Episodes already written
(D_e, D_RL) are never rewritten or lost. After every evaluation the report (report.md, report.json, report.png) is
rebuilt from the finished stages.

Metrics (`irevla.metrics_log`; ``logging`` in the config): every long stage writes ``metrics.jsonl`` and TensorBoard
events (``tensorboard/``) into its own directory, and with ``logging.wandb.enabled`` one wandb run per directory::

    sft/, stage2-K/     SFT: loss, lr, head_lr, grad_norm, samples_per_s, val_loss (step: optimiser step)
    rl-K/               the actor, one record per episode (step: env steps so far): episode/success, episode/return,
                        episode/steps, rolling_success, ...; rl/final_success after the final rollouts
    rl-K/learner/       the learner process (step: updates): losses, alpha, Q values, updates_per_s, counters
    eval/               after each evaluation (step: K of eval-K): success/<group>/<task> and success/<group>

`tensorboard --logdir run_dir` shows them all.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from irevla.atomic_io import atomic_write_text
from irevla.config import dump_config
from irevla.errors import UserError
from irevla.iterate.config import IterateConfig, TaskRef
from irevla.metrics_log import MetricsLog, check_wandb

Log = Callable[[str], None]
STATE_FILE = "state.json"
# progress_factory(name, total) -> a bar with update(info) and close(); info: "done" (of total), "unit" and
# "postfix" (a dict to show), plus stage 1's own keys (episodes, env_steps, rolling, ...). The first update, right
# when the bar is made, also has "initial": what a resumed stage had done before. `irevla iterate` makes tqdm bars
# (irevla.iterate.cli.StageBar); every stage that runs for more than a few seconds reports to one.
ProgressFactory = Callable[[str, int], Any]


class _NoBar:
    def update(self, info: dict) -> None:
        pass

    def close(self) -> None:
        pass


def _bar(progress_factory: ProgressFactory | None, name: str, total: int, unit: str, initial: int = 0):
    if progress_factory is None:
        return _NoBar()
    bar = progress_factory(name, total)
    bar.update({"done": initial, "initial": initial, "unit": unit, "postfix": {}})
    return bar


class LoopError(UserError, RuntimeError):
    """A stage failed in a way the user must look at (the message names the stage and the file)."""


# -------------------------------------------------------------------------------------------------- run state
class RunState:
    """Finished stages of a run, persisted in ``run_dir/state.json`` (atomic rewrite after every stage)."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / STATE_FILE
        self.data: dict[str, Any] = {"stages": {}}
        if self.path.is_file():
            try:
                self.data = json.loads(self.path.read_text())
            except json.JSONDecodeError as exc:
                raise LoopError(f"{self.path}: not valid JSON ({exc}); it is only ever replaced atomically, so it "
                                f"was edited by hand: fix or delete it") from None

    def done(self, stage: str) -> bool:
        return stage in self.data["stages"]

    def output(self, stage: str) -> dict[str, Any]:
        return self.data["stages"][stage]

    def finish(self, stage: str, seconds: float, **outputs: Any) -> None:
        self.data["stages"][stage] = {"seconds": round(seconds, 1), "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                      **outputs}
        atomic_write_text(self.path, json.dumps(self.data, indent=1))

    @property
    def finished(self) -> list[str]:
        return list(self.data["stages"])


def stage_names(config: IterateConfig) -> list[str]:
    names = []
    if config.init is None:
        if config.demos is not None:
            names.append("demos")
        names.append("sft")
    names.append("eval-0")
    for k in range(1, len(config.rl_tasks) + 1):
        names.append(f"rl-{k}")
        if not config.stage2.skip:
            names.append(f"stage2-{k}")
        names.append(f"eval-{k}")
    return names


# ------------------------------------------------------------------------------------------------------ stages
def _expert_dirs(config: IterateConfig, run_dir: Path) -> list[str]:
    return config.expert_dirs(run_dir)


def stage_demos(config: IterateConfig, run_dir: Path, log: Log) -> dict:
    from irevla.sim.demos import collect_expert_demos

    demos = config.demos
    report = collect_expert_demos(demos.tasks, demos.episodes, run_dir / "expert", family=demos.family,
                                  image_size=demos.render.image_size, cameras=demos.render.cameras,
                                  fast=demos.render.fast, seed=demos.seed, keep_failures=False,
                                  action_noise=demos.action_noise, max_attempts_factor=demos.max_attempts_factor,
                                  resume=True, max_episode_steps=config.eval.max_episode_steps)
    log(report.format())
    short = [t.task for t in report.tasks if t.kept < demos.episodes]
    if short:
        raise LoopError(f"demos: the scripted expert did not reach {demos.episodes} successes on {short}")
    return {"dir": str(run_dir / "expert"), "episodes": report.kept}


def _checkpoint_step(out: Path) -> int:
    """The step an interrupted SFT run in `out` resumes from (0: it starts fresh)."""
    trainer = out / "last" / "trainer.json"
    return int(json.loads(trainer.read_text()).get("step", 0)) if trainer.is_file() else 0


def _sft_progress(bar) -> Callable[[dict], None]:
    """run_sft's per-step progress, as the loop's bar info."""
    def update(info: dict) -> None:
        loss = info.get("loss")
        bar.update({"done": info["step"], "unit": "step",
                    "postfix": {"loss": f"{loss:.4f}"} if loss is not None else {}})
    return update


def stage_sft(config: IterateConfig, run_dir: Path, log: Log, progress_factory: ProgressFactory | None = None
              ) -> dict:
    from irevla.policy.sft import run_sft

    out = run_dir / "sft"
    sft = config.stage0_sft(run_dir)  # typed: sft_config + sft_overrides + D_e, out, threads
    resumed_from = _checkpoint_step(out)
    if resumed_from:
        log(f"stage 0 resumes from step {resumed_from}")
    bar = _bar(progress_factory, "sft", sft.train.steps, "step", resumed_from)
    try:
        result = run_sft(sft, resume=resumed_from > 0, log=log, progress=_sft_progress(bar))
    finally:
        bar.close()
    return {"policy": str(out / "policy"), "val_loss": result.val_loss, "resumed_from_step": resumed_from}


def stage_eval(config: IterateConfig, policy_path: str, log: Log, progress_factory: ProgressFactory | None = None,
               name: str = "eval") -> dict:
    """Success of the policy on every task of the three groups.

    Simulated families: `evaluate_checkpoint`, all tasks in one pool of ``eval.workers`` processes (or in this one);
    the robot: task after task in this process, on the env `make_task_env` builds."""
    groups = {"expert": config.expert_group, "rl": config.rl_tasks, "unseen": config.unseen_tasks}
    refs = [(group, ref) for group, tasks in groups.items() for ref in tasks]
    bar = _bar(progress_factory, name, len(refs) * config.eval.episodes, "ep")
    ended = {"episodes": 0, "successes": 0}

    def on_episode(index: int, seed: int, success: bool, steps: int) -> None:
        ended["episodes"] += 1
        ended["successes"] += int(success)
        bar.update({"done": ended["episodes"], "unit": "ep", "postfix": {"successes": ended["successes"]}})

    try:
        if config.family == "robot":
            tasks = _evaluate_on_robot(config, policy_path, [ref for _, ref in refs], log, on_episode)
        else:
            from irevla.policy.rollout import EvalTask, evaluate_checkpoint

            report = evaluate_checkpoint(
                policy_path, [EvalTask(ref.task, ref.variation, ref.variation_seed) for _, ref in refs],
                episodes=config.eval.episodes, family=config.family, seed=config.eval.seed,
                max_episode_steps=config.eval.max_episode_steps, parallel_envs=config.eval.parallel_envs,
                workers=config.eval.workers, threads=config.threads, on_episode=on_episode)
            tasks = report.tasks
    finally:
        bar.close()
    results: dict[str, dict] = {group: {} for group in groups}
    for (group, ref), task in zip(refs, tasks, strict=True):
        results[group][ref.label] = {"successes": task.successes, "episodes": task.episodes,
                                     "rate": task.success_rate, "seconds": round(task.seconds, 1)}
        log(f"  {group:7s} {ref.label:40s} {task.successes:3d}/{task.episodes}")
    return {"policy": policy_path, "groups": results}


def _evaluate_on_robot(config: IterateConfig, policy_path: str, refs: list[TaskRef], log: Log, on_episode) -> list:
    """The robot's evaluation: one env, task after task, in this process."""
    import torch

    from irevla.iterate.envs import make_task_env
    from irevla.policy.checkpoint import load_policy
    from irevla.policy.rollout import evaluate_policy

    torch.set_num_threads(config.threads)
    policy = load_policy(policy_path)
    image_size = policy.observation_spec.cameras[policy.cameras[0]][0]
    log("  robot: episode seeds only label the episodes; the start is the home pose and whatever scene is set up")
    tasks = []
    for index, ref in enumerate(refs):
        def make_env(task: str, ref: TaskRef = ref):
            return make_task_env(config, ref, cameras=policy.cameras, image_size=image_size,
                                 max_episode_steps=config.eval.max_episode_steps)

        report = evaluate_policy(policy, [ref.task], episodes=config.eval.episodes, family=config.family,
                                 seed=config.eval.seed, max_episode_steps=config.eval.max_episode_steps,
                                 variation=ref.variation, variation_seed=ref.variation_seed,
                                 parallel_envs=config.eval.parallel_envs, make_env=make_env,
                                 on_episode=lambda _, *ended, index=index: on_episode(index, *ended))
        tasks += report.tasks
    return tasks


def stage_stage2(config: IterateConfig, run_dir: Path, k: int, policy_path: str, log: Log,
                 progress_factory: ProgressFactory | None = None) -> dict:
    from irevla.policy.checkpoint import read_manifest

    out = run_dir / f"stage2-{k}"
    stage2 = config.stage2
    training = config.stage2_training
    sft = config.stage2_sft(k, policy_path, run_dir)  # typed: sft_config + overrides + D_e + D_RL, the policy
    sft, note = _without_empty_d_rl_weighting(sft)
    if note:
        log(f"stage2-{k}: {note}")
    if stage2.command is None:
        from irevla.policy.sft import run_sft

        resumed_from = _checkpoint_step(out)
        bar = _bar(progress_factory, f"stage2-{k}", sft.train.steps, "step", resumed_from)
        try:
            result = run_sft(sft, resume=resumed_from > 0, log=log, progress=_sft_progress(bar))
        finally:
            bar.close()
        return {"policy": str(out / "policy"), "val_loss": result.val_loss, "backbone_training": training,
                "resumed_from_step": resumed_from, **({"note": note} if note else {})}
    # Dispatched elsewhere: the other process needs the settings as a file (`irevla sft --config {config}`).
    out.mkdir(parents=True, exist_ok=True)
    config_path = out / "stage2.yaml"
    if not config_path.exists():
        dump_config(sft, config_path)
    command = stage2.command.format(config=shlex.quote(str(config_path)), out=shlex.quote(str(out)),
                                    run_dir=shlex.quote(str(run_dir)), python=shlex.quote(sys.executable))
    log(f"stage 2 dispatched: {command}")
    started = time.monotonic()
    completed = subprocess.run(command, shell=True, timeout=stage2.command_timeout_s)  # noqa: S602 (user's template)
    if completed.returncode != 0:
        raise LoopError(f"stage2-{k}: the command exited with {completed.returncode}: {command}")
    try:
        manifest = read_manifest(out / "policy")  # verifies every file's hash: a half-copied result is refused
    except Exception as exc:  # noqa: BLE001 -- report whatever went wrong with the remote result
        raise LoopError(f"stage2-{k}: {out / 'policy'}: the dispatched run left no valid checkpoint: {exc}") from None
    log(f"stage 2 finished remotely in {time.monotonic() - started:.0f} s (checkpoint {manifest['checkpoint_id']})")
    return {"policy": str(out / "policy"), "backbone_training": training, "dispatched": True}


def _without_empty_d_rl_weighting(sft):
    """Stage 2's settings, without ``data.expert_fraction`` when D_RL has no training episode (stage 1 found no
    success, or its few went to the validation split): the weighted draw needs both sides, and consolidating on D_e
    alone is then what stage 2 can do. Returns (settings, a note for the log or None)."""
    from irevla.policy.sft import load_episodes

    data = sft.data
    if data.expert_fraction is None:
        return sft, None
    try:
        train, _ = load_episodes(sft)
    except Exception:  # noqa: BLE001 -- no readable episodes: run_sft reports that itself, naming the directories
        return sft, None
    expert_dir = Path(data.dirs[0]).resolve()
    d_rl = [info for info in train if Path(info.path).resolve().parent != expert_dir]
    if d_rl:
        return sft, None
    note = (f"D_RL ({', '.join(map(str, data.dirs[1:]))}) has no training episode, so data.expert_fraction "
            f"{data.expert_fraction} is dropped: stage 2 trains on D_e alone")
    return sft.model_copy(update={"data": data.model_copy(update={"expert_fraction": None})}), note


# ---------------------------------------------------------------------------------------------------- stage 1
def _learner_command(stage_dir: Path, config: IterateConfig) -> list[str]:
    return [sys.executable, "-m", "irevla", "learner", "serve", "--init", str(stage_dir / "learner_init"),
            "--out", str(stage_dir / "learner"), "--bind", "tcp://127.0.0.1:0",
            "--address-file", str(stage_dir / "learner.address"), "--threads", str(config.rl.learner_threads),
            "--exit-with-parent", "--logging", str(stage_dir / "logging.yaml")]


def _write_learner_logging(stage_dir: Path, config: IterateConfig, run_dir: Path) -> None:
    """The learner process's metrics settings (``--logging``): the loop's, its wandb run named <run>/rl-K/learner."""
    logging = config.logging
    if logging.wandb.enabled:
        logging = logging.model_copy(update={"wandb": config.stage_wandb(f"{stage_dir.name}/learner", run_dir)})
    atomic_write_text(stage_dir / "logging.yaml", _dump(logging))


def stage_metrics(config: IterateConfig, run_dir: Path, directory: str, resume_step: int | None,
                  job_type: str) -> MetricsLog:
    """The `MetricsLog` of one of the loop's own stage directories (run_dir/rl-K, run_dir/eval)."""
    return MetricsLog(run_dir / directory, resume_step=resume_step, tensorboard=config.logging.tensorboard,
                      wandb=config.stage_wandb(directory, run_dir), job_type=job_type,
                      config=config.model_dump(mode="json"))


def log_evaluation(config: IterateConfig, run_dir: Path, k: int, outputs: dict) -> None:
    """eval-K's success rates into run_dir/eval (step K): per task and per group (mean over the group's tasks).
    A rerun of eval-K replaces its record (the directory resumes from K - 1)."""
    record: dict[str, Any] = {"step": k, "stage": f"eval-{k}"}
    for group, tasks in outputs["groups"].items():
        rates = [task["rate"] for task in tasks.values()]
        for label, task in tasks.items():
            record[f"success/{group}/{label}"] = task["rate"]
        if rates:
            record[f"success/{group}"] = sum(rates) / len(rates)
    with stage_metrics(config, run_dir, "eval", k - 1 if k > 0 else None, "eval") as metrics:
        metrics.write(record)


def _start_learner(stage_dir: Path, config: IterateConfig, token_file: Path, log: Log) -> tuple[subprocess.Popen, str]:
    address_file = stage_dir / "learner.address"
    address_file.unlink(missing_ok=True)
    env = {**os.environ, "IREVLA_LEARNER_TOKEN_FILE": str(token_file), "JAX_PLATFORMS": os.environ.get(
        "JAX_PLATFORMS", "cpu")}
    _write_learner_logging(stage_dir, config, stage_dir.parent)
    log_file = open(stage_dir / "learner.log", "ab")  # noqa: SIM115 -- handed to the child process
    process = subprocess.Popen(_learner_command(stage_dir, config), env=env, stdout=log_file,
                               stderr=subprocess.STDOUT)
    log_file.close()
    deadline = time.monotonic() + 300
    while not address_file.is_file():
        if process.poll() is not None:
            raise LoopError(f"the learner process exited with {process.returncode} before listening; see "
                            f"{stage_dir / 'learner.log'}")
        if time.monotonic() > deadline:
            process.kill()
            raise LoopError(f"the learner did not start within 300 s; see {stage_dir / 'learner.log'}")
        time.sleep(0.1)
    address = address_file.read_text().strip()
    log(f"learner process {process.pid} listening on {address} (log: {stage_dir / 'learner.log'})")
    return process, address


def _stop_learner(process: subprocess.Popen, log: Log, timeout_s: float = 300) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)  # the learner snapshots and writes its final head, then exits
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise LoopError("the learner did not exit within its time limit after SIGTERM") from None
    if process.returncode != 0:
        raise LoopError(f"the learner process exited with status {process.returncode}")
    log("learner stopped")


def _write_learner_init(stage_dir: Path, config: IterateConfig, policy, ref: TaskRef, run_dir: Path,
                        log: Log, progress: bool = False) -> None:
    """What the learner process starts from: head spec, actor head, learner settings and the demo buffer
    (`irevla.iterate.handoff.write_learner_init`, which `irevla learner init` also runs)."""
    import torch

    from irevla.iterate.handoff import is_complete_init, write_learner_init

    init = stage_dir / "learner_init"
    if is_complete_init(init):
        return
    rl = config.rl
    # A run that starts from `init` without expert_data has no D_e: the demo buffer is then the VLA's own rollouts.
    expert_dirs = _expert_dirs(config, run_dir) if rl.expert_demos else []
    write_learner_init(init, policy, latent=rl.latent, algorithm=rl.algorithm, learner=rl.learner, ppo=rl.ppo,
                       demo_dirs=expert_dirs or None, task=ref.task, log=log, progress=progress)
    torch.set_num_threads(config.threads)


def _rl_progress(bar) -> Callable[[dict], None]:
    """Stage 1's progress after an episode (episodes, env_steps, budget, rolling, collecting, successes, elapsed), as
    the loop's bar info."""
    def update(info: dict) -> None:
        bar.update({**info, "done": info["env_steps"], "unit": "step", "postfix": {
            "episodes": info["episodes"], "successes": info["successes"], "rolling": f"{info['rolling']:.2f}",
            "phase": "demo rollouts" if info["collecting"] else "exploring"}})
    return update


def stage_rl(config: IterateConfig, run_dir: Path, k: int, policy_path: str, log: Log,
             progress: Callable[[dict], None] | None = None, progress_factory: ProgressFactory | None = None) -> dict:
    """Stage 1 on RL task k: the actor (this process) runs episodes, the learner (a child process) trains.

    The actor's metrics go to rl-K (one record per episode, step: env steps so far); a resumed stage drops the
    records past the env steps actor.json counts. `progress` gets the actor's progress after every episode;
    `progress_factory` makes bars: the demos' encoding, env steps (unless `progress` is given), final rollouts."""
    progress_file = run_dir / f"rl-{k}" / "actor.json"
    resume_step = json.loads(progress_file.read_text())["env_steps"] if progress_file.is_file() else None
    if config.rl.trains == "whole":  # the paper's PPO baselines: the whole VLA, in this process
        from irevla.iterate.whole_ppo import LAST, stage_rl_whole

        trainer = run_dir / f"rl-{k}" / LAST / "trainer.json"
        resume_step = json.loads(trainer.read_text())["env_steps"] if trainer.is_file() else None
        bar = _bar(progress_factory if progress is None else None, f"rl-{k}", config.rl.max_env_steps, "step",
                   resume_step or 0)
        try:
            with stage_metrics(config, run_dir, f"rl-{k}", resume_step, "rl-whole-ppo") as metrics:
                return stage_rl_whole(config, run_dir, k, policy_path, log, progress or _rl_progress(bar), metrics)
        finally:
            bar.close()
    with stage_metrics(config, run_dir, f"rl-{k}", resume_step, "rl-actor") as metrics:
        return _stage_rl(config, run_dir, k, policy_path, log, progress, metrics, progress_factory)


def _stage_rl(config: IterateConfig, run_dir: Path, k: int, policy_path: str, log: Log,
              progress: Callable[[dict], None] | None, metrics: MetricsLog,
              progress_factory: ProgressFactory | None = None) -> dict:
    import numpy as np
    import torch

    from irevla.data.episode import EpisodeBuilder
    from irevla.data.store import EpisodeStore
    from irevla.iterate.actor import DetectorDecides, run_rl_episode
    from irevla.iterate.cycle import CycleEnv, EpisodeCycle, recorded_episode
    from irevla.iterate.envs import make_task_env
    from irevla.iterate.handoff import merge_head_file
    from irevla.policy.checkpoint import load_policy, save_policy
    from irevla.policy.latent_actor import LatentActor
    from irevla.transport.actor_side import ZmqLearnerLink

    ref = config.rl_tasks[k - 1]
    rl = config.rl
    stage_dir = run_dir / f"rl-{k}"
    stage_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(config.threads)
    policy = load_policy(policy_path)
    _write_learner_init(stage_dir, config, policy, ref, run_dir, log, progress=progress_factory is not None)
    token_file = stage_dir / "learner.token"
    if not token_file.is_file():
        token_file.touch(mode=0o600)
        token_file.write_text(secrets.token_hex(32))
    progress_file = stage_dir / "actor.json"
    state = json.loads(progress_file.read_text()) if progress_file.is_file() else {
        "episodes": 0, "env_steps": 0, "successes": 0, "demo_successes": 0, "demo_attempts": 0, "history": []}
    d_rl = EpisodeStore(run_dir / "d_rl")
    image_size = policy.observation_spec.cameras[policy.cameras[0]][0]
    reward = _reward_source(config, policy_path, log)
    # A success written to D_RL just before a kill, not yet counted in actor.json: counted now, not run again.
    adopt = recorded_episode(d_rl, f"rl-{k}", state["episodes"]) if progress_file.is_file() else None
    cycle = EpisodeCycle(rl.cycle, stage_dir, log)  # reset hook, time limit, pauses (a leftover pause resumes)
    env = CycleEnv(make_task_env(config, ref, cameras=policy.cameras, image_size=image_size,
                                 max_episode_steps=rl.max_episode_steps), cycle)
    if reward.needs_features:
        env = DetectorDecides(env)
    process, address = _start_learner(stage_dir, config, token_file, log)
    actor_id = f"{'robot' if config.family == 'robot' else 'sim'}-{k}"
    link = ZmqLearnerLink(address, token_file.read_text().strip(), actor_id=actor_id)

    def renew_link(fault) -> None:
        """A fault mid-episode leaves half an episode in the link (it sends whole episodes): a new link drops it."""
        nonlocal link
        if fault.phase == "episode":
            link.flush(timeout_s=120)
            link.close()
            link = ZmqLearnerLink(address, token_file.read_text().strip(), actor_id=actor_id)
    actor = LatentActor(policy, rl.latent, seed=rl.seed + state["episodes"],
                        initial_log_std=rl.learner.sac.initial_log_std, noise_beta=rl.noise_beta,
                        noise_horizon=max(2, env.task_spec.max_episode_steps))
    started = time.monotonic()
    finished = False
    bar = _bar(progress_factory if progress is None else None, f"rl-{k}", rl.max_env_steps, "step",
               state["env_steps"])
    try:
        while True:
            history = state["history"]
            collecting = (state["demo_successes"] < rl.demo_rollouts
                          and state["demo_attempts"] < rl.demo_rollout_attempts)
            exploring = [h["success"] for h in history if h["explore"]][-rl.plateau_window:]
            rolling = float(np.mean(exploring)) if exploring else 0.0
            if not collecting and (state["env_steps"] >= rl.max_env_steps or (
                    len(exploring) >= rl.plateau_window and rolling >= rl.plateau_success)):
                break
            episode_index = state["episodes"]
            seed = 10_000 * (rl.seed + 1) + episode_index
            if adopt is not None:
                log(f"rl-{k}: episode {episode_index} was written to {adopt.path} before the last stop but not "
                    f"counted: counted now")
                success, steps, label, episode_return = True, adopt.n_steps, _adopted_record(adopt), 1.0
                adopt = None
            else:
                def attempt(episode_index: int = episode_index, seed: int = seed, collecting: bool = collecting):
                    builder = EpisodeBuilder(env.task_spec, source="rl", round=k, metadata={
                        "task": ref.task, "variation": ref.variation, "variation_seed": ref.variation_seed,
                        "stage": f"rl-{k}", "episode": episode_index, "explore": not collecting})
                    # While collecting the demo rollouts the actor keeps the starting head: they are the current
                    # VLA's successes (the paper's 20), not a mix of whatever heads the learner published meanwhile.
                    return run_rl_episode(env, actor, link, episode_index, seed, explore=not collecting,
                                          builder=builder, follow_learner=not collecting, reward=reward)

                verdict, steps, episode = cycle.run_episode(episode_index, attempt, on_fault=renew_link)
                success, label, episode_return = verdict.success, _verdict_record(verdict, episode), \
                    float(episode.rewards.sum())
                if success:
                    d_rl.write(episode)  # D_RL: every success of stage 1, kept for stage 2
            state["episodes"] += 1
            state["env_steps"] += steps
            state["successes"] += int(success)
            if collecting:
                state["demo_attempts"] += 1
                state["demo_successes"] += int(success)
            history.append({"episode": episode_index, "success": bool(success), "steps": steps,
                            "explore": not collecting, "env_steps": state["env_steps"],
                            "interventions": 0,  # the loop's actor has no teleop: every action is the policy's
                            "head_version": actor.version, **label})
            # The record before the progress file: a resumed stage drops records past actor.json's env steps, so
            # every counted episode has exactly one.
            exploring = [h["success"] for h in history if h["explore"]][-rl.plateau_window:]
            metrics.write({"step": state["env_steps"], "episode": episode_index, "episode/success": bool(success),
                           **{f"episode/{key}": value for key, value in history[-1].items()
                              if key in ("env_success", "false_success", "missed_success", "detector_p")},
                           "episode/return": episode_return, "episode/steps": steps,
                           "episode/explore": not collecting, "rolling_success": float(np.mean(exploring))
                           if exploring else 0.0, "successes": state["successes"], "head_version": actor.version})
            atomic_write_text(progress_file, json.dumps(state))
            (progress or _rl_progress(bar))({
                "episodes": state["episodes"], "env_steps": state["env_steps"], "budget": rl.max_env_steps,
                "rolling": rolling, "collecting": collecting, "successes": state["successes"],
                "elapsed": time.monotonic() - started})
        if not link.flush(timeout_s=120):
            log("warning: the learner did not acknowledge every transition before the stop")
        finished = True
    finally:
        bar.close()
        link.close()
        env.close()
        try:
            _stop_learner(process, log)
        except LoopError:
            if finished:  # a learner failure matters only if the actor's own error is not already on its way
                raise
    merge_head_file(policy, stage_dir / "learner" / "head.safetensors")
    save_policy(policy, stage_dir / "policy", info={"stage": f"rl-{k}", "task": ref.label,
                                                    "episodes": state["episodes"], "env_steps": state["env_steps"]})
    final = _final_rollouts(config, ref, k, policy, state, progress_file, d_rl, image_size, log, cycle,
                            progress_factory)
    if final:  # one step past the episodes: a resumed stage (resume_step = env steps) drops and rewrites it
        metrics.write({"step": state["env_steps"] + 1, "rl/final_success": float(np.mean(final)),
                       "rl/final_rollouts": len(final)})
    explored = [h for h in state["history"] if h["explore"]]
    return {"policy": str(stage_dir / "policy"), "reward": reward_summary(config, state["history"]), "episodes": state["episodes"], "env_steps": state["env_steps"],
            "successes": state["successes"], "demo_rollout_successes": state["demo_successes"],
            "explore_success": float(np.mean([h["success"] for h in explored])) if explored else None,
            "final_successes": int(sum(final)), "final_rollouts": len(final),
            "final_success": float(np.mean(final)) if final else None}


def _reward_source(config: IterateConfig, policy_path: str, log: Log):
    """Stage 1's reward source (`irevla.reward.sources`): the env's success, or a detector checked against the VLM of
    the policy stage 1 starts from."""
    from irevla.reward.detector import SuccessDetector
    from irevla.reward.features import vlm_fingerprint
    from irevla.reward.sources import make_reward_source

    settings = config.rl.reward
    if settings.source == "env":
        return make_reward_source("env")
    detector = SuccessDetector.load(settings.detector)
    detector.check_vlm(vlm_fingerprint(policy_path), policy_path, Path(settings.detector) / "detector.json")
    log(f"stage 1 reward: the success detector {settings.detector} (threshold {detector.threshold:.4f}, "
        f"{detector.confirm_frames} frame(s) to confirm)")
    return make_reward_source("classifier", detector)


def _verdict_record(verdict, episode) -> dict:
    """What an episode's history entry keeps about its label: the deciding source and, where the env's truth is
    known while a detector decides, whether the detector was right."""
    record: dict = {"source": verdict.source}
    if verdict.source == "classifier" or verdict.probability is not None:
        seen = bool(episode.metadata.get("env_success_seen", False))
        record.update(env_success=seen, false_success=bool(verdict.success and not verdict.env_success),
                      missed_success=bool(seen and not verdict.success))
        if verdict.probability is not None:
            record["detector_p"] = round(float(verdict.probability), 4)
    return record


def _adopted_record(info) -> dict:
    """The history fields of an episode adopted from D_RL (see `recorded_episode`), from its own metadata."""
    metadata = info.metadata
    record: dict = {"source": metadata.get("success_source", "env"), "adopted": True}
    if "env_success_seen" in metadata:
        record.update(env_success=bool(metadata["env_success_seen"]),
                      false_success=not bool(metadata.get("env_success_at_decision", True)), missed_success=False)
    return record


def reward_summary(config: IterateConfig, history: list[dict]) -> dict:
    """How stage 1's labels were decided; with a detector in simulation, how often it was right."""
    summary: dict = {"source": config.rl.reward.source}
    scored = [h for h in history if "false_success" in h]
    if not scored:
        return summary
    declared = [h for h in scored if h["success"]]
    true = [h for h in declared if not h["false_success"]]
    happened = [h for h in scored if h["env_success"]]
    summary.update(episodes=len(scored), declared=len(declared), false_successes=len(declared) - len(true),
                   missed=sum(h["missed_success"] for h in scored),
                   precision=len(true) / len(declared) if declared else None,
                   recall=len(true) / len(happened) if happened else None,
                   false_successes_per_100=100.0 * (len(declared) - len(true)) / len(scored))
    return summary


FINAL_SEED_START = 50_000  # away from the RL episodes' (10_000 + ...) and evaluation's (100_000 + ...) seeds


def _final_rollouts(config: IterateConfig, ref: TaskRef, k: int, policy, state: dict, progress_file: Path, d_rl,
                    image_size: int, log: Log, cycle, progress_factory: ProgressFactory | None = None
                    ) -> list[bool]:
    """The RL head's own result: `rl.final_rollouts` episodes of the final mean policy; successes go to D_RL.

    Exploring episodes succeed less often than the mean policy they explore around, so without these D_RL would
    hold few trajectories of the improved behaviour for stage 2 to consolidate. Progress is kept in actor.json
    (``final``), so a resumed stage does not repeat finished episodes.
    """
    from irevla.data.episode import EpisodeBuilder
    from irevla.iterate.cycle import CycleEnv
    from irevla.iterate.envs import make_task_env
    from irevla.policy.rollout import run_episode

    rl = config.rl
    outcomes: list[bool] = state.setdefault("final", [])
    if len(outcomes) >= rl.final_rollouts:
        return outcomes[:rl.final_rollouts]
    env = CycleEnv(make_task_env(config, ref, cameras=policy.cameras, image_size=image_size,
                                 max_episode_steps=rl.max_episode_steps), cycle)
    bar = _bar(progress_factory, f"rl-{k} final rollouts", rl.final_rollouts, "ep", len(outcomes))
    try:
        while len(outcomes) < rl.final_rollouts:
            index = len(outcomes)
            seed = FINAL_SEED_START + 1000 * rl.seed + index

            def attempt(index: int = index, seed: int = seed):
                builder = EpisodeBuilder(env.task_spec, source="rl", round=k, metadata={
                    "task": ref.task, "variation": ref.variation, "variation_seed": ref.variation_seed,
                    "stage": f"rl-{k}", "final_rollout": index, "seed": seed, "explore": False})
                return run_episode(env, policy, seed, builder)

            success, _, episode = cycle.run_episode(index, attempt, series="final")
            if success:
                d_rl.write(episode)
            outcomes.append(bool(success))
            atomic_write_text(progress_file, json.dumps(state))
            bar.update({"done": len(outcomes), "unit": "ep", "postfix": {"successes": sum(outcomes)}})
    finally:
        bar.close()
        env.close()
    log(f"rl-{k}: the final head succeeded in {sum(outcomes)}/{len(outcomes)} episodes (kept in D_RL)")
    return outcomes


# --------------------------------------------------------------------------------------------------- the loop
def current_policy(config: IterateConfig, state: RunState, upto: str) -> str:
    """The newest policy checkpoint produced by a finished stage before `upto`."""
    path = config.init
    for name in stage_names(config):
        if name == upto:
            break
        if state.done(name) and "policy" in state.output(name) and not name.startswith("eval"):
            path = state.output(name)["policy"]
    if path is None:
        raise LoopError(f"{upto}: no policy checkpoint yet (stage 0 has not finished)")
    return path


def run_iterate(config: IterateConfig, log: Log = print, progress_factory: ProgressFactory | None = None
                ) -> RunState:
    from irevla.iterate.morning import write_morning_report
    from irevla.iterate.report import write_report

    config.check_stages()  # every SFT stage's settings compose (ConfigError naming the key) before anything runs
    check_wandb(config.logging.wandb)  # logging.wandb.enabled without wandb installed: say so now, not hours in
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    config_file = run_dir / "config.yaml"
    if config_file.is_file() and config_file.read_text() != _dump(config):
        log(f"note: {config_file} differs from this config; finished stages are kept as they are")
    atomic_write_text(config_file, _dump(config))
    state = RunState(run_dir)
    names = stage_names(config)
    if state.finished:
        log(f"resuming {run_dir}: finished {', '.join(state.finished)}")
    for index, name in enumerate(names, 1):
        if state.done(name):
            continue
        log(f"[{index}/{len(names)}] {name}")
        started = time.monotonic()
        if name == "demos":
            outputs = stage_demos(config, run_dir, log)
        elif name == "sft":
            outputs = stage_sft(config, run_dir, log, progress_factory)
        elif name.startswith("eval-"):
            outputs = stage_eval(config, current_policy(config, state, name), log, progress_factory, name)
        elif name.startswith("rl-"):
            k = int(name.split("-")[1])
            outputs = stage_rl(config, run_dir, k, current_policy(config, state, name), log,
                               progress_factory=progress_factory)
        elif name.startswith("stage2-"):
            k = int(name.split("-")[1])
            outputs = stage_stage2(config, run_dir, k, current_policy(config, state, name), log, progress_factory)
        else:  # pragma: no cover - stage_names and this dispatch are written together
            raise LoopError(f"unknown stage {name}")
        if name.startswith("eval-"):
            log_evaluation(config, run_dir, int(name.split("-")[1]), outputs)
        state.finish(name, time.monotonic() - started, **outputs)
        if name.startswith("eval-") or name.startswith("rl-"):
            write_report(config, state, run_dir)
            write_morning_report(run_dir)  # what ran, successes per hour, pauses, labels (run_dir/morning.md)
    log(f"all {len(names)} stages finished; report: {run_dir / 'report.md'}")
    return state


def _dump(config: IterateConfig) -> str:
    import yaml

    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
