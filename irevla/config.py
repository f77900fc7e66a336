"""Typed configs loaded from YAML and validated by pydantic.

Every config model derives from `ConfigModel` (unknown keys are errors, values are not silently coerced across
types). `load_config(path, Model)` turns any problem into a `ConfigError` whose message names the file and the
dotted key, e.g. ``config/demo.yaml: sim.image_size: Input should be a valid integer (got 'big')``.

Configs compose by type, not by patching strings: `override_model(Model)` is Model with every key optional (the
same types and bounds, unknown keys still errors), so one part of a config can carry a typed layer of changes to
another's settings (the loop's ``sft_overrides``); `compose_config(Model, *layers)` merges such layers key by key
and validates the result. `parse_overrides` is the one parser of a command line's ``--set KEY=VALUE`` items.
"""

from __future__ import annotations

import copy
import functools
import operator
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_serializer,
    model_validator,
)

from irevla.errors import UserError

ModelT = TypeVar("ModelT", bound=BaseModel)


class ConfigError(UserError, ValueError):
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
        elif err["type"] == "value_error":  # a rule of the model: its message says what is wrong
            message = err["msg"].removeprefix("Value error, ")
            if not isinstance(err.get("input"), Mapping):  # a whole section's contents would bury the message
                message += f" (got {err.get('input')!r})"
            lines.append(f"{source}: {message}" if key == "<root>" else f"{source}: {key}: {message}")
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


def parse_overrides(items: Iterable[str], option: str = "--set") -> dict[str, Any]:
    """A command line's ``KEY=VALUE`` items -> {dotted key: value}, in order (a key given twice: the last wins).

    The value is read as YAML reads it in a config file (``3`` an int, ``3.0e-4`` a float, ``[8, 8]`` a list,
    ``null`` None, ``abc`` a string), so the model's strict types apply to it as to the file. A malformed item is a
    `ConfigError` naming it.
    """
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part or part != part.strip() for part in key.split(".")):
            raise ConfigError(f"{option} {item!r}: expected KEY=VALUE with a dotted key, e.g. train.lr=3.0e-4")
        try:
            overrides[key] = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            problem = " ".join(str(exc).split())
            raise ConfigError(f"{option} {item!r}: the value is not valid YAML ({problem})") from None
    return overrides


def apply_overrides(data: Mapping[str, Any], overrides: Mapping[str, Any] | None,
                    source: str = "<config>") -> dict[str, Any]:
    """A copy of the nested mapping `data` with each dotted key of `overrides` set (``train.lr`` -> data[train][lr]).

    A key written with dots in `data` itself (``sft_overrides: {train.steps: 5}``) is the one replaced, so an
    override never leaves two spellings of one key behind.
    """
    result = copy.deepcopy(dict(data))
    for dotted, value in (overrides or {}).items():
        node = result
        parts = dotted.split(".")
        for i, key in enumerate(parts[:-1]):
            rest = ".".join(parts[i:])
            if rest in node:
                parts = parts[:i] + [rest]
                break
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{source}: override {dotted}: {key} is not a mapping")
        node[parts[-1]] = value
    return result


def load_config(path: str | Path, model: type[ModelT], overrides: Mapping[str, Any] | None = None) -> ModelT:
    """Load YAML at `path` into `model`. `overrides` maps dotted keys (``sim.image_size``) to values."""
    path = Path(path)
    data = apply_overrides(read_config_mapping(path), overrides, str(path))
    return validate_config(data, model, str(path))


def dump_config(config: BaseModel, path: str | Path) -> None:
    """Write a config back as YAML (used to record the exact config an experiment ran with)."""
    Path(path).write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))


# ----------------------------------------------------------------------------------------- typed composition
def _nest_dotted_keys(data: Mapping[str, Any]) -> dict[str, Any]:
    """``{"train.steps": 5, "train": {"lr": 1e-4}}`` -> ``{"train": {"steps": 5, "lr": 1e-4}}``; one key given in
    both spellings is an error naming it."""
    nested: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(key, str) and "." in key:
            key, rest = key.split(".", 1)
            value = {rest: value}
        if key not in nested:
            nested[key] = value
        elif isinstance(nested[key], Mapping) and isinstance(value, Mapping):
            nested[key] = _join(nested[key], value, key)
        else:
            raise ValueError(f"{key}: given twice (once with dots, once nested)")
    return nested


def _join(first: Mapping[str, Any], second: Mapping[str, Any], where: str) -> dict[str, Any]:
    joined = _nest_dotted_keys(first)
    for key, value in _nest_dotted_keys(second).items():
        if key not in joined:
            joined[key] = value
        elif isinstance(joined[key], Mapping) and isinstance(value, Mapping):
            joined[key] = _join(joined[key], value, f"{where}.{key}")
        else:
            raise ValueError(f"{where}.{key}: given twice (once with dots, once nested)")
    return joined


class OverrideModel(ConfigModel):
    """Base of the models `override_model` makes: only the keys given count (``model_fields_set``), dotted keys
    (``train.steps: 5``) are accepted as well as nested ones, and a dump holds only what was given."""

    @model_validator(mode="before")
    @classmethod
    def _yaml_lists_are_tuples(cls, data: Any) -> Any:  # replaces ConfigModel's: nest dotted keys first
        if isinstance(data, Mapping):
            data = _nest_dotted_keys(data)
            return {key: tuple(value) if isinstance(value, list) else value for key, value in data.items()}
        return data

    @model_serializer(mode="wrap")
    def _only_what_was_given(self, handler):
        data = handler(self)
        return {key: value for key, value in data.items() if key in self.model_fields_set}

    def changes(self) -> dict[str, Any]:
        """The keys given, nested (python values; tuples stay tuples)."""
        return self.model_dump()

    def __repr_args__(self):
        return [(key, value) for key, value in super().__repr_args__() if key in self.model_fields_set]


def _optional_annotation(annotation: Any) -> Any:
    """`annotation` with every ConfigModel in it replaced by its override model."""
    if isinstance(annotation, type) and issubclass(annotation, ConfigModel):
        return override_model(annotation)
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = tuple(_optional_annotation(arg) for arg in typing.get_args(annotation))
        return functools.reduce(operator.or_, args)
    return annotation


@functools.cache
def override_model(model: type[ConfigModel]) -> type[OverrideModel]:
    """`model` with every key optional: the same types, bounds and nested structure, unknown keys still errors.

    A value of it is a typed layer of changes to `model`'s settings: ``train: {trainnig: 3}`` or
    ``train: {lr: abc}`` fail when it is validated, naming the key, long before the settings are composed.
    Checks across keys (``batch_size`` a multiple of ``grad_accumulation``) run on the composed `model`.
    """
    fields: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        optional = copy.copy(info)
        optional.default = None
        optional.default_factory = None
        annotation = _optional_annotation(info.annotation)
        optional.annotation = annotation | None
        fields[name] = (annotation | None, optional)
    partial = create_model(f"{model.__name__}Overrides", __base__=OverrideModel, __module__=model.__module__,
                           __doc__=f"Changes to `{model.__name__}` settings: any of its keys, each optional.",
                           **fields)
    return partial


def _plain_layer(layer: BaseModel | Mapping[str, Any] | None) -> dict[str, Any]:
    if layer is None:
        return {}
    if isinstance(layer, OverrideModel):
        return layer.changes()
    if isinstance(layer, BaseModel):
        return layer.model_dump()
    return _nest_dotted_keys(layer)


def _deep_merge(base: dict[str, Any], layer: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in layer.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def compose_config(model: type[ModelT], *layers: BaseModel | Mapping[str, Any] | None,
                   source: str = "<config>") -> ModelT:
    """`model` validated from `layers` merged in order, key by key (a later layer's value wins; a mapping merges
    into a mapping, anything else replaces). A layer is an override model (only the keys it was given), a full
    model, or a mapping (dotted keys allowed). Errors are `ConfigError`s naming `source` and the key."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged = _deep_merge(merged, _plain_layer(layer))
    return validate_config(merged, model, source)


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
