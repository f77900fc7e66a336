"""A success detector for the robot's tiny policy, trained for real in seconds: the reward tests' episodes
(tests/reward/success_factory.py: grey noise; a red block in the last frames of a success, a blue decoy in half the
failures) in the robot's layout (7-D end-effector actions, `REAL_ROBOT_PROPRIO`; during the red frames the arm
rests at the button, elsewhere its state is random), encoded by the frozen VLM of
`irevla.robot.policy_runner.tiny_policy` saved as a checkpoint."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "policy"))  # as tests/reward/conftest.py does
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "reward"))

from success_factory import success_episode  # noqa: E402

from irevla.data.episode import Episode  # noqa: E402
from irevla.data.store import EpisodeStore  # noqa: E402
from irevla.policy.checkpoint import save_policy  # noqa: E402
from irevla.robot.policy_runner import TINY_IMAGE_SIZE, robot_action_spec, tiny_policy  # noqa: E402
from irevla.spec import REAL_ROBOT_PROPRIO, ObservationSpec, TaskSpec  # noqa: E402

CAMERA = "front"
SUCCESS_FROM = 8  # success_episode's default: 10 steps, the red block in the last 3 observations (8, 9, 10)
BUTTON_POSE = np.array([0.55, 0.1, 0.06, np.pi, 0.0, 0.0, 0.0], np.float32)


def robot_task() -> TaskSpec:
    return TaskSpec(name="press-button", family="robot", instruction="pick up the cube",
                    action_spec=robot_action_spec(),
                    observation_spec=ObservationSpec({CAMERA: (TINY_IMAGE_SIZE, TINY_IMAGE_SIZE)}, REAL_ROBOT_PROPRIO),
                    max_episode_steps=50)


def robot_success_episode(seed: int, success: bool, decoy: bool = False) -> Episode:
    """`success_episode`'s pixels and rewards with the robot's proprio and action layout."""
    base = success_episode(seed, success, decoy=decoy, camera=CAMERA)
    rng = np.random.default_rng(seed + 7)
    n = base.n_steps
    proprio = np.column_stack([rng.uniform(0.3, 0.7, n + 1), rng.uniform(-0.3, 0.3, n + 1),
                               rng.uniform(0.05, 0.5, n + 1), rng.normal(np.pi, 0.1, n + 1),
                               rng.normal(0, 0.1, (n + 1, 2)), rng.uniform(0, 0.08, n + 1)]).astype(np.float32)
    if success:  # the arm rests at the button while the block shows: a detector on either input can tell
        proprio[-3:] = BUTTON_POSE + rng.normal(0, 0.003, (3, 7)).astype(np.float32)
    spec = robot_action_spec()
    actions = rng.uniform(spec.low_array, spec.high_array, (n, spec.dim)).astype(np.float32)
    task = robot_task()
    return Episode(images=dict(base.images), proprio=proprio, actions=actions, rewards=base.rewards,
                   success=success, instruction=task.instruction, task=task, source="rl", metadata={"seed": seed})


def save_robot_policy(directory: Path, seed: int = 0) -> Path:
    save_policy(tiny_policy([CAMERA], seed), directory)
    return directory


def train_robot_detector(root: Path, policy_dir: Path, episodes: int = 10) -> Path:
    """Train a detector on `policy_dir`'s VLM into root / "detector"."""
    from irevla.reward.train import train_detector

    store = EpisodeStore(root / "data")
    for i in range(2 * episodes):
        success = i < episodes
        path = store.write(robot_success_episode(i, success, decoy=not success and i % 2 == 0))
        path.rename(path.with_name(f"ep-{'s' if success else 'f'}-{i:03d}.h5"))  # fixed names: the same split
    train_detector([root / "data"], policy_dir, root / "detector", target_precision=0.95, epochs=120, confirm_frames=1,
                   progress=False, log=lambda _: None)
    return root / "detector"
