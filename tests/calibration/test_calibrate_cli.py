"""`irevla calibrate ...` end to end: wiring, guided collection (simulated rig), offline solve, workspace, errors."""

from __future__ import annotations

import argparse
import builtins
import json

import pytest
import yaml

from irevla.calibration.cli import add_calibrate_parser, main


def scripted_input(monkeypatch, answers):
    answers = iter(answers)
    monkeypatch.setattr(builtins, "input", lambda prompt="": next(answers))


def test_parser_wires_into_a_parent_cli(capsys):
    parser = argparse.ArgumentParser(prog="irevla")
    add_calibrate_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["calibrate", "handeye", "--from", "somewhere"])
    assert callable(args.func) and str(args.from_dir) == "somewhere"
    for command in ("board", "intrinsics", "handeye", "workspace"):
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args(["calibrate", command, "--help"])
        assert exit_info.value.code == 0
    assert "eye-in-hand" in capsys.readouterr().out
    assert parser.parse_args(["calibrate"]).func(None) == 2


def test_board_image(tmp_path, capsys):
    out = tmp_path / "board.png"
    assert main(["calibrate", "board", "--out", str(out), "--dpi", "150"]) == 0
    assert out.stat().st_size > 1000 and "245 x 175 mm" in capsys.readouterr().out


def test_guided_collection_with_a_simulated_rig(tmp_path, monkeypatch, capsys):
    samples, out = tmp_path / "samples", tmp_path / "wrist.yaml"
    scripted_input(monkeypatch, [""] * 14 + ["u", "q"])  # 14 captures, undo the last one, finish
    assert main(["calibrate", "handeye", "--mode", "eye-in-hand", "--simulate", "--samples-dir", str(samples),
                 "--out", str(out), "--samples", "13"]) == 0
    printed = capsys.readouterr().out
    assert "removed sample_013" in printed and "13 samples used" in printed
    assert "rotate about the gripper" in printed  # guidance on missing rotations was given early on
    error_line = next(line for line in printed.splitlines() if line.startswith("SIMULATION: error"))
    assert float(error_line.split(":")[2].split("mm")[0]) < 2.0
    assert len(list(samples.glob("sample_*.png"))) == 13
    assert yaml.safe_load(out.read_text())["parameters"]["calibration_type"] == "eye_in_hand"


def test_offline_solve_writes_nothing_on_a_corrupt_sample(damaged_copy, tmp_path, capsys):
    directory = damaged_copy()
    (directory / "sample_005.json").write_text("{ not json")
    out = tmp_path / "result.yaml"
    assert main(["calibrate", "handeye", "--from", str(directory), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "sample_005.json: corrupt sample" in err and "nothing was written" in err
    assert not out.exists()
    assert main(["calibrate", "handeye", "--from", str(directory), "--out", str(out), "--skip-bad-samples",
                 "--easy-handeye2-out", str(tmp_path / "r.calib")]) == 0
    assert "warning: skipping" in capsys.readouterr().err and out.exists() and (tmp_path / "r.calib").exists()


def test_offline_solve_refuses_a_mode_mismatch(eye_in_hand_session, tmp_path, capsys):
    out = tmp_path / "result.yaml"
    assert main(["calibrate", "handeye", "--from", str(eye_in_hand_session.directory), "--mode", "eye-on-base",
                 "--out", str(out)]) == 2
    assert "recorded for eye-in-hand, not eye-on-base" in capsys.readouterr().err and not out.exists()


def test_collection_with_too_few_samples_keeps_them_and_writes_no_result(tmp_path, monkeypatch, capsys):
    samples, out = tmp_path / "samples", tmp_path / "result.yaml"
    scripted_input(monkeypatch, ["", "", "", "q"])
    assert main(["calibrate", "handeye", "--mode", "eye-on-base", "--simulate", "--samples-dir", str(samples),
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "too few usable samples: 3" in err and f"--from {samples}" in err
    assert not out.exists() and len(list(samples.glob("sample_*.json"))) == 3
    record = json.loads((samples / "sample_000.json").read_text())
    assert set(record) >= {"translation", "quaternion_xyzw", "image"}


def test_collection_needs_a_mode(capsys):
    assert main(["calibrate", "handeye", "--simulate"]) == 2
    assert "--mode eye-in-hand|eye-on-base is required" in capsys.readouterr().err


def test_workspace_from_typed_corner_poses(tmp_path, monkeypatch, capsys):
    out = tmp_path / "workspace.yaml"
    corners = ["", "0.30 -0.30 0.02 1 0 0 0", "", "0.75 0.30 0.55 1 0 0 0", "q"]
    scripted_input(monkeypatch, corners)
    assert main(["calibrate", "workspace", "--pose-source", "manual", "--margin", "0.01", "--out", str(out)]) == 0
    data = yaml.safe_load(out.read_text())
    assert data["min"] == pytest.approx([0.31, -0.29, 0.03]) and data["max"] == pytest.approx([0.74, 0.29, 0.54])
    assert data["frame"] == "fr3_link0" and data["margin"] == 0.01 and data["source"] == "corners"


def test_workspace_errors_write_nothing(tmp_path, monkeypatch, capsys):
    out = tmp_path / "workspace.yaml"
    scripted_input(monkeypatch, ["", "0.3 0.0 0.2 1 0 0 0", "q"])
    assert main(["calibrate", "workspace", "--pose-source", "manual", "--out", str(out)]) == 2
    assert "need at least 2 recorded corners" in capsys.readouterr().err and not out.exists()
    assert main(["calibrate", "workspace", "--limits", "0.3", "-0.3", "0.0", "0.7", "0.3", "0.5",
                 "--out", str(out)]) == 0
    assert yaml.safe_load(out.read_text())["min"] == pytest.approx([0.32, -0.28, 0.02])


def test_workspace_with_orientation_limits(tmp_path, capsys):
    out = tmp_path / "workspace.yaml"
    limits = ["calibrate", "workspace", "--limits", "0.3", "-0.3", "0.0", "0.7", "0.3", "0.5", "--out", str(out)]
    assert main([*limits, "--yaw", "-1", "1"]) == 2  # a yaw range without the cone's angle
    assert "--yaw / --nominal need --max-tilt" in capsys.readouterr().err and not out.exists()
    assert main([*limits, "--max-tilt", "0.8", "--yaw", "1", "-1"]) == 2
    assert "yaw_max (-1.0) must be greater than yaw_min (1.0)" in capsys.readouterr().err and not out.exists()
    assert main([*limits, "--max-tilt", "0.8", "--yaw", "-1", "1"]) == 0
    assert "orientation limits: tilt <= 0.800 rad, yaw -1.000..+1.000 rad" in capsys.readouterr().out
    data = yaml.safe_load(out.read_text())
    assert (data["max_tilt"], data["yaw_min"], data["yaw_max"], data["orientation_nominal"]) == (0.8, -1.0, 1.0, None)


def test_bad_config_names_file_and_key(tmp_path, capsys):
    config = tmp_path / "calibration.yaml"
    config.write_text("board:\n  square_length: 0.02\n  marker_length: 0.03\n")
    assert main(["calibrate", "board", "--config", str(config), "--out", str(tmp_path / "b.png")]) == 2
    err = capsys.readouterr().err
    assert "calibration.yaml: board" in err and "marker_length" in err


def test_shipped_config_matches_the_built_in_defaults():
    from pathlib import Path

    from irevla.calibration.config import CalibrationConfig, load_calibration_config

    path = Path(__file__).resolve().parents[2] / "config" / "calibration.yaml"
    assert load_calibration_config(path) == CalibrationConfig()
