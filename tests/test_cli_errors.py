"""Every `irevla` subcommand answers a typical user mistake with one line on stderr and exit status 2, no traceback.

A mistake is anything a user can fix (a missing file, an unknown or mistyped YAML key, no learner token, a bad
variation, a corrupt checkpoint): it raises an `irevla.errors.UserError`, which `irevla.cli.main` prints as
``irevla: error: <message>``. Most cases run `main()` in this process (fast); a handful run a real `irevla` process
to prove that what reaches the terminal is that one line.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "policy"))  # tests/policy/policy_factory.py

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from irevla.cli import main  # noqa: E402
from irevla.errors import MissingFileError, UserError  # noqa: E402

TOKEN_VARIABLES = ("IREVLA_LEARNER_TOKEN", "IREVLA_LEARNER_TOKEN_FILE")


# ------------------------------------------------------------------------------------------------------ fixtures
def _truncate(path: Path, keep: int | None = None) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 if keep is None else keep])


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """Every input a case needs, made once: configs with mistakes, a tiny policy (good and truncated), a dataset."""
    root = tmp_path_factory.mktemp("cli_errors")
    (root / "unknown_key.yaml").write_text("data:\n  dirs: [somewhere]\ntrain:\n  stepz: 3\n")
    (root / "wrong_type.yaml").write_text("data:\n  dirs: [somewhere]\ntrain:\n  steps: lots\n")
    (root / "loop_unknown_key.yaml").write_text("rl_taks: [button-press-v3]\n")
    (root / "loop_wrong_type.yaml").write_text("rl_tasks: 3\n")
    (root / "learner_unknown_key.yaml").write_text("algorithm: sac\nlerner: {}\n")
    (root / "calibration_unknown_key.yaml").write_text("board:\n  squares_x: 5\n  sqare_length: 0.03\n")
    robot_config = root / "robot_config"
    robot_config.mkdir()
    (robot_config / "franka_control.yaml").write_text(
        "franka_control:\n  ros__parameters:\n    safety:\n      max_linear_velocity: fast\n")

    import torch
    from policy_factory import tiny_policy, write_dataset

    from irevla.policy.checkpoint import save_policy

    torch.set_num_threads(1)
    save_policy(tiny_policy(training="frozen"), root / "policy")
    corrupt = root / "corrupt_policy"
    save_policy(tiny_policy(training="frozen"), corrupt)
    for weights in corrupt.glob("*.safetensors"):
        _truncate(weights)
    (root / "corrupt_head.safetensors").write_bytes((root / "policy" / "head.safetensors").read_bytes()[:100])
    dataset = write_dataset(root / "episodes", episodes_per_task=1, tasks=("push-left",))
    (root / "corrupt_episodes").mkdir()
    episode = next(dataset.glob("*.h5"))
    (root / "corrupt_episodes" / episode.name).write_bytes(episode.read_bytes()[:2000])
    return root


# --------------------------------------------------------------------------------------------------------- cases
# (id, arguments with {w} = the work directory, what the message must contain, token set?)
CASES = [
    ("demo-missing-config", "demo --config {w}/missing.yaml", "missing.yaml: config file not found"),
    ("demo-unknown-key", "demo --config {w}/loop_unknown_key.yaml", "rl_taks: unknown key"),
    ("demos-sim-unknown-task", "demos sim --tasks buton-press-v3 --episodes 1 --out {w}/demos",
     "unknown Meta-World task 'buton-press-v3'"),
    ("demos-sim-bad-variation", "demos sim --tasks button-press-v3 --episodes 1 --out {w}/demos "
                                "--variation color:purplish", "unknown colour 'purplish'"),
    ("data-info-missing-dir", "data info {w}/no_episodes", "no_episodes: episode directory does not exist"),
    ("data-export-missing-dir", "data export --format lerobot {w}/no_episodes {w}/lerobot_out",
     "no_episodes: not a directory of irevla episodes"),
    ("data-import-lerobot-missing", "data import lerobot {w}/no_dataset {w}/imported", "no_dataset: not a directory"),
    ("data-import-rosbag-missing", "data import rosbag {w}/no_bag {w}/imported", "no_bag"),
    ("data-view-missing", "data view {w}/no_episodes --sheet {w}/sheet.png", "no_episodes"),
    ("sim-show-unknown-task", "sim show --task drawer-opne-v3 --out {w}/task.png", "drawer-opne-v3"),
    ("sim-show-bad-variation", "sim show --task button-press-v3 --variation colour:red --out {w}/task.png",
     "unknown kind 'colour'"),
    ("sft-missing-config", "sft --config {w}/missing.yaml", "missing.yaml: config file not found"),
    ("sft-unknown-key", "sft --config {w}/unknown_key.yaml", "train.stepz: unknown key"),
    ("sft-wrong-type", "sft --config {w}/wrong_type.yaml", "train.steps: Input should be a valid integer"),
    ("sft-missing-data", "sft --data {w}/no_episodes --out {w}/sft", "no_episodes: episode directory does not exist"),
    ("sft-corrupt-init", "sft --data {w}/episodes --out {w}/sft --init {w}/corrupt_policy",
     "safetensors: content hash"),
    ("iterate-morning-missing-run", "iterate morning {w}/no_run", "no_run: run directory not found"),
    ("reward-train-missing-data", "reward train --data {w}/no_episodes --policy {w}/no_policy --out {w}/det",
     "no_episodes: episode directory does not exist"),
    ("reward-eval-missing-model", "reward eval --model {w}/no_detector --data {w}/episodes",
     "no_detector: success detector directory not found"),
    ("policy-info-missing", "policy info {w}/no_policy", "no_policy: policy checkpoint directory not found"),
    ("policy-info-corrupt", "policy info {w}/corrupt_policy", "safetensors: content hash"),
    ("policy-check-snapshot-missing", "policy check-snapshot {w}/no_snapshot --kind smolvlm",
     "no_snapshot: backbone.pretrained must be a local model directory"),
    ("policy-check-snapshot-hub-name", "policy check-snapshot Qwen/Qwen2.5-VL-3B-Instruct --kind qwen2_5_vl",
     "irevla never downloads models"),
    ("policy-eval-corrupt", "policy eval {w}/corrupt_policy --tasks button-press-v3 --episodes 1",
     "safetensors: content hash"),
    ("calibrate-board-unknown-key", "calibrate board --config {w}/calibration_unknown_key.yaml --out {w}/board.png",
     "sqare_length"),
    ("calibrate-intrinsics-missing-images", "calibrate intrinsics --images {w}/no_images --out {w}/intrinsics.yaml",
     "no_images"),
    ("calibrate-handeye-missing-samples", "calibrate handeye --from {w}/no_samples --out {w}/handeye.yaml",
     "no_samples"),
    ("calibrate-workspace-inverted-limits", "calibrate workspace --limits 0.7 0.3 0.5 0.3 -0.3 0.0 "
                                            "--out {w}/workspace.yaml", "must be greater than min"),
    ("iterate-missing-config", "iterate --config {w}/missing.yaml", "missing.yaml: config file not found"),
    ("iterate-unknown-key", "iterate --config {w}/loop_unknown_key.yaml", "rl_taks: unknown key"),
    ("iterate-wrong-type", "iterate --config {w}/loop_wrong_type.yaml", "rl_tasks: Input should be"),
    ("learner-init-missing-policy", "learner init --policy {w}/no_policy --out {w}/init",
     "no_policy: policy checkpoint directory not found"),
    ("learner-init-corrupt-policy", "learner init --policy {w}/corrupt_policy --out {w}/init",
     "safetensors: content hash"),
    ("learner-init-missing-demos", "learner init --policy {w}/policy --demos {w}/no_episodes --out {w}/init",
     "no_episodes: episode directory does not exist"),
    ("learner-init-unknown-key", "learner init --policy {w}/policy --config {w}/learner_unknown_key.yaml "
                                 "--out {w}/init", "lerner"),
    ("learner-serve-no-token", "learner serve --init {w}/no_init --out {w}/learner", "no learner token"),
    ("learner-serve-missing-init", "learner serve --init {w}/no_init --out {w}/learner",
     "no_init/spec.json: not found"),
    ("learner-serve-remote-bind", "learner serve --init {w}/no_init --out {w}/learner --bind tcp://10.1.2.3:5555",
     "not loopback"),
    ("learner-keys-out-is-a-file", "learner keys --out {w}/unknown_key.yaml",
     "unknown_key.yaml: exists and is not a directory"),
    ("learner-export-missing-head", "learner export --policy {w}/policy --head {w}/no_head.safetensors "
                                    "--out {w}/exported", "no_head.safetensors: head file not found"),
    ("learner-export-corrupt-head", "learner export --policy {w}/policy --head {w}/corrupt_head.safetensors "
                                    "--out {w}/exported", "corrupt_head.safetensors"),
    ("robot-up-bad-set", "robot up --sim --set max_linear_velocity=0.2", "expected NODE:KEY=VALUE"),
    ("robot-params-wrong-type", "robot params franka_control --config-dir {w}/robot_config",
     "safety.max_linear_velocity: Input should be a valid number"),
    ("robot-export-bag-missing", "robot export-bag {w}/no_episode.h5 {w}/bag", "no_episode.h5: no such episode file"),
    ("robot-export-bag-corrupt", "robot export-bag {w}/corrupt_episodes/ep-push-left-000.h5 {w}/bag",
     "ep-push-left-000.h5: not an HDF5 file"),
]

# Real processes for a handful (each starts Python: ~0.3-1 s): the user's terminal sees exactly one line.
SUBPROCESS_CASES = {"learner-serve-no-token", "sft-unknown-key", "data-info-missing-dir",
                    "calibrate-handeye-missing-samples", "robot-params-wrong-type"}


def _argv(template: str, work: Path) -> list[str]:
    return template.format(w=work).split()


def _set_token(monkeypatch, case_id: str) -> None:
    for variable in TOKEN_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    if case_id != "learner-serve-no-token":  # the other serve cases: a token is there, the next mistake shows
        monkeypatch.setenv("IREVLA_LEARNER_TOKEN", "0123456789abcdef" * 2)


def _check_one_line(code: int, err: str, expected: str) -> None:
    assert "Traceback" not in err, err
    assert code == 2, err
    lines = err.strip("\n").split("\n")
    assert len(lines) == 1, err
    assert lines[0].startswith("irevla: error: "), err
    assert expected in lines[0], err


@pytest.mark.parametrize(("case_id", "template", "expected"), CASES, ids=[case[0] for case in CASES])
def test_a_mistake_is_one_line_and_exit_2(case_id, template, expected, work, monkeypatch, capsys):
    _set_token(monkeypatch, case_id)
    argv = _argv(template, work)
    if case_id in SUBPROCESS_CASES:
        env = {k: v for k, v in os.environ.items() if k not in TOKEN_VARIABLES}
        if case_id != "learner-serve-no-token":
            env["IREVLA_LEARNER_TOKEN"] = os.environ["IREVLA_LEARNER_TOKEN"]
        done = subprocess.run([sys.executable, "-m", "irevla", *argv], capture_output=True, text=True, env=env,
                              cwd=work, timeout=120)
        _check_one_line(done.returncode, done.stderr, expected)
        return
    code = main(argv)
    _check_one_line(code, capsys.readouterr().err, expected)


def test_every_subcommand_has_a_case():
    """A new subcommand gets a mistake case here too."""
    import argparse

    from irevla.cli import build_parser

    def leaves(parser: argparse.ArgumentParser, prefix: tuple[str, ...]) -> set[tuple[str, ...]]:
        found = set()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    found |= leaves(child, (*prefix, name))
        return found or {prefix}

    commands = {" ".join(leaf) for leaf in leaves(build_parser(), ())}
    covered = {command for command in commands for _, template, _ in CASES if template.startswith(command + " ")}
    # `sim list` and `policy backbones` take no input a user can get wrong beyond argparse's own checks (exit 2,
    # usage); `data check` reports bad input as findings (exit 1), see its own test below.
    assert commands - covered == {"sim list", "policy backbones", "data check"}


def test_argparse_mistakes_exit_2_with_usage(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["sim", "list", "--family", "robosuite"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'robosuite'" in err and "Traceback" not in err


def test_data_check_reports_a_missing_directory_as_a_finding(work, capsys):
    """`data check` reports every bad input and exits 1 (its documented status), naming the directory."""
    assert main(["data", "check", str(work / "no_episodes")]) == 1
    captured = capsys.readouterr()
    assert "no_episodes: not a directory" in captured.out and "Traceback" not in captured.err


def test_user_errors_keep_their_builtin_bases():
    """`except ValueError` / `except FileNotFoundError` callers keep working."""
    from irevla.calibration.errors import CalibrationError
    from irevla.config import ConfigError
    from irevla.data.episode_file import EpisodeFormatError
    from irevla.head_file import HeadFileError
    from irevla.iterate.handoff import HandoffError
    from irevla.iterate.loop import LoopError
    from irevla.learner.replay import ReplayError
    from irevla.policy.errors import CheckpointError
    from irevla.sim.base import UnknownTaskError
    from irevla.sim.demos import DuplicateDemosError
    from irevla.sim.variations import VariationError
    from irevla.spec import ContractError

    for error in (CalibrationError, ConfigError, EpisodeFormatError, HeadFileError, HandoffError, ReplayError,
                  CheckpointError, UnknownTaskError, DuplicateDemosError, VariationError, ContractError):
        assert issubclass(error, UserError) and issubclass(error, ValueError), error
    assert issubclass(LoopError, UserError) and issubclass(LoopError, RuntimeError)
    assert issubclass(MissingFileError, UserError) and issubclass(MissingFileError, FileNotFoundError)


def test_a_bug_keeps_its_traceback(monkeypatch):
    """Only user errors become one line: anything else propagates (its traceback reaches the terminal)."""
    import irevla.cli

    def broken(args):
        raise KeyError("a bug")

    import irevla.data.cli

    monkeypatch.setattr(irevla.data.cli, "_cmd_info", broken)  # build_parser() looks the handler up when main runs
    with pytest.raises(KeyError, match="a bug"):
        main(["data", "info", "anywhere"])
