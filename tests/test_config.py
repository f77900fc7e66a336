"""Typed YAML configs: unknown keys, wrong types and missing files are errors naming the key and the file."""

from pathlib import Path

import pytest

from irevla.config import (
    ConfigError,
    DemoConfig,
    SimConfig,
    compose_config,
    dump_config,
    load_config,
    override_model,
    parse_overrides,
    validate_config,
)

REPO = Path(__file__).resolve().parents[1]


def test_shipped_demo_config_loads():
    from irevla.iterate.config import IterateConfig

    config = load_config(REPO / "config" / "demo.yaml", IterateConfig)
    assert config.demos.family == "metaworld" and config.demos.episodes > 0
    assert (REPO / config.sft_config).is_file() and config.rl_tasks and config.unseen_tasks


def test_unknown_key_is_named_with_its_file(tmp_path):
    path = tmp_path / "demo.yaml"
    path.write_text("demos:\n  episodes: 3\n  render:\n    imagesize: 64\n")
    with pytest.raises(ConfigError, match=r"demo.yaml: demos.render.imagesize: unknown key"):
        load_config(path, DemoConfig)


def test_wrong_type_is_named(tmp_path):
    path = tmp_path / "sim.yaml"
    path.write_text("render:\n  image_size: big\n")
    with pytest.raises(ConfigError, match=r"sim.yaml: render.image_size: .*integer.*'big'"):
        load_config(path, SimConfig)
    path.write_text("family: isaac\n")
    with pytest.raises(ConfigError, match=r"sim.yaml: family: Input should be 'metaworld' or 'kitchen'"):
        load_config(path, SimConfig)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match=r"nope.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml", SimConfig)
    bad = tmp_path / "bad.yaml"
    bad.write_text("render: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(bad, SimConfig)
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="bad.yaml: expected a mapping"):
        load_config(bad, SimConfig)


def test_overrides_and_dump_round_trip(tmp_path):
    path = tmp_path / "sim.yaml"
    path.write_text("task: drawer-open-v3\n")
    config = load_config(path, SimConfig, overrides={"render.image_size": 64, "variation": "color:red"})
    assert config.render.image_size == 64 and config.variation == "color:red"
    dump_config(config, tmp_path / "out.yaml")
    assert load_config(tmp_path / "out.yaml", SimConfig) == config


def test_demos_section_of_the_demo_config_is_a_valid_demos_config():
    import yaml

    data = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    assert DemoConfig.model_validate({"demos": data["demos"]}).demos.render.image_size == 64


@pytest.mark.parametrize("text, key", [("demos:\n  episodes: true\n", "demos.episodes"),
                                       ("demos:\n  episodes: '3'\n", "demos.episodes"),
                                       ("demos:\n  render:\n    fast: 'no'\n", "demos.render.fast")])
def test_no_silent_type_conversions(tmp_path, text, key):
    path = tmp_path / "demo.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=rf"demo.yaml: {key}: Input should be a valid"):
        load_config(path, DemoConfig)


def test_unreadable_file_is_a_config_error(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"demos:\n  out: caf\xe9\n")
    with pytest.raises(ConfigError, match="latin1.yaml: cannot read the config file"):
        load_config(path, DemoConfig)


def test_set_items_parse_as_yaml_scalars_in_one_place():
    assert parse_overrides(["train.lr=3.0e-4", "train.steps=5", "policy.head.hidden=[8, 8]", "init=null",
                            "out=runs/x", "tasks=[a, b]", "fast=false", "train.steps=6"]) == {
        "train.lr": 3.0e-4, "train.steps": 6, "policy.head.hidden": [8, 8], "init": None, "out": "runs/x",
        "tasks": ["a", "b"], "fast": False}
    assert parse_overrides(["variation=obj:0.1,0,0"]) == {"variation": "obj:0.1,0,0"}  # only the first = splits


@pytest.mark.parametrize("item, message", [
    ("train.lr", r"--set 'train.lr': expected KEY=VALUE with a dotted key"),
    ("=3", r"--set '=3': expected KEY=VALUE"),
    ("train..lr=3", r"--set 'train..lr=3': expected KEY=VALUE"),
    ("train.=3", r"--set 'train.=3': expected KEY=VALUE"),
    ("policy.head.hidden=[8, 8", r"--set 'policy.head.hidden=\[8, 8': the value is not valid YAML"),
])
def test_a_malformed_set_item_is_a_config_error_naming_it(item, message):
    with pytest.raises(ConfigError, match=message):
        parse_overrides([item])


def test_every_set_option_uses_the_one_parser():
    import irevla.iterate.cli
    import irevla.policy.cli
    import irevla.robot.cli

    for module in (irevla.policy.cli, irevla.iterate.cli, irevla.robot.cli):
        source = Path(module.__file__).read_text()
        assert "parse_overrides" in source and "yaml.safe_load(value)" not in source, module.__name__
    assert not hasattr(irevla.policy.cli, "_parse_set")


def test_a_set_replaces_a_key_the_file_spells_with_dots(tmp_path):
    path = tmp_path / "sim.yaml"
    path.write_text("render:\n  image_size: 64\n")
    assert load_config(path, SimConfig, {"render.image_size": 32}).render.image_size == 32
    path.write_text("task: x\n")
    with pytest.raises(ConfigError, match=r"sim.yaml: override task.name: task is not a mapping"):
        load_config(path, SimConfig, {"task.name": "y"})


def test_override_models_are_typed_and_compose_key_by_key():
    SimOverrides = override_model(SimConfig)
    assert override_model(SimConfig) is SimOverrides
    changes = validate_config({"render.image_size": 32, "render": {"fast": False}}, SimOverrides, "o")
    assert changes.changes() == {"render": {"image_size": 32, "fast": False}}
    with pytest.raises(ConfigError, match=r"o: render.imagesize: unknown key"):
        validate_config({"render": {"imagesize": 32}}, SimOverrides, "o")
    with pytest.raises(ConfigError, match=r"o: render.image_size: Input should be greater than or equal to 16"):
        validate_config({"render.image_size": 8}, SimOverrides, "o")
    with pytest.raises(ConfigError, match=r"o: family: Input should be 'metaworld' or 'kitchen'"):
        validate_config({"family": "isaac"}, SimOverrides, "o")
    base = SimConfig(task="drawer-open-v3")
    composed = compose_config(SimConfig, base, changes, {"variation": "color:red"}, source="s")
    assert composed == SimConfig(task="drawer-open-v3", variation="color:red",
                                 render={"image_size": 32, "fast": False})
    with pytest.raises(ConfigError, match=r"s: render.image_size: Input should be a valid integer"):
        compose_config(SimConfig, changes, {"render": {"image_size": "big"}}, source="s")
