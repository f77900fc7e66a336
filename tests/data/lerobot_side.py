"""Runs inside the LeRobot environment (.venv-lerobot: the real `lerobot` package), never in irevla's own.

    python lerobot_side.py load ROOT OUT.json    load an irevla export with LeRobotDataset; dump what LeRobot sees
    python lerobot_side.py write ROOT            write a dataset with LeRobot's own writer (known contents)

The test (test_lerobot.py) compares both with irevla's side. JSON only crosses the process boundary.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

LENGTHS = (7, 5)
SIZE = (24, 32)


def frame_image(episode: int, t: int) -> np.ndarray:
    """Smooth, known pixels (a gradient that moves with t), so a video codec keeps them close."""
    h, w = SIZE
    yy, xx = np.mgrid[0:h, 0:w]
    red = 40 + 4 * yy + 3 * t
    green = 60 + 3 * xx + 20 * episode
    blue = np.full((h, w), 100 + 5 * t)
    return np.stack([red, green, blue], -1).astype(np.uint8)


def state(episode: int, t: int) -> np.ndarray:
    return (np.arange(3, dtype=np.float32) + 0.25 * t + 10 * episode).astype(np.float32)


def action(episode: int, t: int) -> np.ndarray:
    return np.asarray([0.1 * t, -0.05 * t, 0.5 + episode, 1.0 if t % 2 else 0.0], np.float32)


def write(root: Path) -> None:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    features = {
        "observation.images.top": {"dtype": "video", "shape": (*SIZE, 3), "names": ["height", "width", "channels"]},
        "observation.state": {"dtype": "float32", "shape": (3,), "names": ["x", "y", "z"]},
        "observation.environment_state": {"dtype": "float32", "shape": (2,), "names": None},
        "action": {"dtype": "float32", "shape": (4,), "names": ["dx", "dy", "dz", "grip"]},
    }
    dataset = LeRobotDataset.create("local/lerobot_made", fps=15, root=root, features=features, use_videos=True,
                                    robot_type="so101")
    for episode, length in enumerate(LENGTHS):
        for t in range(length):
            dataset.add_frame({"observation.images.top": frame_image(episode, t),
                               "observation.state": state(episode, t),
                               "observation.environment_state": np.zeros(2, np.float32),
                               "action": action(episode, t), "task": f"task number {episode}"})
        dataset.save_episode()
    dataset.finalize()


def load(root: Path, out: Path) -> None:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset, LeRobotDatasetMetadata

    meta = LeRobotDatasetMetadata("local/irevla_export", root=root)
    dataset = LeRobotDataset("local/irevla_export", root=root)
    frames = []
    for i in range(len(dataset)):
        item = dataset[i]
        frames.append({
            "episode_index": int(item["episode_index"]), "frame_index": int(item["frame_index"]),
            "task": item["task"], "action": item["action"].tolist(), "state": item["observation.state"].tolist(),
            "done": bool(item["next.done"]), "success": bool(item["next.success"]),
            "reward": float(item["next.reward"]),
            "images": {key[len("observation.images."):]: np.round(item[key].numpy() * 255).astype(int)
                       .transpose(1, 2, 0).tolist() for key in meta.camera_keys},
        })
    out.write_text(json.dumps({"fps": meta.fps, "episodes": meta.total_episodes, "frames": len(dataset),
                               "camera_keys": meta.camera_keys, "video_keys": meta.video_keys,
                               "tasks": list(meta.tasks.index), "items": frames}))


if __name__ == "__main__":
    if sys.argv[1] == "write":
        write(Path(sys.argv[2]))
    else:
        load(Path(sys.argv[2]), Path(sys.argv[3]))
