"""Typed configs loaded from YAML and validated by pydantic.

Every config model derives from `ConfigModel` (unknown keys are errors, values are not silently coerced across
types). `load_config(path, Model)` turns any problem into a `ConfigError` whose message names the file and the
dotted key, e.g. ``config/demo.yaml: sim.image_size: Input should be a valid integer (got 'big')``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

ModelT = TypeVar("ModelT", bound=BaseModel)


class ConfigError(ValueError):
    """A config file is missing, unreadable or invalid. The message names the file and the key."""


class ConfigModel(BaseModel):
    """Base for all irevla configs: strict about unknown keys and types (``episodes: '3'`` or ``fast: 'no'`` is an
    error, not a silent conversion), immutable once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, strict=True)

    @model_validator(mode="before")
    @classmethod
    def _yaml_lists_are_tuples(cls, data: Any) -> Any:
        # YAML has lists; our sequence fields are tuples (immutable). Strict mode would refuse the list otherwise.
        if isinstance(data, dict):
            return {key: tuple(value) if isinstance(value, list) else value for key, value in data.items()}
        return data


def _format_errors(source: str, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "<root>"
        if err["type"] == "extra_forbidden":
            lines.append(f"{source}: {key}: unknown key (check the spelling; allowed keys are the model's fields)")
        elif err["type"] == "missing":
            lines.append(f"{source}: {key}: required key is missing")
        else:
            lines.append(f"{source}: {key}: {err['msg']} (got {err.get('input')!r})")
    return "\n".join(lines)


def validate_config(data: Mapping[str, Any] | None, model: type[ModelT], source: str = "<config>") -> ModelT:
    """Validate a plain mapping against `model`; errors name `source` and the dotted key."""
    try:
        return model.model_validate(dict(data or {}))
    except ValidationError as exc:
        raise ConfigError(_format_errors(source, exc)) from None


def read_config_mapping(path: str | Path) -> dict:
    """The top-level mapping of the YAML file at `path` (empty file: {}); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def load_config(path: str | Path, model: type[ModelT], overrides: Mapping[str, Any] | None = None) -> ModelT:
    """Load YAML at `path` into `model`. `overrides` maps dotted keys (``sim.image_size``) to values."""
    path = Path(path)
    data = read_config_mapping(path)
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{path}: override {dotted}: {key} is not a mapping")
        node[leaf] = value
    return validate_config(data, model, str(path))


def dump_config(config: BaseModel, path: str | Path) -> None:
    """Write a config back as YAML (used to record the exact config an experiment ran with)."""
    Path(path).write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))


# --------------------------------------------------------------------------------------------------------- models
class RenderConfig(ConfigModel):
    """Camera rendering. `fast` turns off MSAA, shadows and reflections: ~10x faster on a CPU renderer."""

    image_size: int = Field(default=128, ge=16, le=1024, description="square image side in pixels")
    cameras: tuple[str, ...] | None = Field(default=None, min_length=1,
                                            description="camera names; default: the family's (metaworld: corner2, "
                                                        "kitchen: front)")
    fast: bool = True


class SimConfig(ConfigModel):
    """One simulated task: family, task name, variation, rendering, time limit."""

    family: Literal["metaworld", "kitchen"] = "metaworld"
    task: str = "button-press-v3"
    variation: str = Field(default="", description="named variation, e.g. 'color:red' or 'hand:0.06,0,0+color:red'")
    variation_seed: int = 0
    max_episode_steps: int | None = Field(default=None, gt=0, description="default: the family's own limit")
    render: RenderConfig = RenderConfig()


class DemosConfig(ConfigModel):
    """Scripted-expert demo collection."""

    tasks: tuple[str, ...] = Field(default=("button-press-v3", "drawer-open-v3"), min_length=1)
    family: Literal["metaworld", "kitchen"] = "metaworld"
    episodes: int = Field(default=3, gt=0, description="successful episodes wanted per task")
    max_attempts_factor: float = Field(default=3.0, ge=1.0, description="give up after this many x episodes tries")
    keep_failures: bool = False
    action_noise: float = Field(default=0.0, ge=0.0, description="DART-style noise on executed actions; the clean "
                                                                  "expert action is the one stored")
    seed: int = 0
    out: str = "runs/demo/expert"
    render: RenderConfig = RenderConfig()

    @field_validator("tasks")
    @classmethod
    def _no_empty_names(cls, tasks: tuple[str, ...]) -> tuple[str, ...]:
        if any(not t.strip() for t in tasks):
            raise ValueError("task names must be non-empty")
        return tasks


class DemoConfig(ConfigModel):
    """What `make demo` / `irevla demo` runs."""

    demos: DemosConfig = DemosConfig()
