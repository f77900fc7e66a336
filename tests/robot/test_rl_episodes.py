"""D_RL on the robot: RlActorCore with an RlEpisodeRecorder writes its episodes (every camera, proprio, the executed
actions with the interventions flagged, the label, source rl, the head versions) into a real episode store; read
back with the validating reader."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("torch", reason="LatentActor is torch (the policy extra)")

from irevla.data import EpisodeStore, read_episode  # noqa: E402
from irevla.head_file import LOG_STD_NAME  # noqa: E402
from irevla.robot.config import PolicySourceConfig  # noqa: E402
from irevla.robot.policy_runner import LatentActorRunner, PolicyRunner  # noqa: E402
from irevla.robot.rl_actor import RlActorCore  # noqa: E402
from irevla.robot.rl_episodes import RlEpisodeRecorder  # noqa: E402
from irevla.spec import REAL_ROBOT_PROPRIO, Observation  # noqa: E402
from irevla.transport.messages import InMemoryLearnerLink  # noqa: E402

torch.set_num_threads(1)
HUMAN = np.array([0.05, -0.01, 0.0, 0.0, 0.0, 0.0, 1.0], np.float32)  # x beyond the 2 cm bound: clipped


@pytest.fixture(scope="module")
def runner() -> PolicyRunner:
    """The policy looks at the front camera only; the robot has a wrist camera too (recorded all the same).
    Shared by the tests: each core's LatentActorRunner starts at head version 0 whatever heads an earlier test
    applied to the policy, and no test here checks action values against the policy's."""
    return PolicyRunner.load(PolicySourceConfig(preset="tiny"), ["front"])


def observation(t: int, wrist_size: tuple[int, int] = (24, 20)) -> Observation:
    return Observation(images={"front": np.full((40, 48, 3), t % 256, np.uint8),
                               "wrist": np.full((*wrist_size, 3), (7 * t) % 256, np.uint8)},
                       proprio=np.array([0.5 + 0.001 * t, 0.0, 0.3, 3.1, 0.0, 0.0, 0.08], np.float32),
                       instruction="pick up the cube", timestamp=1000.0 + 0.1 * t)


def head_message(policy, bias: float) -> dict[str, np.ndarray]:
    """A learner head (pooled mode) whose mean action is tanh(bias) in unit space, without exploration noise."""
    params = {name: tensor.numpy() for name, tensor in policy.head_state().items() if name.startswith("mlp.")}
    params["mlp.out.weight"] = np.zeros_like(params["mlp.out.weight"])
    params["mlp.out.bias"] = np.full_like(params["mlp.out.bias"], bias)
    params[LOG_STD_NAME] = np.full(7, -20.0, np.float32)
    return params


def make_core(runner, out, reports: list[str], record_failures: bool = False, link=None):
    actor = LatentActorRunner(runner, "pooled", explore=True, seed=1)
    recorder = RlEpisodeRecorder(out, actor.action_spec, task="pick-cube", round=2, record_failures=record_failures,
                                 max_episode_steps=50, metadata={"actor_id": "arm-test", "latent": "pooled"},
                                 report=reports.append)
    return RlActorCore(actor, link or InMemoryLearnerLink(), max_episode_steps=50, report=reports.append,
                       recorder=recorder)


def test_successful_episodes_go_to_the_store_with_every_camera_and_the_executed_actions(runner, tmp_path):
    link = InMemoryLearnerLink()
    reports: list[str] = []
    core = make_core(runner, tmp_path / "d_rl", reports, link=link)

    core.begin_episode()
    executed, flags = [], []
    for t in range(6):
        if t == 3:  # the learner's head arrives mid-episode: steps 3.. act with version 4
            link.pending_head = (4, head_message(runner.policy, 0.2))
        action, intervened = core.step(observation(t), human_action=HUMAN if t in (1, 2) else None)
        executed.append(action)
        flags.append(intervened)
    summary = core.end_episode(observation(6), success=True, metadata={"end": "label"})
    assert reports == [] and summary["sent"] and summary["recorded"], summary

    (path,) = sorted((tmp_path / "d_rl").glob("ep-*.h5"))
    assert summary["recorded"] == str(path)
    episode = read_episode(path)  # the validating reader: checksums, shapes, dtypes, the contract
    assert episode.source == "rl" and episode.success is True and episode.round == 2
    assert episode.task.name == "pick-cube" and episode.task.family == "robot"
    assert episode.instruction == "pick up the cube" and episode.n_steps == 6
    assert episode.images["front"].shape == (7, 40, 48, 3) and episode.images["wrist"].shape == (7, 24, 20, 3)
    assert [int(frames[0, 0, 0]) for frames in episode.images["wrist"]] == [(7 * t) % 256 for t in range(7)]
    assert episode.proprio.shape == (7, len(REAL_ROBOT_PROPRIO))
    assert np.allclose(episode.proprio[:, 0], [0.5 + 0.001 * t for t in range(7)])
    assert np.allclose(episode.timestamps, [1000.0 + 0.1 * t for t in range(7)])
    # the actions the arm executed -- the human's (clipped to 2 cm) during the takeover -- as the learner got them
    assert np.array_equal(episode.actions, np.stack(executed))
    assert np.array_equal(episode.actions, np.stack([tr.action for tr in link.transitions]))
    assert np.allclose(episode.actions[1], [0.02, -0.01, 0, 0, 0, 0, 1.0])
    assert episode.interventions.tolist() == flags == [False, True, True, False, False, False]
    assert episode.rewards.tolist() == [0, 0, 0, 0, 0, 1.0]  # the binary success reward on the last step
    meta = episode.metadata
    assert meta["policy_version"] == 4 and meta["policy_versions"] == [0, 4]
    assert [tr.policy_version for tr in link.transitions] == [0, 0, 0, 4, 4, 4]
    assert meta["interventions"] == 2 and meta["episode"] == 0 and meta["end"] == "label"
    assert meta["actor_id"] == "arm-test" and meta["latent"] == "pooled"

    # a failure is not D_RL: the learner gets it, the store does not
    core.begin_episode()
    core.step(observation(10))
    summary = core.end_episode(observation(11), success=False)
    assert summary["recorded"] is None and "record_failures is false" in summary["not_recorded"]
    assert len(link.episode_ends) == 2 and len(list((tmp_path / "d_rl").glob("ep-*.h5"))) == 1
    infos = EpisodeStore(tmp_path / "d_rl").index(source="rl", success=True)
    assert [info.n_steps for info in infos] == [6]


def test_failures_are_kept_when_asked_and_empty_episodes_never(runner, tmp_path):
    reports: list[str] = []
    core = make_core(runner, tmp_path / "all", reports, record_failures=True)
    core.begin_episode()
    summary = core.end_episode(observation(0), success=True)
    assert summary["recorded"] is None and summary["not_recorded"] == "not recorded: no steps"

    core.begin_episode()
    for t in range(3):
        core.step(observation(t))
    summary = core.end_episode(observation(3), success=False, metadata={"end": "time limit"})
    episode = read_episode(summary["recorded"])
    assert episode.success is False and episode.source == "rl" and episode.n_steps == 3
    assert episode.rewards.tolist() == [0, 0, 0] and episode.interventions.tolist() == [False] * 3
    assert episode.metadata["end"] == "time limit" and episode.metadata["episode"] == 1
    assert reports == []


def test_a_broken_episode_or_a_failed_write_is_reported_and_the_actor_goes_on(runner, tmp_path):
    link = InMemoryLearnerLink()
    reports: list[str] = []
    core = make_core(runner, tmp_path / "d_rl", reports, link=link)
    core.begin_episode()
    core.step(observation(0))
    core.step(observation(1, wrist_size=(30, 20)))  # the wrist camera changed its resolution mid-episode
    core.step(observation(2))
    summary = core.end_episode(observation(3), success=True)
    assert summary["sent"] and summary["steps"] == 3 and len(link.transitions) == 3  # the learner has it all
    assert summary["recorded"] is None and "step 1" in summary["not_recorded"]
    assert "wrist" in summary["not_recorded"] and len(reports) == 1 and "episode 0 will not be recorded" in reports[0]
    assert not list((tmp_path / "d_rl").glob("*.h5"))

    core.begin_episode()  # the next episode records again
    core.step(observation(4))
    assert core.end_episode(observation(5), success=True)["recorded"]

    shutil.rmtree(tmp_path / "d_rl")  # the disk went away
    core.begin_episode()
    core.step(observation(6))
    summary = core.end_episode(observation(7), success=True)
    assert summary["recorded"] is None and summary["not_recorded"].startswith("writing failed: ")
    assert "could not be written" in reports[-1] and not core.active
    core.begin_episode()  # and the actor goes on
    core.step(observation(8))
