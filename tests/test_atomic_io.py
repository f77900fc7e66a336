"""irevla.atomic_io: whole files, library-written files and whole directories replace their target or nothing."""

import os

import pytest

from irevla.atomic_io import atomic_write_text, commit_file, new_temp_directory, replace_directory


def test_atomic_write_replaces_or_leaves_the_target(tmp_path, monkeypatch):
    target = atomic_write_text(tmp_path / "sub" / "a.txt", "one")
    assert target.read_text() == "one"

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", fail)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(target, "two")
    assert target.read_text() == "one" and sorted(p.name for p in target.parent.iterdir()) == ["a.txt"]


def test_commit_file_renames_a_library_written_file(tmp_path):
    temp = tmp_path / ".tmp-x.h5"
    temp.write_bytes(b"data")
    assert commit_file(temp, tmp_path / "final.h5").read_bytes() == b"data"
    assert not temp.exists()


def test_replace_directory_swaps_a_whole_directory(tmp_path):
    target = tmp_path / "checkpoint"
    for content in ("old", "new"):
        temp = new_temp_directory(target)
        assert temp.name == f".checkpoint.tmp-{os.getpid()}" and not any(temp.iterdir())
        (temp / "weights").write_text(content)
        replace_directory(temp, target)
    assert (target / "weights").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]  # no temp or old directory left
