"""Runs one test body inside the private network namespace (see netns.py): ``netns_runner.py FILE FUNCTION``."""

import importlib.util
import os
import sys
import traceback
from pathlib import Path

if __name__ == "__main__":
    # rclpy before anything that may import pyrealsense2: both embed a DDS stack, and with pyrealsense2 loaded first
    # the process crashes in its exit handlers (GNU-unique C++ symbols shared between the two copies).
    try:
        import rclpy  # noqa: F401
    except ImportError:
        pass
    path, name = Path(sys.argv[1]), sys.argv[2]
    sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        getattr(module, name)()
    except BaseException:
        traceback.print_exc()
        sys.stdout.flush()
        os._exit(1)
    print(f"ISOLATED OK {name}", flush=True)
    sys.stderr.flush()
    # The body has checked what it had to. Skip interpreter teardown: daemon threads of a body (executors, DDS)
    # racing native static destructors made exit flaky ("terminate called without an active exception").
    os._exit(0)
