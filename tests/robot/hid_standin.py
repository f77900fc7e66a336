"""A stand-in for hidapi's ``hid.device``: replays raw 3Dconnexion HID reports (the lowest level of teleop)."""

from __future__ import annotations

import queue
import struct
import time


def translation_report(x: int, y: int, z: int, rotation: tuple[int, int, int] | None = None) -> list[int]:
    """Report id 1; with `rotation`, the 13-byte form of the wireless and newer SpaceMice."""
    data = struct.pack("<Bhhh", 1, x, y, z)
    if rotation is not None:
        data += struct.pack("<hhh", *rotation)
    return list(data)


def rotation_report(rx: int, ry: int, rz: int) -> list[int]:
    return list(struct.pack("<Bhhh", 2, rx, ry, rz))


def button_report(mask: int) -> list[int]:
    return list(struct.pack("<BI", 3, mask))


class StandInHidDevice:
    """``read(max_length, timeout_ms)`` returns queued reports, or [] after the timeout; `unplug()` makes the next
    read fail like hidapi does when the device disappears."""

    def __init__(self) -> None:
        self.reports: queue.Queue = queue.Queue()
        self.unplugged = False
        self.closed = False
        self.reads = 0

    def push(self, *reports: list[int]) -> None:
        for report in reports:
            self.reports.put(report)

    def read(self, max_length: int, timeout_ms: int = 0) -> list[int]:
        self.reads += 1
        if self.unplugged:
            raise OSError("read error (device disconnected)")
        try:
            return self.reports.get(timeout=max(timeout_ms, 1) / 1000.0)[:max_length]
        except queue.Empty:
            return []

    def unplug(self) -> None:
        self.unplugged = True

    def close(self) -> None:
        self.closed = True

    def drain(self, timeout: float = 2.0) -> None:
        """Wait until the reader thread has taken every queued report."""
        deadline = time.monotonic() + timeout
        while not self.reports.empty() and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(0.02)
