"""The paper's PPO baselines: stage 1 by PPO on the *whole* VLA (``rl.trains: whole``), nothing frozen.

iRe-VLA (Guo et al., 2025, Table I) compares its two-stage loop against "PPO": standard online RL that fine-tunes the
whole VLA on the new task, which the paper reports as unstable and forgetting the expert tasks, and "PPO-Replay":
the same with the expert data replayed. Here, in this process (no learner process, no cached latents):

* **policy**: the VLA's own action (``tanh`` unit space, first step of the chunk) as the mean of a Gaussian with a
  learned, state-independent ``log_std``; an executed action is the sample clipped to [-1, 1], mapped to env units
  and clipped to the ActionSpec. Images are re-encoded by the VLM at every update: its weights change (``full``
  backbone training unless ``rl.whole_ppo.backbone_training`` says otherwise).
* **value**: a fresh head of the VLA's head structure with one unsquashed output, on the same VLM tokens (the encoder
  is shared, as PPO with image inputs usually does).
* **rollouts**: ``rollout_episodes`` episodes side by side (one batched VLA call per step), then GAE(lambda) with the
  sparse reward (1 on the successful last step, terminal; a time limit bootstraps from the final observation's
  value), then ``epochs`` passes of clipped-surrogate + value + entropy updates in shuffled minibatches.
* **PPO-Replay** (``expert_replay > 0``): every minibatch adds ``expert_replay`` x the MSE between the VLA's action and
  an expert action of D_e (a random batch of ``replay_batch`` steps), the paper's "replay of expert data".

Successful episodes are written to D_RL like stage 1's (the report counts them; stage 2, if the run has it, uses
them). After each update ``rl-K/ppo-last`` holds the policy, value, ``log_std``, optimizer and progress (replaced as
one directory), so a killed stage resumes at its last finished iteration.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from irevla.atomic_io import new_temp_directory, replace_directory
from irevla.iterate.config import IterateConfig, TaskRef
from irevla.metrics_log import MetricsLog
from irevla.policy.head import ActionHead
from irevla.policy.vla import VLAPolicy
from irevla.spec import Observation

Log = Callable[[str], None]
LAST = "ppo-last"


@dataclass
class Rollouts:
    """One PPO iteration's transitions, in collection order per env (flattened at the end)."""

    images: dict[str, list[np.ndarray]] = field(default_factory=dict)
    instructions: list[str] = field(default_factory=list)
    proprio: list[np.ndarray] = field(default_factory=list)
    samples: list[np.ndarray] = field(default_factory=list)  # the Gaussian sample (unit space, before the clip)
    logp: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    advantages: list[float] = field(default_factory=list)
    returns: list[float] = field(default_factory=list)


def value_head(policy: VLAPolicy) -> ActionHead:
    """A critic with the head's structure on the VLM's tokens (+ proprio): one unsquashed output."""
    head = policy.head
    return ActionHead(head.config, head.latent_dim, len(policy.observation_spec.proprio_names), head.action_dim,
                      output_dim=1, squash=False).to(policy.device)


def _forward(policy: VLAPolicy, critic: ActionHead, images: dict[str, torch.Tensor], instructions: Sequence[str],
             proprio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(unit-space action mean (B, A), value (B,)) of one batch: one VLM encode shared by both heads."""
    latent = policy.encode(images, instructions)
    tokens = latent.tokens.to(policy.head.mlp.out.weight.dtype)
    proprio_unit = policy.normalizer.proprio_to_unit(proprio.to(tokens.device))
    mean = policy.head(tokens, latent.mask, proprio_unit)[:, 0]
    value = critic(tokens, latent.mask, proprio_unit if critic.proprio_dim else None)[:, 0]
    return mean, value


def _log_prob(mean: torch.Tensor, log_std: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
    var = torch.exp(2 * log_std)
    return (-((sample - mean) ** 2) / (2 * var) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


def _gae(rewards: list[float], values: list[float], last_value: float, terminal: bool, gamma: float,
         lam: float) -> list[float]:
    advantages = [0.0] * len(rewards)
    next_value, running = (0.0 if terminal else last_value), 0.0
    for t in reversed(range(len(rewards))):
        delta = rewards[t] + gamma * next_value - values[t]
        running = delta + gamma * lam * running
        advantages[t] = running
        next_value = values[t]
    return advantages


class ExpertReplay:
    """Random steps of D_e for PPO-Replay's behaviour-cloning term (images, instruction, proprio, env action)."""

    def __init__(self, dirs: Sequence[str], cameras: Sequence[str], rng: np.random.Generator) -> None:
        from irevla.data.store import EpisodeCollection

        self.episodes = [e for e in EpisodeCollection(list(dirs)).episodes() if e.success]
        if not self.episodes:
            raise ValueError(f"rl.whole_ppo.expert_replay: no successful expert episodes in {list(dirs)}")
        self.cameras, self.rng = list(cameras), rng

    def batch(self, size: int) -> tuple[dict[str, torch.Tensor], list[str], torch.Tensor, torch.Tensor]:
        picks = [(e, int(self.rng.integers(len(e.actions))))
                 for e in (self.episodes[i] for i in self.rng.integers(len(self.episodes), size=size))]
        images = {c: torch.from_numpy(np.stack([e.images[c][t] for e, t in picks])) for c in self.cameras}
        proprio = torch.from_numpy(np.stack([e.proprio[t] for e, t in picks]).astype(np.float32))
        actions = torch.from_numpy(np.stack([e.actions[t] for e, t in picks]).astype(np.float32))
        return images, [e.instruction for e, _ in picks], proprio, actions


def _save_last(stage_dir: Path, policy: VLAPolicy, critic: ActionHead, log_std: torch.Tensor,
               optimizer: torch.optim.Optimizer, state: dict) -> None:
    from irevla.policy.checkpoint import save_policy
    from irevla.policy.trainer_state import optimizer_state_to_files

    target = stage_dir / LAST
    temp = new_temp_directory(target)
    save_policy(policy, temp / "policy", info={"stage": state["stage"], "iteration": state["iterations"]})
    save_file({**{f"value.{k}": v.detach().contiguous() for k, v in critic.state_dict().items()},
               "log_std": log_std.detach().contiguous()}, str(temp / "ppo.safetensors"))
    optimizer_json = optimizer_state_to_files(optimizer, _group_names(policy), temp)
    (temp / "trainer.json").write_text(json.dumps({"format": "irevla-whole-ppo", "version": 1, **state,
                                                   "optimizer": optimizer_json}, indent=1))
    replace_directory(temp, target)


def _group_names(policy: VLAPolicy) -> list[list[str]]:
    return [[f"backbone.{n}" for n, p in policy.backbone.named_parameters() if p.requires_grad],
            [f"head.{n}" for n, _ in policy.head.named_parameters()] + ["value.*", "log_std"]]


def stage_rl_whole(config: IterateConfig, run_dir: Path, k: int, policy_path: str, log: Log,
                   progress: Callable[[dict], None] | None, metrics: MetricsLog) -> dict:
    """Stage 1 of RL task k by PPO on the whole VLA; returns the stage's outputs (as `irevla.iterate.loop`'s)."""
    from irevla.data.episode import EpisodeBuilder
    from irevla.data.store import EpisodeStore
    from irevla.iterate.envs import make_task_env
    from irevla.policy.checkpoint import load_policy, save_policy
    from irevla.policy.trainer_state import load_optimizer_state

    ref: TaskRef = config.rl_tasks[k - 1]
    rl, settings = config.rl, config.rl.whole_ppo
    stage_dir = run_dir / f"rl-{k}"
    stage_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(config.threads)
    last = stage_dir / LAST
    resumed = (last / "trainer.json").is_file()
    policy = load_policy(last / "policy" if resumed else policy_path)
    policy.set_backbone_training(settings.backbone_training)
    critic = value_head(policy)
    log_std = torch.nn.Parameter(torch.full((len(policy.action_spec.names),), settings.initial_log_std))
    backbone, head = policy.parameter_groups()
    optimizer = torch.optim.Adam([{"params": backbone, "lr": settings.lr},
                                  {"params": [*head, *critic.parameters(), log_std], "lr": settings.head_lr}])
    state = {"stage": f"rl-{k}", "iterations": 0, "episodes": 0, "env_steps": 0, "successes": 0, "history": []}
    if resumed:
        trainer = json.loads((last / "trainer.json").read_text())
        tensors = load_file(str(last / "ppo.safetensors"))
        critic.load_state_dict({name.removeprefix("value."): t for name, t in tensors.items()
                                if name.startswith("value.")})
        with torch.no_grad():
            log_std.copy_(tensors["log_std"])
        load_optimizer_state(optimizer, _group_names(policy), last, trainer["optimizer"])
        state = {key: trainer[key] for key in state}
        log(f"rl-{k}: PPO on the whole VLA resumes after iteration {state['iterations']} "
            f"({state['env_steps']} env steps)")
    rng = np.random.default_rng([rl.seed, k, state["iterations"]])
    replay = ExpertReplay(config.expert_dirs(run_dir), policy.cameras, rng) if settings.expert_replay > 0 else None
    image_size = policy.observation_spec.cameras[policy.cameras[0]][0]
    d_rl = EpisodeStore(run_dir / "d_rl")
    envs = [make_task_env(config, ref, cameras=policy.cameras, image_size=image_size,
                          max_episode_steps=rl.max_episode_steps) for _ in range(settings.rollout_episodes)]
    spec = envs[0].task_spec.action_spec
    started = time.monotonic()
    try:
        while state["env_steps"] < rl.max_env_steps:
            batch, outcomes, steps = _collect(envs, policy, critic, log_std, state, ref, k, rl, settings, d_rl,
                                              spec, EpisodeBuilder)
            stats = _update(policy, critic, log_std, optimizer, batch, settings, replay, rng)
            state["iterations"] += 1
            state["env_steps"] += steps
            state["episodes"] += len(outcomes)
            state["successes"] += sum(outcomes)
            state["history"].append({"iteration": state["iterations"], "env_steps": state["env_steps"],
                                     "success": float(np.mean(outcomes)), **stats})
            metrics.write({"step": state["env_steps"], "iteration": state["iterations"],
                           "rollout_success": float(np.mean(outcomes)), "successes": state["successes"], **stats})
            _save_last(stage_dir, policy, critic, log_std, optimizer, state)
            log(f"rl-{k} PPO iteration {state['iterations']}: {sum(outcomes)}/{len(outcomes)} successes, "
                f"{state['env_steps']}/{rl.max_env_steps} env steps, " +
                ", ".join(f"{key} {value:.3g}" for key, value in stats.items()))
            if progress is not None:
                rolling = [h["success"] for h in state["history"][-3:]]
                progress({"episodes": state["episodes"], "env_steps": state["env_steps"], "budget": rl.max_env_steps,
                          "rolling": float(np.mean(rolling)), "collecting": False, "successes": state["successes"],
                          "elapsed": time.monotonic() - started})
    finally:
        for env in envs:
            env.close()
    save_policy(policy, stage_dir / "policy", info={"stage": f"rl-{k}", "task": ref.label, "method": "whole-ppo",
                                                    "episodes": state["episodes"], "env_steps": state["env_steps"]})
    return {"policy": str(stage_dir / "policy"), "trains": "whole", "episodes": state["episodes"],
            "env_steps": state["env_steps"], "successes": state["successes"], "iterations": state["iterations"],
            "expert_replay": settings.expert_replay,
            "explore_success": state["successes"] / state["episodes"] if state["episodes"] else None}


@torch.no_grad()
def _collect(envs, policy, critic, log_std, state, ref, k, rl, settings, d_rl, spec, builder_type):
    """``len(envs)`` episodes side by side with the current weights; successes go to D_RL."""
    from irevla.sim.episode_loop import EpisodeStepper

    policy.eval()
    critic.eval()
    seeds = [20_000 * (rl.seed + 1) + state["episodes"] + i for i in range(len(envs))]
    steppers = [EpisodeStepper(env, seed, builder_type(env.task_spec, source="rl", round=k, metadata={
        "task": ref.task, "variation": ref.variation, "variation_seed": ref.variation_seed, "stage": f"rl-{k}",
        "episode": state["episodes"] + i, "seed": seed, "method": "whole-ppo"}))
        for i, (env, seed) in enumerate(zip(envs, seeds, strict=True))]
    per_env = [Rollouts() for _ in envs]
    std = torch.exp(log_std)
    while not all(s.done for s in steppers):
        live = [i for i, s in enumerate(steppers) if not s.done]
        observations = [Observation.from_gym(steppers[i].obs) for i in live]
        images, instructions, proprio = policy.observations_to_batch(observations)
        mean, value = _forward(policy, critic, images, instructions, proprio)
        sample = mean + std * torch.randn_like(mean)
        logp = _log_prob(mean, log_std, sample)
        executed = policy.normalizer.action_from_unit(sample.clamp(-1.0, 1.0)[:, None])[:, 0].numpy()
        for row, i in enumerate(live):
            buffer, observation = per_env[i], observations[row]
            for camera in policy.cameras:
                buffer.images.setdefault(camera, []).append(observation.images[camera])
            buffer.instructions.append(observation.instruction)
            buffer.proprio.append(observation.proprio.astype(np.float32))
            buffer.samples.append(sample[row].numpy())
            buffer.logp.append(float(logp[row]))
            buffer.values.append(float(value[row]))
            steppers[i].step(spec.clip(executed[row]))
    batch, outcomes, steps = Rollouts(), [], 0
    for stepper, buffer in zip(steppers, per_env, strict=True):
        success, n, episode = stepper.result()
        outcomes.append(bool(success))
        steps += n
        if success:
            d_rl.write(episode)
            last_value = 0.0
        else:
            final = Observation.from_gym(stepper.obs)
            images, instructions, proprio = policy.observations_to_batch([final])
            last_value = float(_forward(policy, critic, images, instructions, proprio)[1][0])
        rewards = [0.0] * n
        if success:
            rewards[-1] = 1.0
        advantages = _gae(rewards, buffer.values, last_value, bool(success), settings.gamma, settings.gae_lambda)
        buffer.advantages = advantages
        buffer.returns = [a + v for a, v in zip(advantages, buffer.values, strict=True)]
        for camera, frames in buffer.images.items():
            batch.images.setdefault(camera, []).extend(frames)
        for name in ("instructions", "proprio", "samples", "logp", "values", "advantages", "returns"):
            getattr(batch, name).extend(getattr(buffer, name))
    return batch, outcomes, steps


def _update(policy, critic, log_std, optimizer, batch: Rollouts, settings, replay, rng) -> dict[str, float]:
    policy.train()
    critic.train()
    n = len(batch.logp)
    images = {c: torch.from_numpy(np.stack(frames)) for c, frames in batch.images.items()}
    proprio = torch.from_numpy(np.stack(batch.proprio))
    samples = torch.from_numpy(np.stack(batch.samples))
    old_logp = torch.tensor(batch.logp)
    advantages = torch.tensor(batch.advantages)
    returns = torch.tensor(batch.returns)
    if n > 1 and float(advantages.std()) > 0:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    totals: dict[str, list[float]] = {"policy_loss": [], "value_loss": [], "approx_kl": [], "clip_fraction": []}
    if replay is not None:
        totals["replay_loss"] = []
    for _ in range(settings.epochs):
        order = rng.permutation(n)
        for start in range(0, n, settings.minibatch):
            idx = torch.from_numpy(order[start:start + settings.minibatch])
            mean, value = _forward(policy, critic, {c: t[idx] for c, t in images.items()},
                                   [batch.instructions[i] for i in idx.tolist()], proprio[idx])
            logp = _log_prob(mean, log_std, samples[idx])
            ratio = torch.exp(logp - old_logp[idx])
            adv = advantages[idx]
            policy_loss = -torch.min(ratio * adv, ratio.clamp(1 - settings.clip, 1 + settings.clip) * adv).mean()
            value_loss = ((value - returns[idx]) ** 2).mean()
            entropy = (log_std + 0.5 * math.log(2 * math.pi * math.e)).sum()
            loss = policy_loss + settings.value_coef * value_loss - settings.entropy_coef * entropy
            if replay is not None:
                r_images, r_instructions, r_proprio, r_actions = replay.batch(settings.replay_batch)
                r_mean, _ = _forward(policy, critic, r_images, r_instructions, r_proprio)
                target = policy.normalizer.action_to_unit(r_actions)
                replay_loss = ((r_mean - target) ** 2).mean()
                loss = loss + settings.expert_replay * replay_loss
                totals["replay_loss"].append(float(replay_loss.detach()))
            if not torch.isfinite(loss):
                raise FloatingPointError(f"whole-model PPO: the loss is {float(loss)}; lower rl.whole_ppo.lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, settings.max_grad_norm)
            optimizer.step()
            with torch.no_grad():
                log_std.clamp_(-5.0, 0.0)
            totals["policy_loss"].append(float(policy_loss))
            totals["value_loss"].append(float(value_loss))
            totals["approx_kl"].append(float(((ratio - 1) - torch.log(ratio)).mean()))
            totals["clip_fraction"].append(float(((ratio - 1).abs() > settings.clip).float().mean()))
    stats = {key: float(np.mean(values)) for key, values in totals.items()}
    stats["std"] = float(torch.exp(log_std).mean())
    return stats
