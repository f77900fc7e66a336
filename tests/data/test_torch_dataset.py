"""EpisodeStepDataset: indexing, sample contents, action chunks, caching, DataLoader workers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from episode_factory import make_episode, make_task
from torch.utils.data import DataLoader

from irevla.data.episode_file import read_episode
from irevla.data.split import split_by_episode
from irevla.data.stats import compute_stats
from irevla.data.store import EpisodeStore
from irevla.data.torch_dataset import EpisodeStepDataset

N_STEPS = [3, 5, 4, 6]


@pytest.fixture()
def store(tmp_path: Path) -> EpisodeStore:
    store = EpisodeStore(tmp_path)
    task = make_task(cameras={"front": (12, 10), "wrist": (8, 8)})
    for seed, n_steps in enumerate(N_STEPS):
        store.write(make_episode(seed, n_steps=n_steps, task=task, success=seed != 2))
    return store


def episodes_by_seed(store: EpisodeStore) -> dict[int, object]:
    return {e.metadata["seed"]: e for e in store.episodes()}


def test_length_and_locate(store: EpisodeStore) -> None:
    dataset = EpisodeStepDataset(store.paths())
    assert len(dataset) == sum(N_STEPS) and dataset.n_episodes == 4
    expected = [(e, t) for e, n in enumerate(N_STEPS) for t in range(n)]
    assert [dataset.locate(i) for i in range(len(dataset))] == expected
    assert dataset.locate(-1) == (3, 5)
    with pytest.raises(IndexError):
        dataset[len(dataset)]


@pytest.mark.parametrize("cache", [False, True])
def test_samples_match_the_episodes(store: EpisodeStore, cache: bool) -> None:
    dataset = EpisodeStepDataset(store.index(), cache=cache)
    episodes = [episodes_by_seed(store)[seed] for seed in range(4)]
    for index in range(len(dataset)):
        sample = dataset[index]
        episode = episodes[sample["episode"]]
        t = sample["step"]
        assert set(sample["images"]) == {"front", "wrist"}
        assert sample["images"]["front"].dtype == torch.uint8 and sample["images"]["front"].shape == (12, 10, 3)
        assert np.array_equal(sample["images"]["front"].numpy(), episode.images["front"][t])
        assert np.array_equal(sample["images"]["wrist"].numpy(), episode.images["wrist"][t])
        assert sample["proprio"].dtype == torch.float32 and np.array_equal(sample["proprio"], episode.proprio[t])
        assert sample["action"].dtype == torch.float32 and np.array_equal(sample["action"], episode.actions[t])
        assert sample["instruction"] == episode.instruction and sample["task"] == "button-press-v3"
        assert "action_mask" not in sample


def test_chw_layout_and_camera_subset(store: EpisodeStore) -> None:
    dataset = EpisodeStepDataset(store.paths(), image_layout="chw", cameras=["wrist"])
    sample = dataset[0]
    assert list(sample["images"]) == ["wrist"] and sample["images"]["wrist"].shape == (3, 8, 8)
    episode = episodes_by_seed(store)[0]
    assert np.array_equal(sample["images"]["wrist"].permute(1, 2, 0).numpy(), episode.images["wrist"][0])
    with pytest.raises(ValueError, match="has no camera"):
        EpisodeStepDataset(store.paths(), cameras=["side"])


def test_episodes_of_different_shapes_are_refused(store: EpisodeStore) -> None:
    other = store.write(make_episode(9, task=make_task(cameras={"front": (12, 10), "wrist": (8, 8)},
                                                       real_robot=True)))
    with pytest.raises(ValueError, match=f"{other.name}: action dim is 7, but 4 in"):
        EpisodeStepDataset(store.paths())


def test_action_chunks_pad_with_the_last_action(store: EpisodeStore) -> None:
    dataset = EpisodeStepDataset(store.paths(), action_chunk=4)
    episode = episodes_by_seed(store)[1]  # 5 steps
    base = N_STEPS[0]  # sample index of episode 1, step 0
    assert dataset.locate(base) == (1, 0)
    start = dataset[base + 0]
    assert start["action"].shape == (4, 4) and start["action_mask"].tolist() == [True] * 4
    assert np.array_equal(start["action"], episode.actions[0:4])
    end = dataset[base + 3]  # steps 3, 4, then two pads
    assert end["action_mask"].tolist() == [True, True, False, False]
    assert np.array_equal(end["action"], episode.actions[[3, 4, 4, 4]])
    last = dataset[base + 4]
    assert last["action_mask"].tolist() == [True, False, False, False]
    assert np.array_equal(last["action"], np.repeat(episode.actions[4:5], 4, axis=0))


def test_from_dirs_filters_and_statistics(store: EpisodeStore) -> None:
    dataset = EpisodeStepDataset.from_dirs(store.root, success=True)
    assert dataset.n_episodes == 3 and len(dataset) == sum(N_STEPS) - N_STEPS[2]
    assert dataset.statistics() == compute_stats(dataset.infos)


def test_split_datasets_share_no_episode(store: EpisodeStore) -> None:
    train_infos, val_infos = split_by_episode(store.index(), 0.25, seed=0)
    train, val = EpisodeStepDataset(train_infos), EpisodeStepDataset(val_infos)
    assert len(train) + len(val) == sum(N_STEPS)
    train_keys = {(train.infos[e].path, t) for e, t in map(train.locate, range(len(train)))}
    val_keys = {(val.infos[e].path, t) for e, t in map(val.locate, range(len(val)))}
    assert {p for p, _ in train_keys}.isdisjoint({p for p, _ in val_keys})


def test_open_files_are_bounded(store: EpisodeStore) -> None:
    dataset = EpisodeStepDataset(store.paths(), max_open_files=2)
    for index in range(len(dataset)):
        dataset[index]
        assert len(dataset._readers) <= 2
    dataset.close()
    assert len(dataset._readers) == 0
    assert dataset[0]["step"] == 0  # reopens lazily


@pytest.mark.parametrize("action_chunk", [None, 3])
def test_dataloader_with_two_workers(store: EpisodeStore, action_chunk: int | None) -> None:
    dataset = EpisodeStepDataset(store.paths(), action_chunk=action_chunk, image_layout="chw")
    dataset[0]  # the parent opens a file before forking: workers must not reuse that handle
    loader = DataLoader(dataset, batch_size=5, shuffle=True, num_workers=2,
                        generator=torch.Generator().manual_seed(0))
    seen = []
    for batch in loader:
        assert batch["images"]["front"].shape[1:] == (3, 12, 10) and batch["images"]["front"].dtype == torch.uint8
        assert batch["proprio"].dtype == torch.float32
        assert batch["action"].shape[1:] == ((4,) if action_chunk is None else (3, 4))
        assert isinstance(batch["instruction"], list)
        rows = zip(batch["episode"].tolist(), batch["step"].tolist(), batch["action"], batch["images"]["front"],
                   strict=True)
        for episode, step, action, image in rows:
            expected = dataset[dataset._offsets[episode] + step]["action"]
            assert torch.equal(action, expected)
            # Frames come from HDF5 in the workers: compare with an independent read of the file.
            frame = read_episode(store.paths()[episode]).images["front"][step]
            assert torch.equal(image, torch.from_numpy(frame).permute(2, 0, 1))
            seen.append((episode, step))
    assert sorted(seen) == [dataset.locate(i) for i in range(len(dataset))]
