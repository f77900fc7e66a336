"""LeRobotDataset v3.0 interop, checked by LeRobot itself.

irevla writes and reads the format with pyarrow + PyAV (irevla/data/lerobot.py). The real `lerobot` package lives in
its own environment (.venv-lerobot, built by `make test`: it needs another torch and torchvision than irevla's), and
`lerobot_side.py` runs there as a subprocess: it loads irevla's export with `LeRobotDataset` and writes a dataset with
LeRobot's own writer for irevla to import. Only JSON and the dataset directories cross between the two.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from episode_factory import make_episode, make_task

pytest.importorskip("pyarrow")
pytest.importorskip("av")

from irevla.cli import main  # noqa: E402
from irevla.data.episode_file import read_episode  # noqa: E402
from irevla.data.lerobot import LeRobotFormatError, encode_video, export_lerobot, import_lerobot, psnr  # noqa: E402
from irevla.data.store import EpisodeStore  # noqa: E402

HERE = Path(__file__).parent
REPO = HERE.parent.parent
LEROBOT_PYTHON = Path(os.environ.get("IREVLA_LEROBOT_PYTHON", REPO / ".venv-lerobot" / "bin" / "python"))
needs_lerobot = pytest.mark.skipif(
    not LEROBOT_PYTHON.exists(),
    reason=f"the LeRobot environment {LEROBOT_PYTHON} is missing: `make lerobot-env` builds it (make test does)")

sys.path.insert(0, str(HERE))
import lerobot_side  # noqa: E402  (numpy-only helpers shared with the LeRobot side; lerobot is imported lazily there)


def smooth_images(n_frames: int, height: int, width: int, shift: int) -> np.ndarray:
    """Camera-like frames: smooth gradients that move over time (a video codec keeps them close; noise it would not)."""
    t = np.arange(n_frames)[:, None, None]
    yy, xx = np.mgrid[0:height, 0:width]
    red = 30 + 3 * yy[None] + 4 * t
    green = 50 + 2 * xx[None] + shift + 0 * t
    blue = 90 + yy[None] + xx[None] + 2 * t
    return np.clip(np.stack([red, green, blue], -1), 0, 255).astype(np.uint8)


def irevla_episodes(directory: Path, n: int = 3) -> list:
    task = make_task(cameras={"front": (32, 48), "wrist": (16, 16)}, real_robot=True)
    store = EpisodeStore(directory)
    episodes = []
    for seed in range(n):
        episode = make_episode(seed, n_steps=5 + seed, task=task, success=seed != 1)
        images = {camera: smooth_images(episode.n_steps + 1, h, w, 20 * seed)
                  for camera, (h, w) in task.observation_spec.cameras.items()}
        episode = dataclasses.replace(episode, images=images, interventions=None if seed == 2 else
                                      episode.interventions)
        store.write(episode)
        episodes.append(episode)
    return sorted(episodes, key=lambda e: e.created)


def run_lerobot(*args: str) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "SVT_LOG": "1",
           "HF_HOME": os.environ.get("HF_HOME", "/nonexistent-hf-home")}
    result = subprocess.run([str(LEROBOT_PYTHON), str(HERE / "lerobot_side.py"), *args], env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]


def test_encoding_leaves_the_callers_scheduling_alone(tmp_path: Path) -> None:
    # As root (CI, containers, many robot PCs) SVT-AV1 turns the thread that opens it into SCHED_FIFO; encode_video opens
    # it from a thread of its own, so the caller, and everything it starts later, keeps normal scheduling.
    before = os.sched_getscheduler(0), os.sched_getparam(0).sched_priority
    encode_video(np.zeros((3, 16, 16, 3), np.uint8), tmp_path / "v.mp4", 10.0, codec="av1")
    assert (os.sched_getscheduler(0), os.sched_getparam(0).sched_priority) == before
    assert (tmp_path / "v.mp4").stat().st_size > 0
    with pytest.raises(LeRobotFormatError, match="v.mp4: yuv420p video needs even image sizes, got 15x16"):
        encode_video(np.zeros((3, 15, 16, 3), np.uint8), tmp_path / "v.mp4", 10.0)


def test_round_trip_is_exact_for_arrays_and_close_for_images(tmp_path: Path) -> None:
    episodes = irevla_episodes(tmp_path / "src")
    report = export_lerobot([tmp_path / "src"], tmp_path / "lr", progress=False)
    assert (report.episodes, report.frames) == (3, sum(e.n_steps + 1 for e in episodes))
    assert min(report.psnr_db.values()) > 35, report.format()  # measured PSNR of the codec, in the report
    info = json.loads((tmp_path / "lr" / "meta" / "info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == 10 and info["total_episodes"] == 3
    assert info["features"]["action"]["names"] == list(episodes[0].task.action_spec.names)

    back = import_lerobot(tmp_path / "lr", tmp_path / "back", progress=False)
    assert back.success_from == "irevla's own"
    imported = sorted((read_episode(p) for p in back.written), key=lambda e: e.created)
    for original, copy in zip(episodes, imported, strict=True):
        for name in ("actions", "proprio", "rewards", "timestamps"):
            assert getattr(copy, name).tobytes() == getattr(original, name).tobytes(), name
        if original.interventions is None:
            assert copy.interventions is None
        else:
            assert np.array_equal(copy.interventions, original.interventions)
        for name in ("task", "instruction", "success", "source", "round", "created", "metadata"):
            assert getattr(copy, name) == getattr(original, name), name
        for camera, frames in original.images.items():
            assert copy.images[camera].shape == frames.shape
            assert psnr(copy.images[camera], frames) > 35


def test_export_refuses_what_lerobot_cannot_hold(tmp_path: Path) -> None:
    irevla_episodes(tmp_path / "src", n=1)
    other = make_task(cameras={"front": (32, 48), "wrist": (16, 16)}, real_robot=False)  # another action layout
    EpisodeStore(tmp_path / "src").write(make_episode(9, n_steps=3, task=other))
    with pytest.raises(LeRobotFormatError, match=r"proprio_names .* differ .*export them separately"):
        export_lerobot([tmp_path / "src"], tmp_path / "lr", progress=False)
    assert not (tmp_path / "lr").exists() and not list(tmp_path.glob(".lr.tmp-*"))
    (tmp_path / "lr").mkdir()
    with pytest.raises(LeRobotFormatError, match=r"lr exists"):
        export_lerobot([tmp_path / "src"], tmp_path / "lr", progress=False)
    odd = make_task(name="odd", cameras={"front": (15, 16)})
    EpisodeStore(tmp_path / "odd").write(make_episode(3, n_steps=2, task=odd))
    with pytest.raises(LeRobotFormatError, match=r"ep-.*h5: camera 'front' is 15x16; LeRobot's yuv420p video needs even image sizes"):
        export_lerobot([tmp_path / "odd"], tmp_path / "odd_lr", progress=False)
    assert not (tmp_path / "odd_lr").exists() and not list(tmp_path.glob(".odd_lr.tmp-*"))


def test_import_errors_name_the_file_and_feature(tmp_path: Path) -> None:
    irevla_episodes(tmp_path / "src", n=1)
    export_lerobot([tmp_path / "src"], tmp_path / "lr", progress=False)
    info_path = tmp_path / "lr" / "meta" / "info.json"
    info = json.loads(info_path.read_text())

    info["features"]["observation.environment_state"] = {"dtype": "float32", "shape": [2], "names": None}
    info_path.write_text(json.dumps(info))
    with pytest.raises(LeRobotFormatError, match=r"info.json: feature 'observation.environment_state'.*--ignore"):
        import_lerobot(tmp_path / "lr", tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())

    info["codebase_version"] = "v2.1"
    info_path.write_text(json.dumps(info))
    with pytest.raises(LeRobotFormatError, match=r"'codebase_version' is 'v2.1'.*convert_dataset_v21_to_v30"):
        import_lerobot(tmp_path / "lr", tmp_path / "out", progress=False)
    with pytest.raises(LeRobotFormatError, match=r"meta/info.json: missing"):
        import_lerobot(tmp_path / "src", tmp_path / "out", progress=False)
    assert main(["data", "import", "lerobot", str(tmp_path / "nowhere"), str(tmp_path / "out")]) == 2


def test_cli_export_and_import(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    irevla_episodes(tmp_path / "src", n=2)
    assert main(["data", "export", "--format", "lerobot", str(tmp_path / "src"), str(tmp_path / "lr")]) == 0
    assert "LeRobotDataset v3.0 written" in capsys.readouterr().out
    assert main(["data", "import", "lerobot", str(tmp_path / "lr"), str(tmp_path / "back")]) == 0
    assert "2 episode(s)" in capsys.readouterr().out
    assert main(["data", "export", "--format", "lerobot", str(tmp_path / "src")]) == 2  # no OUT


@needs_lerobot
def test_lerobot_loads_irevla_export(tmp_path: Path) -> None:
    episodes = irevla_episodes(tmp_path / "src")
    export_lerobot([tmp_path / "src"], tmp_path / "lr", progress=False)
    run_lerobot("load", str(tmp_path / "lr"), str(tmp_path / "seen.json"))
    seen = json.loads((tmp_path / "seen.json").read_text())
    assert seen["fps"] == 10 and seen["episodes"] == 3
    assert seen["frames"] == sum(e.n_steps + 1 for e in episodes)
    assert sorted(seen["camera_keys"]) == ["observation.images.front", "observation.images.wrist"]
    items = iter(seen["items"])
    for index, episode in enumerate(episodes):
        for t in range(episode.n_steps + 1):
            item = next(items)
            assert (item["episode_index"], item["frame_index"]) == (index, t)
            assert item["task"] == episode.instruction
            action = episode.actions[min(t, episode.n_steps - 1)]  # the final frame repeats the last action
            assert np.asarray(item["action"], np.float32).tobytes() == action.tobytes()
            assert np.asarray(item["state"], np.float32).tobytes() == episode.proprio[t].tobytes()
            assert item["done"] == (t == episode.n_steps)
            assert item["success"] == (t == episode.n_steps and episode.success)
            for camera, frames in episode.images.items():
                decoded = np.asarray(item["images"][camera], np.uint8)
                assert decoded.shape == frames[t].shape
                assert psnr(decoded, frames[t]) > 33, (index, t, camera)


@needs_lerobot
def test_irevla_imports_what_lerobot_wrote(tmp_path: Path) -> None:
    run_lerobot("write", str(tmp_path / "made"))
    with pytest.raises(LeRobotFormatError, match=r"'observation.environment_state'"):
        import_lerobot(tmp_path / "made", tmp_path / "out", progress=False)
    report = import_lerobot(tmp_path / "made", tmp_path / "out", ignore=["observation.environment_state"],
                            task_name="made", progress=False)
    assert report.ignored == ["observation.environment_state"]
    episodes = sorted((read_episode(p) for p in report.written), key=lambda e: e.metadata["lerobot"]["episode_index"])
    assert [e.n_steps for e in episodes] == [n - 1 for n in lerobot_side.LENGTHS]
    for index, episode in enumerate(episodes):
        assert episode.instruction == f"task number {index}" and episode.success and episode.source == "teleop"
        assert episode.task.control_hz == 15 and episode.task.name == "made"
        assert episode.task.action_spec.names == ("dx", "dy", "dz", "grip")
        assert episode.task.observation_spec.proprio_names == ("x", "y", "z")
        for t in range(episode.n_steps + 1):
            assert episode.proprio[t].tobytes() == lerobot_side.state(index, t).tobytes()
            assert psnr(episode.images["top"][t], lerobot_side.frame_image(index, t)) > 33
        for t in range(episode.n_steps):
            assert episode.actions[t].tobytes() == lerobot_side.action(index, t).tobytes()
        assert np.allclose(episode.timestamps, np.arange(episode.n_steps + 1) / 15, atol=1e-6)
        low, high = np.asarray(episode.task.action_spec.low), np.asarray(episode.task.action_spec.high)
        assert np.all(low <= episode.actions.min(0)) and np.all(episode.actions.max(0) <= high)


@needs_lerobot
def test_a_lerobot_dataset_becomes_stage_0_expert_data(tmp_path: Path) -> None:
    """The path docs/data.md describes for a dataset from the hub: LeRobot's files -> import -> `irevla sft`."""
    torch = pytest.importorskip("torch")
    from irevla.config import validate_config
    from irevla.policy.checkpoint import load_policy
    from irevla.policy.config import BackboneConfig, HeadConfig, PolicyConfig, SFTConfig
    from irevla.policy.sft import run_sft

    run_lerobot("write", str(tmp_path / "made"))
    report = import_lerobot(tmp_path / "made", tmp_path / "expert", ignore=["observation.environment_state"],
                            progress=False)
    backbone = BackboneConfig(kind="blip2", image_size=32, patch_size=8, vision_hidden_size=32, hidden_size=64,
                              heads=4, vision_layers=1, layers=2, num_query_tokens=4, max_text_tokens=16)
    policy = PolicyConfig(backbone=backbone, head=HeadConfig(token_dim=32, hidden=(64, 64), attention_heads=4),
                          backbone_training="lora")
    config = validate_config({"policy": policy.model_dump(mode="json"),
                              "data": {"dirs": [str(tmp_path / "expert")], "val_fraction": 0.0},
                              "out": str(tmp_path / "sft"),
                              "train": {"steps": 3, "batch_size": 4, "warmup_steps": 0, "log_every": 1,
                                        "eval_every": 3, "checkpoint_every": 3, "tensorboard": False}},
                             SFTConfig, "<test>")
    torch.manual_seed(0)
    result = run_sft(config, log=None)
    trained = load_policy(result.policy_dir)
    episode = read_episode(report.written[0])
    action = trained.act(episode.observation(0)).values
    assert action.shape == (4,) and np.all(np.isfinite(action))
    assert trained.action_spec.names == ("dx", "dy", "dz", "grip")


def test_image_statistics_are_exact_and_take_constant_memory() -> None:
    from irevla.data.lerobot import QUANTILES, ImageStats

    rng = np.random.default_rng(0)
    parts = [rng.integers(0, 256, (n, 6, 5, 3), dtype=np.uint8) for n in (3, 4)]
    stats = ImageStats()
    for part in parts:
        stats.add(part)
    result = stats.result()
    values = np.concatenate(parts).reshape(-1, 3).astype(np.float64) / 255.0
    assert result["count"] == [7]
    for name, expected in (("min", values.min(0)), ("max", values.max(0)), ("mean", values.mean(0)),
                           ("std", values.std(0))):
        assert np.allclose(np.asarray(result[name]).reshape(3), expected), name
    for q in QUANTILES:
        expected = np.quantile(values, q, axis=0, method="inverted_cdf")
        assert np.allclose(np.asarray(result[f"q{int(round(q * 100)):02d}"]).reshape(3), expected), q


def test_a_bad_episode_imports_nothing_and_is_named(tmp_path: Path) -> None:
    """NaN in the third episode's rewards: the error names the dataset and episode; OUT gets none of the three."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    irevla_episodes(tmp_path / "src")
    export_lerobot([tmp_path / "src"], tmp_path / "lr", progress=False)
    data_file = tmp_path / "lr" / "data" / "chunk-000" / "file-000.parquet"
    table = pq.read_table(data_file)
    rewards = table.column("next.reward").to_numpy().copy()
    episode_index = table.column("episode_index").to_numpy()
    rewards[np.flatnonzero(episode_index == 2)[1]] = np.nan
    table = table.set_column(table.column_names.index("next.reward"), "next.reward", pa.array(rewards))
    pq.write_table(table, data_file)
    (tmp_path / "out").mkdir()
    with pytest.raises(LeRobotFormatError, match=r"lr episode 2: Episode.rewards: non-finite"):
        import_lerobot(tmp_path / "lr", tmp_path / "out", progress=False)
    assert list((tmp_path / "out").iterdir()) == [] and not list(tmp_path.glob(".out.import-*"))
