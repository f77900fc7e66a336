"""A writer killed with SIGKILL at random moments never leaves a partial episode visible to readers."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from episode_factory import make_episode, make_task

from irevla.data.episode_file import (
    EPISODE_NAME,
    TEMP_PREFIX,
    cleanup_stale_temp,
    list_episode_files,
    list_temp_files,
    read_episode,
)
from irevla.data.store import EpisodeCollection

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
N_KILLS = 24
SEEDS_PER_RUN = 100_000  # each writer run gets its own seed range, so every file's seed identifies its content


def start_writer(directory: Path, first_seed: int) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
    process = subprocess.Popen([sys.executable, str(HERE / "crash_writer.py"), str(directory), str(first_seed)],
                               cwd=HERE, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    line = process.stdout.readline()
    assert line == b"ready\n", f"writer did not start: {line!r} {process.stderr.read().decode()}"
    return process


def test_sigkilled_writer_never_exposes_a_partial_episode(tmp_path: Path) -> None:
    rng = random.Random(1234)
    verified_live: set[Path] = set()
    for run in range(N_KILLS):
        writer = start_writer(tmp_path, first_seed=run * SEEDS_PER_RUN)
        # Read every newly visible episode while the writer is busy: a reader must never see a partial file.
        deadline = time.monotonic() + rng.uniform(0.0, 0.25)
        while time.monotonic() < deadline:
            for path in list_episode_files(tmp_path):
                if path not in verified_live:
                    read_episode(path)
                    verified_live.add(path)
        writer.send_signal(signal.SIGKILL)
        assert writer.wait(timeout=10) == -signal.SIGKILL
        writer.stdout.close()
        writer.stderr.close()

    names = sorted(p.name for p in tmp_path.iterdir())
    temp_names = [n for n in names if n.startswith(TEMP_PREFIX)]
    episode_paths = list_episode_files(tmp_path)
    assert all(EPISODE_NAME.match(n) or n.startswith(TEMP_PREFIX) for n in names), names
    assert len(episode_paths) == len(names) - len(temp_names)
    assert len(episode_paths) > N_KILLS, "the writer should commit several episodes per run"
    # Kills that landed mid-write leave a hidden temp file behind: proof the test exercised that case at all.
    print(f"{len(episode_paths)} committed, {len(temp_names)} temp files from {N_KILLS} kills")
    assert temp_names, "no kill landed during a write; the test did not exercise crash safety"

    # Every committed episode is exactly what the writer meant to write, regenerated from the seed in its metadata.
    task = make_task(cameras={"front": (48, 48), "wrist": (32, 32)})
    seeds = []
    for path in episode_paths:
        episode = read_episode(path)
        seed = episode.metadata["seed"]
        seeds.append(seed)
        assert episode == make_episode(seed, n_steps=20 + seed % 10, task=task), path.name
    assert len(set(seeds)) == len(seeds), "an episode was committed twice"
    # Within a run, episodes commit in order: the committed seeds are a prefix of the run's seed range.
    for run in range(N_KILLS):
        first = run * SEEDS_PER_RUN
        run_seeds = sorted(s - first for s in seeds if first <= s < first + SEEDS_PER_RUN)
        assert run_seeds == list(range(len(run_seeds))), f"run {run}: committed seeds have a gap: {run_seeds}"

    assert EpisodeCollection(tmp_path).check() == []
    # Abandoned temp files are hidden from readers and cleaned up once old enough.
    assert cleanup_stale_temp(tmp_path, older_than_s=3600) == []
    removed = cleanup_stale_temp(tmp_path, older_than_s=0)
    assert sorted(p.name for p in removed) == temp_names
    assert list_temp_files(tmp_path) == []
    assert list_episode_files(tmp_path) == episode_paths
