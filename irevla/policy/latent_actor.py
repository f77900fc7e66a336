"""The stage-1 actor (torch side): the torch VLA encodes each observation once and acts with the head the learner sends.

`LatentActor` wraps a `VLAPolicy` whose backbone is frozen:

* `observe(observation)` runs the VLM once and returns the latent the learner stores -- the backbone's last hidden
  states (fp16 tokens + mask) or, with ``latent="pooled"``, the token learner's output (1, S * w) -- and keeps what
  the head needs to act on it;
* `act(explore)` gives the action in env units: ``tanh(mu)`` (the deployed policy, exactly the VLA's) or a sample
  ``tanh(mu + std * eps)`` with the learner's exploration std. ``eps`` is white (independent per step) or, with
  ``noise_beta > 0``, coloured noise over the episode (1 = pink; Eberhard et al., ICLR 2023): each step's marginal
  is still N(0, 1), so SAC's tanh-Gaussian is unchanged, but the low frequencies keep a drift for tens of steps,
  which explores a consistent offset (a target further right) that white noise averages away;
* `last_tokens` / `last_mask`: the VLM's last hidden states of the last observation (float32), in either latent
  mode: what a success detector reads (`irevla.reward.features`) without a second VLM pass;
* `start_episode()` draws the next episode's noise sequence;
* `apply_head(version, params)` loads what the learner published (``mlp.*`` only in pooled mode; the token learner
  then stays as it was when stage 1 started) between steps.

`irevla.iterate.actor.run_rl_episode` drives it through one simulated episode; the robot's rl_actor mode drives it
through `irevla.robot.policy_runner.LatentActorRunner`. Torch only: neither imports JAX.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from irevla.head_file import LOG_STD_NAME
from irevla.spec import Observation


class LatentActor:
    def __init__(self, policy, latent: str = "pooled", seed: int = 0, initial_log_std: float = -1.6,
                 noise_beta: float = 0.0, noise_horizon: int = 1000) -> None:
        if latent not in ("tokens", "pooled"):
            raise ValueError(f"LatentActor.latent: expected 'tokens' or 'pooled', got {latent!r}")
        if not 0.0 <= noise_beta <= 2.0:
            raise ValueError(f"LatentActor.noise_beta: expected 0 (white) .. 2 (red), got {noise_beta}")
        if noise_horizon < 2:
            raise ValueError(f"LatentActor.noise_horizon: expected >= 2 steps, got {noise_horizon}")
        self.noise_beta, self.noise_horizon = float(noise_beta), int(noise_horizon)
        self._noise: np.ndarray | None = None  # (horizon, dim) of the current episode when coloured
        self._noise_step = 0
        self.policy, self.latent_mode = policy, latent
        policy.freeze_backbone()
        policy.eval()
        self.version = 0
        self.log_std = np.full(policy.action_spec.dim, initial_log_std, np.float32)
        self.rng = np.random.default_rng(seed)
        self._pooled: torch.Tensor | None = None
        self._proprio_unit: torch.Tensor | None = None
        self.last_tokens: np.ndarray | None = None  # (m, d) float32 of the last observe()
        self.last_mask: np.ndarray | None = None

    def start_episode(self) -> None:
        """Draw the noise sequence of a new episode (coloured noise only; white noise needs no state)."""
        self._noise = None
        self._noise_step = 0

    def _eps(self, dim: int) -> np.ndarray:
        if self.noise_beta == 0.0:
            return self.rng.normal(size=dim)
        if self._noise is None or self._noise_step >= len(self._noise):  # an episode longer than the horizon
            from colorednoise import powerlaw_psd_gaussian

            # N(0, 1) marginals over episodes (a single sequence's own std is below 1: its lowest frequencies are
            # the episode's offset)
            self._noise = powerlaw_psd_gaussian(self.noise_beta, (dim, self.noise_horizon), random_state=self.rng).T
            self._noise_step = 0
        eps = self._noise[self._noise_step]
        self._noise_step += 1
        return eps

    @torch.inference_mode()
    def observe(self, observation: Observation) -> tuple[np.ndarray, np.ndarray]:
        """The latent message for `observation`: (tokens fp16 (m, d) + mask (m,)) or (pooled fp16 (1, D), [True])."""
        policy = self.policy
        images, instructions, proprio = policy.observations_to_batch([observation])
        latent = policy.encode({c: t.to(policy.device) for c, t in images.items()}, instructions).to(policy.device)
        head = policy.head
        tokens = latent.tokens.to(head.mlp.out.weight.dtype)
        self._pooled = head.token_learner(tokens, latent.mask)
        self._proprio_unit = policy.normalizer.proprio_to_unit(proprio.to(policy.device))
        # The VLM's own hidden states, whatever the latent mode: what a success detector reads (irevla.reward).
        self.last_tokens = latent.tokens[0].float().cpu().numpy()
        self.last_mask = latent.mask[0].cpu().numpy().astype(bool)
        if self.latent_mode == "pooled":
            return self._pooled.float().cpu().numpy().astype(np.float16), np.ones(1, bool)
        return tokens[0].float().cpu().numpy().astype(np.float16), latent.mask[0].cpu().numpy().astype(bool)

    @torch.inference_mode()
    def act(self, explore: bool) -> np.ndarray:
        """Env-unit action for the last observed observation (finite, clipped to the ActionSpec)."""
        if self._pooled is None:
            raise RuntimeError("LatentActor.act: observe() an observation first")
        head = self.policy.head
        parts = [self._pooled] + ([self._proprio_unit] if head.proprio_dim else [])
        mu = head.mlp(torch.cat(parts, dim=-1))[:, :head.action_dim].float().cpu().numpy()[0]
        if explore:
            mu = mu + np.exp(self.log_std) * self._eps(mu.shape[-1])
        unit = np.tanh(mu)
        action = self.policy.normalizer.action_from_unit(torch.from_numpy(unit.astype(np.float32))).numpy()
        if not np.isfinite(action).all():
            raise ValueError("LatentActor.act: non-finite action; refusing to send it to the env")
        return self.policy.action_spec.clip(action)

    def apply_head(self, version: int, params: Mapping[str, np.ndarray]) -> None:
        params = dict(params)
        log_std = params.pop(LOG_STD_NAME, None)
        if log_std is not None:
            self.log_std = np.asarray(log_std, np.float32).reshape(self.log_std.shape)
        state = self.policy.head_state()
        unknown = sorted(set(params) - set(state))
        if unknown:
            raise ValueError(f"head message version {version}: unknown tensors {unknown[:4]}")
        state.update({name: torch.as_tensor(np.array(array)) for name, array in params.items()})
        self.policy.load_head_state(state, where=f"head message version {version}")
        self.version = int(version)
