"""Every console script's `run_nodes` stops when asked: a healthy node exits 0 at once on SIGINT; a node with a
callback stuck forever (a driver call that never returns) still ends within the shutdown grace, exits non-zero and
says which thread was stuck where. Real rclpy, a real MultiThreadedExecutor, real signals, in the private netns."""

from __future__ import annotations

from netns import run_isolated

NODE_SCRIPT = '''
import sys, threading
from pathlib import Path
from rclpy.node import Node
from irevla.robot.ros_edge import run_nodes

class Node_(Node):
    def __init__(self):
        super().__init__("shutdown_probe")
        self.timer = self.create_timer(0.05, self.stuck_in_driver)

    def stuck_in_driver(self):
        self.timer.cancel()
        Path(sys.argv[1]).write_text("entered")
        if sys.argv[2] == "stuck":
            threading.Event().wait()   # never returns

sys.exit(run_nodes(lambda: [Node_()], []))
'''


def test_a_stuck_callback_does_not_keep_a_node_alive_after_sigint():
    output = run_isolated(shutdown_body, timeout=90)
    assert "healthy: status 0" in output and "stuck: status 1" in output


def shutdown_body() -> None:
    import os
    import signal
    import subprocess
    import sys
    import tempfile
    import time
    from pathlib import Path

    from irevla.robot.ros_edge import FORCED_EXIT_STATUS, SHUTDOWN_GRACE_S

    directory = Path(tempfile.mkdtemp())
    script = directory / "node.py"
    script.write_text(NODE_SCRIPT)
    for mode in ("healthy", "stuck"):
        marker = directory / f"{mode}.entered"
        process = subprocess.Popen([sys.executable, str(script), str(marker), mode], stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            deadline = time.monotonic() + 30
            while not marker.exists():
                assert process.poll() is None, process.communicate()[0]
                assert time.monotonic() < deadline, "the node's timer never ran"
                time.sleep(0.05)
            time.sleep(0.3)
            asked = time.monotonic()
            os.killpg(process.pid, signal.SIGINT)
            output, _ = process.communicate(timeout=SHUTDOWN_GRACE_S + 10)
            took = time.monotonic() - asked
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
        print(f"{mode}: status {process.returncode} after {took:.1f} s\n{output}", flush=True)
        if mode == "healthy":
            assert process.returncode == 0, output
            assert took < 3.0, took
            assert "shutdown did not finish" not in output, output
        else:
            assert process.returncode == FORCED_EXIT_STATUS, output
            assert SHUTDOWN_GRACE_S - 0.5 < took < SHUTDOWN_GRACE_S + 3.0, took
            assert "shutdown did not finish within" in output and "stuck_in_driver" in output, output
