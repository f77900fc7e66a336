"""What passes between the torch VLA and the stage-1 learner, both ways -- one implementation for the loop and the CLI.

* `write_learner_init`: a policy -> the directory ``irevla learner serve --init`` starts from (``spec.json``: the
  head's sizes and normaliser constants; ``head.safetensors``: the starting head; ``learner.yaml``: the learner's
  settings; ``demo.safetensors``: the demo buffer, the successful episodes of some episode stores encoded once by
  the frozen VLM; ``done``: the directory is complete). `irevla iterate` writes one per RL stage
  (``rl-K/learner_init``); on the robot ``irevla learner init`` writes it from a checkpoint and the teleop demos.
* `merge_head_file`: the learner's trained head (``<learner out>/head.safetensors``) -> back into the policy, which
  is then saved as the checkpoint stage 2 / deployment starts from (`irevla iterate` after stage 1;
  ``irevla learner export`` on the robot).

Importing this module is cheap (no torch, no jax): the CLI's error handling imports `HandoffError` from it.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from irevla.errors import UserError

Log = Callable[[str], None]

INIT_FILES = ("spec.json", "head.safetensors", "learner.yaml", "demo.safetensors")
DONE = "done"  # written last: a learner_init directory without it is incomplete
SETTINGS_KEYS = ("algorithm", "learner", "ppo")  # the learner parts of a loop config's ``rl:`` section


class HandoffError(UserError, ValueError):
    """A learner_init directory or an exported head cannot be made from what was given (names the file)."""


@dataclass(frozen=True)
class InitSummary:
    """What `write_learner_init` put into the demo buffer."""

    path: Path
    latent: str
    algorithm: str
    episodes: int  # successful episodes encoded
    observations: int  # observations added (each episode: steps + 1)
    transitions: int  # sampleable transitions in the saved buffer
    demo_capacity: int
    tasks: tuple[str, ...]  # full task names of the encoded episodes

    @property
    def overflowed(self) -> bool:
        """More observations than the buffer holds: the oldest were overwritten."""
        return self.observations > self.demo_capacity


def is_complete_init(directory: str | Path) -> bool:
    return (Path(directory) / DONE).is_file()


def load_learner_settings(path: str | Path | None):
    """(algorithm, LearnerConfig, ppo dict) from a YAML holding the learner parts of a loop config's ``rl:`` section
    (``algorithm``, ``learner``, ``ppo``; each optional, validated as `RLConfig` validates them); defaults for None.
    """
    from irevla.config import ConfigError, read_config_mapping, validate_config
    from irevla.iterate.config import RLConfig

    data: dict = {}
    if path is not None:
        path = Path(path)
        data = read_config_mapping(path)
        unknown = sorted(set(data) - set(SETTINGS_KEYS))
        if unknown:
            raise ConfigError(f"{path}: unknown key(s) {unknown}: expected only {list(SETTINGS_KEYS)} (the learner "
                              f"parts of a loop config's rl: section)")
    # RLConfig checks the algorithm against the registry (its error lists the known ones), the SAC settings and the
    # ppo section (pydantic only, no JAX): the loop config and this file are validated by the same code.
    rl = validate_config(data, RLConfig, str(path) if path is not None else "<defaults>")
    return rl.algorithm, rl.learner, dict(rl.ppo)


def write_learner_init(directory: str | Path, policy, *, latent: str, algorithm: str, learner, ppo: Mapping[str, Any],
                       demo_dirs: Sequence[str | Path] | None = None, task: str | None = None,
                       log: Log = print, progress: bool = False) -> InitSummary:
    """Write the learner's starting directory for `policy` (a `VLAPolicy`) at `directory`, replacing what is there.

    `learner` is a `LearnerConfig` (its ``demo_capacity`` sizes the demo buffer), `ppo` the raw ``rl.ppo`` mapping.
    With `demo_dirs`, every successful episode there (of `task`: its name or full name; None: every task) goes
    into the demo buffer, encoded once by the policy's frozen VLM (which this freezes and puts in eval mode);
    without, the demo buffer is empty. Everything is written into a temporary directory next to `directory` and
    renamed into place at the end, ``done`` last: a failure leaves `directory` as it was. `progress` shows a bar
    over the episodes being encoded (the long part: one VLM pass per observation).
    """
    import numpy as np

    from irevla.atomic_io import atomic_write_text, atomic_write_yaml, new_temp_directory, replace_directory
    from irevla.data.store import EpisodeCollection, read_episode
    from irevla.learner.flax_head import HeadSpec
    from irevla.learner.replay import LatentReplay, ReplayError
    from irevla.policy.checkpoint import save_head
    from irevla.spec import ContractError

    if latent not in ("pooled", "tokens"):
        raise HandoffError(f"{directory}: latent: expected 'pooled' or 'tokens', got {latent!r}")
    directory = Path(directory)
    temp = new_temp_directory(directory)
    try:
        spec = HeadSpec.from_policy(policy, latent=latent)
        atomic_write_text(temp / "spec.json", json.dumps(spec.to_dict(), indent=1))
        save_head(temp / "head.safetensors", policy.head_state(), {"latent": spec.latent})
        learner_settings = {"algorithm": algorithm, "learner": learner.model_dump(mode="json"), "ppo": dict(ppo)}
        atomic_write_yaml(temp / "learner.yaml", learner_settings)
        demo = LatentReplay(learner.demo_capacity, spec.latent_shape, spec.proprio_dim, spec.action_dim,
                            with_mask=spec.latent == "tokens")
        episodes = observations = 0
        tasks: dict[str, None] = {}
        if demo_dirs is not None:
            from tqdm import tqdm

            from irevla.policy.latent_actor import LatentActor

            actor = LatentActor(policy, latent)
            # One episode in memory at a time (images included), in EpisodeCollection.episodes' order.
            infos = EpisodeCollection(demo_dirs).index(task=task, success=True)
            for info in tqdm(infos, desc="encoding demos", unit="ep", disable=not progress, dynamic_ncols=True):
                episode = read_episode(info.path)
                if episode.actions.shape[1] != spec.action_dim:
                    raise HandoffError(f"{info.path}: actions have {episode.actions.shape[1]} values per step, "
                                       f"the policy's head {spec.action_dim} {list(spec.action_names)}")
                try:
                    latents, masks = [], []
                    for t in range(episode.n_steps + 1):
                        tokens, mask = actor.observe(episode.observation(t))
                        latents.append(tokens.reshape(spec.latent_shape))
                        masks.append(mask)
                    actions = spec.action_to_unit(episode.actions.astype(np.float32))
                    demo.add_episode(np.stack(latents), np.stack(masks) if spec.latent == "tokens" else None,
                                     episode.proprio, actions, success=True)
                except (ContractError, ReplayError, ValueError) as exc:
                    raise HandoffError(f"{info.path}: cannot go into the demo buffer of this policy: {exc}") from None
                episodes += 1
                observations += episode.n_steps + 1
                tasks[episode.task.full_name] = None
            log(f"demo buffer: {episodes} expert episodes of {task or 'every task'} ({len(demo)} transitions) "
                f"encoded once")
        demo.save(temp / "demo.safetensors")
        atomic_write_text(temp / DONE, "ok\n")
        replace_directory(temp, directory)
    finally:
        if temp.exists():
            shutil.rmtree(temp, ignore_errors=True)
    return InitSummary(path=directory, latent=spec.latent, algorithm=algorithm, episodes=episodes,
                       observations=observations, transitions=len(demo), demo_capacity=learner.demo_capacity,
                       tasks=tuple(tasks))


def merge_head_file(policy, head_path: str | Path) -> dict[str, Any]:
    """Load the head file at `head_path` into `policy` (a `VLAPolicy`); returns the file's metadata.

    The file may hold a subset of the head (pooled latents: the learner trains ``mlp.*`` only); the rest stays as
    it is. Every name and shape is checked before anything changes: an error (`ContractError`, `CheckpointError`)
    names the file and the tensor, and leaves the policy as it was.
    """
    from irevla.policy.checkpoint import load_head

    head, metadata = load_head(head_path)
    merged = policy.head_state()
    merged.update(head)
    policy.load_head_state(merged, where=str(head_path))
    return metadata
