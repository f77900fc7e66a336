"""Frame labels for a success detector, from episodes.

Frame t of an episode is observation t (0 .. T; T is the final observation). Its label, in order of precedence:

1. a human's: ``metadata["human_labels"]`` = ``[{"frame": t, "success": true|false}, ...]`` (what the
   ``classifier+human`` source writes when the human disagreed with the detector, and what a person can add);
2. positive (1) when the step into it earned a reward (``rewards[t - 1] > 0``): the simulator's per-step success;
3. positive for the last ``positive_frames`` frames of a successful episode (on the robot the human ends a success
   a little after it happened; in simulation the episode ends at the success, so 1 is right);
4. ignored (-1) for the ``ignore_before`` frames just before the first positive frame of a successful episode: the
   moments when the task is nearly done look like done, and no label is honest there;
5. negative (0) otherwise: the rest of a successful episode, and every frame of a failed one (failed RL rollouts are
   the detector's most useful negatives: they look like the task and are not it).
"""

from __future__ import annotations

import numpy as np

IGNORED = -1


def frame_labels(episode, positive_frames: int = 1, ignore_before: int = 2) -> np.ndarray:
    """(T + 1,) int8 labels of `episode`'s observations: 1 success, 0 not, -1 ignored (see the module docstring)."""
    if positive_frames < 1:
        raise ValueError(f"positive_frames: expected >= 1, got {positive_frames}")
    if ignore_before < 0:
        raise ValueError(f"ignore_before: expected >= 0, got {ignore_before}")
    n = episode.n_steps + 1
    labels = np.zeros(n, np.int8)
    rewarded = np.flatnonzero(np.asarray(episode.rewards) > 0) + 1
    labels[rewarded] = 1
    if episode.success:
        labels[max(0, n - positive_frames):] = 1
    positive = np.flatnonzero(labels == 1)
    if episode.success and len(positive):
        first = int(positive[0])
        labels[max(0, first - ignore_before):first] = IGNORED
    for entry in episode.metadata.get("human_labels", []) or []:
        frame = int(entry["frame"])
        if 0 <= frame < n:
            labels[frame] = 1 if entry["success"] else 0
    return labels
