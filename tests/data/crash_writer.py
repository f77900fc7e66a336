"""Subprocess for test_crash_safety: writes deterministic episodes in a loop until it is killed.

Usage: python crash_writer.py DIRECTORY FIRST_SEED. Prints "ready" once imports are done, so the parent's random
kill delays fall into the write loop, not into interpreter start-up.
"""

import itertools
import sys
from pathlib import Path

from episode_factory import make_episode, make_task

from irevla.data.episode_file import write_episode_file

directory, first_seed = Path(sys.argv[1]), int(sys.argv[2])
# Big enough that a write takes a while (kills land mid-write), small enough to write many per second.
task = make_task(cameras={"front": (48, 48), "wrist": (32, 32)})
print("ready", flush=True)
for seed in itertools.count(first_seed):
    write_episode_file(make_episode(seed, n_steps=20 + seed % 10, task=task), directory, compression="lzf")
