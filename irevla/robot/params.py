"""Node settings <-> ROS parameters and parameter files (no rclpy here; the node edge uses these helpers).

Every leaf of a node's config model becomes one ROS parameter named by its dotted path, e.g.
``safety.workspace_min``. Parameter files use the ROS 2 layout with nested keys::

    /**:
      ros__parameters:
        safety:
          workspace_min: [0.25, -0.35, 0.03]

`load_parameter_file` reads such a file (the ``/**`` section, or a node's own section) into a config model, for
running nodes without ``ros2 launch`` (``irevla robot up``); errors name the file and the dotted key.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel

from irevla.config import ConfigError, validate_config

ModelT = TypeVar("ModelT", bound=BaseModel)


def flatten(config: BaseModel | Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{dotted name: value} for every leaf; tuples become lists (ROS arrays)."""
    data = config.model_dump(mode="json") if isinstance(config, BaseModel) else config
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = list(value) if isinstance(value, tuple) else value
    return flat


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for dotted, value in flat.items():
        node = nested
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return nested


def config_from_parameters(values: Mapping[str, Any], model: type[ModelT], source: str) -> ModelT:
    """Validate dotted parameter values against `model`; errors name `source` (e.g. the node) and the key."""
    return validate_config(unflatten(values), model, source)


def parameters_section(data: Any, path: str | Path, node_name: str | None = None) -> dict[str, Any]:
    """The ``ros__parameters`` mapping of a ROS 2 parameter file: the node's own section, else ``/**``."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: expected a mapping with a '/**' (or node name) section")
    for key in ([node_name, f"/{node_name}"] if node_name else []) + ["/**", "**"]:
        if key in data:
            section = data[key]
            if not isinstance(section, Mapping) or "ros__parameters" not in section:
                raise ConfigError(f"{path}: {key}: expected a 'ros__parameters' mapping")
            return dict(section["ros__parameters"] or {})
    raise ConfigError(f"{path}: no '/**' section" + (f" and no '{node_name}' section" if node_name else ""))


def default_config_dir() -> Path | None:
    """Where the node parameter files are: the ROS package's share/irevla/config when installed with colcon,
    else the source tree's config/ (pip install -e), else None (the models' defaults, which are the same)."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        try:
            share = Path(get_package_share_directory("irevla")) / "config"
            if share.is_dir():
                return share
        except (PackageNotFoundError, OSError):  # not a colcon install, or no ROS environment sourced
            pass
    except ImportError:
        pass
    source = Path(__file__).resolve().parents[2] / "config"
    return source if (source / "franka_control.yaml").is_file() else None


def node_config(model: type[ModelT], node_name: str, config_dir: str | Path | None = None,
                overrides: Mapping[str, Any] | None = None) -> ModelT:
    """A node's settings from ``<config_dir>/<node_name>.yaml`` (default: `default_config_dir`) plus dotted
    overrides; the model's defaults when there is no such file."""
    directory = Path(config_dir) if config_dir is not None else default_config_dir()
    path = directory / f"{node_name}.yaml" if directory is not None else None
    if path is not None and path.is_file():
        return load_parameter_file(path, model, node_name, overrides)
    if config_dir is not None:
        raise ConfigError(f"{path}: parameter file not found (config_dir {config_dir})")
    return config_from_parameters({**flatten(model()), **(overrides or {})}, model, f"{node_name} defaults")


def load_parameter_file(path: str | Path, model: type[ModelT], node_name: str | None = None,
                        overrides: Mapping[str, Any] | None = None) -> ModelT:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: parameter file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    values = flatten(parameters_section(data, path, node_name))
    values.update(overrides or {})
    return config_from_parameters(values, model, str(path))


class _ParameterDumper(yaml.SafeDumper):
    """Block-style mappings (one key per line), flow-style lists (``[0.25, -0.35, 0.03]``)."""


_ParameterDumper.add_representer(list, lambda dumper, data: dumper.represent_sequence(
    "tag:yaml.org,2002:seq", data, flow_style=True))


def parameter_file_text(config: BaseModel, header: str = "") -> str:
    """The ROS 2 parameter file for `config` (how config/*.yaml are written and checked)."""
    body = yaml.dump({"/**": {"ros__parameters": config.model_dump(mode="json")}}, Dumper=_ParameterDumper,
                     sort_keys=False, default_flow_style=False, width=120)
    return (header.rstrip() + "\n" if header else "") + body
