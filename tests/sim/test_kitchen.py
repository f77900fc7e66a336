"""Franka Kitchen envs: the contract, EE-delta control, upright images, colour variations, scripted experts.

Real MuJoCo (FrankaKitchen-v1's model) and real rendering, small images to stay quick on a CPU renderer.
"""

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from irevla.rotations import matrix_to_rotvec, rotvec_to_matrix
from irevla.sim import registry
from irevla.sim.base import check_instruction
from irevla.sim.kitchen import TASKS, KitchenEnv, task_names
from irevla.sim.kitchen_expert import make_expert
from irevla.sim.variations import VariationError
from irevla.spec import REAL_ROBOT_PROPRIO, ContractError, Observation, TaskSpec


def run_expert(env, seed):
    """One expert episode; returns (success, steps, last reward, terminated)."""
    act = make_expert(env)
    obs, info = env.reset(seed=seed)
    for step in range(1, env.max_episode_steps + 1):
        obs, reward, terminated, truncated, info = env.step(act(obs, info))
        if terminated or truncated:
            break
    return info["success"], step, reward, terminated


@pytest.fixture(scope="module")
def env():
    env = KitchenEnv("slide-door-open", cameras=("front", "wrist"), image_size=64)
    yield env
    env.close()


@pytest.fixture(scope="module")
def blind_env():
    """No rendering: for control and bookkeeping tests."""
    env = KitchenEnv("microwave-open", render_images=False)
    yield env
    env.close()


def test_the_five_paper_tasks_with_instructions():
    assert task_names() == ["knob-on", "light-on", "microwave-open", "slide-door-open", "left-door-open"]
    for task in TASKS.values():
        assert check_instruction(task.instruction) == task.instruction


def test_reset_and_step_follow_the_contract(env):
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    observation = Observation.from_gym(obs).check(env.task_spec.observation_spec)
    assert observation.instruction == "slide the cabinet door open"
    assert observation.images["front"].shape == observation.images["wrist"].shape == (64, 64, 3)
    assert observation.proprio.shape == (7,) and info["success"] is False
    spec = env.task_spec
    assert TaskSpec.from_json(spec.to_json()) == spec
    assert spec.family == "kitchen" and spec.name == "slide-door-open" and spec.full_name == "kitchen/slide-door-open"
    assert spec.observation_spec.proprio_names == REAL_ROBOT_PROPRIO
    assert spec.action_spec.dim == 7 and spec.action_spec.frame == "base"
    assert spec.action_spec.names == ("dx", "dy", "dz", "drx", "dry", "drz", "gripper")
    assert env.action_space.shape == (7,) and spec.control_hz == pytest.approx(12.5)

    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert env.observation_space.contains(obs)
    assert reward == 0.0 and terminated is False and truncated is False and info["success"] is False
    assert obs["time"][0] == pytest.approx(0.08)
    for image in obs["images"].values():  # non-trivial pictures: many distinct colours, not one flat value
        assert image.std() > 10 and len(np.unique(image.reshape(-1, 3), axis=0)) > 50


def test_proprio_is_the_ee_pose_in_the_base_frame(blind_env):
    obs, _ = blind_env.reset(seed=0)
    pos, mat = blind_env.world_to_base(*blind_env.ee_pose_world())
    np.testing.assert_allclose(obs["proprio"][:3], pos, atol=1e-6)
    reference = np.reshape(blind_env.task_spec.extra["ee_rotation_reference"], (3, 3))
    np.testing.assert_allclose(rotvec_to_matrix(obs["proprio"][3:6]) @ reference, mat, atol=1e-5)
    assert np.linalg.norm(obs["proprio"][3:6]) < 0.1  # near the ready orientation: small and far from the flip
    # The base is the robot's (x into the kitchen = world +y, y = world -x, z up); the hand starts 0.12 m ahead,
    # 0.43 m to the left and 0.22 m above the base (FrankaKitchen-v1's start).
    np.testing.assert_allclose(pos, [0.12, 0.43, 0.22], atol=0.03)
    assert obs["proprio"][6] == pytest.approx(0.08, abs=0.005)  # gripper open: 2 x 4 cm


def test_ee_delta_actions_move_the_hand_in_the_base_frame(blind_env):
    start = blind_env.reset(seed=0)[0]["proprio"]
    for _ in range(10):
        held = blind_env.step(np.zeros(7))[0]["proprio"]
    np.testing.assert_allclose(held[:6], start[:6], atol=2e-3)  # gravity-compensated: a zero action holds still
    for _ in range(5):
        blind_env.step(np.array([0.02, 0, 0, 0, 0, 0, 0]))
    for _ in range(5):
        moved = blind_env.step(np.zeros(7))[0]["proprio"]
    np.testing.assert_allclose(moved[:3] - held[:3], [0.10, 0.0, 0.0], atol=0.015)
    before_pos, before = blind_env.ee_pose_world()
    for _ in range(6):
        closed = blind_env.step(np.array([0, 0, 0, 0, 0, -0.1, 1.0]))[0]["proprio"]
    for _ in range(6):
        closed = blind_env.step(np.array([0, 0, 0, 0, 0, 0, 1.0]))[0]["proprio"]
    assert closed[6] < 0.005  # the gripper closed
    after_pos, after = blind_env.ee_pose_world()
    # 6 x -0.1 rad about the base z axis (= world z) turned the hand about world z, about its own centre. (Turning
    # the other way runs joint 7 into its limit after ~0.7 rad: FrankaKitchen's start has the wrist turned far.)
    np.testing.assert_allclose(matrix_to_rotvec(after @ before.T), [0, 0, -0.6], atol=0.03)
    np.testing.assert_allclose(after_pos, before_pos, atol=0.005)


def test_bad_actions_raise_and_large_ones_are_clipped(blind_env):
    blind_env.reset(seed=0)
    with pytest.raises(ContractError, match="non-finite"):
        blind_env.step(np.array([np.nan, 0, 0, 0, 0, 0, 0], np.float32))
    with pytest.raises(ContractError, match="non-finite"):
        blind_env.step(np.array([0, 0, 0, np.inf, 0, 0, 0], np.float32))
    with pytest.raises(ContractError, match="expected 7 values"):
        blind_env.step(np.zeros(4, np.float32))
    before = blind_env.reset(seed=0)[0]["proprio"]
    for _ in range(3):
        after = blind_env.step(np.array([0, 0, 100.0, 0, 0, 0, 0]))[0]["proprio"]
    assert 0.02 < after[2] - before[2] < 0.065  # clipped to 2 cm per step


def test_check_env_passes_in_both_action_modes():
    for mode in ("ee_delta", "joint_velocity"):
        env = KitchenEnv("light-on", image_size=32, action_mode=mode)
        check_env(env, skip_render_check=True)
        env.close()


def test_joint_velocity_mode_is_frankakitchens_native_action():
    env = KitchenEnv("light-on", render_images=False, action_mode="joint_velocity")
    assert env.action_space.shape == (9,) and env.task_spec.action_spec.dim == 9
    start = env.reset(seed=0)[0]["proprio"]
    for _ in range(5):
        obs, *_ = env.step(np.array([0.3, 0, 0, 0, 0, 0, 0, 0, 0]))  # turn the base joint
    assert np.linalg.norm(obs["proprio"][:3] - start[:3]) > 0.05
    with pytest.raises(ContractError, match="non-finite"):
        env.step(np.full(9, np.nan))
    env.close()


def test_reset_is_reproducible_by_seed(env):
    first, _ = env.reset(seed=5)
    again, _ = env.reset(seed=5)
    other, _ = env.reset(seed=6)
    np.testing.assert_array_equal(first["proprio"], again["proprio"])
    np.testing.assert_array_equal(first["images"]["front"], again["images"]["front"])
    assert not np.allclose(first["proprio"], other["proprio"])  # seeded start noise on the arm joints


def test_truncates_at_the_time_limit():
    env = KitchenEnv("knob-on", render_images=False, max_episode_steps=5)
    env.reset(seed=0)
    flags = [env.step(np.zeros(7))[3] for _ in range(5)]
    assert flags == [False] * 4 + [True]
    env.close()


def _front(task, variation="", seed=0):
    env = KitchenEnv(task, cameras=("front",), image_size=64, variation=variation, variation_seed=seed, reset_noise=0)
    image = env.reset(seed=0)[0]["images"]["front"].astype(int)
    env.close()
    return image


def _changed(plain, coloured):
    rows, cols = np.nonzero(np.abs(plain - coloured).sum(-1) > 30)
    return len(rows), rows.mean(), cols.mean()


def test_colour_variation_recolours_the_target_and_images_are_upright():
    # The slide door hangs high on the right of the front camera's view, the microwave stands low on the left: where
    # the recoloured pixels land shows that the picture is neither upside down nor mirrored.
    plain, red = _front("slide-door-open"), _front("slide-door-open", "color:red")
    count, row, col = _changed(plain, red)
    assert count > 100 and row < 24 and col > 32
    rows, cols = np.nonzero(np.abs(plain - red).sum(-1) > 30)
    assert (red[rows, cols, 0] > 2 * red[rows, cols, 1]).mean() > 0.9  # and it is red
    count, row, col = _changed(_front("microwave-open"), _front("microwave-open", "color:red"))
    assert count > 30 and row > 32 and col < 32


def test_colour_variation_is_named_seeded_and_reproducible():
    env = KitchenEnv("slide-door-open", image_size=32, variation="color:random", variation_seed=1)
    assert env.task_spec.variation == "color:random" and env.task_spec.variation_seed == 1
    assert env.task_spec.full_name == "kitchen/slide-door-open@color:random#1"
    env.close()
    np.testing.assert_array_equal(_front("slide-door-open", "color:random", 1),
                                  _front("slide-door-open", "color:random", 1))
    assert _changed(_front("slide-door-open", "color:random", 1), _front("slide-door-open", "color:random", 2))[0] > 50


def test_kitchen_and_hand_variations_move_things_and_others_are_refused():
    plain = KitchenEnv("knob-on", render_images=False, reset_noise=0)
    plain.reset(seed=0)
    moved = KitchenEnv("knob-on", render_images=False, reset_noise=0, variation="obj:0.05,0,0+hand:0,0,0.03")
    moved.reset(seed=0)
    np.testing.assert_allclose(moved.data.site("knob2_site").xpos - plain.data.site("knob2_site").xpos,
                               [0.05, 0, 0], atol=1e-6)
    np.testing.assert_allclose(moved.ee_pose_world()[0] - plain.ee_pose_world()[0], [0, 0, 0.03], atol=2e-3)
    plain.close(), moved.close()
    for bad in ("scale:2", "goal:0.1,0,0", "color:nope"):
        with pytest.raises(VariationError):
            KitchenEnv("knob-on", render_images=False, variation=bad)
    with pytest.raises(ValueError, match="unknown Kitchen task"):
        KitchenEnv("kettle-move", render_images=False)


@pytest.mark.parametrize("task", task_names())
def test_scripted_expert_succeeds(task):
    env = KitchenEnv(task, render_images=False)
    success, steps, reward, terminated = run_expert(env, seed=0)
    assert success and terminated and reward == 1.0 and steps < 120
    env.close()


def test_expert_with_rendering_and_a_colour_variation():
    env = KitchenEnv("slide-door-open", cameras=("front",), image_size=32, variation="color:red")
    assert registry.make_expert(env)  # the registry picks Kitchen's expert module (the env does not import it)
    assert run_expert(env, seed=1)[0]
    env.close()


def test_expert_refuses_the_joint_velocity_mode():
    env = KitchenEnv("light-on", render_images=False, action_mode="joint_velocity")
    with pytest.raises(ValueError, match="ee_delta"):
        make_expert(env)
    env.close()


@pytest.mark.parametrize("task", task_names())
def test_scripted_expert_is_reliable(task):  # ~2 s per task
    env = KitchenEnv(task, render_images=False, reset_noise=0.04)
    successes = sum(run_expert(env, seed)[0] for seed in range(10, 20))
    assert successes >= 9
    env.close()
