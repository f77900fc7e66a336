"""Simulation: gymnasium envs (Meta-World, Franka Kitchen) speaking the irevla contract, variations, experts."""

import os

# MuJoCo picks its GL backend when it is first imported: choose a headless one before anything imports it.
# EGL works on servers (software llvmpipe included); set MUJOCO_GL=osmesa or glfw yourself to override.
os.environ.setdefault("MUJOCO_GL", "egl")
if os.environ["MUJOCO_GL"] in ("egl", "osmesa"):
    os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
