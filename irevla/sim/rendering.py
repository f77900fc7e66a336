"""Offscreen camera rendering shared by the MuJoCo envs.

We drive `mujoco.Renderer` ourselves instead of gymnasium's `MujocoRenderer`: several named cameras per step, any
size, and direct control of the scene flags. On a CPU renderer (llvmpipe) the defaults are slow: a 4096 shadow map
plus multisampling cost ~10x. `fast=True` turns off MSAA (``vis.quality.offsamples = 0``), shadows, reflections and
the skybox, which measured 7-8 -> 40-80 frames/s here (see docs/benchmarks.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import mujoco  # irevla.sim's __init__ has chosen a headless GL backend before this import
import numpy as np


def camera_names(model: mujoco.MjModel) -> list[str]:
    return [mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_CAMERA, i) for i in range(model.ncam)]


def check_cameras(model: mujoco.MjModel, cameras, where: str) -> tuple[str, ...]:
    """Validate camera names up front, with an error listing the model's cameras (before anything looks them up)."""
    from irevla.sim.base import UnknownTaskError

    cameras = tuple(cameras)
    known = camera_names(model)
    unknown = [c for c in cameras if c not in known]
    if not cameras or unknown:
        raise UnknownTaskError(f"{where}: unknown camera(s) {unknown or '(none given)'}; this env has {known}")
    return cameras


class CameraRenderer:
    """Render named cameras of one MjModel as upright uint8 RGB images.

    `flip` lists cameras whose image comes out upside down (Meta-World's cameras do); they are rotated by 180
    degrees so that row 0 is the top of the picture, as the contract requires.
    """

    def __init__(self, model: mujoco.MjModel, cameras: Sequence[str], height: int, width: int,
                 fast: bool = True, flip: Sequence[str] = ()) -> None:
        known = camera_names(model)
        unknown = [c for c in cameras if c not in known]
        if unknown:
            raise ValueError(f"unknown camera(s) {unknown}; this model has {known}")
        self.cameras = tuple(cameras)
        self.flip = frozenset(flip)
        self.height, self.width = int(height), int(width)
        self.fast = fast
        # The offscreen buffer must be at least as large as the image.
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, self.width)
        model.vis.global_.offheight = max(model.vis.global_.offheight, self.height)
        if fast:
            model.vis.quality.offsamples = 0  # must be set before the GL context is created
        self._renderer = mujoco.Renderer(model, self.height, self.width)

    def _apply_scene_flags(self) -> None:
        flags = self._renderer.scene.flags
        if self.fast:
            flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
            flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
            flags[mujoco.mjtRndFlag.mjRND_SKYBOX] = 0

    def render(self, data: mujoco.MjData) -> dict[str, np.ndarray]:
        images = {}
        for cam in self.cameras:
            self._renderer.update_scene(data, camera=cam)
            self._apply_scene_flags()
            image = self._renderer.render()
            if cam in self.flip:
                image = image[::-1, ::-1]
            images[cam] = np.ascontiguousarray(image, dtype=np.uint8)
        return images

    def close(self) -> None:
        renderer, self._renderer = getattr(self, "_renderer", None), None
        if renderer is not None:
            renderer.close()

    def __del__(self) -> None:  # GL contexts leak otherwise when envs are created in a loop
        try:
            self.close()
        except Exception:
            pass
