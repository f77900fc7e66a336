"""The algorithm registry: names -> settings model + learner class; validation needs no JAX; one shared interface."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from irevla.config import ConfigError
from irevla.errors import UserError
from irevla.learner.config import LearnerConfig, PPOConfig
from irevla.learner.registry import ALGORITHMS, UnknownAlgorithmError, get_algorithm


def test_unknown_algorithm_is_a_user_error_listing_the_known_ones():
    with pytest.raises(UnknownAlgorithmError) as info:
        get_algorithm("dqn", where="learner.yaml: algorithm")
    assert isinstance(info.value, UserError) and isinstance(info.value, ConfigError)
    message = str(info.value)
    assert "learner.yaml: algorithm" in message and "'dqn'" in message
    assert all(name in message for name in ALGORITHMS)


def test_settings_validate_from_their_section_without_importing_jax():
    code = ("import sys; from irevla.learner.registry import get_algorithm; "
            "c = get_algorithm('ppo').config({'ppo': {'epochs': 2}}, 'x'); "
            "s = get_algorithm('sac').config({}, 'x'); "
            "assert c.epochs == 2 and s.sac.num_critics == 10; "
            "assert 'jax' not in sys.modules and 'torch' not in sys.modules, 'imported a framework'")
    subprocess.run([sys.executable, "-c", code], check=True)
    assert get_algorithm("sac").config_model is LearnerConfig and get_algorithm("ppo").config_model is PPOConfig
    with pytest.raises(ConfigError, match="x: ppo"):
        get_algorithm("ppo").config({"ppo": {"epochs": 0}}, "x")


def test_the_learner_library_imports_no_torch_and_no_application_layer():
    import irevla.learner

    for path in Path(irevla.learner.__file__).parent.glob("*.py"):
        text = path.read_text()
        for forbidden in ("import torch", "from torch", "irevla.robot", "irevla.policy", "irevla.iterate"):
            lines = [line for line in text.splitlines() if forbidden in line and line.lstrip().startswith(
                ("import", "from"))]
            assert not lines, (path.name, lines)


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_both_algorithms_share_intake_publishing_and_snapshots(name, tmp_path):
    pytest.importorskip("jax")
    from point_reach import point_spec

    from irevla.head_file import LOG_STD_NAME
    from irevla.learner.learner import Learner, SnapshotError
    from irevla.transport.messages import EpisodeEnd, Transition, pooled_latent

    entry = get_algorithm(name)
    small = {"sac": {"learner": {"warmup_transitions": 2, "sac": {"num_critics": 2, "batch_size": 4, "utd": 1}}},
             "ppo": {"ppo": {"episodes_per_update": 1, "minibatch_size": 4, "epochs": 1}}}[name]
    config = entry.config(small, "test")
    learner = entry.create(point_spec(), config, None)
    assert isinstance(learner, Learner) and learner.algorithm == name
    version, _ = learner.head_message()
    # One successful episode with a human step: SAC copies the success whole, PPO (successes_to_demo off by default)
    # the human's step only (interventions_to_demo: steps).
    demo = {"sac": 4, "ppo": 1}[name]
    for t in range(4):
        learner.ingest(Transition(0, t, *pooled_latent(np.full(16, t, np.float16)), np.zeros(2, np.float32),
                                  np.full(2, 0.5, np.float32), t == 1, version), "a")
    learner.ingest(EpisodeEnd(0, 4, True, *pooled_latent(np.zeros(16, np.float16)), np.zeros(2, np.float32)), "a")
    assert (learner.episodes, learner.successes, learner.received_transitions, len(learner.demo)) == (1, 1, 4, demo)
    assert learner.updates_allowed() >= 1
    learner.update()
    version, params = learner.head_message()
    assert learner.updates == 1 and params[LOG_STD_NAME].shape == (2,)
    learner.snapshot(tmp_path / "snap")
    restored = entry.restore(tmp_path / "snap", point_spec(), config)
    assert (restored.updates, restored.version, restored.episodes, len(restored.demo)) == (1, version, 1, demo)
    other = get_algorithm("ppo" if name == "sac" else "sac")
    with pytest.raises(SnapshotError, match="not a"):
        other.restore(tmp_path / "snap", point_spec(), other.config({}, "test"))

