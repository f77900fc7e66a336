"""Launch files, parameter files and packaging, checked statically (no ROS 2 needed).

Each launch file is parsed (AST): every `Node(...)` names a real console script of this package (or tf2_ros'
static_transform_publisher), every parameter file it mentions exists in config/, every LaunchConfiguration is
declared. What the launch files start for given arguments is tested with ROS 2's own launch in test_ros2_launch.py
(the colcon install space, LaunchService, the description visited). Every config/<node>.yaml
is a valid ROS 2 parameter file whose values equal the node's defaults. package.xml declares every ROS package the
robot code imports. Only the rclpy edge (nodes/, backends/, ros_edge.py, the env and the CLI) imports rclpy.
"""

from __future__ import annotations

import ast
import configparser
import importlib.util
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from irevla.robot import config as robot_config
from irevla.robot.params import flatten, load_parameter_file

REPO = Path(__file__).resolve().parents[2]
LAUNCH_FILES = ("robot.launch.py", "policy.launch.py", "teleop_record.launch.py", "rl_actor.launch.py",
                "sim.launch.py")
NODE_CONFIGS = {"franka_control": robot_config.FrankaControlConfig, "sim_robot": robot_config.SimRobotConfig,
                "realsense_camera": robot_config.RealSenseCameraConfig, "vla_policy": robot_config.VLAPolicyConfig,
                "teleop": robot_config.TeleopConfig, "recorder": robot_config.RecorderConfig}
ROS_PACKAGES = {"rclpy", "rcl_interfaces", "builtin_interfaces", "std_msgs", "std_srvs", "sensor_msgs",
                "geometry_msgs", "trajectory_msgs", "launch", "launch_ros", "ament_index_python", "action_msgs"}
# Nodes of other packages a launch file may start: (package, executable) -> the exec_depend that provides it.
FOREIGN_NODES = {("tf2_ros", "static_transform_publisher"): "tf2_ros"}
LAZY_ROBOT_PACKAGES = {"franka_msgs"}  # imported by their backends only, from the robot's own workspace


def console_scripts() -> dict[str, str]:
    parser = configparser.ConfigParser()
    parser.read(REPO / "setup.cfg")
    lines = parser["options.entry_points"]["console_scripts"].strip().splitlines()
    return dict(tuple(part.strip() for part in line.split("=", 1)) for line in lines if "=" in line)


def calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)
            and getattr(node.func, "id", getattr(node.func, "attr", None)) == name]


def keyword(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value
    return None


@pytest.mark.parametrize("file_name", LAUNCH_FILES)
def test_launch_file_structure(file_name):
    path = REPO / "launch" / file_name
    tree = ast.parse(path.read_text(), filename=str(path))
    assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description" for n in tree.body)
    imported = {alias.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for alias in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported <= {"os", "launch", "launch_ros", "ament_index_python", "irevla"}, imported
    for node in ast.walk(tree):  # irevla code a launch file calls: ROS-free calibration readers only, and real
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "irevla":
            assert node.module.startswith("irevla.calibration."), node.module
            module = importlib.import_module(node.module)
            assert all(hasattr(module, alias.name) for alias in node.names), (node.module, node.names)

    scripts = console_scripts()
    nodes = calls(tree, "Node")
    assert nodes, f"{file_name} starts no node"
    for node in nodes:
        package, executable = keyword(node, "package"), keyword(node, "executable")
        assert isinstance(package, ast.Constant) and isinstance(executable, ast.Constant)
        if (package.value, executable.value) in FOREIGN_NODES:
            continue
        assert package.value == "irevla", f"{file_name}: a node of package {package.value!r}"
        assert executable.value in scripts, \
            f"{file_name}: executable {getattr(executable, 'value', executable)!r} is not a console script"
        module, _, function = scripts[executable.value].partition(":")
        spec = importlib.util.find_spec(module)
        assert spec is not None and spec.origin, module
        module_tree = ast.parse(Path(spec.origin).read_text())
        assert any(isinstance(n, ast.FunctionDef) and n.name == function for n in module_tree.body), \
            f"{module} has no {function}()"
        parameters = set(flatten(NODE_CONFIGS[executable.value]()))
        overrides = keyword(node, "parameters")
        for literal in (ast.walk(overrides) if overrides is not None else ()):
            if isinstance(literal, ast.Dict):  # {"rl_actor.record_dir": ...}: a real parameter of the node
                names = {k.value for k in literal.keys if isinstance(k, ast.Constant)}
                assert names <= parameters, f"{file_name}: {executable.value} has no parameter {names - parameters}"

    yaml_names = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
                  and n.value.endswith(".yaml")}
    for name in yaml_names:
        assert (REPO / "config" / Path(name).name).is_file(), f"{file_name} mentions {name}, not in config/"

    declared = {c.args[0].value for c in calls(tree, "DeclareLaunchArgument")
                if c.args and isinstance(c.args[0], ast.Constant)}
    used = {c.args[0].value for name in ("LaunchConfiguration", "value") for c in calls(tree, name)
            if c.args and isinstance(c.args[0], ast.Constant)}  # value(name): LaunchConfiguration(name).perform
    assert used <= declared, f"{file_name}: undeclared launch arguments {used - declared}"


def test_every_executable_is_launched_somewhere_and_setup_ships_launch_and_config():
    launched = set()
    for file_name in LAUNCH_FILES:
        tree = ast.parse((REPO / "launch" / file_name).read_text())
        launched |= {keyword(n, "executable").value for n in calls(tree, "Node")
                     if keyword(n, "package").value == "irevla"}
    assert launched == set(NODE_CONFIGS)
    setup_py = (REPO / "setup.py").read_text()
    assert 'glob("launch/*.launch.py")' in setup_py and 'glob("config/*.yaml")' in setup_py


@pytest.mark.parametrize("node_name", sorted(NODE_CONFIGS))
def test_parameter_file_equals_the_node_defaults(node_name):
    model = NODE_CONFIGS[node_name]
    loaded = load_parameter_file(REPO / "config" / f"{node_name}.yaml", model, node_name)
    assert flatten(loaded) == flatten(model()), f"config/{node_name}.yaml differs from {model.__name__}'s defaults"


def test_bad_parameter_file_names_the_file_and_key(tmp_path):
    from irevla.config import ConfigError

    path = tmp_path / "franka_control.yaml"
    path.write_text("/**:\n  ros__parameters:\n    safety:\n      max_translation_per_step: -1.0\n")
    with pytest.raises(ConfigError, match=r"franka_control.yaml: safety.max_translation_per_step"):
        load_parameter_file(path, robot_config.FrankaControlConfig)
    path.write_text("/**:\n  ros__parameters:\n    safety:\n      workspace_min: [0.5, 0, 0]\n"
                    "      workspace_max: [0.4, 1, 1]\n")
    with pytest.raises(ConfigError, match="workspace_max.x"):
        load_parameter_file(path, robot_config.FrankaControlConfig)


def _imports(path: Path) -> set[str]:
    """Every absolute import in a file, function-level (lazy) ones included."""
    tree = ast.parse(path.read_text())
    names = {alias.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for alias in n.names}
    return names | {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module
                    and n.level == 0}


def test_package_xml_declares_every_ros_package_the_robot_code_imports():
    robot = REPO / "irevla" / "robot"
    imported = set()
    for path in [*robot.rglob("*.py"), *(REPO / "launch").glob("*.launch.py")]:
        imported |= _imports(path)
    ros_imported = (imported & ROS_PACKAGES) | {name for name in imported if name.endswith(("_msgs", "_srvs"))}
    ros_imported -= LAZY_ROBOT_PACKAGES
    for path in (REPO / "launch").glob("*.launch.py"):  # packages whose nodes a launch file starts
        for node in calls(ast.parse(path.read_text()), "Node"):
            package, executable = keyword(node, "package").value, keyword(node, "executable").value
            if package != "irevla":
                ros_imported.add(FOREIGN_NODES[(package, executable)])
    declared = {element.text for element in ET.parse(REPO / "package.xml").getroot()
                if element.tag in ("exec_depend", "depend")}
    assert ros_imported - {"action_msgs"} <= declared, f"missing exec_depend: {ros_imported - declared}"


def test_only_the_rclpy_edge_imports_rclpy():
    robot = REPO / "irevla" / "robot"
    # The edge: node shells, backends, their helpers, the gym env over the topics, the CLI that spins nodes and the
    # calibration CLI's ROS sources (.importlinter keeps rclpy out of every other package).
    edge = {robot / "ros_edge.py", robot / "env.py", robot / "cli.py", robot / "calibration_sources.py",
            *robot.glob("nodes/*.py"), *robot.glob("backends/*.py")}
    for path in robot.rglob("*.py"):
        if path not in edge:
            assert "rclpy" not in _imports(path), f"{path.relative_to(REPO)} imports rclpy outside the node edge"
    for path in (REPO / "irevla").rglob("*.py"):
        if robot not in path.parents and "calibration" not in path.parts:
            assert "rclpy" not in _imports(path), f"{path.relative_to(REPO)} imports rclpy"
    franka = [p for p in robot.rglob("*.py") if "franka_msgs" in _imports(p)]
    assert {p.name for p in franka} <= {"topics.py", "multipanda.py"}, franka
