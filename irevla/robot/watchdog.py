"""Stale-command watchdog: when commands stop arriving, the controller must hold the current pose.

`CommandWatchdog` is fed the receive time of every accepted command and asked, at the control node's tick rate,
whether commands have gone stale. It also screens commands by their header stamp (``max_command_age``): a command
computed from an observation long ago (a policy that stalled, a replayed bag) is refused rather than executed late.
Times are seconds on one monotonic clock chosen by the caller (tests pass their own), except header stamps, which are
compared with the wall clock (ROS stamps are wall-clock time on both ends of a LAN with synchronised clocks).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from irevla.robot.config import WatchdogConfig


@dataclass
class WatchdogVerdict:
    stale: bool
    newly_stale: bool
    age: float | None  # seconds since the last command, None before the first one


class CommandWatchdog:
    def __init__(self, config: WatchdogConfig) -> None:
        self.config = config
        self.last_command_time: float | None = None
        self._stale = False

    def command_age_problem(self, stamp: float, wall_now: float | None = None) -> str | None:
        """A reason to refuse a command stamped `stamp` (wall-clock s), or None. Stamp 0 = unknown: accepted."""
        if self.config.max_command_age <= 0 or stamp <= 0:
            return None
        now = time.time() if wall_now is None else wall_now
        age = now - stamp
        if age > self.config.max_command_age:
            return (f"command stamped {age:.3f} s ago (max_command_age {self.config.max_command_age:.3f} s); "
                    f"a stalled sender or unsynchronised clocks?")
        return None

    def feed(self, now: float) -> None:
        """An accepted command arrived at `now`."""
        self.last_command_time = now
        self._stale = False

    def check(self, now: float) -> WatchdogVerdict:
        if self.last_command_time is None:
            return WatchdogVerdict(stale=False, newly_stale=False, age=None)
        age = now - self.last_command_time
        stale = age > self.config.command_timeout
        newly = stale and not self._stale
        self._stale = stale
        return WatchdogVerdict(stale=stale, newly_stale=newly, age=age)

    def reset(self) -> None:
        """Forget the last command (after homing: the next command starts a new stream)."""
        self.last_command_time = None
        self._stale = False
