"""Settings of the stage-1 learner (pydantic, no jax): what every algorithm's learner shares, SAC/REDQ, PPO.

Kept apart from the algorithm files so the CLI and the loop's config validate without importing jax.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from irevla.config import ConfigModel


class LearnerBaseConfig(ConfigModel):
    """What the learner around any algorithm (`irevla.learner.learner.Learner`) reads: the demo buffer, which
    episodes are copied into it, publishing and snapshots."""

    demo_capacity: int = Field(default=100_000, ge=2, description="observations in the demo buffer")
    successes_to_demo: bool = Field(default=True, description="copy successful online episodes into the demo "
                                                             "buffer (self-imitation half of the batch)")
    interventions_to_demo: Literal["steps", "episode", "off"] = Field(default="steps", description=(
        "what a human intervention puts into the demo buffer: 'steps' = only the transitions a human chose, each "
        "with its true next observation, reward and end (HIL-SERL); 'episode' = the whole episode; 'off' = nothing "
        "(a success still goes whole with successes_to_demo). Old configs' true / false mean 'episode' / 'off'"))
    publish_every: int = Field(default=10, ge=1, description="publish the head every this many updates")
    snapshot_every_s: float = Field(default=60.0, gt=0, description="snapshot buffers and state this often")
    seed: int = 0

    @field_validator("interventions_to_demo", mode="before")
    @classmethod
    def _boolean_from_old_configs(cls, value: Any) -> Any:
        # Before "steps" existed this was a bool that copied the whole episode: keep such YAML files meaning that.
        if isinstance(value, bool):
            return "episode" if value else "off"
        return value


class SACConfig(ConfigModel):
    """Stage-1 SAC/REDQ settings (defaults: SERL's, see shared REFERENCE)."""

    num_critics: int = Field(default=10, ge=1, description="REDQ ensemble size")
    critic_subsample: int = Field(default=2, ge=1, description="target critics the TD target takes the min over")
    discount: float = Field(default=0.96, gt=0, le=1)
    tau: float = Field(default=0.005, gt=0, le=1, description="Polyak rate of the target critics")
    actor_lr: float = Field(default=3e-4, gt=0)
    critic_lr: float = Field(default=3e-4, gt=0)
    temperature_lr: float = Field(default=3e-4, gt=0)
    initial_temperature: float = Field(default=0.01, gt=0)
    target_entropy: float | None = Field(default=None, description="default: -action_dim / 2")
    backup_entropy: bool = Field(default=False, description="subtract alpha * log pi in the TD target (SERL: off)")
    utd: int = Field(default=4, ge=1, description="critic steps per actor step (update-to-data ratio)")
    batch_size: int = Field(default=256, ge=2, description="per critic step; half demo, half online")
    initial_log_std: float = Field(default=-1.6, description="log std of the exploration noise at the start "
                                                             "(unit action space; -1.6 = std 0.2)")
    bc_weight: float = Field(default=0.0, ge=0, description="weight of MSE(mean action, demo action) on the demo "
                                                           "half in the actor loss (0: plain SACfD)")
    critic_hidden: tuple[int, ...] | None = Field(default=None, description="critic MLP widths (default: the "
                                                                            "actor head's)")
    critic_token_learner: Literal["shared", "per_critic"] = Field(default="shared", description=(
        "with token latents: one token learner pools each observation for every critic's MLP (shared), or each "
        "critic has its own (per_critic, the slower layout kept for comparison); no effect with pooled latents"))
    grad_clip: float = Field(default=10.0, gt=0)
    critic_zero_output: bool = Field(default=True, description=(
        "critics start with a zero output layer: Q = 0 everywhere, so the actor gets no Q-gradient until the "
        "critic has learned from data (a random output layer's gradients dragged the SFT head off for the first "
        "thousands of updates)"))

    def check(self) -> None:
        if self.critic_subsample > self.num_critics:
            raise ValueError(f"critic_subsample {self.critic_subsample} > num_critics {self.num_critics}")


class LearnerConfig(LearnerBaseConfig):
    """The SAC learner: the ``rl.learner`` section of a loop config."""

    sac: SACConfig = SACConfig()
    online_capacity: int = Field(default=200_000, ge=2, description="observations in the online buffer")
    warmup_transitions: int = Field(default=200, ge=0, description="online transitions before the first update")
    updates_per_transition: float = Field(default=1.0, ge=0, description="updates allowed per received transition "
                                                                         "(0: unlimited, free-running)")
    demo_fraction: float = Field(default=0.5, ge=0, le=1, description="share of each batch from the demo buffer")


class PPOConfig(LearnerBaseConfig):
    """Stage-1 PPO settings (defaults: cleanrl's ppo_continuous_action, except the on-policy batch in episodes) and
    the learner's (buffers, publishing, snapshots) -- the ``rl.ppo`` section of a loop config."""

    clip: float = Field(default=0.2, gt=0, description="PPO ratio clip epsilon")
    gae_lambda: float = Field(default=0.95, ge=0, le=1)
    discount: float = Field(default=0.99, gt=0, le=1)
    lr: float = Field(default=3e-4, gt=0, description="Adam learning rate (policy, log_std and value)")
    epochs: int = Field(default=4, ge=1, description="passes over each on-policy batch")
    minibatch_size: int = Field(default=64, ge=2, description="transitions per gradient step")
    episodes_per_update: int = Field(default=16, ge=1, description="complete on-policy episodes per update")
    value_coef: float = Field(default=0.5, ge=0)
    entropy_coef: float = Field(default=0.0, ge=0, description="weight of the Gaussian entropy bonus")
    grad_clip: float = Field(default=0.5, gt=0, description="global gradient-norm clip")
    initial_log_std: float = Field(default=-1.6, description="log std of the exploration noise at the start "
                                                             "(unit action space; -1.6 = std 0.2)")
    normalize_advantages: bool = Field(default=True, description="zero-mean, unit-std advantages over the batch")
    target_kl: float | None = Field(default=None, gt=0, description="stop the epochs early once the approximate "
                                                                    "KL to the behaviour policy exceeds this")
    bc_weight: float = Field(default=0.0, ge=0, description="weight of MSE(mean action, demo action) on a demo "
                                                           "minibatch per step (needs a demo buffer)")
    value_hidden: tuple[int, ...] | None = Field(default=None, description="value MLP widths (default: the actor "
                                                                           "head's)")
    # PPO's demo buffer only feeds the BC term: successes are on-policy data already, not demos.
    successes_to_demo: bool = Field(default=False, description="copy successful episodes into the demo buffer")
    publish_every: int = Field(default=1, ge=1, description="publish the head every this many updates (1: after "
                                                            "each update, else no new episode is on-policy)")
