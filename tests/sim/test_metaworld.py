"""Meta-World envs: the contract, upright images, variations, scripted experts — real MuJoCo rendering."""

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from irevla.sim.metaworld import INSTRUCTIONS, MetaWorldEnv, task_names
from irevla.sim.variations import VariationError
from irevla.spec import ContractError, Observation


@pytest.fixture
def env():
    env = MetaWorldEnv("button-press-v3", cameras=("corner2", "topview"), image_size=64)
    yield env
    env.close()


def test_every_task_has_an_instruction():
    assert set(task_names()) == set(INSTRUCTIONS)


def test_reset_and_step_follow_the_contract(env):
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    observation = Observation.from_gym(obs).check(env.task_spec.observation_spec)
    assert observation.instruction == "press the button"
    assert set(observation.images) == {"corner2", "topview"}
    assert observation.images["corner2"].shape == (64, 64, 3)
    np.testing.assert_allclose(observation.proprio[:3], info["state"][:3], atol=1e-6)  # hand xyz
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert env.observation_space.contains(obs)
    assert reward in (0.0, 1.0) and isinstance(terminated, bool) and isinstance(truncated, bool)
    assert info["success"] is False
    assert obs["time"][0] > 0.0
    for image in obs["images"].values():  # non-trivial pictures: many distinct colours, not one flat value
        assert image.std() > 10 and len(np.unique(image.reshape(-1, 3), axis=0)) > 50


def test_check_env_passes(env):
    check_env(env, skip_render_check=True)


def test_bad_actions_raise_and_large_ones_are_clipped(env):
    env.reset(seed=0)
    with pytest.raises(ContractError, match="non-finite"):
        env.step(np.array([np.nan, 0, 0, 0], np.float32))
    with pytest.raises(ContractError, match="expected 4 values"):
        env.step(np.zeros(7, np.float32))
    before = env.reset(seed=0)[1]["state"][:3]
    after = env.step(np.array([100.0, 0, 0, 0]))[4]["state"][:3]
    assert 0 < after[0] - before[0] < 0.02  # clipped to 1.0 = at most ~1 cm of motion in one step


def test_truncates_at_the_time_limit():
    env = MetaWorldEnv("reach-v3", image_size=32, max_episode_steps=5, render_images=False)
    env.reset(seed=0)
    flags = [env.step(np.zeros(4))[3] for _ in range(5)]
    assert flags == [False] * 4 + [True]
    env.close()


def _project(env, camera, point):
    """Pixel (row, col) of a world point in the camera's raw image (pinhole, MuJoCo camera looks along -z)."""
    data, model = env._raw.data, env._raw.model
    cam = data.cam(camera)
    local = cam.xmat.reshape(3, 3).T @ (np.asarray(point) - cam.xpos)
    size = env.image_size
    focal = 0.5 * size / np.tan(np.deg2rad(model.cam(camera).fovy[0]) / 2)
    return size / 2 - focal * local[1] / -local[2], size / 2 + focal * local[0] / -local[2]


def test_images_are_upright():
    """Colour the button box pure green, then find it where the camera model says it is, with up being up."""
    env = MetaWorldEnv("button-press-v3", cameras=("corner2",), image_size=96, variation="color:0,1,0")
    obs, _ = env.reset(seed=0)
    image = obs["images"]["corner2"]
    box = env._raw.data.body("buttonbox").xpos.copy()
    row, col = _project(env, "corner2", box)
    row_above, _ = _project(env, "corner2", box + [0, 0, 0.3])
    if row_above > row:  # in the camera's raw frame up points down: the upright picture is turned 180 degrees
        row, col = env.image_size - 1 - row, env.image_size - 1 - col
    r, c = int(round(row)), int(round(col))
    patch = image[max(r - 3, 0):r + 4, max(c - 3, 0):c + 4].reshape(-1, 3).astype(int)
    greenish = (patch[:, 1] > 120) & (patch[:, 0] < 90) & (patch[:, 2] < 90)
    assert greenish.mean() > 0.5, f"no green at the projected button box ({r}, {c}) — image not upright?"
    env.close()


def test_fast_and_default_rendering_show_the_same_scene():
    fast = MetaWorldEnv("drawer-open-v3", image_size=64, fast=True)
    slow = MetaWorldEnv("drawer-open-v3", image_size=64, fast=False)
    a, b = fast.reset(seed=3)[0]["images"]["corner2"], slow.reset(seed=3)[0]["images"]["corner2"]
    foreground = (a.sum(axis=2) > 30) & (b.sum(axis=2) > 30)  # fast mode drops the skybox: compare the rest
    assert foreground.mean() > 0.5
    assert np.abs(a.astype(int) - b.astype(int))[foreground].mean() < 40
    fast.close(), slow.close()


@pytest.mark.parametrize("task", ["button-press-v3", "drawer-open-v3", "reach-v3", "window-open-v3"])
def test_scripted_expert_succeeds(task):
    env = MetaWorldEnv(task, render_images=False)
    act = env.expert()
    successes = 0
    for seed in range(3):
        obs, info = env.reset(seed=seed)
        terminated = truncated = False
        while not (terminated or truncated):
            obs, reward, terminated, truncated, info = env.step(act(obs, info))
        successes += int(terminated and reward == 1.0 and info["success"])
    assert successes == 3
    env.close()


def test_reset_seed_is_reproducible_and_seeds_differ():
    env = MetaWorldEnv("pick-place-v3", render_images=False)
    s1 = env.reset(seed=5)[1]["state"]
    s2 = env.reset(seed=5)[1]["state"]
    s3 = env.reset(seed=6)[1]["state"]
    np.testing.assert_array_equal(s1, s2)
    assert not np.allclose(s1[4:7], s3[4:7])  # object position differs between seeds
    env.close()


def test_color_variation_changes_the_object_colour_reproducibly():
    base = MetaWorldEnv("button-press-v3", render_images=False)
    red = MetaWorldEnv("button-press-v3", render_images=False, variation="color:red")
    geoms = red.object_geoms
    visible = [g for g in geoms if red._raw.model.geom_rgba[g, 3] > 0 and red._raw.model.geom_group[g] <= 2]
    assert visible
    np.testing.assert_allclose(red._raw.model.geom_rgba[visible, :3], [[0.85, 0.1, 0.1]] * len(visible))
    assert not np.allclose(base._raw.model.geom_rgba[visible, :3], red._raw.model.geom_rgba[visible, :3])
    robot_geoms = [g for g in range(red._raw.model.ngeom) if g not in geoms]
    np.testing.assert_array_equal(base._raw.model.geom_rgba[robot_geoms], red._raw.model.geom_rgba[robot_geoms])
    a = MetaWorldEnv("button-press-v3", render_images=False, variation="color:random", variation_seed=1)
    b = MetaWorldEnv("button-press-v3", render_images=False, variation="color:random", variation_seed=1)
    c = MetaWorldEnv("button-press-v3", render_images=False, variation="color:random", variation_seed=2)
    assert a.variation.color == b.variation.color != c.variation.color
    assert a.task_spec.full_name == "metaworld/button-press-v3@color:random#1"
    for e in (base, red, a, b, c):
        e.close()


def test_position_shift_moves_the_object_outside_the_training_range():
    base = MetaWorldEnv("button-press-v3", render_images=False)
    shifted = MetaWorldEnv("button-press-v3", render_images=False, variation="obj:0.25,0,0")
    (low, high), (slow, shigh) = base.reset_range, shifted.reset_range
    np.testing.assert_allclose(slow[:3], low[:3] + [0.25, 0, 0])
    for seed in range(5):
        obj = shifted.reset(seed=seed)[1]["state"][4:7]
        assert obj[0] > high[0] + 0.01  # outside the training range in x (shifted range starts 0.05 past it)
        assert slow[0] - 0.05 <= obj[0] <= shigh[0] + 0.05
    hand = MetaWorldEnv("drawer-open-v3", render_images=False, variation="hand:0.06,0,0")
    start = hand.reset(seed=0)[1]["state"][:3]
    plain = MetaWorldEnv("drawer-open-v3", render_images=False).reset(seed=0)[1]["state"][:3]
    assert start[0] - plain[0] == pytest.approx(0.06, abs=0.01)
    for e in (base, shifted, hand):
        e.close()


def test_scale_variation_scales_whole_objects_with_working_contacts():
    import mujoco

    base = MetaWorldEnv("drawer-open-v3", render_images=False)
    big = MetaWorldEnv("drawer-open-v3", render_images=False, variation="scale:1.5")
    b, m = base._raw.model, big._raw.model
    geoms = big.object_geoms
    primitive = [g for g in geoms if m.geom_type[g] != mujoco.mjtGeom.mjGEOM_MESH]
    np.testing.assert_allclose(m.geom_size[primitive], b.geom_size[primitive] * 1.5, rtol=1e-6)
    # Collision bounds were recomputed by the compiler (scaling a compiled model would leave them stale).
    np.testing.assert_allclose(m.geom_aabb[primitive], b.geom_aabb[primitive] * 1.5, rtol=1e-5, atol=1e-9)
    # Parts keep their arrangement: the distance between two parts of the drawer scales too.
    parts = [m.body("drawercase_link").id, m.body("drawer_link").id]
    np.testing.assert_allclose(np.linalg.norm(m.body_pos[parts[1]]), np.linalg.norm(b.body_pos[parts[1]]) * 1.5,
                               rtol=1e-6)
    # The bigger drawer is still a solid object: the expert's hand collides with it and can open it.
    act = big.expert()
    obs, info = big.reset(seed=0)
    done, contacts = False, 0
    while not done:
        obs, reward, terminated, truncated, info = big.step(act(obs, info))
        data = big._raw.data
        contacts += sum(1 for c in data.contact[:data.ncon] if c.geom1 in geoms or c.geom2 in geoms)
        done = terminated or truncated
    assert contacts > 0
    base.close(), big.close()


@pytest.mark.parametrize("bad, message", [
    ("colour:red", "unknown kind 'colour'"), ("color:mauve", "unknown colour"), ("scale:huge", "needs a number"),
    ("obj:1,2", "dx,dy,dz"), ("goal:0.1,0,0", "no goal position"), ("red", "kind:argument"),
    ("scale:9", "outside the sensible range")])
def test_bad_variations_are_clear_errors(bad, message):
    with pytest.raises(VariationError, match=message):
        MetaWorldEnv("button-press-v3", render_images=False, variation=bad)


def test_unknown_task_names_the_task():
    with pytest.raises(ValueError, match="unknown Meta-World task 'button-v3'"):
        MetaWorldEnv("button-v3")


def test_a_shift_that_still_overlaps_the_training_range_warns():
    from irevla.sim.metaworld import VariationOverlapWarning

    with pytest.warns(VariationOverlapWarning, match="still overlaps the training range"):
        MetaWorldEnv("button-press-v3", render_images=False, variation="obj:0.1,0,0").close()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", VariationOverlapWarning)
        MetaWorldEnv("button-press-v3", render_images=False, variation="obj:0.25,0,0").close()


def test_check_env_passes_without_rendering_and_frames_are_never_shared():
    env = MetaWorldEnv("reach-v3", render_images=False)
    check_env(env, skip_render_check=True)
    first = env.reset(seed=0)[0]["images"]["corner2"]
    second = env.step(np.zeros(4))[0]["images"]["corner2"]
    assert first is not second and not np.shares_memory(first, second)
    env.close()
