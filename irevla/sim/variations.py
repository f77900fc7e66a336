"""Named, seeded task variations: the "new" and "unseen" tasks of iRe-VLA.

A variation string is one or more terms joined by ``+``; each term is ``kind:argument``:

=================  ===================================================================================================
``color:NAME``     recolour the task's objects (``red``, ``green``, ``blue``, ``yellow``, ``purple``, ``orange``,
                   ``cyan``, ``white``, ``black``, ``random`` — the seed picks — or ``r,g,b`` in 0..1)
``scale:S``        scale the task's objects as a whole by S (the model is rebuilt; experts may fail: new shape)
``obj:DX,DY,DZ``   shift the object position range by (DX, DY, DZ) metres (outside the training range)
``goal:DX,DY,DZ``  shift the goal position range (tasks whose random vector carries a goal)
``hand:DX,DY,DZ``  shift the hand's start position
``random``         as an argument to obj/goal/hand: ``obj:random(0.05)`` = a seeded random shift of that norm
=================  ===================================================================================================

Example: ``color:red+hand:0.06,0,0``. The same (variation, seed) always produces the same task, so experiments are
reproducible; the seed only matters for the ``random`` choices. `parse_variation` checks a string up front and
raises `VariationError` naming the bad term.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from irevla.errors import UserError

NAMED_COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.1, 0.1), "green": (0.1, 0.75, 0.15), "blue": (0.1, 0.25, 0.9), "yellow": (0.95, 0.85, 0.1),
    "purple": (0.55, 0.15, 0.75), "orange": (1.0, 0.5, 0.05), "cyan": (0.1, 0.8, 0.85), "white": (0.95, 0.95, 0.95),
    "black": (0.05, 0.05, 0.05),
}
SHIFT_KINDS = ("obj", "goal", "hand")


class VariationError(UserError, ValueError):
    """A variation string is malformed or does not apply to the task."""


@dataclass(frozen=True)
class Variation:
    """A parsed variation: what to recolour, rescale and shift. Build with `parse_variation(text, seed)`."""

    text: str = ""
    seed: int = 0
    color: tuple[float, float, float] | None = None
    scale: float | None = None
    shifts: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def is_identity(self) -> bool:
        return self.color is None and self.scale is None and not self.shifts


_VECTOR = re.compile(r"^\s*(-?\d*\.?\d+(?:e-?\d+)?)\s*,\s*(-?\d*\.?\d+(?:e-?\d+)?)\s*,\s*(-?\d*\.?\d+(?:e-?\d+)?)\s*$")
_RANDOM = re.compile(r"^random\((\d*\.?\d+)\)$")


def parse_variation(text: str, seed: int = 0) -> Variation:
    text = (text or "").strip()
    if not text:
        return Variation(seed=seed)
    rng = np.random.default_rng(seed)
    color, scale, shifts = None, None, {}
    for term in text.split("+"):
        kind, sep, arg = term.strip().partition(":")
        if not sep or not arg:
            raise VariationError(f"variation {text!r}: term {term!r} should look like kind:argument "
                                 f"(kinds: color, scale, {', '.join(SHIFT_KINDS)})")
        if kind == "color":
            if arg == "random":
                color = tuple(float(c) for c in rng.uniform(0.05, 0.95, size=3))
            elif arg in NAMED_COLORS:
                color = NAMED_COLORS[arg]
            elif _VECTOR.match(arg):
                color = tuple(float(v) for v in _VECTOR.match(arg).groups())
                if not all(0.0 <= c <= 1.0 for c in color):
                    raise VariationError(f"variation {text!r}: colour components must be in 0..1, got {arg}")
            else:
                raise VariationError(f"variation {text!r}: unknown colour {arg!r}; use one of "
                                     f"{sorted(NAMED_COLORS)}, 'random' or 'r,g,b'")
        elif kind == "scale":
            try:
                scale = float(arg)
            except ValueError:
                raise VariationError(f"variation {text!r}: scale needs a number, got {arg!r}") from None
            if not 0.2 <= scale <= 5.0:
                raise VariationError(f"variation {text!r}: scale {scale} outside the sensible range 0.2..5")
        elif kind in SHIFT_KINDS:
            if (m := _RANDOM.match(arg)) is not None:
                direction = rng.normal(size=3)
                direction[2] = 0.0  # random shifts stay in the table plane
                shift = float(m.group(1)) * direction / np.linalg.norm(direction)
            elif (m := _VECTOR.match(arg)) is not None:
                shift = np.array([float(v) for v in m.groups()])
            else:
                raise VariationError(f"variation {text!r}: {kind} needs 'dx,dy,dz' in metres or 'random(norm)', "
                                     f"got {arg!r}")
            if np.linalg.norm(shift) > 0.5:
                raise VariationError(f"variation {text!r}: {kind} shift {shift.tolist()} is over 0.5 m")
            shifts[kind] = shift
        else:
            raise VariationError(f"variation {text!r}: unknown kind {kind!r} (kinds: color, scale, "
                                 f"{', '.join(SHIFT_KINDS)})")
    return Variation(text=text, seed=seed, color=color, scale=scale, shifts=shifts)


def recolor_geoms(model, geom_ids, rgb: tuple[float, float, float]) -> int:
    """Give visible geoms a flat colour (materials dropped so the colour shows); alpha is kept. Returns the count."""
    changed = 0
    for g in geom_ids:
        if model.geom_rgba[g, 3] == 0 or model.geom_group[g] > 2:  # invisible / collision-only geoms
            continue
        model.geom_matid[g] = -1
        model.geom_rgba[g, :3] = rgb
        changed += 1
    return changed


def scale_bodies(spec, root_names, scale: float) -> int:
    """Scale whole object subtrees in an `mujoco.MjSpec` about each root body's origin, before compiling.

    Everything that has a size or a position inside the subtree is scaled together (child body positions, geom
    sizes and positions, sites, joint anchors, explicit inertial frames, and meshes used only by these objects), so
    a multi-part object keeps its shape and the compiler recomputes collision bounds and (geom-derived) inertia.
    Scaling sizes of an already compiled model would not: MuJoCo's broad phase keeps the old bounding boxes and
    misses contacts. Returns the number of geoms scaled.
    """
    import mujoco

    bodies, stack = [], [spec.body(name) for name in root_names]
    while stack:
        body = stack.pop()
        bodies.append(body)
        stack.extend(body.bodies)
    inside = {id(b) for b in bodies}
    task_geoms = [g for b in bodies for g in b.geoms]
    other_meshes = {g.meshname for g in spec.geoms if g.meshname and id(g.parent) not in inside}
    scaled_meshes = set()
    for body in bodies:
        if body.name not in root_names:
            body.pos = body.pos * scale
        if body.explicitinertial:
            body.ipos = body.ipos * scale
        for site in body.sites:
            site.pos, site.size = site.pos * scale, site.size * scale
        for joint in body.joints:
            joint.pos = joint.pos * scale
    for geom in task_geoms:
        geom.pos = geom.pos * scale
        if geom.type == mujoco.mjtGeom.mjGEOM_MESH:
            if geom.meshname not in other_meshes and geom.meshname not in scaled_meshes:
                mesh = spec.mesh(geom.meshname)
                mesh.scale = mesh.scale * scale
                scaled_meshes.add(geom.meshname)
        else:
            geom.size = geom.size * scale
            if not any(map(lambda v: v != v, geom.fromto)):  # fromto is NaN unless the geom uses it
                geom.fromto = geom.fromto * scale
    return len(task_geoms)
