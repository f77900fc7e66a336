"""Teleoperation core (no ROS): SpaceMouse over raw HID, a keyboard fallback, and intervention detection.

Layers, lowest first:

* `HidDevice` -- what hidapi's ``hid.device`` offers (``read(max_length, timeout_ms)``, ``close()``). `open_hid_device`
  opens a real 3Dconnexion device through hidapi; tests pass a stand-in that replays raw reports.
* `SpaceMouseReportParser` -- 3Dconnexion HID reports: id 1 = translation x y z (int16 little endian; the wireless
  and newer models append rotation rx ry rz in the same report), id 2 = rotation, id 3 = button bitmask.
* `SpaceMouseSource` -- reads reports in a background thread (hidapi blocks), keeps the newest axes and buttons,
  maps device axes to robot base-frame axes (``axis_order``, ``axis_signs``), normalises by ``full_scale`` and
  applies the deadband (rescaled so output starts at 0 at the deadband's edge). Left button closes the gripper,
  right button opens it.
* `KeyboardSource` -- the fallback: each key press is one full-deflection step (w/s x, a/d y, r/f z, u/o i/k j/l
  rotations, space toggles the gripper).
* `TeleopCore` -- input -> 7-D action ``dx dy dz drx dry drz gripper``: ``translation_scale`` m and
  ``rotation_scale`` rad per step at full deflection (SERL: 0.02 m / 0.1 rad at 10 Hz).
* `InterventionDetector` -- HIL-SERL: an action norm above ``intervention_threshold`` means a human took over;
  the takeover lasts ``intervention_hold`` seconds after the last such input.

Smooth takeover: the motion is a delta, integrated by franka_control from its current target, so taking over and
releasing move the target by exactly what the actions say. The gripper is not a delta but a state (0 open ... 1
closed) that the human changes with buttons; while nobody intervenes it follows the gripper the robot was last
commanded (`TeleopCore.follow_gripper`, fed by the teleop node from ``topics.action``), so a takeover keeps a
grasp the policy closed instead of opening the gripper with the human's first motion.
"""

from __future__ import annotations

import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from irevla.errors import UserError
from irevla.robot.config import SpaceMouseConfig, TeleopConfig

ACTION_NAMES = ("dx", "dy", "dz", "drx", "dry", "drz", "gripper")
KNOWN_VENDOR_IDS = (0x256F, 0x046D)  # 3Dconnexion, and Logitech for the older SpaceNavigator/SpaceMouse units


class TeleopError(UserError, RuntimeError):
    """No usable teleoperation device; the message says what was tried and how to fix it."""


class HidDevice(Protocol):
    def read(self, max_length: int, timeout_ms: int = 0) -> Sequence[int]: ...

    def close(self) -> None: ...


def open_hid_device(config: SpaceMouseConfig) -> HidDevice:
    """Open a 3Dconnexion device with hidapi (``pip install hidapi``); errors list what is connected."""
    try:
        import hid
    except ImportError as exc:
        raise TeleopError(f"hidapi is not installed ({exc}); pip install hidapi, or use the keyboard "
                          f"(device: keyboard)") from None
    vendors = (config.vendor_id,) if config.vendor_id else KNOWN_VENDOR_IDS
    candidates = [info for vendor in vendors for info in hid.enumerate(vendor, config.product_id)]
    if not candidates:
        seen = sorted({f"{i['vendor_id']:04x}:{i['product_id']:04x} {i.get('product_string') or ''}".strip()
                       for i in hid.enumerate()})
        raise TeleopError(f"no SpaceMouse (vendor {', '.join(f'{v:04x}' for v in vendors)}) found; HID devices: "
                          f"{seen or 'none'}. On Linux give your user access to /dev/hidraw* (udev rule, see "
                          f"docs/robot.md)")
    device = hid.device()
    try:
        device.open_path(candidates[0]["path"])
    except OSError as exc:
        raise TeleopError(f"cannot open {candidates[0].get('product_string', 'SpaceMouse')}: {exc} (permissions "
                          f"on /dev/hidraw*? see docs/robot.md)") from None
    return device


# ------------------------------------------------------------------------------------------------- SpaceMouse
@dataclass
class SpaceMouseReading:
    """Raw device axes (x y z rx ry rz, device units) and the button bitmask."""

    axes: np.ndarray = field(default_factory=lambda: np.zeros(6))
    buttons: int = 0
    reports: int = 0


class SpaceMouseReportParser:
    def __init__(self) -> None:
        self.reading = SpaceMouseReading()

    def feed(self, report: Sequence[int]) -> bool:
        """Update the reading from one HID report; returns False for reports it does not understand."""
        data = bytes(report)
        if not data:
            return False
        report_id = data[0]
        if report_id == 1 and len(data) >= 7:
            self.reading.axes[:3] = struct.unpack("<hhh", data[1:7])
            if len(data) >= 13:  # wireless / newer models: rotation in the same report
                self.reading.axes[3:] = struct.unpack("<hhh", data[7:13])
        elif report_id == 2 and len(data) >= 7:
            self.reading.axes[3:] = struct.unpack("<hhh", data[1:7])
        elif report_id == 3 and len(data) >= 2:
            self.reading.buttons = int.from_bytes(data[1:5], "little")
        else:
            return False
        self.reading.reports += 1
        return True


@dataclass(frozen=True)
class TeleopInput:
    """One sample of human input in the robot's base frame: axes in [-1, 1] (x y z rx ry rz) and gripper intent."""

    axes: np.ndarray
    close: bool = False
    open: bool = False
    toggle: bool = False


class SpaceMouseSource:
    """Background reader of a `HidDevice`; `read()` gives the newest input mapped to the robot's frame."""

    def __init__(self, device: HidDevice, config: SpaceMouseConfig, poll_timeout_ms: int = 50) -> None:
        self.device, self.config = device, config
        self.parser = SpaceMouseReportParser()
        self.error: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._poll_timeout_ms = poll_timeout_ms
        self._thread = threading.Thread(target=self._run, name="spacemouse_reader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                report = self.device.read(64, self._poll_timeout_ms)
            except (OSError, ValueError) as exc:  # unplugged
                self.error = f"SpaceMouse read failed: {exc}"
                return
            if report:
                with self._lock:
                    self.parser.feed(report)

    def raw(self) -> SpaceMouseReading:
        with self._lock:
            reading = self.parser.reading
            return SpaceMouseReading(reading.axes.copy(), reading.buttons, reading.reports)

    def read(self) -> TeleopInput:
        reading = self.raw()
        normalised = np.clip(reading.axes / self.config.full_scale, -1.0, 1.0)
        mapped = np.asarray(self.config.axis_signs) * normalised[list(self.config.axis_order)]
        deadband = self.config.deadband
        magnitude = np.clip((np.abs(mapped) - deadband) / (1.0 - deadband), 0.0, 1.0)
        return TeleopInput(axes=np.sign(mapped) * magnitude, close=bool(reading.buttons & 1),
                           open=bool(reading.buttons & 2))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)
        try:
            self.device.close()
        except OSError:
            pass


# --------------------------------------------------------------------------------------------------- keyboard
KEY_AXES = {"w": (0, 1.0), "s": (0, -1.0), "a": (1, 1.0), "d": (1, -1.0), "r": (2, 1.0), "f": (2, -1.0),
            "u": (3, 1.0), "o": (3, -1.0), "i": (4, 1.0), "k": (4, -1.0), "j": (5, 1.0), "l": (5, -1.0)}
KEYBOARD_HELP = ("w/s: x+/-  a/d: y+/-  r/f: z+/-  u/o i/k j/l: rotate about x y z  space: toggle gripper  "
                 "(one press = one full step)")


class KeyboardSource:
    """Keys pressed since the last `read()` become one step of input."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._axes = np.zeros(6)
        self._toggle = False

    def on_key(self, key: str) -> bool:
        """Returns True when the key means something here."""
        key = key.lower()
        with self._lock:
            if key in KEY_AXES:
                axis, sign = KEY_AXES[key]
                self._axes[axis] = np.clip(self._axes[axis] + sign, -1.0, 1.0)
                return True
            if key == " ":
                self._toggle = True
                return True
        return False

    def read(self) -> TeleopInput:
        with self._lock:
            axes, toggle = self._axes.copy(), self._toggle
            self._axes[:] = 0.0
            self._toggle = False
        return TeleopInput(axes=axes, toggle=toggle)

    def close(self) -> None:
        pass


# ---------------------------------------------------------------------------------------------- intervention
class InterventionDetector:
    """HIL-SERL's rule: input with norm > threshold is a takeover, held for `hold_s` after the last one."""

    def __init__(self, threshold: float = 1e-3, hold_s: float = 0.5) -> None:
        self.threshold, self.hold_s = threshold, hold_s
        self.last_input: float | None = None

    def update(self, motion: np.ndarray, now: float, buttons: bool = False) -> bool:
        if buttons or float(np.linalg.norm(motion)) > self.threshold:
            self.last_input = now
        return self.active(now)

    def active(self, now: float) -> bool:
        return self.last_input is not None and now - self.last_input <= self.hold_s


# ------------------------------------------------------------------------------------------------------- core
@dataclass(frozen=True)
class TeleopStep:
    action: np.ndarray  # float32[7]: dx dy dz drx dry drz gripper
    intervening: bool


class TeleopCore:
    """Turns `TeleopInput` samples into actions at ``rate_hz``; keeps the gripper state between steps."""

    def __init__(self, config: TeleopConfig, read_input: Callable[[], TeleopInput],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config, self.read_input, self.clock = config, read_input, clock
        self.gripper = 0.0
        self.detector = InterventionDetector(config.intervention_threshold, config.intervention_hold)

    def step(self) -> TeleopStep:
        sample = self.read_input()
        axes = np.nan_to_num(np.clip(np.asarray(sample.axes, dtype=np.float64), -1.0, 1.0))
        motion = np.concatenate([axes[:3] * self.config.translation_scale, axes[3:] * self.config.rotation_scale])
        gripper_before = self.gripper
        if sample.close:
            self.gripper = 1.0
        elif sample.open:
            self.gripper = 0.0
        elif sample.toggle:
            self.gripper = 0.0 if self.gripper > 0.5 else 1.0
        intervening = self.detector.update(motion, self.clock(), buttons=self.gripper != gripper_before)
        return TeleopStep(np.concatenate([motion, [self.gripper]]).astype(np.float32), intervening)

    def follow_gripper(self, gripper: float) -> bool:
        """The gripper command the robot was last sent (by the policy, or by anyone): while no takeover is on, the
        teleop's gripper state becomes it, so the human's first action after taking over keeps the gripper as it is
        (a button or toggle then changes it from there). Ignored during a takeover (the human owns the gripper) and
        when not finite. Returns whether it was taken."""
        gripper = float(gripper)
        if not np.isfinite(gripper) or self.detector.active(self.clock()):
            return False
        self.gripper = float(np.clip(gripper, 0.0, 1.0))
        return True
