"""Human interventions in the learner (HIL-SERL): which transitions reach the demo buffer under each
``interventions_to_demo`` setting -- with their true next observations, rewards and ends -- old boolean configs, the
per-episode intervention rate in the episode log and in the learner process's metrics.jsonl, snapshots, PPO."""

from __future__ import annotations

import json
import secrets
import threading
import time

import numpy as np
import pytest

pytest.importorskip("jax")

from point_reach import point_spec  # noqa: E402

from irevla.config import ConfigError, load_config  # noqa: E402
from irevla.learner.config import LearnerConfig, PPOConfig, SACConfig  # noqa: E402
from irevla.learner.ppo import PPOLearner  # noqa: E402
from irevla.learner.process import episode_metrics, learner_metrics, serve  # noqa: E402
from irevla.learner.registry import get_algorithm  # noqa: E402
from irevla.learner.replay import LatentReplay  # noqa: E402
from irevla.learner.sac import SACLearner  # noqa: E402
from irevla.metrics_log import LoggingConfig  # noqa: E402
from irevla.transport.actor_side import ZmqLearnerLink  # noqa: E402
from irevla.transport.learner_side import LearnerServer  # noqa: E402
from irevla.transport.messages import EpisodeEnd, Transition, pooled_latent  # noqa: E402

FINAL = 100.0  # the final observation's marker (step t's observation carries t)


def _latent(value: float) -> tuple[np.ndarray, np.ndarray]:
    return pooled_latent(np.full(16, value, np.float16))


def _messages(episode: int, flags: list[bool], success: bool) -> list[Transition | EpisodeEnd]:
    """Observation t carries t in its latent and proprio[0] (the final one FINAL); action t is t / 10 (env units =
    unit space in the point spec), so every stored transition says which step it was and what followed it."""
    items: list[Transition | EpisodeEnd] = [
        Transition(episode, t, *_latent(t), np.array([t, episode], np.float32), np.full(2, t / 10, np.float32),
                   flag, 0) for t, flag in enumerate(flags)]
    items.append(EpisodeEnd(episode, len(flags), success, *_latent(FINAL),
                            np.array([FINAL, episode], np.float32)))
    return items


def _send(learner, episode: int, flags: list[bool], success: bool) -> None:
    for item in _messages(episode, flags, success):
        learner.ingest(item, "arm")


def _sac(**overrides) -> SACLearner:
    settings = {"warmup_transitions": 4, "online_capacity": 200, "demo_capacity": 200, **overrides}
    config = LearnerConfig(sac=SACConfig(num_critics=2, batch_size=8, utd=1), **settings)
    return SACLearner(point_spec(), config, actor_state=None)


def _demo(learner) -> dict[str, list]:
    """The demo buffer's transitions, oldest first: step, next step (FINAL for the final observation), the next
    latent's marker, the action in tenths, reward, terminal and the intervention flag."""
    replay = learner.demo
    indices = replay.valid_indices()
    batch = replay.gather(indices)
    return {"step": batch["proprio"][:, 0].tolist(), "next": batch["next_proprio"][:, 0].tolist(),
            "next_latent": batch["next_latent"][:, 0].astype(np.float32).tolist(),
            "action": np.rint(batch["action"][:, 0] * 10).astype(int).tolist(), "reward": batch["reward"].tolist(),
            "terminal": batch["terminal"].tolist(), "intervention": replay.intervention[indices].tolist()}


# ------------------------------------------------------------------------------------------- "steps" (default)
def test_steps_copies_only_the_human_steps_with_their_true_next_observation_reward_and_end():
    learner = _sac(successes_to_demo=False)  # a success's intervened steps only, not the whole success
    assert learner.config.interventions_to_demo == "steps"  # the default
    # Steps 1-2 by the human, then the policy (3, 4), then the human for the last step (5) of a success.
    _send(learner, 0, [False, True, True, False, False, True], success=True)
    demo = _demo(learner)
    assert demo["step"] == [1, 2, 5]
    # Step 2's next observation is step 3's (the policy acted there), step 5's is the final one.
    assert demo["next"] == [2, 3, FINAL] and demo["next_latent"] == [2, 3, FINAL]
    assert demo["action"] == [1, 2, 5]  # tenths
    # The segment 1..2 stops before the end: reward 0, not terminal; step 5 ends the success: reward 1, terminal.
    assert demo["reward"] == [0, 0, 1] and demo["terminal"] == [0, 0, 1]
    assert demo["intervention"] == [True, True, True]
    assert learner.episode_log[-1]["demo_transitions"] == 3

    # A failure (time limit) whose last step was the human's: reward 0 and not terminal (the learner bootstraps).
    _send(learner, 1, [True, False, False, True], success=False)
    demo = _demo(learner)
    assert demo["step"][3:] == [0, 3] and demo["next"][3:] == [1, FINAL]
    assert demo["reward"][3:] == [0, 0] and demo["terminal"][3:] == [0, 0]
    # Nothing from an episode without interventions that failed.
    _send(learner, 2, [False, False, False], success=False)
    assert len(learner.demo) == 5
    # The online buffer has every step of every episode, with the flags.
    assert len(learner.online) == 6 + 4 + 3 and learner.online.intervention.sum() == 5


def test_steps_still_copies_a_success_whole_with_successes_to_demo():
    learner = _sac()
    _send(learner, 0, [False, True, False, False], success=True)
    demo = _demo(learner)
    assert demo["step"] == [0, 1, 2, 3] and demo["next"] == [1, 2, 3, FINAL]
    assert demo["reward"] == [0, 0, 0, 1] and demo["terminal"] == [0, 0, 0, 1]
    assert demo["intervention"] == [False, True, False, False]


def test_episode_copies_every_step_of_an_intervened_episode():
    learner = _sac(interventions_to_demo="episode")
    _send(learner, 0, [False, True, False], success=False)
    demo = _demo(learner)
    assert demo["step"] == [0, 1, 2] and demo["next"] == [1, 2, FINAL]
    assert demo["reward"] == [0, 0, 0] and demo["terminal"] == [0, 0, 0]
    _send(learner, 1, [False, False], success=False)  # no intervention, no success: not copied
    assert len(learner.demo) == 3


def test_off_copies_nothing_but_successes():
    learner = _sac(interventions_to_demo="off")
    _send(learner, 0, [True, True, False], success=False)
    assert len(learner.demo) == 0 and learner.episode_log[-1]["demo_transitions"] == 0
    _send(learner, 1, [True, False], success=True)  # a success with successes_to_demo: whole
    assert _demo(learner)["step"] == [0, 1]
    nothing = _sac(interventions_to_demo="off", successes_to_demo=False)
    _send(nothing, 0, [True, True], success=True)
    assert len(nothing.demo) == 0


# ------------------------------------------------------------------------------------------------- settings
@pytest.mark.parametrize(("written", "meaning"), [("true", "episode"), ("false", "off"), ("steps", "steps"),
                                                  ("episode", "episode"), ("off", "off")])
def test_old_boolean_yaml_still_loads(tmp_path, written, meaning):
    path = tmp_path / "learner.yaml"
    path.write_text(f"interventions_to_demo: {written}\nsuccesses_to_demo: true\n")
    assert load_config(path, LearnerConfig).interventions_to_demo == meaning
    assert load_config(path, PPOConfig).interventions_to_demo == meaning
    # As `irevla learner serve` reads a learner_init's learner.yaml.
    entry = get_algorithm("sac")
    assert entry.config({"learner": {"interventions_to_demo": written == "true" if written in ("true", "false")
                                     else written}}, "learner.yaml").interventions_to_demo == meaning


def test_an_unknown_setting_is_refused_with_its_name(tmp_path):
    path = tmp_path / "learner.yaml"
    path.write_text("interventions_to_demo: some\n")
    with pytest.raises(ConfigError, match="interventions_to_demo"):
        load_config(path, LearnerConfig)


# ------------------------------------------------------------------------------------------ replay pieces
def test_pieces_keep_next_observations_right_across_the_ring_wrap_and_a_snapshot(tmp_path):
    """Random interventions into a small ring: every sampleable transition still points at its true successor."""
    rng = np.random.default_rng(0)
    replay = LatentReplay(13, (4,), 2, 1, with_mask=False)
    for episode in range(30):
        steps = int(rng.integers(1, 7))
        keep = rng.random(steps) < 0.5
        success = bool(rng.random() < 0.5)
        observations = np.append(np.arange(steps, dtype=np.float32), FINAL)
        latents = np.repeat(observations[:, None], 4, axis=1)
        proprios = np.stack([observations, np.full(steps + 1, episode, np.float32)], axis=1)
        added = replay.add_episode(latents, None, proprios, np.arange(steps, dtype=np.float32)[:, None], success,
                                   interventions=keep, keep=keep)
        assert added == keep.sum()

    def check(buffer: LatentReplay) -> None:
        batch = buffer.gather(buffer.valid_indices())
        step, following = batch["proprio"][:, 0], batch["next_proprio"][:, 0]
        assert len(step) > 0
        assert (batch["proprio"][:, 1] == batch["next_proprio"][:, 1]).all()  # the same episode
        assert ((following == step + 1) | (following == FINAL)).all()
        assert (batch["next_latent"][:, 0] == following).all() and (batch["action"][:, 0] == step).all()
        assert (batch["reward"] == batch["terminal"]).all()  # success's last step only
        assert (batch["terminal"][following != FINAL] == 0).all()
        assert buffer.intervention[buffer.valid_indices()].all()

    check(replay)
    replay.save(tmp_path / "demo.safetensors")
    check(LatentReplay.load(tmp_path / "demo.safetensors"))
    check(LatentReplay.load(tmp_path / "demo.safetensors", capacity=40))


def test_the_learner_snapshot_keeps_the_human_steps(tmp_path):
    learner = _sac(successes_to_demo=False)
    _send(learner, 0, [False, True, True, False, True], success=True)
    _send(learner, 1, [True, False], success=False)
    learner.snapshot(tmp_path / "snap")
    restored = SACLearner.restore(tmp_path / "snap", learner.spec, learner.config)
    assert _demo(restored) == _demo(learner)
    assert restored.episode_log == learner.episode_log
    _send(restored, 2, [False, True], success=False)  # and it goes on adding pieces after the restore
    assert _demo(restored)["step"][-1] == 1 and _demo(restored)["next"][-1] == FINAL


# -------------------------------------------------------------------------------------------------- PPO
def test_ppo_learns_with_the_human_steps_in_its_demo_buffer():
    spec = point_spec()
    learner = PPOLearner(spec, PPOConfig(episodes_per_update=2, minibatch_size=4, bc_weight=0.5), None)
    _send(learner, 0, [False, True, True, False], success=False)
    _send(learner, 1, [True, False, False, False], success=True)  # PPO's default: successes not copied
    assert _demo(learner)["step"] == [1, 2, 0] and _demo(learner)["next"] == [2, 3, 1]
    assert learner.updates_allowed() == 1
    info = learner.update()
    assert np.isfinite(list(info.values())).all() and info["batch_transitions"] == 8


# ------------------------------------------------------------------------------------- the intervention rate
def test_episode_log_has_the_intervention_rate():
    learner = _sac()
    _send(learner, 0, [False, True, True, False], success=False)
    _send(learner, 1, [False] * 5, success=False)
    entries = learner.episode_log
    assert [e["interventions"] for e in entries] == [2, 0]
    assert [e["intervention_rate"] for e in entries] == [0.5, 0.0]
    json.dumps(entries)  # snapshots keep it as JSON


def test_the_learner_process_writes_each_episode_s_intervention_rate_to_metrics_jsonl(tmp_path):
    """A real learner behind the real transport on loopback: one metrics record per episode received."""
    token = secrets.token_hex(32)
    learner = _sac(warmup_transitions=1000)  # no updates: the records are the episodes'
    out = tmp_path / "rl-1" / "learner"
    flags = [[False, True, True, False], [False] * 3, [True] * 2]
    with LearnerServer("tcp://127.0.0.1:0", token) as server, \
            ZmqLearnerLink(server.address, token, actor_id="arm", heartbeat_s=0.1, ack_timeout_s=1.0,
                           dead_after_s=2.0) as link:
        for episode, episode_flags in enumerate(flags):
            items = _messages(episode, episode_flags, success=episode == 2)
            for item in items[:-1]:
                link.send_transition(item)
            end = items[-1]
            link.send_episode_end(episode, end.steps, end.success, (end.final_tokens, end.final_mask),
                                  end.final_proprio)
        deadline = time.monotonic() + 30
        done = threading.Event()

        def stop() -> bool:
            if learner.episodes == len(flags) or time.monotonic() > deadline:
                done.set()
            return done.is_set()

        with learner_metrics(out, LoggingConfig(tensorboard=False)) as metrics, \
                episode_metrics(out, LoggingConfig(tensorboard=False)) as per_episode:
            serve(learner, server, out, stop=stop, metrics=metrics, metrics_every=5, episode_metrics=per_episode)
    assert learner.episodes == 3
    updates = (out / "metrics.jsonl").read_text() if (out / "metrics.jsonl").is_file() else ""
    assert "episode/index" not in updates  # the update log keeps its own increasing steps
    records = [json.loads(line) for line in (out / "episodes" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    episodes = [r for r in records if "episode/index" in r]
    assert [r["episode/index"] for r in episodes] == [1, 2, 3]
    assert [r["episode/intervention_rate"] for r in episodes] == [0.5, 0.0, 1.0]
    assert [r["episode/interventions"] for r in episodes] == [2, 0, 2]
    assert [r["episode/steps"] for r in episodes] == [4, 3, 2]
    assert [r["episode/demo_transitions"] for r in episodes] == [2, 0, 2]
    assert [r["episode/success"] for r in episodes] == [False, False, True]
    assert all(r["episode/updates"] == 0 for r in episodes)  # the update count when the episode arrived
