"""Single key presses from the terminal, without Enter, in a background thread (POSIX terminals only).

`TerminalKeys(callback)` puts stdin in cbreak mode while it runs and calls ``callback(key)`` for every character;
`close()` restores the terminal. When stdin is not a terminal (launched by ``ros2 launch`` without a tty, tests,
CI), it does nothing and says so through `available`; the services stay the way to drive the nodes.
"""

from __future__ import annotations

import os
import select
import sys
import threading
from collections.abc import Callable


class TerminalKeys:
    def __init__(self, callback: Callable[[str], None], stream=None) -> None:
        self.callback = callback
        self.stream = stream or sys.stdin
        self._stop = threading.Event()
        self._saved = None
        self._thread: threading.Thread | None = None
        self.available = False
        try:
            fd = self.stream.fileno()
            interactive = os.isatty(fd)
        except (AttributeError, OSError, ValueError):
            return
        if not interactive:
            return
        import termios
        import tty

        self._fd = fd
        self._saved = termios.tcgetattr(fd)
        tty.setcbreak(fd)
        self.available = True
        self._thread = threading.Thread(target=self._run, name="terminal_keys", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self._fd], [], [], 0.1)
            if ready:
                key = os.read(self._fd, 1).decode(errors="ignore")
                if key:
                    self.callback(key)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        if self._saved is not None:
            import termios

            termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved)
            self._saved = None
