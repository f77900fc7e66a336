"""Visit a launch file's description with ROS 2's real `launch` / `launch_ros` classes, without starting processes.

`visit(path, arguments)` does what `ros2 launch <file> name:=value ...` does up to the point where processes would be
spawned: the file is loaded by launch's own PythonLaunchDescriptionSource, the arguments go into a real
LaunchContext, DeclareLaunchArgument / OpaqueFunction / GroupAction / conditions are executed by launch itself
(``entity.visit(context)``), and each launch_ros Node performs its own substitutions. What comes back for each node
is what the node would be started with: package, executable, name and the parameter files launch_ros wrote, merged
here in launch's order into the dotted values the node's config model then validates. IncludeLaunchDescription of
another package's launch file is reported, not followed (franka_bringup is not installed here).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from irevla.robot.params import flatten, parameters_section


@dataclass
class VisitedNode:
    package: str
    executable: str
    name: str
    parameter_files: list[str]
    arguments: list[str]
    parameters: dict[str, Any] = field(default_factory=dict)  # dotted name -> value, later files win


@dataclass
class Visited:
    nodes: list[VisitedNode]
    includes: list[str]  # launch files of other packages that would be included

    def node(self, executable: str) -> VisitedNode:
        (found,) = [node for node in self.nodes if node.executable == executable]
        return found


class _ParameterFileLoader(yaml.SafeLoader):
    """launch_ros writes a node's dict parameters to a temporary file with yaml.dump, and lists come out tagged
    !!python/tuple (it normalises sequences to tuples); rcl's parser reads them as sequences, so this loader does too
    (no other Python tag is accepted)."""


_ParameterFileLoader.add_constructor("tag:yaml.org,2002:python/tuple",
                                     lambda loader, node: loader.construct_sequence(node))


def _parameters(files: list[str], node_name: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for path in files:
        data = yaml.load(Path(path).read_text(), Loader=_ParameterFileLoader)  # noqa: S506 -- a SafeLoader
        values.update(flatten(parameters_section(data, path, node_name)))
    return values


def visit(path: str | Path, arguments: dict[str, str] | None = None) -> Visited:
    from launch.actions import IncludeLaunchDescription
    from launch.launch_description_sources import PythonLaunchDescriptionSource
    from launch.utilities import normalize_to_list_of_substitutions, perform_substitutions
    from launch_ros.actions import Node

    from launch import LaunchContext, LaunchDescription

    context = LaunchContext()
    for name, value in (arguments or {}).items():  # what `ros2 launch FILE name:=value` puts in the context
        context.launch_configurations[name] = value
    description = PythonLaunchDescriptionSource(str(path)).get_launch_description(context)
    declared = {argument.name for argument in description.get_launch_arguments()}
    unknown = set(arguments or {}) - declared
    if unknown:
        raise ValueError(f"{Path(path).name} declares no argument {sorted(unknown)}")

    nodes: list[VisitedNode] = []
    includes: list[str] = []
    pending: list[Any] = list(description.entities)
    while pending:
        entity = pending.pop(0)
        condition = getattr(entity, "condition", None)
        if condition is not None and not condition.evaluate(context):
            continue
        if isinstance(entity, Node):
            entity._perform_substitutions(context)  # launch_ros' own expansion: names, parameter files
            expanded = entity._Node__expanded_parameter_arguments or []
            files = [argument for argument, is_file in expanded if is_file]
            arguments_list = [perform_substitutions(context, normalize_to_list_of_substitutions(argument)) for argument in
                              (entity._Node__arguments or [])]
            name = entity.node_name.rsplit("/", 1)[-1]  # '<node_namespace_unspecified>/name' without a namespace
            nodes.append(VisitedNode(entity.node_package, entity.node_executable, name, files, arguments_list,
                                     _parameters(files, name)))
        elif isinstance(entity, IncludeLaunchDescription):
            location = entity.launch_description_source._LaunchDescriptionSource__location
            includes.append(perform_substitutions(context, location))  # FindPackageShare: the package must exist
        elif isinstance(entity, LaunchDescription):
            pending[:0] = list(entity.entities)
        else:
            pending[:0] = list(entity.visit(context) or [])
    return Visited(nodes, includes)


def main(argv: list[str]) -> int:
    """``python launch_visit.py FILE [name:=value ...]``: the visit as JSON on stdout (run in a fresh process, so
    the test process never loads rclpy next to pyrealsense2); a failure prints its type and message, exit 1."""
    import json
    import sys
    from dataclasses import asdict

    path, arguments = argv[0], dict(argument.split(":=", 1) for argument in argv[1:])
    try:
        visited = visit(path, arguments)
    except Exception as exc:  # what `ros2 launch` would print before starting anything
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"nodes": [asdict(node) for node in visited.nodes], "includes": visited.includes}))
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
