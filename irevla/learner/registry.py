"""The stage-1 algorithms by name: each with its settings model (pydantic, no JAX) and its learner class.

``irevla learner serve`` and `irevla.iterate.handoff.load_learner_settings` look algorithms up here; the learner
class is imported only when asked for (`Algorithm.learner_class`), so validating settings never imports JAX.
A new algorithm is a `Learner` subclass in its own module plus one entry in `ALGORITHMS`.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from irevla.config import ConfigError, validate_config
from irevla.learner.config import LearnerBaseConfig, LearnerConfig, PPOConfig

if TYPE_CHECKING:
    from irevla.learner.flax_head import HeadSpec
    from irevla.learner.learner import Learner
    from irevla.learner.replay import LatentReplay


class UnknownAlgorithmError(ConfigError):
    """An algorithm name that is not in `ALGORITHMS` (the message lists the known ones)."""


@dataclass(frozen=True)
class Algorithm:
    name: str
    summary: str
    config_model: type[LearnerBaseConfig]
    section: str  # the key of its settings in learner.yaml / a loop config's ``rl:`` section
    learner: str  # "module:Class" of its `Learner` subclass (imports JAX)

    def config(self, settings: Mapping[str, Any], where: str) -> LearnerBaseConfig:
        """Its settings model from a learner.yaml / ``rl:`` mapping (the `section` key; defaults when absent)."""
        return validate_config(settings.get(self.section) or {}, self.config_model, f"{where}: {self.section}")

    def learner_class(self) -> type[Learner]:
        module, name = self.learner.split(":")
        return getattr(importlib.import_module(module), name)

    def create(self, spec: HeadSpec, config: LearnerBaseConfig, actor_state: Mapping[str, Any] | None,
               demo: LatentReplay | None = None) -> Learner:
        return self.learner_class()(spec, config, actor_state, demo=demo)

    def restore(self, directory: str | Path, spec: HeadSpec, config: LearnerBaseConfig) -> Learner:
        return self.learner_class().restore(directory, spec, config)


ALGORITHMS: dict[str, Algorithm] = {
    "sac": Algorithm("sac", "SACfD / RLPD with a REDQ ensemble (the paper's real-robot method)", LearnerConfig,
                     "learner", "irevla.learner.sac:SACLearner"),
    "ppo": Algorithm("ppo", "PPO on whole on-policy episodes (the paper's simulation comparison)", PPOConfig,
                     "ppo", "irevla.learner.ppo:PPOLearner"),
}


def get_algorithm(name: str, where: str = "algorithm") -> Algorithm:
    try:
        return ALGORITHMS[name]
    except (KeyError, TypeError):
        known = ", ".join(f"{key} ({entry.summary})" for key, entry in ALGORITHMS.items())
        raise UnknownAlgorithmError(f"{where}: unknown algorithm {name!r}; known: {known}") from None
