"""Offscreen camera rendering shared by the MuJoCo envs.

We drive `mujoco.Renderer` ourselves instead of gymnasium's `MujocoRenderer`: several named cameras per step, any
size, and direct control of the scene flags. On a CPU renderer (llvmpipe) the defaults are slow: a 4096 shadow map
plus multisampling cost ~10x. `fast=True` turns off MSAA (``vis.quality.offsamples = 0``), shadows, reflections and
the skybox, which measured 7-8 -> 40-80 frames/s here (see docs/benchmarks.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import mujoco  # irevla.sim's __init__ has chosen a headless GL backend before this import
import numpy as np

from irevla.rotations import matrix_to_quaternion, xyzw_to_wxyz


@dataclass(frozen=True)
class CameraMount:
    """A camera we add to an MJCF: in `body` (None = world) at `pos`, looking at `lookat` (same frame), `up` being
    image-up."""

    pos: tuple[float, float, float]
    lookat: tuple[float, float, float]
    fovy: float = 45.0
    body: str | None = None
    up: tuple[float, float, float] = (0.0, 0.0, 1.0)


# On the Panda's hand, above the palm, looking between the fingers (as a wrist-mounted D405 would); image-up is the
# hand's x axis. Link 7's frame is the hand's turned by 45 degrees about z, hence the rotated coordinates.
PANDA_WRIST_CAMERA = CameraMount(pos=(0.0495, -0.0495, 0.1), lookat=(0.0, 0.0, 0.32), fovy=70.0, body="panda0_link7",
                                 up=(0.7071, -0.7071, 0.0))


def look_at_quat(pos: Sequence[float], lookat: Sequence[float], up: Sequence[float]) -> list[float]:
    """MuJoCo camera quaternion (w, x, y, z) of a camera at `pos` looking at `lookat`: a MuJoCo camera looks along
    its -z with y image-up."""
    forward = np.asarray(lookat, float) - np.asarray(pos, float)
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, np.asarray(up, float))
    right /= np.linalg.norm(right)
    return xyzw_to_wxyz(matrix_to_quaternion(np.stack([right, np.cross(right, forward), -forward], axis=1))).tolist()


def add_cameras(spec: mujoco.MjSpec, mounts: Mapping[str, CameraMount]) -> None:
    """Add the named cameras to a model spec before it is compiled."""
    for name, mount in mounts.items():
        parent = spec.worldbody if mount.body is None else spec.body(mount.body)
        parent.add_camera(name=name, pos=list(mount.pos), quat=look_at_quat(mount.pos, mount.lookat, mount.up),
                          fovy=mount.fovy)


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
