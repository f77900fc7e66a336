"""Episode validation (errors name the field) and the step-by-step EpisodeBuilder."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from episode_factory import make_episode, make_task

from irevla.data.episode import Episode, EpisodeBuilder
from irevla.spec import Action, ContractError, Observation


def replace(episode: Episode, **changes) -> Episode:
    return dataclasses.replace(episode, **changes)


def test_valid_episode_properties() -> None:
    episode = make_episode(1, n_steps=5)
    assert episode.n_steps == 5
    assert episode.cameras == ("corner2",)
    assert episode.actions.dtype == np.float32 and episode.proprio.shape == (6, 4)
    assert episode == make_episode(1, n_steps=5)
    assert episode != make_episode(2, n_steps=5)
    observation = episode.observation(5)
    assert np.array_equal(observation.images["corner2"], episode.images["corner2"][5])
    assert observation.timestamp == episode.timestamps[5]


def test_numeric_inputs_are_converted_to_the_stored_dtypes() -> None:
    episode = make_episode(1, n_steps=4)
    converted = replace(episode, actions=episode.actions.astype(np.float64), rewards=[0, 1, 0, 1])
    assert converted.actions.dtype == np.float32 and converted.rewards.dtype == np.float32


def test_task_and_metadata_are_normalised_through_json() -> None:
    episode = replace(make_episode(1), metadata={"seed": np.int64(3), "pair": (1, 2)})
    assert episode.metadata == {"seed": 3, "pair": [1, 2]}
    assert isinstance(episode.metadata["seed"], int)


@pytest.mark.parametrize("changes, message", [
    (lambda e: {"actions": e.actions[:, :3]}, "Episode.actions: expected shape (5, 4)"),
    (lambda e: {"actions": e.actions[:4]}, "Episode.proprio: expected shape (5, 4)"),
    (lambda e: {"rewards": e.rewards[:4]}, "Episode.rewards: expected shape (5,)"),
    (lambda e: {"actions": e.actions[:0]}, "Episode.actions: episode has no steps"),
    (lambda e: {"actions": np.where(np.arange(4) == 2, np.nan, e.actions)}, "Episode.actions: non-finite"),
    (lambda e: {"actions": e.actions.astype(str)}, "Episode.actions: expected a numeric array"),
    (lambda e: {"images": {"wrist": e.images["corner2"]}}, "Episode.images: cameras ['wrist'] do not match"),
    (lambda e: {"images": {}}, "Episode.images: expected a non-empty dict"),
    (lambda e: {"images": {"corner2": e.images["corner2"].astype(np.float32)}},
     "Episode.images['corner2']: expected a uint8 array, got float32"),
    (lambda e: {"images": {"corner2": e.images["corner2"][:, :8]}}, "Episode.images['corner2']: expected shape"),
    (lambda e: {"images": {"corner2": e.images["corner2"][:5]}}, "Episode.images['corner2']: expected shape"),
    (lambda e: {"source": "human"}, "Episode.source: expected one of"),
    (lambda e: {"round": -1}, "Episode.round"),
    (lambda e: {"success": "yes"}, "Episode.success"),
    (lambda e: {"instruction": None}, "Episode.instruction"),
    (lambda e: {"schema_version": 7}, "Episode.schema_version"),
    (lambda e: {"created": "yesterday"}, "Episode.created: not an ISO-8601 time"),
    (lambda e: {"created": "2025-01-01T00:00:00"}, "Episode.created: time '2025-01-01T00:00:00' has no timezone"),
    (lambda e: {"timestamps": np.zeros(3)}, "Episode.timestamps: expected shape (6,)"),
    (lambda e: {"interventions": np.zeros(5, dtype=np.int8)}, "Episode.interventions: expected dtype bool"),
    (lambda e: {"interventions": np.zeros(4, dtype=bool)}, "Episode.interventions: expected shape (5,)"),
    (lambda e: {"metadata": {"when": object()}}, "Episode.metadata: must be JSON-serialisable"),
    (lambda e: {"metadata": {"x": float("nan")}}, "Episode.metadata: must be JSON-serialisable"),
    (lambda e: {"metadata": [1, 2]}, "Episode.metadata: expected a dict"),
    (lambda e: {"task": "button-press"}, "Episode.task: expected irevla.spec.TaskSpec"),
])
def test_invalid_episode_names_the_field(changes, message) -> None:
    episode = make_episode(1, n_steps=5)
    with pytest.raises(ContractError) as error:
        replace(episode, **changes(episode))
    assert message in str(error.value)


def test_action_dim_is_checked_against_the_task() -> None:
    metaworld = make_episode(1, n_steps=5)
    with pytest.raises(ContractError, match=r"Episode.actions: expected shape \(5, 7\)"):
        replace(metaworld, task=make_task(real_robot=True))


# ----------------------------------------------------------------------------------------------------- builder
def observation(rng: np.random.Generator, t: int, size: int = 16, instruction: str = "do button-press-v3"):
    return Observation(images={"corner2": rng.integers(0, 256, (size, size, 3), dtype=np.uint8)},
                       proprio=rng.standard_normal(4).astype(np.float32), instruction=instruction, timestamp=0.1 * t)


def test_builder_records_steps_into_an_episode() -> None:
    rng = np.random.default_rng(0)
    task = make_task()
    builder = EpisodeBuilder(task, source="rl", round=2, metadata={"seed": 7})
    observations = [observation(rng, t) for t in range(4)]
    actions = [rng.uniform(-1, 1, 4) for _ in range(3)]
    for t in range(3):
        builder.add(observations[t], Action(actions[t], task.action_spec) if t == 0 else actions[t], reward=float(t))
        assert len(builder) == t + 1
    episode = builder.finish(observations[3], success=True)

    assert episode.n_steps == 3 and episode.success and episode.source == "rl" and episode.round == 2
    assert episode.instruction == "do button-press-v3" and episode.task == task
    assert np.array_equal(episode.images["corner2"], np.stack([o.images["corner2"] for o in observations]))
    assert np.array_equal(episode.proprio, np.stack([o.proprio for o in observations]))
    assert np.array_equal(episode.actions, np.stack(actions).astype(np.float32))
    assert np.array_equal(episode.rewards, [0.0, 1.0, 2.0])
    assert np.array_equal(episode.timestamps, [0.1 * t for t in range(4)])
    assert episode.interventions is None  # nobody said anything about interventions
    assert episode.metadata == {"seed": 7}


def test_builder_copies_frames_because_envs_reuse_buffers() -> None:
    builder = EpisodeBuilder(make_task(), source="script")
    buffer = np.zeros((16, 16, 3), dtype=np.uint8)
    first = Observation({"corner2": buffer}, np.zeros(4, np.float32), "x")
    builder.add(first, np.zeros(4), 0.0)
    buffer[:] = 255  # the env renders the next frame into the same buffer
    episode = builder.finish(Observation({"corner2": buffer}, np.zeros(4, np.float32), "x"), success=False)
    assert episode.images["corner2"][0].max() == 0 and episode.images["corner2"][1].min() == 255


def test_builder_records_interventions_when_given() -> None:
    rng = np.random.default_rng(0)
    builder = EpisodeBuilder(make_task(), source="intervention")
    builder.add(observation(rng, 0), np.zeros(4), 0.0)
    builder.add(observation(rng, 1), np.zeros(4), 0.0, intervention=True)
    episode = builder.finish(observation(rng, 2), success=False)
    assert episode.interventions.tolist() == [False, True]


def test_builder_errors_name_the_step() -> None:
    rng = np.random.default_rng(0)
    builder = EpisodeBuilder(make_task(), source="teleop")
    builder.add(observation(rng, 0), np.zeros(4), 0.0)
    with pytest.raises(ContractError, match=r"step 1: Observation.images\['corner2'\]: expected 16x16, got 8x8"):
        builder.add(observation(rng, 1, size=8), np.zeros(4), 0.0)
    with pytest.raises(ContractError, match="step 1: action: expected 4 values, got 7"):
        builder.add(observation(rng, 1), np.zeros(7), 0.0)
    with pytest.raises(ContractError, match="step 1: reward: expected a finite number"):
        builder.add(observation(rng, 1), np.zeros(4), float("nan"))
    with pytest.raises(ContractError, match="step 1: Observation.instruction 'other' differs"):
        builder.add(observation(rng, 1, instruction="other"), np.zeros(4), 0.0)
    with pytest.raises(ContractError, match=r"finish \(observation 1\)"):
        builder.finish(observation(rng, 1, size=8), success=True)
    assert len(builder) == 1  # failed calls recorded nothing
    builder.finish(observation(rng, 1), success=True)
    with pytest.raises(ContractError, match="already finished"):
        builder.add(observation(rng, 2), np.zeros(4), 0.0)


def test_builder_needs_a_step_and_a_known_source() -> None:
    with pytest.raises(ContractError, match="EpisodeBuilder.source"):
        EpisodeBuilder(make_task(), source="human")
    builder = EpisodeBuilder(make_task(), source="script")
    with pytest.raises(ContractError, match="no steps recorded"):
        builder.finish(observation(np.random.default_rng(0), 0), success=True)
