"""`irevla reward train` / `eval`: a detector on a tiny VLA's frozen VLM learns a visible success signal, picks its
threshold for the target precision, and refuses another VLM, empty or one-class data and corrupt files."""

import json

import numpy as np
import pytest
from success_factory import save_tiny_policy, success_episode, write_success_data

from irevla.data.store import EpisodeStore
from irevla.errors import MissingFileError
from irevla.policy.checkpoint import load_policy, save_policy
from irevla.reward.detector import DetectorError, SuccessDetector
from irevla.reward.evaluate import evaluate_detector
from irevla.reward.features import vlm_fingerprint
from irevla.reward.labels import IGNORED, frame_labels
from irevla.reward.train import choose_threshold, train_detector


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("detector")
    policy = save_tiny_policy(root / "policy")
    data = write_success_data(root / "data", successes=14, failures=14, seed=0)
    held_out = write_success_data(root / "held_out", successes=10, failures=10, seed=1)
    report = train_detector([data], policy, root / "detector", target_precision=0.95, epochs=150, progress=False,
                            log=lambda _: None)
    return root, policy, held_out, report


def test_the_detector_learns_a_visible_success_and_meets_its_precision(trained):
    root, policy, held_out, report = trained
    assert report["target_met"]
    assert report["val_frames"]["precision"] >= 0.95  # the threshold was chosen for it on validation
    detector = SuccessDetector.load(root / "detector")
    assert detector.vlm == vlm_fingerprint(policy)
    assert detector.threshold == pytest.approx(report["threshold"])
    for name in ("report.md", "report.json", "pr_curve.png", "training/metrics.jsonl"):
        assert (root / "detector" / name).is_file(), name
    assert any((root / "detector" / "training" / "tensorboard").iterdir())

    result = evaluate_detector(root / "detector", [held_out], root / "eval", progress=False, log=lambda _: None)
    counts = result["episode_counts"]
    assert result["episodes"] == 20
    assert result["frames"]["precision"] >= 0.9 and result["frames"]["recall"] >= 0.8, result["frames"]
    assert counts["false_positive"] <= 1 and counts["true_positive"] >= 8, counts
    assert result["false_successes_per_100"] <= 5.0
    assert (root / "eval" / "eval.md").read_text().startswith("# Detector evaluation")
    # every episode has a decision row; failures it ended are listed with their frame
    for row in result["false_positives"]:
        assert isinstance(row["frame"], int) and row["frame"] >= 1


def test_auto_inputs_keep_what_carries_the_signal(trained, tmp_path):
    """Every candidate is tried and reported; the image signal is read from the latent, a proprio-only signal
    (the arm resting at the button) from the proprio."""
    report = trained[3]
    assert [c["inputs"] for c in report["candidates"]] == ["latent[all]", "latent[8], context 2", "proprio, context 2",
                                                         "latent[8]+proprio, context 2", "latent[all]+proprio"]
    assert "latent" in report["inputs"]
    policy = trained[1]
    data = write_success_data(tmp_path / "data", successes=10, failures=10, signal="proprio")
    report = train_detector([data], policy, tmp_path / "detector", target_precision=0.95, epochs=100,
                            progress=False, log=lambda _: None)
    assert "proprio" in report["inputs"] and report["val_frames"]["recall"] >= 0.8, report["candidates"]
    assert SuccessDetector.load(tmp_path / "detector").inputs == tuple(report["inputs"].split(",")[0].replace(
        "latent[8]", "latent").replace("latent[all]", "latent").split("+"))


def test_threshold_is_the_lowest_meeting_the_target():
    p = np.array([0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    y = np.array([1, 1, 1, 0, 1, 0, 0])
    assert choose_threshold(p, y, 1.0) == (0.8, True)
    assert choose_threshold(p, y, 0.8) == (0.6, True)
    threshold, met = choose_threshold(np.array([0.9, 0.8]), np.array([0, 1]), 0.99)
    assert (threshold, met) == (0.8, False)  # none reaches it: the most precise threshold (0.5 here) is kept
    threshold, met = choose_threshold(np.array([0.9, 0.9]), np.array([0, 1]), 0.99)
    assert not met and threshold == 0.9


def test_another_vlm_is_refused_and_the_same_vlm_with_a_new_head_is_not(trained, tmp_path):
    root, policy_dir, held_out, _ = trained
    other = save_tiny_policy(tmp_path / "other", seed=7)
    with pytest.raises(DetectorError, match=r"detector\.json: field 'vlm'.*irevla reward train --policy"):
        evaluate_detector(root / "detector", [held_out], tmp_path / "eval", policy_dir=other, progress=False,
                          log=lambda _: None)
    # stage 1 changes the head only: the detector stays valid for the RL policy
    policy = load_policy(policy_dir)
    state = policy.head_state()
    state = {name: tensor + 0.5 for name, tensor in state.items()}
    policy.load_head_state(state)
    save_policy(policy, tmp_path / "rl_policy")
    assert vlm_fingerprint(tmp_path / "rl_policy") == vlm_fingerprint(policy_dir)


def test_empty_and_one_class_data_are_clear_errors(trained, tmp_path):
    _, policy, _, _ = trained
    (tmp_path / "empty").mkdir()
    with pytest.raises(DetectorError, match="no episodes in"):
        train_detector([tmp_path / "empty"], policy, tmp_path / "d1", progress=False, log=lambda _: None)
    store = EpisodeStore(tmp_path / "failures")
    for i in range(4):
        store.write(success_episode(i, success=False))
    with pytest.raises(DetectorError, match=r"0 successful episode\(s\) of 4"):
        train_detector([tmp_path / "failures"], policy, tmp_path / "d2", progress=False, log=lambda _: None)
    store = EpisodeStore(tmp_path / "all_success")
    for i in range(4):  # every frame positive: nothing to tell apart
        store.write(success_episode(i, success=True, n_steps=3, success_frames=4))
    with pytest.raises(DetectorError, match="frames are all positive"):
        train_detector([tmp_path / "all_success"], policy, tmp_path / "d3", positive_frames=4, ignore_before=0, progress=False,
                       log=lambda _: None)
    assert not (tmp_path / "d1").exists() and not (tmp_path / "d2").exists() and not (tmp_path / "d3").exists()


def test_corrupt_detector_files_are_named(trained, tmp_path):
    import shutil

    root = trained[0]
    with pytest.raises(MissingFileError, match="not found"):
        SuccessDetector.load(tmp_path / "nothing")
    copy = tmp_path / "copy"
    shutil.copytree(root / "detector", copy)
    weights = copy / "detector.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(DetectorError, match=r"detector\.safetensors: content hash does not match"):
        SuccessDetector.load(copy)
    shutil.copy(root / "detector" / "detector.safetensors", weights)
    settings = json.loads((copy / "detector.json").read_text())
    (copy / "detector.json").write_text(json.dumps({**settings, "threshold": 2}))
    with pytest.raises(DetectorError, match=r"detector\.json: field 'threshold': expected a number in \[0, 1\]"):
        SuccessDetector.load(copy)
    (copy / "detector.json").write_text("{not json")
    with pytest.raises(DetectorError, match=r"detector\.json: not valid JSON"):
        SuccessDetector.load(copy)


def test_frame_labels():
    episode = success_episode(0, success=True, n_steps=10, success_frames=2)
    labels = frame_labels(episode, positive_frames=1, ignore_before=2)
    assert list(labels[-2:]) == [1, 1]  # rewarded steps: the simulator's per-step success
    assert list(labels[-4:-2]) == [IGNORED, IGNORED] and (labels[:-4] == 0).all()
    assert list(frame_labels(episode, positive_frames=4, ignore_before=0)[-5:]) == [0, 1, 1, 1, 1]
    failed = success_episode(1, success=False, n_steps=6)
    assert (frame_labels(failed) == 0).all()
    from dataclasses import replace

    labelled = replace(failed, metadata={"human_labels": [{"frame": 6, "success": True}, {"frame": 2,
                                                                                          "success": False}]})
    assert list(frame_labels(labelled)) == [0, 0, 0, 0, 0, 0, 1]
    vetoed = replace(episode, metadata={"human_labels": [{"frame": 10, "success": False}]})
    assert frame_labels(vetoed)[10] == 0
