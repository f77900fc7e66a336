"""The in-process stage-1 reference driver on a tiny policy and a real Meta-World task, for a small budget."""

from __future__ import annotations

import pytest
import torch
import yaml

import irevla.sim  # noqa: F401  (selects headless rendering before metaworld imports mujoco)

pytest.importorskip("jax")
pytest.importorskip("metaworld")

from policy_factory import tiny_policy  # noqa: E402

from irevla.iterate.stage1_reference import main  # noqa: E402
from irevla.policy.checkpoint import load_policy, read_manifest, save_policy  # noqa: E402


def test_reference_driver_trains_the_head_and_saves_a_checkpoint(tmp_path, capsys):
    policy = tiny_policy(cameras={"corner2": (32, 32)})
    save_policy(policy, tmp_path / "start")
    settings = tmp_path / "learner.yaml"
    settings.write_text(yaml.safe_dump({"algorithm": "sac", "learner": {
        "warmup_transitions": 20, "updates_per_transition": 0.25, "publish_every": 3,
        "sac": {"num_critics": 2, "batch_size": 16, "utd": 1}}}))

    summary = main(["--policy", str(tmp_path / "start"), "--task", "button-press-v3", "--variation", "hand:0.06,0,0",
                    "--env-steps", "60", "--max-episode-steps", "20", "--demo-rollouts", "1",
                    "--config", str(settings), "--out", str(tmp_path / "out")])

    learner = summary["learner"]
    # The exploring episodes went through learner.ingest whole (the demo rollout only into the demo buffer if won).
    assert learner.episodes == 3 and learner.received_transitions == 60 and len(learner.online) == 60
    assert learner.episode_log[-1]["steps"] == 20 and not learner.open
    assert summary["updates"] == learner.updates > 0 and learner.version > 1  # heads went to the actor
    assert "episode 4:" in capsys.readouterr().out  # progress: demo rollout (episode 1), then 3 exploring ones

    trained = load_policy(tmp_path / "out" / "policy")  # loads (hashes verified) and holds the new head
    assert read_manifest(tmp_path / "out" / "policy")["info"]["stage"] == "stage1-reference"
    start, new = policy.head_state(), trained.head_state()
    assert any(not torch.equal(start[name], new[name]) for name in start if name.startswith("mlp."))
    for name in start:  # pooled latents: the token learner stays the VLA's own
        if not name.startswith("mlp."):
            torch.testing.assert_close(new[name], start[name])
    assert summary["changed_head_tensors"] > 0
