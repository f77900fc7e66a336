"""Settings of `irevla iterate` (the iRe-VLA loop), loaded from YAML and validated (no torch/jax imported here).

A run is Algorithm 1 of the paper: stage 0 SFT on expert demos D_e (or a given checkpoint) -> for each RL task:
stage 1 RL on the head with the VLM frozen -> stage 2 SFT of the whole model on D_e + D_RL -> evaluation of the
expert, RL and unseen task groups. `config/demo.yaml` is the simulated demo; docs/overnight.md the robot run.

``family: robot`` runs the same loop on the real-robot env (`irevla.robot.env.RobotEnv`, configured by the ``robot``
section; config/iterate_robot.yaml, docs/robot.md "Iterate on the robot"). Its settings model is plain pydantic
(`irevla.robot.config` imports no rclpy); the env itself, and with it rclpy, is imported only when a robot run
builds it (`irevla.iterate.envs`).

The stages' settings are typed parts of this config, validated when it loads: ``sft_overrides`` and
``stage2.overrides`` are typed changes to the SFT settings (`SFTOverrides`: `irevla.policy.config.SFTConfig` with
every key optional), ``rl.learner`` is `irevla.learner.config.LearnerConfig`, ``eval`` is `EvalConfig`. A stage
gets a composed, validated `SFTConfig` from `IterateConfig.stage0_sft` / `stage2_sft` (the ``sft_config`` file,
then the overrides, then what the loop sets); `load_iterate_config` composes both once at load, so a setting that
only fails in combination (``train.batch_size`` not a multiple of ``train.grad_accumulation``) stops the run
before anything runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from irevla.config import (
    ConfigError,
    ConfigModel,
    DemosConfig,
    compose_config,
    load_config,
    override_model,
    read_config_mapping,
    validate_config,
)
from irevla.iterate.cycle import CycleConfig
from irevla.learner.config import LearnerConfig, PPOConfig  # pydantic only, no jax
from irevla.learner.registry import get_algorithm  # names only: the learner classes (jax) load when used
from irevla.metrics_log import LoggingConfig, WandbConfig
from irevla.policy.config import SFTConfig
from irevla.robot.config import RobotEnvConfig

# Typed changes to the SFT settings: any SFTConfig key (nested, or dotted: ``train.steps: 1200``), each optional.
SFTOverrides = override_model(SFTConfig)

# SFT keys the loop sets itself for every stage it runs (a value given for them would be silently replaced).
_LOOP_SETS = {"data.dirs": "the loop sets it: D_e (demos, expert_data), and D_RL in stage 2",
              "out": "the loop sets it: run_dir/sft, run_dir/stage2-K",
              "train.threads": "the loop sets it from sft_threads (default: threads)",
              "train.wandb": "the loop sets it from logging.wandb"}
_STAGE2_SETS = {**_LOOP_SETS,
                "init": "the loop sets it: stage 2 starts from the current policy",
                "policy.backbone_training": "the loop sets it from stage2.backbone_training / stage2.freeze_vlm"}


def _given(changes: Mapping[str, Any], dotted: str) -> bool:
    node: Any = changes
    for key in dotted.split("."):
        if not isinstance(node, Mapping) or key not in node:
            return False
        node = node[key]
    return True


class TaskRef(ConfigModel):
    """A task of one of the three groups: a simulated task name plus an optional named variation; on the robot a
    task name plus the instruction the policy gets."""

    task: str
    variation: str = Field(default="", description="e.g. 'hand:0.06,0,0' or 'color:red' (irevla/sim/variations.py); "
                                                   "simulation only")
    instruction: str | None = Field(default=None, description="family robot only: the language instruction of the "
                                                              "task (default: robot.instruction); a simulated task "
                                                              "has its own")
    variation_seed: int = 0
    name: str | None = Field(default=None, description="label in reports (default: task[variation])")

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        return f"{self.task}[{self.variation}]" if self.variation else self.task


class RewardConfig(ConfigModel):
    """Where stage 1's success label comes from (`irevla.reward.sources`; docs/overnight.md, "An unattended night")."""

    source: Literal["env", "classifier"] = Field(default="env", description=(
        "env: the env's success (the simulator's truth; on the robot, robot.success_topic); classifier: a success "
        "detector on the frozen VLM's latents ends episodes (the env's own success is then only recorded)"))
    detector: str | None = Field(default=None, description=(
        "the detector directory (irevla reward train), trained on the VLM of the policy stage 1 starts from"))

    @model_validator(mode="after")
    def _detector_given(self) -> RewardConfig:
        if self.source == "classifier" and not self.detector:
            raise ValueError("source classifier needs detector: a directory written by irevla reward train")
        return self


class WholePPOConfig(ConfigModel):
    """The paper's PPO baselines (``rl.trains: whole``): PPO on the whole VLA in the loop's process
    (`irevla.iterate.whole_ppo`); ``expert_replay > 0`` is PPO-Replay."""

    rollout_episodes: int = Field(default=8, ge=1, description="episodes per PPO iteration, stepped side by side "
                                                               "(one batched VLA call per step)")
    epochs: int = Field(default=2, ge=1, description="passes over each iteration's transitions")
    minibatch: int = Field(default=64, ge=2, description="transitions per gradient step (images re-encoded)")
    lr: float = Field(default=1.0e-5, gt=0, description="learning rate of the VLM's weights")
    head_lr: float = Field(default=1.0e-4, gt=0, description="learning rate of the action head, value head and "
                                                             "log_std")
    backbone_training: Literal["full", "lora"] = Field(default="full", description=(
        "what of the VLM PPO trains: full (the paper's baseline: nothing frozen) or lora"))
    clip: float = Field(default=0.2, gt=0, lt=1)
    gamma: float = Field(default=0.99, gt=0, le=1)
    gae_lambda: float = Field(default=0.95, ge=0, le=1)
    value_coef: float = Field(default=0.5, ge=0)
    entropy_coef: float = Field(default=0.0, ge=0)
    initial_log_std: float = Field(default=-2.0, le=0, description="exploration std in unit space: exp(-2) = 0.14")
    max_grad_norm: float = Field(default=1.0, gt=0)
    expert_replay: float = Field(default=0.0, ge=0, description=(
        "PPO-Replay: weight of a behaviour-cloning loss on expert steps of D_e added to every minibatch (0: PPO)"))
    replay_batch: int = Field(default=32, ge=1, description="expert steps per minibatch when expert_replay > 0")


class RLConfig(ConfigModel):
    """Stage 1: online RL of the head with the VLM frozen, learner in its own process (``trains: head``, iRe-VLA);
    or the paper's PPO baselines on the whole VLA (``trains: whole``, `WholePPOConfig`)."""

    trains: Literal["head", "whole"] = Field(default="head", description=(
        "head: iRe-VLA's stage 1 (VLM frozen, the head trained by the learner process on cached latents); whole: "
        "the paper's PPO / PPO-Replay baselines, PPO on the whole VLA in this process (rl.whole_ppo; family "
        "robot: not offered)"))
    whole_ppo: WholePPOConfig = Field(default_factory=WholePPOConfig, description="settings of trains: whole")

    algorithm: str = Field(default="sac", description="a name in irevla.learner.registry.ALGORITHMS: sac (SACfD/RLPD, "
                                                      "the paper's real-robot method) or ppo (simulation comparison)")
    latent: Literal["pooled", "tokens"] = Field(default="pooled", description="what the replay stores: the token "
                                                                              "learner's output (head MLP trains) "
                                                                              "or all VLM tokens (whole head trains, "
                                                                              "the paper's stage 1)")
    demo_rollouts: int = Field(default=20, ge=0, description="successful rollouts of the current VLA that seed the "
                                                             "demo buffer before exploring (the paper: 20)")
    demo_rollout_attempts: int = Field(default=60, ge=0, description="give up collecting them after this many tries")
    expert_demos: bool = Field(default=True, description="also put D_e's episodes of the base task into the demo "
                                                         "buffer (encoded once)")
    max_env_steps: int = Field(default=20_000, ge=1, description="stage-1 budget in env steps per task")
    plateau_window: int = Field(default=20, ge=1, description="episodes in the rolling success rate")
    plateau_success: float = Field(default=0.95, gt=0, le=1, description="stop early once the rolling success of "
                                                                         "exploring episodes reaches this")
    max_episode_steps: int | None = Field(default=None, gt=0, description="time limit (default: the task's)")
    final_rollouts: int = Field(default=20, ge=0, description=(
        "after the learner stops: episodes of the final head's mean (the deployed policy) on the task; their "
        "successes join D_RL and their rate is the stage's own result (RL head, before stage 2)"))
    noise_beta: float = Field(default=0.0, ge=0, le=2, description=(
        "colour of the exploration noise over an episode: 0 white (independent steps), 1 pink, 2 red. Coloured "
        "noise keeps a drift for tens of steps, so it explores a consistent offset (e.g. a target further right) "
        "that white noise averages away; the marginal per step is the same Gaussian"))
    reward: RewardConfig = RewardConfig()
    cycle: CycleConfig = Field(default_factory=CycleConfig, description=(
        "the unattended episode cycle: reset hook, episode time limit, pauses on faults (irevla.iterate.cycle)"))
    learner: LearnerConfig = LearnerConfig()
    ppo: dict = Field(default_factory=dict, description="PPO settings (irevla.learner.config.PPOConfig; checked "
                                                        "against it at load, handed to the learner as given)")
    learner_threads: int = Field(default=1, ge=1, description="CPU threads of the learner process")
    seed: int = 0

    @field_validator("algorithm")
    @classmethod
    def _algorithm_is_registered(cls, name: str) -> str:
        try:
            get_algorithm(name, where="rl.algorithm")
        except ConfigError as exc:
            raise ValueError(str(exc).removeprefix("rl.algorithm: ")) from None
        return name

    @field_validator("learner")
    @classmethod
    def _sac_settings_fit(cls, learner: LearnerConfig) -> LearnerConfig:
        try:
            learner.sac.check()
        except ValueError as exc:
            raise ValueError(f"sac: {exc}") from None
        return learner

    @field_validator("ppo")
    @classmethod
    def _ppo_settings_are_valid(cls, ppo: dict) -> dict:
        if ppo:
            try:
                validate_config(ppo, PPOConfig, "ppo")
            except ConfigError as exc:
                raise ValueError("; ".join(line.removeprefix("ppo: ") for line in str(exc).splitlines())) from None
        return ppo


class Stage2Config(ConfigModel):
    """Stage 2: supervised consolidation of the whole model on D_e + D_RL (LoRA + head, as the paper)."""

    skip: bool = Field(default=False, description="ablation: no stage 2 (the RL head is the result)")
    freeze_vlm: bool = Field(default=False, description="ablation 'iRe-VLA-freeze': the VLM stays frozen in stage 2 "
                                                        "too (only the head trains)")
    backbone_training: Literal["lora", "full"] = Field(default="lora", description="what of the VLM trains")
    steps: int = Field(default=500, ge=1)
    overrides: SFTOverrides = Field(default_factory=SFTOverrides, description=(
        "SFT settings for stage 2 on top of sft_overrides (nested or dotted keys, e.g. train.lr or "
        "data.expert_fraction); typed: a misspelt key or a wrong type is an error at load"))
    command: str | None = Field(default=None, description=(
        "run stage 2 elsewhere: a shell command template with {config}, {out}, {run_dir}, {python} (e.g. ssh + "
        "accelerate launch, or sbatch --wait); unset: in this process"))
    command_timeout_s: float = Field(default=24 * 3600.0, gt=0)


class EvalConfig(ConfigModel):
    episodes: int = Field(default=20, ge=1, description="episodes per task in each evaluation")
    seed: int = Field(default=100_000, description="first reset seed (away from demo and RL seeds)")
    max_episode_steps: int | None = Field(default=None, gt=0)
    parallel_envs: int = Field(default=10, ge=1, description=(
        "episodes of a task run side by side, each in its own env, with one batched policy call per step (less "
        "per-call overhead): a task's seeds are cut into batches of this many. Each worker holds this many envs (a "
        "64 px Meta-World env ~150 MB). family robot: 1 (one arm; the default becomes 1)"))
    workers: int | Literal["auto"] = Field(default="auto", description=(
        "processes that run those batches side by side (simulation), all tasks in one pool: each loads the policy "
        "from its checkpoint, runs threads torch threads and takes a batch at a time until none is left. A batch's "
        "episodes depend only on its seeds, so the results do not depend on the count. auto: one per available "
        "core (at most 4) when an evaluation has at least 4000 env steps (tasks x episodes x time limit), else 1; "
        "1: in the loop's process. family robot: 1"))

    @field_validator("workers", mode="before")
    @classmethod
    def _workers_auto_or_positive(cls, workers: Any) -> Any:
        # before the union's own checks, which would name both of its alternatives
        if workers != "auto" and (not isinstance(workers, int) or isinstance(workers, bool) or workers < 1):
            raise ValueError("expected 'auto' or an integer >= 1")
        return workers


class IterateConfig(ConfigModel):
    """One iRe-VLA run. Every stage writes into ``run_dir``; rerunning the same command resumes."""

    run_dir: str = "runs/demo"
    family: Literal["metaworld", "kitchen", "robot"] = Field(default="metaworld", description=(
        "simulated family, or robot: the real-robot env over the ROS 2 topics (sim_robot serves the same ones)"))
    robot: RobotEnvConfig | None = Field(default=None, description=(
        "family robot: the env's topics, cameras, success topic, control rate and time limit (RobotEnvConfig); "
        "task and instruction come from the task lists"))
    demos: DemosConfig | None = Field(default=None, description="record expert demos D_e first (sim)")
    expert_data: tuple[str, ...] = Field(default=(), description="existing D_e directories (instead of or besides "
                                                                 "demos)")
    sft_config: str | None = Field(default="config/sft.yaml", description="stage-0 SFT config (its data/out are "
                                                                          "set by the loop)")
    sft_overrides: SFTOverrides = Field(default_factory=SFTOverrides, description=(
        "SFT settings for stage 0 on top of sft_config (stage 2 starts from them too): nested or dotted keys, e.g. "
        "train.steps; typed: a misspelt key or a wrong type is an error at load"))
    init: str | None = Field(default=None, description="start from this policy checkpoint instead of stage 0")
    expert_tasks: tuple[TaskRef, ...] | None = Field(default=None, description="default: the demo tasks")
    rl_tasks: tuple[TaskRef, ...] = Field(min_length=1)
    unseen_tasks: tuple[TaskRef, ...] = ()
    rl: RLConfig = RLConfig()
    stage2: Stage2Config = Stage2Config()
    eval: EvalConfig = EvalConfig()
    threads: int = Field(default=1, ge=1, description="torch CPU threads of the loop's process: the stage-1 actor "
                                                      "(which shares the cores with the learner process), an "
                                                      "evaluation in this process, and SFT unless sft_threads")
    sft_threads: int | None = Field(default=None, ge=1, description=(
        "torch CPU threads of the SFT stages (stage 0 and stage 2 in this process; train.threads of their "
        "settings); default: threads. Nothing else runs beside them"))
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description=(
        "metrics of every stage besides its metrics.jsonl: TensorBoard events in the stage directories (tensorboard "
        "--logdir run_dir; tensorboard: false also turns off the SFT stages' train.tensorboard) and, off by "
        "default, wandb (one wandb run per stage directory, grouped by the run directory's name)"))

    @model_validator(mode="before")
    @classmethod
    def _one_arm_evaluates_one_env(cls, data):
        """On the robot an unset eval.parallel_envs / eval.workers is 1, not the simulation's 10 / auto (one arm, one
        env, the loop's own process)."""
        if not isinstance(data, dict) or data.get("family") != "robot":
            return data
        evaluation = data.get("eval")
        one_arm = {"parallel_envs": 1, "workers": 1}
        if evaluation is None:
            return {**data, "eval": one_arm}
        if isinstance(evaluation, dict):
            return {**data, "eval": {**one_arm, **evaluation}}
        if isinstance(evaluation, EvalConfig):
            unset = {key: value for key, value in one_arm.items() if key not in evaluation.model_fields_set}
            return {**data, "eval": evaluation.model_copy(update=unset)} if unset else data
        return data

    @model_validator(mode="after")
    def _has_data(self) -> IterateConfig:
        self._check_family()
        if self.init is None and self.demos is None and not self.expert_data:
            raise ValueError("give demos (record D_e), expert_data (existing D_e) or init (a trained checkpoint)")
        if self.init is None and self.sft_config is None:
            raise ValueError("stage 0 needs sft_config (or give init)")
        if self.expert_tasks is None and self.demos is None:
            raise ValueError("expert_tasks is required when no demos are recorded")
        for section, overrides, owned in (("sft_overrides", self.sft_overrides, _LOOP_SETS),
                                          ("stage2.overrides", self.stage2.overrides, _STAGE2_SETS)):
            for key, why in owned.items():
                if _given(overrides.changes(), key):
                    raise ValueError(f"{section}.{key}: {why}; remove it")
        return self

    def _check_family(self) -> None:
        groups = {"expert_tasks": self.expert_tasks or (), "rl_tasks": self.rl_tasks, "unseen_tasks": self.unseen_tasks}
        if self.family != "robot" and self.demos is not None and self.demos.family != self.family:
            raise ValueError(f"demos.family: the run is family {self.family!r} but its demos would be recorded in "
                             f"{self.demos.family!r}; set demos.family: {self.family}")
        if self.family != "robot":
            if self.robot is not None:
                raise ValueError(f"robot: the robot section is only for family: robot (family is {self.family!r})")
            for key, tasks in groups.items():
                for i, ref in enumerate(tasks):
                    if ref.instruction is not None:
                        raise ValueError(f"{key}[{i}].instruction: only for family: robot; a simulated task has "
                                         f"its own instruction")
            return
        if self.rl.trains == "whole":
            raise ValueError("rl.trains: whole (PPO on the whole VLA, a simulation baseline) is not offered on the "
                             "robot: thousands of exploring episodes with an unfrozen VLM; use trains: head")
        if self.robot is None:
            raise ValueError("robot: family robot needs a robot section (topics, cameras, success_topic, "
                             "control_hz, max_episode_steps; irevla.robot.config.RobotEnvConfig, "
                             "config/iterate_robot.yaml)")
        if self.demos is not None:
            raise ValueError("demos: scripted experts exist only in simulation; on the robot give expert_data "
                             "(teleop demos recorded with the recorder) or init (a trained checkpoint)")
        if self.init is None and not self.expert_data:
            raise ValueError("expert_data: family robot needs expert_data (teleop demos D_e for stage 0) or init "
                             "(a trained checkpoint)")
        if self.eval.parallel_envs != 1:
            raise ValueError(f"eval.parallel_envs: the robot is one arm, so 1 (or leave it out), got "
                             f"{self.eval.parallel_envs}")
        if self.eval.workers != 1:
            raise ValueError(f"eval.workers: the robot is one arm, evaluated in the loop's process, so 1 (or leave it "
                             f"out), got {self.eval.workers!r}")
        for key, tasks in groups.items():
            for i, ref in enumerate(tasks):
                if ref.variation:
                    raise ValueError(f"{key}[{i}].variation: variations ({ref.variation!r}) are simulated scene "
                                     f"changes; on the robot change the scene and name the task instead")

    @property
    def expert_group(self) -> tuple[TaskRef, ...]:
        if self.expert_tasks is not None:
            return self.expert_tasks
        return tuple(TaskRef(task=t) for t in self.demos.tasks)

    # ---------------------------------------------------------------------------- the SFT stages' settings
    def expert_dirs(self, run_dir: str | Path | None = None) -> list[str]:
        """D_e: the recorded demos (run_dir/expert) first, then expert_data."""
        dirs = list(self.expert_data)
        if self.demos is not None:
            dirs.insert(0, str(Path(run_dir if run_dir is not None else self.run_dir) / "expert"))
        return dirs

    def sft_base(self):
        """The ``sft_config`` file as typed SFT changes (SFTConfig's defaults when there is none: stage 2 of a run
        that starts from ``init``). Errors name the file and the key."""
        if self.sft_config is None:
            return SFTOverrides()
        path = Path(self.sft_config)
        return validate_config(read_config_mapping(path), SFTOverrides, str(path))

    def stage_wandb(self, stage: str, run_dir: str | Path | None = None) -> WandbConfig:
        """``logging.wandb`` for one stage directory: named <run_dir name>/<stage>, grouped by the run directory's
        name (unless logging.wandb names them)."""
        run_name = Path(run_dir if run_dir is not None else self.run_dir).resolve().name
        wandb = self.logging.wandb
        return wandb.model_copy(update={"name": f"{wandb.name or run_name}/{stage}", "group": wandb.group or run_name})

    def _loop_train(self, stage: str, run_dir: Path) -> dict:
        """The SFT train settings the loop sets: threads (sft_threads, default threads), wandb from logging.wandb (off:
        wandb's defaults, off), and tensorboard off when logging.tensorboard is (else the SFT settings' own
        train.tensorboard)."""
        wandb = self.stage_wandb(stage, run_dir) if self.logging.wandb.enabled else WandbConfig()
        train: dict = {"threads": self.sft_threads or self.threads, "wandb": wandb.model_dump(mode="json")}
        if not self.logging.tensorboard:
            train["tensorboard"] = False
        return train

    def _sft_source(self, *sections: str) -> str:
        return " + ".join([self.sft_config or "SFT defaults", *sections])

    def stage0_sft(self, run_dir: str | Path | None = None, base=None) -> SFTConfig:
        """Stage 0's settings: sft_config, then sft_overrides, then the loop's (D_e, run_dir/sft, threads)."""
        run_dir = Path(run_dir if run_dir is not None else self.run_dir)
        loop = {"data": {"dirs": self.expert_dirs(run_dir)}, "out": str(run_dir / "sft"),
                "train": self._loop_train("sft", run_dir)}
        return compose_config(SFTConfig, base if base is not None else self.sft_base(), self.sft_overrides, loop,
                              source=f"stage 0's SFT settings ({self._sft_source('sft_overrides')})")

    @property
    def stage2_training(self) -> str:
        """What of the VLM stage 2 trains: lora / full, or frozen (the iRe-VLA-freeze ablation)."""
        return "frozen" if self.stage2.freeze_vlm else self.stage2.backbone_training

    def stage2_sft(self, k: int, policy_path: str, run_dir: str | Path | None = None, base=None) -> SFTConfig:
        """Stage 2 after RL task `k`, from `policy_path`: sft_config, sft_overrides, stage2.steps with no warm-up,
        stage2.overrides, then the loop's (D_e + D_RL, run_dir/stage2-K, the policy, what trains, threads)."""
        run_dir = Path(run_dir if run_dir is not None else self.run_dir)
        stage2 = {"train": {"steps": self.stage2.steps, "warmup_steps": 0}}
        loop = {"data": {"dirs": [*self.expert_dirs(run_dir), str(run_dir / "d_rl")]},
                "out": str(run_dir / f"stage2-{k}"), "init": policy_path,
                "policy": {"backbone_training": self.stage2_training}, "train": self._loop_train(f"stage2-{k}", run_dir)}
        return compose_config(SFTConfig, base if base is not None else self.sft_base(), self.sft_overrides, stage2,
                              self.stage2.overrides, loop,
                              source=f"stage 2's SFT settings ({self._sft_source('sft_overrides', 'stage2.overrides')})")

    def check_stages(self) -> None:
        """Compose the settings of every SFT stage this run has (stage 2 once: its runs differ only in paths), so a
        problem shows now, not hours in. Raises `ConfigError` naming the settings and the key."""
        runs_stage0 = self.init is None
        runs_stage2 = not self.stage2.skip
        if not (runs_stage0 or runs_stage2):
            return
        base = self.sft_base()
        if runs_stage0:
            self.stage0_sft(base=base)
        if runs_stage2:
            self.stage2_sft(1, self.init or str(Path(self.run_dir) / "rl-1" / "policy"), base=base)


def load_iterate_config(path: str | Path, overrides: Mapping[str, Any] | None = None) -> IterateConfig:
    """Load a loop config (`overrides`: dotted keys, e.g. from ``--set``) and compose its stages' SFT settings.
    Every problem is a `ConfigError` naming the file and the key, before anything runs."""
    config = load_config(path, IterateConfig, overrides)
    try:
        config.check_stages()
    except ConfigError as exc:
        raise ConfigError("\n".join(f"{path}: {line}" for line in str(exc).splitlines())) from None
    return config
