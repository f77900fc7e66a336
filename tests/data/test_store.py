"""EpisodeStore / EpisodeCollection: index by scanning, filters, check, summary, CLI helpers, temp cleanup."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest
from bad_episode_files import BAD_FILES, make_bad_file
from episode_factory import make_episode, make_task

from irevla.data.episode_file import read_episode
from irevla.data.store import EpisodeCollection, EpisodeStore, check_directories, format_summary


def fill(store: EpisodeStore) -> dict[Path, object]:
    """Six episodes over two tasks, sources, rounds; returns path -> episode."""
    press, drawer = make_task("button-press-v3"), make_task("drawer-open-v3", variation="color:red")
    specs = [(press, "script", 0, True), (press, "script", 0, False), (press, "rl", 1, True),
             (drawer, "script", 0, True), (drawer, "rl", 1, True), (drawer, "intervention", 1, False)]
    written = {}
    for seed, (task, source, round_, success) in enumerate(specs):
        episode = make_episode(seed, n_steps=4 + seed, task=task, source=source, round=round_, success=success)
        written[store.write(episode)] = episode
    return written


def test_write_then_index_and_read_back(tmp_path: Path) -> None:
    store = EpisodeStore(tmp_path / "new" / "dir")  # created on demand
    written = fill(store)
    assert store.paths() == sorted(written)
    infos = store.index()
    assert [i.path for i in infos] == store.paths()
    for info in infos:
        assert read_episode(info.path) == written[info.path]
    assert [e.metadata["seed"] for e in store.episodes(source="rl")] == [2, 4]


@pytest.mark.parametrize("filters, seeds", [
    ({}, [0, 1, 2, 3, 4, 5]),
    ({"task": "button-press-v3"}, [0, 1, 2]),
    ({"task": "metaworld/drawer-open-v3@color:red#0"}, [3, 4, 5]),
    ({"task": ["button-press-v3", "drawer-open-v3"]}, [0, 1, 2, 3, 4, 5]),
    ({"source": "rl"}, [2, 4]),
    ({"source": ("rl", "intervention")}, [2, 4, 5]),
    ({"success": True}, [0, 2, 3, 4]),
    ({"success": False}, [1, 5]),
    ({"round": 1}, [2, 4, 5]),
    ({"round": 1, "success": True, "task": "drawer-open-v3"}, [4]),
    ({"task": "pick-place-v3"}, []),
])
def test_index_filters(tmp_path: Path, filters: dict, seeds: list[int]) -> None:
    store = EpisodeStore(tmp_path)
    fill(store)
    found = sorted(read_episode(info.path).metadata["seed"] for info in store.index(**filters))
    assert found == seeds


def test_hidden_and_foreign_files_are_not_episodes(tmp_path: Path) -> None:
    store = EpisodeStore(tmp_path)
    path = store.write(make_episode(1))
    (tmp_path / ".tmp-0123.h5").write_bytes(b"half an episode")
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "other.h5").write_bytes(b"not ours")
    assert store.paths() == [path]
    assert store.check() == []


def test_collections_combine_directories(tmp_path: Path) -> None:
    expert, rl = EpisodeStore(tmp_path / "expert"), EpisodeStore(tmp_path / "rl")
    expert.write(make_episode(1, source="script"))
    rl.write(make_episode(2, source="rl"))
    rl.write(make_episode(3, source="rl"))
    both = EpisodeCollection([expert.root, rl.root, tmp_path / "rl"])  # the same directory twice counts once
    assert len(both.paths()) == 3
    assert sorted(i.source for i in both.index()) == ["rl", "rl", "script"]
    assert both.summary().episodes == 3
    with pytest.raises(FileNotFoundError, match="episode directory does not exist"):
        EpisodeCollection([tmp_path / "missing"])


def test_recursive_collection_finds_nested_directories(tmp_path: Path) -> None:
    EpisodeStore(tmp_path / "a" / "b").write(make_episode(1))
    EpisodeStore(tmp_path / ".hidden").write(make_episode(2))
    assert EpisodeCollection(tmp_path).paths() == []
    assert len(EpisodeCollection(tmp_path, recursive=True).paths()) == 1


def test_check_reports_every_bad_file_and_good_ones_still_index(tmp_path: Path, caplog) -> None:
    store = EpisodeStore(tmp_path)
    good = fill(store)
    bad = {make_bad_file(tmp_path, kind): kind for kind in sorted(BAD_FILES)}

    problems = store.check()
    assert sorted(path for path, _ in problems) == sorted(bad)
    for path, problem in problems:
        assert BAD_FILES[bad[path]][1] in problem

    # Cheap check (no array data) finds everything but the flipped bit inside a frame.
    shallow = {path for path, _ in store.check(deep=False)}
    assert {bad[p] for p in set(bad) - shallow} == {"flipped_bit", "nan_action"}

    with caplog.at_level(logging.WARNING):
        infos = store.index()
    only_data_is_bad = {p for p, kind in bad.items() if kind in ("flipped_bit", "nan_action")}
    assert {info.path for info in infos} == set(good) | only_data_is_bad
    assert "irevla data check" in caplog.text

    n_ok, cli_problems = check_directories([tmp_path, tmp_path / "missing"])
    assert n_ok == len(good)
    assert cli_problems[:-1] == problems
    assert cli_problems[-1] == (tmp_path / "missing", "not a directory (no episodes checked)")


def test_summary_counts_and_table(tmp_path: Path) -> None:
    store = EpisodeStore(tmp_path)
    written = fill(store)
    make_bad_file(tmp_path, "truncated")
    (tmp_path / ".tmp-abandoned.h5").write_bytes(b"x")
    summary = store.summary()
    assert summary.episodes == 6 and summary.successes == 4
    assert summary.steps == sum(e.n_steps for e in written.values())
    assert summary.sources == {"script": 3, "rl": 2, "intervention": 1}
    assert summary.rounds == {0: 3, 1: 3}
    press = summary.tasks["metaworld/button-press-v3"]
    assert (press.episodes, press.successes, press.steps) == (3, 2, 4 + 5 + 6)
    assert summary.bytes_on_disk == sum(p.stat().st_size for p in store.paths())
    assert len(summary.unreadable) == 1 and summary.temp_files == 1

    table = format_summary([tmp_path])
    print(table)
    assert "metaworld/button-press-v3" in table and "metaworld/drawer-open-v3@color:red#0" in table
    assert "67%" in table and "1 unreadable episode file(s)" in table and "1 temp file(s)" in table
    lines = table.splitlines()
    total = next(line for line in lines if line.startswith("total"))
    assert total.split()[1:5] == ["6", "4", "67%", str(summary.steps)]


def test_summary_of_empty_directory(tmp_path: Path) -> None:
    assert "(no episodes)" in format_summary([tmp_path])
    assert check_directories([tmp_path]) == (0, [])


def test_cleanup_removes_only_old_temp_files(tmp_path: Path) -> None:
    store = EpisodeStore(tmp_path)
    episode_path = store.write(make_episode(1))
    old, fresh = tmp_path / ".tmp-old.h5", tmp_path / ".tmp-fresh.h5"
    old.write_bytes(b"abandoned")
    fresh.write_bytes(b"a writer is busy with this one")
    an_hour_ago = time.time() - 7200
    os.utime(old, (an_hour_ago, an_hour_ago))
    assert store.cleanup_stale_temp(older_than_s=3600) == [old]
    assert fresh.exists() and episode_path.exists() and not old.exists()
