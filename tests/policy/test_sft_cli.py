"""`irevla sft` and `irevla policy info`: the parsers the main CLI mounts, run end to end on a tiny config."""

import argparse
from pathlib import Path

import pytest
import yaml
from policy_factory import tiny_config

from irevla.config import ConfigError, load_config
from irevla.policy.cli import add_policy_parser, add_sft_parser
from irevla.policy.config import SFTConfig
from irevla.policy.errors import CheckpointError

REPO = Path(__file__).resolve().parents[2]


def _parser():
    parser = argparse.ArgumentParser(prog="irevla")
    commands = parser.add_subparsers(dest="command", required=True)
    add_sft_parser(commands)
    add_policy_parser(commands)
    return parser


def run(argv):
    args = _parser().parse_args(argv)
    return args.func(args)


def test_help_explains_the_options(capsys):
    with pytest.raises(SystemExit):
        _parser().parse_args(["sft", "--help"])
    text = capsys.readouterr().out
    for option in ("--config", "--data", "--out", "--steps", "--init", "--resume", "--stop-after", "--set"):
        assert option in text
    assert "examples:" in text
    with pytest.raises(SystemExit):
        _parser().parse_args(["policy", "eval", "--help"])
    assert "--episodes" in capsys.readouterr().out


def test_shipped_sft_configs_are_valid():
    for path in sorted((REPO / "config").glob("sft*.yaml")):
        config = load_config(path, SFTConfig)
        assert config.train.steps > 0, path


def test_sft_then_policy_info_from_the_command_line(dataset_dir, tmp_path, capsys):
    config_path = tmp_path / "sft.yaml"
    config_path.write_text(yaml.safe_dump({"policy": tiny_config(training="frozen").model_dump(mode="json"),
                                           "data": {"dirs": ["unused"]},
                                           "train": {"steps": 4, "batch_size": 8, "tensorboard": False}}))
    out = tmp_path / "run"
    assert run(["sft", "--config", str(config_path), "--data", str(dataset_dir), "--out", str(out), "--steps", "3",
                "--set", "train.log_every=1", "train.lr=2.0e-4", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "SFT done: 3 steps" in printed and str(out / "policy") in printed
    saved = load_config(out / "config.yaml", SFTConfig)
    assert saved.train.lr == 2e-4 and saved.train.steps == 3 and saved.data.dirs == (str(dataset_dir),)

    assert run(["policy", "info", str(out / "policy")]) == 0
    info = capsys.readouterr().out
    assert "blip2" in info and "files verified: yes" in info and "['dx', 'dy', 'dz', 'gripper']" in info

    (out / "policy" / "stats.json").write_text("{}")
    with pytest.raises(CheckpointError, match=r"stats\.json: content hash"):
        run(["policy", "info", str(out / "policy")])


def test_command_line_mistakes_are_config_errors(dataset_dir, tmp_path):
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        run(["sft", "--data", str(dataset_dir), "--set", "train.lr"])
    with pytest.raises(ConfigError, match="train.batch_size: Input should be greater than or equal to 1"):
        run(["sft", "--data", str(dataset_dir), "--out", str(tmp_path / "x"), "--set", "train.batch_size=0"])
    with pytest.raises(ConfigError, match="data: required key is missing"):
        run(["sft", "--out", str(tmp_path / "y")])
    with pytest.raises(ConfigError, match="policy.head.hiden: unknown key"):
        run(["sft", "--data", str(dataset_dir), "--set", "policy.head.hiden=[8]"])
