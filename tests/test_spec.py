"""The contract: construction, validation errors that name the field, JSON round trips."""

import numpy as np
import pytest

from irevla.spec import METAWORLD_PROPRIO, Action, ActionSpec, ContractError, Observation, ObservationSpec, TaskSpec


def _obs(**overrides):
    fields = dict(images={"wrist": np.zeros((8, 10, 3), np.uint8)}, proprio=np.zeros(4, np.float32),
                  instruction="open the drawer", timestamp=1.5)
    fields.update(overrides)
    return Observation(**fields)


def test_observation_accepts_the_contract_and_converts_proprio():
    obs = _obs(proprio=[1, 2, 3, 4])
    assert obs.proprio.dtype == np.float32 and obs.timestamp == 1.5
    spec = ObservationSpec(cameras={"wrist": (8, 10)}, proprio_names=METAWORLD_PROPRIO)
    assert obs.check(spec) is obs


@pytest.mark.parametrize("overrides, message", [
    (dict(images={"wrist": np.zeros((8, 10, 3), np.float32)}), r"Observation.images\['wrist'\]: expected uint8"),
    (dict(images={"wrist": np.zeros((8, 10), np.uint8)}), r"Observation.images\['wrist'\]: expected uint8 HxWx3"),
    (dict(images={}), "Observation.images: expected a non-empty dict"),
    (dict(proprio=np.zeros((2, 2))), "Observation.proprio: expected a 1-D vector"),
    (dict(proprio=[0.0, np.nan]), r"Observation.proprio: non-finite values \(NaN/inf\) at indices \[1\]"),
    (dict(proprio=["a", "b"]), "Observation.proprio: expected a float32 vector"),
    (dict(instruction=3), "Observation.instruction: expected str"),
    (dict(timestamp=float("inf")), "Observation.timestamp"),
])
def test_observation_errors_name_the_field(overrides, message):
    with pytest.raises(ContractError, match=message):
        _obs(**overrides)


def test_observation_check_against_spec_names_the_mismatch():
    obs = _obs()
    with pytest.raises(ContractError, match=r"expected cameras \['front'\]"):
        obs.check(ObservationSpec(cameras={"front": (8, 10)}, proprio_names=METAWORLD_PROPRIO))
    with pytest.raises(ContractError, match=r"images\['wrist'\]: expected 16x16, got 8x10"):
        obs.check(ObservationSpec(cameras={"wrist": (16, 16)}, proprio_names=METAWORLD_PROPRIO))
    with pytest.raises(ContractError, match="Observation.proprio: expected 7 values"):
        obs.check(ObservationSpec(cameras={"wrist": (8, 10)}, proprio_names=tuple("abcdefg")))


def test_action_spec_clip_never_passes_nan_and_maps_units():
    spec = ActionSpec.ee_delta(max_translation=0.02, max_rotation=0.1)
    assert spec.dim == 7 and spec.frame == "ee" and spec.units[0] == "m"
    np.testing.assert_allclose(spec.clip([1, -1, 0, 5, -5, 0, 2]), [0.02, -0.02, 0, 0.1, -0.1, 0, 1], rtol=1e-6)
    for bad in ([np.nan] * 7, [np.inf] + [0] * 6):
        with pytest.raises(ContractError, match="non-finite"):
            spec.clip(bad)
    with pytest.raises(ContractError, match="expected 7 values, got 4"):
        spec.clip(np.zeros(4))
    x = np.array([0.01, -0.02, 0, 0.05, 0, -0.1, 0.25], np.float32)
    np.testing.assert_allclose(spec.from_unit(spec.to_unit(x)), x, atol=1e-7)
    assert spec.contains(x) and not spec.contains(x * 3)
    with pytest.raises(ContractError, match="Action.values: non-finite"):
        Action(np.full(7, np.nan), spec)


@pytest.mark.parametrize("kwargs, message", [
    (dict(names=("a", "b"), low=(0,), high=(1, 1)), "ActionSpec.low: expected 2 entries"),
    (dict(names=("a",), low=(1,), high=(0,)), r"ActionSpec.low/high\['a'\]: need finite low < high"),
    (dict(names=("a", "a"), low=(0, 0), high=(1, 1)), "duplicate names"),
    (dict(names=("a",), low=(0,), high=(1,), frame="world"), "ActionSpec.frame"),
])
def test_action_spec_validation(kwargs, message):
    with pytest.raises(ContractError, match=message):
        ActionSpec(**kwargs)


def test_task_spec_json_round_trip():
    task = TaskSpec(name="drawer-open-v3", family="metaworld", instruction="open the drawer",
                    action_spec=ActionSpec.metaworld(),
                    observation_spec=ObservationSpec({"corner2": (64, 64)}, METAWORLD_PROPRIO),
                    max_episode_steps=500, variation="color:red", variation_seed=3, extra={"k": 1})
    assert TaskSpec.from_json(task.to_json()) == task
    assert task.full_name == "metaworld/drawer-open-v3@color:red#3"
    with pytest.raises(ContractError, match="TaskSpec: missing field 'family'"):
        TaskSpec.from_dict({k: v for k, v in task.to_dict().items() if k != "family"})
    with pytest.raises(ContractError, match="TaskSpec.max_episode_steps"):
        TaskSpec(**{**task.__dict__, "max_episode_steps": 0})
