"""Subprocess of test_cycle's kill -9 test: runs stage-1-like episodes through the cycle until it is killed or done.

Usage: python cycle_worker.py RUN_DIR EPISODES WINDOW_S. Prints "written I" after writing episode I to the store and
before counting it in rl-1/actor.json, then waits WINDOW_S, so the parent can kill it exactly between the two.
"""

import sys
from pathlib import Path

from cycle_helpers import run_episodes

from irevla.iterate.cycle import CycleConfig

run_dir, episodes, window_s = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
state = run_episodes(run_dir, episodes, CycleConfig(retry_every_s=0.05, max_wait_s=30), window_s=window_s,
                     failing_resets={2}, log=lambda message: print(message, flush=True))
print(f"done {state['episodes']}", flush=True)
