"""One place that knows every simulated env family: build an env and its scripted expert by name.

`make_env(SimConfig)` / `make_env_by_name("metaworld", "drawer-open-v3", ...)` return a `ContractEnv`;
`make_expert(env)` returns ``act(obs, info) -> action`` for the env's task.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from irevla.config import SimConfig
from irevla.sim.base import ContractEnv, UnknownTaskError

FAMILIES = ("metaworld", "kitchen")
Expert = Callable[[dict, dict], np.ndarray]


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        raise UnknownTaskError(f"unknown simulation family {family!r}; choose one of {FAMILIES}")


def task_names(family: str) -> list[str]:
    _check_family(family)
    if family == "metaworld":
        from irevla.sim.metaworld import task_names as names
    else:
        from irevla.sim.kitchen import task_names as names
    return names()


def make_env_by_name(family: str, task: str, *, cameras=None, image_size: int = 128, fast: bool = True,
                     max_episode_steps: int | None = None, variation: str = "", variation_seed: int = 0,
                     **kwargs: Any) -> ContractEnv:
    _check_family(family)
    common = dict(image_size=image_size, fast=fast, max_episode_steps=max_episode_steps, variation=variation,
                  variation_seed=variation_seed, **kwargs)
    if cameras is not None:
        common["cameras"] = tuple(cameras)
    if family == "metaworld":
        from irevla.sim.metaworld import MetaWorldEnv

        return MetaWorldEnv(task, **common)
    from irevla.sim.kitchen import KitchenEnv

    return KitchenEnv(task, **common)


def make_env(config: SimConfig, **kwargs: Any) -> ContractEnv:
    return make_env_by_name(config.family, config.task, cameras=config.render.cameras,
                            image_size=config.render.image_size, fast=config.render.fast,
                            max_episode_steps=config.max_episode_steps, variation=config.variation,
                            variation_seed=config.variation_seed, **kwargs)


def make_expert(env: ContractEnv) -> Expert:
    """The scripted expert of the env's task: ``act(obs, info) -> action`` in the env's action space.

    Meta-World ships its experts with the env (`MetaWorldEnv.expert`); Kitchen's live in `irevla.sim.kitchen_expert`,
    which imports the env, so the env module never imports its expert: the choice is made here."""
    family = getattr(env, "unwrapped", env).task_spec.family
    if family == "kitchen":
        from irevla.sim.kitchen_expert import make_expert as kitchen_expert

        return kitchen_expert(env)
    return env.expert()
