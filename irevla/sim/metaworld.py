"""Meta-World v3 tasks as irevla contract envs.

`MetaWorldEnv("button-press-v3", cameras=("corner2",), image_size=128)`:

* observation: the contract dict (see `irevla.sim.base`): upright camera images, proprio = hand xyz + gripper
  opening (`spec.METAWORLD_PROPRIO`), the task's instruction, sim time;
* action: Meta-World's native 4-D space (`ActionSpec.metaworld()`): hand displacement (1.0 = 1 cm per step) and
  gripper effort (-1 open, +1 close); NaN/inf raise `ContractError`, out-of-range values are clipped;
* reward: sparse, 1.0 on the step the task succeeds (`info["success"]`); the episode terminates on success and is
  truncated at `max_episode_steps` (Meta-World's 500 by default);
* `reset(seed=k)` draws the object/goal layout from the task's continuous range with a generator seeded by k (we do
  not use MT1's 50 pickled fixed layouts), so train and eval seeds give disjoint, reproducible layouts;
* variations (`irevla.sim.variations`) recolour/rescale the objects and shift object, goal and hand ranges;
* `info["state"]` carries Meta-World's 39-D state vector, which the scripted experts (`expert()`) read.

Rendering uses `CameraRenderer`; `fast=True` (the default) turns off MSAA, shadows and reflections. Meta-World's
`corner*` cameras are mounted upside down; images are turned so that up in the world is up in the image.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import mujoco
import numpy as np
from gymnasium import spaces

from irevla.sim.base import ContractEnv, UnknownTaskError, check_instruction, observation_space
from irevla.sim.rendering import CameraRenderer, check_cameras
from irevla.sim.variations import Variation, VariationError, parse_variation, recolor_geoms, scale_bodies
from irevla.spec import METAWORLD_PROPRIO, ActionSpec, ObservationSpec, TaskSpec

DEFAULT_MAX_STEPS = 500

# Meta-World's scripted policies warn on every call that their gains may be "too high"; the env clips anyway.
warnings.filterwarnings("ignore", message=r"Constant\(s\) may be too high", category=UserWarning)

INSTRUCTIONS: dict[str, str] = {
    "assembly-v3": "put the ring on the peg",
    "basketball-v3": "dunk the ball into the basket",
    "bin-picking-v3": "move the puck from one bin to the other",
    "box-close-v3": "put the lid on the box",
    "button-press-topdown-v3": "press the button from the top",
    "button-press-topdown-wall-v3": "press the button from the top behind the wall",
    "button-press-v3": "press the button",
    "button-press-wall-v3": "press the button behind the wall",
    "coffee-button-v3": "push the button on the coffee machine",
    "coffee-pull-v3": "pull the mug away from the coffee machine",
    "coffee-push-v3": "push the mug under the coffee machine",
    "dial-turn-v3": "rotate the dial",
    "disassemble-v3": "pick the ring off the peg",
    "door-close-v3": "close the door",
    "door-lock-v3": "turn the lock to lock the door",
    "door-open-v3": "open the door",
    "door-unlock-v3": "turn the lock to unlock the door",
    "hand-insert-v3": "insert the gripper into the hole",
    "drawer-close-v3": "close the drawer",
    "drawer-open-v3": "open the drawer",
    "faucet-open-v3": "turn the faucet handle to open it",
    "faucet-close-v3": "turn the faucet handle to close it",
    "hammer-v3": "hammer the nail into the wall",
    "handle-press-side-v3": "press the handle down from the side",
    "handle-press-v3": "press the handle down",
    "handle-pull-side-v3": "pull the handle up from the side",
    "handle-pull-v3": "pull the handle up",
    "lever-pull-v3": "pull the lever up",
    "pick-place-wall-v3": "pick up the puck and place it at the goal behind the wall",
    "pick-out-of-hole-v3": "pick the peg out of the hole",
    "pick-place-v3": "pick up the puck and place it at the goal",
    "plate-slide-v3": "slide the plate into the goal",
    "plate-slide-side-v3": "slide the plate sideways into the goal",
    "plate-slide-back-v3": "slide the plate back out of the goal",
    "plate-slide-back-side-v3": "slide the plate back sideways out of the goal",
    "peg-insert-side-v3": "insert the peg into the hole from the side",
    "peg-unplug-side-v3": "unplug the peg from the side",
    "soccer-v3": "kick the ball into the goal",
    "stick-push-v3": "grasp the stick and push the box with it",
    "stick-pull-v3": "grasp the stick and pull the box with it",
    "push-v3": "push the puck to the goal",
    "push-wall-v3": "push the puck to the goal behind the wall",
    "push-back-v3": "push the puck back to the goal",
    "reach-v3": "reach the goal position",
    "reach-wall-v3": "reach the goal position behind the wall",
    "shelf-place-v3": "place the puck on the shelf",
    "sweep-into-v3": "sweep the puck into the hole",
    "sweep-v3": "sweep the puck off the table",
    "window-open-v3": "slide the window open",
    "window-close-v3": "slide the window closed",
}


class VariationOverlapWarning(UserWarning):
    """A position shift leaves the range overlapping the training range (not a fully unseen-position task)."""


def _boxes_overlap(low_a, high_a, low_b, high_b) -> bool:
    return bool(np.all(low_b <= high_a + 1e-9) and np.all(high_b >= low_a - 1e-9))


def task_names() -> list[str]:
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    return list(ALL_V3_ENVIRONMENTS)


def _env_class(task: str):
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    if task not in ALL_V3_ENVIRONMENTS:
        close = [n for n in ALL_V3_ENVIRONMENTS if task.split("-v")[0] in n]
        raise UnknownTaskError(f"unknown Meta-World task {task!r}" + (f"; did you mean {close}?" if close else
                                                                 "; `irevla sim list` prints all task names"))
    return ALL_V3_ENVIRONMENTS[task]


class MetaWorldEnv(ContractEnv):
    """One Meta-World v3 task (any of `task_names()`) speaking the irevla contract. See the module docstring."""

    def __init__(self, task: str = "button-press-v3", cameras: Sequence[str] = ("corner2",), image_size: int = 128,
                 fast: bool = True, max_episode_steps: int | None = None, variation: str = "",
                 variation_seed: int = 0, instruction: str | None = None, render_images: bool = True) -> None:
        self._raw = _env_class(task)()
        raw = self._raw
        # Sample layouts from the task's continuous range with our seeded generator instead of MT1's pickled tasks.
        raw._set_task_called = True
        raw._freeze_rand_vec = False
        raw.seeded_rand_vec = True
        # The state vector must carry the goal: the scripted experts read it (the policy never sees this state).
        raw._partially_observable = False
        raw.__dict__.pop("sawyer_observation_space", None)  # a cached_property computed for the old setting
        self.max_episode_steps = DEFAULT_MAX_STEPS if max_episode_steps is None else int(max_episode_steps)
        if self.max_episode_steps <= 0:
            raise ValueError(f"max_episode_steps: expected > 0, got {max_episode_steps}")
        raw.max_path_length = self.max_episode_steps + 1  # we truncate; Meta-World must never raise first

        self.variation = parse_variation(variation, variation_seed)
        if self.variation.scale is not None:
            self._rescale_objects(self.variation.scale)
        self._object_geoms = self._task_object_geoms()
        self._apply_variation(self.variation)

        self.cameras = check_cameras(raw.model, cameras, f"Meta-World {task}")
        self.image_size = int(image_size)
        self.render_images = render_images
        flip = [c for c in self.cameras if self._camera_is_upside_down(c)]
        self._renderer = CameraRenderer(raw.model, self.cameras, self.image_size, self.image_size, fast=fast,
                                        flip=flip) if render_images else None

        obs_spec = ObservationSpec(cameras={c: (self.image_size, self.image_size) for c in self.cameras},
                                   proprio_names=METAWORLD_PROPRIO)
        self.task_spec = TaskSpec(
            name=task, family="metaworld", instruction=check_instruction(instruction or INSTRUCTIONS.get(
                task, task.removesuffix("-v3").replace("-", " "))),
            action_spec=ActionSpec.metaworld(), observation_spec=obs_spec, max_episode_steps=self.max_episode_steps,
            variation=self.variation.text, variation_seed=variation_seed,
            control_hz=1.0 / (raw.model.opt.timestep * raw.frame_skip))
        self.observation_space = observation_space(obs_spec)
        self.action_space = spaces.Box(-1.0, 1.0, (4,), np.float32)
        self._steps = 0
        self._state = np.zeros(39)

    # ------------------------------------------------------------------------------------------------ variations
    def _task_object_geoms(self) -> list[int]:
        """Geoms of the task's own bodies: Meta-World adds them after the robot's mocap body."""
        model = self._raw.model
        first_task_body = model.body("mocap").id + 1
        return [g for g in range(model.ngeom) if model.geom_bodyid[g] >= first_task_body]

    def _rescale_objects(self, scale: float) -> None:
        """Rebuild the model with the task's objects scaled (see `variations.scale_bodies`) and swap it in."""
        raw, model = self._raw, self._raw.model
        first_task_body = model.body("mocap").id + 1
        roots = [model.body(b).name for b in range(first_task_body, model.nbody) if model.body_parentid[b] == 0]
        if not roots or not all(roots):
            raise VariationError(f"scale:{scale}: cannot find the named object bodies of {self._raw.fullpath}")
        spec = mujoco.MjSpec.from_file(raw.fullpath)
        scale_bodies(spec, roots, scale)
        scaled = spec.compile()
        if (scaled.nq, scaled.nbody, scaled.ngeom) != (model.nq, model.nbody, model.ngeom):
            raise VariationError(f"scale:{scale}: the rebuilt model of {raw.fullpath} does not match the original")
        scaled.eq_data[:] = model.eq_data  # Meta-World sets the mocap weld's data after loading; keep its values
        raw.model, raw.data = scaled, mujoco.MjData(scaled)
        mujoco.mj_forward(scaled, raw.data)

    def _apply_variation(self, variation: Variation) -> None:
        raw, model = self._raw, self._raw.model
        if variation.color is not None and recolor_geoms(model, self._object_geoms, variation.color) == 0:
            raise VariationError(f"{variation.text!r}: task {raw.__class__.__name__} has no visible object geoms")
        space = raw._random_reset_space
        low, high = space.low.copy(), space.high.copy()
        for kind, shift in variation.shifts.items():
            if kind == "hand":
                raw.hand_init_pos = np.asarray(raw.hand_init_pos, dtype=np.float64) + shift
            elif kind == "obj":
                low[:3] += shift
                high[:3] += shift
            elif kind == "goal":
                if low.size < 6:
                    raise VariationError(f"{variation.text!r}: this task's random vector has no goal position")
                low[3:6] += shift
                high[3:6] += shift
        for kind, (a, b) in {"obj": (slice(0, 3), "object"), "goal": (slice(3, 6), "goal")}.items():
            if kind in variation.shifts and _boxes_overlap(space.low[a], space.high[a], low[a], high[a]):
                width = np.round(space.high[a] - space.low[a], 3).tolist()
                warnings.warn(f"variation {variation.text!r}: the shifted {b} range still overlaps the training range "
                              f"(its width is {width} m), so some layouts repeat training ones; shift by more than "
                              f"the width along one axis for an unseen-position task", VariationOverlapWarning,
                              stacklevel=3)
        raw._random_reset_space = spaces.Box(low, high, dtype=np.float64)

    @property
    def object_geoms(self) -> list[int]:
        return list(self._object_geoms)

    @property
    def reset_range(self) -> tuple[np.ndarray, np.ndarray]:
        """The (low, high) range object/goal positions are drawn from, after variations."""
        space = self._raw._random_reset_space
        return space.low.copy(), space.high.copy()

    # ----------------------------------------------------------------------------------------------------- gym API
    def _camera_is_upside_down(self, camera: str) -> bool:
        data = self._raw.data
        mujoco.mj_forward(self._raw.model, data)
        camera_up_in_world = data.cam(camera).xmat.reshape(3, 3)[:, 1]  # camera frame: y is image-up
        return bool(camera_up_in_world[2] < -1e-6)

    def _observe(self) -> dict[str, Any]:
        raw = self._raw
        images = self._renderer.render(raw.data) if self._renderer is not None else self._blank_images()
        proprio = np.asarray(self._state[:4], dtype=np.float32)  # hand xyz, gripper opening
        return self._make_obs(images, proprio, float(raw.data.time))

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        # One generator, seeded through gymnasium, drives Meta-World's layout sampling: reproducible per seed.
        self._raw.seed(int(self.np_random.integers(2**31 - 1)))
        self._state, _ = self._raw.reset()
        self._steps = 0
        return self._observe(), {"success": False, "state": self._state.copy()}

    def step(self, action):
        # Clip into the box; NaN/inf or a wrong size raise ContractError instead of reaching the simulator.
        action = self.task_spec.action_spec.clip(np.asarray(action).reshape(-1))
        self._state, _, _, _, raw_info = self._raw.step(action)
        self._steps += 1
        success = bool(raw_info.get("success", 0.0) >= 1.0)
        info = {"success": success, "state": self._state.copy(),
                "unscaled_reward": float(raw_info.get("unscaled_reward", 0.0))}
        return self._observe(), float(success), success, self._steps >= self.max_episode_steps and not success, info

    def render(self):
        return self._renderer.render(self._raw.data)[self.cameras[0]] if self._renderer is not None else None

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        self._raw.close()

    # ------------------------------------------------------------------------------------------------- experts
    def expert(self) -> Callable[[dict, dict], np.ndarray]:
        """Meta-World's own scripted policy for this task, as ``act(obs, info) -> action`` (reads info['state'])."""
        from metaworld.policies import ENV_POLICY_MAP

        name = self.task_spec.name
        if name not in ENV_POLICY_MAP:
            raise ValueError(f"Meta-World ships no scripted policy for {name!r}")
        policy = ENV_POLICY_MAP[name]()

        def act(obs: dict, info: dict) -> np.ndarray:
            return np.clip(policy.get_action(info["state"]), -1.0, 1.0).astype(np.float32)

        return act
